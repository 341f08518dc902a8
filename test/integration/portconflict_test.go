package integration

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// checkPortConflict is the port-conflict case of E6/I4, run on every
// registry: older exports `pc` with port http 80 (target 8080), younger with
// http 8080 (same name, other number), each with one IPv4 and one IPv6
// endpoint. While the conflict lasts, every importing cluster's import
// exposes http 80/TCP and carries older's endpoints under it, and none of
// younger's: kube-proxy routes a Service port to the slice port of the same
// name, so younger's pods would get traffic for port 80 they do not serve.
// Once younger's Service exposes http 80 too, its endpoints come back under
// http and the conflict clears.
func checkPortConflict(t *testing.T, older, younger *member, importers []*member, ns string) {
	t.Helper()
	const name = "pc"
	pcService := func(port int32) *corev1.Service {
		return service(ns, name, corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolTCP, Port: port, TargetPort: intstr.FromInt32(8080)})
	}
	mustCreate(t, older.admin, pcService(80),
		endpointSlice(ns, name, name+"-v4", discoveryv1.AddressTypeIPv4, 8080, true, "10.11.211.1"),
		endpointSlice(ns, name, name+"-v6", discoveryv1.AddressTypeIPv6, 8080, true, "fd00:11::211:1"),
		serviceExport(ns, name))
	eventually(t, wait, older.name+" export Ready", exportCondition(older.admin, ns, name, "Ready", metav1.ConditionTrue, "Exported"))
	// creationTimestamps have a resolution of one second: make older older.
	time.Sleep(1100 * time.Millisecond)
	mustCreate(t, younger.admin, pcService(8080),
		endpointSlice(ns, name, name+"-v4", discoveryv1.AddressTypeIPv4, 8080, true, "10.12.211.1"),
		endpointSlice(ns, name, name+"-v6", discoveryv1.AddressTypeIPv6, 8080, true, "fd00:12::211:1"),
		serviceExport(ns, name))

	for _, m := range []*member{older, younger} {
		eventually(t, wait, m.name+" Conflict=True PortConflict", exportCondition(m.admin, ns, name, "Conflict",
			metav1.ConditionTrue, string(mcsv1beta1.ServiceExportReasonPortConflict)))
	}
	duringConflict := func(m *member) func() error {
		return func() error {
			si, err := getImport(m.admin, ns, name)
			if err != nil {
				return err
			}
			// Both records are in this cluster's view, so the absence of
			// younger's endpoints below is a decision, not a delay.
			if got := clusterNames(si); !slices.Equal(got, []string{older.name, younger.name}) && !slices.Equal(got, []string{younger.name, older.name}) {
				return fmt.Errorf("status.clusters = %v, want both exporters", got)
			}
			if len(si.Spec.Ports) != 1 || si.Spec.Ports[0].Name != "http" || si.Spec.Ports[0].Port != 80 || si.Spec.Ports[0].Protocol != corev1.ProtocolTCP {
				return fmt.Errorf("import ports %+v, want only http 80/TCP (the older export's)", si.Spec.Ports)
			}
			return slicesCarry(m, ns, name, map[string]string{
				older.name:   "10.11.211.1 fd00:11::211:1",
				younger.name: "",
			})
		}
	}
	for _, m := range importers {
		eventually(t, wait, m.name+": only "+older.name+"'s endpoints under http during the conflict", duringConflict(m))
	}
	consistently(t, 2*time.Second, "no endpoint of "+younger.name+" under http during the conflict", func() error {
		for _, m := range importers {
			if err := duringConflict(m)(); err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
		}
		return nil
	})

	// younger's Service now exposes http 80 like older's: its endpoints are
	// imported again and the conflict clears everywhere.
	var svc corev1.Service
	if err := younger.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &svc); err != nil {
		t.Fatal(err)
	}
	svc.Spec.Ports[0].Port = 80
	if err := younger.admin.Update(ctx, &svc); err != nil {
		t.Fatal(err)
	}
	for _, m := range importers {
		eventually(t, wait, m.name+": both clusters' endpoints under http once the ports match", func() error {
			return slicesCarry(m, ns, name, map[string]string{
				older.name:   "10.11.211.1 fd00:11::211:1",
				younger.name: "10.12.211.1 fd00:12::211:1",
			})
		})
	}
	for _, m := range []*member{older, younger} {
		eventually(t, wait, m.name+" conflict cleared", exportCondition(m.admin, ns, name, "Conflict",
			metav1.ConditionFalse, string(mcsv1beta1.ServiceExportReasonNoConflicts)))
	}
	for _, m := range []*member{older, younger} {
		if err := m.admin.Delete(ctx, serviceExport(ns, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range importers {
		eventually(t, wait, m.name+" import removed", importGone(m.admin, ns, name))
	}
}

func clusterNames(si *mcsv1beta1.ServiceImport) []string {
	out := make([]string, 0, len(si.Status.Clusters))
	for _, c := range si.Status.Clusters {
		out = append(out, c.Cluster)
	}
	return out
}

// slicesCarry checks that the import's slices from each cluster in want hold
// exactly the given addresses (sorted, space-separated; "" for none), each
// under port http with target 8080 and nothing else.
func slicesCarry(m *member, ns, name string, want map[string]string) error {
	byCluster, err := importedSlices(m.admin, ns, name)
	if err != nil {
		return err
	}
	for cluster, addrs := range want {
		if got := addressesOf(byCluster[cluster]); got != addrs {
			return fmt.Errorf("addresses from %s = %q, want %q", cluster, got, addrs)
		}
		for _, s := range byCluster[cluster] {
			var ports []string
			for _, p := range s.Ports {
				ports = append(ports, fmt.Sprintf("%s:%d/%s", *p.Name, *p.Port, *p.Protocol))
			}
			if got := strings.Join(ports, ","); got != "http:8080/TCP" {
				return fmt.Errorf("slice %s from %s has ports %s, want http:8080/TCP", s.Name, cluster, got)
			}
		}
	}
	return nil
}
