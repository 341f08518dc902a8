package registrytest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clusterset/clusterset/pkg/registry"
)

// ErrOutage is what a MemoryStore's registries return while it is down.
var ErrOutage = errors.New("registrytest: memory store is unreachable")

// MemoryStore is an in-memory backing store for registries, for tests of
// controllers that need a Registry without a hub or Cloud Map. It passes the
// contract suite, which also checks the suite itself.
type MemoryStore struct {
	mu       sync.Mutex
	records  map[memKey]registry.Record
	leases   map[[2]string]registry.Heartbeat // (clusterset, cluster) → last heartbeat
	down     bool
	watchers map[*memRegistry]struct{}
	writes   int
}

// Writes counts the writes the store took: Publish calls that changed a
// record, and Withdraw calls that removed one.
func (s *MemoryStore) Writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

type memKey struct {
	set, cluster string
	key          registry.ServiceKey
}

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{
		records:  map[memKey]registry.Record{},
		leases:   map[[2]string]registry.Heartbeat{},
		watchers: map[*memRegistry]struct{}{},
	}
}

// SetDown makes every registry of the store fail (true) or work (false).
// While it is down, running registries keep their view and get no updates;
// they catch up when it comes back.
func (s *MemoryStore) SetDown(down bool) {
	s.mu.Lock()
	s.down = down
	var ws []*memRegistry
	if !down {
		for w := range s.watchers {
			ws = append(ws, w)
		}
	}
	s.mu.Unlock()
	for _, w := range ws {
		w.resync()
	}
}

// Lose deletes clusterID's record of key behind its registry's back, as a
// person deleting it by hand would; a running registry that published it
// writes it again (registry.Registry: Publish keeps the record).
func (s *MemoryStore) Lose(clusterSetID, clusterID string, key registry.ServiceKey) {
	s.mu.Lock()
	if s.down {
		s.mu.Unlock()
		return
	}
	delete(s.records, memKey{clusterSetID, clusterID, key})
	var ws []*memRegistry
	for w := range s.watchers {
		ws = append(ws, w)
	}
	s.mu.Unlock()
	for _, w := range ws {
		w.resync()
	}
}

// Holds reports whether the store holds clusterID's record of key.
func (s *MemoryStore) Holds(clusterSetID, clusterID string, key registry.ServiceKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.records[memKey{clusterSetID, clusterID, key}]
	return ok
}

// Registry returns the handle of clusterID in clusterSetID.
func (s *MemoryStore) Registry(clusterSetID, clusterID string) registry.Registry {
	return s.RegistryOf(clusterSetID, clusterID, "")
}

// RegistryOf is Registry for a member whose heartbeats name holder.
func (s *MemoryStore) RegistryOf(clusterSetID, clusterID, holder string) registry.Registry {
	return &memRegistry{store: s, set: clusterSetID, cluster: clusterID, holder: holder, kick: make(chan struct{}, 1), kept: map[registry.ServiceKey]registry.Record{}}
}

type memRegistry struct {
	store        *MemoryStore
	set, cluster string
	holder       string
	kick         chan struct{}

	// kept is what this registry published and has not withdrawn; Run
	// writes a kept record that the store lost again (registry.Registry:
	// Publish keeps the record). Guarded by store.mu.
	kept map[registry.ServiceKey]registry.Record

	mu     sync.Mutex
	synced bool
	view   map[registry.ServiceKey]map[string]registry.Record // key → cluster → record
}

func (r *memRegistry) Publish(_ context.Context, rec *registry.Record) error {
	rec, err := registry.Own(rec, r.set, r.cluster)
	if err != nil {
		return err
	}
	s := r.store
	s.mu.Lock()
	if s.down {
		s.mu.Unlock()
		return ErrOutage
	}
	k := memKey{r.set, r.cluster, rec.Key()}
	if old, ok := s.records[k]; ok && registry.SameContent(&old, rec) {
		r.kept[rec.Key()] = old
		s.mu.Unlock()
		return nil // same content: the stored Changed stays
	}
	s.records[k] = *rec.DeepCopy()
	s.writes++
	r.kept[rec.Key()] = *rec.DeepCopy()
	s.mu.Unlock()
	s.notify()
	return nil
}

func (r *memRegistry) Withdraw(_ context.Context, key registry.ServiceKey) error {
	s := r.store
	s.mu.Lock()
	if s.down {
		s.mu.Unlock()
		return ErrOutage
	}
	if _, ok := s.records[memKey{r.set, r.cluster, key}]; ok {
		delete(s.records, memKey{r.set, r.cluster, key})
		s.writes++
	}
	delete(r.kept, key)
	s.mu.Unlock()
	s.notify()
	return nil
}

func (s *MemoryStore) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.watchers {
		w.resync()
	}
}

func (r *memRegistry) resync() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *memRegistry) Run(ctx context.Context, onChange func(registry.ServiceKey)) error {
	s := r.store
	s.mu.Lock()
	s.watchers[r] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.watchers, r)
		s.mu.Unlock()
	}()
	r.resync()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		}
		s.mu.Lock()
		if s.down {
			s.mu.Unlock()
			continue
		}
		for key, rec := range r.kept {
			if _, ok := s.records[memKey{r.set, r.cluster, key}]; !ok {
				s.records[memKey{r.set, r.cluster, key}] = *rec.DeepCopy()
				for w := range s.watchers {
					w.resync()
				}
			}
		}
		next := map[registry.ServiceKey]map[string]registry.Record{}
		for k, rec := range s.records {
			if k.set != r.set {
				continue
			}
			if next[k.key] == nil {
				next[k.key] = map[string]registry.Record{}
			}
			next[k.key][k.cluster] = *rec.DeepCopy()
		}
		s.mu.Unlock()

		r.mu.Lock()
		prev := r.view
		r.view, r.synced = next, true
		r.mu.Unlock()
		// Notify after the view changed, for every key that appeared,
		// disappeared or changed (here: any key present before or after).
		changed := map[registry.ServiceKey]bool{}
		for k := range prev {
			changed[k] = true
		}
		for k := range next {
			changed[k] = true
		}
		for k := range changed {
			onChange(k)
		}
	}
}

func (r *memRegistry) HasSynced() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.synced
}

func (r *memRegistry) Records(key registry.ServiceKey) ([]registry.Record, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.synced {
		return nil, registry.ErrNotSynced
	}
	var out []registry.Record
	for _, rec := range r.view[key] {
		out = append(out, *rec.DeepCopy())
	}
	slices.SortFunc(out, func(a, b registry.Record) int { return strings.Compare(a.ClusterID, b.ClusterID) })
	return out, nil
}

func (r *memRegistry) Keys() ([]registry.ServiceKey, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.synced {
		return nil, registry.ErrNotSynced
	}
	keys := make([]registry.ServiceKey, 0, len(r.view))
	for k := range r.view {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, registry.CompareKeys)
	return keys, nil
}

func (r *memRegistry) Heartbeat(context.Context) error {
	s := r.store
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return ErrOutage
	}
	s.leases[[2]string{r.set, r.cluster}] = registry.Heartbeat{ClusterID: r.cluster, RenewTime: time.Now(), Holder: r.holder}
	return nil
}

func (r *memRegistry) Liveness(context.Context) (map[string]registry.Heartbeat, error) {
	s := r.store
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return nil, ErrOutage
	}
	out := map[string]registry.Heartbeat{}
	for k, hb := range s.leases {
		if k[0] == r.set {
			out[k[1]] = hb
		}
	}
	return out, nil
}
