package cloudmap

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/clusterset/clusterset/pkg/registry"
)

// scanChunk is how many queued services a poll checks at a time, per unit
// of Options.Concurrency: enough to keep every worker busy through a
// chunk's slower calls, few enough that a poll ends soon after
// PollInterval.
const scanChunk = 4

// scanQueue holds the services a poll queued for a check that may outlast
// it: every service of a namespace whose change beacon moved without naming
// what changed, every service at a full resync, and in a mixed clusterset
// those the foreign check finds. Each poll first reads the change beacons
// and the services they announce (and those this cluster wrote), taking
// them out of the queue, then checks queued services for what is left of
// its PollInterval (at least one chunk).
//
// Why: a poll used to hold such a check whole. At thousands of services one
// check takes tens of seconds (4,272 revision checks took 95 s under moto,
// docs/benchmarks.md), during which no beacon was read: a writer's burst
// overflowed the change list meanwhile, the next poll checked the whole
// namespace again, and the reader imported in waves with pauses of up to
// 45 s; and each full resync held every change back for as long as it took
// to read every service.
//
// A service queued twice is checked once (in full if either asked for it);
// a service checked since it was queued and queued again, for example by a
// namespace's next check while its beacon stays hot, is checked again.
type scanQueue struct {
	items map[registry.ServiceKey]scanItem
	seq   int64
}

type scanItem struct {
	id   string
	full bool  // read in full (DiscoverInstances), with no revision check first
	seq  int64 // queue order
}

// add queues tg, in full if full.
func (q *scanQueue) add(tg target, full bool) {
	if q.items == nil {
		q.items = map[registry.ServiceKey]scanItem{}
	}
	if it, ok := q.items[tg.key]; ok {
		it.full = it.full || full
		if tg.id != "" {
			it.id = tg.id
		}
		q.items[tg.key] = it
		return
	}
	q.seq++
	q.items[tg.key] = scanItem{id: tg.id, full: full, seq: q.seq}
}

// take removes key from the queue and returns what it was queued with.
func (q *scanQueue) take(key registry.ServiceKey) (scanItem, bool) {
	it, ok := q.items[key]
	delete(q.items, key)
	return it, ok
}

// has reports whether key waits for its check.
func (q *scanQueue) has(key registry.ServiceKey) bool {
	_, ok := q.items[key]
	return ok
}

// namespaces returns the namespaces of the services waiting for their check.
func (q *scanQueue) namespaces() map[string]bool {
	out := map[string]bool{}
	for k := range q.items {
		out[k.Namespace] = true
	}
	return out
}

// len returns the number of services waiting for their check.
func (q *scanQueue) len() int { return len(q.items) }

// scanOrder returns the queued services in the order advanceScan checks them:
// those new to the view first (exports, whose import waits for them), then
// the others, each group in queue order.
func (r *Registry) scanOrder() []registry.ServiceKey {
	q := &r.ps.scan
	order := make([]target, 0, len(q.items))
	for k, it := range q.items {
		order = append(order, target{key: k, id: it.id})
	}
	slices.SortFunc(order, func(a, b target) int { return cmp.Compare(q.items[a.key].seq, q.items[b.key].seq) })
	keys := make([]registry.ServiceKey, len(order))
	for i, tg := range r.newFirst(order, func(registry.ServiceKey) bool { return false }) {
		keys[i] = tg.key
	}
	return keys
}

// readQueued reads now, with refreshAll, the services of order, taking
// those queued out of the queue: with the ID and the full read they were
// queued with, so that a full resync's read of a service is not lost to a
// revision check. force says which to read in full besides. It returns the
// keys read, and how many of their checks failed (refreshAll).
func (r *Registry) readQueued(ctx context.Context, onChange func(registry.ServiceKey), order []target, force map[registry.ServiceKey]bool) (map[registry.ServiceKey]bool, int, error) {
	full := map[registry.ServiceKey]bool{}
	read := make(map[registry.ServiceKey]bool, len(order))
	order = slices.Clone(order)
	for i, tg := range order {
		if it, ok := r.ps.scan.take(tg.key); ok {
			full[tg.key] = it.full
			if tg.id == "" {
				order[i].id = it.id
			}
		}
		read[tg.key] = true
	}
	failed, err := r.refreshAll(ctx, onChange, order, func(k registry.ServiceKey) bool { return force[k] || full[k] })
	return read, failed, err
}

// advanceScan checks queued services, Concurrency*scanChunk at a time,
// until PollInterval has passed since pollStart (at least one chunk, so
// that the queue drains however long the rest of the poll took) or a poke
// asks for a poll (this cluster wrote: its read-back should not wait), and
// returns the services it checked. A service whose check fails goes back
// to the end of the queue, so that one that keeps failing holds up no
// other; a chunk whose every check failed (an outage, throttling) ends
// it, so that an outage costs a chunk per poll, not a check of everything
// queued. Services of a namespace waiting for its listing (a read found
// it unknown: NamespaceNotFound, see refreshAll) stay queued until that
// listing. A service announced and not read in full since is read in full
// (an equal revision is no proof, see refreshService).
func (r *Registry) advanceScan(ctx context.Context, onChange func(registry.ServiceKey), pollStart time.Time) (map[registry.ServiceKey]bool, error) {
	checked := map[registry.ServiceKey]bool{}
	if r.ps.scan.len() == 0 {
		return checked, nil
	}
	var firstErr error
	order := r.scanOrder()
	for len(order) > 0 && ctx.Err() == nil {
		var batch []target
		full := map[registry.ServiceKey]bool{}
		taken := map[registry.ServiceKey]scanItem{}
		for len(order) > 0 && len(batch) < r.opts.Concurrency*scanChunk {
			k := order[0]
			order = order[1:]
			if r.ps.listNS[k.Namespace] {
				// Its namespace waits for a listing, mostly because a read
				// found it unknown (refreshAll): it waits in the queue for
				// that listing, which drops it with a deleted namespace.
				continue
			}
			if it, ok := r.ps.scan.take(k); ok { // else read or dropped since
				batch = append(batch, target{key: k, id: it.id})
				a := r.ps.announced[k]
				full[k], taken[k] = it.full || a != nil && !a.read, it
			}
		}
		failed, err := r.refreshAll(ctx, onChange, batch, func(k registry.ServiceKey) bool { return full[k] })
		for _, tg := range batch {
			checked[tg.key] = true
		}
		for k, it := range taken {
			if _, ok := r.ps.retry[k]; ok {
				delete(r.ps.retry, k)
				delete(checked, k)
				r.ps.scan.add(target{key: k, id: it.id}, it.full)
			}
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
		if failed == len(batch) || time.Since(pollStart) >= r.opts.PollInterval || len(r.poke) > 0 {
			break
		}
	}
	return checked, firstErr
}

// newFirst returns order (a copy) with the services new to the view first,
// then those to read in full (force: this cluster wrote them), then the
// rest, each group in its listed order. A service new to the view has
// changed for sure (an export), where a known one only may have: when a
// burst overflows the change list and the reader checks the revision of
// every service of a namespace of thousands, which takes minutes, the new
// exports are imported first instead of after those checks.
func (r *Registry) newFirst(order []target, force func(registry.ServiceKey) bool) []target {
	rank := make(map[registry.ServiceKey]int, len(order))
	r.view.mu.RLock()
	for _, tg := range order {
		switch _, known := r.view.services[tg.key]; {
		case !known:
			rank[tg.key] = 0
		case force(tg.key):
			rank[tg.key] = 1
		default:
			rank[tg.key] = 2
		}
	}
	r.view.mu.RUnlock()
	out := slices.Clone(order)
	slices.SortStableFunc(out, func(a, b target) int { return rank[a.key] - rank[b.key] })
	return out
}
