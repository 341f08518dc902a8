//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	sdtypes "github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"

	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
	"github.com/clusterset/clusterset/pkg/sandbox"
	wt "github.com/clusterset/clusterset/test/e2e/walkthrough"
)

// TestCloudMapRegistry is the walkthrough with the Cloud Map registry (a
// local moto server, polled by the controllers with their default
// interval): export from cls1, import in every cluster (I1, I2, I4, I5), D1
// from every CoreDNS, the records in Cloud Map as DESIGN.md's schema says,
// scaling 3→10→0, then unexport (E5: no instance left; D4 NXDOMAIN
// everywhere).
func TestCloudMapRegistry(t *testing.T) {
	env := startSandbox(t, sandbox.RegistryCloudMap)
	seed(t, env)
	if !t.Run("Walkthrough", func(t *testing.T) { testWalkthrough(t, env) }) {
		t.Fatal("the walkthrough failed: the steps that build on it are not run")
	}
	cm := sd.NewFromConfig(cloudmaptest.Config(), func(o *sd.Options) { o.BaseEndpoint = aws.String(env.Sandbox.MotoEndpoint) })
	t.Run("CloudMapRecords", func(t *testing.T) {
		pods, err := env.ReadyPods(t.Context(), wt.Exporter, wt.Namespace, wt.Service)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "Cloud Map to hold one instance per pod of nginx-hello", propagation, func(ctx context.Context) (bool, string, error) {
			insts, err := cloudMapInstances(ctx, cm, wt.Namespace, wt.Service, wt.Exporter)
			if err != nil {
				return false, "", err
			}
			var ids, want []string
			for id := range endpointInstances(insts) {
				ids = append(ids, id)
			}
			for _, ip := range wt.PodIPs(pods) {
				want = append(want, "tcp-"+strings.ReplaceAll(ip, ".", "_")+"-"+strconv.Itoa(wt.TargetPort))
			}
			sort.Strings(ids)
			return slices.Equal(ids, want), fmt.Sprintf("Cloud Map %s/%s instances of %s: %v (want %v)", wt.Namespace, wt.Service, wt.Exporter, ids, want), nil
		})
		insts, err := cloudMapInstances(t.Context(), cm, wt.Namespace, wt.Service, wt.Exporter)
		if err != nil {
			t.Fatal(err)
		}
		for id, attrs := range endpointInstances(insts) {
			want := map[string]string{
				"CLUSTER_ID":        wt.Exporter,
				"CLUSTERSET_ID":     env.Sandbox.ClusterSetID,
				"AWS_INSTANCE_PORT": strconv.Itoa(wt.TargetPort),
				"SERVICE_PORT":      "80",
				"SERVICE_PORT_NAME": wt.PortName,
				"SERVICE_PROTOCOL":  "TCP",
				"SERVICE_TYPE":      "ClusterSetIP",
				"READY":             "true",
			}
			for k, v := range want {
				if attrs[k] != v {
					t.Errorf("instance %s: attribute %s=%q, want %q (attributes %v)", id, k, attrs[k], v, attrs)
				}
			}
			if ip := attrs["AWS_INSTANCE_IPV4"]; "tcp-"+strings.ReplaceAll(ip, ".", "_")+"-"+strconv.Itoa(wt.TargetPort) != id {
				t.Errorf("instance %s: AWS_INSTANCE_IPV4=%q does not match its id", id, ip)
			}
		}
	})
	t.Run("Scale", func(t *testing.T) { testScale(t, env) })
	t.Run("NamespaceDeleted", func(t *testing.T) { testNamespaceDeleted(t, env) })
	t.Run("Unexport", func(t *testing.T) {
		testUnexport(t, env, wt.Service)
		waitFor(t, "E5 no Cloud Map instance of cls1 left for nginx-hello", propagation, func(ctx context.Context) (bool, string, error) {
			insts, err := cloudMapInstances(ctx, cm, wt.Namespace, wt.Service, wt.Exporter)
			if err != nil {
				return false, "", err
			}
			return len(insts) == 0, fmt.Sprintf("%d instance(s) of cls1 left in Cloud Map %s/%s", len(insts), wt.Namespace, wt.Service), nil
		})
	})
}

// cloudMapInstances lists the instances (id → attributes) that a cluster
// has registered for a service in Cloud Map. It pages and filters on the
// client side, because moto ignores ListNamespaces and ListServices filters,
// and de-duplicates by id, because moto may keep two copies of a
// re-registered instance. A missing namespace or service means none.
func cloudMapInstances(ctx context.Context, c *sd.Client, namespace, service, cluster string) (map[string]map[string]string, error) {
	var nsID string
	for p := sd.NewListNamespacesPaginator(c, &sd.ListNamespacesInput{}); p.HasMorePages() && nsID == ""; {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("Cloud Map ListNamespaces: %w", err)
		}
		for _, ns := range page.Namespaces {
			if aws.ToString(ns.Name) == namespace {
				nsID = aws.ToString(ns.Id)
			}
		}
	}
	if nsID == "" {
		return nil, nil
	}
	var svcID string
	filter := sdtypes.ServiceFilter{Name: sdtypes.ServiceFilterNameNamespaceId, Condition: sdtypes.FilterConditionEq, Values: []string{nsID}}
	for p := sd.NewListServicesPaginator(c, &sd.ListServicesInput{Filters: []sdtypes.ServiceFilter{filter}}); p.HasMorePages() && svcID == ""; {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("Cloud Map ListServices: %w", err)
		}
		for _, s := range page.Services {
			if aws.ToString(s.Name) != service {
				continue
			}
			got, err := c.GetService(ctx, &sd.GetServiceInput{Id: s.Id})
			if err != nil {
				return nil, fmt.Errorf("Cloud Map GetService %s: %w", aws.ToString(s.Id), err)
			}
			if aws.ToString(got.Service.NamespaceId) == nsID {
				svcID = aws.ToString(s.Id)
			}
		}
	}
	if svcID == "" {
		return nil, nil
	}
	out := map[string]map[string]string{}
	for p := sd.NewListInstancesPaginator(c, &sd.ListInstancesInput{ServiceId: aws.String(svcID)}); p.HasMorePages(); {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("Cloud Map ListInstances %s: %w", svcID, err)
		}
		for _, in := range page.Instances {
			if in.Attributes["CLUSTER_ID"] == cluster {
				out[aws.ToString(in.Id)] = in.Attributes
			}
		}
	}
	return out, nil
}

// endpointInstances leaves out the instances that are not endpoints: the
// backend's own per-cluster service marker (attribute
// CLUSTERSET_INSTANCE_KIND=service, no address), which carries the
// service-level spec even when there are no endpoints.
func endpointInstances(insts map[string]map[string]string) map[string]map[string]string {
	out := map[string]map[string]string{}
	for id, attrs := range insts {
		if _, marker := attrs["CLUSTERSET_INSTANCE_KIND"]; !marker {
			out[id] = attrs
		}
	}
	return out
}
