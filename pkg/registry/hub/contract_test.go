package hub_test

import (
	"testing"
	"time"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/registrytest"
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
		}
	})
}
