package cloudmap

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	sdtypes "github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
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
					// A record deleted by hand bumps no change beacon: the
					// view sees the loss at its next full read of the
					// service, and repairs it RepairDelay after its last
					// write (30m and 30s by default).
					o.FullResyncPeriod = 3 * time.Second
					o.RepairDelay = 2 * time.Second
				})
			},
			Lose: func(t *testing.T, clusterSetID, clusterID string, key registry.ServiceKey) func() (bool, error) {
				return loseByHand(t, rawClient(proxy.URL), clusterSetID, clusterID, key)
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

// loseByHand deregisters every instance clusterID holds in key's Cloud Map
// service, as a person with the AWS CLI would, and returns a probe that
// reports whether it holds as many again.
func loseByHand(t *testing.T, c *sd.Client, clusterSetID, clusterID string, key registry.ServiceKey) func() (bool, error) {
	t.Helper()
	ctx := context.Background()
	held := func() (serviceID string, ids []string, err error) {
		nss, err := c.ListNamespaces(ctx, &sd.ListNamespacesInput{})
		if err != nil {
			return "", nil, err
		}
		for _, ns := range nss.Namespaces {
			if aws.ToString(ns.Name) != key.Namespace {
				continue
			}
			svcs, err := c.ListServices(ctx, &sd.ListServicesInput{Filters: []sdtypes.ServiceFilter{{
				Name: sdtypes.ServiceFilterNameNamespaceId, Values: []string{aws.ToString(ns.Id)}}}})
			if err != nil {
				return "", nil, err
			}
			for _, svc := range svcs.Services {
				if aws.ToString(svc.Name) != key.Name {
					continue
				}
				insts, err := c.ListInstances(ctx, &sd.ListInstancesInput{ServiceId: svc.Id})
				if err != nil {
					return "", nil, err
				}
				for _, in := range insts.Instances {
					if in.Attributes[attrClusterSetID] == clusterSetID && in.Attributes[attrClusterID] == clusterID {
						ids = append(ids, aws.ToString(in.Id))
					}
				}
				return aws.ToString(svc.Id), ids, nil
			}
		}
		return "", nil, fmt.Errorf("no Cloud Map service %s", key)
	}
	serviceID, ids, err := held()
	if err != nil || len(ids) == 0 {
		t.Fatalf("finding the instances of %s to lose: %d, %v", clusterID, len(ids), err)
	}
	for _, id := range ids {
		if _, err := c.DeregisterInstance(ctx, &sd.DeregisterInstanceInput{ServiceId: aws.String(serviceID), InstanceId: aws.String(id)}); err != nil {
			t.Fatalf("deregistering %s by hand: %v", id, err)
		}
	}
	if _, now, err := held(); err != nil || len(now) != 0 {
		t.Fatalf("after deregistering by hand, %s still holds %d instances (%v)", clusterID, len(now), err)
	}
	return func() (bool, error) {
		_, now, err := held()
		return len(now) == len(ids), err
	}
}
