package cloudmap

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
)

// The reader of `kubectl clusterset status` and `doctor` sees what the
// members wrote: each cluster's record with its change time, the
// heartbeats with their lease, and, for instances that do not decode, a
// problem on the cluster they name, without losing that cluster's other
// endpoints or the other clusters' records. It calls DiscoverInstances only
// (config/iam/cloudmap-readonly-policy.json).
func TestReader(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	a := newTestRegistry(t, url, "set1", "cls-a", func(o *Options) { o.LeaseDuration = 7 * time.Second })
	b := newTestRegistry(t, url, "set1", "cls-b")
	other := newTestRegistry(t, url, "set2", "cls-a")
	key := registry.ServiceKey{Namespace: "demo", Name: "web"}
	recA := sampleRecord("set1", "cls-a", "demo", "web", "10.0.0.1", "10.0.0.2")
	recA.Changed = time.UnixMilli(1700000000123).UTC()
	recB := sampleRecord("set1", "cls-b", "demo", "web", "10.0.1.1")
	recB.Changed = time.UnixMilli(1700000005000).UTC()
	recOther := sampleRecord("set2", "cls-a", "demo", "web", "10.9.9.9")
	for _, p := range []struct {
		r   *Registry
		rec registry.Record
	}{{a, recA}, {b, recB}, {other, recOther}} {
		if err := p.r.Publish(ctx, &p.rec); err != nil {
			t.Fatal(err)
		}
		if err := p.r.Heartbeat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Hand-written instances: one of cls-b with an address that is not an
	// IP, one naming no cluster.
	svc, _, err := a.service(ctx, mustNamespace(t, a, "demo"), "web", false)
	if err != nil {
		t.Fatal(err)
	}
	c := rawClient(url)
	for id, attrs := range map[string]map[string]string{
		"bad-ip":     {"CLUSTERSET_ID": "set1", "CLUSTER_ID": "cls-b", "AWS_INSTANCE_IPV4": "not-an-ip", "AWS_INSTANCE_PORT": "80"},
		"no-cluster": {"CLUSTERSET_ID": "set1", "AWS_INSTANCE_IPV4": "10.0.2.1", "AWS_INSTANCE_PORT": "80"},
	} {
		if _, err := c.RegisterInstance(ctx, &sd.RegisterInstanceInput{ServiceId: aws.String(svc.ID), InstanceId: aws.String(id), Attributes: attrs}); err != nil {
			t.Fatal(err)
		}
	}

	rd, err := NewReader(cloudmaptest.Config(), ReaderOptions{ClusterSetID: "set1", Endpoint: url})
	if err != nil {
		t.Fatal(err)
	}
	got, err := rd.ReadService(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("ReadService = %d records, want cls-a, cls-b and one naming no cluster: %+v", len(got), got)
	}
	if got[0].ClusterID != "" || got[0].Record != nil || !strings.Contains(got[0].Problem, "no-cluster") {
		t.Errorf("the instance naming no cluster = %+v, want ClusterID \"\" with a problem naming it", got[0])
	}
	for i, want := range []registry.Record{recA, recB} {
		s := got[i+1]
		if s.ClusterID != want.ClusterID || s.Record == nil || !s.Changed.Equal(want.Changed) {
			t.Fatalf("record %d = %+v, want %s changed at %s", i+1, s, want.ClusterID, want.Changed)
		}
		if !registry.SameContent(s.Record, &want) || !s.Record.Changed.Equal(want.Changed) {
			t.Errorf("%s's record = %+v\nwant %+v", want.ClusterID, *s.Record, want)
		}
	}
	if got[1].Problem != "" {
		t.Errorf("cls-a has a problem: %s", got[1].Problem)
	}
	if p := got[2].Problem; !strings.Contains(p, "bad-ip") || !strings.Contains(p, "not-an-ip") {
		t.Errorf("cls-b's problem = %q, want the bad instance and its value", p)
	}
	if none, err := rd.ReadService(ctx, registry.ServiceKey{Namespace: "demo", Name: "absent"}); err != nil || len(none) != 0 {
		t.Errorf("ReadService of a service nobody exports = %v, %v; want none", none, err)
	}
	if none, err := rd.ReadService(ctx, registry.ServiceKey{Namespace: "no-such-namespace", Name: "web"}); err != nil || len(none) != 0 {
		t.Errorf("ReadService in a namespace Cloud Map lacks = %v, %v; want none", none, err)
	}

	hbs, err := rd.ReadHeartbeats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hbs) != 2 || hbs[0].ClusterID != "cls-a" || hbs[1].ClusterID != "cls-b" {
		t.Fatalf("ReadHeartbeats = %+v, want cls-a and cls-b of set1", hbs)
	}
	if hbs[0].LeaseDuration != 7*time.Second || hbs[1].LeaseDuration != registry.DefaultLeaseDuration {
		t.Errorf("leases = %s, %s; want 7s and the default %s", hbs[0].LeaseDuration, hbs[1].LeaseDuration, registry.DefaultLeaseDuration)
	}
	if age := time.Since(hbs[0].RenewTime); age < 0 || age > time.Minute {
		t.Errorf("cls-a renewed %s ago", age)
	}

	// Another account or region: no system namespace at all, which must
	// not read as "every member is silent".
	elsewhere, err := NewReader(cloudmaptest.Config(), ReaderOptions{ClusterSetID: "set1", Endpoint: url, SystemNamespace: "nobody.system"})
	if err != nil {
		t.Fatal(err)
	}
	if hbs, err := elsewhere.ReadHeartbeats(ctx); !errors.Is(err, ErrNoSystemNamespace) {
		t.Errorf("ReadHeartbeats without the system namespace = %v, %v; want ErrNoSystemNamespace", hbs, err)
	}

	calls := rd.(reader).calls.snapshot()
	if want := map[string]int{"DiscoverInstances": 4}; !reflect.DeepEqual(calls, want) {
		t.Errorf("the reader called %v, want %v", calls, want)
	}
	allowed := policyFileActions(t, readOnlyPolicyPath)
	for op := range calls {
		if !slices.Contains(allowed, op) {
			t.Errorf("the reader called %s, which %s does not allow (%v)", op, readOnlyPolicyPath, allowed)
		}
	}
}

func mustNamespace(t *testing.T, r *Registry, name string) nsInfo {
	t.Helper()
	ns, ok, err := r.namespace(context.Background(), name, false)
	if err != nil || !ok {
		t.Fatalf("namespace %s: %v, %v", name, ok, err)
	}
	return ns
}
