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
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

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
	// NewRegistry returns a registry handle for clusterID in clusterSetID,
	// whose heartbeats name HolderOf(clusterID) as their holder.
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
	// Lose removes clusterID's stored record of key from the backing store
	// behind the backend's back, the way a person deleting it by hand would,
	// and returns a probe that reports whether the store holds that record
	// again (read from the store, not through a Registry). Required.
	Lose func(t *testing.T, clusterSetID, clusterID string, key registry.ServiceKey) (stored func() (bool, error))
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
		{"PublishFillsInOwnIdentity", testOwnIdentity},
		{"RecordsAreCopiesAndKeysSorted", testCopies},
		{"LostRecordIsWrittenAgain", testLostRecordIsKept},
		{"NameLimits", testNameLimits},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.defaults()
			if h.Lose == nil {
				t.Fatal("the harness has no Lose: every backend must show that it keeps its records")
			}
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
		keys := slices.Collect(maps.Keys(m.pending))
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

// HolderOf is the heartbeat holder a harness gives the registries of
// clusterID (standing for the UID of that cluster's kube-system namespace).
func HolderOf(clusterID string) string { return "kube-system-uid-of-" + clusterID }
