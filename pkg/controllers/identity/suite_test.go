package identity

// The identity controller's own suite: one real API server for the package
// (envtest) and Reconcile called directly. ClusterProperties are
// cluster-scoped, so each test deletes the ones it made.

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/clusterset/clusterset/internal/testenv"
	aboutv1alpha1 "github.com/clusterset/clusterset/pkg/apis/about/v1alpha1"
)

var apiServer testenv.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	apiServer.Stop()
	os.Exit(code)
}

type suite struct {
	t      *testing.T
	c      client.Client
	ctx    context.Context
	store  *Store
	events *events.FakeRecorder
}

func newSuite(t *testing.T) *suite {
	cp := apiServer.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	s := &suite{t: t, c: cp.Client, ctx: ctx, store: NewStore(), events: events.NewFakeRecorder(10)}
	clean := func() {
		for _, name := range []string{ClusterIDProperty, ClusterSetIDProperty} {
			_ = client.IgnoreNotFound(s.c.Delete(context.Background(), property(name, "")))
		}
	}
	clean()
	t.Cleanup(func() { clean(); cancel() })
	return s
}

func property(name, value string) *aboutv1alpha1.ClusterProperty {
	p := &aboutv1alpha1.ClusterProperty{Spec: aboutv1alpha1.ClusterPropertySpec{Value: value}}
	p.Name = name
	return p
}

func (s *suite) reconcile(defaults Identity) reconcile.Result {
	s.t.Helper()
	res, err := NewController(s.c, s.events, s.store, defaults).Reconcile(s.ctx, reconcile.Request{})
	if err != nil {
		s.t.Fatalf("Reconcile: %v", err)
	}
	return res
}

func (s *suite) value(name string) string {
	s.t.Helper()
	var p aboutv1alpha1.ClusterProperty
	if err := s.c.Get(s.ctx, client.ObjectKey{Name: name}, &p); err != nil {
		s.t.Fatalf("ClusterProperty %s: %v", name, err)
	}
	return p.Spec.Value
}

// Absent properties are created from the defaults (the flags), and the
// identity becomes ready.
func TestCreatesFromDefaults(t *testing.T) {
	s := newSuite(t)
	s.reconcile(Identity{ClusterID: "cls-a", ClusterSetID: "set-1"})
	if s.value(ClusterIDProperty) != "cls-a" || s.value(ClusterSetIDProperty) != "set-1" {
		t.Errorf("properties %q/%q, want set-1/cls-a", s.value(ClusterSetIDProperty), s.value(ClusterIDProperty))
	}
	select {
	case <-s.store.Ready():
	default:
		t.Fatal("the store is not ready")
	}
	var kubeSystem corev1.Namespace
	if err := s.c.Get(s.ctx, client.ObjectKey{Name: metav1.NamespaceSystem}, &kubeSystem); err != nil {
		t.Fatal(err)
	}
	// The UID tells this cluster apart from another given the same ID.
	if id, err := s.store.Current(); err != nil || id != (Identity{ClusterID: "cls-a", ClusterSetID: "set-1", UID: string(kubeSystem.UID)}) {
		t.Errorf("Current = %+v, %v; want the kube-system namespace's UID %s", id, err, kubeSystem.UID)
	}
}

// Existing properties win over the defaults, and are never rewritten.
func TestPropertiesWinOverDefaults(t *testing.T) {
	s := newSuite(t)
	for _, p := range []*aboutv1alpha1.ClusterProperty{property(ClusterIDProperty, "from-property"), property(ClusterSetIDProperty, "set-p")} {
		if err := s.c.Create(s.ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	s.reconcile(Identity{ClusterID: "from-flag", ClusterSetID: "set-f"})
	if id, err := s.store.Current(); err != nil || id.ClusterID != "from-property" || id.ClusterSetID != "set-p" {
		t.Errorf("Current = %+v, %v; want the properties' values", id, err)
	}
	if s.value(ClusterIDProperty) != "from-property" {
		t.Error("the property was rewritten")
	}
}

// A missing or invalid identity is reported (event, Current's error) and
// looked at again, never a crash; a later change asks for a restart.
func TestMissingInvalidAndChangedIdentity(t *testing.T) {
	s := newSuite(t)
	if res := s.reconcile(Identity{}); res.RequeueAfter <= 0 {
		t.Error("a missing identity is not looked at again")
	}
	if _, err := s.store.Current(); err == nil {
		t.Error("Current has no error without an identity")
	}
	wantEvent(t, s.events, "Warning MissingClusterIdentity")

	if err := s.c.Create(s.ctx, property(ClusterIDProperty, "Not_A_Label")); err != nil {
		t.Fatal(err)
	}
	if err := s.c.Create(s.ctx, property(ClusterSetIDProperty, "set-1")); err != nil {
		t.Fatal(err)
	}
	s.reconcile(Identity{})
	if _, err := s.store.Current(); err == nil || !strings.Contains(err.Error(), "not a DNS-1123 label") {
		t.Errorf("Current error = %v, want the invalid label named", err)
	}
	wantEvent(t, s.events, "Warning InvalidClusterIdentity")

	p := property(ClusterIDProperty, "")
	if err := s.c.Get(s.ctx, client.ObjectKeyFromObject(p), p); err != nil {
		t.Fatal(err)
	}
	p.Spec.Value = "cls-a"
	if err := s.c.Update(s.ctx, p); err != nil {
		t.Fatal(err)
	}
	s.reconcile(Identity{})
	if id, err := s.store.Current(); err != nil || id.ClusterID != "cls-a" {
		t.Fatalf("Current = %+v, %v after the fix", id, err)
	}

	p.Spec.Value = "cls-b"
	if err := s.c.Update(s.ctx, p); err != nil {
		t.Fatal(err)
	}
	s.reconcile(Identity{})
	id, err := s.store.Current()
	if err == nil || !strings.Contains(err.Error(), "restart") || id.ClusterID != "cls-a" {
		t.Errorf("after a change while running: Current = %+v, %v; want cls-a kept and a restart asked for", id, err)
	}
}

func wantEvent(t *testing.T, rec *events.FakeRecorder, prefix string) {
	t.Helper()
	for {
		select {
		case e := <-rec.Events:
			if strings.HasPrefix(e, prefix) {
				return
			}
		default:
			t.Fatalf("no event %q", prefix)
		}
	}
}
