package registrytest_test

import (
	"testing"
	"time"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/registrytest"
)

// TestMemoryStore runs the contract suite against the in-memory store, which
// checks the suite itself as much as the store.
func TestMemoryStore(t *testing.T) {
	registrytest.Run(t, func(t *testing.T) registrytest.Harness {
		store := registrytest.NewMemoryStore()
		return registrytest.Harness{
			NewRegistry: func(t *testing.T, clusterSetID, clusterID string) registry.Registry {
				return store.RegistryOf(clusterSetID, clusterID, registrytest.HolderOf(clusterID))
			},
			Outage: func(t *testing.T) func() {
				store.SetDown(true)
				return func() { store.SetDown(false) }
			},
			OutageDuration: 500 * time.Millisecond,
			Lose: func(_ *testing.T, clusterSetID, clusterID string, key registry.ServiceKey) func() (bool, error) {
				store.Lose(clusterSetID, clusterID, key)
				return func() (bool, error) { return store.Holds(clusterSetID, clusterID, key), nil }
			},
			Timeout: 10 * time.Second,
		}
	})
}
