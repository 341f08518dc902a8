// Package mergetest generates record sets for property tests of the merge
// and of what is built from it (the importer's EndpointSlices). It is used
// by tests only.
package mergetest

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"

	"github.com/clusterset/clusterset/pkg/registry"
)

// T0 is the base of the generated ServiceExport creation times.
var T0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// bytesSource hands out small choices from the fuzzer's bytes, then zeros.
type bytesSource struct{ b []byte }

func (s *bytesSource) pick(n int) int {
	if len(s.b) == 0 {
		return 0
	}
	v := int(s.b[0]) % n
	s.b = s.b[1:]
	return v
}

func pickOf[T any](s *bytesSource, options ...T) T { return options[s.pick(len(options))] }

// Records builds up to six records of service ns/svc with distinct cluster
// IDs from data, a fuzzer's input. Values come from small sets, nil and empty
// variants included, so that ties, equal-by-meaning values and port clashes
// (same name on another number or protocol, same number under another name,
// a port only some clusters have) are frequent. Each record has up to four
// endpoints, IPv4 or IPv6, whose ports are mostly the record's own service
// ports (with a target port number) and sometimes a stray name or protocol.
// The same data always gives the same records.
func Records(data []byte) []registry.Record {
	s := &bytesSource{b: data}
	ids := []string{"a", "b", "c", "d", "e", "f"}
	n := s.pick(len(ids) + 1)
	// A permutation of ids, so that the cluster ID order is unrelated to
	// the creation order.
	for i := len(ids) - 1; i > 0; i-- {
		j := s.pick(i + 1)
		ids[i], ids[j] = ids[j], ids[i]
	}
	recs := make([]registry.Record, 0, n)
	for i := range n {
		spec := registry.ServiceSpec{
			Type:            pickOf(s, registry.ClusterSetIP, registry.Headless),
			SessionAffinity: pickOf(s, "", corev1.ServiceAffinityNone, corev1.ServiceAffinityClientIP),
			SessionAffinityConfig: pickOf(s,
				nil,
				&corev1.SessionAffinityConfig{},
				&corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{}},
				&corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(int32(10800))}},
				&corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(int32(60))}},
			),
			IPFamilies: pickOf(s,
				nil,
				[]corev1.IPFamily{},
				[]corev1.IPFamily{corev1.IPv4Protocol},
				[]corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol},
				[]corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol},
			),
			InternalTrafficPolicy: pickOf(s,
				nil,
				ptr.To(corev1.ServiceInternalTrafficPolicyCluster),
				ptr.To(corev1.ServiceInternalTrafficPolicyLocal),
			),
			TrafficDistribution: pickOf(s, nil, ptr.To(""), ptr.To("PreferClose")),
			ExportedLabels:      pickOf(s, nil, map[string]string{}, map[string]string{"x": "1"}, map[string]string{"x": "2"}),
			ExportedAnnotations: pickOf(s, nil, map[string]string{}, map[string]string{"y": "1"}),
			// Few distinct times, with the same instant in other zones.
			ExportCreated: T0.Add(time.Duration(s.pick(3)) * time.Second).
				In(pickOf(s, time.UTC, time.FixedZone("X", 3600))),
		}
		for range s.pick(4) {
			spec.Ports = append(spec.Ports, registry.Port{
				Name:        pickOf(s, "", "http", "dns"),
				Protocol:    pickOf(s, "", corev1.ProtocolTCP, corev1.ProtocolUDP),
				Port:        pickOf(s, int32(53), int32(80)),
				AppProtocol: pickOf(s, nil, ptr.To(""), ptr.To("h2c")),
				TargetPort:  pickOf(s, "", "8080"),
			})
		}
		recs = append(recs, registry.Record{
			ClusterSetID: "set", ClusterID: ids[i], Namespace: "ns", Name: "svc", Spec: spec,
			Endpoints: endpoints(s, i, spec.Ports),
		})
	}
	return recs
}

// endpoints builds up to four endpoints of the cluster with index i, with
// addresses unique across clusters.
func endpoints(s *bytesSource, i int, ports []registry.Port) []registry.Endpoint {
	var out []registry.Endpoint
	for j := range s.pick(5) {
		ep := registry.Endpoint{Ready: pickOf(s, true, false), Serving: true}
		if pickOf(s, false, true) {
			ep.Address, ep.AddressType = fmt.Sprintf("fd00::%d:%d", i+1, j+1), discoveryv1.AddressTypeIPv6
		} else {
			ep.Address, ep.AddressType = fmt.Sprintf("10.%d.0.%d", i+1, j+1), discoveryv1.AddressTypeIPv4
		}
		seen := map[string]bool{}
		for _, p := range ports {
			if seen[p.Name] {
				// An EndpointSlice carries one port per name.
				continue
			}
			seen[p.Name] = true
			switch s.pick(6) {
			case 0: // the endpoint lacks this port
			case 1: // a stray protocol under the service port's name
				ep.Ports = append(ep.Ports, registry.EndpointPort{Name: p.Name, Protocol: corev1.ProtocolSCTP, Port: 9999})
			default:
				ep.Ports = append(ep.Ports, registry.EndpointPort{Name: p.Name, Protocol: p.Protocol, Port: pickOf(s, int32(8080), p.Port)})
			}
		}
		if s.pick(8) == 0 {
			// A port name the cluster's Service does not have.
			ep.Ports = append(ep.Ports, registry.EndpointPort{Name: "stray", Protocol: corev1.ProtocolTCP, Port: 7})
		}
		out = append(out, ep)
	}
	return out
}
