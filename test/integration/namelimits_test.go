package integration

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/controllers/identity"
	"github.com/clusterset/clusterset/pkg/controllers/imports"
	"github.com/clusterset/clusterset/pkg/controllers/registrylink"
	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
)

// TestNameLimits runs clusterset end to end with every name at the longest
// Kubernetes allows (docs/semantics.md, "Name limits"), on both registries:
// two members whose cluster IDs have 63 characters, in a clusterset whose ID
// has 253, export a Service of 63 characters in a namespace of 63 with port
// names of 15, and a headless one whose pods have hostnames of 63. The other
// member imports both with their endpoints, under a valid derived Service
// and EndpointSlices. A Service whose ports cannot fit in Cloud Map's marker
// is refused there with a condition that says why, and the others are
// unaffected. With Cloud Map, moto sits behind a proxy that refuses what
// real Cloud Map refuses (cloudmaptest.CheckRequest). I2 I3 I4.
func TestNameLimits(t *testing.T) {
	set := strings.Repeat(strings.Repeat("s", 63)+".", 3) + "set-" + strings.Repeat("0", 57) // 253
	ids := []identity.Identity{
		{ClusterID: "one-" + strings.Repeat("0", 58) + "1", ClusterSetID: set},
		{ClusterID: "two-" + strings.Repeat("0", 58) + "2", ClusterSetID: set},
	}
	for _, id := range ids {
		if len(id.ClusterID) != registry.MaxClusterIDLength || len(id.ClusterSetID) != registry.MaxClusterSetIDLength {
			t.Fatalf("the test's identity %+v is not at the limits", id)
		}
	}
	link := registrylink.Options{HeartbeatInterval: time.Second, GracePeriod: 30 * time.Second}
	t.Run("Hub", func(t *testing.T) {
		cs := startClustersetAs(t, ids, link)
		checkNameLimits(t, cs.members[0], cs.members[1], false)
	})
	t.Run("CloudMap", func(t *testing.T) {
		members := startCloudMapMembersAs(t, cloudmaptest.StartMoto(t), ids, link, func(*cloudmap.Options) {})
		checkNameLimits(t, members[0], members[1], true)
	})
}

// checkNameLimits exports the services at the limits from exporter and
// checks their imports in importer.
func checkNameLimits(t *testing.T, exporter, importer *member, cloudMap bool) {
	ns := "names-" + strings.Repeat("0", 56) + "z" // 63
	web := "web-" + strings.Repeat("0", 58) + "z"  // 63
	headless := "hl-" + strings.Repeat("0", 59) + "z"
	ports := []string{"port-name-00001", "port-name-00002"} // IANA_SVC_NAME: 15
	node := strings.Repeat(strings.Repeat("n", 63)+".", 3) + strings.Repeat("n", 61)
	for _, m := range []*member{exporter, importer} {
		mustCreate(t, m.admin, namespace(ns))
	}

	webSvc := service(ns, web, namedPort(ports[0], 80), namedPort(ports[1], 443))
	hlSvc := service(ns, headless, namedPort(ports[0], 80))
	hlSvc.Spec.ClusterIP = corev1.ClusterIPNone
	mustCreate(t, exporter.admin, webSvc, hlSvc,
		limitSlice(ns, web, discoveryv1.AddressTypeIPv4, ports, node, "10.40.0.1", "10.40.0.2"),
		limitSlice(ns, headless, discoveryv1.AddressTypeIPv6, ports[:1], node, "fdff:ffff:ffff:ffff:ffff:ffff:ffff:fff1", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:fff2"),
		serviceExport(ns, web), serviceExport(ns, headless))
	for _, name := range []string{web, headless} {
		eventually(t, wait, name[:3]+" exported", exportCondition(exporter.admin, ns, name, "Ready", metav1.ConditionTrue, "Exported"))
	}
	cluster := exporter.defaults.ClusterID
	eventually(t, wait, "web imported", func() error {
		return checkLimitImport(importer, ns, web, cluster, mcsv1beta1.ClusterSetIP, ports, "10.40.0.1 10.40.0.2")
	})
	eventually(t, wait, "headless imported", func() error {
		return checkLimitImport(importer, ns, headless, cluster, mcsv1beta1.Headless, ports[:1],
			"fdff:ffff:ffff:ffff:ffff:ffff:ffff:fff1 fdff:ffff:ffff:ffff:ffff:ffff:ffff:fff2")
	})

	// Sixteen ports of the longest names: more than Cloud Map's marker
	// attribute holds (SERVICE_PORTS, 1,024 characters), nothing for the
	// hub.
	var many []corev1.ServicePort
	for i := range 16 {
		p := namedPort(fmt.Sprintf("port-name-%05d", i), int32(60000+i))
		p.TargetPort = intstr.FromString(p.Name)
		many = append(many, p)
	}
	mustCreate(t, exporter.admin, service(ns, "many-ports", many...), serviceExport(ns, "many-ports"))
	if cloudMap {
		eventually(t, wait, "many-ports refused with the reason", func() error {
			return exportConditionMessage(exporter.admin, ns, "many-ports", "Ready", metav1.ConditionFalse, "Failed", "SERVICE_PORTS")
		})
		eventually(t, wait, "many-ports event", eventSeen(exporter.admin, ns, "ServiceExport", "many-ports", "PublishFailed", "too many ports"))
		if err := checkLimitImport(importer, ns, web, cluster, mcsv1beta1.ClusterSetIP, ports, "10.40.0.1 10.40.0.2"); err != nil {
			t.Fatalf("web must be unaffected by another export's refusal: %v", err)
		}
	} else {
		eventually(t, wait, "many-ports exported", exportCondition(exporter.admin, ns, "many-ports", "Ready", metav1.ConditionTrue, "Exported"))
	}

	for _, name := range []string{web, headless, "many-ports"} {
		if err := exporter.admin.Delete(ctx, serviceExport(ns, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{web, headless, "many-ports"} {
		eventually(t, wait, name[:3]+" import removed", importGone(importer.admin, ns, name))
	}
}

func namedPort(name string, port int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Protocol: corev1.ProtocolTCP, Port: port, TargetPort: intstr.FromInt32(port + 8000)}
}

// limitSlice is the EndpointSlice of svc with every name at its limit:
// hostnames and zones of 63 characters, the node name given (253).
func limitSlice(ns, svc string, family discoveryv1.AddressType, ports []string, node string, ips ...string) *discoveryv1.EndpointSlice {
	s := endpointSlice(ns, svc, svc+"-limits", family, 0, true, ips...)
	s.Ports = nil
	for i, p := range ports {
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr.To(p), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(8080 + i))})
	}
	for i := range s.Endpoints {
		s.Endpoints[i].Hostname = ptr.To(fmt.Sprintf("pod-%059d", i)) // 63
		s.Endpoints[i].NodeName = ptr.To(node)
		s.Endpoints[i].Zone = ptr.To("zone-" + strings.Repeat("z", 58))
	}
	return s
}

// checkLimitImport checks m's import of ns/name from cluster: its type, its
// port names, the cluster in its status, a derived Service with a valid name
// and the ports, and EndpointSlices with valid names and labels that hold
// addresses (sorted, space-separated) with their 63-character hostnames.
func checkLimitImport(m *member, ns, name, cluster string, typ mcsv1beta1.ServiceImportType, ports []string, addresses string) error {
	si, err := getImport(m.admin, ns, name)
	if err != nil {
		return err
	}
	var gotPorts []string
	for _, p := range si.Spec.Ports {
		gotPorts = append(gotPorts, p.Name)
	}
	if si.Spec.Type != typ || !slices.Equal(gotPorts, ports) || len(si.Status.Clusters) != 1 || si.Status.Clusters[0].Cluster != cluster {
		return fmt.Errorf("ServiceImport: type %s, ports %q, clusters %+v", si.Spec.Type, gotPorts, si.Status.Clusters)
	}
	if (typ == mcsv1beta1.ClusterSetIP) != (len(si.Spec.IPs) == 1) {
		return fmt.Errorf("ServiceImport: %s with ips %v", typ, si.Spec.IPs)
	}
	derived := imports.DerivedServiceName(name)
	if errs := validation.IsDNS1035Label(derived); len(errs) > 0 {
		return fmt.Errorf("derived Service name %q: %v", derived, errs)
	}
	var svc corev1.Service
	if err := m.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: derived}, &svc); err != nil {
		return fmt.Errorf("derived Service: %w", err)
	}
	if len(svc.Spec.Ports) != len(ports) || svc.Spec.Ports[0].Name != ports[0] {
		return fmt.Errorf("derived Service ports %+v", svc.Spec.Ports)
	}
	bySource, err := importedSlices(m.admin, ns, name)
	if err != nil {
		return err
	}
	if len(bySource) != 1 || len(bySource[cluster]) == 0 {
		return fmt.Errorf("slices by source cluster: %v", bySource)
	}
	var errs []error
	for _, s := range bySource[cluster] {
		if e := validation.IsDNS1123Subdomain(s.Name); len(e) > 0 {
			errs = append(errs, fmt.Errorf("slice name %q: %v", s.Name, e))
		}
		for k, v := range s.Labels {
			if e := validation.IsValidLabelValue(v); len(e) > 0 {
				errs = append(errs, fmt.Errorf("slice %s: label %s=%q: %v", s.Name, k, v, e))
			}
		}
		if s.Labels[mcsv1beta1.LabelServiceName] != name || s.Labels[discoveryv1.LabelServiceName] != derived {
			errs = append(errs, fmt.Errorf("slice %s: labels %v", s.Name, s.Labels))
		}
		if len(s.Ports) != len(ports) || *s.Ports[0].Name != ports[0] {
			errs = append(errs, fmt.Errorf("slice %s: ports %+v", s.Name, s.Ports))
		}
		for _, e := range s.Endpoints {
			if e.Hostname == nil || len(*e.Hostname) != 63 {
				errs = append(errs, fmt.Errorf("slice %s: endpoint %v without its 63-character hostname", s.Name, e.Addresses))
			}
		}
	}
	if got := addressesOf(bySource[cluster]); got != addresses {
		errs = append(errs, fmt.Errorf("addresses %q, want %q", got, addresses))
	}
	return errors.Join(errs...)
}
