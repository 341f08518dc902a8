package registry

import (
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

// A deep copy shares no memory with its source: changing every pointer,
// slice and map of the copy leaves the source as it was, and nil stays nil.
func TestDeepCopySharesNothing(t *testing.T) {
	full := func() *Record {
		return &Record{
			ClusterSetID: "set", ClusterID: "cls", Namespace: "ns", Name: "svc", Changed: time.UnixMilli(1),
			Spec: ServiceSpec{
				Type:                  ClusterSetIP,
				Ports:                 []Port{{Name: "http", Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("http"), Port: 80, TargetPort: "8080"}},
				SessionAffinity:       corev1.ServiceAffinityClientIP,
				SessionAffinityConfig: &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(int32(10))}},
				IPFamilies:            []corev1.IPFamily{corev1.IPv4Protocol},
				InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyLocal),
				TrafficDistribution:   ptr.To("PreferClose"),
				ExportedLabels:        map[string]string{"a": "b"},
				ExportedAnnotations:   map[string]string{"c": "d"},
			},
			Endpoints: []Endpoint{{Address: "10.0.0.1", AddressType: discoveryv1.AddressTypeIPv4, Ports: []EndpointPort{{Protocol: corev1.ProtocolTCP, Port: 8080}}, Ready: true}},
		}
	}
	src, want := full(), full()
	c := src.DeepCopy()
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("copy differs from its source:\n%+v\n%+v", c, want)
	}
	*c.Spec.Ports[0].AppProtocol = "changed"
	c.Spec.Ports[0].Port = 1
	*c.Spec.SessionAffinityConfig.ClientIP.TimeoutSeconds = 99
	c.Spec.IPFamilies[0] = corev1.IPv6Protocol
	*c.Spec.InternalTrafficPolicy = corev1.ServiceInternalTrafficPolicyCluster
	*c.Spec.TrafficDistribution = "changed"
	c.Spec.ExportedLabels["a"] = "changed"
	c.Spec.ExportedAnnotations["c"] = "changed"
	c.Endpoints[0].Address = "changed"
	c.Endpoints[0].Ports[0].Port = 1
	if !reflect.DeepEqual(src, want) {
		t.Errorf("changing the copy changed the source:\n%+v\nwant %+v", src, want)
	}
	empty := (&Record{}).DeepCopy()
	if empty.Spec.Ports != nil || empty.Endpoints != nil || empty.Spec.IPFamilies != nil || empty.Spec.SessionAffinityConfig != nil {
		t.Errorf("a copy of an empty record has non-nil fields: %+v", empty)
	}
}
