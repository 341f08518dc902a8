package cloudmap

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
)

// TestScanQueue: a service queued twice is checked once, in full if either
// asked for it; the services new to the view come first, then the others,
// each in queue order.
func TestScanQueue(t *testing.T) {
	r := newTestRegistry(t, "http://127.0.0.1:9", "set1", "cls1")
	key := func(n string) registry.ServiceKey { return registry.ServiceKey{Namespace: "demo", Name: n} }
	for _, n := range []string{"known-1", "known-2", "known-3", "full"} {
		r.view.services[key(n)] = &svcState{loaded: true}
	}
	q := &r.ps.scan
	for _, n := range []string{"known-1", "new-1", "known-2", "full", "known-3", "new-2"} {
		q.add(target{key: key(n)}, false)
	}
	q.add(target{key: key("full"), id: "srv-full"}, true) // queued again: one check, in full
	q.add(target{key: key("known-1")}, false)
	if _, ok := q.take(key("known-3")); !ok || q.len() != 5 || q.has(key("known-3")) {
		t.Fatalf("after taking known-3 the queue holds %d services (known-3: %v), want 5 without it", q.len(), q.has(key("known-3")))
	}
	var got []string
	for _, k := range r.scanOrder() {
		got = append(got, k.Name)
	}
	if want := []string{"new-1", "new-2", "known-1", "known-2", "full"}; !reflect.DeepEqual(got, want) {
		t.Errorf("scanOrder = %v, want %v", got, want)
	}
	for _, n := range got {
		it := q.items[key(n)]
		if want := n == "full"; it.full != want {
			t.Errorf("%s queued in full: %v, want %v", n, it.full, want)
		}
	}
	if id := q.items[key("full")].id; id != "srv-full" {
		t.Errorf("full queued with ID %q, want srv-full", id)
	}
}

// TestLongChecksHoldNoChangeBack: a check of many services that outlasts a
// poll, a full resync or a namespace whose change beacon moved without
// naming what changed, is spread over the polls that follow: a change a
// beacon announces meanwhile is read at the next poll, not once the check
// is over, and the check still reads every service. Before, a poll held the
// whole check: at thousands of services a reader read no beacon for tens
// of seconds at each full resync, and imported a long burst in waves.
//
// The proxy slows the readers' reads of big's 100 services to 150 ms while
// slow is set, so a check of them takes about 4 s at Concurrency 4.
func TestLongChecksHoldNoChangeBack(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	const size = 100
	w := newTestRegistry(t, url, "set1", "cls1", func(o *Options) { o.MotoWorkarounds = true })
	p := newFaultProxy(t, url)
	readerOpts := func(o *Options) {
		o.ForeignSweepPeriod = -1
		o.FullResyncPeriod = time.Hour
	}
	rd := newTestRegistry(t, p.URL, "set1", "cls2", readerOpts)
	recs := make([]registry.Record, size)
	for i := range recs {
		recs[i] = sampleRecord("set1", "cls1", "big", fmt.Sprintf("svc-%03d", i), "10.0.0.1")
		if err := w.Publish(ctx, &recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	run(t, rd)
	for i := range recs {
		waitRecords(t, rd, recs[i].Key(), recs[i:i+1])
	}
	idle := func(what string) {
		t.Helper()
		eventually(t, 20*time.Second, what, func() bool {
			rd.pollMu.Lock()
			defer rd.pollMu.Unlock()
			return !rd.ps.checking()
		})
	}
	idle("the reader to have nothing left to check")

	// reads counts the readers' reads of big's services since reset, by
	// operation, and which services they read.
	var mu sync.Mutex
	var slow bool
	var reads map[string]int
	var read map[string]map[string]bool
	reset := func(slowDown bool) {
		mu.Lock()
		defer mu.Unlock()
		slow = slowDown
		reads = map[string]int{}
		read = map[string]map[string]bool{"DiscoverInstances": {}, "DiscoverInstancesRevision": {}}
	}
	count := func(op string) (int, map[string]bool) {
		mu.Lock()
		defer mu.Unlock()
		seen := map[string]bool{}
		for n := range read[op] {
			seen[n] = true
		}
		return reads[op], seen
	}
	reset(true)
	p.setDelay(func(target string, body []byte) time.Duration {
		var in struct{ NamespaceName, ServiceName string }
		if target != "DiscoverInstances" && target != "DiscoverInstancesRevision" ||
			json.Unmarshal(body, &in) != nil || in.NamespaceName != "big" {
			return 0
		}
		mu.Lock()
		defer mu.Unlock()
		reads[target]++
		read[target][in.ServiceName] = true
		if !slow {
			return 0
		}
		return 150 * time.Millisecond
	})
	readAll := func(op string, want []registry.Record) {
		t.Helper()
		eventually(t, 20*time.Second, "every service of big to be checked ("+op+")", func() bool {
			_, seen := count(op)
			for _, rec := range want {
				if !seen[rec.Name] {
					return false
				}
			}
			return true
		})
	}

	// A full resync: every service read in full.
	rd.pollMu.Lock()
	rd.ps.lastFull = time.Time{}
	rd.pollMu.Unlock()
	eventually(t, 10*time.Second, "the full resync to begin", func() bool { n, _ := count("DiscoverInstances"); return n > 0 })
	recs[size-1].Endpoints = append(recs[size-1].Endpoints, recs[size-1].Endpoints[0])
	recs[size-1].Endpoints[1].Address = "10.0.1.1"
	if err := w.Publish(ctx, &recs[size-1]); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, rd, recs[size-1].Key(), recs[size-1:])
	if n, _ := count("DiscoverInstances"); n >= size*3/4 {
		t.Errorf("an endpoint change showed after %d full reads of big's %d services: it waited for the full resync", n, size)
	}
	readAll("DiscoverInstances", recs)
	idle("the full resync to end")

	// A namespace check: every service revision-checked. Meanwhile an
	// endpoint change, an export and a withdrawal in that namespace.
	reset(true)
	rd.pollMu.Lock()
	rd.ps.pendingNS["big"] = true // as a beacon that names no service
	rd.pollMu.Unlock()
	eventually(t, 10*time.Second, "the check of big to begin", func() bool { n, _ := count("DiscoverInstancesRevision"); return n > 0 })
	recs[0].Endpoints = append(recs[0].Endpoints, recs[0].Endpoints[0])
	recs[0].Endpoints[1].Address = "10.0.1.1"
	added := sampleRecord("set1", "cls1", "big", "new", "10.0.0.9")
	for _, rec := range []*registry.Record{&recs[0], &added} {
		if err := w.Publish(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Withdraw(ctx, recs[1].Key()); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, rd, recs[0].Key(), recs[:1])
	waitRecords(t, rd, added.Key(), []registry.Record{added})
	waitRecords(t, rd, recs[1].Key(), nil)
	if n, _ := count("DiscoverInstancesRevision"); n >= size*3/4 {
		t.Errorf("an endpoint change, an export and a withdrawal showed after %d revision checks of big's %d services: they waited for the namespace check", n, size)
	}
	readAll("DiscoverInstancesRevision", recs[2:])
	idle("the namespace check to end")

	// A reader driven poll by poll, for what one poll does.
	rd2 := newTestRegistry(t, p.URL, "set1", "cls3", readerOpts)
	pollOnce := func() error {
		t.Helper()
		return rd2.poll(ctx, func(registry.ServiceKey) {})
	}
	queued := func() int {
		rd2.pollMu.Lock()
		defer rd2.pollMu.Unlock()
		return rd2.ps.scan.len()
	}
	reset(false)
	if err := pollOnce(); err != nil { // syncs: reads every service
		t.Fatal(err)
	}

	// More announced exports than a chunk, during a namespace check: one
	// poll reads them all.
	reset(true)
	rd2.pollMu.Lock()
	rd2.ps.pendingNS["big"] = true
	rd2.pollMu.Unlock()
	if err := pollOnce(); err != nil {
		t.Fatal(err)
	}
	burst := make([]registry.Record, 40) // more than Concurrency*scanChunk
	for i := range burst {
		burst[i] = sampleRecord("set1", "cls1", "big", fmt.Sprintf("burst-%02d", i), "10.0.2.1")
		if err := w.Publish(ctx, &burst[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := pollOnce(); err != nil {
		t.Fatal(err)
	}
	for i := range burst {
		if got, err := rd2.Records(burst[i].Key()); err != nil || !equalRecords(got, burst[i:i+1]) {
			t.Errorf("after the poll that read the beacon, %s reads %+v, %v; want its record: an announced export waited in the queue", burst[i].Key(), got, err)
		}
	}
	if n := queued(); n == 0 {
		t.Fatal("the namespace check ended before the exports were read: the test proves nothing")
	}

	// A service queued for a read in full (a full resync) whose last
	// revision check failed is read in full, not revision-checked.
	reset(false)
	for queued() > 0 {
		if err := pollOnce(); err != nil {
			t.Fatal(err)
		}
	}
	k := recs[5].Key()
	rd2.pollMu.Lock()
	rd2.ps.scan.add(target{key: k}, true)
	rd2.ps.retry[k] = false
	rd2.pollMu.Unlock()
	if err := pollOnce(); err != nil {
		t.Fatal(err)
	}
	if _, seen := count("DiscoverInstances"); !seen[k.Name] {
		t.Errorf("%s, queued for a read in full and read at once for a failed revision check, was not read in full", k)
	}

	// A chunk that fails goes back to the queue: a poll fails one chunk,
	// not the whole queue.
	reset(false)
	rd2.pollMu.Lock()
	rd2.ps.pendingNS["big"] = true
	rd2.pollMu.Unlock()
	p.setRefuse(func(target string, body []byte) string {
		var in struct{ NamespaceName string }
		if target == "DiscoverInstancesRevision" && json.Unmarshal(body, &in) == nil && in.NamespaceName == "big" {
			return "InvalidInput"
		}
		return ""
	})
	if err := pollOnce(); err == nil {
		t.Fatal("a poll whose checks were refused reported no error")
	}
	rd2.pollMu.Lock()
	retried, n := len(rd2.ps.retry), rd2.ps.scan.len()
	rd2.pollMu.Unlock()
	if want := size - 1 + len(burst) + 1; retried != 0 || n != want {
		t.Errorf("after a failed chunk: %d services to retry at once and %d queued, want 0 and %d", retried, n, want)
	}
	p.setRefuse(nil)
	for queued() > 0 {
		if err := pollOnce(); err != nil {
			t.Fatal(err)
		}
	}
}
