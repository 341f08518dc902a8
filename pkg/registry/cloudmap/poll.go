package cloudmap

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/clusterset/clusterset/pkg/registry"
)

// Run polls Cloud Map every PollInterval (and right after this registry's
// own writes) until ctx ends. See docs/cloudmap.md for the call-rate model.
func (r *Registry) Run(ctx context.Context, onChange func(registry.ServiceKey)) error {
	t := time.NewTicker(r.opts.PollInterval)
	defer t.Stop()
	for {
		if err := r.poll(ctx, onChange); err != nil && ctx.Err() == nil {
			viewErrorsTotal.Inc()
			r.log.Error(err, "Cloud Map poll failed; keeping the last records read")
		}
		if r.writing.Load() {
			r.maybeAnnounceRestart(ctx)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-r.poke:
		}
	}
}

type target struct {
	key registry.ServiceKey
	id  string
}

// pollState is what the poll loop keeps between polls.
type pollState struct {
	beaconKnown bool
	beaconRev   int64
	beaconGen   map[string]beaconSeen // beacon InstanceId -> writer and generation seen
	// beaconRecheck reads the beacons at the next poll even if the
	// revision did not move.
	beaconRecheck bool
	pendingNS     map[string]bool          // namespaces to list and queue a check of every service of (a beacon moved)
	hot           map[string]*hotNamespace // namespaces checked again, less and less often
	announced     map[registry.ServiceKey]*announcement
	listNS        map[string]bool              // namespaces to list: for new services' IDs, or a read found the namespace unknown (gone or too new)
	ownNS         map[string]bool              // namespaces of this cluster's beacons written by another process
	retry         map[registry.ServiceKey]bool // services whose check failed -> read in full
	unknownNS     map[string]time.Time         // namespaces a read found unknown (NamespaceNotFound) -> since when
	scan          scanQueue                    // services to check when the poll has time
	lastSweep     time.Time                    // last sweep of every service
	lastFull      time.Time                    // last sweep that read every service in full
	lastForeign   time.Time                    // last foreignCheck
	polls         int64                        // counters for tests
	sweeps        int64
	foreign       int64
	// beaconGaps counts the reads of the beacons that showed no new beacon
	// write, or missed a beacon they knew (a counter for tests): the
	// revision moved for a write not visible yet, or moto's replacement of
	// a beacon (a deregistration, then a registration, each moving the
	// revision) was read half done.
	beaconGaps int64
}

func (ps *pollState) init() {
	ps.beaconGen = map[string]beaconSeen{}
	ps.pendingNS = map[string]bool{}
	ps.hot = map[string]*hotNamespace{}
	ps.announced = map[registry.ServiceKey]*announcement{}
	ps.listNS = map[string]bool{}
	ps.ownNS = map[string]bool{}
	ps.retry = map[registry.ServiceKey]bool{}
	ps.unknownNS = map[string]time.Time{}
}

// hotNamespace is a namespace whose beacon moved without saying which
// services changed: every service is queued for a check at once, and again
// after 1, 2, 4, … PollIntervals until RepairDelay has passed, since the
// beacon may become visible before the writes it announces. A check still
// under way when the next is due delays it until it has ended.
type hotNamespace struct {
	until, next time.Time
	every       time.Duration
}

// heat queues ns for a check of every service now and keeps it hot.
func (ps *pollState) heat(ns string, now, until time.Time, poll time.Duration) {
	ps.pendingNS[ns] = true
	ps.hot[ns] = &hotNamespace{until: until, next: now.Add(poll), every: 2 * poll}
}

// announcement is a change of a service that change beacons announced: the
// digest each writer announced, until when to wait for it, and whether the
// service was read in full since.
type announcement struct {
	want  map[string]string // CLUSTER_ID -> digest
	until time.Time
	read  bool
}

// addAnnounced returns the announced services, and marks in force those
// not read in full since their announcement.
func (ps *pollState) addAnnounced(force map[registry.ServiceKey]bool) map[registry.ServiceKey]bool {
	keys := make(map[registry.ServiceKey]bool, len(ps.announced))
	for k, a := range ps.announced {
		keys[k] = true
		force[k] = force[k] || !a.read
	}
	return keys
}

// announce records that cluster's beacon announced a change of key with
// digest. The service is read at the next poll, and checked at every poll
// after until it shows digest or until passes.
func (ps *pollState) announce(key registry.ServiceKey, cluster, digest string, until time.Time) {
	a := ps.announced[key]
	if a == nil {
		a = &announcement{want: map[string]string{}}
		ps.announced[key] = a
	}
	a.want[cluster] = digest
	a.until = until
	a.read = false
}

// poll refreshes the view. See docs/cloudmap.md for the call-rate model.
//
//   - Always: one DiscoverInstancesRevision of the change beacons, and when
//     it moved one DiscoverInstances of them (checkBeacons).
//   - Every ForeignSweepPeriod, and every FullResyncPeriod with full reads: a
//     sweep of every service of the account (sweep).
//   - In a mixed clusterset, every ForeignPollInterval: a check of the
//     namespaces holding another controller's records and of new services
//     (foreignCheck).
//   - Otherwise only the services this cluster wrote and those of the
//     namespaces whose beacon moved (refreshChanged).
//
// Once the view has synced, the sweep and a namespace whose beacon named
// no service read at once only what this cluster wrote and what the beacons
// announced, and the foreign check reads nothing itself; they queue the
// rest, which every poll checks for what is left of its PollInterval
// (scanQueue, finishPoll). The first sweep reads every service at once.
func (r *Registry) poll(ctx context.Context, onChange func(registry.ServiceKey)) error {
	r.pollMu.Lock()
	defer r.pollMu.Unlock()
	defer func() { scanQueuedServices.Set(float64(r.ps.scan.len())) }()
	ps := &r.ps
	ps.polls++
	r.flushBeacons(ctx) // this cluster's beacons whose write failed
	now := time.Now()
	r.forgetWithdrawn(now)
	if err := r.checkBeacons(ctx, now); err != nil {
		return err
	}
	busy := ps.scan.namespaces()
	for ns, h := range ps.hot {
		if busy[ns] {
			// Its last check is still under way: the next waits for it to
			// end rather than list the namespace again and queue what the
			// check did already (a check of thousands of services takes
			// longer than the first intervals).
			continue
		}
		switch {
		case !now.Before(h.until):
			// One last check: a write may have landed since the last one.
			delete(ps.hot, ns)
			ps.pendingNS[ns] = true
		case !now.Add(r.opts.PollInterval / 2).Before(h.next): // polls drift by a round trip
			ps.pendingNS[ns] = true
			h.next = now.Add(h.every)
			h.every *= 2
		}
	}
	for k, a := range ps.announced {
		if !now.Before(a.until) {
			// Never showed the announced digest: one last read, then the
			// full resync is what is left.
			delete(ps.announced, k)
			ps.retry[k] = true
		}
	}
	r.view.mu.RLock()
	synced := r.view.synced
	r.view.mu.RUnlock()
	full := !synced || now.Sub(ps.lastFull) >= r.opts.FullResyncPeriod
	if full || r.opts.ForeignSweepPeriod > 0 && now.Sub(ps.lastSweep) >= r.opts.ForeignSweepPeriod {
		ps.sweeps++
		ps.lastForeign = now
		checked, err := r.sweep(ctx, onChange, now, full)
		return r.finishPoll(ctx, onChange, now, checked, err)
	}
	var foreignErr error
	// Polls come every PollInterval give or take a round trip; half a poll
	// of tolerance keeps an interval equal to PollInterval from skipping
	// every other poll.
	if mixed := r.view.mixedNamespaces(); len(mixed) > 0 && r.opts.ForeignPollInterval > 0 &&
		now.Sub(ps.lastForeign) >= r.opts.ForeignPollInterval-r.opts.PollInterval/2 {
		ps.foreign++
		foreignErr = r.foreignCheck(ctx, onChange, now, mixed)
	}
	checked, err := r.refreshChanged(ctx, onChange)
	return r.finishPoll(ctx, onChange, now, checked, errors.Join(foreignErr, err))
}

// finishPoll checks queued services for the rest of the poll (advanceScan),
// then settles the announcements (settleAnnounced) of the services read in
// this poll: checked, the services the poll read before, and those
// advanceScan checked.
func (r *Registry) finishPoll(ctx context.Context, onChange func(registry.ServiceKey), pollStart time.Time, checked map[registry.ServiceKey]bool, err error) error {
	scanned, scanErr := r.advanceScan(ctx, onChange, pollStart)
	for k := range scanned {
		checked[k] = true
	}
	r.settleAnnounced(checked)
	return errors.Join(err, scanErr)
}

// takeDirty returns the services this cluster wrote (view.dirty) and those
// whose last check failed (ps.retry), true for those to read in full, and
// clears both.
func (r *Registry) takeDirty() map[registry.ServiceKey]bool {
	r.view.mu.Lock()
	dirty := r.view.dirty
	r.view.dirty = map[registry.ServiceKey]bool{}
	r.view.mu.Unlock()
	for k, force := range r.ps.retry {
		dirty[k] = dirty[k] || force
	}
	r.ps.retry = map[registry.ServiceKey]bool{}
	return dirty
}

// refreshChanged reads the services this cluster wrote (or whose last check
// failed) and the services change beacons announced, and queues a check of
// every service of the namespaces whose beacon moved without saying which
// services changed (scanQueue), and of those a listing found new to the
// view. It returns the services it read (whether or not the read failed:
// a failure is in ps.retry) and the announced ones a listing showed gone.
func (r *Registry) refreshChanged(ctx context.Context, onChange func(registry.ServiceKey)) (map[registry.ServiceKey]bool, error) {
	ps := &r.ps
	force := r.takeDirty()
	// An announced service is read in full once (the beacon says it
	// changed: a revision check first would be one more call), then
	// revision-checked until it shows what was announced.
	check := ps.addAnnounced(force)
	for k := range force {
		check[k] = true
	}

	// Single services first, by name (DiscoverInstances and its revision
	// take names); one that is gone is dropped (refreshAll). Services new
	// to the view (exports) are read by name too, or through a listing of
	// their namespace where that is cheaper (listingPays). A service of a
	// namespace whose check is queued is read now all the same: the check
	// may take many polls.
	var now []target
	fresh := map[string][]registry.ServiceKey{}
	for k := range check {
		id := r.serviceID(k)
		switch known := id != "" || r.view.has(k); {
		case ps.listNS[k.Namespace], !known && ps.pendingNS[k.Namespace]:
			// The listing below finds it (or finds the namespace gone).
		case known:
			now = append(now, target{key: k, id: id})
		default:
			fresh[k.Namespace] = append(fresh[k.Namespace], k)
		}
	}
	for ns, keys := range fresh {
		known, withoutID := r.view.countIn(ns)
		if listingPays(len(keys), withoutID, known) {
			ps.listNS[ns] = true
			continue
		}
		for _, k := range keys {
			now = append(now, target{key: k}) // ID learned at the next sweep
		}
	}
	read, _, firstErr := r.readQueued(ctx, onChange, now, force)

	// Then the namespaces to list: their services are queued, and those
	// this poll waits for are read at once.
	nss := map[string]bool{}
	for ns := range ps.pendingNS {
		nss[ns] = true
	}
	for ns := range ps.listNS {
		nss[ns] = true
	}
	var waited []target
	for _, ns := range slices.Sorted(maps.Keys(nss)) {
		// The whole namespace but what this poll read: a read that failed
		// stays in ps.retry, read again at the next poll rather than behind
		// the namespace's check.
		only := func(k registry.ServiceKey) bool { return !read[k] }
		if !ps.pendingNS[ns] {
			// Listed for the IDs of new services, or because a read found
			// the namespace unknown (gone or too new): the services
			// waiting for it and those new to the view.
			only = func(k registry.ServiceKey) bool { return !read[k] && (check[k] || !r.view.has(k)) }
		}
		listed, err := r.refreshNamespace(ctx, onChange, ns, force, only)
		for k := range check {
			switch {
			case k.Namespace != ns || read[k]:
			case listed == nil:
				// The services waiting for this listing wait for the next one.
				ps.retry[k] = ps.retry[k] || force[k]
			case listed[k] != "":
				waited = append(waited, target{key: k, id: listed[k]})
			default:
				read[k] = true // gone: the listing dropped it
			}
		}
		if listed != nil {
			delete(ps.pendingNS, ns)
			delete(ps.listNS, ns)
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	more, _, err := r.readQueued(ctx, onChange, waited, force)
	for k := range more {
		read[k] = true
	}
	if err != nil && firstErr == nil {
		firstErr = err
	}
	return read, firstErr
}

// settleAnnounced marks the announced services among checked as read
// unless their check failed, and forgets the announcements the view now
// shows.
func (r *Registry) settleAnnounced(checked map[registry.ServiceKey]bool) {
	ps := &r.ps
	r.view.mu.RLock()
	defer r.view.mu.RUnlock()
	for k, a := range ps.announced {
		if !checked[k] || ps.retry[k] || ps.scan.has(k) {
			continue
		}
		a.read = true
		st := r.view.services[k]
		for cluster, d := range a.want {
			if d != unknownDigest && st.digest(cluster) == d {
				delete(a.want, cluster)
			}
		}
		if len(a.want) == 0 {
			delete(ps.announced, k)
		}
	}
}

// refreshNamespace lists the services of one namespace, drops those it no
// longer holds from the view, and queues a check of those for which only
// is true (in full for those of force, or whose check failed before). It
// returns the services listed, with their IDs, nil when the listing failed.
func (r *Registry) refreshNamespace(ctx context.Context, onChange func(registry.ServiceKey), name string, force map[registry.ServiceKey]bool, only func(registry.ServiceKey) bool) (map[registry.ServiceKey]string, error) {
	var order []target
	start := time.Now()
	ns, ok, err := r.namespace(ctx, name, false)
	if err != nil {
		return nil, err
	}
	if ok {
		order, err = r.listTargets(ctx, ns.ID, map[string]string{ns.ID: name})
		if err != nil {
			return nil, err
		}
	}
	if !ok {
		delete(r.ps.unknownNS, name) // gone, not unknown
	}
	listed := map[registry.ServiceKey]string{}
	for _, tg := range order {
		listed[tg.key] = tg.id
	}
	r.dropGone(onChange, start, func(k registry.ServiceKey) bool { _, ok := listed[k]; return k.Namespace == name && !ok })
	// A failed check is settled here: the service is gone, or queued.
	for _, tg := range order {
		if only(tg.key) {
			r.ps.scan.add(tg, force[tg.key] || r.ps.retry[tg.key])
			delete(r.ps.retry, tg.key)
		}
	}
	for k := range r.ps.retry {
		if _, ok := listed[k]; k.Namespace == name && !ok {
			delete(r.ps.retry, k)
		}
	}
	return listed, nil
}

// listingPays reports whether a reader should list a namespace
// (ListServices, a page per servicesPerPage services) to find fresh
// services new to its view, rather than read them by name. Both read each
// service once; the listing costs its pages now, and reading by name costs
// one GetService per service at the next sweep, whose account-wide
// listing does not say a service's namespace (ServiceSummary has no
// NamespaceId). known is how many services of the namespace the view
// holds, withoutID how many of those were read by name before and still
// wait for their GetService: a listing learns their IDs too, so a
// namespace that receives exports one or a few at a time is listed once
// they add up to its pages. One export in a namespace of up to 99 services
// lists it (1 call, and no GetService later); in one of 5,000 services it
// reads by name (2 calls instead of 51) until 50 exports wait for their
// IDs; a burst of new services lists.
func listingPays(fresh, withoutID, known int) bool {
	pages := (known + fresh + servicesPerPage - 1) / servicesPerPage
	return fresh+withoutID >= pages
}

// serviceID returns the Cloud Map service ID of key as last seen, or "".
func (r *Registry) serviceID(key registry.ServiceKey) string {
	r.mu.Lock()
	if ns, ok := r.namespaces[key.Namespace]; ok {
		if s, ok := r.services[[2]string{ns.ID, key.Name}]; ok {
			r.mu.Unlock()
			return s.ID
		}
	}
	r.mu.Unlock()
	r.view.mu.RLock()
	defer r.view.mu.RUnlock()
	if s := r.view.services[key]; s != nil {
		return s.id
	}
	return ""
}

// dropGone removes the services for which gone is true from the view and
// from the scan queue (a listing or read that started at since no longer
// shows them: not listed, or a read by name answered ServiceNotFound).
// Callers hold pollMu. A record this process
// published there more than RepairDelay before since was lost with its
// service (someone deleted it): it is forgotten, so that the export
// controller's next Publish, which onChange brings, reads Cloud Map and
// writes it again instead of trusting what it wrote.
func (r *Registry) dropGone(onChange func(registry.ServiceKey), since time.Time, gone func(registry.ServiceKey) bool) {
	var removed []registry.ServiceKey
	r.view.mu.Lock()
	for key, s := range r.view.services {
		if gone(key) {
			delete(r.view.services, key)
			if len(s.records) > 0 {
				removed = append(removed, key)
			}
		}
	}
	r.view.mu.Unlock()
	for k := range r.ps.scan.items {
		if gone(k) {
			r.ps.scan.take(k)
		}
	}
	r.mu.Lock()
	for k, p := range r.published {
		if gone(k) && since.Sub(p.at) >= r.opts.RepairDelay {
			delete(r.published, k)
			if !slices.Contains(removed, k) {
				removed = append(removed, k) // never shown by the view
			}
		}
	}
	r.mu.Unlock()
	for _, k := range removed {
		onChange(k)
	}
}

// writtenSince reports whether this process published key's record less
// than RepairDelay before t: a read that started at t may not show what it
// wrote yet (DiscoverInstances is eventually consistent), not even the
// service it created.
func (r *Registry) writtenSince(key registry.ServiceKey, t time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.published[key]
	return p != nil && t.Sub(p.at) < r.opts.RepairDelay
}

// refreshAll checks the services of order in parallel. A service whose check
// fails keeps its records and goes to ps.retry, read again at the next poll
// (advanceScan puts it back in the queue instead). One that is gone
// (ServiceNotFound: DiscoverInstances finds services by name, so no service
// of that name is left) is dropped from the view at once, an outcome, not a
// failure: a withdrawal that deleted the Cloud Map service costs no listing
// of its namespace. Not so a service this process published to less than
// RepairDelay before the check began: Cloud Map may not show a service it
// has just created yet, so it is read again at the next poll. A
// NamespaceNotFound sends the service to a listing of its namespace (this
// poll's, or the next one's), which looks the namespace up anew
// (ListNamespaces): it drops the services of a namespace gone and queues
// those of one too new for DiscoverInstances to know. It is a failure only
// once reads of that namespace have answered it for RepairDelay (a
// namespace listed that DiscoverInstances does not know is logged); a
// service this process published to within RepairDelay is read again
// instead.
func (r *Registry) refreshAll(ctx context.Context, onChange func(registry.ServiceKey), order []target, force func(registry.ServiceKey) bool) (int, error) {
	ps := &r.ps
	var mu sync.Mutex
	var failed int
	var firstErr error
	gone := map[registry.ServiceKey]bool{}
	start := time.Now()
	order = r.newFirst(order, force)
	_ = r.parallel(ctx, len(order), func(ctx context.Context, i int) error {
		tg := order[i]
		f := force(tg.key)
		ch, err := r.refreshService(ctx, tg, f)
		if ch && err == nil {
			// Told at once, not when the whole poll is done: a poll that
			// reads hundreds of changed services (a burst) would otherwise
			// hold back the imports of the first ones until the last is
			// read. onChange does not block (registrylink queues keys).
			onChange(tg.key)
		}
		// Against the batch's start, as dropGone below: a record written
		// in between is either read again or forgotten, never dropped from
		// the view while its published state stays.
		notYet := isCode(err, "ServiceNotFound", "NamespaceNotFound") && r.writtenSince(tg.key, start)
		mu.Lock()
		defer mu.Unlock()
		ns := tg.key.Namespace
		switch {
		case err == nil:
			delete(ps.unknownNS, ns)
		case notYet:
			ps.retry[tg.key] = true
		case isCode(err, "ServiceNotFound"):
			gone[tg.key] = true
		case isCode(err, "NamespaceNotFound") && start.Sub(firstSeen(ps.unknownNS, ns, start)) < r.opts.RepairDelay:
			// Created so recently that DiscoverInstances does not know it
			// yet, or deleted: the listing tells.
			r.forgetNamespace(ns) // the listing looks it up anew
			ps.listNS[ns] = true
			ps.retry[tg.key] = ps.retry[tg.key] || f
		default:
			if isCode(err, "NamespaceNotFound") {
				r.forgetNamespace(ns)
				ps.listNS[ns] = true
			}
			failed++
			if firstErr == nil {
				firstErr = err
			}
			ps.retry[tg.key] = ps.retry[tg.key] || f
		}
		return nil // other services still refresh
	})
	if len(gone) > 0 {
		r.dropGone(onChange, start, func(k registry.ServiceKey) bool { return gone[k] })
	}
	return failed, firstErr
}

// firstSeen returns m[key], first setting it to now when missing.
func firstSeen(m map[string]time.Time, key string, now time.Time) time.Time {
	t, ok := m[key]
	if !ok {
		m[key] = now
		t = now
	}
	return t
}

func corev1Protocol(s string) corev1.Protocol {
	if s == "" {
		return corev1.ProtocolTCP
	}
	return corev1.Protocol(s)
}
