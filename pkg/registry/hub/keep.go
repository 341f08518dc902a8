package hub

import (
	"context"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/clusterset/clusterset/pkg/registry"
)

// RepairDelay is how long after the view shows this cluster's record head
// other than the last one it wrote (deleted by hand, overwritten) the
// Registry writes it again. It lets the view catch up with this process's
// own writes first, so that they never cost a repair.
const RepairDelay = time.Second

// keeper remembers what this cluster published and has not withdrawn, so
// that a record lost from the hub is written again (registry.Registry:
// Publish keeps the record), and serializes the writes of each service.
type keeper struct {
	mu    sync.Mutex
	kept  map[registry.ServiceKey]*registry.Record
	locks map[registry.ServiceKey]*keyLock

	queue workqueue.TypedDelayingInterface[registry.ServiceKey]
}

type keyLock struct {
	sync.Mutex
	users int
}

func newKeeper() *keeper {
	return &keeper{
		kept:  map[registry.ServiceKey]*registry.Record{},
		locks: map[registry.ServiceKey]*keyLock{},
		queue: workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[registry.ServiceKey]{Name: ""}),
	}
}

// lock serializes Publish, Withdraw and repair of key; call the result to
// unlock.
func (k *keeper) lock(key registry.ServiceKey) func() {
	k.mu.Lock()
	l := k.locks[key]
	if l == nil {
		l = &keyLock{}
		k.locks[key] = l
	}
	l.users++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		if l.users--; l.users == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}

// keep remembers rec (nil: forgets key).
func (k *keeper) keep(key registry.ServiceKey, rec *registry.Record) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if rec == nil {
		delete(k.kept, key)
		return
	}
	k.kept[key] = rec.DeepCopy()
}

func (k *keeper) get(key registry.ServiceKey) *registry.Record {
	k.mu.Lock()
	defer k.mu.Unlock()
	if rec := k.kept[key]; rec != nil {
		return rec.DeepCopy()
	}
	return nil
}

// headChanged is called by the view for each event of this cluster's head of
// key: when the cached head is not the one last written, a repair is queued.
func (r *Registry) headChanged(key registry.ServiceKey) {
	if r.keeper.get(key) != nil && r.headLost(key) {
		r.keeper.queue.AddAfter(key, RepairDelay)
	}
}

// headLost reports whether the view's cache shows another head of key than
// the one this process last wrote (none, another version, unreadable).
func (r *Registry) headLost(key registry.ServiceKey) bool {
	head, found, synced := r.view.cached(r.namespace, headName(key))
	if !synced {
		return false
	}
	var err error
	if !found {
		err = errNotCached
	}
	return r.cacheBehind(key, head, err)
}

type notCached struct{}

func (notCached) Error() string { return "not in the cache" }

var errNotCached error = notCached{}

// runRepairs writes kept records again that the hub lost, until ctx ends.
func (r *Registry) runRepairs(ctx context.Context) {
	logger := log.FromContext(ctx).WithValues("clusterSet", r.setID, "cluster", r.clusterID)
	go func() {
		<-ctx.Done()
		r.keeper.queue.ShutDown()
	}()
	for {
		key, shutdown := r.keeper.queue.Get()
		if shutdown {
			return
		}
		r.repair(ctx, logger, key)
		r.keeper.queue.Done(key)
	}
}

func (r *Registry) repair(ctx context.Context, logger logr.Logger, key registry.ServiceKey) {
	unlock := r.keeper.lock(key)
	defer unlock()
	rec := r.keeper.get(key)
	if rec == nil || !r.headLost(key) {
		return // withdrawn, or the view caught up with this process's write
	}
	logger.Info("Writing this cluster's record again: the hub does not hold the version last written", "namespace", key.Namespace, "service", key.Name)
	if err := r.publish(ctx, rec); err != nil && ctx.Err() == nil {
		logger.Error(err, "Writing this cluster's record again failed; retrying", "namespace", key.Namespace, "service", key.Name)
		r.keeper.queue.AddAfter(key, 5*RepairDelay)
	}
}
