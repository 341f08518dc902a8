// Records the cases publish, and how records are compared.

package registrytest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/clusterset/clusterset/pkg/registry"
)

var (
	tcpProto  = corev1.ProtocolTCP
	udpProto  = corev1.ProtocolUDP
	httpProto = "http"
)

// fullRecord returns a record that sets every field. cluster selects the
// address range, so that different clusters never share an address.
func fullRecord(setID, clusterID string, key registry.ServiceKey, cluster int) registry.Record {
	local := corev1.ServiceInternalTrafficPolicyLocal
	prefer := corev1.ServiceTrafficDistributionPreferClose
	timeout := int32(3600 + cluster)
	ports := []registry.Port{
		{Name: "http", Protocol: tcpProto, AppProtocol: &httpProto, Port: 80, TargetPort: "8080"},
		{Name: "dns", Protocol: udpProto, Port: 53, TargetPort: "dns"},
	}
	rec := registry.Record{
		ClusterSetID: setID,
		ClusterID:    clusterID,
		Namespace:    key.Namespace,
		Name:         key.Name,
		Spec: registry.ServiceSpec{
			Type:                  registry.ClusterSetIP,
			Ports:                 ports,
			SessionAffinity:       corev1.ServiceAffinityClientIP,
			SessionAffinityConfig: &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &timeout}},
			IPFamilies:            []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol},
			InternalTrafficPolicy: &local,
			TrafficDistribution:   &prefer,
			ExportedLabels:        map[string]string{"app": "web", "example.com/team": "blue"},
			ExportedAnnotations:   map[string]string{"example.com/note": "exported, with \"quotes\" and\nnewlines"},
			// Sub-millisecond digits: backends keep at least milliseconds.
			ExportCreated: time.Date(2025, 3, 14, 15, 9, 26, 535_897_932, time.UTC).Add(time.Duration(cluster) * time.Second),
		},
		Changed: time.Date(2025, 3, 15, 1, 2, 3, 456_789_000, time.UTC).Add(time.Duration(cluster) * time.Second),
	}
	rec.Endpoints = []registry.Endpoint{
		endpoint(cluster, 1, ports, false),
		endpoint(cluster, 2, ports, false),
		endpoint(cluster, 3, ports, true),
	}
	// Each combination of conditions and optional fields.
	rec.Endpoints[0].Hostname, rec.Endpoints[0].NodeName, rec.Endpoints[0].Zone = "web-0", "node-1", "zone-a"
	rec.Endpoints[1].Ready, rec.Endpoints[1].Serving, rec.Endpoints[1].Terminating = false, true, true
	rec.Endpoints[1].NodeName = "node-2"
	rec.Endpoints[2].Ready, rec.Endpoints[2].Serving = false, false
	rec.Endpoints[2].Hostname, rec.Endpoints[2].Zone = "web-2", "zone-b"
	return rec
}

// smallRecord is a minimal ClusterSetIP record with one port and two endpoints.
func smallRecord(setID, clusterID string, key registry.ServiceKey, i int) registry.Record {
	ports := []registry.Port{{Name: "http", Protocol: tcpProto, Port: 80, TargetPort: "8080"}}
	return registry.Record{
		ClusterSetID: setID,
		ClusterID:    clusterID,
		Namespace:    key.Namespace,
		Name:         key.Name,
		Spec: registry.ServiceSpec{
			Type:            registry.ClusterSetIP,
			Ports:           ports,
			SessionAffinity: corev1.ServiceAffinityNone,
			IPFamilies:      []corev1.IPFamily{corev1.IPv4Protocol},
			ExportCreated:   time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * time.Millisecond),
		},
		Endpoints: []registry.Endpoint{endpoint(1, 2*i, ports, false), endpoint(1, 2*i+1, ports, false)},
	}
}

// endpoint returns a ready endpoint, number i of cluster, listening on every
// service port (on the target port when it is a number, else on port+1000).
func endpoint(cluster, i int, ports []registry.Port, ipv6 bool) registry.Endpoint {
	ep := registry.Endpoint{Ready: true, Serving: true}
	if ipv6 {
		ep.Address = fmt.Sprintf("fd00:%x::%x", cluster, i)
		ep.AddressType = discoveryv1.AddressTypeIPv6
	} else {
		ep.Address = fmt.Sprintf("10.%d.%d.%d", cluster, i/250, i%250+1)
		ep.AddressType = discoveryv1.AddressTypeIPv4
	}
	for _, p := range ports {
		port := p.Port + 1000
		var n int32
		if _, err := fmt.Sscanf(p.TargetPort, "%d", &n); err == nil {
			port = n
		}
		ep.Ports = append(ep.Ports, registry.EndpointPort{Name: p.Name, Protocol: p.Protocol, Port: port})
	}
	return ep
}

// canonical returns a copy of r in the form that two equivalent records share:
// ports and endpoints sorted (backends need not keep their order), empty
// collections nil, ExportCreated in UTC truncated to milliseconds.
func canonical(r registry.Record) registry.Record {
	var c registry.Record
	raw, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		panic(err)
	}
	c.Spec.ExportCreated = r.Spec.ExportCreated.UTC().Truncate(time.Millisecond)
	c.Changed = r.Changed.UTC().Truncate(time.Millisecond)
	if len(c.Spec.Ports) == 0 {
		c.Spec.Ports = nil
	}
	slices.SortFunc(c.Spec.Ports, func(a, b registry.Port) int {
		return strings.Compare(fmt.Sprintf("%s/%s/%05d", a.Name, a.Protocol, a.Port), fmt.Sprintf("%s/%s/%05d", b.Name, b.Protocol, b.Port))
	})
	if len(c.Spec.IPFamilies) == 0 {
		c.Spec.IPFamilies = nil
	}
	if len(c.Spec.ExportedLabels) == 0 {
		c.Spec.ExportedLabels = nil
	}
	if len(c.Spec.ExportedAnnotations) == 0 {
		c.Spec.ExportedAnnotations = nil
	}
	if len(c.Endpoints) == 0 {
		c.Endpoints = nil
	}
	for i := range c.Endpoints {
		ps := c.Endpoints[i].Ports
		if len(ps) == 0 {
			c.Endpoints[i].Ports = nil
		}
		slices.SortFunc(ps, func(a, b registry.EndpointPort) int {
			return strings.Compare(fmt.Sprintf("%s/%s/%05d", a.Name, a.Protocol, a.Port), fmt.Sprintf("%s/%s/%05d", b.Name, b.Protocol, b.Port))
		})
	}
	slices.SortFunc(c.Endpoints, func(a, b registry.Endpoint) int { return strings.Compare(a.Address, b.Address) })
	return c
}

// canonicalAll returns the canonical forms of recs sorted by ClusterID.
func canonicalAll(recs []registry.Record) []registry.Record {
	out := make([]registry.Record, len(recs))
	for i, r := range recs {
		out[i] = canonical(r)
	}
	slices.SortFunc(out, func(a, b registry.Record) int { return strings.Compare(a.ClusterID, b.ClusterID) })
	return out
}

// sameRecords compares records read from a registry with canonical wanted
// ones: same clusters in ClusterID order, and equal records.
func sameRecords(got, want []registry.Record) error {
	if !slices.IsSortedFunc(got, func(a, b registry.Record) int { return strings.Compare(a.ClusterID, b.ClusterID) }) {
		return fmt.Errorf("records not sorted by ClusterID: %v", clusterIDs(got))
	}
	if !slices.Equal(clusterIDs(got), clusterIDs(want)) {
		return fmt.Errorf("got records of clusters %v, want %v", clusterIDs(got), clusterIDs(want))
	}
	for i := range got {
		g := canonical(got[i])
		if !reflect.DeepEqual(g, want[i]) {
			return fmt.Errorf("record of cluster %s differs:\n%s", g.ClusterID, diffRecords(g, want[i]))
		}
	}
	return nil
}

// diffRecords describes how got and want differ, field by field, in JSON.
func diffRecords(got, want registry.Record) string {
	var b strings.Builder
	field := func(name string, g, w any) {
		gj, _ := json.Marshal(g)
		wj, _ := json.Marshal(w)
		if string(gj) != string(wj) || !reflect.DeepEqual(g, w) {
			fmt.Fprintf(&b, "  %s:\n    got:  %s\n    want: %s\n", name, abbreviateString(string(gj)), abbreviateString(string(wj)))
		}
	}
	field("ClusterSetID", got.ClusterSetID, want.ClusterSetID)
	field("Namespace/Name", got.Key(), want.Key())
	gs, ws := reflect.ValueOf(got.Spec), reflect.ValueOf(want.Spec)
	for i := range gs.NumField() {
		field("Spec."+gs.Type().Field(i).Name, gs.Field(i).Interface(), ws.Field(i).Interface())
	}
	if len(got.Endpoints) != len(want.Endpoints) {
		fmt.Fprintf(&b, "  Endpoints: got %d, want %d\n", len(got.Endpoints), len(want.Endpoints))
	}
	shown := 0
	for i := range min(len(got.Endpoints), len(want.Endpoints)) {
		if !reflect.DeepEqual(got.Endpoints[i], want.Endpoints[i]) && shown < 3 {
			shown++
			field(fmt.Sprintf("Endpoints[%d]", i), got.Endpoints[i], want.Endpoints[i])
		}
	}
	if b.Len() == 0 {
		return "  (no visible difference: nil and empty values?)"
	}
	return b.String()
}

func clusterIDs(recs []registry.Record) []string {
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.ClusterID
	}
	return ids
}

func compareKeys(a, b registry.ServiceKey) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

func abbreviate(keys []registry.ServiceKey) string {
	if len(keys) <= 6 {
		return fmt.Sprint(keys)
	}
	return fmt.Sprintf("%v ... %v", keys[:3], keys[len(keys)-3:])
}

func abbreviateString(s string) string {
	if len(s) > 400 {
		return s[:400] + "..."
	}
	return s
}

// slug turns a sub-test name into a short lowercase DNS label part: its
// capital letters, lowercased.
func slug(name string) string {
	var b strings.Builder
	for _, r := range name {
		if r >= 'A' && r <= 'Z' {
			b.WriteRune(r - 'A' + 'a')
		}
	}
	s := b.String()
	if len(s) > 12 {
		s = s[:12]
	}
	return s
}

func randHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}
