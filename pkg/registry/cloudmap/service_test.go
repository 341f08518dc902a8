package cloudmap

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	sdtypes "github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
)

// TestNewServicesListTheNamespaceOnce publishes services that do not exist
// yet into one namespace and counts the writer's ListServices calls: the
// namespace is listed once, not once or twice per new service (a burst of
// N services used to cost O(N²) listed services), and a service just
// created is not read back (ListInstances).
func TestNewServicesListTheNamespaceOnce(t *testing.T) {
	const n = 12
	for _, moto := range []bool{false, true} {
		t.Run(fmt.Sprintf("MotoWorkarounds=%t", moto), func(t *testing.T) {
			ctx := context.Background()
			url := cloudmaptest.StartMoto(t)
			w := newTestRegistry(t, url, "set1", "cls1", func(o *Options) { o.MotoWorkarounds = moto })
			first := sampleRecord("set1", "cls1", "burst", "svc-0", "10.0.0.1")
			if err := w.Publish(ctx, &first); err != nil {
				t.Fatal(err)
			}
			before := w.calls.snapshot()
			for i := 1; i <= n; i++ {
				rec := sampleRecord("set1", "cls1", "burst", fmt.Sprintf("svc-%d", i), fmt.Sprintf("10.0.1.%d", i))
				if err := w.Publish(ctx, &rec); err != nil {
					t.Fatal(err)
				}
			}
			after := w.calls.snapshot()
			if got := after["ListServices"] - before["ListServices"]; got != 0 {
				t.Errorf("%d new services in a listed namespace cost %d ListServices, want 0", n, got)
			}
			// A service created by this call holds nothing yet: its
			// instances are not read back.
			if got := after["ListInstances"] - before["ListInstances"]; got != 0 {
				t.Errorf("%d new services cost %d ListInstances, want 0", n, got)
			}
			if got := after["CreateService"] - before["CreateService"]; got != n {
				t.Errorf("%d new services cost %d CreateService, want %d", n, got, n)
			}
			// Each is one Cloud Map service that a reader sees.
			names := serviceNames(t, url, "burst")
			for i := 0; i <= n; i++ {
				if k := names[fmt.Sprintf("svc-%d", i)]; k != 1 {
					t.Errorf("Cloud Map has %d services named svc-%d, want 1", k, i)
				}
			}
			rd := newTestRegistry(t, url, "set1", "cls2")
			run(t, rd)
			waitRecords(t, rd, registry.ServiceKey{Namespace: "burst", Name: fmt.Sprintf("svc-%d", n)},
				[]registry.Record{sampleRecord("set1", "cls1", "burst", fmt.Sprintf("svc-%d", n), fmt.Sprintf("10.0.1.%d", n))})
		})
	}
}

// TestServiceCreatedSinceTheListing: another cluster creates a service
// after this writer listed the namespace. Cloud Map refuses the second
// creation with ServiceAlreadyExists, which names the service (moto does
// too, with hack/moto's patch); the writer publishes into that service. When
// the refusal does not name it (the test proxy answers one without), the
// writer lists the namespace again. Either way one service of the name
// remains, holding both clusters' records.
func TestServiceCreatedSinceTheListing(t *testing.T) {
	for _, tc := range []struct {
		name      string
		refuse    bool
		wantLists int
	}{
		{name: "refusal names the service", wantLists: 0},
		{name: "refusal without the service", refuse: true, wantLists: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			url := cloudmaptest.StartMoto(t)
			proxy := newFaultProxy(t, url)
			w1 := newTestRegistry(t, proxy.URL, "set1", "cls1")
			w2 := newTestRegistry(t, url, "set1", "cls2")
			seed := sampleRecord("set1", "cls1", "shared", "seed", "10.0.0.1")
			if err := w1.Publish(ctx, &seed); err != nil { // w1 lists "shared"
				t.Fatal(err)
			}
			late2 := sampleRecord("set1", "cls2", "shared", "late", "10.0.2.1")
			if err := w2.Publish(ctx, &late2); err != nil { // created after w1's listing
				t.Fatal(err)
			}
			if tc.refuse {
				proxy.setRefuse(func(target string, body []byte) string {
					if target == "CreateService" && strings.Contains(string(body), `"Name":"late"`) {
						return "ServiceAlreadyExists"
					}
					return ""
				})
			}
			before := w1.calls.snapshot()
			late1 := sampleRecord("set1", "cls1", "shared", "late", "10.0.1.1")
			if err := w1.Publish(ctx, &late1); err != nil {
				t.Fatal(err)
			}
			if got := w1.calls.snapshot()["ListServices"] - before["ListServices"]; got != tc.wantLists {
				t.Errorf("publishing into a service created since the listing cost %d ListServices, want %d", got, tc.wantLists)
			}
			if k := serviceNames(t, url, "shared")["late"]; k != 1 {
				t.Errorf("Cloud Map has %d services named late, want 1", k)
			}
			rd := newTestRegistry(t, url, "set1", "cls3")
			run(t, rd)
			waitRecords(t, rd, late1.Key(), []registry.Record{late1, late2})
		})
	}
}

// TestMotoRefusesDuplicateServiceNames checks the test environment: Cloud
// Map refuses a second service of a name in a namespace and names the
// first, and the Registry relies on it (Registry.service). moto does the
// same only with hack/moto's patch.
func TestMotoRefusesDuplicateServiceNames(t *testing.T) {
	ctx := context.Background()
	url := cloudmaptest.StartMoto(t)
	w := newTestRegistry(t, url, "set1", "cls1")
	rec := sampleRecord("set1", "cls1", "uniq", "svc", "10.0.0.1")
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	ns, _, err := w.namespace(ctx, "uniq", false)
	if err != nil {
		t.Fatal(err)
	}
	first, ok, err := w.service(ctx, ns, "svc", false)
	if err != nil || !ok {
		t.Fatalf("the published service is not found: %v", err)
	}
	_, err = rawClient(url).CreateService(ctx, &sd.CreateServiceInput{Name: aws.String("svc"), NamespaceId: aws.String(ns.ID)})
	var exists *sdtypes.ServiceAlreadyExists
	if !errors.As(err, &exists) {
		t.Fatalf("a second service named svc: err = %v, want ServiceAlreadyExists: moto without hack/moto's patches? Run hack/install-moto.sh", err)
	}
	if got := aws.ToString(exists.ServiceId); got != first.ID {
		t.Errorf("ServiceAlreadyExists names service %q, want %q", got, first.ID)
	}
	if got := aws.ToString(exists.ServiceArn); got != first.ARN {
		t.Errorf("ServiceAlreadyExists names ARN %q, want %q", got, first.ARN)
	}
}

// serviceNames counts the Cloud Map services of the namespace named ns by
// name.
func serviceNames(t *testing.T, url, ns string) map[string]int {
	t.Helper()
	ctx := context.Background()
	c := rawClient(url)
	nss, err := c.ListNamespaces(ctx, &sd.ListNamespacesInput{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, n := range nss.Namespaces {
		if *n.Name != ns {
			continue
		}
		p := sd.NewListServicesPaginator(c, &sd.ListServicesInput{Filters: []sdtypes.ServiceFilter{{
			Name: sdtypes.ServiceFilterNameNamespaceId, Values: []string{*n.Id}, Condition: sdtypes.FilterConditionEq}}})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range page.Services {
				out[*s.Name]++
			}
		}
	}
	return out
}

// TestWithdrawAgainCostsNothing: the export controller may withdraw a key
// again before the view shows the first withdrawal. With nothing published
// since, that costs no call (it used to list the namespace to look for the
// service the first withdrawal deleted). A key withdrawn and published
// again is withdrawn for real, and a key this process never withdrew still
// goes to Cloud Map.
func TestWithdrawAgainCostsNothing(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	w := newTestRegistry(t, url, "set1", "cls1", func(o *Options) { o.MotoWorkarounds = true })
	rec := sampleRecord("set1", "cls1", "demo", "web", "10.0.0.1")
	calls := func(f func() error) map[string]int {
		t.Helper()
		c0 := w.calls.snapshot()
		if err := f(); err != nil {
			t.Fatal(err)
		}
		return diff(w.calls.snapshot(), c0)
	}
	publish := func() error { return w.Publish(ctx, &rec) }
	withdraw := func() error { return w.Withdraw(ctx, rec.Key()) }
	instances := func() int {
		t.Helper()
		out, err := rawClient(url).DiscoverInstances(ctx, &sd.DiscoverInstancesInput{NamespaceName: aws.String("demo"), ServiceName: aws.String("web")})
		if isCode(err, "ServiceNotFound") {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return len(out.Instances)
	}

	for round := range 2 {
		calls(publish)
		if n := instances(); n == 0 {
			t.Fatalf("round %d: no instance after Publish", round)
		}
		if d := calls(withdraw); d["DeregisterInstance"] == 0 {
			t.Errorf("round %d: the withdrawal cost %v: no DeregisterInstance", round, d)
		}
		if n := instances(); n != 0 {
			t.Errorf("round %d: %d instances left after Withdraw", round, n)
		}
		if d := calls(withdraw); len(d) != 0 {
			t.Errorf("round %d: withdrawing again with nothing published since cost %v, want no call", round, d)
		}
	}

	// A withdrawal older than withdrawnMemory is forgotten, and another
	// process of the cluster (a restart) knows of none: both look in
	// Cloud Map.
	w.forgetWithdrawn(time.Now().Add(withdrawnMemory))
	if d := calls(withdraw); d["ListServices"] == 0 {
		t.Errorf("a withdrawal after the first was forgotten cost %v, want a look in Cloud Map (ListServices)", d)
	}
	w2 := newTestRegistry(t, url, "set1", "cls1", func(o *Options) { o.MotoWorkarounds = true })
	c0 := w2.calls.snapshot()
	if err := w2.Withdraw(ctx, rec.Key()); err != nil {
		t.Fatal(err)
	}
	if d := diff(w2.calls.snapshot(), c0); d["ListServices"] == 0 {
		t.Errorf("a withdrawal by a process that never withdrew the key cost %v, want a look in Cloud Map (ListServices)", d)
	}
}

// TestWithdrawAgainAfterTheRecordCameBack: the memory of a withdrawal
// counts only until the view reads the service again. A record of this
// cluster that such a read still shows came back after the withdrawal
// (here: the instances registered again directly in moto, as a
// registration whose asynchronous operation lands after the withdrawal
// listed the instances would), and the next Withdraw removes it.
func TestWithdrawAgainAfterTheRecordCameBack(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	w := newTestRegistry(t, url, "set1", "cls1", func(o *Options) {
		o.MotoWorkarounds = true
		o.FullResyncPeriod = time.Hour
		o.ForeignSweepPeriod = -1
	})
	other := newTestRegistry(t, url, "set1", "cls3", func(o *Options) { o.MotoWorkarounds = true })
	rec := sampleRecord("set1", "cls1", "demo", "web", "10.0.0.1")
	key := rec.Key()
	// cls3's record keeps the Cloud Map service when cls1 withdraws.
	for _, p := range []struct {
		r   *Registry
		rec registry.Record
	}{{w, rec}, {other, sampleRecord("set1", "cls3", "demo", "web", "10.0.0.3")}} {
		if err := p.r.Publish(ctx, &p.rec); err != nil {
			t.Fatal(err)
		}
	}
	poll := func() {
		t.Helper()
		if err := w.poll(ctx, func(registry.ServiceKey) {}); err != nil {
			t.Fatal(err)
		}
	}
	shows := func() bool {
		t.Helper()
		recs, err := w.Records(key)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.ClusterID == "cls1" {
				return true
			}
		}
		return false
	}
	c := rawClient(url)
	mine := func() []sdtypes.HttpInstanceSummary {
		t.Helper()
		out, err := c.DiscoverInstances(ctx, &sd.DiscoverInstancesInput{NamespaceName: aws.String("demo"), ServiceName: aws.String("web"),
			QueryParameters: map[string]string{attrClusterID: "cls1"}})
		if err != nil {
			t.Fatal(err)
		}
		return out.Instances
	}
	poll()
	if !shows() {
		t.Fatal("the view does not show cls1's record after Publish")
	}
	held := mine()
	if len(held) == 0 {
		t.Fatal("no instance of cls1 after Publish")
	}
	serviceID := w.serviceID(key)
	if err := w.Withdraw(ctx, key); err != nil {
		t.Fatal(err)
	}
	if n := len(mine()); n != 0 {
		t.Fatalf("%d instances of cls1 left after Withdraw", n)
	}
	for _, in := range held {
		if _, err := c.RegisterInstance(ctx, &sd.RegisterInstanceInput{ServiceId: aws.String(serviceID), InstanceId: in.InstanceId, Attributes: in.Attributes}); err != nil {
			t.Fatal(err)
		}
	}

	// Before the view has read the service again, a repeated Withdraw
	// trusts the first (the case the memory is for).
	c0 := w.calls.snapshot()
	if err := w.Withdraw(ctx, key); err != nil {
		t.Fatal(err)
	}
	if d := diff(w.calls.snapshot(), c0); len(d) != 0 {
		t.Errorf("a repeated Withdraw before the view read the service again cost %v, want no call", d)
	}
	poll()
	if !shows() {
		t.Fatal("the view does not show the record of cls1 that came back")
	}
	c0 = w.calls.snapshot()
	if err := w.Withdraw(ctx, key); err != nil {
		t.Fatal(err)
	}
	if d := diff(w.calls.snapshot(), c0); d["DeregisterInstance"] == 0 {
		t.Errorf("a Withdraw after the view showed the record again cost %v, want its DeregisterInstance", d)
	}
	if n := len(mine()); n != 0 {
		t.Errorf("%d instances of cls1 left after the record that came back was withdrawn", n)
	}
}
