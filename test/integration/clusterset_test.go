package integration

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/internal/testenv"
	"github.com/clusterset/clusterset/pkg/controllers/imports"
	"github.com/clusterset/clusterset/pkg/controllers/registrylink"
	"github.com/clusterset/clusterset/pkg/names"
	"github.com/clusterset/clusterset/pkg/namespaces"
	"github.com/clusterset/clusterset/pkg/registry/hub"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

const wait = 30 * time.Second

// TestClusterset runs the KEP-1645 checklist on three real control planes
// (cls1 is also the hub), each running clusterset-controller with only the
// shipped ClusterRole. Every subtest uses its own namespace.
func TestClusterset(t *testing.T) {
	cs := startClusterset(t, 3, registrylink.Options{HeartbeatInterval: time.Second, GracePeriod: 5 * time.Second})
	cls1, cls2, cls3 := cs.members[0], cs.members[1], cs.members[2]

	// The seed scenario. E1 I1 I2 I4 I5 E5.
	t.Run("SeedScenario", func(t *testing.T) {
		ns := "demo"
		mustCreate(t, cls1.admin, namespace(ns))
		mustCreate(t, cls2.admin, namespace(ns))
		lagBefore, _ := lagSamples(t, "cls1")
		mustCreate(t, cls1.admin, service(ns, "nginx-hello", tcpPort("http", 80)),
			endpointSlice(ns, "nginx-hello", "nginx-hello-abcde", discoveryv1.AddressTypeIPv4, 8080, true, "10.10.86.76", "10.10.86.77", "10.10.86.78"),
			serviceExport(ns, "nginx-hello"))

		// E1: valid, then ready once published; no conflicts alone.
		eventually(t, wait, "cls1 export Valid", exportCondition(cls1.admin, ns, "nginx-hello", "Valid", metav1.ConditionTrue, "Valid"))
		eventually(t, wait, "cls1 export Ready", exportCondition(cls1.admin, ns, "nginx-hello", "Ready", metav1.ConditionTrue, "Exported"))
		eventually(t, wait, "cls1 export Conflict=False", exportCondition(cls1.admin, ns, "nginx-hello", "Conflict", metav1.ConditionFalse, "NoConflicts"))

		// I1: both clusters with the namespace import it, exporter included.
		for _, m := range []*member{cls2, cls1} {
			eventually(t, wait, m.name+" import", func() error { return checkSeedImport(m, ns) })
		}
		// What happened, told in events and measured.
		eventually(t, wait, "Exported event", eventSeen(cls1.admin, ns, "ServiceExport", "nginx-hello", "Exported", "with 3 endpoints (3 ready)"))
		eventually(t, wait, "Imported event", eventSeen(cls2.admin, ns, "ServiceImport", "nginx-hello", "Imported", "imported as ClusterSetIP, exported by cls1"))
		// cls1 and cls2 reflected cls1's record: one sample each at least,
		// all well below the wait (the same process: one clock).
		if n, sum := lagSamples(t, "cls1"); n < lagBefore+2 || sum/float64(n) > wait.Seconds() {
			t.Fatalf("propagation lag from cls1: %d samples (before: %d) averaging %.3fs, want at least 2 more, each below %v", n, lagBefore, sum/float64(n), wait)
		}
		// The imported slices carry the exporter's change time, from which
		// kube-proxy measures its network programming latency.
		if err := func() error {
			sl, err := importedSlices(cls2.admin, ns, "nginx-hello")
			if err != nil {
				return err
			}
			for _, s := range sl["cls1"] {
				if _, err := time.Parse(time.RFC3339Nano, s.Annotations[corev1.EndpointsLastChangeTriggerTime]); err != nil {
					return fmt.Errorf("slice %s: %s: %v", s.Name, corev1.EndpointsLastChangeTriggerTime, err)
				}
			}
			return nil
		}(); err != nil {
			t.Fatal(err)
		}

		// I1: cls3 has no namespace demo: nothing is created there, not even the namespace.
		var nsObj corev1.Namespace
		if err := cls3.admin.Get(ctx, client.ObjectKey{Name: ns}, &nsObj); !apierrors.IsNotFound(err) {
			t.Fatalf("cls3 namespace demo: want NotFound, got %v", err)
		}
		// I1: a namespace created later gets its imports.
		mustCreate(t, cls3.admin, namespace(ns))
		eventually(t, wait, "cls3 import after namespace creation", func() error { return checkSeedImport(cls3, ns) })

		// Clients of v1alpha1 (CoreDNS's multicluster plugin) read the import.
		var old mcsv1alpha1.ServiceImport
		if err := cls2.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "nginx-hello"}, &old); err != nil {
			t.Fatalf("reading ServiceImport as v1alpha1: %v", err)
		}
		if old.Spec.Type != mcsv1alpha1.ClusterSetIP || len(old.Spec.IPs) != 1 {
			t.Fatalf("v1alpha1 ServiceImport spec = %+v", old.Spec)
		}

		// E5 I5: deleting the export withdraws the record and removes the
		// import, its derived Service and its slices from every cluster.
		if err := cls1.admin.Delete(ctx, serviceExport(ns, "nginx-hello")); err != nil {
			t.Fatal(err)
		}
		for _, m := range cs.members {
			eventually(t, wait, m.name+" import removed", importGone(m.admin, ns, "nginx-hello"))
		}
		eventually(t, wait, "Removed event", eventSeen(cls2.admin, ns, "ServiceImport", "nginx-hello", "Removed", "no cluster exports the service"))
		eventually(t, wait, "ServiceExport deleted (finalizer released)", func() error {
			err := cls1.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "nginx-hello"}, &mcsv1beta1.ServiceExport{})
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("still there: %v", err)
			}
			return nil
		})
		eventually(t, wait, "no record left in the hub", func() error { return noHubRecords(cls2, ns, "nginx-hello") })
	})

	// E2 E3 E4: validation of the exported Service.
	t.Run("ExportValidation", func(t *testing.T) {
		ns := "validation"
		cs.createNamespace(t, ns)
		// E2: no Service: NoService, nothing published; valid when it appears.
		mustCreate(t, cls2.admin, serviceExport(ns, "late"))
		eventually(t, wait, "E2 NoService", exportCondition(cls2.admin, ns, "late", "Valid", metav1.ConditionFalse, "NoService"))
		eventually(t, wait, "E2 NoService event", eventSeen(cls2.admin, ns, "ServiceExport", "late", "NoService", "does not exist; not exported"))
		consistently(t, 2*time.Second, "E2 nothing published", func() error { return noHubRecords(cls1, ns, "late") })
		if _, err := getImport(cls1.admin, ns, "late"); !apierrors.IsNotFound(err) {
			t.Fatalf("E2: an invalid export was imported: %v", err)
		}
		mustCreate(t, cls2.admin, service(ns, "late", tcpPort("http", 80)))
		eventually(t, wait, "E2 valid once the Service exists", exportCondition(cls2.admin, ns, "late", "Valid", metav1.ConditionTrue, "Valid"))
		eventually(t, wait, "E2 imported in cls1", func() error { _, err := getImport(cls1.admin, ns, "late"); return err })

		// E3: ExternalName cannot be exported.
		ext := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "external"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"}}
		mustCreate(t, cls2.admin, ext, serviceExport(ns, "external"))
		eventually(t, wait, "E3 InvalidServiceType", exportCondition(cls2.admin, ns, "external", "Valid", metav1.ConditionFalse, "InvalidServiceType"))
		consistently(t, 2*time.Second, "E3 nothing published", func() error { return noHubRecords(cls1, ns, "external") })

		// E4: the Service is deleted while exported: record withdrawn, the
		// export stays and says why.
		if err := cls2.admin.Delete(ctx, service(ns, "late")); err != nil {
			t.Fatal(err)
		}
		eventually(t, wait, "E4 NoService", exportCondition(cls2.admin, ns, "late", "Valid", metav1.ConditionFalse, "NoService"))
		eventually(t, wait, "E4 import gone in cls1", importGone(cls1.admin, ns, "late"))
		eventually(t, wait, "E4 record withdrawn", func() error { return noHubRecords(cls1, ns, "late") })
		if err := cls2.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "late"}, &mcsv1beta1.ServiceExport{}); err != nil {
			t.Fatalf("E4: the ServiceExport must stay: %v", err)
		}
	})

	// Namespaces excluded from the clusterset (kube-system, kube-public,
	// kube-node-lease by default): an export there is refused and says why,
	// nothing is imported there, and what was shared before the exclusion
	// is withdrawn and removed.
	t.Run("NamespaceExclusion", func(t *testing.T) {
		ns := "kube-public"
		mustCreate(t, cls2.admin, service(ns, "leak", tcpPort("http", 80)),
			endpointSlice(ns, "leak", "leak-abcde", discoveryv1.AddressTypeIPv4, 8080, true, "10.20.0.1"),
			serviceExport(ns, "leak"))
		eventually(t, wait, "an export in kube-public refused", exportCondition(cls2.admin, ns, "leak", "Valid", metav1.ConditionFalse, "NamespaceExcluded"))
		eventually(t, wait, "an export in kube-public not Ready", exportCondition(cls2.admin, ns, "leak", "Ready", metav1.ConditionFalse, "Pending"))
		eventually(t, wait, "cls1's registry view ready", func() error {
			_, err := cls1.linkFn().Records(client.ObjectKey{Namespace: ns, Name: "leak"})
			return err
		})
		consistently(t, 2*time.Second, "nothing published from kube-public", func() error { return noHubRecords(cls1, ns, "leak") })
		eventually(t, wait, "a NamespaceExcluded event on the export", func() error {
			var events eventsv1.EventList
			if err := cls2.admin.List(ctx, &events, client.InNamespace(ns)); err != nil {
				return err
			}
			for _, e := range events.Items {
				if e.Regarding.Name == "leak" && e.Reason == "NamespaceExcluded" {
					return nil
				}
			}
			return fmt.Errorf("no NamespaceExcluded event among %d events", len(events.Items))
		})

		// cls3, restarted to exclude nothing, exports from kube-public: it
		// imports its own export; cls1 and cls2, which exclude kube-public,
		// import nothing although the record reaches them.
		opts := registrylink.Options{HeartbeatInterval: time.Second, GracePeriod: 5 * time.Second}
		cls3.stopController()
		cls3.excluded = namespaces.Exclusions{}
		cls3.start(t, opts)
		mustCreate(t, cls3.admin, service(ns, "shared", tcpPort("http", 80)),
			endpointSlice(ns, "shared", "shared-abcde", discoveryv1.AddressTypeIPv4, 8080, true, "10.30.0.1"),
			serviceExport(ns, "shared"))
		eventually(t, wait, "cls3 imports its own export from kube-public", func() error { _, err := getImport(cls3.admin, ns, "shared"); return err })
		eventually(t, wait, "cls3's record reaches cls1", func() error {
			if err := noHubRecords(cls1, ns, "shared"); err == nil {
				return errors.New("no record yet")
			}
			return nil
		})
		consistently(t, 3*time.Second, "cls1 and cls2 import nothing into kube-public", func() error {
			for _, m := range []*member{cls1, cls2} {
				if _, err := getImport(m.admin, ns, "shared"); !apierrors.IsNotFound(err) {
					return fmt.Errorf("%s: ServiceImport kube-public/shared: %v, want NotFound", m.name, err)
				}
			}
			return nil
		})

		// cls3 back to the default exclusions: its export is refused, its
		// record withdrawn and its own import removed.
		cls3.stopController()
		cls3.excluded = defaultExcluded(t)
		cls3.start(t, opts)
		eventually(t, wait, "cls3's export refused once kube-public is excluded", exportCondition(cls3.admin, ns, "shared", "Valid", metav1.ConditionFalse, "NamespaceExcluded"))
		eventually(t, wait, "cls3's record withdrawn", func() error { return noHubRecords(cls1, ns, "shared") })
		eventually(t, wait, "cls3's import in kube-public removed", importGone(cls3.admin, ns, "shared"))
		for _, m := range []*member{cls2, cls3} {
			if err := m.admin.DeleteAllOf(ctx, &mcsv1beta1.ServiceExport{}, client.InNamespace(ns)); err != nil {
				t.Fatal(err)
			}
		}
	})

	// E6 I6: conflicts between exports and what reaches the import.
	t.Run("ConflictsAndProperties", func(t *testing.T) {
		ns := "conflicts"
		cs.createNamespace(t, ns)
		svc1 := service(ns, "web", tcpPort("http", 80))
		svc1.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		svc1.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](600)}}
		local := corev1.ServiceInternalTrafficPolicyLocal
		svc1.Spec.InternalTrafficPolicy = &local
		svc1.Spec.TrafficDistribution = ptr.To("PreferClose")
		svc1.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
		exp1 := serviceExport(ns, "web")
		exp1.Spec.ExportedLabels = map[string]string{"team": "web"}
		exp1.Spec.ExportedAnnotations = map[string]string{"example.com/owner": "alice"}
		mustCreate(t, cls1.admin, svc1, exp1)
		eventually(t, wait, "cls1 exported", exportCondition(cls1.admin, ns, "web", "Ready", metav1.ConditionTrue, "Exported"))
		// The second export is younger by at least a second: cls1 wins.
		time.Sleep(1100 * time.Millisecond)
		svc2 := service(ns, "web", tcpPort("http", 80), tcpPort("https", 443))
		exp2 := serviceExport(ns, "web")
		exp2.Spec.ExportedLabels = map[string]string{"team": "web"}
		exp2.Spec.ExportedAnnotations = map[string]string{"example.com/owner": "alice"}
		mustCreate(t, cls2.admin, svc2, exp2)

		// E6: sessionAffinity differs (and ports): Conflict=True on the exports with a specific reason.
		eventually(t, wait, "E6 cls2 Conflict", exportCondition(cls2.admin, ns, "web", "Conflict", metav1.ConditionTrue, ""))
		var se mcsv1beta1.ServiceExport
		if err := cls2.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &se); err != nil {
			t.Fatal(err)
		}
		for _, c := range se.Status.Conditions {
			if c.Type == "Conflict" && !strings.HasSuffix(c.Reason, "Conflict") {
				t.Fatalf("E6: Conflict reason %q is not a specific mcs-api conflict reason", c.Reason)
			}
		}
		eventually(t, wait, "E6 cls1 (winner) is told too", exportCondition(cls1.admin, ns, "web", "Conflict", metav1.ConditionTrue, ""))

		// I6: the winner's properties reach the import; ports are the union.
		eventually(t, wait, "I6 import properties", func() error {
			si, err := getImport(cls3.admin, ns, "web")
			if err != nil {
				return err
			}
			switch {
			case si.Spec.SessionAffinity != corev1.ServiceAffinityClientIP:
				return fmt.Errorf("sessionAffinity %q", si.Spec.SessionAffinity)
			case si.Spec.SessionAffinityConfig == nil || *si.Spec.SessionAffinityConfig.ClientIP.TimeoutSeconds != 600:
				return fmt.Errorf("sessionAffinityConfig %+v", si.Spec.SessionAffinityConfig)
			case si.Spec.InternalTrafficPolicy == nil || *si.Spec.InternalTrafficPolicy != local:
				return fmt.Errorf("internalTrafficPolicy %v", si.Spec.InternalTrafficPolicy)
			case si.Spec.TrafficDistribution == nil || *si.Spec.TrafficDistribution != "PreferClose":
				return fmt.Errorf("trafficDistribution %v", si.Spec.TrafficDistribution)
			case len(si.Spec.IPFamilies) != 1 || si.Spec.IPFamilies[0] != corev1.IPv4Protocol:
				return fmt.Errorf("ipFamilies %v", si.Spec.IPFamilies)
			case si.Labels["team"] != "web" || si.Annotations["example.com/owner"] != "alice":
				return fmt.Errorf("exported labels/annotations missing: %v %v", si.Labels, si.Annotations)
			case len(si.Spec.Ports) != 2:
				return fmt.Errorf("ports %+v, want the union http/80 and https/443", si.Spec.Ports)
			case len(si.Status.Clusters) != 2:
				return fmt.Errorf("status.clusters %+v", si.Status.Clusters)
			}
			return nil
		})
		// Resolving the conflict clears the condition everywhere.
		if err := cls2.admin.Delete(ctx, serviceExport(ns, "web")); err != nil {
			t.Fatal(err)
		}
		eventually(t, wait, "E6 conflict cleared on cls1", exportCondition(cls1.admin, ns, "web", "Conflict", metav1.ConditionFalse, "NoConflicts"))
		eventually(t, wait, "E6 conflict raised, then resolved, in events", func() error {
			if err := eventSeen(cls1.admin, ns, "ServiceExport", "web", "ConflictResolved", "agree again")(); err != nil {
				return err
			}
			return eventSeen(cls2.admin, ns, "ServiceExport", "web", "SessionAffinityConflict", "in cluster cls1, whose ServiceExport is the oldest")()
		})
		eventually(t, wait, "the import says who exports it now", eventSeen(cls3.admin, ns, "ServiceImport", "web", "ClustersChanged", "exported by cls1 (was cls1, cls2)"))
	})

	// E6 I4: under a port conflict, endpoints are imported only under ports
	// their own cluster exposes (the hub registry).
	t.Run("PortConflict", func(t *testing.T) {
		ns := "portconflict"
		cs.createNamespace(t, ns)
		checkPortConflict(t, cls1, cls2, cs.members, ns)
	})

	// Objects clusterset did not create (a ServiceImport of the AWS
	// controller, a user's Service under the derived name) are left alone.
	t.Run("ForeignObjectsLeftAlone", func(t *testing.T) {
		ns := "foreign"
		cs.createNamespace(t, ns)
		checkForeignObjectsLeftAlone(t, cls1, cls2, cls3, ns)
	})

	// A burst of exports: every controller writes each ServiceExport's and
	// ServiceImport's status once, never from a cache that has not caught up
	// with its own last write (refused 409 Conflict, and its events sent
	// twice), and creates each object once (pkg/controllers/cachelag).
	t.Run("BurstWritesOnce", func(t *testing.T) {
		ns := "burst"
		cs.createNamespace(t, ns)
		const n = 40
		var objs, exports []client.Object
		for i := range n {
			name := fmt.Sprintf("svc-%d", i)
			objs = append(objs, service(ns, name, tcpPort("http", 80)),
				endpointSlice(ns, name, name+"-1", discoveryv1.AddressTypeIPv4, 8080, true, fmt.Sprintf("10.30.0.%d", i+1)))
			exports = append(exports, serviceExport(ns, name))
		}
		mustCreate(t, cls1.admin, objs...)
		mustCreate(t, cls1.admin, exports...)
		for _, m := range cs.members {
			for i := range n {
				name := fmt.Sprintf("svc-%d", i)
				eventually(t, wait, m.name+" imports "+name, func() error {
					got, err := importedSlices(m.admin, ns, name)
					if err != nil {
						return err
					}
					if a := addressesOf(got["cls1"]); a != fmt.Sprintf("10.30.0.%d", i+1) {
						return fmt.Errorf("imported from cls1: %q", a)
					}
					return nil
				})
			}
		}
		// The import's status is written after its slices: wait for it.
		for _, m := range cs.members {
			eventually(t, wait, m.name+" imports Ready", func() error {
				var list mcsv1beta1.ServiceImportList
				if err := m.admin.List(ctx, &list, client.InNamespace(ns)); err != nil {
					return err
				}
				ready := 0
				for _, imp := range list.Items {
					if c := meta.FindStatusCondition(imp.Status.Conditions, string(mcsv1beta1.ServiceImportConditionReady)); c != nil && c.Status == metav1.ConditionTrue {
						ready++
					}
				}
				if ready != n {
					return fmt.Errorf("%d of %d ServiceImports Ready", ready, n)
				}
				return nil
			})
		}
		// Creates too: a create from a cache that has not seen the
		// controller's own create yet would be refused as AlreadyExists
		// (also 409); cachelag tracks creates by kind and key.
		for call, n := range controllerCalls.ConflictsIn(ns) {
			t.Errorf("the controllers' %s of %s refused with 409 Conflict %d times in namespace %s", call.Verb, call.Resource, n, ns)
		}
		for _, c := range []struct {
			m            *member
			kind, reason string
		}{{cls1, "ServiceExport", "Exported"}, {cls1, "ServiceImport", "Imported"}, {cls2, "ServiceImport", "Imported"}, {cls3, "ServiceImport", "Imported"}} {
			var events eventsv1.EventList
			if err := c.m.admin.List(ctx, &events, client.InNamespace(ns)); err != nil {
				t.Fatal(err)
			}
			times := map[string]int{}
			for _, e := range events.Items {
				if e.Regarding.Kind == c.kind && e.Reason == c.reason {
					// A repeated event is one object with a count.
					k := max(int(e.DeprecatedCount), 1)
					if e.Series != nil {
						k = max(k, int(e.Series.Count))
					}
					times[e.Regarding.Name] += k
				}
			}
			for i := range n {
				if k := times[fmt.Sprintf("svc-%d", i)]; k != 1 {
					t.Errorf("%s: %d %s events on %s svc-%d, want 1", c.m.name, k, c.reason, c.kind, i)
				}
			}
		}
	})

	// I3 I4: headless imports with per-pod hostnames, IPv4 and IPv6 slices;
	// I2: derived names for a 63-character service name.
	t.Run("HeadlessDualFamilyLongName", func(t *testing.T) {
		ns := "headless"
		cs.createNamespace(t, ns)
		name := strings.Repeat("s", 63)
		svc := service(ns, name, tcpPort("http", 80))
		svc.Spec.ClusterIP = corev1.ClusterIPNone
		mustCreate(t, cls1.admin, svc,
			endpointSlice(ns, name, "v4", discoveryv1.AddressTypeIPv4, 8080, true, "10.10.1.1", "10.10.1.2"),
			endpointSlice(ns, name, "v6", discoveryv1.AddressTypeIPv6, 8080, true, "fd00::1"),
			serviceExport(ns, name))
		eventually(t, wait, "I3 headless import", func() error {
			si, err := getImport(cls2.admin, ns, name)
			if err != nil {
				return err
			}
			if si.Spec.Type != mcsv1beta1.Headless || len(si.Spec.IPs) != 0 {
				return fmt.Errorf("spec %+v, want Headless without ips", si.Spec)
			}
			slices, err := importedSlices(cls2.admin, ns, name)
			if err != nil {
				return err
			}
			families := map[discoveryv1.AddressType]int{}
			hosts := 0
			for _, s := range slices["cls1"] {
				families[s.AddressType] += len(s.Endpoints)
				for _, e := range s.Endpoints {
					if e.Hostname != nil && *e.Hostname != "" {
						hosts++
					}
				}
			}
			if families[discoveryv1.AddressTypeIPv4] != 2 || families[discoveryv1.AddressTypeIPv6] != 1 || hosts != 3 {
				return fmt.Errorf("I4 slices: families %v, hostnames %d", families, hosts)
			}
			return nil
		})
		derived := imports.DerivedServiceName(name)
		if errs := validation.IsDNS1035Label(derived); len(errs) > 0 {
			t.Fatalf("I2: derived name %q invalid: %v", derived, errs)
		}
	})

	// R3: a record lost from the registry behind the exporter's back (here
	// deleted by hand in the hub) is written again.
	t.Run("LostRecordIsRepublished", func(t *testing.T) {
		ns := "lost"
		cs.createNamespace(t, ns)
		// endpointSlice names its port http, as the EndpointSlice controller
		// names slice ports after the Service's.
		mustCreate(t, cls1.admin, service(ns, "queue", tcpPort("http", 5672)),
			endpointSlice(ns, "queue", "queue-1", discoveryv1.AddressTypeIPv4, 5672, true, "10.10.5.1"),
			serviceExport(ns, "queue"))
		eventually(t, wait, "cls2 imported", func() error { return sliceAddresses(cls2, ns, "queue", "cls1", "10.10.5.1") })
		var recs unstructured.UnstructuredList
		recs.SetGroupVersionKind(hubv1alpha1.GroupVersion.WithKind("ClusterSetRecordList"))
		hubNS := hub.NamespaceName(clusterSet, "cls1")
		if err := cs.hub.Client.List(ctx, &recs, client.InNamespace(hubNS)); err != nil {
			t.Fatal(err)
		}
		deleted := 0
		for i := range recs.Items {
			if strings.HasPrefix(recs.Items[i].GetName(), ns+".queue") {
				if err := cs.hub.Client.Delete(ctx, &recs.Items[i]); err != nil {
					t.Fatal(err)
				}
				deleted++
			}
		}
		if deleted == 0 {
			t.Fatalf("no record of %s/queue found in hub namespace %s", ns, hubNS)
		}
		eventually(t, wait, "record gone from the views", func() error { return noHubRecords(cls2, ns, "queue") })
		eventually(t, 90*time.Second, "record written again", func() error {
			recs, err := cls2.linkFn().Records(client.ObjectKey{Namespace: ns, Name: "queue"})
			if err != nil {
				return err
			}
			if len(recs) != 1 || recs[0].ClusterID != "cls1" {
				return fmt.Errorf("records %v", recs)
			}
			return nil
		})
		eventually(t, wait, "cls2 imports it again", func() error { return sliceAddresses(cls2, ns, "queue", "cls1", "10.10.5.1") })
	})

	// R2: a member that cannot reach the registry keeps its imports untouched
	// and reports exports as not ready; it converges when the hub returns.
	t.Run("RegistryOutage", func(t *testing.T) {
		ns := "outage"
		cs.createNamespace(t, ns)
		mustCreate(t, cls1.admin, service(ns, "api", tcpPort("http", 80)),
			endpointSlice(ns, "api", "api-1", discoveryv1.AddressTypeIPv4, 8080, true, "10.10.2.1"),
			serviceExport(ns, "api"))
		eventually(t, wait, "cls2 imported", func() error { return sliceAddresses(cls2, ns, "api", "cls1", "10.10.2.1") })

		cls2.proxy.SetDown(true)
		// cls1 scales down to nothing while cls2 cannot see it.
		if err := cls1.admin.Delete(ctx, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api-1"}}); err != nil {
			t.Fatal(err)
		}
		mustCreate(t, cls2.admin, service(ns, "local", tcpPort("http", 80)), serviceExport(ns, "local"))
		eventually(t, wait, "R2 export not ready while the hub is unreachable", exportCondition(cls2.admin, ns, "local", "Ready", metav1.ConditionFalse, "Failed"))
		consistently(t, 3*time.Second, "R2 imports untouched", func() error { return sliceAddresses(cls2, ns, "api", "cls1", "10.10.2.1") })

		cls2.proxy.SetDown(false)
		eventually(t, 60*time.Second, "R2 converged after the outage", func() error { return sliceAddresses(cls2, ns, "api", "cls1", "") })
		eventually(t, 60*time.Second, "R2 export ready after the outage", exportCondition(cls2.admin, ns, "local", "Ready", metav1.ConditionTrue, "Exported"))
	})

	// R1: a cluster whose heartbeat lapses has its endpoints withdrawn
	// elsewhere; they return when it does.
	t.Run("Liveness", func(t *testing.T) {
		ns := "liveness"
		cs.createNamespace(t, ns)
		mustCreate(t, cls3.admin, service(ns, "db", tcpPort("http", 80)),
			endpointSlice(ns, "db", "db-1", discoveryv1.AddressTypeIPv4, 5432, true, "10.10.3.1"),
			serviceExport(ns, "db"))
		eventually(t, wait, "cls2 imported", func() error { return sliceAddresses(cls2, ns, "db", "cls3", "10.10.3.1") })
		cls3.stopController()
		eventually(t, wait, "R1 endpoints of the silent cluster withdrawn", func() error { return sliceAddresses(cls2, ns, "db", "cls3", "") })
		eventually(t, wait, "R1 ClusterStale event", eventSeen(cls2.admin, ns, "ServiceImport", "db", "ClusterStale", "cluster cls3 sends no heartbeat"))
		if _, err := getImport(cls2.admin, ns, "db"); err != nil {
			t.Fatalf("R1: the import itself stays while the record exists: %v", err)
		}
		cls3.start(t, registrylink.Options{HeartbeatInterval: time.Second, GracePeriod: 5 * time.Second})
		eventually(t, wait, "R1 endpoints return with the cluster", func() error { return sliceAddresses(cls2, ns, "db", "cls3", "10.10.3.1") })
		eventually(t, wait, "R1 ClusterReturned event", eventSeen(cls2.admin, ns, "ServiceImport", "db", "ClusterReturned", "cluster cls3 sends heartbeats again"))
	})

	// A member whose clock is five minutes behind, or ahead, is alive for
	// the others as long as its heartbeat moves (liveness is judged on the
	// reader's clock), and judges the others alive too: nobody's endpoints
	// leave the imports.
	t.Run("ClockSkew", func(t *testing.T) {
		for i, skew := range []time.Duration{-5 * time.Minute, 5 * time.Minute} {
			name := map[bool]string{true: "Behind", false: "Ahead"}[skew < 0]
			t.Run(name, func(t *testing.T) {
				ns := "skew-" + strings.ToLower(name)
				cs.createNamespace(t, ns)
				opts := registrylink.Options{HeartbeatInterval: time.Second, GracePeriod: 5 * time.Second}
				cls3.stopController()
				cls3.clock = skewedClock{skew}
				cls3.start(t, opts)
				defer func() {
					cls3.stopController()
					cls3.clock = nil
					cls3.start(t, opts)
				}()
				late, early := fmt.Sprintf("10.10.6.%d", 2*i+1), fmt.Sprintf("10.10.6.%d", 2*i+2)
				mustCreate(t, cls3.admin, service(ns, "late", tcpPort("http", 80)),
					endpointSlice(ns, "late", "late-1", discoveryv1.AddressTypeIPv4, 8080, true, late),
					serviceExport(ns, "late"))
				mustCreate(t, cls1.admin, service(ns, "early", tcpPort("http", 80)),
					endpointSlice(ns, "early", "early-1", discoveryv1.AddressTypeIPv4, 8080, true, early),
					serviceExport(ns, "early"))
				for _, m := range []*member{cls1, cls2} {
					eventually(t, wait, m.name+" imported the skewed member's endpoints", func() error { return sliceAddresses(m, ns, "late", "cls3", late) })
				}
				eventually(t, wait, "the skewed member imported cls1's endpoints", func() error { return sliceAddresses(cls3, ns, "early", "cls1", early) })
				// Three grace periods: with liveness judged by the writer's
				// clock, cls3 would look five minutes silent to the others at
				// once (behind), or the others silent to cls3 (ahead).
				consistently(t, 15*time.Second, "endpoints kept across the skew", func() error {
					return errors.Join(sliceAddresses(cls2, ns, "late", "cls3", late), sliceAddresses(cls1, ns, "late", "cls3", late),
						sliceAddresses(cls3, ns, "early", "cls1", early))
				})
			})
		}
	})

	// R3: a restart converges: an export deleted while its controller was
	// down is withdrawn, and an importer that was down removes its orphans.
	// A restarted controller finds its exports and imports in place and
	// rewrites none of them (no status flip while its registry view syncs,
	// no event given again).
	t.Run("RestartRewritesNothing", func(t *testing.T) {
		ns := "restartsame"
		cs.createNamespace(t, ns)
		headless := service(ns, "db", tcpPort("http", 5432))
		headless.Spec.ClusterIP = corev1.ClusterIPNone
		mustCreate(t, cls1.admin, service(ns, "web", tcpPort("http", 80), tcpPort("https", 443)),
			endpointSlice(ns, "web", "web-1", discoveryv1.AddressTypeIPv4, 8080, true, "10.10.5.1", "10.10.5.2"),
			serviceExport(ns, "web"), headless,
			endpointSlice(ns, "db", "db-1", discoveryv1.AddressTypeIPv4, 5432, true, "10.10.5.3"),
			serviceExport(ns, "db"))
		for _, m := range cs.members {
			eventually(t, wait, m.name+" imported", func() error {
				return errors.Join(sliceAddresses(m, ns, "web", "cls1", "10.10.5.1 10.10.5.2"), sliceAddresses(m, ns, "db", "cls1", "10.10.5.3"))
			})
		}
		for _, name := range []string{"web", "db"} {
			eventually(t, wait, name+" exported", exportCondition(cls1.admin, ns, name, "Ready", metav1.ConditionTrue, "Exported"))
		}
		// Settled: no write of the controllers in flight.
		time.Sleep(2 * time.Second)
		before := map[string]map[string]string{}
		for _, m := range cs.members {
			vs, err := testenv.ResourceVersions(ctx, m.admin, ns)
			if err != nil {
				t.Fatal(err)
			}
			before[m.name] = vs
		}
		opts := registrylink.Options{HeartbeatInterval: time.Second, GracePeriod: 5 * time.Second}
		for _, m := range []*member{cls1, cls2} {
			m.stopController()
			m.start(t, opts)
		}
		// A new export goes through both restarted controllers: they run.
		mustCreate(t, cls1.admin, service(ns, "probe", tcpPort("http", 80)),
			endpointSlice(ns, "probe", "probe-1", discoveryv1.AddressTypeIPv4, 8080, true, "10.10.5.9"),
			serviceExport(ns, "probe"))
		eventually(t, wait, "cls2 imports a service exported after the restart", func() error { return sliceAddresses(cls2, ns, "probe", "cls1", "10.10.5.9") })
		consistently(t, 3*time.Second, "nothing from before the restart is written again", func() error {
			var errs []error
			for _, m := range cs.members {
				after, err := testenv.ResourceVersions(ctx, m.admin, ns)
				if err != nil {
					t.Fatal(err)
				}
				for obj, rv := range after {
					was, existed := before[m.name][obj]
					switch {
					case existed && was != rv:
						errs = append(errs, fmt.Errorf("%s: %s written again after the restart", m.name, obj))
					case !existed && strings.HasPrefix(obj, "Event ") && !strings.Contains(obj, "about probe"):
						// New objects are the probe's; a new event must be
						// about it.
						errs = append(errs, fmt.Errorf("%s: new %s after the restart", m.name, obj))
					}
				}
			}
			return errors.Join(errs...)
		})
	})

	t.Run("RestartConverges", func(t *testing.T) {
		ns := "restart"
		cs.createNamespace(t, ns)
		mustCreate(t, cls1.admin, service(ns, "cache", tcpPort("http", 80)),
			endpointSlice(ns, "cache", "cache-1", discoveryv1.AddressTypeIPv4, 6379, true, "10.10.4.1"),
			serviceExport(ns, "cache"))
		for _, m := range cs.members {
			eventually(t, wait, m.name+" imported", func() error { return sliceAddresses(m, ns, "cache", "cls1", "10.10.4.1") })
		}
		cls2.stopController()
		cls1.stopController()
		// The finalizer is removed by hand while cls1's controller is down.
		var se mcsv1beta1.ServiceExport
		if err := cls1.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "cache"}, &se); err != nil {
			t.Fatal(err)
		}
		se.Finalizers = nil
		if err := cls1.admin.Update(ctx, &se); err != nil {
			t.Fatal(err)
		}
		if err := cls1.admin.Delete(ctx, &se); err != nil {
			t.Fatal(err)
		}
		opts := registrylink.Options{HeartbeatInterval: time.Second, GracePeriod: 5 * time.Second}
		cls1.start(t, opts)
		eventually(t, wait, "R3 orphaned record withdrawn", func() error { return noHubRecords(cls3, ns, "cache") })
		eventually(t, wait, "R3 cls3 import removed", importGone(cls3.admin, ns, "cache"))
		cls2.start(t, opts)
		eventually(t, wait, "R3 cls2 orphans removed after restart", importGone(cls2.admin, ns, "cache"))
	})
}

// checkSeedImport checks the import of nginx-hello as the seed scenario
// describes it (I2 I4 I5).
func checkSeedImport(m *member, ns string) error {
	si, err := getImport(m.admin, ns, "nginx-hello")
	if err != nil {
		return err
	}
	var derived corev1.Service
	if err := m.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: imports.DerivedServiceName("nginx-hello")}, &derived); err != nil {
		return fmt.Errorf("derived Service: %w", err)
	}
	switch {
	case si.Spec.Type != mcsv1beta1.ClusterSetIP:
		return fmt.Errorf("type %q", si.Spec.Type)
	case len(si.Spec.IPs) != 1 || si.Spec.IPs[0] != derived.Spec.ClusterIP || derived.Spec.ClusterIP == "":
		return fmt.Errorf("I2 ips %v, derived clusterIP %q", si.Spec.IPs, derived.Spec.ClusterIP)
	case len(derived.Spec.Selector) != 0 || !metav1.IsControlledBy(&derived, si):
		return fmt.Errorf("I2 derived Service must have no selector and be owned by the import")
	case len(si.Spec.Ports) != 1 || si.Spec.Ports[0].Port != 80 || si.Spec.Ports[0].Protocol != corev1.ProtocolTCP:
		return fmt.Errorf("ports %+v", si.Spec.Ports)
	case len(si.Status.Clusters) != 1 || si.Status.Clusters[0].Cluster != "cls1":
		return fmt.Errorf("I5 status.clusters %+v", si.Status.Clusters)
	}
	slices, err := importedSlices(m.admin, ns, "nginx-hello")
	if err != nil {
		return err
	}
	if len(slices) != 1 || len(slices["cls1"]) != 1 {
		return fmt.Errorf("I4 want one slice from cls1, got %v", slices)
	}
	s := slices["cls1"][0]
	if got := addressesOf(slices["cls1"]); got != "10.10.86.76 10.10.86.77 10.10.86.78" {
		return fmt.Errorf("I4 addresses %q", got)
	}
	want := map[string]string{
		mcsv1beta1.LabelServiceName:   "nginx-hello",
		mcsv1beta1.LabelSourceCluster: "cls1",
		discoveryv1.LabelManagedBy:    names.ManagedBy,
		discoveryv1.LabelServiceName:  derived.Name,
	}
	for k, v := range want {
		if s.Labels[k] != v {
			return fmt.Errorf("I4 label %s=%q, want %q", k, s.Labels[k], v)
		}
	}
	e := s.Endpoints[0]
	if e.NodeName == nil || *e.NodeName != "node-1" || e.Zone == nil || *e.Zone != "zone-a" || e.Hostname == nil {
		return fmt.Errorf("I4 nodeName/zone/hostname not kept: %+v", e)
	}
	if len(s.Ports) != 1 || *s.Ports[0].Port != 8080 || *s.Ports[0].Name != "http" {
		return fmt.Errorf("I4 slice ports %+v, want http/8080 (the endpoints' target port)", s.Ports)
	}
	return nil
}

// sliceAddresses checks the addresses imported into m from one cluster.
func sliceAddresses(m *member, ns, name, from, want string) error {
	slices, err := importedSlices(m.admin, ns, name)
	if err != nil {
		return err
	}
	if got := addressesOf(slices[from]); got != want {
		return fmt.Errorf("%s: addresses from %s = %q, want %q", m.name, from, got, want)
	}
	return nil
}

// noHubRecords checks through m's registry view that nobody has a record of
// the service.
func noHubRecords(m *member, ns, name string) error {
	link := m.linkFn()
	recs, err := link.Records(client.ObjectKey{Namespace: ns, Name: name})
	if err != nil {
		return err
	}
	if len(recs) > 0 {
		return fmt.Errorf("%d record(s) left, first from %s", len(recs), recs[0].ClusterID)
	}
	return nil
}

// skewedClock is a clock off by a fixed offset.
type skewedClock struct{ offset time.Duration }

func (c skewedClock) Now() time.Time                  { return time.Now().Add(c.offset) }
func (c skewedClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
