package cloudmap

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
)

func TestInstanceDigest(t *testing.T) {
	a := map[string]instance{
		"i-1": {ID: "i-1", Attrs: map[string]string{"A": "1", "B": "2"}},
		"i-2": {ID: "i-2", Attrs: map[string]string{"A": "1"}},
	}
	same := map[string]instance{
		"i-2": {ID: "i-2", Attrs: map[string]string{"A": "1"}},
		"i-1": {ID: "i-1", Attrs: map[string]string{"B": "2", "A": "1"}},
	}
	if instanceDigest(a) != instanceDigest(same) {
		t.Error("the digest depends on map order")
	}
	for name, other := range map[string]map[string]instance{
		"attribute value": {"i-1": {ID: "i-1", Attrs: map[string]string{"A": "1", "B": "3"}}, "i-2": a["i-2"]},
		"attribute moved": {"i-1": {ID: "i-1", Attrs: map[string]string{"A": "1"}}, "i-2": {ID: "i-2", Attrs: map[string]string{"A": "1", "B": "2"}}},
		"instance gone":   {"i-1": a["i-1"]},
		"none":            nil,
	} {
		if instanceDigest(other) == instanceDigest(a) {
			t.Errorf("%s: same digest", name)
		}
	}
	if d := instanceDigest(nil); len(d) != 8 || strings.ContainsAny(d, ":,") {
		t.Errorf("digest %q", d)
	}
}

// TestChangeCostIndependentOfNamespaceSize: one endpoint change costs a
// reader the beacon read and one read of the changed service, the same in
// a namespace of 120 services as in one of 1, and nothing more at the polls
// after it. So do an export and a withdrawal, with at most one listing
// page where it saves more than it costs: never a check of the namespace's
// services.
func TestChangeCostIndependentOfNamespaceSize(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	const big = 120 // more than servicesPerPage
	w := newTestRegistry(t, url, "set1", "cls1", func(o *Options) { o.MotoWorkarounds = true })
	rd := newTestRegistry(t, url, "set1", "cls2", func(o *Options) {
		o.PollInterval = 100 * time.Millisecond
		o.ForeignSweepPeriod = -1
		o.FullResyncPeriod = time.Hour
		o.RepairDelay = time.Hour // only a read showing the digest ends a check
	})
	var recs []registry.Record
	for i := 0; i < big; i++ {
		recs = append(recs, sampleRecord("set1", "cls1", "big", fmt.Sprintf("svc-%03d", i), "10.0.0.1"))
	}
	recs = append(recs, sampleRecord("set1", "cls1", "small", "only", "10.0.0.1"))
	for i := range recs {
		if err := w.Publish(ctx, &recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	run(t, rd)
	for i := range recs {
		waitRecords(t, rd, recs[i].Key(), recs[i:i+1])
	}

	// settle waits until rd has no announced service left and returns its
	// calls (readerCalls) and polls then.
	settle := func(what string) (map[string]int, int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			rd.pollMu.Lock()
			c, p, busy := readerCalls(rd), rd.ps.polls, rd.ps.checking()
			rd.pollMu.Unlock()
			if !busy {
				return c, p
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the reader still checks %v %v", what, rd.ps.announced, rd.ps.hot)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// change publishes rec with one more endpoint, waits until rd shows it
	// and settles, then for 3 more polls, and returns the calls beyond one
	// DiscoverInstancesRevision per poll.
	change := func(rec *registry.Record) map[string]int {
		t.Helper()
		c0, p0 := settle("before " + rec.Name)
		rec.Endpoints = append(rec.Endpoints, rec.Endpoints[0])
		rec.Endpoints[len(rec.Endpoints)-1].Address = fmt.Sprintf("10.0.1.%d", len(rec.Endpoints))
		if err := w.Publish(ctx, rec); err != nil {
			t.Fatal(err)
		}
		waitRecords(t, rd, rec.Key(), []registry.Record{*rec})
		_, p1 := settle("after " + rec.Name)
		for {
			rd.pollMu.Lock()
			c, p := readerCalls(rd), rd.ps.polls
			rd.pollMu.Unlock()
			if p >= p1+3 {
				return beyondPolls(c, c0, p-p0)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	want := map[string]int{"DiscoverInstances": 2} // the beacons, the service
	for _, i := range []int{big, 7, 0} {
		if got := change(&recs[i]); !reflect.DeepEqual(got, want) {
			t.Errorf("an endpoint added to %s cost the reader %v beyond its idle polls, want %v", recs[i].Key(), got, want)
		}
	}

	// Exports and withdrawals. A new service in the large namespace is read
	// by name: listing it would cost 2 pages on Cloud Map. One in the small
	// namespace costs its listing, one page, which saves the GetService
	// the next sweep would make for its ID (listingPays). A withdrawal
	// deletes the Cloud Map service: the read that finds it gone drops it,
	// with no listing and no failed poll, whether the reader found the
	// service by name (big/new) or in a listing (svc-000, small/new).
	// Then big/new is exported again, a new Cloud Map service of that name.
	errs0 := testutil.ToFloat64(viewErrorsTotal)
	bigNew := sampleRecord("set1", "cls1", "big", "new", "10.0.0.9")
	smallNew := sampleRecord("set1", "cls1", "small", "new", "10.0.0.9")
	byName := map[string]int{"DiscoverInstances": 2} // the beacons, the service
	listed := map[string]int{"DiscoverInstances": 2, "ListServices": 1}
	for _, step := range []struct {
		rec      registry.Record
		withdraw bool
		want     map[string]int
	}{
		{bigNew, false, byName},
		{smallNew, false, listed},
		{bigNew, true, byName},
		{recs[0], true, byName},
		{smallNew, true, byName},
		{bigNew, false, byName},
	} {
		what := map[bool]string{true: "the withdrawal", false: "the export"}[step.withdraw] + " of " + step.rec.Key().String()
		c0, p0 := settle("before " + what)
		wantRecs := []registry.Record{step.rec}
		if step.withdraw {
			wantRecs = nil
			if err := w.Withdraw(ctx, step.rec.Key()); err != nil {
				t.Fatal(err)
			}
		} else if err := w.Publish(ctx, &step.rec); err != nil {
			t.Fatal(err)
		}
		waitRecords(t, rd, step.rec.Key(), wantRecs)
		c1, p1 := settle("after " + what)
		if d := beyondPolls(c1, c0, p1-p0); !reflect.DeepEqual(d, step.want) {
			t.Errorf("%s cost the reader %v beyond its idle polls, want %v", what, d, step.want)
		}
	}
	if d := testutil.ToFloat64(viewErrorsTotal) - errs0; d != 0 {
		t.Errorf("withdrawals made %v polls fail, want none: a service gone is an outcome", d)
	}
}

// TestManyChangesBetweenTwoPolls: when more services change between two
// polls of a reader than CHANGE_SERVICES holds (a burst), the beacon's
// continuations name them all, and the reader reads those services only:
// no check of every service of the namespace, and nothing left to check
// afterwards.
func TestManyChangesBetweenTwoPolls(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	const size, changed = 60, 50 // 50 entries of 34 bytes: two parts
	w := newTestRegistry(t, url, "set1", "cls1", func(o *Options) { o.MotoWorkarounds = true })
	rd := newTestRegistry(t, url, "set1", "cls2", func(o *Options) {
		o.PollInterval = 100 * time.Millisecond
		o.ForeignSweepPeriod = -1
		o.FullResyncPeriod = time.Hour
		o.RepairDelay = time.Hour // a check of the namespace would stay hot
	})
	recs := publishServices(t, w, "big", size)
	run(t, rd)
	for i := range recs {
		waitRecords(t, rd, recs[i].Key(), recs[i:i+1])
	}
	eventually(t, 10*time.Second, "the reader to have nothing left to check (a check of the namespace stays hot for RepairDelay)", func() bool {
		rd.pollMu.Lock()
		defer rd.pollMu.Unlock()
		return !rd.ps.checking()
	})

	// The reader's polls wait while the writer changes 50 services, each
	// Publish re-registering its beacon.
	rd.pollMu.Lock()
	c0, p0 := readerCalls(rd), rd.ps.polls
	for i := range changed {
		recs[i].Endpoints = append(recs[i].Endpoints, recs[i].Endpoints[0])
		recs[i].Endpoints[1].Address = "10.0.1.1"
		if err := w.Publish(ctx, &recs[i]); err != nil {
			rd.pollMu.Unlock()
			t.Fatal(err)
		}
	}
	beacon := beaconOf(t, w, "cls1", "big") // w: not counted as the reader's
	rd.pollMu.Unlock()
	if beacon[changePartKey(1)] == "" || beacon[attrChangeSinceAll] == "" {
		t.Fatalf("the beacon after %d changes has no continuation: %v", changed, beacon)
	}
	for i := range changed {
		waitRecords(t, rd, recs[i].Key(), recs[i:i+1])
	}
	eventually(t, 10*time.Second, "the reader to have nothing left to check (a check of the namespace stays hot for RepairDelay)", func() bool {
		rd.pollMu.Lock()
		defer rd.pollMu.Unlock()
		return !rd.ps.checking()
	})
	rd.pollMu.Lock()
	c1, p1 := readerCalls(rd), rd.ps.polls
	rd.pollMu.Unlock()
	// The beacons once, and each changed service once.
	want := map[string]int{"DiscoverInstances": 1 + changed}
	if d := beyondPolls(c1, c0, p1-p0); !reflect.DeepEqual(d, want) {
		t.Errorf("%d changes between two polls, in a namespace of %d, cost the reader %v beyond its idle polls, want %v", changed, size, d, want)
	}
}

// TestAnnouncedChangeNotVisibleYet: a beacon may become visible before the
// write it announces. The reader then checks the announced service at
// every poll (one DiscoverInstancesRevision) until the write shows, and
// stops after RepairDelay if it never does.
func TestAnnouncedChangeNotVisibleYet(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	w, rd, rec := exportToReader(t, url, func(o *Options) {
		o.PollInterval = 100 * time.Millisecond
		o.ForeignSweepPeriod = -1
		o.ForeignPollInterval = -1
		o.FullResyncPeriod = time.Hour
		o.RepairDelay = 3 * time.Second
	})

	// cls1's beacon, as its writer would register it before the write
	// lands: it announces a digest web does not show.
	gen := time.Now().UnixMicro()
	registerBeacon(t, url, w, "demo", w.writer, gen, "web:0badc0de:"+strconv.FormatInt(gen, 10))
	announced := func() bool { return isAnnounced(rd, rec.Key()) }
	eventually(t, 5*time.Second, "the announcement", announced)

	// Meanwhile each poll checks web: 2 revisions a poll, no reads.
	c0, p0, _ := quiet(rd)
	time.Sleep(500 * time.Millisecond)
	c1, p1, _ := quiet(rd)
	if d, polls := diff(c1, c0), int(p1-p0); !reflect.DeepEqual(d, map[string]int{"DiscoverInstancesRevision": 2 * polls}) {
		t.Errorf("%d polls waiting for an announced write cost %v, want %d DiscoverInstancesRevision", polls, d, 2*polls)
	}

	// A write that bumps no beacon (here the AWS controller's) lands in
	// web: the check sees it at the next poll, with no sweep.
	registerAWSInstance(t, url, "demo", "web", "10.9.9.9")
	landed := time.Now()
	eventually(t, 2*time.Second, "the write announced earlier", func() bool {
		got, _ := rd.Records(rec.Key())
		return len(got) == 2
	})
	t.Logf("seen %v after it landed", time.Since(landed).Round(time.Millisecond))

	// The announced digest never shows: the checks stop after RepairDelay.
	eventually(t, 5*time.Second, "the end of the check", func() bool { return !announced() })
	c2, p2, _ := quiet(rd)
	time.Sleep(300 * time.Millisecond)
	c3, p3, _ := quiet(rd)
	if d, polls := diff(c3, c2), int(p3-p2); !reflect.DeepEqual(d, map[string]int{"DiscoverInstancesRevision": polls}) {
		t.Errorf("%d idle polls after RepairDelay cost %v", polls, d)
	}
}

// TestAnnouncementEndsWithARead: an announced change whose digest never
// shows ends with one more read of the service, which finds a write that
// the revision checks could not (moto's revision, a sum of per-instance
// counters, does not move when one instance replaces another).
func TestAnnouncementEndsWithARead(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	w := newTestRegistry(t, url, "set1", "cls1")
	rd := newTestRegistry(t, url, "set1", "cls2", func(o *Options) {
		o.PollInterval = 100 * time.Millisecond
		o.ForeignSweepPeriod = -1
		o.ForeignPollInterval = -1
		o.FullResyncPeriod = time.Hour
		o.RepairDelay = time.Second
	})
	rec := sampleRecord("set1", "cls1", "demo", "web", "10.0.0.1")
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	// Before the reader starts: with no sweep, only its first read sees it.
	registerAWSInstance(t, url, "demo", "web", "10.9.9.1")
	run(t, rd)
	awsAddress := func() string {
		got, _ := rd.Records(rec.Key())
		for _, r := range got {
			if r.ClusterID == "aws-cls" && len(r.Endpoints) == 1 {
				return r.Endpoints[0].Address
			}
		}
		return ""
	}
	eventually(t, 5*time.Second, "the first AWS endpoint", func() bool { return awsAddress() == "10.9.9.1" })

	gen := time.Now().UnixMicro()
	registerBeacon(t, url, w, "demo", w.writer, gen, "web:0badc0de:"+strconv.FormatInt(gen, 10))
	announced := func() bool { return isAnnounced(rd, rec.Key()) }
	eventually(t, 5*time.Second, "the announcement", announced)
	// Read once already: replace the AWS endpoint so that the revision
	// stays the same.
	id := existingServiceID(t, url, "demo", "web")
	if _, err := rawClient(url).DeregisterInstance(ctx, &sd.DeregisterInstanceInput{ServiceId: aws.String(id), InstanceId: aws.String("tcp-10_9_9_1-80")}); err != nil {
		t.Fatal(err)
	}
	registerExisting(t, url, "demo", "web", awsInstance("10.9.9.2"))
	eventually(t, 5*time.Second, "the end of the announcement", func() bool { return !announced() })
	eventually(t, time.Second, "the read at the end of the announcement", func() bool { return awsAddress() == "10.9.9.2" })
}

// TestBeaconOfAnotherWriter: generations are compared only between writes of
// one process. A beacon written by another process of the same cluster (a
// replica, a restart) whose list would leave out what the reader missed
// sends the reader to check the whole namespace.
func TestBeaconOfAnotherWriter(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	w, rd, _ := exportToReader(t, url, func(o *Options) {
		o.PollInterval = 100 * time.Millisecond
		o.ForeignSweepPeriod = -1
		o.FullResyncPeriod = time.Hour
		o.RepairDelay = time.Hour
	})
	// By its own generations, the list says nothing changed after cls1's
	// last write.
	registerBeacon(t, url, w, "demo", "another-process", lastGeneration(w, "demo")+1, "")
	eventually(t, 5*time.Second, "a check of the namespace", func() bool {
		rd.pollMu.Lock()
		defer rd.pollMu.Unlock()
		return rd.ps.hot["demo"] != nil
	})
}

// lastGeneration is the generation of w's last beacon write in namespace.
func lastGeneration(w *Registry, namespace string) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.beacons[namespace].gen
}

// registerBeacon registers w's change beacon of namespace by hand, as
// process writer would at generation gen with CHANGE_SERVICES list, its
// CHANGE_SINCE being w's last generation there: for a writer that is w
// itself, a write that lands before the instances it announces.
func registerBeacon(t *testing.T, url string, w *Registry, namespace, writer string, gen int64, list string) {
	t.Helper()
	registerExisting(t, url, w.opts.SystemNamespace, changesService, map[string]map[string]string{
		beaconID(w.opts.ClusterSetID, w.opts.ClusterID, namespace): {
			attrClusterSetID: w.opts.ClusterSetID, attrClusterID: w.opts.ClusterID, attrController: controllerName,
			attrRecordKind: kindChange, attrChangeNamespace: namespace,
			attrChangeGeneration: strconv.FormatInt(gen, 10),
			attrChangeSince:      strconv.FormatInt(lastGeneration(w, namespace), 10),
			attrChangeServices:   list,
			attrChangeWriter:     writer,
		},
	})
}

// isAnnounced reports whether r waits for an announced change of key.
func isAnnounced(r *Registry, key registry.ServiceKey) bool {
	r.pollMu.Lock()
	defer r.pollMu.Unlock()
	return r.ps.announced[key] != nil
}

// checking reports whether r still checks anything a beacon announced
// (announced services, hot or queued namespaces, queued checks).
func checking(r *Registry) bool {
	r.pollMu.Lock()
	defer r.pollMu.Unlock()
	return r.ps.checking()
}

// checking is checking(r) for a caller holding pollMu.
func (ps *pollState) checking() bool {
	return len(ps.announced)+len(ps.hot)+len(ps.pendingNS)+len(ps.listNS)+ps.scan.len() > 0
}

// beyondPolls returns the calls of c since c0 beyond one
// DiscoverInstancesRevision (the beacons) per poll of the polls between.
func beyondPolls(c, c0 map[string]int, polls int64) map[string]int {
	d := diff(c, c0)
	d["DiscoverInstancesRevision"] -= int(polls)
	if d["DiscoverInstancesRevision"] == 0 {
		delete(d, "DiscoverInstancesRevision")
	}
	return d
}

// exportToReader publishes demo/web as cluster cls1 of set1 (w) and returns
// it with a running reader cls2 (rd, its options changed by mutate) that
// shows it.
func exportToReader(t *testing.T, url string, mutate func(*Options)) (w, rd *Registry, rec registry.Record) {
	t.Helper()
	w = newTestRegistry(t, url, "set1", "cls1")
	rd = newTestRegistry(t, url, "set1", "cls2", mutate)
	rec = sampleRecord("set1", "cls1", "demo", "web", "10.0.0.1")
	if err := w.Publish(context.Background(), &rec); err != nil {
		t.Fatal(err)
	}
	run(t, rd)
	waitRecords(t, rd, rec.Key(), []registry.Record{rec})
	return w, rd, rec
}

// TestRestartAnnouncesWhatThePreviousProcessLeftUnannounced: a writer that
// died between registering an instance and the beacon write announcing it
// left a write that no reader checks (no sweep here, the full resync an
// hour away). Its next process, once its first poll has read everything,
// re-registers its beacon with CHANGE_SINCE=restart: the reader checks the
// namespace and sees the write, and checks it once more when RepairDelay
// has passed instead of after 1, 2, 4, … polls. A first start announces
// nothing.
func TestRestartAnnouncesWhatThePreviousProcessLeftUnannounced(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	const repair = 2 * time.Second
	_, rd, rec := exportToReader(t, url, func(o *Options) {
		o.PollInterval = 100 * time.Millisecond
		o.ForeignSweepPeriod = -1
		o.ForeignPollInterval = -1
		o.FullResyncPeriod = time.Hour
		o.RepairDelay = repair
	})
	// A first start: nothing of this cluster's in the registry yet.
	fresh := newTestRegistry(t, url, "set1", "cls3")
	run(t, fresh)
	eventually(t, 5*time.Second, "cls3's first sync", fresh.HasSynced)
	if err := fresh.Heartbeat(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := beaconOf(t, rd, "cls3", "demo"); got != nil {
		t.Errorf("a first start wrote a beacon: %v", got)
	}

	// cls1's last write before it died: one more endpoint, never announced.
	changed := rec
	changed.Endpoints = append(slices.Clone(rec.Endpoints), rec.Endpoints[0])
	changed.Endpoints[1].Address = "10.0.0.2"
	insts, err := encodeRecord(&changed, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	unannounced := map[string]map[string]string{}
	for id, in := range insts {
		if in.Attrs[attrIPv4] == "10.0.0.2" {
			unannounced[id] = in.Attrs
		}
	}
	if len(unannounced) == 0 {
		t.Fatal("no instance for the new endpoint")
	}
	registerExisting(t, url, "demo", "web", unannounced)
	time.Sleep(time.Second) // 10 polls
	if got, _ := rd.Records(rec.Key()); !equalRecords(got, []registry.Record{rec}) {
		t.Fatalf("the reader saw the unannounced write before the restart (%d records): the test cannot tell the fix from the sweep", len(got))
	}

	// cls1's next process starts, as a standby first: its view syncs, and
	// it writes nothing.
	c0, p0, _ := quiet(rd)
	w2 := newTestRegistry(t, url, "set1", "cls1")
	run(t, w2)
	eventually(t, 5*time.Second, "the new process's first sync", w2.HasSynced)
	time.Sleep(300 * time.Millisecond) // 3 polls
	if n := writes(w2); n != 0 {
		t.Fatalf("a standby (no heartbeat renewed) wrote %d times", n)
	}
	// It leads: its first heartbeat announces the restart.
	if err := w2.Heartbeat(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, rd, rec.Key(), []registry.Record{changed})
	if got := beaconOf(t, rd, "cls1", "demo"); got[attrChangeSince] != restartSince || got[attrChangeWriter] != w2.writer {
		t.Errorf("cls1's beacon after the restart: %v, want CHANGE_SINCE=%s by the new process", got, restartSince)
	}

	// The namespace is checked twice: at the beacon, and after RepairDelay.
	eventually(t, 3*repair, "the end of the checks", func() bool { return !checking(rd) })
	c1, p1, _ := quiet(rd)
	d := beyondPolls(c1, c0, p1-p0)
	if d["ListServices"] != 2 {
		t.Errorf("the restart cost the reader %v over %d polls; want 2 checks of the namespace (2 ListServices)", d, p1-p0)
	}
	t.Logf("a writer's restart cost the reader %v over %d polls", d, p1-p0)

	// The new process's next change is announced in a list the reader
	// trusts: no check of the namespace.
	changed.Endpoints = changed.Endpoints[:1]
	if err := w2.Publish(context.Background(), &changed); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, rd, rec.Key(), []registry.Record{changed})
	eventually(t, 3*repair, "the end of the checks", func() bool { return !checking(rd) })
	c2, p2, _ := quiet(rd)
	if d := beyondPolls(c2, c1, p2-p1); d["ListServices"] != 0 {
		t.Errorf("a change after the restart cost the reader %v: it did not trust the list", d)
	}
}

// writes is how many RegisterInstance and DeregisterInstance calls r made.
func writes(r *Registry) int {
	c := r.calls.snapshot()
	return c["RegisterInstance"] + c["DeregisterInstance"]
}

// beaconOf returns the attributes of cluster's change beacon of namespace,
// as r reads them from Cloud Map.
func beaconOf(t *testing.T, r *Registry, cluster, namespace string) map[string]string {
	t.Helper()
	insts, _, err := r.api.discover(context.Background(), r.opts.SystemNamespace, changesService, attrClusterSetID, r.opts.ClusterSetID)
	if err != nil {
		t.Fatal(err)
	}
	insts, _ = dedupe(insts)
	id := beaconID(r.opts.ClusterSetID, cluster, namespace)
	for _, in := range insts {
		if in.ID == id {
			return in.Attrs
		}
	}
	return nil
}

// TestRestartAnnouncesAnUnannouncedWithdrawal is the sibling of the test
// above: the previous process deregistered every instance it had in the
// namespace and died before announcing it. The new process holds nothing
// there, only its beacon says it ever wrote there, and that is enough.
func TestRestartAnnouncesAnUnannouncedWithdrawal(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	_, rd, rec := exportToReader(t, url, func(o *Options) {
		o.PollInterval = 100 * time.Millisecond
		o.ForeignSweepPeriod = -1
		o.ForeignPollInterval = -1
		o.FullResyncPeriod = time.Hour
		o.RepairDelay = time.Second
	})
	deregisterAllRaw(ctx, t, url, existingServiceID(t, url, "demo", "web"))
	time.Sleep(time.Second) // 10 polls
	if got, _ := rd.Records(rec.Key()); len(got) != 1 {
		t.Fatalf("the reader saw the unannounced withdrawal before the restart: the test cannot tell the fix from the sweep")
	}

	w2 := newTestRegistry(t, url, "set1", "cls1")
	run(t, w2)
	eventually(t, 5*time.Second, "the new process's first sync", w2.HasSynced)
	if err := w2.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the withdrawal seen by the reader", func() bool {
		got, _ := rd.Records(rec.Key())
		return len(got) == 0
	})
	if got := beaconOf(t, rd, "cls1", "demo"); got[attrChangeSince] != restartSince {
		t.Errorf("cls1's beacon after the restart: %v, want CHANGE_SINCE=%s", got, restartSince)
	}
}
