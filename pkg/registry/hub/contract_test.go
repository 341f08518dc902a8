package hub_test

import (
	"context"
	"testing"
	"time"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/hub"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
	"github.com/clusterset/clusterset/pkg/registry/registrytest"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestContract runs the registry contract suite against one real
// kube-apiserver as the hub; every member has its own ServiceAccount token
// and only the RBAC that EnsureMember grants.
func TestContract(t *testing.T) {
	h := startHub(t)
	registrytest.Run(t, func(t *testing.T) registrytest.Harness {
		o := &outage{}
		return registrytest.Harness{
			NewRegistry: func(t *testing.T, clusterSetID, clusterID string) registry.Registry {
				return h.registry(t, clusterSetID, clusterID, o)
			},
			Outage: func(t *testing.T) func() {
				o.set(true)
				return func() { o.set(false) }
			},
			OutageDuration: 2 * time.Second,
			Lose: func(t *testing.T, clusterSetID, clusterID string, key registry.ServiceKey) func() (bool, error) {
				// The record's head, named "<namespace>.<service>" in the
				// member's hub namespace (package doc); its chunks stay.
				head := &hubv1alpha1.ClusterSetRecord{ObjectMeta: metav1.ObjectMeta{
					Namespace: hub.NamespaceName(clusterSetID, clusterID), Name: key.Namespace + "." + key.Name}}
				if err := h.adminClient.Delete(context.Background(), head); err != nil {
					t.Fatalf("deleting %s/%s by hand: %v", head.Namespace, head.Name, err)
				}
				return func() (bool, error) {
					err := h.adminClient.Get(context.Background(), client.ObjectKeyFromObject(head), &hubv1alpha1.ClusterSetRecord{})
					if apierrors.IsNotFound(err) {
						return false, nil
					}
					return err == nil, err
				}
			},
		}
	})
}
