package export

// The export controller's own suite: one real API server for the package
// (envtest), registrytest's in-memory store as the registry, a fake clock,
// and Reconcile called directly, so that each test sees exactly what one
// reconcile does. test/integration runs the same controller in a manager
// across clusters.

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/internal/testenv"
	"github.com/clusterset/clusterset/pkg/controllers/controllertest"
	"github.com/clusterset/clusterset/pkg/controllers/identity"
	"github.com/clusterset/clusterset/pkg/names"
	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/registrytest"
)

var apiServer testenv.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	apiServer.Stop()
	os.Exit(code)
}

const clusterSet = "set-1"

// suite is one test's world: a namespace on the shared API server, an
// in-memory registry with this cluster (cls-a) and a second one (cls-b).
type suite struct {
	t      *testing.T
	c      client.Client
	ns     string
	store  *registrytest.MemoryStore
	link   *controllertest.Link
	other  registry.Registry // cls-b's handle on the same store
	clock  *clocktesting.FakeClock
	events *events.FakeRecorder
	ctrl   *Controller
}

func newSuite(t *testing.T) *suite {
	cp := apiServer.Get(t)
	s := &suite{t: t, c: cp.Client, ns: controllertest.Namespace(t, cp.Client), store: registrytest.NewMemoryStore(),
		clock: clocktesting.NewFakeClock(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)), events: events.NewFakeRecorder(100)}
	s.link = controllertest.NewLink(t, s.store, identity.Identity{ClusterSetID: clusterSet, ClusterID: "cls-a"})
	s.other = controllertest.StartRegistry(t, s.store, clusterSet, "cls-b")
	s.ctrl = NewController(s.c, s.events, s.link, controllertest.Exclusions(t, "kube-system"))
	s.ctrl.Clock = s.clock
	return s
}

func (s *suite) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	s.t.Cleanup(cancel)
	return ctx
}

func (s *suite) create(objs ...client.Object) {
	s.t.Helper()
	for _, o := range objs {
		o.SetNamespace(s.ns)
		if err := s.c.Create(s.ctx(), o); err != nil {
			s.t.Fatal(err)
		}
	}
}

func (s *suite) reconcile(name string) (reconcile.Result, error) {
	return s.ctrl.Reconcile(s.ctx(), reconcile.Request{NamespacedName: client.ObjectKey{Namespace: s.ns, Name: name}})
}

func (s *suite) mustReconcile(name string) reconcile.Result {
	s.t.Helper()
	res, err := s.reconcile(name)
	if err != nil {
		s.t.Fatalf("Reconcile: %v", err)
	}
	return res
}

func (s *suite) export(name string) *mcsv1beta1.ServiceExport {
	s.t.Helper()
	var se mcsv1beta1.ServiceExport
	if err := s.c.Get(s.ctx(), client.ObjectKey{Namespace: s.ns, Name: name}, &se); err != nil {
		s.t.Fatal(err)
	}
	return &se
}

// condition fails the test unless the export's condition typ has status and reason.
func (s *suite) condition(se *mcsv1beta1.ServiceExport, typ mcsv1beta1.ServiceExportConditionType, status metav1.ConditionStatus, reason string) *metav1.Condition {
	s.t.Helper()
	c := meta.FindStatusCondition(se.Status.Conditions, string(typ))
	if c == nil || c.Status != status || c.Reason != reason {
		s.t.Fatalf("condition %s = %+v, want %s %s", typ, c, status, reason)
	}
	if c.ObservedGeneration != se.Generation {
		s.t.Errorf("condition %s observedGeneration %d, want %d", typ, c.ObservedGeneration, se.Generation)
	}
	return c
}

// records returns what cls-b sees of name, once its view shows want records.
func (s *suite) records(name string, want int) []registry.Record {
	s.t.Helper()
	key := registry.ServiceKey{Namespace: s.ns, Name: name}
	var recs []registry.Record
	controllertest.Eventually(s.t, "cls-b to see "+key.String(), func() bool {
		recs, _ = s.other.Records(key)
		return len(recs) == want
	})
	return recs
}

func service(name string, ports ...corev1.ServicePort) *corev1.Service {
	if len(ports) == 0 {
		ports = []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}
	}
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{Ports: ports}}
}

func endpointSlice(service string, addrs ...string) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: service + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, a := range addrs {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	return es
}

func serviceExport(name string) *mcsv1beta1.ServiceExport {
	return &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// An export of a valid Service gets the finalizer, Valid, Ready and
// Conflict=False, and its record reaches the registry with this cluster's
// identity (filled in by the backend) and the clock's time.
func TestExportIsPublished(t *testing.T) {
	s := newSuite(t)
	s.create(service("web"), endpointSlice("web", "10.1.0.1", "10.1.0.2"), serviceExport("web"))
	if res := s.mustReconcile("web"); res.RequeueAfter != 0 {
		t.Errorf("RequeueAfter = %v, want none once published", res.RequeueAfter)
	}
	se := s.export("web")
	if !controllerutil.ContainsFinalizer(se, names.ExportFinalizer) {
		t.Errorf("finalizers = %v, want %s", se.Finalizers, names.ExportFinalizer)
	}
	s.condition(se, mcsv1beta1.ServiceExportConditionValid, metav1.ConditionTrue, "Valid")
	ready := s.condition(se, mcsv1beta1.ServiceExportConditionReady, metav1.ConditionTrue, "Exported")
	if want := "exported to clusterset set-1 as cluster cls-a with 2 endpoints (2 ready)"; ready.Message != want {
		t.Errorf("Ready message %q, want %q", ready.Message, want)
	}
	s.condition(se, mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionFalse, "NoConflicts")
	controllertest.WantEvent(s.t, s.events, "Normal Exported")

	rec := s.records("web", 1)[0]
	if rec.ClusterID != "cls-a" || rec.ClusterSetID != clusterSet {
		t.Errorf("record of %q in %q, want cls-a in %s", rec.ClusterID, rec.ClusterSetID, clusterSet)
	}
	if len(rec.Endpoints) != 2 || rec.Endpoints[0].Address != "10.1.0.1" || rec.Endpoints[0].Ports[0].Port != 8080 {
		t.Errorf("endpoints = %+v", rec.Endpoints)
	}
	if !rec.Changed.Equal(s.clock.Now()) {
		t.Errorf("Changed = %v, want the clock's %v (no trigger time on the slices)", rec.Changed, s.clock.Now())
	}

	// A reconcile that changes nothing writes nothing: not the status, not
	// the registry, and no event.
	rv, writes := se.ResourceVersion, s.store.Writes()
	s.clock.Step(time.Minute)
	s.mustReconcile("web")
	if got := s.export("web").ResourceVersion; got != rv {
		t.Errorf("an unchanged export was written: resourceVersion %s → %s", rv, got)
	}
	if got := s.store.Writes(); got != writes {
		t.Errorf("an unchanged export wrote to the registry: %d writes → %d", writes, got)
	}
	if rec2 := s.records("web", 1)[0]; !rec2.Changed.Equal(rec.Changed) {
		t.Errorf("Changed moved to %v without a change", rec2.Changed)
	}

	// An endpoint more: one write, stamped with the clock's new time.
	var es discoveryv1.EndpointSlice
	if err := s.c.Get(s.ctx(), client.ObjectKey{Namespace: s.ns, Name: "web-1"}, &es); err != nil {
		t.Fatal(err)
	}
	es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.1.0.3"}})
	if err := s.c.Update(s.ctx(), &es); err != nil {
		t.Fatal(err)
	}
	s.mustReconcile("web")
	if got := s.store.Writes(); got != writes+1 {
		t.Errorf("an endpoint more cost %d registry writes, want 1", got-writes)
	}
	controllertest.Eventually(t, "cls-b to see the third endpoint", func() bool {
		recs, _ := s.other.Records(registry.ServiceKey{Namespace: s.ns, Name: "web"})
		return len(recs) == 1 && len(recs[0].Endpoints) == 3 && recs[0].Changed.Equal(s.clock.Now())
	})
	if e := controllertest.NextEvent(s.events); e != "" {
		t.Errorf("event %q after a reconcile that changed nothing", e)
	}
}

// Invalid exports are refused with Valid=False and a Warning event, and
// whatever was published is withdrawn (E2, E3, E4).
func TestInvalidExports(t *testing.T) {
	for _, tc := range []struct {
		name    string
		objs    func() []client.Object
		reason  string
		exclude bool
	}{
		{"no Service", func() []client.Object { return nil }, "NoService", false},
		{"ExternalName", func() []client.Object {
			svc := service("web")
			svc.Spec = corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"}
			return []client.Object{svc}
		}, "InvalidServiceType", false},
		{"excluded namespace", func() []client.Object { return []client.Object{service("web")} }, "NamespaceExcluded", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSuite(t)
			if tc.exclude {
				s.ctrl.excluded = controllertest.Exclusions(t, s.ns)
			}
			s.create(append(tc.objs(), serviceExport("web"))...)
			s.mustReconcile("web")
			se := s.export("web")
			s.condition(se, mcsv1beta1.ServiceExportConditionValid, metav1.ConditionFalse, tc.reason)
			s.condition(se, mcsv1beta1.ServiceExportConditionReady, metav1.ConditionFalse, "Pending")
			if c := meta.FindStatusCondition(se.Status.Conditions, string(mcsv1beta1.ServiceExportConditionConflict)); c != nil {
				t.Errorf("an invalid export has a Conflict condition: %+v", c)
			}
			controllertest.WantEvent(s.t, s.events, "Warning "+tc.reason)
			if s.store.Holds(clusterSet, "cls-a", registry.ServiceKey{Namespace: s.ns, Name: "web"}) || s.store.Writes() != 0 {
				t.Errorf("an invalid export was published: %d writes", s.store.Writes())
			}
		})
	}

	// A valid export whose Service goes away is withdrawn.
	s := newSuite(t)
	svc := service("web")
	s.create(svc, serviceExport("web"))
	s.mustReconcile("web")
	s.records("web", 1)
	if err := s.c.Delete(s.ctx(), svc); err != nil {
		t.Fatal(err)
	}
	s.mustReconcile("web")
	s.condition(s.export("web"), mcsv1beta1.ServiceExportConditionValid, metav1.ConditionFalse, "NoService")
	s.records("web", 0)
}

// Until the registry is ready the export says so and nothing is written,
// not even the finalizer (C1).
func TestRegistryNotReady(t *testing.T) {
	s := newSuite(t)
	s.link.SetNotReady(errors.Join(controllertest.NotReady, errors.New("identity not set")))
	s.create(service("web"), serviceExport("web"))
	res := s.mustReconcile("web")
	if res.RequeueAfter <= 0 {
		t.Error("not requeued while the registry is not ready")
	}
	se := s.export("web")
	ready := s.condition(se, mcsv1beta1.ServiceExportConditionReady, metav1.ConditionFalse, reasonRegistryNotReady)
	if !strings.Contains(ready.Message, "identity not set") {
		t.Errorf("Ready message %q does not say why", ready.Message)
	}
	if len(se.Finalizers) != 0 {
		t.Errorf("finalizers %v before anything was published", se.Finalizers)
	}

	if s.store.Writes() != 0 {
		t.Errorf("%d registry writes while it was not ready", s.store.Writes())
	}

	// Ready again: published, and Exported is announced.
	s.link.SetNotReady(nil)
	s.mustReconcile("web")
	s.condition(s.export("web"), mcsv1beta1.ServiceExportConditionReady, metav1.ConditionTrue, "Exported")
	controllertest.WantEvent(s.t, s.events, "Normal Exported")
	s.records("web", 1)
}

// A Ready export stays Ready, unwritten, while a just-started controller's
// registry link is starting (its view syncing: the record published by the
// previous process is still there), for startGrace; a link that is not ready
// for another reason, or still starting after startGrace, is reported.
func TestRestartKeepsReadyWhileTheLinkStarts(t *testing.T) {
	s := newSuite(t)
	s.create(service("web"), serviceExport("web"))
	s.mustReconcile("web")
	s.condition(s.export("web"), mcsv1beta1.ServiceExportConditionReady, metav1.ConditionTrue, "Exported")

	// The process restarts: a new controller, its link not ready yet.
	s.ctrl = NewController(s.c, s.events, s.link, controllertest.Exclusions(t, "kube-system"))
	s.ctrl.Clock = s.clock
	s.ctrl.registered = s.clock.Now()
	s.link.SetNotReady(controllertest.NotReady)
	before := s.export("web").ResourceVersion
	if res := s.mustReconcile("web"); res.RequeueAfter <= 0 {
		t.Error("not requeued while the link starts")
	}
	if se := s.export("web"); se.ResourceVersion != before {
		t.Errorf("the ServiceExport was written while the link started (resourceVersion %s, was %s)", se.ResourceVersion, before)
	}
	s.condition(s.export("web"), mcsv1beta1.ServiceExportConditionReady, metav1.ConditionTrue, "Exported")
	// Earlier still: the identity was not read yet.
	s.link.SetNotReady(identity.ErrNotRead)
	s.mustReconcile("web")
	if se := s.export("web"); se.ResourceVersion != before {
		t.Errorf("the ServiceExport was written before the identity was read (resourceVersion %s, was %s)", se.ResourceVersion, before)
	}

	// Not a start: the identity is wrong. Reported at once.
	s.link.SetNotReady(errors.Join(controllertest.NotReady, errors.New("identity not set")))
	s.mustReconcile("web")
	s.condition(s.export("web"), mcsv1beta1.ServiceExportConditionReady, metav1.ConditionFalse, reasonRegistryNotReady)

	// Ready again, then a start that lasts past startGrace.
	s.link.SetNotReady(nil)
	s.mustReconcile("web")
	s.condition(s.export("web"), mcsv1beta1.ServiceExportConditionReady, metav1.ConditionTrue, "Exported")
	s.ctrl.registered = s.clock.Now()
	s.link.SetNotReady(controllertest.NotReady)
	s.clock.Step(startGrace)
	s.mustReconcile("web")
	s.condition(s.export("web"), mcsv1beta1.ServiceExportConditionReady, metav1.ConditionFalse, reasonRegistryNotReady)
}

// The registry refusing a write makes Ready=False Failed, a Warning event,
// and an error (retried with backoff) (R2); the record comes once it is back.
func TestRegistryDown(t *testing.T) {
	s := newSuite(t)
	s.create(service("web"), serviceExport("web"))
	s.store.SetDown(true)
	if _, err := s.reconcile("web"); err == nil {
		t.Fatal("Reconcile returned no error while the registry refused the write")
	}
	ready := s.condition(s.export("web"), mcsv1beta1.ServiceExportConditionReady, metav1.ConditionFalse, "Failed")
	if !strings.Contains(ready.Message, registrytest.ErrOutage.Error()) {
		t.Errorf("Ready message %q does not carry the registry's error", ready.Message)
	}
	controllertest.WantEvent(s.t, s.events, "Warning PublishFailed")
	s.store.SetDown(false)
	s.mustReconcile("web")
	s.condition(s.export("web"), mcsv1beta1.ServiceExportConditionReady, metav1.ConditionTrue, "Exported")
	s.records("web", 1)
}

// Another cluster's export with other ports: Conflict=True with the merge's
// reason and a Warning event; resolved once the ports agree (C2).
func TestConflict(t *testing.T) {
	s := newSuite(t)
	s.create(service("web"), serviceExport("web"))
	theirs := &registry.Record{Namespace: s.ns, Name: "web", Spec: registry.ServiceSpec{
		Type:          registry.ClusterSetIP,
		IPFamilies:    []corev1.IPFamily{corev1.IPv4Protocol},
		Ports:         []registry.Port{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080}},
		ExportCreated: time.Now().Add(-time.Hour), // older: its ports win
	}}
	if err := s.other.Publish(s.ctx(), theirs); err != nil {
		t.Fatal(err)
	}
	s.records("web", 1)
	s.mustReconcile("web")
	c := s.condition(s.export("web"), mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionTrue, string(mcsv1beta1.ServiceExportReasonPortConflict))
	if !strings.Contains(c.Message, "cls-b") {
		t.Errorf("Conflict message %q does not name the other cluster", c.Message)
	}
	controllertest.WantEvent(s.t, s.events, "Warning PortConflict")

	theirs.Spec.Ports[0].Port = 80
	if err := s.other.Publish(s.ctx(), theirs); err != nil {
		t.Fatal(err)
	}
	controllertest.Eventually(t, "cls-a's view to show cls-b's new ports", func() bool {
		reg, _, _ := s.link.Registry()
		recs, _ := reg.Records(registry.ServiceKey{Namespace: s.ns, Name: "web"})
		for _, r := range recs {
			if r.ClusterID == "cls-b" {
				return r.Spec.Ports[0].Port == 80
			}
		}
		return false
	})
	s.mustReconcile("web")
	s.condition(s.export("web"), mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionFalse, "NoConflicts")
	controllertest.WantEvent(s.t, s.events, "Normal "+reasonConflictResolved)
}

// Deleting an export withdraws its record before the finalizer goes (E5);
// while the registry is down the export stays, finalizer and all.
func TestDeleteWithdraws(t *testing.T) {
	s := newSuite(t)
	s.create(service("web"), serviceExport("web"))
	s.mustReconcile("web")
	s.records("web", 1)
	if err := s.c.Delete(s.ctx(), s.export("web")); err != nil {
		t.Fatal(err)
	}
	s.store.SetDown(true)
	if _, err := s.reconcile("web"); err == nil {
		t.Error("finalizing with the registry down returned no error")
	}
	se := s.export("web")
	if !controllerutil.ContainsFinalizer(se, names.ExportFinalizer) {
		t.Fatal("the finalizer went although the record could not be withdrawn")
	}
	ready := s.condition(se, mcsv1beta1.ServiceExportConditionReady, metav1.ConditionFalse, "Failed")
	if !strings.Contains(ready.Message, "withdrawing") || !strings.Contains(ready.Message, registrytest.ErrOutage.Error()) {
		t.Errorf("Ready message %q does not say the withdrawal failed and why", ready.Message)
	}
	controllertest.WantEvent(s.t, s.events, "Warning WithdrawFailed")
	s.store.SetDown(false)
	s.mustReconcile("web")
	s.records("web", 0)
	err := s.c.Get(s.ctx(), client.ObjectKeyFromObject(se), &mcsv1beta1.ServiceExport{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("the ServiceExport is still there after finalizing: %v", err)
	}
	// A reconcile of a gone export is a no-op.
	s.mustReconcile("web")
}

// A record of this cluster without a ServiceExport (its finalizer removed by
// hand while the controller was down) is withdrawn.
func TestOrphanRecordIsWithdrawn(t *testing.T) {
	s := newSuite(t)
	reg, _, _ := s.link.Registry()
	if err := reg.Publish(s.ctx(), &registry.Record{Namespace: s.ns, Name: "gone", Spec: registry.ServiceSpec{Type: registry.ClusterSetIP}}); err != nil {
		t.Fatal(err)
	}
	s.records("gone", 1)
	s.mustReconcile("gone")
	s.records("gone", 0)
}
