package cloudmap

import (
	"context"
	"reflect"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/clusterset/clusterset/pkg/registry"
)

// svcState is the view of one Cloud Map service.
type svcState struct {
	id       string
	revision int64
	loaded   bool      // read in full at least once
	lastFull time.Time // last full DiscoverInstances
	records  []registry.Record
	owners   map[string]string // InstanceId -> CLUSTER_ID, this clusterset
}

// view is the last successfully read state of every service of the
// clusterset. Errors never remove anything from it.
type view struct {
	mu       sync.RWMutex
	synced   bool
	services map[registry.ServiceKey]*svcState
	dirty    map[registry.ServiceKey]bool // written by us: read in full next poll
}

func (v *view) init() {
	v.services = map[registry.ServiceKey]*svcState{}
	v.dirty = map[registry.ServiceKey]bool{}
}

func (v *view) markDirty(key registry.ServiceKey) {
	v.mu.Lock()
	v.dirty[key] = true
	v.mu.Unlock()
}

// otherInstances returns the InstanceIds that other clusters hold in key's
// service, as last read.
func (v *view) otherInstances(key registry.ServiceKey, cluster string) map[string]bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := map[string]bool{}
	if s := v.services[key]; s != nil {
		for id, c := range s.owners {
			if c != cluster {
				out[id] = true
			}
		}
	}
	return out
}

func (v *view) otherInstancesInNamespace(ns, cluster string) int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	n := 0
	for k, s := range v.services {
		if k.Namespace != ns {
			continue
		}
		for _, c := range s.owners {
			if c != cluster {
				n++
			}
		}
	}
	return n
}

// HasSynced reports whether every service was read at least once.
func (r *Registry) HasSynced() bool {
	r.view.mu.RLock()
	defer r.view.mu.RUnlock()
	return r.view.synced
}

// Records returns every cluster's record of key, sorted by cluster ID.
func (r *Registry) Records(key registry.ServiceKey) ([]registry.Record, error) {
	r.view.mu.RLock()
	defer r.view.mu.RUnlock()
	if !r.view.synced {
		return nil, registry.ErrNotSynced
	}
	s := r.view.services[key]
	if s == nil {
		return nil, nil
	}
	out := make([]registry.Record, len(s.records))
	for i, rec := range s.records {
		out[i] = rec
		out[i].Endpoints = append([]registry.Endpoint(nil), rec.Endpoints...)
		out[i].Spec.Ports = append([]registry.Port(nil), rec.Spec.Ports...)
	}
	return out, nil
}

// Keys returns every service with at least one record.
func (r *Registry) Keys() ([]registry.ServiceKey, error) {
	r.view.mu.RLock()
	defer r.view.mu.RUnlock()
	if !r.view.synced {
		return nil, registry.ErrNotSynced
	}
	var out []registry.ServiceKey
	for k, s := range r.view.services {
		if len(s.records) > 0 {
			out = append(out, k)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

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

// poll refreshes the view:
//   - ListNamespaces and ListServices, one paged call each for the account;
//   - GetService once per new service ID (ServiceSummary lacks the namespace);
//   - per service, DiscoverInstancesRevision, and DiscoverInstances only when
//     the revision moved, the service is new or written by us, or its last
//     full read is older than FullResyncPeriod (an equal revision is not a
//     proof: moto's can repeat after a deregistration).
func (r *Registry) poll(ctx context.Context, onChange func(registry.ServiceKey)) error {
	nss, err := r.refreshNamespaces(ctx)
	if err != nil {
		return err
	}
	nsByID := map[string]string{}
	for _, n := range nss {
		if n.Name != r.opts.SystemNamespace {
			nsByID[n.ID] = n.Name
		}
	}
	svcs, err := r.api.listServices(ctx, "")
	if err != nil {
		return err
	}
	targets := map[registry.ServiceKey]string{}
	var order []target
	var firstErr error
	for _, s := range svcs {
		nsID, err := r.namespaceOf(ctx, s.ID)
		if err != nil {
			if !isCode(err, "ServiceNotFound") && firstErr == nil {
				firstErr = err
			}
			continue
		}
		name, ok := nsByID[nsID]
		if !ok {
			continue
		}
		key := registry.ServiceKey{Namespace: name, Name: s.Name}
		if _, dup := targets[key]; dup {
			continue // moto duplicate: DiscoverInstances reads the first
		}
		targets[key] = s.ID
		order = append(order, target{key: key, id: s.ID})
	}
	if firstErr != nil {
		// Without every service's namespace we cannot tell removed services
		// from unknown ones: keep the view as it is.
		return firstErr
	}

	// Services gone from Cloud Map leave the view.
	r.view.mu.Lock()
	for key, s := range r.view.services {
		if _, ok := targets[key]; !ok {
			delete(r.view.services, key)
			if len(s.records) > 0 {
				defer onChange(key)
			}
		}
	}
	dirty := r.view.dirty
	r.view.dirty = map[registry.ServiceKey]bool{}
	r.view.mu.Unlock()

	var mu sync.Mutex
	var failed int
	var changed []registry.ServiceKey
	_ = r.parallel(ctx, len(order), func(ctx context.Context, i int) error {
		tg := order[i]
		ch, err := r.refreshService(ctx, tg, dirty[tg.key])
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			if dirty[tg.key] {
				r.view.markDirty(tg.key)
			}
			return nil // other services still refresh
		}
		if ch {
			changed = append(changed, tg.key)
		}
		return nil
	})
	if failed == 0 {
		r.view.mu.Lock()
		r.view.synced = true
		r.view.mu.Unlock()
	}
	for _, k := range changed {
		onChange(k)
	}
	return firstErr
}

// refreshService updates one service of the view and reports whether its
// records changed.
func (r *Registry) refreshService(ctx context.Context, tg target, dirty bool) (bool, error) {
	r.view.mu.RLock()
	old := r.view.services[tg.key]
	r.view.mu.RUnlock()

	rev, err := r.api.revision(ctx, tg.key.Namespace, tg.key.Name)
	if err != nil {
		return false, err
	}
	now := time.Now()
	if old != nil && old.id == tg.id && old.loaded && !dirty &&
		rev == old.revision && now.Sub(old.lastFull) < r.opts.FullResyncPeriod {
		return false, nil
	}
	readStart := time.Now()
	insts, _, err := r.api.discover(ctx, tg.key.Namespace, tg.key.Name, r.opts.ClusterSetID)
	if err != nil {
		return false, err
	}
	insts, _ = dedupe(insts)
	owners := map[string]string{}
	for _, in := range insts {
		if in.Attrs[attrClusterSetID] == r.opts.ClusterSetID {
			owners[in.ID] = in.Attrs[attrClusterID]
		}
	}
	recs := decodeInstances(r.opts.ClusterSetID, tg.key.Namespace, tg.key.Name, insts, func(id string, err error) {
		r.log.V(1).Info("skipping Cloud Map instance", "namespace", tg.key.Namespace, "service", tg.key.Name, "instance", id, "reason", err.Error())
	})
	mine := map[string]instance{}
	for _, in := range insts {
		if r.ours(in.Attrs) {
			mine[in.ID] = in
		}
	}
	r.repair(ctx, tg.key, mine, readStart)
	st := &svcState{id: tg.id, revision: rev, loaded: true, lastFull: now, records: recs, owners: owners}
	r.view.mu.Lock()
	r.view.services[tg.key] = st
	r.view.mu.Unlock()
	return old == nil && len(recs) > 0 || old != nil && !reflect.DeepEqual(old.records, recs), nil
}

func corev1Protocol(s string) corev1.Protocol {
	if s == "" {
		return corev1.ProtocolTCP
	}
	return corev1.Protocol(s)
}
