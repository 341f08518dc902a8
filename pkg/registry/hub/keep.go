package hub

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/clusterset/clusterset/pkg/registry"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

// RepairDelay is how long after the view shows that this cluster's record
// head is gone (deleted by hand, lost with the hub's data) or unreadable the
// Registry writes it again. It lets the view catch up with this process's
// own writes first, so that they never cost a repair.
const RepairDelay = 2 * time.Second

// maxRepairDelay caps the backoff of a repair that keeps failing (the
// member's hub namespace deleted, its RBAC revoked): a few calls per key
// and five minutes, not a steady load on the hub.
const maxRepairDelay = 5 * time.Minute

// keeper remembers what this cluster published and has not withdrawn, so
// that a record lost from the hub is written again (registry.Registry:
// Publish keeps the record), and serializes the writes of each service.
//
// It repairs a head that is gone or unreadable, never one that names
// another version: that one was written by another writer of this cluster
// ID (two replicas without leader election, or two members configured with
// the same ID), and writing back would make the two overwrite each other
// forever. The last writer wins, as it always did.
type keeper struct {
	mu    sync.Mutex
	kept  map[registry.ServiceKey]*registry.Record
	fails map[registry.ServiceKey]error // the last repair's error, until a write succeeds
	locks map[registry.ServiceKey]*keyLock

	// queue holds the keys to check again; set while Run runs.
	queue atomic.Pointer[workqueue.TypedRateLimitingInterface[registry.ServiceKey]]
}

type keyLock struct {
	sync.Mutex
	users int
}

func newKeeper() *keeper {
	return &keeper{kept: map[registry.ServiceKey]*registry.Record{}, fails: map[registry.ServiceKey]error{}, locks: map[registry.ServiceKey]*keyLock{}}
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

// keep remembers rec (nil: forgets key), just written or withdrawn: any
// earlier repair failure is over.
func (k *keeper) keep(key registry.ServiceKey, rec *registry.Record) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.fails, key)
	if rec == nil {
		delete(k.kept, key)
		return
	}
	k.kept[key] = rec.DeepCopy()
}

// get returns a copy of the kept record of key, nil when there is none.
func (k *keeper) get(key registry.ServiceKey) *registry.Record {
	k.mu.Lock()
	defer k.mu.Unlock()
	if rec := k.kept[key]; rec != nil {
		return rec.DeepCopy()
	}
	return nil
}

// keeps reports whether the kept record of key has rec's content and no
// repair of it failed since it was written. It copies nothing.
func (k *keeper) keeps(key registry.ServiceKey, rec *registry.Record) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	kept := k.kept[key]
	return kept != nil && k.fails[key] == nil && registry.SameContent(kept, rec)
}

func (k *keeper) setFailed(key registry.ServiceKey, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err == nil {
		delete(k.fails, key)
	} else if k.kept[key] != nil {
		k.fails[key] = err
	}
}

func (k *keeper) has(key registry.ServiceKey) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.kept[key] != nil
}

// headChanged is called by the view for each event of this cluster's head of
// key: when a kept record's head is gone or unreadable, a repair is queued.
func (r *Registry) headChanged(key registry.ServiceKey) {
	q := r.keeper.queue.Load()
	if q != nil && r.keeper.has(key) && r.headLost(key) {
		(*q).AddAfter(key, RepairDelay)
	}
}

// headLost reports whether the view's cache shows no head of key although
// this process wrote one, or a head it cannot read.
func (r *Registry) headLost(key registry.ServiceKey) bool {
	head, found, synced := r.view.cached(r.namespace, headName(key))
	switch {
	case !synced:
		return false
	case !found:
		r.writtenMu.Lock()
		defer r.writtenMu.Unlock()
		return r.written[key] != "" // "": withdrawn, or never written by this process
	case head.Spec.Type != hubv1alpha1.Head || !r.ownsSpec(head):
		return true
	}
	_, err := decodeHead(head.Spec.Record)
	return err != nil
}

// replacedByAnother reports whether the view's cache holds a readable head of
// key of another version than the one this process last wrote. A head that
// is gone is not "replaced": the keeper restores it.
func (r *Registry) replacedByAnother(key registry.ServiceKey) bool {
	head, found, synced := r.view.cached(r.namespace, headName(key))
	if !synced || !found || head.Spec.Type != hubv1alpha1.Head {
		return false
	}
	h, err := decodeHead(head.Spec.Record)
	if err != nil {
		return false
	}
	r.writtenMu.Lock()
	defer r.writtenMu.Unlock()
	return h.Digest != r.written[key]
}

// runRepairs writes kept records again that the hub lost, until ctx ends. A
// repair that fails is retried with backoff, and onChange tells the
// controllers: their next Publish of the record then writes it itself and
// returns the error (the export's Ready condition says why).
func (r *Registry) runRepairs(ctx context.Context, onChange func(registry.ServiceKey)) {
	logger := log.FromContext(ctx)
	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[registry.ServiceKey](RepairDelay, maxRepairDelay),
		workqueue.TypedRateLimitingQueueConfig[registry.ServiceKey]{})
	r.keeper.queue.Store(&q)
	go func() {
		<-ctx.Done()
		r.keeper.queue.CompareAndSwap(&q, nil)
		q.ShutDown()
	}()
	for {
		key, shutdown := q.Get()
		if shutdown {
			return
		}
		if err := r.repair(ctx, logger, key); err != nil && ctx.Err() == nil {
			logger.Error(err, "Writing this cluster's record again failed; retrying", "namespace", key.Namespace, "service", key.Name)
			q.AddRateLimited(key)
			onChange(key)
		} else {
			q.Forget(key)
		}
		q.Done(key)
	}
}

func (r *Registry) repair(ctx context.Context, logger logr.Logger, key registry.ServiceKey) error {
	defer r.keeper.lock(key)()
	rec := r.keeper.get(key)
	if rec == nil || !r.headLost(key) {
		return nil // withdrawn, or the view caught up with this process's write
	}
	logger.Info("Writing this cluster's record again: its head in the hub is gone or unreadable", "namespace", key.Namespace, "service", key.Name)
	enc, err := encode(rec, r.chunkSize)
	if err == nil {
		err = r.publish(ctx, rec, enc)
	}
	r.keeper.setFailed(key, err)
	return err
}
