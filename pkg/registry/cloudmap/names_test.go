package cloudmap

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
)

// Names at the longest Kubernetes and clusterset allow (docs/semantics.md,
// "Name limits").
var (
	setAtLimit     = strings.Repeat(strings.Repeat("s", 63)+".", 3) + strings.Repeat("s", 61) // 253
	clusterAtLimit = strings.Repeat("c", 63)
	nsAtLimit      = strings.Repeat("n", 63)
	svcAtLimit     = "v" + strings.Repeat("0", 62)
	// appProtocol is a qualified name: a 253-character prefix, '/', 63.
	appProtocolAtLimit = setAtLimit + "/" + strings.Repeat("p", 63)
)

// portName returns a 15-character port name (IANA_SVC_NAME, the longest a
// Service port name may be) ending in i.
func portName(i int) string { return fmt.Sprintf("port-name-%05d", i) }

// TestEncodeAtNameLimits: a record with every name at its limit becomes
// instances that Cloud Map accepts (cloudmaptest.CheckInstance, from the API
// reference), in a service Cloud Map accepts, with the longest InstanceIds
// the schema makes (an IPv6 address of 39 characters, SCTP port 65535,
// another cluster holding the same address, two service ports on one
// endpoint port), and reads back unchanged.
func TestEncodeAtNameLimits(t *testing.T) {
	const addr = "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
	rec := registry.Record{ClusterSetID: setAtLimit, ClusterID: clusterAtLimit, Namespace: nsAtLimit, Name: svcAtLimit,
		Spec: registry.ServiceSpec{
			Type: registry.Headless,
			Ports: []registry.Port{
				{Name: portName(1), Protocol: corev1.ProtocolSCTP, AppProtocol: ptr(appProtocolAtLimit), Port: 65535, TargetPort: portName(1)},
				{Name: portName(2), Protocol: corev1.ProtocolSCTP, Port: 65534, TargetPort: portName(2)},
			},
			IPFamilies:     []corev1.IPFamily{corev1.IPv6Protocol},
			ExportedLabels: map[string]string{setAtLimit + "/" + strings.Repeat("k", 63): strings.Repeat("v", 63)},
		},
		Endpoints: []registry.Endpoint{{
			Address: addr, AddressType: discoveryv1.AddressTypeIPv6, Ready: true, Serving: true,
			Ports: []registry.EndpointPort{
				{Name: portName(1), Protocol: corev1.ProtocolSCTP, Port: 65535},
				{Name: portName(2), Protocol: corev1.ProtocolSCTP, Port: 65535},
			},
			Hostname: strings.Repeat("h", 63),
			NodeName: setAtLimit,
			Zone:     strings.Repeat("z", 63),
		}},
	}
	if err := cloudmaptest.CheckServiceName(rec.Name); err != nil {
		t.Errorf("the Kubernetes service name: %v", err)
	}
	taken := map[string]bool{instanceID(corev1.ProtocolSCTP, addr, 65535): true}
	insts, err := encodeRecord(&rec, nil, taken)
	if err != nil {
		t.Fatal(err)
	}
	longest := ""
	var list []instance
	for id, in := range insts {
		if err := cloudmaptest.CheckInstance(id, in.Attrs); err != nil {
			t.Error(err)
		}
		if len(id) > len(longest) {
			longest = id
		}
		list = append(list, in)
	}
	t.Logf("longest InstanceId: %s (%d characters)", longest, len(longest))
	if len(longest) < 60 {
		t.Errorf("longest InstanceId %s: the case does not reach the schema's longest", longest)
	}
	for _, id := range []string{heartbeatID(setAtLimit, clusterAtLimit), beaconID(setAtLimit, clusterAtLimit, nsAtLimit)} {
		if err := cloudmaptest.CheckInstance(id, nil); err != nil {
			t.Error(err)
		}
	}
	got := decodeInstances(setAtLimit, nsAtLimit, svcAtLimit, list, func(id string, err error) { t.Errorf("%s: %v", id, err) })
	if !equalRecords(got, []registry.Record{rec}) {
		t.Fatalf("round trip:\n got  %+v\n want %+v", got, rec)
	}
}

// TestServicePortsAttribute: the marker carries every service port in one
// attribute of at most 1,024 characters. Fifteen ports of the longest names
// fit; past the limit the error names the attribute and the cause, and
// nothing is truncated.
func TestServicePortsAttribute(t *testing.T) {
	withPorts := func(n int) registry.Record {
		rec := sampleRecord("set1", "cls1", "demo", "web")
		rec.Spec.Ports = nil
		for i := range n {
			rec.Spec.Ports = append(rec.Spec.Ports, registry.Port{Name: portName(i), Protocol: corev1.ProtocolSCTP, Port: int32(60000 + i), TargetPort: portName(i)})
		}
		return rec
	}
	fit := 0
	for n := 1; n <= 64; n++ {
		rec := withPorts(n)
		if _, err := encodeRecord(&rec, nil, nil); err != nil {
			var ae *AttributeError
			if !errors.As(err, &ae) || ae.Attribute != attrServicePorts || !strings.Contains(err.Error(), "too many ports") {
				t.Fatalf("%d ports: got %v, want an AttributeError on %s that names the ports", n, err, attrServicePorts)
			}
			break
		}
		fit = n
	}
	t.Logf("%d service ports of 15-character names and named target ports fit in %s", fit, attrServicePorts)
	if fit < 15 || fit == 64 {
		t.Errorf("%d ports fit, want at least 15 and a limit", fit)
	}
}

// TestAttributesTotal: Cloud Map refuses an instance whose keys and values
// total more than 5,000 characters, even with each value within 1,024.
func TestAttributesTotal(t *testing.T) {
	attrs := map[string]string{}
	for i := range 5 {
		attrs[fmt.Sprintf("A%d", i)] = strings.Repeat("x", 998) // 1,000 characters with the key
	}
	if err := checkAttrs(registry.ServiceKey{Namespace: "demo", Name: "web"}, attrs); err != nil {
		t.Fatalf("5,000 characters refused: %v", err)
	}
	attrs["A5"] = "x"
	err := checkAttrs(registry.ServiceKey{Namespace: "demo", Name: "web"}, attrs)
	var ae *AttributeError
	if !errors.As(err, &ae) || ae.Attribute != attrTotal || ae.Limit != 5000 {
		t.Fatalf("got %v, want an AttributeError on the total", err)
	}
	if cloudmaptest.CheckInstance("x", attrs) == nil {
		t.Error("cloudmaptest.CheckInstance accepts what checkAttrs refuses")
	}
}

// TestExportedAnnotationsInAnyUTF8: Cloud Map takes attribute values of
// printable ASCII only, and annotation values may be any UTF-8. They are
// written as JSON \u escapes, which the limits proxy in front of moto
// accepts, and read back unchanged.
func TestExportedAnnotationsInAnyUTF8(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	w := newTestRegistry(t, url, "set1", "cls1")
	r := newTestRegistry(t, url, "set1", "cls2")
	run(t, r)
	rec := sampleRecord("set1", "cls1", "demo", "web", "10.1.0.1")
	rec.Spec.ExportedAnnotations = map[string]string{"description": "café, 東京, 🚀", "tab": "a\tb", "del": "\x7f"}
	rec.Spec.ExportedLabels = map[string]string{"team": "payments"}
	attrs, err := serviceAttrs(&rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := cloudmaptest.CheckInstance("marker", attrs); err != nil {
		t.Fatalf("real Cloud Map would refuse the attributes: %v", err)
	}
	if err := w.Publish(context.Background(), &rec); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, r, rec.Key(), []registry.Record{rec})
}
