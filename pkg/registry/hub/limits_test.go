package hub_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/hub"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

// TestHubIgnoresUnimportableClusterIDs: the hub's admin can write a record
// in the name of a cluster ID that join and New refuse (here 64
// characters), in the namespace of that ID. Its endpoints could not be
// imported (the ID would be the value of the slices' source-cluster label),
// so readers leave it out, and keep the valid cluster's record of the same
// service. Nothing of it reaches the members.
func TestHubIgnoresUnimportableClusterIDs(t *testing.T) {
	h := startHub(t)
	ctx := context.Background()
	const set = "limits"
	key := types.NamespacedName{Namespace: "demo", Name: "web"}
	reader := h.registry(t, set, "cls-r", nil)
	writer := h.registry(t, set, "cls-b", nil)
	run(t, reader, func(registry.ServiceKey) {})
	if err := writer.Publish(ctx, record(set, "cls-b", key, 2, "b")); err != nil {
		t.Fatal(err)
	}
	head := &hubv1alpha1.ClusterSetRecord{}
	if err := h.adminClient.Get(ctx, client.ObjectKey{Namespace: hub.NamespaceName(set, "cls-b"), Name: "demo.web"}, head); err != nil {
		t.Fatal(err)
	}
	tooLong := strings.Repeat("x", registry.MaxClusterIDLength+1)
	if _, err := hub.New(hub.Options{ClusterSetID: set, ClusterID: tooLong, Config: h.cfg}); err == nil {
		t.Error("hub.New accepted a 64-character cluster ID")
	}
	ns := hub.NamespaceName(set, tooLong)
	if err := h.adminClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	forged := head.DeepCopy()
	forged.ResourceVersion, forged.UID, forged.Namespace = "", "", ns
	forged.Spec.ClusterID = tooLong
	if err := h.adminClient.Create(ctx, forged); err != nil {
		t.Fatalf("the admin writing a record of cluster %s: %v", tooLong, err)
	}
	// The positive control: a valid cluster's record written after it.
	later := record(set, "cls-b", types.NamespacedName{Namespace: "demo", Name: "later"}, 1, "b")
	if err := writer.Publish(ctx, later); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the later record seen", func() error {
		recs, err := reader.Records(later.Key())
		if err != nil || len(recs) != 1 {
			return fmt.Errorf("%d records, %v", len(recs), err)
		}
		return nil
	})
	recs, err := reader.Records(key)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].ClusterID != "cls-b" {
		var ids []string
		for _, r := range recs {
			ids = append(ids, r.ClusterID)
		}
		t.Errorf("records of %s from clusters %q, want cls-b's only", key, ids)
	}
}
