// Package registrylink is this cluster's link to the shared registry. Once the
// cluster's identity is known it builds the registry backend, keeps the
// backend's view running, renews this cluster's heartbeat, tracks which other
// clusters are alive, and tells the export and import controllers which
// services to look at again. Controllers use the Link, never a backend.
package registrylink

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/clusterset/clusterset/pkg/controllers/identity"
	"github.com/clusterset/clusterset/pkg/registry"
)

// Factory builds the registry backend for an identity; cmd/ chooses it.
type Factory func(ctx context.Context, id identity.Identity) (registry.Registry, error)

// Defaults of Options, and of the controller's flags that set them.
const (
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultGracePeriod       = 2 * time.Minute
)

// Options tune the link. As in every Options of this module, a zero duration
// means its default and a negative one disables what can be disabled.
type Options struct {
	// HeartbeatInterval is how often this cluster renews its liveness record.
	// Zero or negative: DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// GracePeriod is how long another cluster may miss heartbeats before its
	// endpoints are ignored (R1). Zero: DefaultGracePeriod. Negative disables
	// the check: endpoints are then used for as long as they exist.
	GracePeriod time.Duration
	// Clock is this cluster's clock, by which other clusters' heartbeats
	// are judged. Default the real clock; tests give a member a wrong one.
	Clock clock.PassiveClock
	// Elected, when not nil, holds back heartbeats until it is closed: the
	// replica has become the leader (manager.Elected). A standby keeps its
	// view and liveness warm but writes nothing, so two replicas cost the
	// registry no more than one.
	Elected <-chan struct{}
}

// MaxRetryDelay caps the backoff of a reconcile that keeps failing, for
// example while the registry is unreachable. controller-runtime's default
// grows to 1,000 s, so an export would stay Failed for up to a quarter of an
// hour after the registry came back (R2); 30 s keeps recovery prompt at a
// small cost per failing object.
const MaxRetryDelay = 30 * time.Second

// RateLimiter is the workqueue rate limiter of the controllers that talk to
// the registry: per-object exponential backoff from 5 ms up to MaxRetryDelay.
func RateLimiter() workqueue.TypedRateLimiter[reconcile.Request] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](5*time.Millisecond, MaxRetryDelay)
}

// ErrNotReady is returned while the identity is unknown or the backend has not
// been built or synced yet.
var ErrNotReady = errors.New("the registry is not ready yet")

// errIDUnchecked is Registry's error until the heartbeats were read once and
// no other member holds this cluster ID: nothing is written before.
var errIDUnchecked = fmt.Errorf("%w: checking that no other cluster uses this cluster ID", ErrNotReady)

// Starting reports whether err, from Registry, only says that the process
// has not finished starting: the identity was not read yet, the backend is
// not built or its view not synced yet, or the heartbeats were not read yet.
// Other errors (no usable identity, the cluster ID in use by another
// cluster) need a user's action.
func Starting(err error) bool {
	return err == ErrNotReady || err == errIDUnchecked || err == identity.ErrNotRead
}

// Link is safe for concurrent use.
type Link struct {
	ids     *identity.Store
	factory Factory
	opts    Options

	mu   sync.RWMutex
	reg  registry.Registry
	id   identity.Identity
	dead map[string]bool // clusters whose records are ignored now

	// seen is, per other cluster, its last heartbeat's renew time as
	// written (by its clock) and when this cluster saw it change (by this
	// cluster's clock). Only heartbeatLoop uses it.
	seen map[string]observation
	// foreign is what this member saw of a heartbeat of its own cluster ID
	// written by another member (another holder); nil when there is none.
	// Only heartbeatLoop uses it.
	foreign *foreignHolder
	// conflict is the error Registry returns while another member holds
	// this cluster ID, or while that has not been checked yet (guarded by
	// mu).
	conflict error
	// lastBeat is when this member last wrote its heartbeat, on its clock;
	// zero before the first. noHolderLogged says the registry dropping the
	// holder was logged. Only heartbeatLoop uses them.
	lastBeat       time.Time
	noHolderLogged bool
	// unreachable says the last heartbeat round failed to read or write
	// the registry. Only heartbeatLoop uses it.
	unreachable bool

	subsMu sync.Mutex
	subs   []*subscriber
}

// New returns a Link that builds its backend with factory once ids is ready.
func New(ids *identity.Store, factory Factory, opts Options) *Link {
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if opts.GracePeriod == 0 {
		opts.GracePeriod = DefaultGracePeriod
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	gracePeriod.Set(max(opts.GracePeriod, 0).Seconds())
	return &Link{ids: ids, factory: factory, opts: opts, dead: map[string]bool{}, seen: map[string]observation{}, conflict: errIDUnchecked}
}

// Registry returns the backend and the identity it was built for, or
// ErrNotReady (wrapped with the identity's problem when there is one).
func (l *Link) Registry() (registry.Registry, identity.Identity, error) {
	if _, err := l.ids.Current(); err != nil {
		return nil, identity.Identity{}, err
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.conflict != nil {
		return nil, l.id, l.conflict
	}
	if l.reg == nil || !l.reg.HasSynced() {
		return nil, l.id, ErrNotReady
	}
	return l.reg, l.id, nil
}

// ClusterID returns this cluster's ID, or "" while it is unknown; for logs.
func (l *Link) ClusterID() string {
	id, _ := l.ids.Current()
	return id.ClusterID
}

// Records returns every cluster's record of key. Liveness does not filter
// them: every cluster must merge the same records to reach the same import,
// whatever it believes about other clusters' health; only endpoints are
// dropped for clusters that are not Alive.
func (l *Link) Records(key registry.ServiceKey) ([]registry.Record, error) {
	reg, _, err := l.Registry()
	if err != nil {
		return nil, err
	}
	return reg.Records(key)
}

// Alive reports whether the endpoints of cluster should be used: its
// heartbeat is within the grace period, or the check is disabled, or it is
// this cluster.
func (l *Link) Alive(cluster string) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return cluster == l.id.ClusterID || !l.dead[cluster]
}

// ReadyCheck is a readiness probe: ready once the identity is valid and the
// registry view has synced.
func (l *Link) ReadyCheck(*http.Request) error {
	_, _, err := l.Registry()
	return err
}

// Source returns a controller-runtime source that enqueues the key of every
// service whose records may have changed. Each call makes a new subscriber.
func (l *Link) Source() source.Source {
	sub := &subscriber{pending: map[registry.ServiceKey]struct{}{}, wake: make(chan struct{}, 1), out: make(chan event.GenericEvent)}
	l.subsMu.Lock()
	l.subs = append(l.subs, sub)
	l.subsMu.Unlock()
	return source.Channel(sub.out, &handler.EnqueueRequestForObject{})
}

// NeedLeaderElection is false: every replica keeps its view warm, and only
// the elected one's controllers write.
func (l *Link) NeedLeaderElection() bool { return false }

// Start waits for the identity, builds the backend and runs it until ctx ends.
func (l *Link) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("registrylink")
	for _, s := range l.snapshotSubs() {
		go s.pump(ctx)
	}
	select {
	case <-ctx.Done():
		return nil
	case <-l.ids.Ready():
	}
	id, _ := l.ids.Current()
	logger = logger.WithValues("cluster", id.ClusterID, "clusterset", id.ClusterSetID)
	var reg registry.Registry
	for {
		var err error
		if reg, err = l.factory(ctx, id); err == nil {
			break
		}
		logger.Error(err, "building the registry backend; retrying")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(5 * time.Second):
		}
	}
	l.mu.Lock()
	l.reg, l.id = reg, id
	l.mu.Unlock()
	logger.Info("registry backend started")

	done := make(chan error, 1)
	go func() { done <- reg.Run(ctx, l.notify) }()
	l.heartbeatLoop(log.IntoContext(ctx, logger), reg, id)
	return <-done
}

// heartbeatLoop renews this cluster's liveness and recomputes which clusters
// are dead until ctx ends.
func (l *Link) heartbeatLoop(ctx context.Context, reg registry.Registry, id identity.Identity) {
	logger := log.FromContext(ctx)
	tick := time.NewTicker(l.opts.HeartbeatInterval)
	defer tick.Stop()
	for {
		now := l.opts.Clock.Now()
		seen, readErr := reg.Liveness(ctx)
		if readErr != nil {
			if ctx.Err() == nil {
				logger.Error(readErr, "reading the clusters' heartbeats; keeping the last known liveness")
			}
		} else {
			own, ok := seen[id.ClusterID]
			l.judgeClusterID(ctx, reg, id, own, ok, now)
		}
		// Only the leader renews the heartbeat; a standby judges liveness
		// from its view all the same (read-only), so that it takes over
		// with the liveness the leader had. A member whose cluster ID
		// another member holds writes nothing.
		var beatErr error
		if l.elected() && l.clusterIDConflict() == nil {
			beatErr = reg.Heartbeat(ctx)
			if beatErr != nil && ctx.Err() == nil {
				logger.Error(beatErr, "renewing this cluster's heartbeat")
			}
			if beatErr == nil {
				l.lastBeat = now
			}
		}
		l.noteReachable(ctx, reg, readErr == nil && beatErr == nil)
		// A cluster that cannot reach the registry sees every heartbeat go
		// stale at once; that says nothing about the others, so liveness is
		// only judged while this cluster's own heartbeat gets through (R2).
		if l.opts.GracePeriod > 0 && beatErr == nil && readErr == nil {
			renewed := make(map[string]time.Time, len(seen))
			for c, hb := range seen {
				renewed[c] = hb.RenewTime
			}
			l.updateLiveness(ctx, reg, id, renewed, now)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// noteReachable records whether this heartbeat round reached the registry.
// When it does again after a round that did not, every service of the view
// is queued for its controllers: a reconcile that failed during the outage
// waits in its backoff (up to MaxRetryDelay) otherwise, so an export would
// stay Failed, or a withdrawal pending, for up to that long after the
// registry came back. Exports without a record yet keep their backoff.
func (l *Link) noteReachable(ctx context.Context, reg registry.Registry, reachable bool) {
	was := !l.unreachable
	l.unreachable = !reachable
	if !reachable || was {
		return
	}
	keys, err := reg.Keys()
	if err != nil {
		log.FromContext(ctx).Error(err, "listing services to retry now that the registry answers again")
		return
	}
	log.FromContext(ctx).Info("the registry answers again; retrying every service now", "services", len(keys))
	for _, k := range keys {
		l.notify(k)
	}
}

// elected reports whether this replica writes: it is the leader, or there is
// no leader election.
func (l *Link) elected() bool {
	if l.opts.Elected == nil {
		return true
	}
	select {
	case <-l.opts.Elected:
		return true
	default:
		return false
	}
}

// observation is what this cluster knows of another's heartbeat.
type observation struct {
	renew time.Time // as written, by the other cluster's clock
	at    time.Time // when this cluster saw renew change, by its own clock
}

// updateLiveness marks clusters dead or alive and, when that changes, asks
// every controller to look at all services again.
//
// Another cluster is judged by when this cluster saw its heartbeat change,
// on this cluster's clock, never by comparing the renew time it wrote with
// this cluster's clock: a member whose clock is minutes off is alive as long
// as its heartbeat moves (as the node lifecycle controller judges node
// leases). A heartbeat seen for the first time is taken at its word when it
// looks fresh on this cluster's clock. When it does not, but is within the
// grace period of the newest heartbeat of another cluster (neither this one
// nor the one judged), this cluster's own clock may be ahead (or those
// members died together): it counts as alive for two heartbeat intervals
// (at most the grace period), within which a live member renews. Otherwise it
// is judged already past the grace period (a member that died while this
// one was down is dead at once; a live one whose clock is behind comes back
// at its next renewal).
func (l *Link) updateLiveness(ctx context.Context, reg registry.Registry, id identity.Identity, seen map[string]time.Time, now time.Time) {
	if l.viewStale(seen[id.ClusterID]) {
		// The view does not even show this cluster's own recent heartbeat:
		// it is behind, so it cannot tell who is gone.
		log.FromContext(ctx).Info("registry view is stale; keeping the last known liveness", "ownHeartbeat", seen[id.ClusterID], "lastWritten", l.lastBeat)
		return
	}
	// Only clusters that send heartbeats are judged. A cluster with records
	// but no heartbeat at all, such as one run by the AWS Cloud Map MCS
	// controller sharing the registry, counts for as long as its records exist.
	dead := map[string]bool{}
	heartbeatAge.Reset()
	// The two newest heartbeats of other clusters, by their writers'
	// clocks: a heartbeat seen for the first time is compared with the
	// newest one other than itself, so that another member vouches for it.
	var newest, second struct {
		cluster string
		renew   time.Time
	}
	for cluster, renew := range seen {
		switch {
		case cluster == id.ClusterID:
		case renew.After(newest.renew):
			second, newest.cluster, newest.renew = newest, cluster, renew
		case renew.After(second.renew):
			second.cluster, second.renew = cluster, renew
		}
	}
	for cluster, renew := range seen {
		if cluster == id.ClusterID {
			heartbeatAge.WithLabelValues(cluster).Set(max(now.Sub(renew), 0).Seconds())
			continue
		}
		o, known := l.seen[cluster]
		switch {
		case known && o.renew.Equal(renew):
			// Not renewed since: its age grows on this cluster's clock.
		case known || now.Sub(renew) <= l.opts.GracePeriod:
			o = observation{renew: renew, at: now}
		case !newest.renew.IsZero() && newest.cluster != cluster && newest.renew.Sub(renew) <= l.opts.GracePeriod,
			!second.renew.IsZero() && newest.cluster == cluster && renew.Sub(second.renew) <= l.opts.GracePeriod:
			o = observation{renew: renew, at: now.Add(-max(l.opts.GracePeriod-2*l.opts.HeartbeatInterval, 0))}
		default:
			o = observation{renew: renew, at: now.Add(-l.opts.GracePeriod - time.Nanosecond)}
		}
		l.seen[cluster] = o
		if now.Sub(o.at) > l.opts.GracePeriod {
			dead[cluster] = true
		}
		heartbeatAge.WithLabelValues(cluster).Set(now.Sub(o.at).Seconds())
	}
	for cluster := range l.seen {
		if _, ok := seen[cluster]; !ok {
			delete(l.seen, cluster) // its heartbeat is gone: not judged
		}
	}
	members.WithLabelValues("alive").Set(float64(len(seen) - len(dead)))
	members.WithLabelValues("stale").Set(float64(len(dead)))
	l.mu.Lock()
	changed := !maps.Equal(l.dead, dead)
	l.dead = dead
	l.mu.Unlock()
	if !changed {
		return
	}
	log.FromContext(ctx).Info("cluster liveness changed", "deadClusters", slices.Sorted(maps.Keys(dead)))
	keys, err := reg.Keys()
	if err != nil {
		log.FromContext(ctx).Error(err, "listing services to re-evaluate after a liveness change")
		return
	}
	for _, k := range keys {
		l.notify(k)
	}
}

// notify queues key for every subscriber without blocking the backend.
func (l *Link) notify(key registry.ServiceKey) {
	for _, s := range l.snapshotSubs() {
		s.add(key)
	}
}

func (l *Link) snapshotSubs() []*subscriber {
	l.subsMu.Lock()
	defer l.subsMu.Unlock()
	return append([]*subscriber(nil), l.subs...)
}

// subscriber de-duplicates keys that arrive faster than its controller takes
// them, so a burst of changes to one service costs one reconcile.
type subscriber struct {
	mu      sync.Mutex
	pending map[registry.ServiceKey]struct{}
	wake    chan struct{}
	out     chan event.GenericEvent
}

func (s *subscriber) add(key registry.ServiceKey) {
	s.mu.Lock()
	s.pending[key] = struct{}{}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) pump(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.mu.Lock()
		keys := slices.Collect(maps.Keys(s.pending))
		clear(s.pending)
		s.mu.Unlock()
		for _, k := range keys {
			obj := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: k.Name}}
			select {
			case <-ctx.Done():
				return
			case s.out <- event.GenericEvent{Object: obj}:
			}
		}
	}
}

// foreignHolder is another member's heartbeat of this cluster ID, as this
// member observed it (see observation).
type foreignHolder struct {
	holder string
	observation
}

// takeoverAfter is how long another holder's heartbeat of this cluster ID
// must stay unrenewed before this member takes the ID over.
func (l *Link) takeoverAfter() time.Duration {
	if l.opts.GracePeriod > 0 {
		return l.opts.GracePeriod
	}
	return DefaultGracePeriod
}

// viewStale reports whether the registry view is behind: it does not show
// the heartbeat this member last wrote (both times on this member's clock).
// Before this member's first heartbeat there is nothing to compare with.
func (l *Link) viewStale(ownRenew time.Time) bool {
	return !l.lastBeat.IsZero() && l.lastBeat.Sub(ownRenew) > l.opts.GracePeriod
}

// viewLive reports whether the view is seen to move: some other cluster's
// heartbeat was seen renewed within takeoverAfter. A view that stopped (the
// hub's watch broken, the registry down) shows every heartbeat frozen, the
// other holder's included, which must not pass for that holder being gone.
func (l *Link) viewLive(now time.Time) bool {
	for _, o := range l.seen {
		if now.Sub(o.at) <= l.takeoverAfter() {
			return true
		}
	}
	return false
}

// judgeClusterID decides whether another member holds this cluster ID: the
// heartbeat of the ID names another holder (the UID of another cluster's
// kube-system namespace). While it does, Registry returns an error that says
// so, and this member writes nothing (no heartbeat, record or withdrawal), so
// that neither member overwrites the other's records.
//
// The other holder keeps the ID for as long as this member sees its
// heartbeat renewed, on this member's clock (first sight counts as renewed
// now: the other's clock may be off). This member takes the ID over only once
// that heartbeat has not moved for takeoverAfter while the view is seen to
// move (viewLive); with no other member to show that, it never does, and
// someone must give one of the two clusters another ID. A heartbeat without a
// holder (older versions, or a hub whose CRD drops the field) or a member
// that does not know its own holder decides nothing.
func (l *Link) judgeClusterID(ctx context.Context, reg registry.Registry, id identity.Identity, own registry.Heartbeat, present bool, now time.Time) {
	var conflict error
	switch {
	case present && own.Holder != "" && id.UID != "" && own.Holder != id.UID:
		f := l.foreign
		switch {
		case f != nil && f.holder == own.Holder && f.renew.Equal(own.RenewTime):
			// Not renewed since last seen.
		default:
			f = &foreignHolder{holder: own.Holder, observation: observation{renew: own.RenewTime, at: now}}
		}
		l.foreign = f
		silent := now.Sub(f.at)
		if silent <= l.takeoverAfter() || !l.viewLive(now) {
			conflict = fmt.Errorf("%w: cluster ID %q is in use by another cluster (heartbeat holder %s; this cluster is %s), "+
				"whose heartbeat this cluster saw renewed %s ago: this cluster writes nothing to the registry until that one has been silent for %s. "+
				"Give one of them another cluster ID (ClusterProperty %s)",
				ErrNotReady, id.ClusterID, own.Holder, id.UID, silent.Round(time.Second), l.takeoverAfter(), identity.ClusterIDProperty)
		}
	default:
		l.foreign = nil
		if present && own.Holder == "" && id.UID != "" && !l.lastBeat.IsZero() && !own.RenewTime.Before(l.lastBeat.Add(-time.Second)) && !l.noHolderLogged {
			l.noHolderLogged = true
			log.FromContext(ctx).Info("the registry drops the holder of this cluster's heartbeat (a hub whose CRD predates it?): " +
				"another cluster given this cluster ID would not be detected. Run `kubectl clusterset join` again to update the hub's CRD")
		}
	}
	l.mu.Lock()
	was := l.conflict
	l.conflict = conflict
	l.mu.Unlock()
	blocked, wasBlocked := conflict != nil, was != nil && was != errIDUnchecked
	switch {
	case blocked && !wasBlocked:
		clusterIDConflict.Set(1)
		log.FromContext(ctx).Error(conflict, "another cluster uses this cluster ID")
	case !blocked && wasBlocked:
		clusterIDConflict.Set(0)
		log.FromContext(ctx).Info("this cluster holds its cluster ID again", "formerHolder", own.Holder)
	}
	if blocked != wasBlocked || was == errIDUnchecked {
		// Exports learn at once that they are held back, or that what was
		// held back can be written now.
		if keys, err := reg.Keys(); err == nil {
			for _, k := range keys {
				l.notify(k)
			}
		}
	}
}

// clusterIDConflict returns the error of judgeClusterID, nil when this
// member holds its cluster ID.
func (l *Link) clusterIDConflict() error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.conflict
}
