package imports

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/merge"
	"github.com/clusterset/clusterset/pkg/names"
	"github.com/clusterset/clusterset/pkg/registry"
)

func endpoints(n int, family discoveryv1.AddressType, port int32) []registry.Endpoint {
	out := make([]registry.Endpoint, 0, n)
	for i := 0; i < n; i++ {
		addr := fmt.Sprintf("10.1.%d.%d", i/250, i%250)
		if family == discoveryv1.AddressTypeIPv6 {
			addr = fmt.Sprintf("fd00::%x", i+1)
		}
		out = append(out, registry.Endpoint{Address: addr, AddressType: family, Ready: true, Serving: true,
			Ports: []registry.EndpointPort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: port}}})
	}
	return out
}

// I4: one source cluster per slice, split by address type and port set, at
// most 100 endpoints per slice; clusters that are not alive contribute none (R1).
func TestDesiredSlicesI4(t *testing.T) {
	httpSpec := registry.ServiceSpec{Type: registry.ClusterSetIP, Ports: []registry.Port{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}}
	records := []registry.Record{
		{ClusterID: "cls1", Spec: httpSpec, Endpoints: append(endpoints(250, discoveryv1.AddressTypeIPv4, 8080), endpoints(3, discoveryv1.AddressTypeIPv6, 8080)...)},
		{ClusterID: "cls2", Spec: httpSpec, Endpoints: append(endpoints(2, discoveryv1.AddressTypeIPv4, 8080), endpoints(1, discoveryv1.AddressTypeIPv4, 9090)[0])},
		{ClusterID: "cls3", Spec: httpSpec, Endpoints: endpoints(5, discoveryv1.AddressTypeIPv4, 8080)},
	}
	alive := func(c string) bool { return c != "cls3" }
	res, _ := merge.Merge(records)
	slices := desiredSlices("ns", "web", DerivedServiceName("web"), "us", records, &res, alive)

	type shape struct {
		cluster string
		family  discoveryv1.AddressType
		port    int32
	}
	got := map[shape][]int{}
	names := map[string]bool{}
	for _, s := range slices {
		if names[s.Name] {
			t.Fatalf("duplicate slice name %s", s.Name)
		}
		names[s.Name] = true
		if errs := validation.IsDNS1123Subdomain(s.Name); len(errs) > 0 {
			t.Fatalf("slice name %q: %v", s.Name, errs)
		}
		if s.Labels[mcsv1beta1.LabelServiceName] != "web" || s.Labels[discoveryv1.LabelServiceName] != DerivedServiceName("web") ||
			s.Labels[discoveryv1.LabelManagedBy] != "us" {
			t.Fatalf("labels %v", s.Labels)
		}
		k := shape{s.Labels[mcsv1beta1.LabelSourceCluster], s.AddressType, *s.Ports[0].Port}
		got[k] = append(got[k], len(s.Endpoints))
	}
	want := map[shape][]int{
		{"cls1", discoveryv1.AddressTypeIPv4, 8080}: {100, 100, 50},
		{"cls1", discoveryv1.AddressTypeIPv6, 8080}: {3},
		{"cls2", discoveryv1.AddressTypeIPv4, 8080}: {2},
		{"cls2", discoveryv1.AddressTypeIPv4, 9090}: {1},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("slices by cluster/family/port = %v, want %v", got, want)
	}
	// The same records give the same slices: names are stable across reconciles.
	again := desiredSlices("ns", "web", DerivedServiceName("web"), "us", records, &res, alive)
	for i := range slices {
		if slices[i].Name != again[i].Name {
			t.Fatalf("slice names are not deterministic: %s vs %s", slices[i].Name, again[i].Name)
		}
	}
}

// I2: the derived name is a valid Service name for any Service name up to 63
// characters, and differs between services.
func TestDerivedServiceNameI2(t *testing.T) {
	seen := map[string]string{}
	for _, name := range []string{"a", "nginx-hello", "x1234567890123456789012345678901234567890123456789012345678901"} {
		d := DerivedServiceName(name)
		if errs := validation.IsDNS1035Label(d); len(errs) > 0 {
			t.Fatalf("DerivedServiceName(%q) = %q: %v", name, d, errs)
		}
		if other, dup := seen[d]; dup {
			t.Fatalf("%q and %q share derived name %q", name, other, d)
		}
		seen[d] = name
	}
}

// Every name and label value an import derives stays valid with every input
// name at its limit: a 63-character service, namespace and cluster ID,
// 15-character port names, more than 100 endpoints (numbered slices).
func TestDesiredSlicesAtNameLimits(t *testing.T) {
	service, ns := "s"+strings.Repeat("0", 62), "n"+strings.Repeat("0", 62)
	port := "p" + strings.Repeat("0", 14)
	var records []registry.Record
	for _, cluster := range []string{"a" + strings.Repeat("0", 62), "b" + strings.Repeat("0", 62)} {
		eps := endpoints(250, discoveryv1.AddressTypeIPv4, 8080)
		for i := range eps {
			eps[i].Ports[0].Name = port
			eps[i].Hostname = fmt.Sprintf("h%062d", i)
		}
		records = append(records, registry.Record{ClusterID: cluster, Namespace: ns, Name: service, Endpoints: eps,
			Spec: registry.ServiceSpec{Type: registry.Headless, Ports: []registry.Port{{Name: port, Protocol: corev1.ProtocolTCP, Port: 80}}}})
	}
	res, _ := merge.Merge(records)
	derived := DerivedServiceName(service)
	if errs := validation.IsDNS1035Label(derived); len(errs) > 0 {
		t.Fatalf("derived Service name %q: %v", derived, errs)
	}
	slices := desiredSlices(ns, service, derived, names.ManagedBy, records, &res, func(string) bool { return true })
	if len(slices) != 6 {
		t.Fatalf("%d slices, want 3 per cluster", len(slices))
	}
	for _, s := range slices {
		if errs := validation.IsDNS1123Subdomain(s.Name); len(errs) > 0 {
			t.Errorf("slice name %q: %v", s.Name, errs)
		}
		for k, v := range s.Labels {
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				t.Errorf("slice %s: label %s=%q: %v", s.Name, k, v, errs)
			}
		}
		if s.Labels[mcsv1beta1.LabelSourceCluster] != records[0].ClusterID && s.Labels[mcsv1beta1.LabelSourceCluster] != records[1].ClusterID {
			t.Errorf("slice %s: source cluster %q", s.Name, s.Labels[mcsv1beta1.LabelSourceCluster])
		}
		if *s.Ports[0].Name != port || len(*s.Endpoints[0].Hostname) != 63 {
			t.Errorf("slice %s: port %q, hostname %q", s.Name, *s.Ports[0].Name, *s.Endpoints[0].Hostname)
		}
	}
}
