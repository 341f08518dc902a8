package cloudmap

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	"github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
	"github.com/clusterset/clusterset/pkg/registry/registrytest"
)

// newTestRegistry returns a registry on the moto at url with test timings.
func newTestRegistry(t testing.TB, url, clusterSet, cluster string, mutate ...func(*Options)) *Registry {
	t.Helper()
	o := Options{
		ClusterSetID:     clusterSet,
		ClusterID:        cluster,
		Holder:           registrytest.HolderOf(cluster),
		Endpoint:         url,
		PollInterval:     100 * time.Millisecond,
		FullResyncPeriod: 2 * time.Second,
		RetryBaseDelay:   5 * time.Millisecond,
		RetryMaxDelay:    50 * time.Millisecond,
		RepairDelay:      time.Nanosecond,
		Logger:           testr.NewWithOptions(t.(*testing.T), testr.Options{Verbosity: 0}),
	}
	for _, m := range mutate {
		m(&o)
	}
	r, err := New(cloudmaptest.Config(), o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// rawClient is a servicediscovery client on moto for fixtures (no retries
// policy of ours, no counting).
func rawClient(url string) *sd.Client {
	return sd.NewFromConfig(cloudmaptest.Config(), func(o *sd.Options) {
		o.BaseEndpoint = aws.String(url)
		o.APIOptions = append(o.APIOptions, disableHostPrefix)
	})
}

// deregisterAllRaw deregisters every instance of the Cloud Map service
// serviceID directly in moto, as someone else (an operator, a process that
// died) would.
func deregisterAllRaw(ctx context.Context, t testing.TB, url, serviceID string) {
	t.Helper()
	c := rawClient(url)
	out, err := c.ListInstances(ctx, &sd.ListInstancesInput{ServiceId: aws.String(serviceID)})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range out.Instances {
		if _, err := c.DeregisterInstance(ctx, &sd.DeregisterInstanceInput{ServiceId: aws.String(serviceID), InstanceId: in.Id}); err != nil {
			t.Fatal(err)
		}
	}
}

// deleteNamespaceRaw deletes the Cloud Map namespace name directly in moto,
// with its services and their instances, as an operator would.
func deleteNamespaceRaw(ctx context.Context, t testing.TB, url, name string) {
	t.Helper()
	c := rawClient(url)
	nsID := rawNamespaceID(ctx, t, c, name)
	p := sd.NewListServicesPaginator(c, &sd.ListServicesInput{Filters: []types.ServiceFilter{{
		Name: types.ServiceFilterNameNamespaceId, Values: []string{nsID}, Condition: types.FilterConditionEq}}})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range out.Services {
			deregisterAllRaw(ctx, t, url, aws.ToString(s.Id))
			if _, err := c.DeleteService(ctx, &sd.DeleteServiceInput{Id: s.Id}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := c.DeleteNamespace(ctx, &sd.DeleteNamespaceInput{Id: aws.String(nsID)}); err != nil {
		t.Fatal(err)
	}
}

// run starts r.Run for the test and returns a channel of changed keys.
func run(t testing.TB, r *Registry) <-chan registry.ServiceKey {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan registry.ServiceKey, 10000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(ctx, func(k registry.ServiceKey) {
			select {
			case ch <- k:
			default:
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ch
}

// eventually polls cond every 50ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// recordsEqual waits until r's records of key equal want.
func waitRecords(t testing.TB, r *Registry, key registry.ServiceKey, want []registry.Record) {
	t.Helper()
	var got []registry.Record
	deadline := time.Now().Add(15 * time.Second)
	for {
		var err error
		got, err = r.Records(key)
		if err == nil && equalRecords(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("records of %s:\n got  %+v\n want %+v", key, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func equalRecords(a, b []registry.Record) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

func ptr[T any](v T) *T { return &v }

// sampleRecord is a record using every field of the schema.
func sampleRecord(clusterSet, cluster, ns, name string, addrs ...string) registry.Record {
	itp := corev1.ServiceInternalTrafficPolicyLocal
	rec := registry.Record{
		ClusterSetID: clusterSet,
		ClusterID:    cluster,
		Namespace:    ns,
		Name:         name,
		Spec: registry.ServiceSpec{
			Type: registry.ClusterSetIP,
			Ports: []registry.Port{
				{Name: "http", Protocol: corev1.ProtocolTCP, AppProtocol: ptr("http"), Port: 80, TargetPort: "8080"},
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: "dns"},
			},
			SessionAffinity:       corev1.ServiceAffinityClientIP,
			SessionAffinityConfig: &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr(int32(300))}},
			IPFamilies:            []corev1.IPFamily{corev1.IPv4Protocol},
			InternalTrafficPolicy: &itp,
			TrafficDistribution:   ptr("PreferClose"),
			ExportedLabels:        map[string]string{"app": "nginx"},
			ExportedAnnotations:   map[string]string{"note": "hello"},
			ExportCreated:         time.UnixMilli(1665108776123).UTC(),
		},
	}
	for i, a := range addrs {
		rec.Endpoints = append(rec.Endpoints, registry.Endpoint{
			Address:     a,
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []registry.EndpointPort{
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53},
				{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080},
			},
			Ready:    i%2 == 0,
			Serving:  true,
			Hostname: fmt.Sprintf("pod-%d", i),
			NodeName: "node-1",
			Zone:     "us-east-1a",
		})
	}
	return rec
}

// publishServices publishes, from w, n services svc-000 … of namespace ns
// with one endpoint each, one after the other, and returns their records.
func publishServices(tb testing.TB, w *Registry, ns string, n int) []registry.Record {
	tb.Helper()
	recs := make([]registry.Record, n)
	for i := range recs {
		recs[i] = sampleRecord(w.opts.ClusterSetID, w.opts.ClusterID, ns, fmt.Sprintf("svc-%03d", i), "10.0.0.1")
		if err := w.Publish(context.Background(), &recs[i]); err != nil {
			tb.Fatal(err)
		}
	}
	return recs
}
