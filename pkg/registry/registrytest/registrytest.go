// Package registrytest is the contract suite that every registry backend must
// pass. A backend's test calls Run with a Harness that builds Registries which
// share one backing store.
//
// Every sub-test works in a clusterset ID and a Kubernetes namespace of its
// own, with a random suffix, and every cluster uses endpoint addresses of its
// own, so a harness may share one backing store between sub-tests (one hub API
// server for the whole suite, one Cloud Map for the whole run) without records
// of one sub-test being seen by another.
package registrytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/clusterset/clusterset/pkg/registry"
)

// Defaults of the optional Harness fields.
const (
	DefaultServices    = 110
	DefaultEndpoints   = 1100
	DefaultTimeout     = 30 * time.Second
	DefaultClockSkew   = 5 * time.Second
	DefaultParallelism = 8
	DefaultOutage      = 3 * time.Second
)

// Harness creates Registries for one test. Every Registry that NewRegistry
// returns within a test shares the same backing store (one hub API server,
// one Cloud Map), so that records published through one are seen by the others.
type Harness struct {
	// NewRegistry returns a registry handle for clusterID in clusterSetID.
	NewRegistry func(t *testing.T, clusterSetID, clusterID string) registry.Registry

	// Services is how many services the paging test publishes from one
	// cluster (past 100, the usual page size). 0 means DefaultServices; a
	// negative value skips the test.
	Services int
	// Endpoints is how many endpoints the paging test publishes in one
	// service (past 1,000). 0 means DefaultEndpoints; a negative value skips
	// the test.
	Endpoints int
	// Timeout bounds every wait for the view to show a change. 0 means
	// DefaultTimeout.
	Timeout time.Duration
	// ClockSkew is how far a heartbeat time read back may be from the local
	// clock at the time of the Heartbeat call. 0 means DefaultClockSkew.
	ClockSkew time.Duration
	// Parallelism bounds how many Publish calls the paging test makes at
	// once. 0 means DefaultParallelism.
	Parallelism int
	// Outage, when set, makes the backing store unreachable for every
	// Registry of this harness until the returned function is called. The
	// outage test is skipped when it is nil.
	Outage func(t *testing.T) (end func())
	// OutageDuration is how long the outage test keeps the store unreachable
	// before checking that the view was kept. 0 means DefaultOutage.
	OutageDuration time.Duration
}

func (h *Harness) defaults() {
	if h.Services == 0 {
		h.Services = DefaultServices
	}
	if h.Endpoints == 0 {
		h.Endpoints = DefaultEndpoints
	}
	if h.Timeout == 0 {
		h.Timeout = DefaultTimeout
	}
	if h.ClockSkew == 0 {
		h.ClockSkew = DefaultClockSkew
	}
	if h.Parallelism <= 0 {
		h.Parallelism = DefaultParallelism
	}
	if h.OutageDuration == 0 {
		h.OutageDuration = DefaultOutage
	}
}

// Run runs the contract suite. newHarness is called once per sub-test. A
// harness may return a fresh backing store each time, or share one: every
// sub-test uses a clusterset ID, service namespace and endpoint addresses of
// its own.
//
// Besides reading the view, the suite checks onChange the way a reconciler
// relies on it: after each call it reads Records of the key, and a wait for a
// change succeeds only when that read shows it, so an onChange that is missed
// or made before the view changed makes the wait time out.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(*suite)
	}{
		{"ReadBeforeSyncFails", testReadBeforeSync},
		{"PublishThenReadFromAnotherCluster", testPublishRead},
		{"ZeroEndpointsRoundTrip", testZeroEndpoints},
		{"UpdatesAreSeen", testUpdates},
		{"ChangedTimeFollowsContent", testChangedTime},
		{"WithdrawIsSeenAndIdempotent", testWithdraw},
		{"PublishRejectsAnotherClustersRecord", testPublishForeign},
		{"ClusterSetIsolation", testClusterSetIsolation},
		{"PagingManyServices", testManyServices},
		{"PagingManyEndpoints", testManyEndpoints},
		{"Liveness", testLiveness},
		{"ConcurrentWritersFromThreeClusters", testConcurrentWriters},
		{"OutageKeepsView", testOutage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.defaults()
			s := &suite{t: t, h: h, setID: "set-" + slug(tc.name) + "-" + randHex(3), ns: "ns-" + slug(tc.name) + "-" + randHex(3)}
			start := time.Now()
			tc.fn(s)
			t.Logf("%s took %v", tc.name, time.Since(start).Round(time.Millisecond))
		})
	}
}

// suite is the state of one sub-test.
type suite struct {
	t     *testing.T
	h     Harness
	setID string // the sub-test's clusterset ID
	ns    string // the sub-test's Kubernetes namespace of every service
}

func (s *suite) key(name string) registry.ServiceKey {
	return registry.ServiceKey{Namespace: s.ns, Name: name}
}

// ctx returns a context for one registry call.
func (s *suite) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), s.h.Timeout)
	s.t.Cleanup(cancel)
	return ctx
}

// member is a started Registry of one cluster: its Run goroutine is going, and
// every onChange call is followed by a read of the key's records, the way a
// reconciler would read them after being queued. That snapshot is what the
// waits below compare, so a missed onChange, or one that came before the view
// was updated, makes the wait time out.
type member struct {
	s         *suite
	clusterID string
	setID     string
	reg       registry.Registry

	mu        sync.Mutex
	pending   map[registry.ServiceKey]bool
	snapshots map[registry.ServiceKey][]registry.Record
	calls     map[registry.ServiceKey]int
	kick      chan struct{}
}

// start creates the Registry of clusterID in the sub-test's clusterset, runs
// it until the sub-test ends and waits until it has synced.
func (s *suite) start(clusterID string) *member {
	return s.startIn(s.setID, clusterID)
}

func (s *suite) startIn(setID, clusterID string) *member {
	s.t.Helper()
	m := &member{
		s:         s,
		clusterID: clusterID,
		setID:     setID,
		reg:       s.h.NewRegistry(s.t, setID, clusterID),
		pending:   map[registry.ServiceKey]bool{},
		snapshots: map[registry.ServiceKey][]registry.Record{},
		calls:     map[registry.ServiceKey]int{},
		kick:      make(chan struct{}, 1),
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- m.reg.Run(ctx, m.onChange) }()
	readerDone := make(chan struct{})
	go func() { defer close(readerDone); m.readLoop(ctx) }()
	s.t.Cleanup(func() {
		cancel()
		<-readerDone
		select {
		case err := <-runDone:
			if err != nil && !errors.Is(err, context.Canceled) {
				s.t.Errorf("cluster %s: Run returned %v after its context ended, want nil", clusterID, err)
			}
		case <-time.After(10 * time.Second):
			s.t.Errorf("cluster %s: Run did not return within 10s of its context ending", clusterID)
		}
	})
	s.eventually(fmt.Sprintf("cluster %s: HasSynced", clusterID), func() error {
		select {
		case err := <-runDone:
			runDone <- err
			return fmt.Errorf("Run returned early: %v", err)
		default:
		}
		if !m.reg.HasSynced() {
			return errors.New("not synced")
		}
		return nil
	})
	return m
}

func (m *member) onChange(key registry.ServiceKey) {
	m.mu.Lock()
	m.pending[key] = true
	m.calls[key]++
	m.mu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// readLoop reads the records of every key that onChange named, after the call.
func (m *member) readLoop(ctx context.Context) {
	retry := time.NewTicker(50 * time.Millisecond)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		case <-retry.C:
		}
		m.mu.Lock()
		keys := make([]registry.ServiceKey, 0, len(m.pending))
		for k := range m.pending {
			keys = append(keys, k)
		}
		clear(m.pending)
		m.mu.Unlock()
		for _, k := range keys {
			recs, err := m.reg.Records(k)
			m.mu.Lock()
			if err != nil {
				// Not synced yet: read it again on the next tick.
				m.pending[k] = true
			} else {
				m.snapshots[k] = recs
			}
			m.mu.Unlock()
		}
	}
}

func (m *member) publish(rec registry.Record) {
	m.s.t.Helper()
	if err := m.reg.Publish(m.s.ctx(), &rec); err != nil {
		m.s.t.Fatalf("cluster %s: Publish %s: %v", m.clusterID, rec.Key(), err)
	}
}

func (m *member) withdraw(key registry.ServiceKey) {
	m.s.t.Helper()
	if err := m.reg.Withdraw(m.s.ctx(), key); err != nil {
		m.s.t.Fatalf("cluster %s: Withdraw %s: %v", m.clusterID, key, err)
	}
}

func (m *member) snapshot(key registry.ServiceKey) ([]registry.Record, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.snapshots[key]
	return r, ok
}

// waitRecords waits until both the view (Records) and the read that followed
// the latest onChange of key show exactly want (in any order of arguments;
// the result must be sorted by ClusterID).
func (m *member) waitRecords(key registry.ServiceKey, want ...registry.Record) {
	m.s.t.Helper()
	wantC := canonicalAll(want)
	m.s.eventually(fmt.Sprintf("cluster %s: records of %s", m.clusterID, key), func() error {
		got, err := m.reg.Records(key)
		if err != nil {
			return fmt.Errorf("Records: %w", err)
		}
		if err := sameRecords(got, wantC); err != nil {
			return fmt.Errorf("Records: %w", err)
		}
		snap, ok := m.snapshot(key)
		if !ok {
			return errors.New("onChange was never called with this key")
		}
		if err := sameRecords(snap, wantC); err != nil {
			return fmt.Errorf("records read after the latest onChange call (a missed or early onChange): %w", err)
		}
		return nil
	})
}

// waitKeys waits until Keys, restricted to the sub-test's namespace, is want.
func (m *member) waitKeys(want ...registry.ServiceKey) {
	m.s.t.Helper()
	slices.SortFunc(want, compareKeys)
	m.s.eventually(fmt.Sprintf("cluster %s: keys", m.clusterID), func() error {
		keys, err := m.reg.Keys()
		if err != nil {
			return fmt.Errorf("Keys: %w", err)
		}
		var got []registry.ServiceKey
		for _, k := range keys {
			if k.Namespace == m.s.ns {
				got = append(got, k)
			}
		}
		slices.SortFunc(got, compareKeys)
		if !slices.Equal(got, want) {
			return fmt.Errorf("got %d keys %v, want %d keys %v", len(got), abbreviate(got), len(want), abbreviate(want))
		}
		return nil
	})
}

// eventually polls cond until it returns nil, or fails the test after the
// harness's timeout with cond's last error.
func (s *suite) eventually(what string, cond func() error) {
	s.t.Helper()
	deadline := time.Now().Add(s.h.Timeout)
	delay := 10 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: not true after %v: %v", what, s.h.Timeout, err)
		}
		time.Sleep(delay)
		delay = min(delay*2, 200*time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// Sub-tests

func testReadBeforeSync(s *suite) {
	reg := s.h.NewRegistry(s.t, s.setID, "cls-a")
	if reg.HasSynced() {
		s.t.Fatal("HasSynced is true before Run was called")
	}
	if _, err := reg.Records(s.key("web")); !errors.Is(err, registry.ErrNotSynced) {
		s.t.Errorf("Records before Run: got error %v, want ErrNotSynced", err)
	}
}

func testPublishRead(s *suite) {
	a := s.start("cls-a")
	b := s.start("cls-b")
	key := s.key("web")
	recA := fullRecord(s.setID, "cls-a", key, 1)
	a.publish(recA)
	// Both another cluster and the exporter itself see the record.
	b.waitRecords(key, recA)
	a.waitRecords(key, recA)
	b.waitKeys(key)

	// A second cluster's record: Records is sorted by ClusterID whatever the
	// publication order, so publish "cls-0" after "cls-a".
	z := s.start("cls-0")
	recZ := fullRecord(s.setID, "cls-0", key, 2)
	recZ.Spec.ExportCreated = recA.Spec.ExportCreated.Add(-time.Hour)
	z.publish(recZ)
	b.waitRecords(key, recZ, recA)

	// A registry started after the records were published sees them in its
	// first fill.
	c := s.start("cls-c")
	c.waitRecords(key, recZ, recA)
	c.waitKeys(key)
}

func testZeroEndpoints(s *suite) {
	a := s.start("cls-a")
	b := s.start("cls-b")
	key := s.key("scaled")
	rec := fullRecord(s.setID, "cls-a", key, 1)
	rec.Endpoints = nil
	a.publish(rec)
	b.waitRecords(key, rec)
	b.waitKeys(key)

	// Scaled up, then back to zero: the export still exists.
	up := fullRecord(s.setID, "cls-a", key, 1)
	a.publish(up)
	b.waitRecords(key, up)
	a.publish(rec)
	b.waitRecords(key, rec)
	b.waitKeys(key)

	// An empty, non-nil slice is the same as nil.
	rec.Endpoints = []registry.Endpoint{}
	a.publish(rec)
	b.waitRecords(key, rec)
}

func testUpdates(s *suite) {
	a := s.start("cls-a")
	b := s.start("cls-b")
	key := s.key("web")
	rec := fullRecord(s.setID, "cls-a", key, 1)
	a.publish(rec)
	b.waitRecords(key, rec)

	steps := []struct {
		name   string
		change func(r *registry.Record)
	}{
		{"ready flips to false", func(r *registry.Record) {
			r.Endpoints[0].Ready = false
			r.Endpoints[0].Serving = false
		}},
		{"ready flips back to true", func(r *registry.Record) {
			r.Endpoints[0].Ready = true
			r.Endpoints[0].Serving = true
		}},
		{"endpoint terminating", func(r *registry.Record) {
			r.Endpoints[1].Ready = false
			r.Endpoints[1].Terminating = true
		}},
		{"endpoint removed", func(r *registry.Record) { r.Endpoints = r.Endpoints[:len(r.Endpoints)-1] }},
		{"endpoint added", func(r *registry.Record) {
			r.Endpoints = append(r.Endpoints, endpoint(1, 200, r.Spec.Ports, false))
		}},
		{"IPv6 endpoint added", func(r *registry.Record) {
			r.Endpoints = append(r.Endpoints, endpoint(1, 201, r.Spec.Ports, true))
		}},
		{"port added", func(r *registry.Record) {
			p := registry.Port{Name: "metrics", Protocol: corev1.ProtocolTCP, Port: 9090, TargetPort: "9090"}
			r.Spec.Ports = append(r.Spec.Ports, p)
			for i := range r.Endpoints {
				r.Endpoints[i].Ports = append(r.Endpoints[i].Ports, registry.EndpointPort{Name: p.Name, Protocol: p.Protocol, Port: 9090})
			}
		}},
		{"labels and affinity changed", func(r *registry.Record) {
			r.Spec.ExportedLabels = map[string]string{"tier": "backend"}
			r.Spec.ExportedAnnotations = nil
			r.Spec.SessionAffinity = corev1.ServiceAffinityNone
			r.Spec.SessionAffinityConfig = nil
			r.Spec.TrafficDistribution = nil
		}},
		{"type changed to Headless", func(r *registry.Record) { r.Spec.Type = registry.Headless }},
	}
	for _, step := range steps {
		step.change(&rec)
		s.t.Logf("update: %s", step.name)
		a.publish(rec)
		b.waitRecords(key, rec)
		a.waitRecords(key, rec)
	}

	// Publishing the same record again is harmless.
	a.publish(rec)
	b.waitRecords(key, rec)
}

func testWithdraw(s *suite) {
	a := s.start("cls-a")
	b := s.start("cls-b")
	key := s.key("web")
	other := s.key("other")
	recA := fullRecord(s.setID, "cls-a", key, 1)
	recB := fullRecord(s.setID, "cls-b", key, 2)
	recOther := fullRecord(s.setID, "cls-a", other, 1)
	a.publish(recA)
	a.publish(recOther)
	b.publish(recB)
	b.waitRecords(key, recA, recB)
	b.waitRecords(other, recOther)

	// Withdrawing removes only this cluster's record of this key.
	a.withdraw(key)
	b.waitRecords(key, recB)
	a.waitRecords(key, recB)
	b.waitRecords(other, recOther)

	// Twice is fine, and so is a key that was never published.
	a.withdraw(key)
	a.withdraw(s.key("never-published"))

	b.withdraw(key)
	b.waitRecords(key)
	a.waitRecords(key)
	b.waitKeys(other)

	a.withdraw(other)
	b.waitRecords(other)
	b.waitKeys()

	// Published again after a withdrawal.
	a.publish(recA)
	b.waitRecords(key, recA)
}

func testPublishForeign(s *suite) {
	a := s.start("cls-a")
	key := s.key("web")
	foreign := fullRecord(s.setID, "cls-b", key, 2)
	if err := a.reg.Publish(s.ctx(), &foreign); err == nil {
		s.t.Errorf("cluster cls-a published a record with ClusterID cls-b: got no error")
	}
	otherSet := fullRecord(s.setID+"-x", "cls-a", key, 1)
	if err := a.reg.Publish(s.ctx(), &otherSet); err == nil {
		s.t.Errorf("cluster cls-a of %s published a record of clusterset %s: got no error", s.setID, otherSet.ClusterSetID)
	}
	// The positive control: a record of its own is seen, and nothing else.
	own := fullRecord(s.setID, "cls-a", s.key("own"), 1)
	a.publish(own)
	a.waitRecords(own.Key(), own)
	if recs, err := a.reg.Records(key); err != nil || len(recs) != 0 {
		s.t.Errorf("Records(%s) = %v, %v; want none", key, clusterIDs(recs), err)
	}
}

func testClusterSetIsolation(s *suite) {
	set1, set2 := s.setID, s.setID+"-other"
	a1 := s.startIn(set1, "cls-a")
	b1 := s.startIn(set1, "cls-b")
	// The same cluster ID in the other clusterset.
	a2 := s.startIn(set2, "cls-a")
	b2 := s.startIn(set2, "cls-b")

	key := s.key("web")
	only1 := s.key("only-in-set1")
	rec1 := fullRecord(set1, "cls-a", key, 1)
	rec1Only := fullRecord(set1, "cls-a", only1, 1)
	rec2 := fullRecord(set2, "cls-a", key, 3) // other addresses
	rec2.Spec.Ports = rec2.Spec.Ports[:1]
	for i := range rec2.Endpoints {
		rec2.Endpoints[i].Ports = rec2.Endpoints[i].Ports[:1]
	}
	a1.publish(rec1)
	a1.publish(rec1Only)
	b1.waitRecords(key, rec1)
	b1.waitRecords(only1, rec1Only)

	a2.publish(rec2)
	// Positive control first: once set2's own record is seen, set1's would
	// have been too.
	b2.waitRecords(key, rec2)
	b1.waitRecords(key, rec1)
	for _, m := range []*member{a2, b2} {
		if recs, err := m.reg.Records(only1); err != nil || len(recs) != 0 {
			m.s.t.Errorf("cluster %s of %s: Records(%s) = %v, %v; want none", m.clusterID, set2, only1, clusterIDs(recs), err)
		}
		m.waitKeys(key)
	}
	b1.waitKeys(key, only1)

	// Withdrawing in set2 leaves set1's record of the same cluster ID alone.
	a2.withdraw(key)
	b2.waitRecords(key)
	a1.waitRecords(key, rec1)
	b1.waitRecords(key, rec1)

	// Liveness is per clusterset too: a cluster that only set1 has.
	x1 := s.h.NewRegistry(s.t, set1, "cls-x")
	if err := x1.Heartbeat(s.ctx()); err != nil {
		s.t.Fatalf("Heartbeat: %v", err)
	}
	if err := b2.reg.Heartbeat(s.ctx()); err != nil {
		s.t.Fatalf("Heartbeat: %v", err)
	}
	s.eventually("liveness of set1 shows cls-x", func() error {
		live, err := a1.reg.Liveness(s.ctx())
		if err != nil {
			return err
		}
		if _, ok := live["cls-x"]; !ok {
			return fmt.Errorf("cls-x missing from %v", live)
		}
		return nil
	})
	s.eventually("liveness of set2 shows cls-b and not cls-x", func() error {
		live, err := a2.reg.Liveness(s.ctx())
		if err != nil {
			return err
		}
		if _, ok := live["cls-b"]; !ok {
			return fmt.Errorf("cls-b missing from %v", live)
		}
		if _, ok := live["cls-x"]; ok {
			return fmt.Errorf("cls-x of %s heartbeated, but set2's liveness shows it: %v", set1, live)
		}
		return nil
	})
}

func testManyServices(s *suite) {
	n := s.h.Services
	if n < 0 {
		s.t.Skip("harness skips the many-services test")
	}
	a := s.start("cls-a")
	recs := make([]registry.Record, n)
	keys := make([]registry.ServiceKey, n)
	for i := range recs {
		keys[i] = s.key(fmt.Sprintf("svc-%04d", i))
		recs[i] = smallRecord(s.setID, "cls-a", keys[i], i)
	}
	start := time.Now()
	s.parallel(n, func(i int) error { return a.reg.Publish(s.ctx(), &recs[i]) })
	s.t.Logf("published %d services in %v", n, time.Since(start).Round(time.Millisecond))

	b := s.start("cls-b")
	b.waitKeys(keys...)
	for i := range recs {
		b.waitRecords(keys[i], recs[i])
	}
	// A reader that starts now fills its view with all of them at once.
	c := s.start("cls-c")
	c.waitKeys(keys...)
	c.waitRecords(keys[n-1], recs[n-1])
}

func testManyEndpoints(s *suite) {
	n := s.h.Endpoints
	if n < 0 {
		s.t.Skip("harness skips the many-endpoints test")
	}
	a := s.start("cls-a")
	b := s.start("cls-b")
	key := s.key("big")
	rec := smallRecord(s.setID, "cls-a", key, 0)
	rec.Endpoints = nil
	for i := range n {
		rec.Endpoints = append(rec.Endpoints, endpoint(1, i, rec.Spec.Ports, i%10 == 9))
	}
	start := time.Now()
	a.publish(rec)
	s.t.Logf("published %d endpoints in %v", n, time.Since(start).Round(time.Millisecond))
	b.waitRecords(key, rec)
	s.t.Logf("read back %d endpoints after %v", n, time.Since(start).Round(time.Millisecond))

	// Changes at both ends of the list.
	rec.Endpoints[n-1].Ready = false
	rec.Endpoints = rec.Endpoints[1:]
	a.publish(rec)
	b.waitRecords(key, rec)

	// Scaled down to a few: nothing of the big record is left over.
	rec.Endpoints = rec.Endpoints[:3]
	a.publish(rec)
	b.waitRecords(key, rec)

	// And back up.
	rec.Endpoints = nil
	for i := range n {
		rec.Endpoints = append(rec.Endpoints, endpoint(1, n-i, rec.Spec.Ports, false))
	}
	a.publish(rec)
	b.waitRecords(key, rec)
}

func testLiveness(s *suite) {
	a := s.start("cls-a")
	b := s.start("cls-b")
	if _, err := b.reg.Liveness(s.ctx()); err != nil {
		s.t.Fatalf("Liveness: %v", err)
	}

	var last time.Time
	for round := range 2 {
		before := time.Now()
		if err := a.reg.Heartbeat(s.ctx()); err != nil {
			s.t.Fatalf("Heartbeat (round %d): %v", round, err)
		}
		after := time.Now()
		s.eventually(fmt.Sprintf("liveness of cls-a seen by cls-b (round %d)", round), func() error {
			live, err := b.reg.Liveness(s.ctx())
			if err != nil {
				return err
			}
			got, ok := live["cls-a"]
			if !ok {
				return fmt.Errorf("cls-a missing: %v", live)
			}
			if got.Before(before.Add(-s.h.ClockSkew)) || got.After(after.Add(s.h.ClockSkew)) {
				return fmt.Errorf("cls-a's heartbeat time %v is not within %v of [%v, %v]", got, s.h.ClockSkew, before, after)
			}
			if !got.After(last) && round > 0 {
				return fmt.Errorf("heartbeat time %v did not advance past %v", got, last)
			}
			last = got
			return nil
		})
		if round == 0 {
			// Let the clock move so the second heartbeat is visibly later.
			time.Sleep(1100 * time.Millisecond)
		}
	}

	// Heartbeats from several clusters.
	if err := b.reg.Heartbeat(s.ctx()); err != nil {
		s.t.Fatalf("Heartbeat: %v", err)
	}
	s.eventually("liveness of both clusters", func() error {
		live, err := a.reg.Liveness(s.ctx())
		if err != nil {
			return err
		}
		if len(live) != 2 {
			return fmt.Errorf("got %v, want cls-a and cls-b", live)
		}
		return nil
	})
}

func testConcurrentWriters(s *suite) {
	ids := []string{"cls-c", "cls-a", "cls-b"}
	members := make([]*member, len(ids))
	for i, id := range ids {
		members[i] = s.start(id)
	}
	key := s.key("shared")
	// Each cluster publishes several versions as fast as it can, all at the
	// same time; the last version of each must win.
	const versions = 4
	final := make([]registry.Record, len(ids))
	release := make(chan struct{})
	errs := make(chan error, len(ids))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() {
			<-release
			for v := range versions {
				rec := fullRecord(s.setID, m.clusterID, key, i+1)
				rec.Endpoints = rec.Endpoints[:1+v%len(rec.Endpoints)]
				rec.Spec.ExportedLabels["version"] = fmt.Sprint(v)
				if err := m.reg.Publish(s.ctx(), &rec); err != nil {
					errs <- fmt.Errorf("cluster %s, version %d: %w", m.clusterID, v, err)
					return
				}
				final[i] = rec
			}
		})
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		s.t.Fatalf("concurrent Publish: %v", err)
	}
	for _, m := range members {
		m.waitRecords(key, final...)
	}

	// And all three withdraw at once.
	errs = make(chan error, len(ids))
	for _, m := range members {
		wg.Go(func() {
			if err := m.reg.Withdraw(s.ctx(), key); err != nil {
				errs <- fmt.Errorf("cluster %s: %w", m.clusterID, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		s.t.Fatalf("concurrent Withdraw: %v", err)
	}
	for _, m := range members {
		m.waitRecords(key)
	}
}

func testOutage(s *suite) {
	if s.h.Outage == nil {
		s.t.Skip("harness cannot simulate an outage")
	}
	a := s.start("cls-a")
	b := s.start("cls-b")
	key := s.key("web")
	rec := fullRecord(s.setID, "cls-a", key, 1)
	a.publish(rec)
	b.waitRecords(key, rec)

	end := s.h.Outage(s.t)
	ended := false
	defer func() {
		if !ended {
			end()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), s.h.OutageDuration)
	defer cancel()
	update := rec
	update.Endpoints = update.Endpoints[:1]
	if err := a.reg.Publish(ctx, &update); err == nil {
		s.t.Errorf("Publish during the outage: got no error")
	}
	<-ctx.Done()
	if !b.reg.HasSynced() {
		s.t.Errorf("HasSynced turned false during the outage")
	}
	got, err := b.reg.Records(key)
	if err != nil {
		s.t.Fatalf("Records during the outage: %v", err)
	}
	if err := sameRecords(got, canonicalAll([]registry.Record{rec})); err != nil {
		s.t.Fatalf("the view changed during the outage: %v", err)
	}
	end()
	ended = true

	// Recovery: the registries reconnect on their own.
	a.publish(update)
	b.waitRecords(key, update)
}

// parallel runs fn(0..n-1) with the harness's parallelism and fails the test
// on the first error.
func (s *suite) parallel(n int, fn func(i int) error) {
	s.t.Helper()
	sem := make(chan struct{}, s.h.Parallelism)
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(i); err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("item %d: %w", i, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if first != nil {
		s.t.Fatal(first)
	}
}

// ---------------------------------------------------------------------------
// Records

var (
	tcpProto  = corev1.ProtocolTCP
	udpProto  = corev1.ProtocolUDP
	httpProto = "http"
)

// fullRecord returns a record that sets every field. cluster selects the
// address range, so that different clusters never share an address.
func fullRecord(setID, clusterID string, key registry.ServiceKey, cluster int) registry.Record {
	local := corev1.ServiceInternalTrafficPolicyLocal
	prefer := corev1.ServiceTrafficDistributionPreferClose
	timeout := int32(3600 + cluster)
	ports := []registry.Port{
		{Name: "http", Protocol: tcpProto, AppProtocol: &httpProto, Port: 80, TargetPort: "8080"},
		{Name: "dns", Protocol: udpProto, Port: 53, TargetPort: "dns"},
	}
	rec := registry.Record{
		ClusterSetID: setID,
		ClusterID:    clusterID,
		Namespace:    key.Namespace,
		Name:         key.Name,
		Spec: registry.ServiceSpec{
			Type:                  registry.ClusterSetIP,
			Ports:                 ports,
			SessionAffinity:       corev1.ServiceAffinityClientIP,
			SessionAffinityConfig: &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &timeout}},
			IPFamilies:            []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol},
			InternalTrafficPolicy: &local,
			TrafficDistribution:   &prefer,
			ExportedLabels:        map[string]string{"app": "web", "example.com/team": "blue"},
			ExportedAnnotations:   map[string]string{"example.com/note": "exported, with \"quotes\" and\nnewlines"},
			// Sub-millisecond digits: backends keep at least milliseconds.
			ExportCreated: time.Date(2025, 3, 14, 15, 9, 26, 535_897_932, time.UTC).Add(time.Duration(cluster) * time.Second),
		},
		Changed: time.Date(2025, 3, 15, 1, 2, 3, 456_789_000, time.UTC).Add(time.Duration(cluster) * time.Second),
	}
	rec.Endpoints = []registry.Endpoint{
		endpoint(cluster, 1, ports, false),
		endpoint(cluster, 2, ports, false),
		endpoint(cluster, 3, ports, true),
	}
	// Each combination of conditions and optional fields.
	rec.Endpoints[0].Hostname, rec.Endpoints[0].NodeName, rec.Endpoints[0].Zone = "web-0", "node-1", "zone-a"
	rec.Endpoints[1].Ready, rec.Endpoints[1].Serving, rec.Endpoints[1].Terminating = false, true, true
	rec.Endpoints[1].NodeName = "node-2"
	rec.Endpoints[2].Ready, rec.Endpoints[2].Serving = false, false
	rec.Endpoints[2].Hostname, rec.Endpoints[2].Zone = "web-2", "zone-b"
	return rec
}

// smallRecord is a minimal ClusterSetIP record with one port and two endpoints.
func smallRecord(setID, clusterID string, key registry.ServiceKey, i int) registry.Record {
	ports := []registry.Port{{Name: "http", Protocol: tcpProto, Port: 80, TargetPort: "8080"}}
	return registry.Record{
		ClusterSetID: setID,
		ClusterID:    clusterID,
		Namespace:    key.Namespace,
		Name:         key.Name,
		Spec: registry.ServiceSpec{
			Type:            registry.ClusterSetIP,
			Ports:           ports,
			SessionAffinity: corev1.ServiceAffinityNone,
			IPFamilies:      []corev1.IPFamily{corev1.IPv4Protocol},
			ExportCreated:   time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * time.Millisecond),
		},
		Endpoints: []registry.Endpoint{endpoint(1, 2*i, ports, false), endpoint(1, 2*i+1, ports, false)},
	}
}

// endpoint returns a ready endpoint, number i of cluster, listening on every
// service port (on the target port when it is a number, else on port+1000).
func endpoint(cluster, i int, ports []registry.Port, ipv6 bool) registry.Endpoint {
	ep := registry.Endpoint{Ready: true, Serving: true}
	if ipv6 {
		ep.Address = fmt.Sprintf("fd00:%x::%x", cluster, i)
		ep.AddressType = discoveryv1.AddressTypeIPv6
	} else {
		ep.Address = fmt.Sprintf("10.%d.%d.%d", cluster, i/250, i%250+1)
		ep.AddressType = discoveryv1.AddressTypeIPv4
	}
	for _, p := range ports {
		port := p.Port + 1000
		var n int32
		if _, err := fmt.Sscanf(p.TargetPort, "%d", &n); err == nil {
			port = n
		}
		ep.Ports = append(ep.Ports, registry.EndpointPort{Name: p.Name, Protocol: p.Protocol, Port: port})
	}
	return ep
}

// canonical returns a copy of r in the form that two equivalent records share:
// ports and endpoints sorted (backends need not keep their order), empty
// collections nil, ExportCreated in UTC truncated to milliseconds.
func canonical(r registry.Record) registry.Record {
	var c registry.Record
	raw, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		panic(err)
	}
	c.Spec.ExportCreated = r.Spec.ExportCreated.UTC().Truncate(time.Millisecond)
	c.Changed = r.Changed.UTC().Truncate(time.Millisecond)
	if len(c.Spec.Ports) == 0 {
		c.Spec.Ports = nil
	}
	slices.SortFunc(c.Spec.Ports, func(a, b registry.Port) int {
		return strings.Compare(fmt.Sprintf("%s/%s/%05d", a.Name, a.Protocol, a.Port), fmt.Sprintf("%s/%s/%05d", b.Name, b.Protocol, b.Port))
	})
	if len(c.Spec.IPFamilies) == 0 {
		c.Spec.IPFamilies = nil
	}
	if len(c.Spec.ExportedLabels) == 0 {
		c.Spec.ExportedLabels = nil
	}
	if len(c.Spec.ExportedAnnotations) == 0 {
		c.Spec.ExportedAnnotations = nil
	}
	if len(c.Endpoints) == 0 {
		c.Endpoints = nil
	}
	for i := range c.Endpoints {
		ps := c.Endpoints[i].Ports
		if len(ps) == 0 {
			c.Endpoints[i].Ports = nil
		}
		slices.SortFunc(ps, func(a, b registry.EndpointPort) int {
			return strings.Compare(fmt.Sprintf("%s/%s/%05d", a.Name, a.Protocol, a.Port), fmt.Sprintf("%s/%s/%05d", b.Name, b.Protocol, b.Port))
		})
	}
	slices.SortFunc(c.Endpoints, func(a, b registry.Endpoint) int { return strings.Compare(a.Address, b.Address) })
	return c
}

// canonicalAll returns the canonical forms of recs sorted by ClusterID.
func canonicalAll(recs []registry.Record) []registry.Record {
	out := make([]registry.Record, len(recs))
	for i, r := range recs {
		out[i] = canonical(r)
	}
	slices.SortFunc(out, func(a, b registry.Record) int { return strings.Compare(a.ClusterID, b.ClusterID) })
	return out
}

// sameRecords compares records read from a registry with canonical wanted
// ones: same clusters in ClusterID order, and equal records.
func sameRecords(got, want []registry.Record) error {
	if !slices.IsSortedFunc(got, func(a, b registry.Record) int { return strings.Compare(a.ClusterID, b.ClusterID) }) {
		return fmt.Errorf("records not sorted by ClusterID: %v", clusterIDs(got))
	}
	if !slices.Equal(clusterIDs(got), clusterIDs(want)) {
		return fmt.Errorf("got records of clusters %v, want %v", clusterIDs(got), clusterIDs(want))
	}
	for i := range got {
		g := canonical(got[i])
		if !reflect.DeepEqual(g, want[i]) {
			return fmt.Errorf("record of cluster %s differs:\n%s", g.ClusterID, diffRecords(g, want[i]))
		}
	}
	return nil
}

// diffRecords describes how got and want differ, field by field, in JSON.
func diffRecords(got, want registry.Record) string {
	var b strings.Builder
	field := func(name string, g, w any) {
		gj, _ := json.Marshal(g)
		wj, _ := json.Marshal(w)
		if string(gj) != string(wj) || !reflect.DeepEqual(g, w) {
			fmt.Fprintf(&b, "  %s:\n    got:  %s\n    want: %s\n", name, abbreviateString(string(gj)), abbreviateString(string(wj)))
		}
	}
	field("ClusterSetID", got.ClusterSetID, want.ClusterSetID)
	field("Namespace/Name", got.Key(), want.Key())
	gs, ws := reflect.ValueOf(got.Spec), reflect.ValueOf(want.Spec)
	for i := range gs.NumField() {
		field("Spec."+gs.Type().Field(i).Name, gs.Field(i).Interface(), ws.Field(i).Interface())
	}
	if len(got.Endpoints) != len(want.Endpoints) {
		fmt.Fprintf(&b, "  Endpoints: got %d, want %d\n", len(got.Endpoints), len(want.Endpoints))
	}
	shown := 0
	for i := range min(len(got.Endpoints), len(want.Endpoints)) {
		if !reflect.DeepEqual(got.Endpoints[i], want.Endpoints[i]) && shown < 3 {
			shown++
			field(fmt.Sprintf("Endpoints[%d]", i), got.Endpoints[i], want.Endpoints[i])
		}
	}
	if b.Len() == 0 {
		return "  (no visible difference: nil and empty values?)"
	}
	return b.String()
}

func clusterIDs(recs []registry.Record) []string {
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.ClusterID
	}
	return ids
}

func compareKeys(a, b registry.ServiceKey) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

func abbreviate(keys []registry.ServiceKey) string {
	if len(keys) <= 6 {
		return fmt.Sprint(keys)
	}
	return fmt.Sprintf("%v ... %v", keys[:3], keys[len(keys)-3:])
}

func abbreviateString(s string) string {
	if len(s) > 400 {
		return s[:400] + "..."
	}
	return s
}

// slug turns a sub-test name into a short lowercase DNS label part: its
// capital letters, lowercased.
func slug(name string) string {
	var b strings.Builder
	for _, r := range name {
		if r >= 'A' && r <= 'Z' {
			b.WriteRune(r - 'A' + 'a')
		}
	}
	s := b.String()
	if len(s) > 12 {
		s = s[:12]
	}
	return s
}

func randHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}
