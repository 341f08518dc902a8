package cloudmap

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
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

// readCounter is a faultProxy that counts a reader's requests about one
// namespace's services (and those that name no namespace: ListServices),
// and slows its reads of them while slow is set.
type readCounter struct {
	*faultProxy
	mu    sync.Mutex
	slow  bool
	calls map[string]map[string]int // operation -> service name ("" when none) -> requests
}

// newReadCounter starts a proxy in front of moto that holds each
// DiscoverInstances and DiscoverInstancesRevision of a service of ns for
// delay while slow is set.
func newReadCounter(t *testing.T, motoURL, ns string, delay time.Duration) *readCounter {
	c := &readCounter{faultProxy: newFaultProxy(t, motoURL)}
	c.reset(false)
	c.setDelay(func(target string, body []byte) time.Duration {
		var in struct{ NamespaceName, ServiceName string }
		_ = json.Unmarshal(body, &in)
		if in.NamespaceName != "" && in.NamespaceName != ns {
			return 0 // the beacons, the heartbeats
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.calls[target] == nil {
			c.calls[target] = map[string]int{}
		}
		c.calls[target][in.ServiceName]++
		if c.slow && (target == "DiscoverInstances" || target == "DiscoverInstancesRevision") {
			return delay
		}
		return 0
	})
	return c
}

// reset forgets the requests counted so far and sets slow.
func (c *readCounter) reset(slow bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slow = slow
	c.calls = map[string]map[string]int{}
}

// count returns the requests of op since the last reset, in all and by
// service name.
func (c *readCounter) count(op string) (int, map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, by := 0, map[string]int{}
	for name, k := range c.calls[op] {
		n += k
		by[name] = k
	}
	return n, by
}

// TestLongChecksHoldNoChangeBack: a check of many services that outlasts a
// poll, a full resync or a namespace whose change beacon moved without
// naming what changed, is spread over the polls that follow: a change a
// beacon announces meanwhile is read at the next poll, not once the check
// is over, and the check still reads every service. Before, a poll held the
// whole check: at thousands of services a reader read no beacon for tens
// of seconds at each full resync, and imported a long burst in waves.
//
// The proxies slow the readers' reads of big's 100 services to 250 ms
// while told to, so a check of them takes about 6 s at Concurrency 4.
func TestLongChecksHoldNoChangeBack(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	const size, delay = 100, 250 * time.Millisecond
	w := newTestRegistry(t, url, "set1", "cls1", func(o *Options) { o.MotoWorkarounds = true })
	p := newReadCounter(t, url, "big", delay)
	readerOpts := func(o *Options) {
		o.ForeignSweepPeriod = -1
		o.FullResyncPeriod = time.Hour
	}
	rd := newTestRegistry(t, p.URL, "set1", "cls2", readerOpts)
	recs := publishServices(t, w, "big", size)
	run(t, rd)
	for i := range recs {
		waitRecords(t, rd, recs[i].Key(), recs[i:i+1])
	}
	idle := func(what string) {
		t.Helper()
		eventually(t, 30*time.Second, what, func() bool {
			rd.pollMu.Lock()
			defer rd.pollMu.Unlock()
			return !rd.ps.checking()
		})
	}
	idle("the reader to have nothing left to check")
	readAll := func(op string, want []registry.Record) {
		t.Helper()
		eventually(t, 30*time.Second, "every service of big to be checked ("+op+")", func() bool {
			_, by := p.count(op)
			for _, rec := range want {
				if by[rec.Name] == 0 {
					return false
				}
			}
			return true
		})
	}

	// A full resync: every service read in full.
	p.reset(true)
	rd.pollMu.Lock()
	rd.ps.lastFull = time.Time{}
	rd.pollMu.Unlock()
	eventually(t, 10*time.Second, "the full resync to begin", func() bool { n, _ := p.count("DiscoverInstances"); return n > 0 })
	recs[size-1].Endpoints = append(recs[size-1].Endpoints, recs[size-1].Endpoints[0])
	recs[size-1].Endpoints[1].Address = "10.0.1.1"
	if err := w.Publish(ctx, &recs[size-1]); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, rd, recs[size-1].Key(), recs[size-1:])
	if n, _ := p.count("DiscoverInstances"); n >= size*3/4 {
		t.Errorf("an endpoint change showed after %d full reads of big's %d services: it waited for the full resync", n, size)
	}
	readAll("DiscoverInstances", recs)
	idle("the full resync to end")

	// A namespace check: every service revision-checked. Meanwhile an
	// endpoint change, an export and a withdrawal in that namespace.
	p.reset(true)
	rd.pollMu.Lock()
	rd.ps.pendingNS["big"] = true // as a beacon that names no service
	rd.pollMu.Unlock()
	eventually(t, 10*time.Second, "the check of big to begin", func() bool { n, _ := p.count("DiscoverInstancesRevision"); return n > 0 })
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
	if n, _ := p.count("DiscoverInstancesRevision"); n >= size*3/4 {
		t.Errorf("an endpoint change, an export and a withdrawal showed after %d revision checks of big's %d services: they waited for the namespace check", n, size)
	}
	readAll("DiscoverInstancesRevision", recs[2:])
	idle("the namespace check to end")

	// A reader driven poll by poll, behind a proxy of its own, for what
	// one poll does.
	p2 := newReadCounter(t, url, "big", delay)
	rd2 := newTestRegistry(t, p2.URL, "set1", "cls3", readerOpts)
	pollOnce := func() error { return rd2.poll(ctx, func(registry.ServiceKey) {}) }
	queued := func() int {
		rd2.pollMu.Lock()
		defer rd2.pollMu.Unlock()
		return rd2.ps.scan.len()
	}
	drain := func() {
		t.Helper()
		for i := 0; queued() > 0; i++ {
			if i == 300 {
				t.Fatalf("300 polls left %d services queued", queued())
			}
			if err := pollOnce(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := pollOnce(); err != nil { // syncs: reads every service
		t.Fatal(err)
	}
	chunk := rd2.opts.Concurrency * scanChunk

	// More announced exports than a chunk, during a namespace check that
	// stays hot: one poll reads them all, and the polls that follow while
	// the check is under way do not list the namespace again.
	p2.reset(true)
	rd2.pollMu.Lock()
	now := time.Now()
	rd2.ps.heat("big", now, now.Add(time.Minute), rd2.opts.PollInterval)
	rd2.pollMu.Unlock()
	if err := pollOnce(); err != nil {
		t.Fatal(err)
	}
	burst := make([]registry.Record, 2*chunk+8)
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
	p2.reset(true)
	for range 2 { // its next checks are due: after 1 and 3 polls
		if err := pollOnce(); err != nil {
			t.Fatal(err)
		}
	}
	if queued() == 0 {
		t.Fatal("the namespace check ended within 4 polls: the test proves nothing")
	}
	if n, _ := p2.count("ListServices"); n != 0 {
		t.Errorf("the namespace was listed %d times while its check was under way, want 0: its next checks wait for it to end", n)
	}

	// A service queued for a read in full (a full resync) whose last
	// revision check failed is read at once, in full, and leaves the queue.
	p2.reset(false)
	drain()
	rd2.pollMu.Lock()
	rd2.ps.hot = map[string]*hotNamespace{}
	rd2.pollMu.Unlock()
	drain()
	k := recs[5].Key()
	p2.reset(false)
	rd2.pollMu.Lock()
	rd2.ps.scan.add(target{key: k}, true)
	rd2.ps.retry[k] = false
	rd2.pollMu.Unlock()
	if err := pollOnce(); err != nil {
		t.Fatal(err)
	}
	_, full := p2.count("DiscoverInstances")
	_, rev := p2.count("DiscoverInstancesRevision")
	if full[k.Name] != 1 || rev[k.Name] != 0 || queued() != 0 {
		t.Errorf("%s, queued for a read in full and read at once for a failed revision check: %d DiscoverInstances, %d DiscoverInstancesRevision, %d services left queued; want 1, 0, 0",
			k, full[k.Name], rev[k.Name], queued())
	}

	// A read that fails in a poll that also lists its namespace for a
	// check of every service is read again at the next poll, not queued
	// behind that check (this cluster's read-back of its own write).
	k = recs[50].Key()
	var refusedOnce bool
	p2.setRefuse(func(target string, body []byte) string {
		var in struct{ NamespaceName, ServiceName string }
		if !refusedOnce && target == "DiscoverInstances" && json.Unmarshal(body, &in) == nil && in.ServiceName == k.Name {
			refusedOnce = true // under the proxy's lock
			return "InvalidInput"
		}
		return ""
	})
	rd2.pollMu.Lock()
	rd2.ps.retry[k] = true
	rd2.ps.pendingNS["big"] = true
	rd2.pollMu.Unlock()
	if err := pollOnce(); err == nil {
		t.Fatal("a poll whose read was refused reported no error")
	}
	rd2.pollMu.Lock()
	retry, inQueue := rd2.ps.retry[k], rd2.ps.scan.has(k)
	rd2.pollMu.Unlock()
	if !retry || inQueue {
		t.Errorf("after its read failed in a poll that listed its namespace, %s is to be read at once: %v, queued: %v; want true, false", k, retry, inQueue)
	}
	p2.setRefuse(nil)
	drain()

	// When every check fails (an outage), a poll tries one chunk and the
	// services stay queued.
	rd2.pollMu.Lock()
	rd2.ps.pendingNS["big"] = true
	rd2.pollMu.Unlock()
	p2.reset(false)
	p2.setRefuse(func(target string, body []byte) string {
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
	tried, _ := p2.count("DiscoverInstancesRevision")
	if want := size - 1 + len(burst) + 1; retried != 0 || n != want || tried != chunk {
		t.Errorf("a poll whose checks all failed: %d checks tried, %d services to retry at once, %d queued; want %d, 0, %d", tried, retried, n, chunk, want)
	}
	p2.setRefuse(nil)
	drain()

	// Services whose checks keep failing, a chunk of them at the head of
	// the queue, hold up no other: the others are checked, and only they
	// stay queued.
	refused := func(name string) bool { return strings.HasPrefix(name, "svc-") && name < "svc-020" }
	p2.setRefuse(func(target string, body []byte) string {
		var in struct{ NamespaceName, ServiceName string }
		if target == "DiscoverInstancesRevision" && json.Unmarshal(body, &in) == nil && in.NamespaceName == "big" && refused(in.ServiceName) {
			return "InvalidInput"
		}
		return ""
	})
	rd2.pollMu.Lock()
	rd2.ps.pendingNS["big"] = true
	rd2.pollMu.Unlock()
	var left []string
	for range 30 {
		_ = pollOnce() // fails: the refused checks
		rd2.pollMu.Lock()
		left = nil
		for k := range rd2.ps.scan.items {
			left = append(left, k.Name)
		}
		rd2.pollMu.Unlock()
		if !slices.ContainsFunc(left, func(n string) bool { return !refused(n) }) {
			break
		}
	}
	slices.Sort(left)
	if len(left) != 19 || slices.ContainsFunc(left, func(n string) bool { return !refused(n) }) {
		t.Errorf("after 30 polls with the checks of svc-000 … svc-019 refused, queued: %v; want those 19 (svc-001 is withdrawn) only", left)
	}
	p2.setRefuse(nil)
	drain()
}

// TestUnknownNamespaceWaitsForItsListing: when reads answer
// NamespaceNotFound (DiscoverInstances does not know the namespace: too new
// for it, or deleted), the reader reads no more of that namespace's queued
// services than the chunk that found it and leaves them queued for a
// listing, which tells which: one that is there is checked, one deleted
// drops its services from the view (each told as changed) and from the
// queue. Neither is a failed poll, but a first sweep that could not read a
// namespace does not count as synced. A namespace listed that stays
// unknown past RepairDelay fails the polls (logged).
func TestUnknownNamespaceWaitsForItsListing(t *testing.T) {
	for _, tc := range []string{"too-new", "too-new-at-start", "deleted", "stays-unknown"} {
		t.Run(tc, func(t *testing.T) {
			url := cloudmaptest.StartMoto(t)
			proxy := newFaultProxy(t, url)
			ctx := context.Background()
			const size, repair = 100, 3 * time.Second
			w := newTestRegistry(t, url, "set1", "cls1", func(o *Options) { o.MotoWorkarounds = true })
			rd := newTestRegistry(t, proxy.URL, "set1", "cls2", func(o *Options) {
				o.PollInterval = time.Minute // a poll's share of the queue is not what ends the reads here
				o.ForeignSweepPeriod = -1
				o.ForeignPollInterval = -1
				o.FullResyncPeriod = time.Hour
				o.RepairDelay = repair
			})
			var mu sync.Mutex
			told := map[registry.ServiceKey]bool{}
			poll := func() error {
				return rd.poll(ctx, func(k registry.ServiceKey) { mu.Lock(); told[k] = true; mu.Unlock() })
			}
			mustPoll := func() {
				t.Helper()
				if err := poll(); err != nil {
					t.Fatalf("a poll failed: %v", err)
				}
			}
			unknown := refuseDiscovery(proxy, "NamespaceNotFound", `"NamespaceName":"big"`) // counts big's reads
			unknown.on.Store(false)
			setUnknown := unknown.on.Store
			queued := func() int {
				rd.pollMu.Lock()
				defer rd.pollMu.Unlock()
				return rd.ps.scan.len()
			}
			// waitsForListing polls once and checks that the reads of big,
			// whose namespace is unknown, stopped at one chunk and left
			// every service queued for the listing.
			waitsForListing := func(what string) {
				t.Helper()
				r0 := unknown.seen.Load()
				mustPoll()
				if n, chunk := unknown.seen.Load()-r0, int64(rd.opts.Concurrency*scanChunk); n == 0 || n > chunk {
					t.Errorf("a check of %d services whose namespace %s read %d of them, want at least 1 and at most a chunk (%d)", size, what, n, chunk)
				}
				if q := queued(); q != size {
					t.Errorf("%d services queued after the reads that found their namespace unknown, want all %d waiting for the listing", q, size)
				}
			}
			var recs []registry.Record

			switch tc {
			case "too-new":
				// Synced before big exists; the writer's first writes there
				// make the reader check the whole namespace.
				mustPoll()
				setUnknown(true)
				recs = publishServices(t, w, "big", size)
				waitsForListing("DiscoverInstances does not know")
			case "too-new-at-start":
				recs = publishServices(t, w, "big", size)
				setUnknown(true)
				mustPoll() // the first sweep reads every service
				if rd.HasSynced() {
					t.Error("a first sweep that could not read a namespace's services counts as synced: an importer would take them for withdrawn")
				}
			case "deleted":
				recs = publishServices(t, w, "big", size)
				mustPoll() // the first sweep reads every service
				rd.pollMu.Lock()
				for _, rec := range recs { // as a beacon that named no service
					rd.ps.scan.add(target{key: rec.Key(), id: rd.serviceID(rec.Key())}, false)
				}
				rd.pollMu.Unlock()
				deleteNamespaceRaw(ctx, t, url, "big")
				waitsForListing("was deleted")
			case "stays-unknown":
				recs = publishServices(t, w, "big", size)
				setUnknown(true)
				start := time.Now()
				mustPoll()
				time.Sleep(repair + 500*time.Millisecond - time.Since(start)) // the first read was a little after start
				if err := poll(); err == nil {
					t.Error("a poll of a namespace that ListNamespaces shows and DiscoverInstances has not known for RepairDelay did not fail: it would go unlogged for good")
				}
				if rd.HasSynced() {
					t.Error("synced with a namespace unread")
				}
			}

			setUnknown(false) // DiscoverInstances knows it now (or moto says it is gone)
			mu.Lock()
			clear(told)
			mu.Unlock()
			mustPoll()
			if q := queued(); q != 0 {
				t.Errorf("%d services still queued after the listing and a poll of a minute's share", q)
			}
			if !rd.HasSynced() {
				t.Error("not synced after every service was read")
			}
			for _, rec := range recs {
				got, err := rd.Records(rec.Key())
				if err != nil {
					t.Fatal(err)
				}
				mu.Lock()
				wasTold := told[rec.Key()]
				mu.Unlock()
				switch {
				case tc == "deleted" && (len(got) != 0 || !wasTold):
					t.Fatalf("after its namespace was deleted, %s shows %+v (told: %v), want nothing, told", rec.Key(), got, wasTold)
				case tc != "deleted" && !equalRecords(got, []registry.Record{rec}):
					t.Fatalf("%s shows %+v, want its record", rec.Key(), got)
				}
			}
		})
	}
}
