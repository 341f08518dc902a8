package imports

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/merge"
	"github.com/clusterset/clusterset/pkg/registry"
)

// maxEndpointsPerSlice matches the default of Kubernetes' own EndpointSlice
// controller, so consumers see slices of the size they are used to.
const maxEndpointsPerSlice = 100

// desiredSlices computes the EndpointSlices of one import (I4): one source
// cluster per slice, split by address type and port set, at most
// maxEndpointsPerSlice endpoints each. Records of clusters for which alive
// returns false contribute no endpoints (R1). res is merge.Merge(records).
//
// A cluster's endpoints carry only the import's ports that the cluster's own
// Service exposes with the same name, protocol and number (res.Served,
// KEP-1645 "Service Port"): kube-proxy routes a Service port to the slice
// port of the same name, so any other port would send traffic to endpoints
// that do not serve it. An endpoint left with no port, and so every endpoint
// of a cluster that shares no port with the import, is not imported, unless
// the import has no ports at all. The result is sorted by name.
func desiredSlices(namespace, service, derived, managedBy string, records []registry.Record, res *merge.Result, alive func(string) bool) []discoveryv1.EndpointSlice {
	var out []discoveryv1.EndpointSlice
	importHasPorts := len(res.Spec.Ports) > 0
	protocols := make(map[string]corev1.Protocol, len(res.Spec.Ports))
	for _, p := range res.Spec.Ports {
		protocols[p.Name] = p.Protocol
	}
	for _, rec := range records {
		if !alive(rec.ClusterID) {
			continue
		}
		served := make(map[string]corev1.Protocol, len(res.Served[rec.ClusterID]))
		for _, name := range res.Served[rec.ClusterID] {
			served[name] = protocols[name]
		}
		groups := map[string][]registry.Endpoint{}
		groupPorts := map[string][]registry.EndpointPort{}
		groupType := map[string]discoveryv1.AddressType{}
		for _, ep := range rec.Endpoints {
			ep.Ports = routablePorts(ep.Ports, served)
			if importHasPorts && len(ep.Ports) == 0 {
				continue
			}
			g := groupKey(rec.ClusterID, ep)
			groups[g] = append(groups[g], ep)
			groupPorts[g] = ep.Ports
			groupType[g] = addressType(ep)
		}
		names := make([]string, 0, len(groups))
		for g := range groups {
			names = append(names, g)
		}
		sort.Strings(names)
		for _, g := range names {
			eps := groups[g]
			sort.Slice(eps, func(i, j int) bool { return eps[i].Address < eps[j].Address })
			for n := 0; n*maxEndpointsPerSlice < len(eps); n++ {
				chunk := eps[n*maxEndpointsPerSlice : min(len(eps), (n+1)*maxEndpointsPerSlice)]
				var annotations map[string]string
				if !rec.Changed.IsZero() {
					// kube-proxy measures its network programming latency
					// from this annotation: with the source cluster's change
					// time, that spans the clusterset.
					annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: rec.Changed.UTC().Format(time.RFC3339Nano)}
				}
				out = append(out, discoveryv1.EndpointSlice{
					ObjectMeta: metav1.ObjectMeta{
						Namespace:   namespace,
						Name:        sliceName(derived, g, n),
						Annotations: annotations,
						Labels: map[string]string{
							mcsv1beta1.LabelServiceName:   service,
							mcsv1beta1.LabelSourceCluster: rec.ClusterID,
							discoveryv1.LabelManagedBy:    managedBy,
							discoveryv1.LabelServiceName:  derived,
						},
					},
					AddressType: groupType[g],
					Endpoints:   toEndpoints(chunk),
					Ports:       toPorts(groupPorts[g]),
				})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// routablePorts returns the ports of ports whose name is in served with the
// same protocol (an empty one is TCP), with that protocol written out.
func routablePorts(ports []registry.EndpointPort, served map[string]corev1.Protocol) []registry.EndpointPort {
	out := make([]registry.EndpointPort, 0, len(ports))
	for _, p := range ports {
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		if want, ok := served[p.Name]; ok && want == proto {
			out = append(out, registry.EndpointPort{Name: p.Name, Protocol: proto, Port: p.Port})
		}
	}
	return out
}

func addressType(ep registry.Endpoint) discoveryv1.AddressType {
	if ep.AddressType != "" {
		return ep.AddressType
	}
	if strings.Contains(ep.Address, ":") {
		return discoveryv1.AddressTypeIPv6
	}
	return discoveryv1.AddressTypeIPv4
}

// groupKey puts endpoints of one cluster with the same address type and the
// same ports into one group.
func groupKey(cluster string, ep registry.Endpoint) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%s", cluster, addressType(ep))
	for _, p := range ep.Ports {
		fmt.Fprintf(&b, "/%s:%s:%d", p.Name, p.Protocol, p.Port)
	}
	return b.String()
}

func toEndpoints(eps []registry.Endpoint) []discoveryv1.Endpoint {
	out := make([]discoveryv1.Endpoint, 0, len(eps))
	for _, ep := range eps {
		e := discoveryv1.Endpoint{
			Addresses: []string{ep.Address},
			Conditions: discoveryv1.EndpointConditions{
				Ready:       ptr.To(ep.Ready),
				Serving:     ptr.To(ep.Serving),
				Terminating: ptr.To(ep.Terminating),
			},
		}
		if ep.Hostname != "" {
			e.Hostname = ptr.To(ep.Hostname)
		}
		if ep.NodeName != "" {
			e.NodeName = ptr.To(ep.NodeName)
		}
		if ep.Zone != "" {
			e.Zone = ptr.To(ep.Zone)
		}
		out = append(out, e)
	}
	return out
}

func toPorts(ports []registry.EndpointPort) []discoveryv1.EndpointPort {
	out := make([]discoveryv1.EndpointPort, 0, len(ports))
	for _, p := range ports {
		out = append(out, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Protocol: ptr.To(p.Protocol), Port: ptr.To(p.Port)})
	}
	return out
}

// setTriggerTime sets or (v empty) removes slice's
// endpoints.kubernetes.io/last-change-trigger-time annotation.
func setTriggerTime(slice *discoveryv1.EndpointSlice, v string) {
	if v == "" {
		delete(slice.Annotations, corev1.EndpointsLastChangeTriggerTime)
		return
	}
	if slice.Annotations == nil {
		slice.Annotations = map[string]string{}
	}
	slice.Annotations[corev1.EndpointsLastChangeTriggerTime] = v
}
