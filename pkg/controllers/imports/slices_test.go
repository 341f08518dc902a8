package imports

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/merge"
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
