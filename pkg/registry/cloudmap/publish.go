package cloudmap

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	"golang.org/x/sync/errgroup"

	"github.com/clusterset/clusterset/pkg/registry"
)

// Publish makes rec this cluster's record of its service. It compares the
// record with what this cluster has registered and only registers the
// instances that are new or changed and deregisters the ones that are gone.
func (r *Registry) Publish(ctx context.Context, rec *registry.Record) error {
	rec, err := registry.Own(rec, r.opts.ClusterSetID, r.opts.ClusterID)
	if err != nil {
		return fmt.Errorf("cloudmap: %w", err)
	}
	if rec.Namespace == "" || rec.Name == "" {
		return errors.New("cloudmap: record without namespace or name")
	}
	if rec.Namespace == r.opts.SystemNamespace {
		return fmt.Errorf("cloudmap: namespace %s is reserved for heartbeats", rec.Namespace)
	}
	key := rec.Key()
	defer r.lockKey(key)()
	r.mu.Lock()
	delete(r.withdrawn, key)
	r.mu.Unlock()

	// Validate before any side effect: a bad record, or one past a quota,
	// creates nothing (no namespace, no service).
	desired, err := encodeRecord(rec, nil, nil)
	if err != nil {
		return err
	}
	if err := r.checkQuota(key, len(desired)); err != nil {
		return err
	}
	err = r.publish(ctx, rec)
	if isCode(err, "ServiceNotFound", "NamespaceNotFound") {
		// Another cluster deleted the service (or someone the namespace)
		// after its last instance went: the caches were dropped, go again.
		err = r.publish(ctx, rec)
	}
	return err
}

func (r *Registry) publish(ctx context.Context, rec *registry.Record) error {
	key := rec.Key()
	ns, _, err := r.namespace(ctx, rec.Namespace, true)
	if err != nil {
		return err
	}
	svc, _, err := r.service(ctx, ns, rec.Name, true)
	if err != nil {
		return err
	}

	r.mu.Lock()
	var cur map[string]heldInstance
	if p := r.published[key]; p != nil {
		cur = p.insts
	}
	r.mu.Unlock()
	if cur == nil && svc.Created {
		cur = map[string]heldInstance{} // created just now: nothing to read
	}
	if cur == nil {
		// First publish of this key since start (or after an error): read
		// what we hold from the control plane, which is consistent.
		insts, err := r.api.listInstances(ctx, svc.ID)
		if err != nil {
			if isCode(err, "ServiceNotFound") {
				r.forgetService(ns, rec.Name)
			}
			if isCode(err, "NamespaceNotFound") {
				r.forgetNamespace(ns.Name)
			}
			return err
		}
		insts, _ = dedupe(insts)
		mine := map[string]instance{}
		for _, in := range insts {
			if r.ours(in.Attrs) {
				mine[in.ID] = in
			}
		}
		cur = holdInstances(mine)
	}
	return r.apply(ctx, ns, svc, rec, cur, false)
}

// pubState is a record this cluster published and the instances it wrote
// for it.
type pubState struct {
	rec   registry.Record
	insts map[string]heldInstance
	at    time.Time
}

// heldInstance is what Publish keeps of an instance this cluster holds:
// enough to tell whether a new encoding of the record changes it (a digest
// of its attributes), to give the same endpoint port the same InstanceId
// again (portKey), and, for the marker only, its attributes (the record's
// change time is read from them). Keeping every instance's attributes
// instead cost 34.5 MiB of heap per member at 5,000 services of 10
// endpoints (BenchmarkScale's heap profile), a fifth of what it held.
type heldInstance struct {
	digest  uint64
	portKey string            // "" for the marker and an instance without a port
	attrs   map[string]string // the marker's attributes; nil for the others
}

// holdInstances is what Publish keeps of insts.
func holdInstances(insts map[string]instance) map[string]heldInstance {
	out := make(map[string]heldInstance, len(insts))
	for id, in := range insts {
		h := heldInstance{digest: attrsDigest(in.Attrs)}
		a := in.Attrs
		if a[attrRecordKind] == kindService {
			h.attrs = a
		} else if addr := cmp.Or(a[attrIPv4], a[attrIPv6]); addr != "" && a[attrPort] != "" {
			h.portKey = portKey(corev1Protocol(a[attrEPProtocol]), addr, atoi32(a[attrPort]))
		}
		out[id] = h
	}
	return out
}

// attrsDigest is a digest of attributes that does not depend on their
// order and allocates nothing: the sum of each attribute's 64-bit FNV-1a
// hash (key, a zero byte, value). It runs for every instance written and
// read, so hash.Hash, whose Write takes a []byte and whose use needs the
// keys sorted, would cost dozens of allocations per instance. It stays in
// this process; instanceDigest is the digest other clusters read (change
// beacons) and keeps its format.
func attrsDigest(a map[string]string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	var sum uint64
	for k, v := range a {
		h := uint64(offset)
		for i := 0; i < len(k); i++ {
			h = (h ^ uint64(k[i])) * prime
		}
		h *= prime // the zero byte between key and value
		for i := 0; i < len(v); i++ {
			h = (h ^ uint64(v[i])) * prime
		}
		sum += h
	}
	return sum
}

// apply writes the difference between the instances of rec and cur (what
// this cluster holds in the service).
//
// When repairing, cur comes from the eventually consistent view, so an
// instance missing from it may still exist: with MotoWorkarounds it is
// deregistered before being registered again, or moto would keep two copies.
func (r *Registry) apply(ctx context.Context, ns nsInfo, svc svcInfo, rec *registry.Record, cur map[string]heldInstance, repairing bool) error {
	key := rec.Key()
	log := r.log.WithValues("namespace", key.Namespace, "service", key.Name)
	held := map[string]string{}
	for id, in := range cur {
		if in.portKey != "" {
			held[in.portKey] = id
		}
	}
	others := r.view.otherInstances(key, r.opts.ClusterID)
	desired, err := encodeRecord(rec, held, others)
	if err != nil {
		return err
	}
	if err := r.checkQuota(key, len(desired)); err != nil {
		return err
	}

	// What will be kept of desired once written; its digests also tell
	// which instances differ from what is held.
	kept := holdInstances(desired)
	var reg []instance
	for id, in := range desired {
		if old, ok := cur[id]; !ok || old.digest != kept[id].digest {
			reg = append(reg, in)
		}
	}
	var dereg []string
	for id := range cur {
		if _, ok := desired[id]; !ok {
			dereg = append(dereg, id)
		}
	}
	mid := markerID(rec.ClusterSetID, rec.ClusterID)
	if len(reg) == 1 && len(dereg) == 0 && reg[0].ID == mid && onlyChangedTimeDiffers(cur[mid].attrs, reg[0].Attrs) {
		// Same content, newer Changed (a republish after a restart): the
		// record did not change, so neither does its time (registry.Record).
		// What is remembered as published keeps the held time too, so that
		// a later repair does not write a new one.
		desired[mid] = instance{ID: mid, Attrs: cur[mid].attrs}
		kept[mid] = cur[mid]
		reg = nil
		kept := *rec
		kept.Changed = recordChanged(cur[mid].attrs)
		rec = &kept
	}
	done := func() {
		r.mu.Lock()
		r.published[key] = &pubState{rec: *rec.DeepCopy(), insts: kept, at: time.Now()}
		r.mu.Unlock()
	}
	if len(reg) == 0 && len(dereg) == 0 {
		// Nothing written: the repair clock keeps running from the last
		// write, so that a record republished often is still repaired.
		r.mu.Lock()
		at := time.Now()
		if p := r.published[key]; p != nil {
			at = p.at
		}
		r.published[key] = &pubState{rec: *rec.DeepCopy(), insts: kept, at: at}
		r.mu.Unlock()
		return nil
	}

	fail := func(err error) error {
		r.mu.Lock()
		delete(r.published, key)
		r.mu.Unlock()
		r.view.markDirty(key)
		// Some writes may have gone through: tell the other clusters.
		r.changed(ctx, key, unknownDigest)
		r.wake()
		if isCode(err, "ResourceLimitExceeded") {
			// Cloud Map's message names the quota (service or namespace).
			return &QuotaError{Key: key, Err: err}
		}
		if isCode(err, "ServiceNotFound") {
			r.forgetService(ns, rec.Name)
		}
		return fmt.Errorf("cloudmap: publish %s: %w", key, err)
	}
	// Register first, then deregister, so that an endpoint that is only
	// renamed never disappears in between.
	markerDropped := false
	var dmu sync.Mutex
	err = r.parallel(ctx, len(reg), func(ctx context.Context, i int) error {
		var err error
		if _, exists := cur[reg[i].ID]; (exists || repairing) && r.opts.MotoWorkarounds {
			err = r.replaceOnMoto(ctx, svc.ID, reg[i], false)
		} else {
			err = r.register(ctx, svc.ID, reg[i])
		}
		if err != nil && reg[i].ID == mid && isCode(err, "InvalidInput") && len(desired) > 1 {
			// A service created by someone else with DNS records rejects an
			// instance without an IP. Readers then take the service-level
			// attributes from the endpoint instances, which carry them too.
			log.Info("Cloud Map rejected the service marker; relying on endpoint instances", "error", err.Error())
			dmu.Lock()
			markerDropped = true
			dmu.Unlock()
			return nil
		}
		return err
	})
	if err != nil {
		return fail(err)
	}
	err = r.parallel(ctx, len(dereg), func(ctx context.Context, i int) error {
		return r.deregister(ctx, svc.ID, dereg[i])
	})
	if err != nil {
		return fail(err)
	}
	if markerDropped {
		delete(desired, mid)
		delete(kept, mid)
	}
	done()
	log.V(1).Info("published", "registered", len(reg), "deregistered", len(dereg))
	r.view.markDirty(key)
	r.changed(ctx, key, instanceDigest(desired))
	r.wake()
	return nil
}

// repair re-applies a published record when the view shows that what this
// cluster holds in Cloud Map differs from what it wrote: an asynchronous
// operation that failed, an InstanceId taken over by another cluster's
// writer, or a stale copy left by moto. It waits RepairDelay after the last
// write, since DiscoverInstances is eventually consistent.
//
// readStart is when the read that produced mine started: only a read that
// started RepairDelay after the last write may be compared with it.
func (r *Registry) repair(ctx context.Context, key registry.ServiceKey, mine map[string]instance, readStart time.Time) {
	r.mu.Lock()
	p := r.published[key]
	r.mu.Unlock()
	if p == nil || readStart.Sub(p.at) < r.opts.RepairDelay || sameInstances(p.insts, mine) {
		return
	}
	defer r.lockKey(key)()
	r.mu.Lock()
	p2 := r.published[key]
	r.mu.Unlock()
	if p2 != p {
		return // published or withdrawn meanwhile
	}
	ns, ok, err := r.namespace(ctx, key.Namespace, false)
	if err != nil || !ok {
		return
	}
	svc, ok, err := r.service(ctx, ns, key.Name, false)
	if err != nil || !ok {
		return
	}
	r.log.Info("repairing this cluster's instances in Cloud Map", "namespace", key.Namespace, "service", key.Name,
		"held", len(mine), "published", len(p.insts))
	rec := p.rec
	if err := r.apply(ctx, ns, svc, &rec, holdInstances(mine), true); err != nil {
		r.log.Error(err, "repair failed", "namespace", key.Namespace, "service", key.Name)
	}
}

// sameInstances reports whether the instances read (b) are those kept as
// written (a), attributes included.
func sameInstances(a map[string]heldInstance, b map[string]instance) bool {
	if len(a) != len(b) {
		return false
	}
	for id, in := range a {
		o, ok := b[id]
		if !ok || in.digest != attrsDigest(o.Attrs) {
			return false
		}
	}
	return true
}

// checkQuota returns a *QuotaError when this cluster holding n instances in
// key's service would exceed Cloud Map's instance quota of the service or of
// its namespace, else nil. Every writer's instances count toward those
// quotas, other clustersets' and strangers' too, so it counts every
// instance the view saw.
func (r *Registry) checkQuota(key registry.ServiceKey, n int) error {
	othersInService := r.view.heldByOthers(key, r.opts.ClusterID)
	if want := n + othersInService; want > r.opts.MaxInstancesPerService {
		return &QuotaError{Key: key, Scope: "service", Want: want, Others: othersInService, Limit: r.opts.MaxInstancesPerService}
	}
	mineElsewhere, othersInNamespace := r.namespaceLoad(key)
	if want := n + mineElsewhere + othersInNamespace; want > r.opts.MaxInstancesPerNamespace {
		return &QuotaError{Key: key, Scope: "namespace", Want: want, Others: othersInNamespace, Limit: r.opts.MaxInstancesPerNamespace}
	}
	return nil
}

// namespaceLoad returns how many instances key's namespace holds besides
// this cluster's in key's own service: mine, this cluster's in its other
// services there (as it wrote them), and others, every other writer's the
// view saw (other clusters, other clustersets, anyone). A view that has not
// read a service since someone else wrote there counts less: Cloud Map's
// own error then reports the quota.
func (r *Registry) namespaceLoad(key registry.ServiceKey) (mine, others int) {
	r.mu.Lock()
	for k, p := range r.published {
		if k.Namespace == key.Namespace && k != key {
			mine += len(p.insts)
		}
	}
	r.mu.Unlock()
	return mine, r.view.heldByOthersInNamespace(key.Namespace, r.opts.ClusterID)
}

func (r *Registry) register(ctx context.Context, serviceID string, in instance) error {
	out, err := r.api.c.RegisterInstance(ctx, &sd.RegisterInstanceInput{
		ServiceId:        aws.String(serviceID),
		InstanceId:       aws.String(in.ID),
		Attributes:       in.Attrs,
		CreatorRequestId: aws.String(requestID("i", r.opts.ClusterID, in.ID)),
	})
	if err != nil {
		return err
	}
	if r.opts.WaitForOperations {
		_, err = r.api.waitOperation(ctx, aws.ToString(out.OperationId))
	}
	return err
}

func (r *Registry) deregister(ctx context.Context, serviceID, id string) error {
	out, err := r.api.c.DeregisterInstance(ctx, &sd.DeregisterInstanceInput{
		ServiceId:  aws.String(serviceID),
		InstanceId: aws.String(id),
	})
	if isCode(err, "InstanceNotFound") {
		return nil
	}
	if err != nil {
		return err
	}
	if r.opts.WaitForOperations {
		_, err = r.api.waitOperation(ctx, aws.ToString(out.OperationId))
	}
	return err
}

// parallel runs fn for 0..n-1 with at most Options.Concurrency at a time.
func (r *Registry) parallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	if n == 0 {
		return nil
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(r.opts.Concurrency)
	for i := 0; i < n; i++ {
		g.Go(func() error { return fn(ctx, i) })
	}
	return g.Wait()
}

// onlyChangedTimeDiffers reports whether two markers differ in
// RECORD_CHANGED only.
func onlyChangedTimeDiffers(a, b map[string]string) bool {
	if a == nil || b == nil {
		return false
	}
	x, y := maps.Clone(a), maps.Clone(b)
	delete(x, attrRecordChanged)
	delete(y, attrRecordChanged)
	return sameAttrs(x, y)
}

func sameAttrs(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func atoi32(s string) int32 {
	n, _ := strconv.ParseInt(s, 10, 32)
	return int32(n)
}
