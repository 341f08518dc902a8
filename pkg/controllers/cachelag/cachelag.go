// Package cachelag tells a reconciler that its informer cache has not caught
// up with a write the reconciler itself made.
//
// controller-runtime reconcilers read from informer caches and write to the
// API server. The watch event of a write arrives some milliseconds later, and
// in between every other event of the object (the write's own, an owned
// object's) starts a new reconcile that reads the version before the write.
// That reconcile computes the same status again, finds it different from the
// old copy, and writes it from the old resourceVersion: the API server
// refuses it with 409 Conflict, the request is retried with backoff, and any
// event it emitted (a condition it saw change) is emitted twice. In a burst
// of exports that was one write in three of a ServiceExport's or a
// ServiceImport's status (docs/benchmarks.md).
//
// A Tracker remembers the versions this process wrote over, per object UID.
// A reconciler that reads one of them skips its writes: the watch event of
// its own write is on its way and reconciles the object again.
//
// Creates are the same case with no version to compare: a reconcile that
// does not find in its cache an object this process has just created would
// create it again, and be answered AlreadyExists (also 409). A Tracker also
// remembers what this process created, by kind and key, until the cache shows
// it (Created, Unseen, Seen).
package cachelag

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/clock"
)

// Object is what a Tracker reads of an object: metav1.Object has it.
type Object interface {
	GetUID() types.UID
	GetResourceVersion() string
}

// Expiry is how long a Tracker keeps the versions an object was written over
// when the cache never shows it again (the object was deleted, or the watch
// lost the event and re-listed): far longer than a watch event takes, short
// enough that nothing waits on it for long.
const Expiry = time.Minute

// Tracker is safe for concurrent use. The zero value is ready; Clock defaults
// to the real clock.
type Tracker struct {
	Clock clock.PassiveClock

	mu      sync.Mutex
	written map[types.UID]*writes
	created map[createdKey]time.Time // when this process created each
	swept   time.Time                // when created was last swept of expired creates
}

// createdKey names an object this process created.
type createdKey struct {
	kind string
	key  types.NamespacedName
}

// CreateExpiry is how long Unseen reports an object this process created
// that the cache does not show: a cache shows its own creates within
// milliseconds, and an object deleted before the cache showed it (by someone
// else, at once) is created again after at most this long.
const CreateExpiry = 10 * time.Second

// Created records that this process has just created the object of kind
// (any name the caller uses consistently, such as "ServiceImport") and key.
func (t *Tracker) Created(kind string, key types.NamespacedName) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.created == nil {
		t.created = map[createdKey]time.Time{}
	}
	now := t.now()
	if now.Sub(t.swept) >= CreateExpiry {
		// Drop creates nobody marked Seen (an object deleted by someone
		// else before the cache showed it), at most once per CreateExpiry.
		t.sweepCreated(now)
	}
	t.created[createdKey{kind, key}] = now
}

// Unseen reports whether this process created the object of kind and key
// less than CreateExpiry ago: a cache that does not show it is behind, and
// creating it again would be refused. Call it only when the cache does not
// show the object.
func (t *Tracker) Unseen(kind string, key types.NamespacedName) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	k := createdKey{kind, key}
	at, ok := t.created[k]
	if !ok {
		return false
	}
	if now.Sub(at) < CreateExpiry {
		return true
	}
	t.sweepCreated(now) // drops this expired create, and any other
	return false
}

// sweepCreated drops the creates older than CreateExpiry. t.mu is held.
func (t *Tracker) sweepCreated(now time.Time) {
	for k, at := range t.created {
		if now.Sub(at) >= CreateExpiry {
			delete(t.created, k)
		}
	}
	t.swept = now
}

// ForgetCreated ends the tracking of the creates of kind: the caller deleted
// what it had created (or gave up on it), so a cache that does not show it
// is not behind.
func (t *Tracker) ForgetCreated(kind string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k := range t.created {
		if k.kind == kind {
			delete(t.created, k)
		}
	}
}

// Seen ends the tracking of one create: the cache shows the object, or the
// caller deleted it.
func (t *Tracker) Seen(kind string, key types.NamespacedName) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.created, createdKey{kind, key})
}

// writes are the versions of one object this process wrote over.
type writes struct {
	over sets.Set[string] // resourceVersions replaced by our writes
	at   time.Time        // when the last of them was written over
}

// Wrote records that this process replaced version prev of the object with
// obj (the object as the API server returned it after the write: its UID and
// new resourceVersion). prev "" (a create) is not recorded.
func (t *Tracker) Wrote(prev string, obj Object) {
	if prev == "" || obj.GetUID() == "" || prev == obj.GetResourceVersion() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.written == nil {
		t.written = map[types.UID]*writes{}
	}
	w := t.written[obj.GetUID()]
	if w == nil {
		w = &writes{over: sets.New[string]()}
		t.written[obj.GetUID()] = w
	}
	w.over.Insert(prev)
	w.at = t.now()
}

// Behind reports whether obj, read from the cache, is a version this process
// has since written over, so that its content is out of date. Reading any
// other version (the latest write's, or one somebody else wrote) ends the
// tracking of the object: the cache has caught up.
func (t *Tracker) Behind(obj Object) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.written[obj.GetUID()]
	if w == nil {
		return false
	}
	if w.over.Has(obj.GetResourceVersion()) && t.now().Sub(w.at) < Expiry {
		return true
	}
	delete(t.written, obj.GetUID())
	t.expire()
	return false
}

// Forget drops what is known of the object with uid, when it is deleted.
func (t *Tracker) Forget(uid types.UID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.written, uid)
}

// expire drops the objects whose last write is older than Expiry, so that
// objects the cache never showed again do not accumulate. Called with mu
// held, when an entry is dropped anyway, so that its cost is shared out
// with the writes.
func (t *Tracker) expire() {
	now := t.now()
	for uid, w := range t.written {
		if now.Sub(w.at) >= Expiry {
			delete(t.written, uid)
		}
	}
}

func (t *Tracker) now() time.Time {
	if t.Clock == nil {
		return time.Now()
	}
	return t.Clock.Now()
}
