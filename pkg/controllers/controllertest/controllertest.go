// Package controllertest helps the controllers' own suite tests call
// Reconcile directly: a Link over registrytest's in-memory store in place of
// registrylink.Link, and a namespace per test on a shared envtest API server.
package controllertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/clusterset/clusterset/pkg/controllers/identity"
	"github.com/clusterset/clusterset/pkg/controllers/registrylink"
	"github.com/clusterset/clusterset/pkg/namespaces"
	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/registrytest"
)

// Link stands in for registrylink.Link: it hands out one running Registry
// of a MemoryStore, and lets the test decide readiness and liveness. It
// satisfies the Link interfaces of the export and import controllers.
type Link struct {
	ID    identity.Identity
	Store *registrytest.MemoryStore
	reg   registry.Registry

	mu       sync.Mutex
	notReady error
	dead     map[string]bool
}

// NewLink returns a ready Link of id on store whose registry runs until the
// test ends; it waits until the registry's view has synced.
func NewLink(t testing.TB, store *registrytest.MemoryStore, id identity.Identity) *Link {
	t.Helper()
	return &Link{ID: id, Store: store, reg: StartRegistry(t, store, id.ClusterSetID, id.ClusterID), dead: map[string]bool{}}
}

// StartRegistry runs clusterID's registry of store until the test ends and
// waits until its view has synced.
func StartRegistry(t testing.TB, store *registrytest.MemoryStore, clusterSetID, clusterID string) registry.Registry {
	t.Helper()
	reg := store.Registry(clusterSetID, clusterID)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = reg.Run(ctx, func(registry.ServiceKey) {}) }()
	t.Cleanup(func() { cancel(); <-done })
	Eventually(t, "the registry view to sync", func() bool { return reg.HasSynced() })
	return reg
}

// SetNotReady makes Registry fail with err, e.g. one wrapping NotReady as
// registrylink.Link's errors do (nil: ready again).
func (l *Link) SetNotReady(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.notReady = err
}

// SetAlive marks cluster's heartbeat as within the grace period or not.
func (l *Link) SetAlive(cluster string, alive bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dead[cluster] = !alive
}

// Registry returns the running registry and the identity, or the error set
// by SetNotReady.
func (l *Link) Registry() (registry.Registry, identity.Identity, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.notReady != nil {
		return nil, l.ID, l.notReady
	}
	return l.reg, l.ID, nil
}

// Alive is false only for clusters marked so by SetAlive.
func (l *Link) Alive(cluster string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.dead[cluster]
}

// ClusterID is the identity's cluster ID.
func (l *Link) ClusterID() string { return l.ID.ClusterID }

// Source never fires: suite tests call Reconcile themselves.
func (l *Link) Source() source.Source {
	return source.Channel(make(chan event.GenericEvent), &handler.EnqueueRequestForObject{})
}

// NotReady is the error of a link whose registry is not ready yet.
var NotReady = registrylink.ErrNotReady

// Namespace creates a namespace with a random name for the test and deletes
// it when the test ends.
func Namespace(t testing.TB, c client.Client) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "test-" + hex.EncodeToString(b)}}
	if err := c.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), ns) })
	return ns.Name
}

// Eventually polls cond every 20 ms for up to 10 s and fails the test if it
// never holds.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// NextEvent returns the next event rec recorded ("Type Reason note"), or ""
// when there is none.
func NextEvent(rec *events.FakeRecorder) string {
	select {
	case e := <-rec.Events:
		return e
	default:
		return ""
	}
}

// WantEvent takes rec's events until one starts with prefix, and fails the
// test when none does.
func WantEvent(t testing.TB, rec *events.FakeRecorder, prefix string) {
	t.Helper()
	for e := NextEvent(rec); !strings.HasPrefix(e, prefix); e = NextEvent(rec) {
		if e == "" {
			t.Fatalf("no event %q", prefix)
		}
	}
}

// Exclusions is namespaces.NewExclusions for a test: names must be valid.
func Exclusions(t testing.TB, names ...string) namespaces.Exclusions {
	t.Helper()
	e, err := namespaces.NewExclusions(names)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
