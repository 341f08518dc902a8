package hub_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/hub"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

// headOf returns cluster's record head of key as stored in the hub.
func (h *testHub) headOf(t *testing.T, set, cluster string, key registry.ServiceKey) (*hubv1alpha1.ClusterSetRecord, error) {
	t.Helper()
	var head hubv1alpha1.ClusterSetRecord
	err := h.adminClient.Get(context.Background(), client.ObjectKey{Namespace: hub.NamespaceName(set, cluster), Name: key.Namespace + "." + key.Name}, &head)
	return &head, err
}

// Two writers of one cluster ID (two replicas without leader election, or
// two members given the same ID) do not overwrite each other forever: the
// keeper repairs a head that is gone, not one another writer replaced. The
// last writer wins.
func TestHubTwoWritersOfOneClusterDoNotFight(t *testing.T) {
	h := startHub(t)
	set := "set-fight"
	key := registry.ServiceKey{Namespace: "ns", Name: "web"}
	first, second := h.registry(t, set, "cls-a", nil), h.registry(t, set, "cls-a", nil)
	run(t, first, func(registry.ServiceKey) {})
	run(t, second, func(registry.ServiceKey) {})
	ctx := context.Background()
	if err := first.Publish(ctx, record(set, "cls-a", key, 2, "first")); err != nil {
		t.Fatal(err)
	}
	if err := second.Publish(ctx, record(set, "cls-a", key, 3, "second")); err != nil {
		t.Fatal(err)
	}
	head, err := h.headOf(t, set, "cls-a", key)
	if err != nil {
		t.Fatal(err)
	}
	rv := head.ResourceVersion
	time.Sleep(3 * hub.RepairDelay)
	if head, err = h.headOf(t, set, "cls-a", key); err != nil || head.ResourceVersion != rv {
		t.Errorf("the head was rewritten after the second writer's publish (resourceVersion %s → %s, %v): the writers fight", rv, head.ResourceVersion, err)
	}
}

// A repair the hub refuses (the member's write access revoked) tells the
// controllers through onChange and is retried with backoff: once access is
// back, the record is written again. A Publish of the same record made
// meanwhile (the controllers' answer to onChange) writes and returns the
// error, so that the export says why.
func TestHubFailedRepairIsRetriedAndReported(t *testing.T) {
	h := startHub(t)
	set := "set-refused"
	key := registry.ServiceKey{Namespace: "ns", Name: "web"}
	reg := h.registry(t, set, "cls-a", nil)
	var mu sync.Mutex
	changes := 0
	run(t, reg, func(k registry.ServiceKey) {
		if k == key {
			mu.Lock()
			changes++
			mu.Unlock()
		}
	})
	ctx := context.Background()
	rec := record(set, "cls-a", key, 2, "")
	if err := reg.Publish(ctx, rec); err != nil {
		t.Fatal(err)
	}
	ns := hub.NamespaceName(set, "cls-a")
	bindings, err := h.admin.RbacV1().RoleBindings(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(bindings.Items) == 0 {
		t.Fatalf("RoleBindings of %s: %d, %v", ns, len(bindings.Items), err)
	}
	revoke := func() {
		for _, b := range bindings.Items {
			if err := h.admin.RbacV1().RoleBindings(ns).Delete(ctx, b.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	restore := func() {
		for _, b := range bindings.Items {
			b.ResourceVersion = ""
			if _, err := h.admin.RbacV1().RoleBindings(ns).Create(ctx, &b, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// loseRefused revokes cls-a's write access, deletes its head, and waits
	// until a refused repair was reported through onChange.
	loseRefused := func() {
		t.Helper()
		revoke()
		head, err := h.headOf(t, set, "cls-a", key)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		before := changes
		mu.Unlock()
		if err := h.adminClient.Delete(ctx, head); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the failed repair reported through onChange", func() error {
			mu.Lock()
			defer mu.Unlock()
			// One for the deletion itself, one more for the refused repair.
			if changes < before+2 {
				return fmt.Errorf("%d onChange calls since the head was lost", changes-before)
			}
			return nil
		})
		if _, err := h.headOf(t, set, "cls-a", key); !apierrors.IsNotFound(err) {
			t.Fatalf("the head is back although writes are refused: %v", err)
		}
	}

	loseRefused()
	restore()
	eventually(t, "the record written again by a retried repair", func() error {
		_, err := h.headOf(t, set, "cls-a", key)
		return err
	})

	loseRefused()
	if err := reg.Publish(ctx, rec); !apierrors.IsForbidden(err) {
		t.Errorf("Publish of the lost record while writes are refused: %v, want Forbidden", err)
	}
	restore()
	if err := reg.Publish(ctx, rec); err != nil {
		t.Errorf("Publish once access is back: %v", err)
	}
	if _, err := h.headOf(t, set, "cls-a", key); err != nil {
		t.Errorf("the head after that Publish: %v", err)
	}
}
