package cloudmap

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
)

// Readers find the services that beacons announce by name
// (refreshChanged): these tests cover the services new to a reader, gone,
// or not created yet, and the IDs learned afterwards.

// TestAnnouncedServiceNotCreatedYet: a beacon may announce a service that
// the reader cannot find yet (its CreateService not visible yet). The
// reader then looks for it at every poll, the cheaper way for the size of
// its namespace (listingPays): a listing of a small namespace, one page,
// or a read by name in a namespace of more than a page, a
// DiscoverInstances that answers ServiceNotFound. No failed poll either
// way, and once the service exists it is imported with no sweep.
func TestAnnouncedServiceNotCreatedYet(t *testing.T) {
	for _, tc := range []struct {
		services int
		perPoll  string
	}{{1, "ListServices"}, {servicesPerPage, "DiscoverInstances"}} {
		t.Run(fmt.Sprintf("namespace-of-%d", tc.services), func(t *testing.T) {
			url := cloudmaptest.StartMoto(t)
			ctx := context.Background()
			w := newTestRegistry(t, url, "set1", "cls1", func(o *Options) { o.MotoWorkarounds = true })
			rd := newTestRegistry(t, url, "set1", "cls2", func(o *Options) {
				o.PollInterval = 100 * time.Millisecond
				o.ForeignSweepPeriod = -1
				o.ForeignPollInterval = -1
				o.FullResyncPeriod = time.Hour
				o.RepairDelay = 3 * time.Second
			})
			var last registry.Record
			for i := range tc.services {
				last = sampleRecord("set1", "cls1", "demo", fmt.Sprintf("svc-%03d", i), "10.0.0.1")
				if err := w.Publish(ctx, &last); err != nil {
					t.Fatal(err)
				}
			}
			run(t, rd)
			waitRecords(t, rd, last.Key(), []registry.Record{last})
			eventually(t, 10*time.Second, "the reader to settle", func() bool { return !checking(rd) })

			errs0 := testutil.ToFloat64(viewErrorsTotal)
			late := registry.ServiceKey{Namespace: "demo", Name: "late"}
			gen := time.Now().UnixMicro()
			registerBeacon(t, url, w, "demo", w.writer, gen, "late:0badc0de:"+strconv.FormatInt(gen, 10))
			eventually(t, 5*time.Second, "the announcement", func() bool { return isAnnounced(rd, late) })

			c0, p0, _ := quiet(rd)
			time.Sleep(500 * time.Millisecond)
			c1, p1, _ := quiet(rd)
			polls := int(p1 - p0)
			if d, want := diff(c1, c0), map[string]int{"DiscoverInstancesRevision": polls, tc.perPoll: polls}; !reflect.DeepEqual(d, want) {
				t.Errorf("%d polls waiting for an announced service that does not exist cost %v, want %v (the beacons' revision and a %s per poll)", polls, d, want, tc.perPoll)
			}

			c := rawClient(url)
			if _, err := c.CreateService(ctx, &sd.CreateServiceInput{Name: aws.String(late.Name), NamespaceId: aws.String(rawNamespaceID(ctx, t, c, late.Namespace))}); err != nil {
				t.Fatal(err)
			}
			registerAWSInstance(t, url, late.Namespace, late.Name, "10.9.9.9")
			eventually(t, 2*time.Second, "the announced service, once it exists", func() bool {
				got, _ := rd.Records(late)
				return len(got) == 1
			})
			if d := testutil.ToFloat64(viewErrorsTotal) - errs0; d != 0 {
				t.Errorf("looking for a service not created yet made %v polls fail, want none", d)
			}
		})
	}
}

// TestListingPays: the choice between listing a namespace for the IDs of
// the services new to the view and reading them by name (a GetService
// each at the next sweep) takes the one with fewer calls, counting the
// services read by name before that still wait for their GetService.
func TestListingPays(t *testing.T) {
	for _, tc := range []struct {
		fresh, withoutID, known int
		want                    bool
	}{
		{1, 0, 0, true},    // one page either way; the listing saves a GetService
		{1, 0, 98, true},   // 99 services: one page
		{1, 0, 99, true},   // 100 services: still one page
		{1, 0, 100, false}, // 101: two pages for one GetService
		{2, 0, 100, true},  // two pages, two GetService
		{1, 1, 100, true},  // two pages, the GetService of this one and of one read before
		{1, 0, 5000, false},
		{1, 49, 5000, false}, // 51 pages for 50 GetService
		{1, 50, 5000, true},  // 51 pages for 51
		{50, 0, 4950, true},  // a burst: 50 pages for 50 services
		{49, 0, 4950, false}, // 50 pages for 49
		{1000, 0, 0, true},   // a burst into a new namespace
	} {
		if got := listingPays(tc.fresh, tc.withoutID, tc.known); got != tc.want {
			t.Errorf("listingPays(fresh=%d, withoutID=%d, known=%d) = %v, want %v", tc.fresh, tc.withoutID, tc.known, got, tc.want)
		}
	}
}

// TestSweepLearnsTheIDOfAServiceReadByName: a service a reader read by name
// (new, in a namespace of more than a page) gets its Cloud Map ID from the
// next sweep's listing, with one GetService and no read, and later changes
// of it cost the reader what any change costs.
func TestSweepLearnsTheIDOfAServiceReadByName(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	w := newTestRegistry(t, url, "set1", "cls1", func(o *Options) { o.MotoWorkarounds = true })
	rd := newTestRegistry(t, url, "set1", "cls2", func(o *Options) {
		o.PollInterval = 100 * time.Millisecond
		o.ForeignSweepPeriod = 2 * time.Second
		o.ForeignPollInterval = -1
		o.FullResyncPeriod = time.Hour
		o.RepairDelay = time.Hour // only a read showing the digest ends a check
	})
	for i := range servicesPerPage {
		rec := sampleRecord("set1", "cls1", "big", fmt.Sprintf("svc-%03d", i), "10.0.0.1")
		if err := w.Publish(ctx, &rec); err != nil {
			t.Fatal(err)
		}
	}
	run(t, rd)
	eventually(t, 20*time.Second, "the reader to read the namespace", func() bool {
		n, _ := rd.view.countIn("big")
		return n == servicesPerPage && !checking(rd)
	})

	// measure runs op right after a sweep, waits until the reader has read
	// what op changed and settled, and returns the reader's calls beyond
	// its polls; again if a sweep came in between (it would be counted).
	measure := func(what string, op func(i int) registry.Record) (map[string]int, registry.Record) {
		t.Helper()
		for i := range 5 {
			_, _, s := quiet(rd)
			waitSweep(t, rd, s)
			c0, p0, s0 := quiet(rd)
			rec := op(i)
			waitRecords(t, rd, rec.Key(), []registry.Record{rec})
			eventually(t, 10*time.Second, "the reader to settle", func() bool { return !checking(rd) })
			if c1, p1, s1 := quiet(rd); s1 == s0 {
				return beyondPolls(c1, c0, p1-p0), rec
			}
		}
		t.Fatalf("%s: a sweep came in each of 5 tries", what)
		return nil, registry.Record{}
	}
	viewID := func(key registry.ServiceKey) string {
		rd.view.mu.RLock()
		defer rd.view.mu.RUnlock()
		return rd.view.services[key].id
	}

	d, rec := measure("the export", func(i int) registry.Record {
		rec := sampleRecord("set1", "cls1", "big", fmt.Sprintf("new-%d", i), "10.0.0.9")
		if err := w.Publish(ctx, &rec); err != nil {
			t.Fatal(err)
		}
		return rec
	})
	if !reflect.DeepEqual(d, map[string]int{"DiscoverInstances": 2}) {
		t.Errorf("the export of %s cost the reader %v beyond its polls, want 2 DiscoverInstances (the beacons, the service by name)", rec.Key(), d)
	}
	if id := viewID(rec.Key()); id != "" {
		t.Fatalf("%s was read with ID %q before any sweep: want it read by name (ID unknown)", rec.Key(), id)
	}
	c0, p0, s0 := quiet(rd)
	c1, p1, s1 := waitSweep(t, rd, s0)
	want := map[string]int{"ListNamespaces": 1, "ListServices": 1, "GetService": 1}
	if d := beyondPolls(c1, c0, p1-p0); s1 != s0+1 || !reflect.DeepEqual(d, want) {
		t.Errorf("%d sweeps after a service read by name cost %v beyond the polls, want 1 costing %v (the listing, the new service's namespace, no read)", s1-s0, d, want)
	}
	if got, want := viewID(rec.Key()), existingServiceID(t, url, "big", rec.Name); got != want {
		t.Errorf("after the sweep the reader knows %s as %q, want its ID %q", rec.Key(), got, want)
	}

	// An endpoint change of it: the beacons and the service, as for any.
	d, _ = measure("the endpoint change", func(i int) registry.Record {
		rec.Endpoints = append(rec.Endpoints, rec.Endpoints[0])
		rec.Endpoints[len(rec.Endpoints)-1].Address = fmt.Sprintf("10.0.1.%d", i+1)
		if err := w.Publish(ctx, &rec); err != nil {
			t.Fatal(err)
		}
		return rec
	})
	if !reflect.DeepEqual(d, map[string]int{"DiscoverInstances": 2}) {
		t.Errorf("an endpoint change of a service whose ID the sweep taught cost the reader %v beyond its polls, want 2 DiscoverInstances", d)
	}
}

// TestOwnServiceNotFoundYet: DiscoverInstances is eventually consistent,
// and a service this cluster has just created may answer ServiceNotFound
// for a while (the fault proxy answers it here, as a lagging Cloud Map
// would). Within RepairDelay of the write, the reader reads it again at the
// next poll rather than dropping it, and shows the record once the service
// answers, with no failed poll. A service gone for good (someone deleted
// it) drops this cluster's published state with it: the next Publish, which
// the view's change brings, writes the record again.
func TestOwnServiceNotFoundYet(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	proxy := newFaultProxy(t, url)
	ctx := context.Background()
	const sweepEvery = 300 * time.Millisecond
	w := newTestRegistry(t, proxy.URL, "set1", "cls1", func(o *Options) {
		o.MotoWorkarounds = true
		o.RepairDelay = time.Second
		o.FullResyncPeriod = time.Hour
		o.ForeignSweepPeriod = sweepEvery // finds the deleted service
	})
	var mu sync.Mutex
	told := map[registry.ServiceKey]bool{}
	poll := func() {
		t.Helper()
		if err := w.poll(ctx, func(k registry.ServiceKey) { mu.Lock(); told[k] = true; mu.Unlock() }); err != nil {
			t.Fatal(err)
		}
	}
	poll() // the first sweep, of an empty account

	lagging := refuseDiscovery(proxy, "ServiceNotFound", `"ServiceName":"web"`)
	rec := sampleRecord("set1", "cls1", "demo", "web", "10.0.0.1")
	key := rec.Key()
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	c0 := w.calls.snapshot()
	poll() // fails the test if the poll fails
	poll()
	if d := diff(w.calls.snapshot(), c0); d["DiscoverInstances"] < 2 {
		t.Fatalf("two polls after Publish read the new service %d times, want at least 2 (the second a retry): %v", d["DiscoverInstances"], d)
	}
	lagging.on.Store(false)
	poll()
	if got, err := w.Records(key); err != nil || !equalRecords(got, []registry.Record{rec}) {
		t.Fatalf("once the new service answers, the view shows %+v (%v), want this cluster's record", got, err)
	}

	// Deleted by someone else, for good: the sweep finds it gone.
	c := rawClient(url)
	id := w.serviceID(key)
	deregisterAllRaw(ctx, t, url, id)
	if _, err := c.DeleteService(ctx, &sd.DeleteServiceInput{Id: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second + sweepEvery)
	mu.Lock()
	clear(told)
	mu.Unlock()
	poll()
	if got, _ := w.Records(key); len(got) != 0 {
		t.Fatalf("the view still shows %+v after the service was deleted", got)
	}
	mu.Lock()
	wasTold := told[key]
	mu.Unlock()
	if !wasTold {
		t.Error("the deleted service was not told as changed (the export controller would not publish again)")
	}
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	out, err := c.DiscoverInstances(ctx, &sd.DiscoverInstancesInput{NamespaceName: aws.String("demo"), ServiceName: aws.String("web"),
		QueryParameters: map[string]string{attrClusterID: "cls1"}})
	if err != nil {
		t.Fatalf("after the deleted service's record was published again: %v", err)
	}
	if len(out.Instances) == 0 {
		t.Error("Publish after the service was deleted wrote nothing: the record stays lost")
	}
}

// TestNewFirst: a check of many services reads those new to the view
// first, then this cluster's own writes, then the known ones, each group in
// its listed order (the new exports of a burst that overflowed the change
// list are imported before the revision checks of a whole namespace).
func TestNewFirst(t *testing.T) {
	r := newTestRegistry(t, "http://127.0.0.1:9", "set1", "cls1")
	key := func(n string) registry.ServiceKey { return registry.ServiceKey{Namespace: "demo", Name: n} }
	for _, n := range []string{"known-1", "known-2", "mine"} {
		r.view.services[key(n)] = &svcState{loaded: true}
	}
	var order []target
	for _, n := range []string{"known-1", "new-1", "mine", "known-2", "new-2"} {
		order = append(order, target{key: key(n)})
	}
	got := r.newFirst(order, func(k registry.ServiceKey) bool { return k.Name == "mine" })
	var names []string
	for _, tg := range got {
		names = append(names, tg.key.Name)
	}
	if want := []string{"new-1", "new-2", "mine", "known-1", "known-2"}; !reflect.DeepEqual(names, want) {
		t.Errorf("newFirst = %v, want %v", names, want)
	}
	if order[0].key.Name != "known-1" {
		t.Error("newFirst changed its argument")
	}
}

// TestSweepListsNamespacesForManyNewServices: a sweep that finds more
// services of unknown namespace than listing each namespace costs lists the
// namespaces (one page each here) instead of making a GetService per
// service: a reader's first sweep, and its sweeps after a burst it read
// partly by name (3,139 GetService in a burst of 5,000 before).
func TestSweepListsNamespacesForManyNewServices(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	w := newTestRegistry(t, url, "set1", "cls1", func(o *Options) { o.MotoWorkarounds = true })
	var recs []registry.Record
	for _, ns := range []string{"a", "b"} {
		for i := range 10 {
			rec := sampleRecord("set1", "cls1", ns, fmt.Sprintf("svc-%02d", i), "10.0.0.1")
			if err := w.Publish(ctx, &rec); err != nil {
				t.Fatal(err)
			}
			recs = append(recs, rec)
		}
	}
	rd := newTestRegistry(t, url, "set1", "cls2", func(o *Options) {
		o.ForeignSweepPeriod = -1
		o.FullResyncPeriod = time.Hour
	})
	c0 := rd.calls.snapshot()
	if err := rd.poll(ctx, func(registry.ServiceKey) {}); err != nil {
		t.Fatal(err)
	}
	d := diff(rd.calls.snapshot(), c0)
	// The account's listing, then a and b. The services of the system
	// namespace (the change beacons), which the sweep does not read, are
	// looked up one by one: one here.
	if d["ListServices"] != 3 || d["GetService"] > 1 {
		t.Errorf("the first sweep of 20 services in 2 namespaces cost %v, want 3 ListServices (the account, a, b) and at most 1 GetService (the beacons' service)", d)
	}
	for _, rec := range recs {
		if got, err := rd.Records(rec.Key()); err != nil || !equalRecords(got, []registry.Record{rec}) {
			t.Errorf("after the first sweep the reader shows %+v (%v) for %s, want its record", got, err, rec.Key())
		}
	}
}

// TestDropGoneForgetsOnlyOldWrites: a listing or read that no longer shows
// a service forgets this cluster's published record there only when it
// started RepairDelay or more after the record was written (a listing that
// started earlier may not show a service just created); either way the
// key is told as changed, so that the export controller reconciles it.
func TestDropGoneForgetsOnlyOldWrites(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	const repairDelay = time.Minute
	w := newTestRegistry(t, url, "set1", "cls1", func(o *Options) {
		o.MotoWorkarounds = true
		o.RepairDelay = repairDelay
	})
	rec := sampleRecord("set1", "cls1", "demo", "web", "10.0.0.1")
	key := rec.Key()
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	at := w.published[key].at
	w.mu.Unlock()
	for _, tc := range []struct {
		since  time.Time
		forget bool
	}{
		{at.Add(-time.Second), false},
		{at.Add(repairDelay - time.Second), false},
		{at.Add(repairDelay), true},
	} {
		var told []registry.ServiceKey
		w.dropGone(func(k registry.ServiceKey) { told = append(told, k) }, tc.since, func(k registry.ServiceKey) bool { return k == key })
		w.mu.Lock()
		_, kept := w.published[key]
		w.mu.Unlock()
		if kept == tc.forget {
			t.Errorf("a drop by a check that started %v after the write kept the published record: %v, want %v", tc.since.Sub(at), kept, !tc.forget)
		}
		if tc.forget && !reflect.DeepEqual(told, []registry.ServiceKey{key}) {
			t.Errorf("a drop that forgot the published record told %v, want %v", told, key)
		}
	}
}

// TestNotVisibleYetIsNoFailedPoll: DiscoverInstances is eventually
// consistent, so a namespace created just now may answer NamespaceNotFound
// for a while, and a new service ServiceNotFound. Whether this cluster
// wrote it, or another cluster whose beacon announced it (its first write
// of the namespace makes the reader check the namespace, a later one names
// the service), the reader looks for it again at its next polls with no
// failed poll (no error logged), and shows the record once Cloud Map
// answers.
func TestNotVisibleYetIsNoFailedPoll(t *testing.T) {
	for _, tc := range []struct {
		name string
		code string
		own  bool // this cluster wrote it, else another cluster
		// the namespace held another service of that cluster's before:
		// its beacon names the new service
		known bool
	}{
		{name: "own/new-namespace", code: "NamespaceNotFound", own: true},
		{name: "own/new-service", code: "ServiceNotFound", own: true},
		{name: "other/new-namespace", code: "NamespaceNotFound"},
		{name: "other/new-service", code: "ServiceNotFound"},
		{name: "other/announced-new-service", code: "ServiceNotFound", known: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := cloudmaptest.StartMoto(t)
			proxy := newFaultProxy(t, url)
			ctx := context.Background()
			const every = 100 * time.Millisecond
			opts := func(o *Options) {
				o.MotoWorkarounds = true
				o.PollInterval = every // polls are made by the test, this far apart
				o.RepairDelay = 3 * time.Second
				o.FullResyncPeriod = time.Hour
				o.ForeignSweepPeriod = -1
				o.ForeignPollInterval = -1
			}
			rd := newTestRegistry(t, proxy.URL, "set1", "cls2", opts)
			w := rd
			if !tc.own {
				w = newTestRegistry(t, url, "set1", "cls1", opts)
			}
			poll := func() {
				t.Helper()
				time.Sleep(every)
				if err := rd.poll(ctx, func(registry.ServiceKey) {}); err != nil {
					t.Fatalf("a poll failed: %v", err)
				}
			}
			if tc.known {
				other := sampleRecord("set1", w.opts.ClusterID, "fresh", "other", "10.0.0.9")
				if err := w.Publish(ctx, &other); err != nil {
					t.Fatal(err)
				}
			}
			poll() // the first sweep
			poll()

			lagging := refuseDiscovery(proxy, tc.code, `"NamespaceName":"fresh"`, `"ServiceName":"web"`)
			rec := sampleRecord("set1", w.opts.ClusterID, "fresh", "web", "10.0.0.1")
			if err := w.Publish(ctx, &rec); err != nil {
				t.Fatal(err)
			}
			for range 3 {
				poll() // fails the test if the poll fails
			}
			if lagging.seen.Load() == 0 {
				t.Fatal("three polls after the write never read it: the test shows nothing")
			}
			lagging.on.Store(false)
			// At the next poll, or at the namespace's next check (hot: 1, 2,
			// 4, … polls apart, for RepairDelay).
			shown := func() bool {
				got, err := rd.Records(rec.Key())
				return err == nil && equalRecords(got, []registry.Record{rec})
			}
			for start := time.Now(); !shown() && time.Since(start) < 5*time.Second; {
				poll()
			}
			if got, err := rd.Records(rec.Key()); err != nil || !equalRecords(got, []registry.Record{rec}) {
				t.Fatalf("once Cloud Map answers, the view shows %+v (%v), want the record", got, err)
			}
		})
	}
}

// TestOwnServiceNeverVisible: a service this cluster published to that
// answers ServiceNotFound for longer than RepairDelay was deleted by
// someone before this reader ever saw it. The view never held it, yet the
// export controller is told, and this cluster's published state is
// dropped, so that its next Publish writes the record again.
func TestOwnServiceNeverVisible(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	proxy := newFaultProxy(t, url)
	ctx := context.Background()
	const repair = 2 * time.Second
	w := newTestRegistry(t, proxy.URL, "set1", "cls1", func(o *Options) {
		o.MotoWorkarounds = true
		o.PollInterval = 100 * time.Millisecond
		o.RepairDelay = repair
		o.FullResyncPeriod = time.Hour
		o.ForeignSweepPeriod = -1
		o.ForeignPollInterval = -1
	})
	var mu sync.Mutex
	told := map[registry.ServiceKey]int{}
	poll := func() {
		t.Helper()
		time.Sleep(100 * time.Millisecond)
		if err := w.poll(ctx, func(k registry.ServiceKey) { mu.Lock(); told[k]++; mu.Unlock() }); err != nil {
			t.Fatal(err)
		}
	}
	poll()                                                           // the first sweep, of an empty account
	refuseDiscovery(proxy, "ServiceNotFound", `"ServiceName":"web"`) // for good
	rec := sampleRecord("set1", "cls1", "demo", "web", "10.0.0.1")
	key := rec.Key()
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	published := func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.published[key] != nil
	}
	w.mu.Lock()
	at := w.published[key].at
	w.mu.Unlock()
	for time.Since(at) < repair-500*time.Millisecond { // each poll starts before RepairDelay has passed
		poll()
		if !published() {
			t.Fatal("the published state was dropped within RepairDelay of the write: Cloud Map may just not show the new service yet")
		}
	}
	mu.Lock()
	clear(told)
	mu.Unlock()
	for time.Since(after) < repair+500*time.Millisecond {
		poll()
	}
	if published() {
		t.Error("a service of this cluster's that answered ServiceNotFound past RepairDelay kept its published state: the next Publish would trust it")
	}
	mu.Lock()
	n := told[key]
	mu.Unlock()
	if n == 0 {
		t.Error("a service of this cluster's that the view never showed and that is gone was not told as changed: the export controller would not publish it again")
	}
}
