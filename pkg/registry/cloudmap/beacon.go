package cloudmap

import (
	"context"
	"strconv"
	"sync"
	"time"
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
// of the beacons tells which namespaces changed, and only their services are
// checked. Writers that bump no beacon (the AWS Cloud Map MCS controller)
// are seen by the sweep of every service every Options.ForeignSweepPeriod.
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
}

// changed records that this cluster has just written instances in namespace
// and re-registers its beacon there. A failed beacon write is logged and
// retried at the next poll, Publish, Withdraw or Heartbeat; the write it
// announces stands, and other clusters see it at their sweep meanwhile.
func (r *Registry) changed(ctx context.Context, namespace string) {
	r.mu.Lock()
	b := r.beacons[namespace]
	if b == nil {
		b = &beaconState{}
		r.beacons[namespace] = b
	}
	b.want++
	target := b.want
	r.mu.Unlock()
	if err := r.flushBeacon(ctx, namespace, b, target); err != nil {
		r.log.Error(err, "writing the change beacon failed; will retry", "namespace", namespace)
	}
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

// flushBeacon makes sure a beacon write that started after change number
// target of namespace has succeeded. Concurrent callers share one write: a
// write covers every change counted before it started.
func (r *Registry) flushBeacon(ctx context.Context, namespace string, b *beaconState, target uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	r.mu.Lock()
	done, cur := b.done, b.want
	r.mu.Unlock()
	if done >= target {
		return nil
	}
	gen := time.Now().UnixMicro()
	if gen <= b.gen {
		gen = b.gen + 1
	}
	err := r.registerSystem(ctx, changesService, instance{
		ID: beaconID(r.opts.ClusterSetID, r.opts.ClusterID, namespace),
		Attrs: map[string]string{
			attrClusterSetID:     r.opts.ClusterSetID,
			attrClusterID:        r.opts.ClusterID,
			attrController:       controllerName,
			attrRecordKind:       kindChange,
			attrChangeNamespace:  namespace,
			attrChangeGeneration: strconv.FormatInt(gen, 10),
		},
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	b.gen = gen
	if cur > b.done {
		b.done = cur
	}
	r.mu.Unlock()
	return nil
}

// checkBeacons reads the beacon service's revision and, when it moved, the
// beacons of the clusterset: the namespaces whose beacon changed, other than
// by a write of this process, are queued for a refresh (ps.pendingNS) and kept hot for
// RepairDelay, since the beacon may become visible before the writes it
// announces (asynchronous operations, eventually consistent reads).
func (r *Registry) checkBeacons(ctx context.Context, now time.Time) error {
	ps := &r.ps
	rev, err := r.api.revision(ctx, r.opts.SystemNamespace, changesService)
	if isCode(err, "NamespaceNotFound", "ServiceNotFound") {
		rev, err = -1, nil // no beacon written yet
	}
	if err != nil {
		return err
	}
	if ps.beaconKnown && rev == ps.beaconRev {
		return nil
	}
	var insts []instance
	if rev != -1 {
		insts, _, err = r.api.discover(ctx, r.opts.SystemNamespace, changesService, r.opts.ClusterSetID)
		if isCode(err, "NamespaceNotFound", "ServiceNotFound") {
			err = nil
		}
		if err != nil {
			return err
		}
	}
	insts, _ = dedupe(insts) // moto: the last copy is the newest
	for _, in := range insts {
		a := in.Attrs
		ns := a[attrChangeNamespace]
		if a[attrRecordKind] != kindChange || a[attrClusterSetID] != r.opts.ClusterSetID ||
			ns == "" || ns == r.opts.SystemNamespace {
			continue
		}
		gen := a[attrChangeGeneration]
		if seen, ok := ps.beaconGen[in.ID]; ok && seen == gen {
			continue
		}
		ps.beaconGen[in.ID] = gen
		if a[attrClusterID] == r.opts.ClusterID && r.wroteGeneration(ns, gen) {
			continue // this process's write: its services are read already
		}
		if ps.beaconKnown {
			ps.pendingNS[ns] = true
			ps.hot[ns] = now.Add(r.opts.RepairDelay)
		}
	}
	ps.beaconRev, ps.beaconKnown = rev, true
	return nil
}

// wroteGeneration reports whether gen is the last generation this process
// wrote to its beacon of namespace. Beacons of this cluster written by
// another process (a replica, the previous run) count as changes.
func (r *Registry) wroteGeneration(namespace, gen string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.beacons[namespace]
	return b != nil && b.gen != 0 && strconv.FormatInt(b.gen, 10) == gen
}
