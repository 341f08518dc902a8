// The name-limits case: every name a record carries at the longest that
// Kubernetes (or, for the IDs, clusterset) allows.

package registrytest

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/clusterset/clusterset/pkg/registry"
)

// Name lengths of the case, and where each limit comes from.
const (
	// A namespace name is a DNS-1123 label, a Service name a DNS-1035
	// label (Kubernetes API: Object Names and IDs); so are a pod's
	// hostname and a topology zone a label value of this length.
	maxLabel = 63
	// A node name is a DNS-1123 subdomain.
	maxSubdomain = 253
	// A port name is an IANA_SVC_NAME (Kubernetes API: ServicePort).
	maxPortName = 15
	// The longest IPv6 address in canonical text, the longest endpoint
	// address there is.
	longestIPv6 = "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
)

// atLength returns prefix padded with '0' to n characters, ending in 'z' so
// that it ends with a letter (a DNS label, and a Cloud Map service label,
// may not end with '-').
func atLength(prefix string, n int) string {
	if len(prefix) >= n {
		return prefix[:n-1] + "z"
	}
	return prefix + strings.Repeat("0", n-len(prefix)-1) + "z"
}

// subdomainAtLength returns a DNS-1123 subdomain of exactly n characters
// that starts with prefix (a label of at most 62 characters): labels of 63
// characters joined by dots.
func subdomainAtLength(prefix string, n int) string {
	labels := []string{atLength(prefix, maxLabel)}
	length := maxLabel
	for length+1 < n {
		l := min(maxLabel, n-length-1)
		labels = append(labels, atLength("l", l))
		length += 1 + l
	}
	return strings.Join(labels, ".")
}

// qualifiedNameAtLimit returns a qualified name (a label key, an
// appProtocol) of the longest form: a 253-character DNS subdomain prefix,
// '/', and a 63-character name.
func qualifiedNameAtLimit(name string) string {
	return subdomainAtLength("example", maxSubdomain) + "/" + atLength(name, maxLabel)
}

// limitRecord returns a headless record of key whose every name is at its
// limit: port names of 15 characters, named target ports, an appProtocol
// and exported label and annotation keys of 317 characters, hostnames and
// zones of 63 characters, node names of 253. Its first endpoint has the
// longest IPv6 address, SCTP port 65535 and two service ports on that one
// endpoint port, the longest Cloud Map InstanceId (clusterset's schema,
// docs/cloudmap.md). Every cluster's record has the same addresses, as
// clusters with overlapping pod networks would.
func limitRecord(setID, clusterID string, key registry.ServiceKey) registry.Record {
	appProtocol := qualifiedNameAtLimit("protocol")
	p1, p2 := atLength("port-a", maxPortName), atLength("port-b", maxPortName)
	ports := []registry.Port{
		{Name: p1, Protocol: corev1.ProtocolSCTP, AppProtocol: &appProtocol, Port: 65535, TargetPort: atLength("target-a", maxPortName)},
		{Name: p2, Protocol: corev1.ProtocolSCTP, Port: 65534, TargetPort: atLength("target-b", maxPortName)},
	}
	node := subdomainAtLength("node", maxSubdomain)
	return registry.Record{
		ClusterSetID: setID,
		ClusterID:    clusterID,
		Namespace:    key.Namespace,
		Name:         key.Name,
		Spec: registry.ServiceSpec{
			Type:                registry.Headless,
			Ports:               ports,
			IPFamilies:          []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol},
			ExportedLabels:      map[string]string{qualifiedNameAtLimit("label"): atLength("value", maxLabel)},
			ExportedAnnotations: map[string]string{qualifiedNameAtLimit("annotation"): "a value"},
			ExportCreated:       time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC),
		},
		Endpoints: []registry.Endpoint{
			{
				Address: longestIPv6, AddressType: discoveryv1.AddressTypeIPv6, Ready: true, Serving: true,
				Ports: []registry.EndpointPort{
					{Name: p1, Protocol: corev1.ProtocolSCTP, Port: 65535},
					{Name: p2, Protocol: corev1.ProtocolSCTP, Port: 65535},
				},
				Hostname: atLength("host-0", maxLabel), NodeName: node, Zone: atLength("zone", maxLabel),
			},
			{
				Address: "10.255.255.254", AddressType: discoveryv1.AddressTypeIPv4, Serving: true, Terminating: true,
				Ports: []registry.EndpointPort{
					{Name: p1, Protocol: corev1.ProtocolSCTP, Port: 65535},
					{Name: p2, Protocol: corev1.ProtocolSCTP, Port: 65534},
				},
				Hostname: atLength("host-1", maxLabel), NodeName: node, Zone: atLength("zone", maxLabel),
			},
		},
	}
}

// testNameLimits publishes and reads back records whose every name is at
// its limit, from two clusters whose IDs are at theirs (63 characters, a
// DNS-1123 label: KEP-2149) in a clusterset whose ID is at its (253, a
// DNS-1123 subdomain: registry.ValidateClusterSetID), in a namespace of 63
// characters, of a service of 63; then heartbeats and withdrawals.
func testNameLimits(s *suite) {
	s.setID = subdomainAtLength(s.setID, registry.MaxClusterSetIDLength)
	s.ns = atLength(s.ns+"-", maxLabel)
	idA := atLength("cls-a-", registry.MaxClusterIDLength)
	idB := atLength("cls-b-", registry.MaxClusterIDLength)
	for _, err := range []error{registry.ValidateClusterSetID(s.setID), registry.ValidateClusterID(idA), registry.ValidateClusterID(idB)} {
		if err != nil {
			s.t.Fatalf("the case's own IDs: %v", err)
		}
	}
	key := s.key(atLength("svc-", maxLabel))
	s.t.Logf("clusterset %d, clusters %d, namespace %d, service %d characters", len(s.setID), len(idA), len(key.Namespace), len(key.Name))

	a := s.start(idA)
	b := s.start(idB)
	recA := limitRecord(s.setID, idA, key)
	a.publish(recA)
	b.waitRecords(key, recA)
	// B publishes the same addresses once it sees A's: in Cloud Map its
	// InstanceIds then carry a suffix, the longest the schema makes.
	recB := limitRecord(s.setID, idB, key)
	recB.Spec.ExportCreated = recA.Spec.ExportCreated.Add(time.Second)
	b.publish(recB)
	a.waitRecords(key, recA, recB)
	b.waitRecords(key, recA, recB)
	b.waitKeys(key)

	// An update at the limits, then liveness in the clusters' names.
	recA.Endpoints[0].Ready = false
	a.publish(recA)
	b.waitRecords(key, recA, recB)
	for _, m := range []*member{a, b} {
		if err := m.reg.Heartbeat(s.ctx()); err != nil {
			s.t.Fatalf("Heartbeat of %s: %v", m.clusterID, err)
		}
	}
	s.eventually("liveness of both clusters", func() error {
		live, err := b.reg.Liveness(s.ctx())
		if err != nil {
			return err
		}
		for _, id := range []string{idA, idB} {
			if hb, ok := live[id]; !ok || hb.Holder != HolderOf(id) {
				return fmt.Errorf("cluster %s: heartbeat %+v (present %v)", id, hb, ok)
			}
		}
		return nil
	})

	a.withdraw(key)
	b.waitRecords(key, recB)
	b.withdraw(key)
	a.waitRecords(key)
	b.waitKeys()
}
