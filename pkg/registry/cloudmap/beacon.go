package cloudmap

import (
	"context"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/clusterset/clusterset/pkg/registry"
)

// Change beacons.
//
// DiscoverInstancesRevision is per service, so checking every service costs
// one call per service and poll. Instead, after each of its writes in a
// Cloud Map namespace, a cluster re-registers its change beacon of that
// namespace: one instance per (clusterset, cluster, namespace) in
// Options.SystemNamespace/changes. Every write moves the revision of that
// one service, so an idle poll is one DiscoverInstancesRevision whatever the
// number of services and namespaces; when it moves, one DiscoverInstances
// of the beacons tells what changed. Writers that bump no beacon (the AWS
// Cloud Map MCS controller) are seen by the sweep of every service every
// Options.ForeignSweepPeriod.
//
// A beacon also names the services its writer changed lately, each with a
// digest of the instances the writer holds there after the change
// (CHANGE_SERVICES, continued in CHANGE_SERVICES_2 … when it is longer
// than one attribute value), and the generation after which that list is
// complete (CHANGE_SINCE for the first attribute alone, CHANGE_SINCE_ALL
// for all of them). A reader that saw that generation or a later one reads
// only the listed services, and keeps re-checking each (one
// DiscoverInstancesRevision per poll) only until it reads the announced
// digest or RepairDelay passes: the beacon may become visible before the
// writes it announces (asynchronous operations, eventually consistent
// reads). So one change costs a reader a few calls however many services
// its namespace holds. When the list cannot say (a reader that missed
// generations, a writer's first beacon since it started, more changes
// than its parts hold), the reader checks the whole namespace, as every
// reader did before the list existed.
//
// Beacons are per cluster, not per namespace only, so that writers never
// replace each other's instance (moto would pile up copies, and a reader
// can skip its own cluster's beacons); they are not per service, so that
// the beacon service stays far below the 1,000 instances quota (clusters ×
// namespaces of the clusterset).

const (
	kindChange = "change"
	// attrChangeNamespace is the Cloud Map namespace a change beacon is about.
	attrChangeNamespace = "CHANGE_NAMESPACE"
	// attrChangeGeneration changes on every write of the beacon: µs since
	// the epoch, strictly increasing per writer.
	attrChangeGeneration = "CHANGE_GENERATION"
	// attrChangeServices lists the services of the namespace the writer
	// changed lately, as "name:digest:generation" joined by commas, newest
	// first (digest: instanceDigest of the writer's instances there after
	// the change, or unknownDigest; generation: the beacon write that
	// announced it); a list longer than one value goes on in
	// CHANGE_SERVICES_2 … (changeList).
	attrChangeServices = "CHANGE_SERVICES"
	// attrChangeSince is the generation after which CHANGE_SERVICES names
	// every change of the writer in the namespace; empty when it cannot, or
	// restartSince.
	attrChangeSince = "CHANGE_SINCE"
	// restartSince, as CHANGE_SINCE, says that a new process of the writer
	// started: its previous one may have died between writing instances
	// and announcing them, so readers check every service of the namespace
	// (announceRestart). Readers of earlier versions cannot parse it and
	// check the namespace too, the way they check any list they cannot
	// trust.
	restartSince = "restart"
	// attrChangeWriter identifies the process that wrote the beacon (random
	// per process), so that a reader compares generations of one writer
	// only (two replicas, or a restarted process whose clock is behind,
	// write the same beacon) and skips every beacon of its own process.
	attrChangeWriter = "CHANGE_WRITER"
	// attrChangeSinceAll is the generation after which CHANGE_SERVICES and
	// its continuations CHANGE_SERVICES_2 … together name every change of
	// the writer in the namespace; set only when there are continuations.
	// Readers before the continuations read CHANGE_SERVICES and
	// CHANGE_SINCE alone, which stay what they were (changeList).
	attrChangeSinceAll = "CHANGE_SINCE_ALL"
	// maxChangeList bounds each part of the change list in bytes: Cloud Map
	// takes up to 1,024 characters per attribute value.
	maxChangeList = 1000
	// maxChangeParts bounds the parts (CHANGE_SERVICES and its
	// continuations) that a writer writes: 4 parts of 1,000 characters
	// leave room under Cloud Map's 5,000 per instance for the other
	// attributes at their longest (continuationBudget, which also bounds
	// them). About 100 entries in all. Readers read every part there is.
	maxChangeParts = 4
	// maxChangeHistory bounds the beacon writes a writer remembers.
	maxChangeHistory = 64
	// unknownDigest announces a change whose result the writer does not
	// know (a write that failed half-way): readers re-check the service
	// until RepairDelay passes.
	unknownDigest = "?"
)

// beaconID is the InstanceId of a cluster's change beacon of a namespace.
func beaconID(clusterSetID, clusterID, namespace string) string {
	return boundedID("chg-", clusterSetID+"/"+clusterID+"/"+namespace)
}

// beaconState is this cluster's change beacon of one namespace. want counts
// the changes made in the namespace, done the ones a successful beacon write
// covers; mu serialises the writes.
type beaconState struct {
	mu   sync.Mutex
	want uint64 // guarded by Registry.mu
	done uint64 // guarded by Registry.mu
	gen  int64  // last generation written: written under mu and Registry.mu
	// pending maps the services changed since the last successful beacon
	// write to their digests; history holds the successful writes, oldest
	// first. Both guarded by Registry.mu.
	pending map[string]string
	history []beaconWrite
	// restart makes the next write say CHANGE_SINCE=restartSince; guarded
	// by Registry.mu.
	restart bool
}

// beaconWrite is one successful beacon write: its generation and the
// services whose changes it announced first.
type beaconWrite struct {
	gen      int64
	services map[string]string // service name -> digest
}

// changed records that this cluster has just written instances of key's
// service (digest: instanceDigest of what it holds there now, or
// unknownDigest) and re-registers its beacon of key's namespace. A failed
// beacon write is logged and retried at the next poll, Publish, Withdraw or
// Heartbeat; the write it announces stands, and other clusters see it at
// their full resync meanwhile (a new service at their sweep).
func (r *Registry) changed(ctx context.Context, key registry.ServiceKey, digest string) {
	r.mu.Lock()
	b := r.beacons[key.Namespace]
	if b == nil {
		b = &beaconState{pending: map[string]string{}}
		r.beacons[key.Namespace] = b
	}
	b.want++
	b.pending[key.Name] = digest
	target := b.want
	r.mu.Unlock()
	if err := r.flushBeacon(ctx, key.Namespace, b, target); err != nil {
		r.log.Error(err, "writing the change beacon failed; will retry", "namespace", key.Namespace, "service", key.Name)
	}
}

// instanceDigest is a short digest of a set of instances (IDs and
// attributes), the same for the writer, which hashes what it registered,
// and for readers, which hash what DiscoverInstances returns.
func instanceDigest(insts map[string]instance) string {
	h := fnv.New32a()
	for _, id := range slices.Sorted(maps.Keys(insts)) {
		h.Write([]byte(id))
		h.Write([]byte{0})
		a := insts[id].Attrs
		for _, k := range slices.Sorted(maps.Keys(a)) {
			h.Write([]byte(k))
			h.Write([]byte{1})
			h.Write([]byte(a[k]))
			h.Write([]byte{2})
		}
		h.Write([]byte{3})
	}
	return fmt.Sprintf("%08x", h.Sum32())
}

// maybeAnnounceRestart runs announceRestart once per process, when the
// view has synced and this process has renewed the heartbeat: a standby
// replica writes nothing, and a replica that takes over from a leader that
// died announces at its first heartbeat.
func (r *Registry) maybeAnnounceRestart(ctx context.Context) {
	if r.HasSynced() && r.restartAnnounced.CompareAndSwap(false, true) {
		r.announceRestart(ctx)
	}
}

// announceRestart re-registers this cluster's beacon of every namespace
// another process of this cluster may have written into (those holding one
// of its beacons or one of its instances, and still in the account) with
// CHANGE_SINCE=restartSince. A process that dies between writing instances
// and registering the beacon that announces them leaves writes no reader
// would see before its full resync; its successor (the restarted process,
// or the standby that takes over) cannot know which they were, so it has
// the readers check those namespaces in full once. It costs one beacon
// write per such namespace at each start or takeover, Options.Concurrency
// at a time; nothing at a first start, and nothing in a namespace where
// this process wrote a beacon already (its first one there had an empty
// CHANGE_SINCE, which makes readers check the namespace too). Failed
// writes are retried at the next poll like any beacon write.
func (r *Registry) announceRestart(ctx context.Context) {
	r.pollMu.Lock()
	nss := maps.Clone(r.ps.ownNS)
	r.pollMu.Unlock()
	r.view.mu.RLock()
	for k, s := range r.view.services {
		for _, c := range s.owners {
			if c == r.opts.ClusterID {
				nss[k.Namespace] = true
				break
			}
		}
	}
	r.view.mu.RUnlock()
	r.mu.Lock()
	for ns := range nss {
		b := r.beacons[ns]
		_, exists := r.namespaces[ns]
		if !exists || b != nil && b.want > 0 {
			// Deleted since (nothing to check), or this process has
			// announced changes there already, and its first beacon write
			// there left CHANGE_SINCE empty: readers checked the whole
			// namespace then.
			delete(nss, ns)
			continue
		}
		if b == nil {
			b = &beaconState{pending: map[string]string{}}
			r.beacons[ns] = b
		}
		b.restart = true
		b.want++
	}
	r.mu.Unlock()
	if len(nss) == 0 {
		return
	}
	names := slices.Sorted(maps.Keys(nss))
	r.log.Info("announcing this process's start in the change beacons: the other clusters check these namespaces once", "namespaces", names)
	_ = r.parallel(ctx, len(names), func(ctx context.Context, i int) error {
		r.mu.Lock()
		b := r.beacons[names[i]]
		target := b.want
		r.mu.Unlock()
		if err := r.flushBeacon(ctx, names[i], b, target); err != nil {
			r.log.Error(err, "writing the change beacon failed; will retry", "namespace", names[i])
		}
		return nil
	})
}

// flushBeacons writes every beacon with changes no write covers yet.
func (r *Registry) flushBeacons(ctx context.Context) {
	type due struct {
		ns     string
		b      *beaconState
		target uint64
	}
	var todo []due
	r.mu.Lock()
	for ns, b := range r.beacons {
		if b.want > b.done {
			todo = append(todo, due{ns, b, b.want})
		}
	}
	r.mu.Unlock()
	for _, d := range todo {
		if err := r.flushBeacon(ctx, d.ns, d.b, d.target); err != nil {
			r.log.Error(err, "writing the change beacon failed; will retry", "namespace", d.ns)
		}
	}
}

// beaconAttrs are the attributes of a change beacon but its change list
// (changeListing.addTo adds it).
func beaconAttrs(clusterSetID, clusterID, namespace, writer string, gen int64) map[string]string {
	return map[string]string{
		attrClusterSetID:     clusterSetID,
		attrClusterID:        clusterID,
		attrController:       controllerName,
		attrRecordKind:       kindChange,
		attrChangeNamespace:  namespace,
		attrChangeGeneration: strconv.FormatInt(gen, 10),
		attrChangeWriter:     writer,
	}
}

// flushBeacon makes sure a beacon write that started after change number
// target of namespace has succeeded. Concurrent callers share one write: a
// write covers every change counted before it started.
func (r *Registry) flushBeacon(ctx context.Context, namespace string, b *beaconState, target uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	r.mu.Lock()
	done, cur := b.done, b.want
	if done >= target {
		r.mu.Unlock()
		return nil
	}
	announced := maps.Clone(b.pending)
	gen := time.Now().UnixMicro()
	if gen <= b.gen {
		gen = b.gen + 1
	}
	attrs := beaconAttrs(r.opts.ClusterSetID, r.opts.ClusterID, namespace, r.writer, gen)
	listing := changeList(gen, announced, b.history, continuationBudget(attrs))
	restart := b.restart
	if restart {
		listing.since, listing.sinceAll = restartSince, ""
	}
	r.mu.Unlock()
	listing.addTo(attrs)
	err := r.registerSystem(ctx, changesService, instance{
		ID:    beaconID(r.opts.ClusterSetID, r.opts.ClusterID, namespace),
		Attrs: attrs,
	})
	if err != nil {
		// The write may have landed all the same: later generations of
		// this process must still be greater.
		r.mu.Lock()
		b.gen = max(b.gen, gen)
		r.mu.Unlock()
		return err
	}
	r.mu.Lock()
	b.gen = gen
	if cur > b.done {
		b.done = cur
	}
	if restart {
		b.restart = false
	}
	for name, d := range announced {
		if b.pending[name] == d {
			delete(b.pending, name) // unless changed again meanwhile
		}
	}
	b.history = append(b.history[len(b.history)-min(listing.keep, len(b.history)):], beaconWrite{gen: gen, services: announced})
	if len(b.history) > maxChangeHistory {
		b.history = b.history[len(b.history)-maxChangeHistory:]
	}
	r.mu.Unlock()
	return nil
}

// checkBeacons reads the beacon service's revision and, when it moved, the
// beacons of the clusterset. For each beacon that changed, other than by a
// write of this process, the services it lists are announced (read at this
// poll and checked until they show the announced digest, for at most
// RepairDelay); when its list does not cover every change since the
// generation this reader saw last of the same writer, its namespace is
// queued for a check of every service (ps.pendingNS) and kept hot for
// RepairDelay instead (ps.heat). At the first poll, which reads every
// service anyway, only the changes of the last RepairDelay are announced:
// their writes may not be visible yet.
func (r *Registry) checkBeacons(ctx context.Context, now time.Time) error {
	ps := &r.ps
	rev, err := r.api.revision(ctx, r.opts.SystemNamespace, changesService)
	if isCode(err, "NamespaceNotFound", "ServiceNotFound") {
		rev, err = -1, nil // no beacon written yet
	}
	if err != nil {
		return err
	}
	if ps.beaconKnown && rev == ps.beaconRev && !ps.beaconRecheck {
		return nil
	}
	var insts []instance
	if rev != -1 {
		insts, _, err = r.api.discover(ctx, r.opts.SystemNamespace, changesService, attrClusterSetID, r.opts.ClusterSetID)
		if isCode(err, "NamespaceNotFound", "ServiceNotFound") {
			err = nil
		}
		if err != nil {
			return err
		}
	}
	insts, _ = dedupe(insts) // moto: the last copy is the newest
	recent := now.Add(-r.opts.RepairDelay).UnixMicro()
	moved, gap := false, false
	present := map[string]bool{}
	for _, in := range insts {
		a := in.Attrs
		ns := a[attrChangeNamespace]
		if a[attrRecordKind] != kindChange || a[attrClusterSetID] != r.opts.ClusterSetID ||
			ns == "" || ns == r.opts.SystemNamespace {
			continue
		}
		present[in.ID] = true
		seen := beaconSeen{writer: a[attrChangeWriter], gen: a[attrChangeGeneration]}
		if a[attrClusterID] == r.opts.ClusterID && seen.writer != r.writer {
			ps.ownNS[ns] = true // a previous process of this cluster wrote there
		}
		prev, seenBefore := ps.beaconGen[in.ID]
		if seenBefore && prev == seen {
			continue
		}
		ps.beaconGen[in.ID] = seen
		moved = true
		if seen.writer != "" && seen.writer == r.writer {
			continue // this process's write: its services are read already
		}
		until := now.Add(r.opts.RepairDelay)
		if !ps.beaconKnown {
			if changes, ok := parseChangeList(changeEntries(a), recent); ok {
				for name, digest := range changes {
					ps.announce(registry.ServiceKey{Namespace: ns, Name: name}, a[attrClusterID], digest, until)
				}
			} else if g, err := strconv.ParseInt(seen.gen, 10, 64); err != nil || g > recent {
				ps.heat(ns, now, until, r.opts.PollInterval)
			}
			continue
		}
		if a[attrChangeSince] == restartSince {
			// A new process of that writer: what its previous one wrote
			// last may never have been announced. Those writes are older
			// than the new process, so one check of the namespace now and
			// one when RepairDelay has passed suffice; the changes the new
			// process made already are announced as usual.
			if changes, ok := parseChangeList(changeEntries(a), 0); ok {
				for name, digest := range changes {
					ps.announce(registry.ServiceKey{Namespace: ns, Name: name}, a[attrClusterID], digest, until)
				}
			}
			ps.pendingNS[ns] = true
			if ps.hot[ns] == nil {
				ps.hot[ns] = &hotNamespace{until: until, next: until.Add(r.opts.RepairDelay), every: r.opts.RepairDelay}
			}
			continue
		}
		if changes, ok := changesSince(a, prev.gen, seenBefore && prev.writer == seen.writer); ok {
			for name, digest := range changes {
				ps.announce(registry.ServiceKey{Namespace: ns, Name: name}, a[attrClusterID], digest, until)
			}
			continue
		}
		ps.heat(ns, now, until, r.opts.PollInterval)
	}
	for id := range ps.beaconGen {
		// Gone, or between moto's deregistration and registration: the
		// next registration moves the revision again.
		moved = moved || !present[id]
		gap = gap || !present[id]
	}
	if rev != -1 && (gap || !moved) {
		ps.beaconGaps++
	}
	// A revision that moved with no beacon seen to change: the read may
	// be older than the revision (eventually consistent), so read once
	// more at the next poll.
	ps.beaconRecheck = ps.beaconKnown && rev != ps.beaconRev && !moved && !ps.beaconRecheck
	ps.beaconRev, ps.beaconKnown = rev, true
	return nil
}

// beaconSeen is the writer and generation of a beacon as a reader saw it.
type beaconSeen struct{ writer, gen string }
