package export

import (
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/registry"
)

// buildRecord describes an exported Service and its local endpoints as this
// cluster's registry record. The record names no cluster or clusterset: the
// backend, built for this cluster, fills them in (registry.Registry.Publish).
func buildRecord(export *mcsv1beta1.ServiceExport, svc *corev1.Service, slices []discoveryv1.EndpointSlice) *registry.Record {
	spec := registry.ServiceSpec{
		Type:                  registry.ClusterSetIP,
		SessionAffinity:       svc.Spec.SessionAffinity,
		SessionAffinityConfig: svc.Spec.SessionAffinityConfig.DeepCopy(),
		IPFamilies:            append([]corev1.IPFamily(nil), svc.Spec.IPFamilies...),
		InternalTrafficPolicy: svc.Spec.InternalTrafficPolicy,
		TrafficDistribution:   svc.Spec.TrafficDistribution,
		ExportedLabels:        export.Spec.ExportedLabels,
		ExportedAnnotations:   export.Spec.ExportedAnnotations,
		ExportCreated:         export.CreationTimestamp.Time,
	}
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		spec.Type = registry.Headless
	}
	if spec.SessionAffinity == corev1.ServiceAffinityNone {
		// None is the default: leaving it empty lets clusters that omit the
		// field agree with clusters that spell it out.
		spec.SessionAffinity = ""
	}
	for _, p := range svc.Spec.Ports {
		spec.Ports = append(spec.Ports, registry.Port{
			Name:        p.Name,
			Protocol:    protocolOrTCP(p.Protocol),
			AppProtocol: p.AppProtocol,
			Port:        p.Port,
			TargetPort:  p.TargetPort.String(),
		})
	}
	return &registry.Record{
		Namespace: svc.Namespace,
		Name:      svc.Name,
		Spec:      spec,
		Endpoints: endpointsOf(slices),
	}
}

// endpointsOf flattens the Service's EndpointSlices into one endpoint per
// address. During slice transitions an address can appear twice; the ready
// copy wins, then the first.
func endpointsOf(slices []discoveryv1.EndpointSlice) []registry.Endpoint {
	byAddr := map[string]registry.Endpoint{}
	for i := range slices {
		s := &slices[i]
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN slices cannot be imported as IPs
		}
		var ports []registry.EndpointPort
		for _, p := range s.Ports {
			if p.Port == nil {
				continue
			}
			ep := registry.EndpointPort{Port: *p.Port, Protocol: corev1.ProtocolTCP}
			if p.Name != nil {
				ep.Name = *p.Name
			}
			if p.Protocol != nil {
				ep.Protocol = *p.Protocol
			}
			ports = append(ports, ep)
		}
		sort.Slice(ports, func(a, b int) bool { return ports[a].Name < ports[b].Name })
		for _, e := range s.Endpoints {
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			serving := ready
			if e.Conditions.Serving != nil {
				serving = *e.Conditions.Serving
			}
			terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
			for _, addr := range e.Addresses {
				ep := registry.Endpoint{
					Address:     addr,
					AddressType: s.AddressType,
					Ports:       ports,
					Ready:       ready,
					Serving:     serving,
					Terminating: terminating,
					Hostname:    ptr.Deref(e.Hostname, ""),
					NodeName:    ptr.Deref(e.NodeName, ""),
					Zone:        ptr.Deref(e.Zone, ""),
				}
				if old, seen := byAddr[addr]; seen && (old.Ready || !ep.Ready) {
					continue
				}
				byAddr[addr] = ep
			}
		}
	}
	out := make([]registry.Endpoint, 0, len(byAddr))
	for _, ep := range byAddr {
		out = append(out, ep)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Address < out[b].Address })
	return out
}

// readyEndpoints counts the Ready endpoints of eps.
func readyEndpoints(eps []registry.Endpoint) int {
	n := 0
	for _, ep := range eps {
		if ep.Ready {
			n++
		}
	}
	return n
}

func protocolOrTCP(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return corev1.Protocol(strings.ToUpper(string(p)))
}

// lastChangeTrigger returns the newest endpoints.kubernetes.io/last-change-trigger-time
// of slices: when the EndpointSlice controller last saw a Pod change that
// moved them (the start of Kubernetes' network programming latency SLI).
// Slices written by others (selector-less Services) rarely carry it; zero
// then.
func lastChangeTrigger(slices []discoveryv1.EndpointSlice) time.Time {
	var newest time.Time
	for i := range slices {
		v, ok := slices[i].Annotations[corev1.EndpointsLastChangeTriggerTime]
		if !ok {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err == nil && t.After(newest) {
			newest = t
		}
	}
	return newest
}

// changeTime returns the registry.Record.Changed of rec, the version about to
// be published after prev (nil when there is none): prev's time when the
// content is the same; else trigger when it is newer than prev's time (the
// Pod change that caused this version); else now (a change with no trigger:
// the Service or ServiceExport changed, or slices without the annotation).
func changeTime(prev, rec *registry.Record, trigger, now time.Time) time.Time {
	if prev != nil && registry.SameContent(prev, rec) && !prev.Changed.IsZero() {
		return prev.Changed
	}
	if prev != nil && !trigger.IsZero() && trigger.After(prev.Changed) && !trigger.After(now) {
		return trigger
	}
	return now
}
