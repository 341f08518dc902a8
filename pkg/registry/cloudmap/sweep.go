package cloudmap

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/clusterset/clusterset/pkg/registry"
)

// foreignCheck finds the writes of controllers that bump no change beacon
// (the AWS Cloud Map MCS controller) in a mixed clusterset sooner than the
// sweep: ListNamespaces and ListServices of the account, then it queues the
// usual revision check of every service of the mixed namespaces and of
// every service not in the view yet (a new export, in any namespace). Not
// found here, only at the sweep: another controller's first write into a
// service that exists already, in a namespace without its records.
func (r *Registry) foreignCheck(ctx context.Context, onChange func(registry.ServiceKey), now time.Time, mixed map[string]bool) error {
	ps := &r.ps
	ps.lastForeign = now
	order, err := r.listAccount(ctx, onChange)
	if err != nil {
		return err
	}
	r.view.mu.RLock()
	defer r.view.mu.RUnlock()
	for _, tg := range order {
		if _, known := r.view.services[tg.key]; mixed[tg.key.Namespace] || !known {
			ps.scan.add(tg, false)
		}
	}
	return nil
}

// listTargets returns the services of the namespaces named in nsByID (all of
// the account when namespaceID is empty, else of that namespace). The first
// service of a name wins, as in moto's DiscoverInstances.
//
// A listing of one namespace says where its services are; one of the whole
// account does not (ServiceSummary has no namespace), so the services it
// shows for the first time are looked up with GetService, in parallel.
// Before, each new service of a namespace listing cost a GetService too,
// one after the other, inside the poll: a burst of 1,000 services took
// 56.9 s with them and 51.5 s without (docs/benchmarks.md, bursts).
func (r *Registry) listTargets(ctx context.Context, namespaceID string, nsByID map[string]string) ([]target, error) {
	svcs, err := r.api.listServices(ctx, namespaceID)
	if err != nil {
		return nil, err
	}
	if namespaceID != "" {
		r.mu.Lock()
		for _, s := range svcs {
			r.svcNS[s.ID] = namespaceID
		}
		r.mu.Unlock()
	} else if err := r.lookUpNamespaces(ctx, svcs, nsByID); err != nil {
		// Without every service's namespace we cannot tell removed
		// services from unknown ones: keep the view as it is.
		return nil, err
	}
	seen := map[registry.ServiceKey]bool{}
	var out []target
	for _, s := range svcs {
		r.mu.Lock()
		nsID, known := r.svcNS[s.ID]
		r.mu.Unlock()
		if !known {
			continue // deleted since the listing
		}
		name, ok := nsByID[nsID]
		if !ok {
			continue
		}
		key := registry.ServiceKey{Namespace: name, Name: s.Name}
		if seen[key] {
			continue // moto duplicate: DiscoverInstances reads the first
		}
		seen[key] = true
		out = append(out, target{key: key, id: s.ID})
	}
	// Services read by name before (refreshChanged) get their IDs from the
	// listing, with no read: a read by name is a read of the service that
	// the listing names.
	r.view.learnIDs(out)
	return out, nil
}

// lookUpNamespaces learns the namespace of every service of svcs it does not
// know yet (namespaceOf, Options.Concurrency at a time). A service deleted
// since it was listed stays unknown; other errors are returned.
//
// When more services are unknown than listing each namespace of nsByID
// costs (at most a page per 100 services plus one per namespace), the
// namespaces are listed instead: a reader that found thousands of new
// services by name during a burst made a GetService for each at its next
// sweeps (3,139 in a burst of 5,000, docs/benchmarks.md).
func (r *Registry) lookUpNamespaces(ctx context.Context, svcs []svcInfo, nsByID map[string]string) error {
	unknown := r.unknownServiceIDs(svcs)
	if len(unknown) > 0 && len(unknown) >= (len(svcs)+servicesPerPage-1)/servicesPerPage+len(nsByID) {
		ids := slices.Collect(maps.Keys(nsByID))
		err := r.parallel(ctx, len(ids), func(ctx context.Context, i int) error {
			list, err := r.api.listServices(ctx, ids[i])
			if isCode(err, "NamespaceNotFound") {
				return nil
			}
			if err != nil {
				return err
			}
			r.mu.Lock()
			for _, s := range list {
				r.svcNS[s.ID] = ids[i]
			}
			r.mu.Unlock()
			return nil
		})
		if err != nil {
			return err
		}
		unknown = r.unknownServiceIDs(svcs) // created since, or in no namespace of nsByID
	}
	return r.parallel(ctx, len(unknown), func(ctx context.Context, i int) error {
		if _, err := r.namespaceOf(ctx, unknown[i]); err != nil && !isCode(err, "ServiceNotFound") {
			return err
		}
		return nil
	})
}

// unknownServiceIDs returns the IDs of svcs whose namespace is not known.
func (r *Registry) unknownServiceIDs(svcs []svcInfo) []string {
	var unknown []string
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range svcs {
		if _, ok := r.svcNS[s.ID]; !ok {
			unknown = append(unknown, s.ID)
		}
	}
	return unknown
}

// listAccount lists every service of the account's namespaces but the
// system one (ListNamespaces and ListServices, one paged call each, and
// GetService once per new service ID) and drops from the view the services
// the listing no longer shows. On error the view is kept as it is.
func (r *Registry) listAccount(ctx context.Context, onChange func(registry.ServiceKey)) ([]target, error) {
	start := time.Now()
	nss, err := r.refreshNamespaces(ctx)
	if err != nil {
		return nil, err
	}
	nsByID := map[string]string{}
	for _, n := range nss {
		if n.Name != r.opts.SystemNamespace {
			nsByID[n.ID] = n.Name
		}
	}
	order, err := r.listTargets(ctx, "", nsByID)
	if err != nil {
		return nil, err
	}
	listed := map[registry.ServiceKey]bool{}
	for _, tg := range order {
		listed[tg.key] = true
	}
	r.dropGone(onChange, start, func(k registry.ServiceKey) bool { return !listed[k] })
	return order, nil
}

// sweep lists the services of the clusterset's namespaces and checks them
// (reads them at once, or queues them: below):
//   - ListNamespaces and ListServices, one paged call each for the account;
//   - GetService once per new service ID (ServiceSummary lacks the namespace);
//   - per service checked, DiscoverInstancesRevision, and DiscoverInstances
//     only when the revision moved, the service is new or written by us, or
//     its last full read is older than FullResyncPeriod; with full,
//     DiscoverInstances of every service (an equal revision is not a proof:
//     moto's can repeat after a deregistration).
//
// A full sweep, and a sweep in a mixed clusterset (the view holds a record
// of another controller), check every service. Otherwise (every writer
// seen so far bumps change beacons) only the services new to the view, of
// the namespaces whose beacon named no service, and those read at once
// (below): so the idle cost of a clusterset run only by
// clusterset grows with its namespaces, not with its services, and another
// controller's first write is found at the sweep when it creates a service
// and at the full resync when it writes into one that exists.
//
// The first sweep, before the view has synced, checks every service
// before it returns: until then the view has nothing to serve. Later
// sweeps read the services this cluster wrote and those the beacons
// announced (and those whose last check failed) at once, and queue the
// rest (scanQueue), so that a full resync of thousands of services holds
// back no change. It returns the services it read (whether or not the
// read failed: a failure is in ps.retry), and the announced ones the
// listing showed gone.
func (r *Registry) sweep(ctx context.Context, onChange func(registry.ServiceKey), now time.Time, full bool) (map[registry.ServiceKey]bool, error) {
	ps := &r.ps
	order, err := r.listAccount(ctx, onChange)
	if err != nil {
		return map[registry.ServiceKey]bool{}, err
	}

	dirty := r.takeDirty()
	announced := ps.addAnnounced(dirty)
	every := full || len(r.view.mixedNamespaces()) > 0
	r.view.mu.RLock()
	synced := r.view.synced
	r.view.mu.RUnlock()
	var readNow []target
	listed := map[registry.ServiceKey]bool{}
	for _, tg := range order {
		k := tg.key
		listed[k] = true
		_, written := dirty[k] // written by us, or its last check failed (false: a revision check)
		switch {
		case !synced || written || announced[k]:
			readNow = append(readNow, tg)
		case every || ps.pendingNS[k.Namespace] || !r.view.has(k):
			ps.scan.add(tg, full)
		}
	}
	ps.pendingNS = map[string]bool{} // every namespace that needs it is queued now
	ps.listNS = map[string]bool{}
	for ns := range ps.unknownNS {
		if !slices.ContainsFunc(order, func(tg target) bool { return tg.key.Namespace == ns }) {
			delete(ps.unknownNS, ns) // gone: a namespace of that name created again starts anew
		}
	}

	read, failed, err := r.readQueued(ctx, onChange, readNow, func() map[registry.ServiceKey]bool {
		if !full {
			return dirty
		}
		all := make(map[registry.ServiceKey]bool, len(readNow))
		for _, tg := range readNow {
			all[tg.key] = true
		}
		return all
	}())
	for k := range announced {
		if !listed[k] {
			read[k] = true // gone: the listing dropped it
		}
	}
	ps.lastSweep = now
	if full {
		ps.lastFull = now
	}
	// A read that found a namespace unknown (refreshAll) is no failure,
	// but its services are not read yet: the next poll sweeps again.
	if failed == 0 && len(ps.listNS) == 0 && !synced {
		r.view.mu.Lock()
		r.view.synced = true
		r.view.mu.Unlock()
	}
	return read, err
}
