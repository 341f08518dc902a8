package cloudmap

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/clusterset/clusterset/pkg/registry"
)

// TestInstanceIDs: the AWS controller's InstanceId format, its IPv6 form,
// and the 64-character limit for every id we generate.
func TestInstanceIDs(t *testing.T) {
	for _, tc := range []struct {
		proto corev1.Protocol
		addr  string
		port  int32
		want  string
	}{
		{corev1.ProtocolTCP, "10.10.86.76", 80, "tcp-10_10_86_76-80"},
		{corev1.ProtocolUDP, "10.0.0.1", 53, "udp-10_0_0_1-53"},
		{corev1.ProtocolTCP, "fd00::1", 8080, "tcp-fd00__1-8080"},
		{corev1.ProtocolSCTP, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, "sctp-ffff_ffff_ffff_ffff_ffff_ffff_ffff_ffff-65535"},
	} {
		got := instanceID(tc.proto, tc.addr, tc.port)
		if got != tc.want {
			t.Errorf("instanceID(%s, %s, %d) = %s, want %s", tc.proto, tc.addr, tc.port, got, tc.want)
		}
		if len(got+clusterSuffix("x")+"-65535") > maxInstanceID || !validIDChars(got) {
			t.Errorf("%s with suffixes exceeds the InstanceId limits", got)
		}
	}
	long := strings.Repeat("c", 200)
	for _, id := range []string{markerID(long, long), heartbeatID(long, long), markerID("set1", "cls1")} {
		if len(id) > maxInstanceID || !validIDChars(id) {
			t.Errorf("invalid InstanceId %q", id)
		}
	}
	if markerID("set1", "cls1") == markerID("set2", "cls1") {
		t.Error("markers of one cluster ID in two clustersets collide")
	}
}

// TestEncodeDecodeRoundTrip: every field of a record survives encoding to
// instances and decoding, with at most 30 attributes per instance; decoding
// ignores unknown attributes and instances of other clustersets.
func TestEncodeDecodeRoundTrip(t *testing.T) {
	rec := sampleRecord("set1", "cls1", "demo", "web", "10.0.0.1", "10.0.0.2")
	rec.Endpoints = append(rec.Endpoints,
		registry.Endpoint{Address: "fd00::5", AddressType: discoveryv1.AddressTypeIPv6, Terminating: true,
			Ports: []registry.EndpointPort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080}}},
		registry.Endpoint{Address: "10.0.0.9", AddressType: discoveryv1.AddressTypeIPv4, Ready: true, Serving: true}, // no ports (headless)
	)
	insts, err := encodeRecord(&rec, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var list []instance
	for _, in := range insts {
		if len(in.Attrs) > maxAttributes {
			t.Errorf("%s has %d attributes", in.ID, len(in.Attrs))
		}
		list = append(list, in)
	}
	list = append(list, instance{ID: "tcp-10_9_9_9-80", Attrs: map[string]string{attrClusterSetID: "other", attrClusterID: "x", attrIPv4: "10.9.9.9", attrPort: "80"}})
	list[0].Attrs["FUTURE_ATTRIBUTE"] = "x"
	got := decodeInstances("set1", "demo", "web", list, func(id string, err error) { t.Errorf("%s: %v", id, err) })
	want := *rec.DeepCopy()
	// Decoded endpoints come sorted by address.
	want.Endpoints = []registry.Endpoint{rec.Endpoints[0], rec.Endpoints[1], rec.Endpoints[3], rec.Endpoints[2]}
	if !equalRecords(got, []registry.Record{want}) {
		t.Fatalf("round trip:\n got  %+v\n want %+v", got, want)
	}
}

// TestOversizedAttribute: values past 1,024 characters are an error naming
// the attribute, never truncated.
func TestOversizedAttribute(t *testing.T) {
	rec := sampleRecord("set1", "cls1", "demo", "web", "10.0.0.1")
	rec.Spec.ExportedLabels = map[string]string{"a": strings.Repeat("v", 1020)}
	_, err := encodeRecord(&rec, nil, nil)
	var ae *AttributeError
	if !errors.As(err, &ae) || ae.Attribute != attrExportedLabels || ae.Limit != 1024 {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(err.Error(), "EXPORTED_LABELS") {
		t.Fatalf("error does not name the attribute: %v", err)
	}
}

// TestDedupe: moto's duplicate copies collapse to the last one.
func TestDedupe(t *testing.T) {
	in := []instance{{ID: "a", Attrs: map[string]string{"v": "1"}}, {ID: "b"}, {ID: "a", Attrs: map[string]string{"v": "2"}}}
	out, n := dedupe(in)
	if len(out) != 2 || out[0].Attrs["v"] != "2" || n["a"] != 2 {
		t.Fatalf("dedupe = %v %v", out, n)
	}
}

// TestDecodeMarkersOfEarlierVersions: clusterset-controller before
// OWNER_CLUSTERSET_ID wrote markers and port-less endpoints with
// CLUSTERSET_ID. Readers still decode them (a clusterset upgrades one
// cluster at a time), and the writer's next Publish replaces them.
func TestDecodeMarkersOfEarlierVersions(t *testing.T) {
	rec := sampleRecord("set1", "cls1", "demo", "web")
	rec.Endpoints = []registry.Endpoint{{Address: "10.0.0.9", AddressType: discoveryv1.AddressTypeIPv4, Ready: true, Serving: true}}
	insts, err := encodeRecord(&rec, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var old []instance
	for _, in := range insts {
		if _, ok := in.Attrs[attrOwnerClusterSetID]; !ok {
			t.Fatalf("%s: the marker and a port-less endpoint must carry %s: %v", in.ID, attrOwnerClusterSetID, in.Attrs)
		}
		a := copyAttrs(in.Attrs)
		a[attrClusterSetID] = a[attrOwnerClusterSetID]
		delete(a, attrOwnerClusterSetID)
		old = append(old, instance{ID: in.ID, Attrs: a})
	}
	got := decodeInstances("set1", "demo", "web", old, func(id string, err error) { t.Errorf("%s: %v", id, err) })
	if !equalRecords(got, []registry.Record{rec}) {
		t.Fatalf("earlier format:\n got  %+v\n want %+v", got, rec)
	}
	if got := decodeInstances("set2", "demo", "web", old, func(string, error) {}); len(got) != 0 {
		t.Fatalf("another clusterset decoded %+v", got)
	}
}

// TestDecodePortZero: an AWS_INSTANCE_PORT or SERVICE_PORT of "0" is a port
// out of range, not a missing port. Read as missing, a hostile writer's
// "0" made a port-less endpoint, and a record of its cluster, out of an
// instance the reader must skip.
func TestDecodePortZero(t *testing.T) {
	for _, attr := range []string{attrPort, attrSvcPort} {
		a := map[string]string{attrClusterSetID: "set1", attrClusterID: "evil", attrIPv4: "10.0.0.1", attrPort: "80",
			attrEPProtocol: "TCP", attrReady: "true", attrSvcPort: "80", attrSvcProtocol: "TCP", attrSvcType: "ClusterSetIP"}
		a[attr] = "0"
		var skipped []string
		got := decodeInstances("set1", "demo", "web", []instance{{ID: "zero", Attrs: a}}, func(id string, err error) {
			skipped = append(skipped, id+": "+err.Error())
		})
		if len(got) != 0 || len(skipped) != 1 || !strings.Contains(skipped[0], "out of range") {
			t.Errorf("%s=0: records %+v, skipped %v; want none and the instance skipped as out of range", attr, got, skipped)
		}
	}
}
