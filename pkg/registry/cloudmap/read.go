package cloudmap

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/clusterset/clusterset/pkg/registry"
)

// maxDiscoverResults is the most instances one DiscoverInstances returns
// (its largest MaxResults). The call has no paging: the instances of a
// service that holds more are left out, and nothing in the response says
// so but its length.
const maxDiscoverResults = 1000

// serviceRead is what readService found in one Cloud Map service.
type serviceRead struct {
	// insts are the instances to decode, de-duplicated: every instance of
	// the service, or only the clusterset's when the service is oversized.
	insts []instance
	// revision is the service's InstancesRevision. For an oversized service
	// read without withRevision, it is the cut response's, which may cover
	// only the instances returned (moto's does): the caller then uses the
	// revision it checked before.
	revision int64
	// count is how many distinct instances, of every writer, the reads
	// returned: the service's instance count, or a lower bound of it when
	// oversized.
	count int
	// oversized: the unfiltered read came back full, so it may have left
	// out instances, and the clusterset's were read by filtered reads.
	oversized bool
	// incomplete: a filtered read came back full too, so some of the
	// clusterset's own instances may be missing from insts.
	incomplete bool
}

// readService reads the instances of the Cloud Map service namespace/service
// that a member of clusterSetID needs. While the service holds fewer than
// maxDiscoverResults instances that is one unfiltered DiscoverInstances.
//
// A fuller service (someone else's writers: Cloud Map's quota of instances
// per service is 1,000, and moto has none) comes back cut at
// maxDiscoverResults, and which instances are left out is up to Cloud Map,
// so the clusterset's own could be among them. Then two more
// DiscoverInstances, filtered on CLUSTERSET_ID and on OWNER_CLUSTERSET_ID
// (markers and port-less endpoints), return the clusterset's instances: 3
// calls, whatever the number of other writers' instances. With
// withRevision, a DiscoverInstancesRevision between the two steps (4
// calls) gives the revision of the whole service; it comes before the
// filtered reads, so a change after it shows as a moved revision at the
// next check. When a filtered read comes back full as well, more than
// 1,000 instances of one kind claim the clusterset there (only a writer
// that ignores clusterset's limits can do that): the result is what the
// reads returned, marked incomplete.
//
// Errors are Cloud Map's, NamespaceNotFound and ServiceNotFound included.
func readService(ctx context.Context, a api, namespace, service, clusterSetID string, withRevision bool) (serviceRead, error) {
	insts, rev, err := a.discover(ctx, namespace, service, "", "")
	if err != nil {
		return serviceRead{}, err
	}
	if len(insts) < maxDiscoverResults {
		insts, _ = dedupe(insts)
		return serviceRead{insts: insts, revision: rev, count: len(insts)}, nil
	}
	out := serviceRead{revision: rev, oversized: true}
	if withRevision {
		if out.revision, err = a.revision(ctx, namespace, service); err != nil {
			return serviceRead{}, err
		}
	}
	seen := map[string]bool{}
	for _, in := range insts {
		seen[in.ID] = true
	}
	var own []instance
	for _, attr := range []string{attrClusterSetID, attrOwnerClusterSetID} {
		part, _, err := a.discover(ctx, namespace, service, attr, clusterSetID)
		if err != nil {
			return serviceRead{}, fmt.Errorf("reading the instances of clusterset %s in an oversized service: %w", clusterSetID, err)
		}
		out.incomplete = out.incomplete || len(part) >= maxDiscoverResults
		for _, in := range part {
			seen[in.ID] = true
		}
		own = append(own, part...)
	}
	out.insts, _ = dedupe(own)
	out.count = len(seen)
	result := "complete"
	if out.incomplete {
		result = "incomplete"
	}
	oversizedReadsTotal.WithLabelValues(result).Inc()
	return out, nil
}

// refreshService updates one service of the view and reports whether its
// records changed.
func (r *Registry) refreshService(ctx context.Context, tg target, dirty bool) (bool, error) {
	r.view.mu.RLock()
	old := r.view.services[tg.key]
	r.view.mu.RUnlock()

	now := time.Now()
	fresh := old != nil && old.id == tg.id && old.loaded && now.Sub(old.lastFull) < r.opts.FullResyncPeriod
	checked, checkedRev := false, int64(0)
	if fresh && !dirty {
		// The revision tells whether a read is needed. A service to be
		// read anyway skips it: DiscoverInstances returns it too.
		rev, err := r.api.revision(ctx, tg.key.Namespace, tg.key.Name)
		if err != nil {
			return false, err
		}
		if rev == old.revision {
			return false, nil
		}
		checked, checkedRev = true, rev
	}
	readStart := time.Now()
	// Unfiltered: markers carry no CLUSTERSET_ID (hideFromAWSController).
	read, err := readService(ctx, r.api, tg.key.Namespace, tg.key.Name, r.opts.ClusterSetID, !checked)
	if err != nil {
		return false, err
	}
	rev := read.revision
	if read.oversized && checked {
		// Read before the instances, and of the whole service.
		rev = checkedRev
	}
	r.logOversized(tg.key, old, read)
	insts := read.insts
	owners := map[string]string{}
	byCluster := map[string]map[string]instance{}
	foreign := false
	for _, in := range insts {
		if clusterSetOf(in.Attrs) == r.opts.ClusterSetID {
			cl := in.Attrs[attrClusterID]
			owners[in.ID] = cl
			if byCluster[cl] == nil {
				byCluster[cl] = map[string]instance{}
			}
			byCluster[cl][in.ID] = in
			foreign = foreign || in.Attrs[attrController] != controllerName
		}
	}
	digests := make(map[string]string, len(byCluster))
	for cl, m := range byCluster {
		digests[cl] = instanceDigest(m)
	}
	recs := decodeInstances(r.opts.ClusterSetID, tg.key.Namespace, tg.key.Name, insts, r.logSkipped(tg.key))
	mine := map[string]instance{}
	for _, in := range insts {
		if r.ours(in.Attrs) {
			mine[in.ID] = in
		}
	}
	if !read.incomplete {
		// An incomplete read may lack instances this cluster holds: a
		// repair would write them again at every read.
		r.repair(ctx, tg.key, mine, readStart)
	}
	st := &svcState{id: tg.id, revision: rev, loaded: true, lastFull: now, records: recs, owners: owners, foreign: foreign, digests: digests,
		instances: read.count, oversized: read.oversized, incomplete: read.incomplete}
	r.view.mu.Lock()
	r.view.services[tg.key] = st
	r.view.mu.Unlock()
	return old == nil && len(recs) > 0 || old != nil && !reflect.DeepEqual(old.records, recs), nil
}

// logOversized logs when a service becomes oversized or incomplete (see
// readService), once per change rather than at every read.
func (r *Registry) logOversized(key registry.ServiceKey, old *svcState, read serviceRead) {
	was := old != nil && old.oversized
	wasIncomplete := old != nil && old.incomplete
	log := r.log.WithValues("namespace", key.Namespace, "service", key.Name, "instancesSeen", read.count, "limit", maxDiscoverResults)
	switch {
	case read.incomplete && !wasIncomplete:
		log.Error(errors.New("Cloud Map service has more instances of this clusterset than one read returns"),
			"some records of this service may be missing from the view, and this cluster's own instances there are not repaired; remove the instances that claim this clusterset without being its records")
	case read.oversized && !was:
		log.Info("Cloud Map service holds more instances than one DiscoverInstances returns; reading this clusterset's instances with two filtered reads")
	case !read.oversized && was:
		log.Info("Cloud Map service holds fewer instances than one DiscoverInstances returns again")
	}
}
