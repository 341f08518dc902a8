package cloudmap

import (
	"slices"
	"sync"
	"time"

	"github.com/clusterset/clusterset/pkg/registry"
)

// svcState is the view of one Cloud Map service.
type svcState struct {
	id       string // Cloud Map service ID; "" for a service read by name, until a listing names it
	revision int64
	loaded   bool      // read in full at least once
	lastFull time.Time // last full DiscoverInstances
	records  []registry.Record
	owners   map[string]string // InstanceId -> CLUSTER_ID, this clusterset
	foreign  bool              // holds an instance of this clusterset written by another controller
	digests  map[string]string // CLUSTER_ID -> instanceDigest of its instances, this clusterset
	// instances is how many instances of every writer the last read saw (a
	// lower bound when oversized): the quota checks count them.
	instances  int
	oversized  bool // holds more instances than one DiscoverInstances returns
	incomplete bool // even the clusterset's instances could not all be read
}

// heldByOthers returns how many instances of s the last read saw that are
// not cluster's: other clusters', other clustersets', anyone's.
func (s *svcState) heldByOthers(cluster string) int {
	n := s.instances
	for _, c := range s.owners {
		if c == cluster {
			n--
		}
	}
	return max(n, 0)
}

// digest returns the instanceDigest of cluster's instances in s (nil: none).
func (s *svcState) digest(cluster string) string {
	if s != nil {
		if d, ok := s.digests[cluster]; ok {
			return d
		}
	}
	return instanceDigest(nil)
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

// readSince reports whether the view holds a full read of key that started
// after t (svcState.lastFull is taken before the read, so a read under way
// at t does not count).
func (v *view) readSince(key registry.ServiceKey, t time.Time) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	s := v.services[key]
	return s != nil && s.loaded && s.lastFull.After(t)
}

// countIn returns how many services of namespace ns the view holds, and
// how many of those were read by name and have no Cloud Map ID yet.
func (v *view) countIn(ns string) (n, withoutID int) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for k, s := range v.services {
		if k.Namespace == ns {
			n++
			if s.id == "" {
				withoutID++
			}
		}
	}
	return n, withoutID
}

// learnIDs sets the Cloud Map service ID of each target's service in the
// view that was read by name, before its ID was known (id "").
func (v *view) learnIDs(targets []target) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, tg := range targets {
		if s := v.services[tg.key]; s != nil && s.id == "" {
			c := *s // states are replaced, never changed: readers hold them unlocked
			c.id = tg.id
			v.services[tg.key] = &c
		}
	}
}

// has reports whether the view holds key.
func (v *view) has(key registry.ServiceKey) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	_, ok := v.services[key]
	return ok
}

// otherInstances returns the InstanceIds that other clusters of the
// clusterset hold in key's service, as last read.
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

// heldByOthers returns how many instances of key's service the view saw
// that are not cluster's, of every writer.
func (v *view) heldByOthers(key registry.ServiceKey, cluster string) int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if s := v.services[key]; s != nil {
		return s.heldByOthers(cluster)
	}
	return 0
}

// heldByOthersInNamespace returns how many instances of the services of
// namespace ns the view saw that are not cluster's, of every writer.
func (v *view) heldByOthersInNamespace(ns, cluster string) int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	n := 0
	for k, s := range v.services {
		if k.Namespace == ns {
			n += s.heldByOthers(cluster)
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
	for i := range s.records {
		out[i] = *s.records[i].DeepCopy()
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
	slices.SortFunc(out, registry.CompareKeys)
	return out, nil
}

// mixedNamespaces returns the namespaces that hold a service with a record
// written by another controller.
func (v *view) mixedNamespaces() map[string]bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := map[string]bool{}
	for k, s := range v.services {
		if s.foreign {
			out[k.Namespace] = true
		}
	}
	return out
}
