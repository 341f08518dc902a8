package imports

// The import controller's own suite: one real API server for the package
// (envtest), registrytest's in-memory store as the registry, a fake clock,
// and Reconcile called directly. test/integration runs the same controller
// in a manager across clusters.

import (
	"context"
	"os"
	"slices"
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
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/internal/testenv"
	"github.com/clusterset/clusterset/pkg/controllers/controllertest"
	"github.com/clusterset/clusterset/pkg/controllers/identity"
	"github.com/clusterset/clusterset/pkg/names"
	"github.com/clusterset/clusterset/pkg/namespaces"
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

// suite is one test's world: a namespace on the shared API server and an
// in-memory registry that this cluster (cls-a) reads and cls-b and cls-c
// write.
type suite struct {
	t      *testing.T
	c      client.Client
	ns     string
	store  *registrytest.MemoryStore
	link   *controllertest.Link
	events *events.FakeRecorder
	ctrl   *Controller
	ctx    context.Context
}

func newSuite(t *testing.T) *suite {
	cp := apiServer.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	s := &suite{t: t, c: cp.Client, ns: controllertest.Namespace(t, cp.Client), store: registrytest.NewMemoryStore(),
		events: events.NewFakeRecorder(100), ctx: ctx}
	s.link = controllertest.NewLink(t, s.store, identity.Identity{ClusterSetID: clusterSet, ClusterID: "cls-a"})
	s.ctrl = NewController(s.c, s.events, s.link, namespaces.Exclusions{})
	s.ctrl.Clock = clocktesting.NewFakeClock(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
	return s
}

// publish writes cluster's record of name with the given endpoint addresses
// and waits until cls-a's view shows it.
func (s *suite) publish(cluster, name string, addrs ...string) {
	s.t.Helper()
	rec := &registry.Record{Namespace: s.ns, Name: name, Spec: registry.ServiceSpec{
		Type:          registry.ClusterSetIP,
		Ports:         []registry.Port{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}},
		IPFamilies:    []corev1.IPFamily{corev1.IPv4Protocol},
		ExportCreated: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	}}
	for _, a := range addrs {
		rec.Endpoints = append(rec.Endpoints, registry.Endpoint{Address: a, AddressType: discoveryv1.AddressTypeIPv4, Ready: true, Serving: true,
			Ports: []registry.EndpointPort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080}}})
	}
	reg := s.store.Registry(clusterSet, cluster)
	if err := reg.Publish(s.ctx, rec); err != nil {
		s.t.Fatal(err)
	}
	s.waitView(name, func(recs []registry.Record) bool {
		for _, r := range recs {
			if r.ClusterID == cluster && len(r.Endpoints) == len(addrs) {
				return true
			}
		}
		return false
	})
}

func (s *suite) withdraw(cluster, name string) {
	s.t.Helper()
	if err := s.store.Registry(clusterSet, cluster).Withdraw(s.ctx, registry.ServiceKey{Namespace: s.ns, Name: name}); err != nil {
		s.t.Fatal(err)
	}
	s.waitView(name, func(recs []registry.Record) bool {
		return !slices.ContainsFunc(recs, func(r registry.Record) bool { return r.ClusterID == cluster })
	})
}

func (s *suite) waitView(name string, ok func([]registry.Record) bool) {
	s.t.Helper()
	controllertest.Eventually(s.t, "cls-a's view of "+name, func() bool {
		reg, _, err := s.link.Registry()
		if err != nil {
			return false
		}
		recs, err := reg.Records(registry.ServiceKey{Namespace: s.ns, Name: name})
		return err == nil && ok(recs)
	})
}

func (s *suite) mustReconcile(name string) reconcile.Result {
	s.t.Helper()
	res, err := s.ctrl.Reconcile(s.ctx, reconcile.Request{NamespacedName: client.ObjectKey{Namespace: s.ns, Name: name}})
	if err != nil {
		s.t.Fatalf("Reconcile: %v", err)
	}
	return res
}

// imported returns the ServiceImport, the derived Service and the imported
// EndpointSlices' ready addresses by source cluster.
func (s *suite) imported(name string) (*mcsv1beta1.ServiceImport, *corev1.Service, map[string][]string) {
	s.t.Helper()
	var imp mcsv1beta1.ServiceImport
	if err := s.c.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: name}, &imp); err != nil {
		s.t.Fatalf("ServiceImport: %v", err)
	}
	var svc corev1.Service
	if err := s.c.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: DerivedServiceName(name)}, &svc); err != nil {
		s.t.Fatalf("derived Service: %v", err)
	}
	return &imp, &svc, s.sliceAddresses(name)
}

func (s *suite) sliceAddresses(name string) map[string][]string {
	s.t.Helper()
	var list discoveryv1.EndpointSliceList
	if err := s.c.List(s.ctx, &list, client.InNamespace(s.ns), client.MatchingLabels{mcsv1beta1.LabelServiceName: name}); err != nil {
		s.t.Fatal(err)
	}
	out := map[string][]string{}
	for _, es := range list.Items {
		if es.Labels[discoveryv1.LabelManagedBy] != names.ManagedBy || es.Labels[discoveryv1.LabelServiceName] != DerivedServiceName(name) {
			s.t.Errorf("slice %s labels %v: want managed-by %s and service-name %s", es.Name, es.Labels, names.ManagedBy, DerivedServiceName(name))
		}
		src := es.Labels[mcsv1beta1.LabelSourceCluster]
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				out[src] = append(out[src], ep.Addresses...)
			}
		}
		slices.Sort(out[src])
	}
	return out
}

// Records of two clusters become one ServiceImport with the derived
// Service's VIP, one EndpointSlice per source cluster, status.clusters and
// Ready (I1, I2, I4, I5).
func TestImport(t *testing.T) {
	s := newSuite(t)
	s.publish("cls-b", "web", "10.2.0.1", "10.2.0.2")
	s.publish("cls-c", "web", "10.3.0.1")
	s.mustReconcile("web")

	imp, svc, addrs := s.imported("web")
	if imp.Spec.Type != mcsv1beta1.ClusterSetIP || len(imp.Spec.Ports) != 1 || imp.Spec.Ports[0].Port != 80 {
		t.Errorf("ServiceImport spec = %+v", imp.Spec)
	}
	if len(imp.Spec.IPs) != 1 || !slices.Equal(imp.Spec.IPs, svc.Spec.ClusterIPs) {
		t.Errorf("ServiceImport ips %v, want the derived Service's %v", imp.Spec.IPs, svc.Spec.ClusterIPs)
	}
	if svc.Spec.Selector != nil || svc.Labels[LabelServiceImport] != "web" || !metav1.IsControlledBy(svc, imp) {
		t.Errorf("derived Service: selector %v, labels %v, owners %v", svc.Spec.Selector, svc.Labels, svc.OwnerReferences)
	}
	var clusters []string
	for _, c := range imp.Status.Clusters {
		clusters = append(clusters, c.Cluster)
	}
	if !slices.Equal(clusters, []string{"cls-b", "cls-c"}) {
		t.Errorf("status.clusters = %v", clusters)
	}
	if !meta.IsStatusConditionTrue(imp.Status.Conditions, string(mcsv1beta1.ServiceImportConditionReady)) {
		t.Errorf("Ready not True: %+v", imp.Status.Conditions)
	}
	want := map[string][]string{"cls-b": {"10.2.0.1", "10.2.0.2"}, "cls-c": {"10.3.0.1"}}
	if !mapsEqual(addrs, want) {
		t.Errorf("imported addresses %v, want %v", addrs, want)
	}

	// One cluster withdraws: its slice goes, the other stays, and an event
	// says the exporters changed.
	s.withdraw("cls-c", "web")
	s.mustReconcile("web")
	imp, _, addrs = s.imported("web")
	if want := map[string][]string{"cls-b": {"10.2.0.1", "10.2.0.2"}}; !mapsEqual(addrs, want) {
		t.Errorf("after cls-c withdrew: %v, want %v", addrs, want)
	}
	if len(imp.Status.Clusters) != 1 {
		t.Errorf("status.clusters = %v after cls-c withdrew", imp.Status.Clusters)
	}
	controllertest.WantEvent(t, s.events, "Normal "+reasonClustersChanged)

	// The last one withdraws: everything of the import goes (I5).
	s.withdraw("cls-b", "web")
	s.mustReconcile("web")
	if err := s.c.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: "web"}, &mcsv1beta1.ServiceImport{}); !apierrors.IsNotFound(err) {
		t.Errorf("ServiceImport after the last withdrawal: %v", err)
	}
	if err := s.c.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: DerivedServiceName("web")}, &corev1.Service{}); !apierrors.IsNotFound(err) {
		t.Errorf("derived Service after the last withdrawal: %v", err)
	}
	if addrs := s.sliceAddresses("web"); len(addrs) != 0 {
		t.Errorf("slices after the last withdrawal: %v", addrs)
	}
}

// A cluster whose heartbeat is past the grace period keeps its part of the
// ServiceImport but loses its endpoints (R1).
func TestDeadClusterEndpointsDropped(t *testing.T) {
	s := newSuite(t)
	s.publish("cls-b", "web", "10.2.0.1")
	s.publish("cls-c", "web", "10.3.0.1")
	s.link.SetAlive("cls-c", false)
	s.mustReconcile("web")
	imp, _, addrs := s.imported("web")
	if want := map[string][]string{"cls-b": {"10.2.0.1"}}; !mapsEqual(addrs, want) {
		t.Errorf("with cls-c dead: %v, want %v", addrs, want)
	}
	if len(imp.Status.Clusters) != 2 {
		t.Errorf("status.clusters = %v: every cluster's record is still merged", imp.Status.Clusters)
	}
	s.link.SetAlive("cls-c", true)
	s.mustReconcile("web")
	if _, _, addrs := s.imported("web"); len(addrs["cls-c"]) != 1 {
		t.Errorf("cls-c alive again, its endpoints %v", addrs)
	}
}

// Without a usable registry nothing local is touched (R2); without the
// namespace nothing is created (I1); an excluded namespace gets nothing.
func TestNothingImported(t *testing.T) {
	s := newSuite(t)
	s.publish("cls-b", "web", "10.2.0.1")
	s.mustReconcile("web")
	s.imported("web")

	s.link.SetNotReady(controllertest.NotReady)
	if res := s.mustReconcile("web"); res.RequeueAfter <= 0 {
		t.Error("not requeued while the registry is not ready")
	}
	if _, _, addrs := s.imported("web"); len(addrs["cls-b"]) != 1 {
		t.Errorf("the import changed while the registry was not ready: %v", addrs)
	}
	s.link.SetNotReady(nil)

	s.ctrl.excluded = controllertest.Exclusions(t, s.ns)
	s.mustReconcile("web")
	if err := s.c.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: "web"}, &mcsv1beta1.ServiceImport{}); !apierrors.IsNotFound(err) {
		t.Errorf("ServiceImport in an excluded namespace: %v", err)
	}
	s.ctrl.excluded = namespaces.Exclusions{}

	missing := registry.ServiceKey{Namespace: "absent-" + s.ns, Name: "web"}
	if err := s.store.Registry(clusterSet, "cls-b").Publish(s.ctx, &registry.Record{Namespace: missing.Namespace, Name: missing.Name,
		Spec: registry.ServiceSpec{Type: registry.ClusterSetIP}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ctrl.Reconcile(s.ctx, reconcile.Request{NamespacedName: missing}); err != nil {
		t.Errorf("Reconcile for a namespace that does not exist: %v", err)
	}
	var ns corev1.Namespace
	if err := s.c.Get(s.ctx, client.ObjectKey{Name: missing.Namespace}, &ns); !apierrors.IsNotFound(err) {
		t.Errorf("the import created namespace %s: %v", missing.Namespace, err)
	}
}

// A Service of the user's holding the derived name is not taken over: the
// import says why in Ready=False and an event.
func TestDerivedNameTaken(t *testing.T) {
	s := newSuite(t)
	theirs := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: DerivedServiceName("web")},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 9}}}}
	if err := s.c.Create(s.ctx, theirs); err != nil {
		t.Fatal(err)
	}
	s.publish("cls-b", "web", "10.2.0.1")
	if _, err := s.ctrl.Reconcile(s.ctx, reconcile.Request{NamespacedName: client.ObjectKey{Namespace: s.ns, Name: "web"}}); err == nil {
		t.Error("Reconcile returned no error although the derived Service is not ours")
	}
	var imp mcsv1beta1.ServiceImport
	if err := s.c.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: "web"}, &imp); err != nil {
		t.Fatal(err)
	}
	c := meta.FindStatusCondition(imp.Status.Conditions, string(mcsv1beta1.ServiceImportConditionReady))
	if c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "not managed by clusterset") {
		t.Errorf("Ready = %+v, want False saying the Service is not ours", c)
	}
	controllertest.WantEvent(t, s.events, "Warning ")
	var svc corev1.Service
	if err := s.c.Get(s.ctx, client.ObjectKeyFromObject(theirs), &svc); err != nil || svc.Spec.Ports[0].Port != 9 || svc.Labels[names.LabelManagedBy] != "" {
		t.Errorf("the user's Service was changed: %+v, %v", svc.Spec.Ports, err)
	}
}

func mapsEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// EndpointSlices that another controller manages are never touched, even
// when they carry the labels of an import (its service name, a source
// cluster, the derived Service): the controller writes and deletes only
// slices with its own managed-by label.
func TestForeignSlicesLeftAlone(t *testing.T) {
	s := newSuite(t)
	foreign := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "web-foreign", Labels: map[string]string{
			mcsv1beta1.LabelServiceName:   "web",
			mcsv1beta1.LabelSourceCluster: "cls-b",
			discoveryv1.LabelServiceName:  DerivedServiceName("web"),
			discoveryv1.LabelManagedBy:    "someone-else.example.com",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.9.9.9"}}},
	}
	if err := s.c.Create(s.ctx, foreign); err != nil {
		t.Fatal(err)
	}
	unchanged := func(when string) {
		t.Helper()
		var got discoveryv1.EndpointSlice
		if err := s.c.Get(s.ctx, client.ObjectKeyFromObject(foreign), &got); err != nil {
			t.Fatalf("%s: the foreign slice: %v", when, err)
		}
		if got.ResourceVersion != foreign.ResourceVersion {
			t.Errorf("%s: the foreign slice was written (resourceVersion %s, was %s)", when, got.ResourceVersion, foreign.ResourceVersion)
		}
	}
	s.publish("cls-b", "web", "10.2.0.1")
	s.mustReconcile("web")
	unchanged("after the import")
	s.withdraw("cls-b", "web")
	s.mustReconcile("web")
	unchanged("after the last withdrawal")
	if err := s.c.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: "web"}, &mcsv1beta1.ServiceImport{}); !apierrors.IsNotFound(err) {
		t.Errorf("ServiceImport after the last withdrawal: %v", err)
	}
}
