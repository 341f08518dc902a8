package cloudmap

import (
	"testing"
	"time"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
	"github.com/clusterset/clusterset/pkg/registry/registrytest"
)

// TestContract runs the registry contract suite against moto: a moto per
// sub-test (every registry polls every service of the account, so a shared
// moto would make each sub-test poll the services of all earlier ones), with
// a fault proxy in front of it to simulate the outage.
//
// PagingManyEndpoints publishes 999 endpoints of one port: with the marker
// that is 1,000 instances, Cloud Map's per-service quota (DiscoverInstances
// returns at most 1,000). Records past it are refused with a QuotaError
// (TestQuotaAndAttributeErrors).
func TestContract(t *testing.T) {
	registrytest.Run(t, func(t *testing.T) registrytest.Harness {
		proxy := newFaultProxy(t, cloudmaptest.StartMoto(t))
		return registrytest.Harness{
			NewRegistry: func(t *testing.T, clusterSetID, clusterID string) registry.Registry {
				return newTestRegistry(t, proxy.URL, clusterSetID, clusterID, func(o *Options) {
					o.MotoWorkarounds = true
					o.PollInterval = 200 * time.Millisecond
					o.Concurrency = 8
				})
			},
			Services:  110,
			Endpoints: 999,
			Timeout:   60 * time.Second,
			Outage: func(t *testing.T) func() {
				proxy.setDown(true)
				return func() { proxy.setDown(false) }
			},
		}
	})
}
