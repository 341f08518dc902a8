package cloudmap

import (
	"context"
	"errors"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
)

// TestHostileNamespaceAtScale: a Cloud Map namespace holds 10,000 instances
// that no member wrote (hostileFixtures: strangers, another clusterset,
// garbage of every kind, part of it claiming the clusterset or the
// exporting cluster itself, a service of 1,503 instances and one of 1,001
// that claim the clusterset), beside the record cls1 exports there.
//
//   - Another member reads cls1's records there and in another namespace,
//     and cls3's record that lands in the oversized service after 1,500
//     strangers' instances, exactly: nothing of the garbage, nothing of the
//     other clusterset, nothing lost. Nothing panics.
//   - Its reads cost calls per service, not per instance: no ListInstances,
//     at most 3 DiscoverInstances and 1 DiscoverInstancesRevision per
//     oversized service; idle, it reads nothing in full.
//   - cls1 removes the garbage that claims to be its own and then writes
//     nothing more.
//   - A member with the default quota of 2,000 instances per namespace is
//     refused an export into the namespace with a QuotaError that names the
//     other writers' instances, writes nothing, and exports elsewhere.
//   - `kubectl clusterset status`'s reader reads the same.
func TestHostileNamespaceAtScale(t *testing.T) {
	began := time.Now()
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	// The garbage goes around the limits proxy: real Cloud Map refuses
	// some of it (oversized or non-ASCII attributes), but the readers must
	// survive it wherever it comes from.
	c := rawClient(cloudmaptest.Direct(url))
	publish := func(r *Registry, recs ...registry.Record) {
		t.Helper()
		for i := range recs {
			if err := r.Publish(ctx, &recs[i]); err != nil {
				t.Fatal(err)
			}
		}
	}

	// cls1 exports web into the namespace the others fill (an account
	// whose namespace quota was raised to hold them), and api elsewhere;
	// another clusterset exports into the same service.
	w := newTestRegistry(t, url, "set1", "cls1", func(o *Options) {
		o.MaxInstancesPerNamespace = 20000
		o.RepairDelay = time.Second
		// Its first read, a full one, finds the garbage in its name.
		o.FullResyncPeriod = time.Hour
		o.ForeignSweepPeriod = time.Hour
	})
	web := sampleRecord("set1", "cls1", hostileNS, "web", "10.1.0.1", "10.1.0.2")
	api := sampleRecord("set1", "cls1", "calm", "api", "10.1.0.3")
	publish(w, web, api)
	publish(newTestRegistry(t, url, "set2", "cls1"), sampleRecord("set2", "cls1", hostileNS, "web", "10.2.0.1"))

	fixtures := hostileFixtures()
	if len(fixtures) != hostileInstances {
		t.Fatalf("%d fixtures, want %d", len(fixtures), hostileInstances)
	}
	// The instances that claim set1, which the view counted before
	// as the only instances of others.
	claimSet1 := 0
	for _, f := range fixtures {
		if clusterSetOf(f.attrs) == "set1" {
			claimSet1++
		}
	}
	flooded := time.Now()
	registerHostile(ctx, t, c, fixtures, 16)
	floodTook := time.Since(flooded)
	fixtures = nil
	// cls3's record, as clusterset-controller encodes it, after the 1,500
	// instances of the stranger: none of it is among the first 1,000.
	flood := sampleRecord("set1", "cls3", hostileNS, "flood", "10.3.0.1")
	enc, err := encodeRecord(&flood, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	floodInsts := map[string]map[string]string{}
	for id, in := range enc {
		floodInsts[id] = in.Attrs
	}
	registerExisting(t, url, hostileNS, "flood", floodInsts)

	// A member reads it all.
	complete0 := testutil.ToFloat64(oversizedReadsTotal.WithLabelValues("complete"))
	incomplete0 := testutil.ToFloat64(oversizedReadsTotal.WithLabelValues("incomplete"))
	var mem0, mem1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&mem0)
	rd := newTestRegistry(t, url, "set1", "cls2", func(o *Options) {
		o.FullResyncPeriod = time.Hour
		o.ForeignSweepPeriod = time.Hour
		o.ForeignPollInterval = time.Second
	})
	peak := sampleHeap(t)
	syncStart := time.Now()
	run(t, rd)
	eventually(t, 30*time.Second, "the reader's view to sync", rd.HasSynced)
	syncTook := time.Since(syncStart)
	webKey, apiKey, floodKey := web.Key(), api.Key(), flood.Key()
	waitRecords(t, rd, webKey, []registry.Record{web})
	waitRecords(t, rd, apiKey, []registry.Record{api})
	waitRecords(t, rd, floodKey, []registry.Record{flood})
	rd.pollMu.Lock()
	cold, coldPolls, coldChecks := rd.calls.snapshot(), rd.ps.polls, rd.ps.foreign
	rd.pollMu.Unlock()
	peakMB := float64(peak()-mem0.HeapAlloc) / (1 << 20)
	runtime.GC()
	runtime.ReadMemStats(&mem1)
	keys, err := rd.Keys()
	if err != nil || !reflect.DeepEqual(keys, []registry.ServiceKey{apiKey, floodKey, webKey}) {
		t.Fatalf("the reader shows records of %v (%v), want only %v, %v and %v", keys, err, apiKey, floodKey, webKey)
	}
	// Per service of the account (web, flood, forged, the junk ones, api
	// and clusterset.system/changes) a DiscoverInstances but the last, and
	// its namespace: a GetService each, or, as here, where that costs
	// less, a ListServices of each namespace (hostile, calm) and a
	// GetService for the beacons' service only; per oversized service (flood, forged) two more
	// DiscoverInstances and a DiscoverInstancesRevision; per poll a
	// DiscoverInstancesRevision of the beacons, and once their
	// DiscoverInstances. Once the view holds the garbage that claims set1
	// without clusterset-controller's K8S_CONTROLLER, hostile counts as a
	// mixed namespace: per check of it (every ForeignPollInterval) a
	// ListNamespaces, a ListServices and a DiscoverInstancesRevision per
	// service of hostile. Nothing per instance.
	services, hostileServices, namespaces := 3+junkServices+1, 3+junkServices, 2
	limits := map[string]int{"ListNamespaces": 1 + int(coldChecks), "ListServices": 1 + int(coldChecks) + namespaces, "GetService": 1,
		"DiscoverInstances": services + 2*2 + 1, "DiscoverInstancesRevision": int(coldPolls) + 2 + int(coldChecks)*hostileServices}
	for op, n := range cold {
		if n > limits[op] {
			t.Errorf("the reader's first read of %d instances in %d services made %d %s calls in %d polls and %d checks of hostile, want at most %d: %v",
				hostileInstances, services, n, op, coldPolls, coldChecks, limits[op], cold)
		}
	}
	if d := testutil.ToFloat64(oversizedReadsTotal.WithLabelValues("complete")) - complete0; d < 1 {
		t.Errorf("no complete oversized read counted (flood)")
	}
	if d := testutil.ToFloat64(oversizedReadsTotal.WithLabelValues("incomplete")) - incomplete0; d < 1 {
		t.Errorf("no incomplete oversized read counted (forged)")
	}
	heldMB := (float64(mem1.HeapAlloc) - float64(mem0.HeapAlloc)) / (1 << 20)
	allocMB := float64(mem1.TotalAlloc-mem0.TotalAlloc) / (1 << 20)
	if heldMB > 16 || peakMB > 256 {
		t.Errorf("reading the namespace took the heap %.1f MiB higher at its peak, and the view holds %.1f MiB", peakMB, heldMB)
	}

	// cls1 removes the garbage that claims to be its own, once, and then
	// writes nothing more.
	run(t, w)
	webID := existingServiceID(t, url, hostileNS, "web")
	own, err := encodeRecord(&web, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "cls1 to remove the instances that claim to be its own", func() bool {
		insts, err := w.api.listInstances(ctx, webID)
		if err != nil {
			return false
		}
		n := 0
		for _, in := range insts {
			if w.ours(in.Attrs) {
				n++
			}
		}
		return n == len(own)
	})
	quiet := func(r *Registry, what string) map[string]int {
		t.Helper()
		eventually(t, 10*time.Second, what+" to settle", func() bool { return !checking(r) })
		return r.calls.snapshot()
	}
	wBefore := quiet(w, "cls1")
	time.Sleep(2 * time.Second) // past RepairDelay
	if d := diff(w.calls.snapshot(), wBefore); d["RegisterInstance"]+d["DeregisterInstance"] != 0 {
		t.Errorf("cls1 kept writing after the cleanup: %v", d)
	}

	// Idle, the reader checks revisions and reads nothing in full.
	rd.pollMu.Lock()
	idle0, polls0, foreign0 := rd.calls.snapshot(), rd.ps.polls, rd.ps.foreign
	rd.pollMu.Unlock()
	time.Sleep(2 * time.Second)
	rd.pollMu.Lock()
	idle, polls, foreignChecks := diff(rd.calls.snapshot(), idle0), rd.ps.polls-polls0, rd.ps.foreign-foreign0
	rd.pollMu.Unlock()
	if idle["DiscoverInstances"] != 0 || idle["ListInstances"] != 0 || total(idle) > int(polls)+int(foreignChecks)*(2+hostileServices) {
		t.Errorf("idle for %d polls and %d checks of the mixed namespace, the reader made %v", polls, foreignChecks, idle)
	}
	waitRecords(t, rd, webKey, []registry.Record{web})

	// A member with the default quota: refused in the namespace, with
	// the reason, writing nothing; its export elsewhere goes through.
	small := newTestRegistry(t, url, "set1", "cls4")
	run(t, small)
	eventually(t, 30*time.Second, "cls4's view to sync", small.HasSynced)
	before := small.calls.snapshot()
	refused := sampleRecord("set1", "cls4", hostileNS, "web4", "10.4.0.1")
	err = small.Publish(ctx, &refused)
	var qe *QuotaError
	// Others counts every writer's instances the view saw: those that
	// claim set1 (and cls1's and cls3's records), the strangers' and
	// set2's; of the two oversized services, what their reads returned.
	if !errors.As(err, &qe) || qe.Scope != "namespace" || qe.Limit != 2000 || qe.Others <= claimSet1+len(own)+len(enc) ||
		!strings.Contains(err.Error(), "already held by other writers") || !strings.Contains(err.Error(), "--cloudmap-max-instances-per-namespace") {
		t.Fatalf("Publish into a namespace others filled past the quota: %v", err)
	}
	t.Logf("refused: %v", err)
	if d := diff(small.calls.snapshot(), before); d["CreateService"]+d["RegisterInstance"]+d["CreateHttpNamespace"] != 0 {
		t.Errorf("a refused Publish wrote: %v", d)
	}
	elsewhereRec := sampleRecord("set1", "cls4", "calm", "api4", "10.4.0.2")
	publish(small, elsewhereRec)
	waitRecords(t, rd, elsewhereRec.Key(), []registry.Record{elsewhereRec})
	// Into the oversized service, cls1 is refused by the service quota.
	intoFlood := sampleRecord("set1", "cls1", hostileNS, "flood", "10.1.0.9")
	if err := w.Publish(ctx, &intoFlood); !errors.As(err, &qe) || qe.Scope != "service" || qe.Others < maxDiscoverResults {
		t.Errorf("Publish into a service of 1,503 instances: %v", err)
	}
	waitRecords(t, rd, webKey, []registry.Record{web})

	// The reader of `kubectl clusterset status` and `doctor`.
	tool, err := NewReader(cloudmaptest.Config(), ReaderOptions{ClusterSetID: "set1", Endpoint: url})
	if err != nil {
		t.Fatal(err)
	}
	// Records of cls1 and cls3 without a problem; the garbage reported
	// as problems, never as records.
	for key, want := range map[registry.ServiceKey]registry.Record{webKey: web, floodKey: flood} {
		got, err := tool.ReadService(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range got {
			if s.ClusterID == want.ClusterID {
				if s.Record == nil || !registry.SameContent(s.Record, &want) || s.Problem != "" {
					t.Errorf("ReadService(%s) gives %s %+v, want its record without a problem", key, s.ClusterID, s)
				}
			} else if s.Record != nil || s.Problem == "" {
				t.Errorf("ReadService(%s) gives %s %+v, want only a problem", key, s.ClusterID, s)
			}
		}
	}
	got, err := tool.ReadService(ctx, registry.ServiceKey{Namespace: hostileNS, Name: "forged"})
	if err != nil || len(got) == 0 || got[0].ClusterID != "" || !strings.Contains(got[0].Problem, "more than 1000 instances claim clusterset set1") {
		t.Errorf("ReadService of the forged service = %+v, %v; want a problem saying the read was cut", got, err)
	}
	for _, s := range got {
		if s.Record != nil {
			t.Errorf("ReadService of the forged service gives a record of %s", s.ClusterID)
		}
	}
	if calls := tool.(reader).calls.snapshot(); !reflect.DeepEqual(calls, map[string]int{"DiscoverInstances": 1 + 3 + 3}) {
		t.Errorf("the reader tool called %v, want 7 DiscoverInstances (3 for each oversized service)", calls)
	}

	t.Logf("%d instances registered in %.1fs (%d workers); first read: %.1fs, %d polls, %d checks of hostile, calls %v; heap peak +%.0f MiB, %.0f MiB allocated, view %.1f MiB; idle %d polls, %d checks of the mixed namespace: %v; whole test %.1fs",
		hostileInstances, floodTook.Seconds(), 16, syncTook.Seconds(), coldPolls, coldChecks, cold, peakMB, allocMB, heldMB, polls, foreignChecks, idle, time.Since(began).Seconds())
}

// total returns the number of calls in c.
func total(c map[string]int) int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// sampleHeap samples the heap every 10ms until the test ends; the returned
// func returns the highest HeapAlloc seen so far.
func sampleHeap(t *testing.T) func() uint64 {
	var mu sync.Mutex
	var peak uint64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			mu.Lock()
			peak = max(peak, m.HeapAlloc)
			mu.Unlock()
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { close(done); <-stopped })
	return func() uint64 {
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}
