package registry

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// TestEndpointValidate: every endpoint the EndpointSlice API rejects is
// rejected here with a message naming the field, and the ones it accepts
// pass. The cases follow Kubernetes v1.37's validateEndpoints and
// ValidateEndpointIP.
func TestEndpointValidate(t *testing.T) {
	v4 := func(addr string) Endpoint {
		return Endpoint{Address: addr, AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []EndpointPort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}}
	}
	v6 := func(addr string) Endpoint {
		e := v4(addr)
		e.AddressType = discoveryv1.AddressTypeIPv6
		return e
	}
	with := func(e Endpoint, f func(*Endpoint)) Endpoint { f(&e); return e }
	for _, tc := range []struct {
		name string
		ep   Endpoint
		want string // "" = valid; else a substring of the error
	}{
		{"IPv4", v4("10.0.0.1"), ""},
		{"IPv6", v6("fd00::1"), ""},
		{"public IPv4", v4("203.0.113.7"), ""},
		{"node and host names", with(v4("10.0.0.1"), func(e *Endpoint) { e.Hostname, e.NodeName = "web-0", "ip-10-0-0-1.ec2.internal" }), ""},
		{"not an IP", v4("not-an-ip"), "not an IP address"},
		{"zone", v6("fe80::1%eth0"), "not an IP address"},
		{"IPv6 as IPv4", v4("fd00::1"), "not IPv4"},
		{"IPv4 as IPv6", v6("10.0.0.1"), "not IPv6"},
		{"IPv4-mapped IPv6", v6("::ffff:10.0.0.1"), "not IPv6"},
		{"unknown type", with(v4("10.0.0.1"), func(e *Endpoint) { e.AddressType = discoveryv1.AddressTypeFQDN }), "neither IPv4 nor IPv6"},
		{"leading zeros", v4("010.0.0.1"), "not an IP address"},
		{"IPv6 not canonical", v6("FD00:0::1"), "canonical"},
		{"unspecified IPv4", v4("0.0.0.0"), "unspecified"},
		{"unspecified IPv6", v6("::"), "unspecified"},
		{"loopback IPv4", v4("127.0.0.1"), "loopback"},
		{"loopback IPv4 range", v4("127.9.9.9"), "loopback"},
		{"loopback IPv6", v6("::1"), "loopback"},
		{"link-local IPv4", v4("169.254.169.254"), "link-local"},
		{"link-local IPv6", v6("fe80::1"), "link-local"},
		{"link-local multicast IPv4", v4("224.0.0.251"), "link-local multicast"},
		{"link-local multicast IPv6", v6("ff02::fb"), "link-local multicast"},
		{"port 0", with(v4("10.0.0.1"), func(e *Endpoint) { e.Ports[0].Port = 0 }), "out of range"},
		{"port 65536", with(v4("10.0.0.1"), func(e *Endpoint) { e.Ports[0].Port = 65536 }), "out of range"},
		{"protocol", with(v4("10.0.0.1"), func(e *Endpoint) { e.Ports[0].Protocol = "ICMP" }), "not TCP, UDP or SCTP"},
		{"port name", with(v4("10.0.0.1"), func(e *Endpoint) { e.Ports[0].Name = "HTTP_1" }), "name"},
		{"hostname", with(v4("10.0.0.1"), func(e *Endpoint) { e.Hostname = "web.0" }), "hostname"},
		{"node name", with(v4("10.0.0.1"), func(e *Endpoint) { e.NodeName = "Node_1" }), "node name"},
		{"node name too long", with(v4("10.0.0.1"), func(e *Endpoint) { e.NodeName = strings.Repeat("a", 254) }), "node name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.ep.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("accepted; want an error about %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// TestSanitize: an address not in canonical form is rewritten without a
// complaint, an invalid hostname or node name is cleared with a reason, and
// the endpoint then validates; valid names are kept.
func TestSanitize(t *testing.T) {
	ep := Endpoint{Address: "fd00:0:0::1", AddressType: discoveryv1.AddressTypeIPv6, Hostname: "web.0", NodeName: "Node_1"}
	err := ep.Sanitize()
	if err == nil || !strings.Contains(err.Error(), "hostname") || !strings.Contains(err.Error(), "node name") {
		t.Fatalf("err = %v, want both names reported", err)
	}
	if ep.Hostname != "" || ep.NodeName != "" || ep.Address != "fd00::1" {
		t.Fatalf("sanitized to %+v", ep)
	}
	if err := ep.Validate(); err != nil {
		t.Fatal(err)
	}
	ok := Endpoint{Address: "10.0.0.1", AddressType: discoveryv1.AddressTypeIPv4, Hostname: "web-0", NodeName: "node-1.zone"}
	if err := ok.Sanitize(); err != nil || ok.Hostname != "web-0" || ok.NodeName != "node-1.zone" {
		t.Fatalf("valid names changed: %+v, %v", ok, err)
	}
}

// TestIDRules: cluster IDs up to the 63 characters of a DNS-1123 label and
// clusterset IDs up to the 253 of a DNS-1123 subdomain are accepted, one
// character more is not; a record's cluster ID needs only to be a label
// value.
func TestIDRules(t *testing.T) {
	label := func(n int) string { return "c" + strings.Repeat("0", n-1) }
	subdomain := func(n int) string {
		s := strings.TrimRight(strings.Repeat(label(63)+".", 5)[:n], ".")
		return s[:len(s)-1] + "z"
	}
	for _, tc := range []struct {
		what string
		err  error
		ok   bool
	}{
		{"cluster ID of 63", ValidateClusterID(label(MaxClusterIDLength)), true},
		{"cluster ID of 64", ValidateClusterID(label(MaxClusterIDLength + 1)), false},
		{"cluster ID with a capital", ValidateClusterID("Cls1"), false},
		{"empty cluster ID", ValidateClusterID(""), false},
		{"clusterset ID of 253", ValidateClusterSetID(subdomain(MaxClusterSetIDLength)), true},
		{"clusterset ID of 254", ValidateClusterSetID(subdomain(MaxClusterSetIDLength + 1)), false},
		{"clusterset ID with an underscore", ValidateClusterSetID("prod_1"), false},
		{"empty clusterset ID", ValidateClusterSetID(""), false},
		{"importable cluster ID of 63", ImportableClusterID(label(63)), true},
		{"importable cluster ID of another writer", ImportableClusterID("EKS_Cluster.1"), true},
		{"importable cluster ID of 64", ImportableClusterID(label(64)), false},
		{"importable cluster ID with a slash", ImportableClusterID("a/b"), false},
		{"empty importable cluster ID", ImportableClusterID(""), false},
	} {
		if (tc.err == nil) != tc.ok {
			t.Errorf("%s: got error %v, want ok=%v", tc.what, tc.err, tc.ok)
		}
	}
	if len(subdomain(253)) != 253 || len(label(63)) != 63 {
		t.Fatal("the test's IDs have the wrong lengths")
	}
}
