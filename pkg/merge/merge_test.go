package merge

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/registry"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// rec returns cluster's record of default/web, exported age seconds after
// t0, with a plain ClusterSetIP spec changed by the mutators.
func rec(cluster string, age int, mutate ...func(*registry.ServiceSpec)) registry.Record {
	r := registry.Record{
		ClusterSetID: "set",
		ClusterID:    cluster,
		Namespace:    "default",
		Name:         "web",
		Spec: registry.ServiceSpec{
			Type:                  registry.ClusterSetIP,
			Ports:                 []registry.Port{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: "8080"}},
			SessionAffinity:       corev1.ServiceAffinityNone,
			IPFamilies:            []corev1.IPFamily{corev1.IPv4Protocol},
			InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyCluster),
			ExportCreated:         t0.Add(time.Duration(age) * time.Second),
		},
	}
	for _, m := range mutate {
		m(&r.Spec)
	}
	return r
}

func withType(t registry.ServiceType) func(*registry.ServiceSpec) {
	return func(s *registry.ServiceSpec) { s.Type = t }
}

func withPorts(ports ...registry.Port) func(*registry.ServiceSpec) {
	return func(s *registry.ServiceSpec) { s.Ports = ports }
}

func withAffinity(a corev1.ServiceAffinity, timeout *int32) func(*registry.ServiceSpec) {
	return func(s *registry.ServiceSpec) {
		s.SessionAffinity = a
		s.SessionAffinityConfig = nil
		if timeout != nil {
			s.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: timeout}}
		}
	}
}

func withITP(p *corev1.ServiceInternalTrafficPolicy) func(*registry.ServiceSpec) {
	return func(s *registry.ServiceSpec) { s.InternalTrafficPolicy = p }
}

func withTD(d *string) func(*registry.ServiceSpec) {
	return func(s *registry.ServiceSpec) { s.TrafficDistribution = d }
}

func withFamilies(f ...corev1.IPFamily) func(*registry.ServiceSpec) {
	return func(s *registry.ServiceSpec) { s.IPFamilies = f }
}

func withLabels(m map[string]string) func(*registry.ServiceSpec) {
	return func(s *registry.ServiceSpec) { s.ExportedLabels = m }
}

func withAnnotations(m map[string]string) func(*registry.ServiceSpec) {
	return func(s *registry.ServiceSpec) { s.ExportedAnnotations = m }
}

func port(name string, proto corev1.Protocol, number int32) registry.Port {
	return registry.Port{Name: name, Protocol: proto, Port: number}
}

func appPort(name string, number int32, app *string) registry.Port {
	return registry.Port{Name: name, Protocol: corev1.ProtocolTCP, Port: number, AppProtocol: app}
}

func importPort(name string, proto corev1.Protocol, number int32) mcsv1beta1.ServicePort {
	return mcsv1beta1.ServicePort{Name: name, Protocol: proto, Port: number}
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// want is what one cluster's Conflict must be; messages must contain every
// string of msg.
type want struct {
	conflicting bool
	reason      mcsv1beta1.ServiceExportConditionReason
	differs     bool
	msg         []string
}

var noConflict = want{reason: mcsv1beta1.ServiceExportReasonNoConflicts, msg: []string{"agree"}}

func checkConflicts(t *testing.T, res Result, wants map[string]want) {
	t.Helper()
	if len(res.Conflicts) != len(wants) {
		t.Errorf("Conflicts has %d entries, want %d: %+v", len(res.Conflicts), len(wants), res.Conflicts)
	}
	for cluster, w := range wants {
		got, ok := res.Conflicts[cluster]
		if !ok {
			t.Errorf("no Conflicts entry for cluster %s", cluster)
			continue
		}
		if got.Conflicting != w.conflicting || got.Reason != w.reason || got.Differs != w.differs {
			t.Errorf("cluster %s: got Conflicting=%v Reason=%s Differs=%v, want Conflicting=%v Reason=%s Differs=%v (message %q)",
				cluster, got.Conflicting, got.Reason, got.Differs, w.conflicting, w.reason, w.differs, got.Message)
		}
		for _, m := range w.msg {
			if !strings.Contains(got.Message, m) {
				t.Errorf("cluster %s: message %q does not contain %q", cluster, got.Message, m)
			}
		}
	}
}

func TestMergeNoRecords(t *testing.T) {
	for _, recs := range [][]registry.Record{nil, {}} {
		res, ok := Merge(recs)
		if ok {
			t.Errorf("Merge(%v) ok = true, want false", recs)
		}
		if !reflect.DeepEqual(res, Result{}) {
			t.Errorf("Merge(%v) = %+v, want zero Result", recs, res)
		}
	}
}

// I6: every merged property of a single export reaches the import, and the
// import does not share memory with the records.
func TestMergeSingleExportI6(t *testing.T) {
	r := rec("cls1", 0,
		withType(registry.Headless),
		withPorts(appPort("grpc", 9000, ptr.To("kubernetes.io/h2c")), port("dns", corev1.ProtocolUDP, 53), port("raw", "", 7000)),
		withAffinity(corev1.ServiceAffinityClientIP, ptr.To(int32(300))),
		withITP(ptr.To(corev1.ServiceInternalTrafficPolicyLocal)),
		withTD(ptr.To(corev1.ServiceTrafficDistributionPreferClose)),
		withFamilies(corev1.IPv6Protocol, corev1.IPv4Protocol),
		withLabels(map[string]string{"team": "a"}),
		withAnnotations(map[string]string{"note": "x"}),
	)
	recs := []registry.Record{r}
	res, ok := Merge(recs)
	if !ok {
		t.Fatal("Merge ok = false")
	}
	wantSpec := mcsv1beta1.ServiceImportSpec{
		Type: mcsv1beta1.Headless,
		Ports: []mcsv1beta1.ServicePort{
			{Name: "grpc", Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("kubernetes.io/h2c"), Port: 9000},
			importPort("dns", corev1.ProtocolUDP, 53),
			importPort("raw", corev1.ProtocolTCP, 7000), // empty protocol written out as TCP
		},
		SessionAffinity:       corev1.ServiceAffinityClientIP,
		SessionAffinityConfig: &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(int32(300))}},
		IPFamilies:            []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol},
		InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyLocal),
		TrafficDistribution:   ptr.To(corev1.ServiceTrafficDistributionPreferClose),
	}
	if !reflect.DeepEqual(res.Spec, wantSpec) {
		t.Errorf("Spec =\n%s\nwant\n%s", show(res.Spec), show(wantSpec))
	}
	if res.Spec.IPs != nil {
		t.Errorf("Spec.IPs = %v, want none (IPs are local)", res.Spec.IPs)
	}
	if !reflect.DeepEqual(res.Labels, map[string]string{"team": "a"}) ||
		!reflect.DeepEqual(res.Annotations, map[string]string{"note": "x"}) {
		t.Errorf("Labels, Annotations = %v, %v", res.Labels, res.Annotations)
	}
	if !reflect.DeepEqual(res.Clusters, []string{"cls1"}) || res.Winner != "cls1" {
		t.Errorf("Clusters = %v, Winner = %q", res.Clusters, res.Winner)
	}
	checkConflicts(t, res, map[string]want{"cls1": noConflict})

	// The result is a copy: changing the record afterwards changes nothing.
	recs[0].Spec.ExportedLabels["team"] = "changed"
	recs[0].Spec.ExportedAnnotations["note"] = "changed"
	recs[0].Spec.IPFamilies[0] = corev1.IPv4Protocol
	*recs[0].Spec.SessionAffinityConfig.ClientIP.TimeoutSeconds = 1
	*recs[0].Spec.InternalTrafficPolicy = corev1.ServiceInternalTrafficPolicyCluster
	*recs[0].Spec.TrafficDistribution = "changed"
	*recs[0].Spec.Ports[0].AppProtocol = "changed"
	if !reflect.DeepEqual(res.Spec, wantSpec) {
		t.Errorf("Spec shares memory with the record: now\n%s", show(res.Spec))
	}
	if res.Labels["team"] != "a" || res.Annotations["note"] != "x" {
		t.Errorf("Labels/Annotations share memory with the record: %v %v", res.Labels, res.Annotations)
	}
}

// E6: the oldest ServiceExport wins, ties by cluster ID, whatever the input
// order; Clusters are sorted.
func TestMergeWinnerE6(t *testing.T) {
	tests := []struct {
		name   string
		recs   []registry.Record
		winner string
	}{
		{
			name:   "E6 oldest export wins",
			recs:   []registry.Record{rec("a", 20, withType(registry.Headless)), rec("c", 5), rec("b", 10, withType(registry.Headless))},
			winner: "c",
		},
		{
			name:   "E6 same creation time: lowest cluster ID wins",
			recs:   []registry.Record{rec("z", 5), rec("m", 5, withType(registry.Headless)), rec("y", 9, withType(registry.Headless))},
			winner: "m",
		},
		{
			name: "E6 same instant in another time zone is a tie",
			recs: []registry.Record{
				rec("b", 0),
				func() registry.Record {
					r := rec("a", 0, withType(registry.Headless))
					r.Spec.ExportCreated = r.Spec.ExportCreated.In(time.FixedZone("X", 3600))
					return r
				}(),
			},
			winner: "a",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, perm := range permutations(len(tt.recs)) {
				recs := make([]registry.Record, len(tt.recs))
				for i, j := range perm {
					recs[i] = tt.recs[j]
				}
				res, ok := Merge(recs)
				if !ok {
					t.Fatal("Merge ok = false")
				}
				if res.Winner != tt.winner {
					t.Errorf("order %v: Winner = %s, want %s", perm, res.Winner, tt.winner)
				}
				var w registry.Record
				for _, r := range tt.recs {
					if r.ClusterID == tt.winner {
						w = r
					}
				}
				if res.Spec.Type != mcsv1beta1.ServiceImportType(w.Spec.Type) {
					t.Errorf("order %v: Spec.Type = %s, want the winner's %s", perm, res.Spec.Type, w.Spec.Type)
				}
				if !slices.IsSorted(res.Clusters) || len(res.Clusters) != len(tt.recs) {
					t.Errorf("order %v: Clusters = %v, want all clusters sorted", perm, res.Clusters)
				}
				if c := res.Conflicts[tt.winner]; !c.Conflicting || c.Differs || c.Reason != mcsv1beta1.ServiceExportReasonTypeConflict {
					t.Errorf("order %v: winner's Conflict = %+v, want TypeConflict, not differing", perm, c)
				}
			}
		})
	}
}

func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := slices.Insert(slices.Clone(p), i, n-1)
			out = append(out, q)
		}
	}
	return out
}

// E6: each property that differs from the winner's gives its own reason; the
// winner's value reaches the import (I6); per KEP-1645 every export of a
// conflicted service is marked, the winner and the clusters that agree too.
func TestMergePropertyConflictsE6(t *testing.T) {
	const (
		typeC   = mcsv1beta1.ServiceExportReasonTypeConflict
		affC    = mcsv1beta1.ServiceExportReasonSessionAffinityConflict
		affCfgC = mcsv1beta1.ServiceExportReasonSessionAffinityConfigConflict
		itpC    = mcsv1beta1.ServiceExportReasonInternalTrafficPolicyConflict
		tdC     = mcsv1beta1.ServiceExportReasonTrafficDistributionConflict
		famC    = mcsv1beta1.ServiceExportReasonIPFamilyConflict
		labC    = mcsv1beta1.ServiceExportReasonLabelsConflict
		annC    = mcsv1beta1.ServiceExportReasonAnnotationsConflict
	)
	tests := []struct {
		name string
		// a (oldest, the winner) and c get winner; b gets loser.
		winner, loser []func(*registry.ServiceSpec)
		reason        mcsv1beta1.ServiceExportConditionReason
		loserMsg      string
		// check inspects the Result for the winner's value (I6).
		check func(Result) bool
	}{
		{
			name:   "E6 I6 type",
			winner: nil, loser: []func(*registry.ServiceSpec){withType(registry.Headless)},
			reason:   typeC,
			loserMsg: `type is "Headless" here but "ClusterSetIP" in cluster a`,
			check:    func(r Result) bool { return r.Spec.Type == mcsv1beta1.ClusterSetIP },
		},
		{
			name:   "E6 I6 type, winner headless",
			winner: []func(*registry.ServiceSpec){withType(registry.Headless)}, loser: nil,
			reason:   typeC,
			loserMsg: `type is "ClusterSetIP" here but "Headless" in cluster a`,
			check:    func(r Result) bool { return r.Spec.Type == mcsv1beta1.Headless },
		},
		{
			name:     "E6 I6 sessionAffinity",
			winner:   []func(*registry.ServiceSpec){withAffinity(corev1.ServiceAffinityClientIP, nil)},
			loser:    []func(*registry.ServiceSpec){withAffinity(corev1.ServiceAffinityNone, nil)},
			reason:   affC,
			loserMsg: `sessionAffinity is "None" here but "ClientIP" in cluster a`,
			check: func(r Result) bool {
				return r.Spec.SessionAffinity == corev1.ServiceAffinityClientIP && r.Spec.SessionAffinityConfig == nil
			},
		},
		{
			name:     "E6 I6 sessionAffinityConfig",
			winner:   []func(*registry.ServiceSpec){withAffinity(corev1.ServiceAffinityClientIP, ptr.To(int32(60)))},
			loser:    []func(*registry.ServiceSpec){withAffinity(corev1.ServiceAffinityClientIP, ptr.To(int32(120)))},
			reason:   affCfgC,
			loserMsg: "sessionAffinityConfig is clientIP.timeoutSeconds=120 here but clientIP.timeoutSeconds=60 in cluster a",
			check: func(r Result) bool {
				return r.Spec.SessionAffinity == corev1.ServiceAffinityClientIP &&
					*r.Spec.SessionAffinityConfig.ClientIP.TimeoutSeconds == 60
			},
		},
		{
			name:     "E6 sessionAffinityConfig: nil is the default timeout, not any timeout",
			winner:   []func(*registry.ServiceSpec){withAffinity(corev1.ServiceAffinityClientIP, nil)},
			loser:    []func(*registry.ServiceSpec){withAffinity(corev1.ServiceAffinityClientIP, ptr.To(int32(60)))},
			reason:   affCfgC,
			loserMsg: "clientIP.timeoutSeconds=60 here but clientIP.timeoutSeconds=10800 in cluster a",
			check:    func(r Result) bool { return r.Spec.SessionAffinityConfig == nil },
		},
		{
			name:     "E6 I6 internalTrafficPolicy",
			winner:   []func(*registry.ServiceSpec){withITP(ptr.To(corev1.ServiceInternalTrafficPolicyLocal))},
			loser:    []func(*registry.ServiceSpec){withITP(ptr.To(corev1.ServiceInternalTrafficPolicyCluster))},
			reason:   itpC,
			loserMsg: `internalTrafficPolicy is "Cluster" here but "Local" in cluster a`,
			check: func(r Result) bool {
				return *r.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
			},
		},
		{
			name:     "E6 internalTrafficPolicy: nil is Cluster, not Local",
			winner:   []func(*registry.ServiceSpec){withITP(nil)},
			loser:    []func(*registry.ServiceSpec){withITP(ptr.To(corev1.ServiceInternalTrafficPolicyLocal))},
			reason:   itpC,
			loserMsg: `internalTrafficPolicy is "Local" here but "Cluster" in cluster a`,
			check:    func(r Result) bool { return r.Spec.InternalTrafficPolicy == nil },
		},
		{
			name:     "E6 I6 trafficDistribution",
			winner:   []func(*registry.ServiceSpec){withTD(ptr.To(corev1.ServiceTrafficDistributionPreferClose))},
			loser:    []func(*registry.ServiceSpec){withTD(nil)},
			reason:   tdC,
			loserMsg: `trafficDistribution is "" here but "PreferClose" in cluster a`,
			check: func(r Result) bool {
				return *r.Spec.TrafficDistribution == corev1.ServiceTrafficDistributionPreferClose
			},
		},
		{
			name:     "E6 I6 ipFamilies",
			winner:   []func(*registry.ServiceSpec){withFamilies(corev1.IPv4Protocol, corev1.IPv6Protocol)},
			loser:    []func(*registry.ServiceSpec){withFamilies(corev1.IPv6Protocol)},
			reason:   famC,
			loserMsg: "ipFamilies is [IPv6] here but [IPv4 IPv6] in cluster a",
			check: func(r Result) bool {
				return slices.Equal(r.Spec.IPFamilies, []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol})
			},
		},
		{
			name:     "E6 ipFamilies are ordered lists",
			winner:   []func(*registry.ServiceSpec){withFamilies(corev1.IPv4Protocol, corev1.IPv6Protocol)},
			loser:    []func(*registry.ServiceSpec){withFamilies(corev1.IPv6Protocol, corev1.IPv4Protocol)},
			reason:   famC,
			loserMsg: "ipFamilies is [IPv6 IPv4] here but [IPv4 IPv6] in cluster a",
			check:    func(r Result) bool { return r.Spec.IPFamilies[0] == corev1.IPv4Protocol },
		},
		{
			name:     "E6 I6 exportedLabels",
			winner:   []func(*registry.ServiceSpec){withLabels(map[string]string{"tier": "web", "team": "a"})},
			loser:    []func(*registry.ServiceSpec){withLabels(map[string]string{"tier": "db"})},
			reason:   labC,
			loserMsg: "exportedLabels is {tier=db} here but {team=a, tier=web} in cluster a",
			check: func(r Result) bool {
				return reflect.DeepEqual(r.Labels, map[string]string{"tier": "web", "team": "a"})
			},
		},
		{
			name:     "E6 exportedLabels: missing on the winner",
			winner:   nil,
			loser:    []func(*registry.ServiceSpec){withLabels(map[string]string{"tier": "db"})},
			reason:   labC,
			loserMsg: "exportedLabels is {tier=db} here but {} in cluster a",
			check:    func(r Result) bool { return len(r.Labels) == 0 },
		},
		{
			name:     "E6 I6 exportedAnnotations",
			winner:   []func(*registry.ServiceSpec){withAnnotations(map[string]string{"owner": "x"})},
			loser:    []func(*registry.ServiceSpec){withAnnotations(map[string]string{"owner": "y"})},
			reason:   annC,
			loserMsg: "exportedAnnotations is {owner=y} here but {owner=x} in cluster a",
			check: func(r Result) bool {
				return reflect.DeepEqual(r.Annotations, map[string]string{"owner": "x"})
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs := []registry.Record{
				rec("b", 10, tt.loser...),
				rec("c", 20, tt.winner...),
				rec("a", 0, tt.winner...),
			}
			res, ok := Merge(recs)
			if !ok {
				t.Fatal("Merge ok = false")
			}
			if !tt.check(res) {
				t.Errorf("the winner's value did not reach the import: Spec %s, Labels %v, Annotations %v",
					show(res.Spec), res.Labels, res.Annotations)
			}
			checkConflicts(t, res, map[string]want{
				"a": {conflicting: true, reason: tt.reason, msg: []string{"oldest, so its values are used", "cluster b on"}},
				"b": {conflicting: true, reason: tt.reason, differs: true, msg: []string{tt.loserMsg}},
				"c": {conflicting: true, reason: tt.reason, msg: []string{"matches the merged service (cluster a's is the oldest and wins)", "cluster b on"}},
			})
		})
	}
}

// E6: values that differ only in representation are not conflicts.
func TestMergeSemanticEqualityE6(t *testing.T) {
	tests := []struct {
		name string
		a, b []func(*registry.ServiceSpec)
	}{
		{name: "E6 identical exports", a: nil, b: nil},
		{
			name: "E6 nil and empty exportedLabels",
			a:    []func(*registry.ServiceSpec){withLabels(nil)},
			b:    []func(*registry.ServiceSpec){withLabels(map[string]string{})},
		},
		{
			name: "E6 nil and empty exportedAnnotations",
			a:    []func(*registry.ServiceSpec){withAnnotations(map[string]string{})},
			b:    []func(*registry.ServiceSpec){withAnnotations(nil)},
		},
		{
			name: "E6 nil and empty ipFamilies",
			a:    []func(*registry.ServiceSpec){withFamilies()},
			b:    []func(*registry.ServiceSpec){func(s *registry.ServiceSpec) { s.IPFamilies = nil }},
		},
		{
			name: "E6 empty sessionAffinity is None",
			a:    []func(*registry.ServiceSpec){withAffinity("", nil)},
			b:    []func(*registry.ServiceSpec){withAffinity(corev1.ServiceAffinityNone, nil)},
		},
		{
			name: "E6 nil sessionAffinityConfig is the default ClientIP timeout",
			a:    []func(*registry.ServiceSpec){withAffinity(corev1.ServiceAffinityClientIP, nil)},
			b:    []func(*registry.ServiceSpec){withAffinity(corev1.ServiceAffinityClientIP, ptr.To(corev1.DefaultClientIPServiceAffinitySeconds))},
		},
		{
			name: "E6 sessionAffinityConfig without clientIP is the default",
			a: []func(*registry.ServiceSpec){func(s *registry.ServiceSpec) {
				s.SessionAffinity = corev1.ServiceAffinityClientIP
				s.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{}}
			}},
			b: []func(*registry.ServiceSpec){withAffinity(corev1.ServiceAffinityClientIP, ptr.To(int32(10800)))},
		},
		{
			name: "E6 nil internalTrafficPolicy is Cluster",
			a:    []func(*registry.ServiceSpec){withITP(nil)},
			b:    []func(*registry.ServiceSpec){withITP(ptr.To(corev1.ServiceInternalTrafficPolicyCluster))},
		},
		{
			name: "E6 nil and empty trafficDistribution",
			a:    []func(*registry.ServiceSpec){withTD(ptr.To(""))},
			b:    []func(*registry.ServiceSpec){withTD(nil)},
		},
		{
			name: "E6 empty port protocol is TCP, nil appProtocol is empty",
			a:    []func(*registry.ServiceSpec){withPorts(registry.Port{Name: "http", Port: 80})},
			b:    []func(*registry.ServiceSpec){withPorts(appPort("http", 80, ptr.To("")))},
		},
		{
			name: "E6 same ports in another order",
			a:    []func(*registry.ServiceSpec){withPorts(port("http", "TCP", 80), port("dns", "UDP", 53))},
			b:    []func(*registry.ServiceSpec){withPorts(port("dns", "UDP", 53), port("http", "TCP", 80))},
		},
		{
			name: "E6 targetPort is not part of the import",
			a:    []func(*registry.ServiceSpec){withPorts(registry.Port{Name: "http", Protocol: "TCP", Port: 80, TargetPort: "8080"})},
			b:    []func(*registry.ServiceSpec){withPorts(registry.Port{Name: "http", Protocol: "TCP", Port: 80, TargetPort: "web"})},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, ok := Merge([]registry.Record{rec("b", 1, tt.b...), rec("a", 0, tt.a...)})
			if !ok {
				t.Fatal("Merge ok = false")
			}
			checkConflicts(t, res, map[string]want{"a": noConflict, "b": noConflict})
		})
	}
}

// E6: with several conflicting properties the reason is the first in the
// priority order and the message names the others; clusters that do not
// differ carry the highest-priority reason of any cluster.
func TestMergeReasonPriorityE6(t *testing.T) {
	res, _ := Merge([]registry.Record{
		rec("a", 0),
		rec("b", 1, withLabels(map[string]string{"x": "1"}), withType(registry.Headless), withTD(ptr.To("PreferClose"))),
		rec("c", 2, withAnnotations(map[string]string{"y": "2"}), withPorts(port("http", "TCP", 8080))),
		rec("d", 3, withAnnotations(map[string]string{"y": "2"}), withFamilies(corev1.IPv6Protocol)),
		rec("e", 4),
	})
	checkConflicts(t, res, map[string]want{
		"a": {conflicting: true, reason: mcsv1beta1.ServiceExportReasonTypeConflict, msg: []string{
			"cluster b on type, trafficDistribution, exportedLabels; cluster c on ports, exportedAnnotations; cluster d on ipFamilies, exportedAnnotations",
		}},
		"b": {conflicting: true, reason: mcsv1beta1.ServiceExportReasonTypeConflict, differs: true, msg: []string{
			`type is "Headless" here`, "also conflicting here: trafficDistribution, exportedLabels",
		}},
		"c": {conflicting: true, reason: mcsv1beta1.ServiceExportReasonPortConflict, differs: true, msg: []string{
			"also conflicting here: exportedAnnotations",
		}},
		"d": {conflicting: true, reason: mcsv1beta1.ServiceExportReasonIPFamilyConflict, differs: true, msg: []string{
			"also conflicting here: exportedAnnotations",
		}},
		"e": {conflicting: true, reason: mcsv1beta1.ServiceExportReasonTypeConflict, msg: []string{"matches the merged service (cluster a's is the oldest and wins)"}},
	})
}

// E6: many conflicting clusters are not all listed one by one.
func TestMergeManyConflictsMessageE6(t *testing.T) {
	recs := []registry.Record{rec("a", 0)}
	for _, id := range []string{"b", "c", "d", "e", "f", "g", "h"} {
		recs = append(recs, rec(id, 1, withType(registry.Headless)))
	}
	res, _ := Merge(recs)
	msg := res.Conflicts["a"].Message
	for _, s := range []string{"cluster b on type", "cluster f on type", "and 2 more clusters"} {
		if !strings.Contains(msg, s) {
			t.Errorf("message %q does not contain %q", msg, s)
		}
	}
	if strings.Contains(msg, "cluster g") {
		t.Errorf("message %q lists more than %d clusters", msg, maxListed)
	}
}

// E6: ports are the union, merged by name, then by protocol and port; the
// winner's port is kept on a clash. I6: the merged ports reach the import.
func TestMergePortsE6(t *testing.T) {
	const portC = mcsv1beta1.ServiceExportReasonPortConflict
	tests := []struct {
		name    string
		recs    []registry.Record
		ports   []mcsv1beta1.ServicePort
		wants   map[string]want
		noteFor map[string]string
	}{
		{
			name: "E6 I6 union of different ports, in order of first appearance",
			recs: []registry.Record{
				rec("a", 0, withPorts(port("z", "TCP", 90), port("a", "TCP", 10))),
				rec("b", 2, withPorts(port("m", "TCP", 50), port("a", "TCP", 10))),
				rec("c", 1, withPorts(port("b", "UDP", 20))),
			},
			ports: []mcsv1beta1.ServicePort{
				importPort("z", "TCP", 90), importPort("a", "TCP", 10), importPort("b", "UDP", 20), importPort("m", "TCP", 50),
			},
			wants: map[string]want{
				"a": {conflicting: true, reason: portC, differs: true, msg: []string{
					`does not export "b" 20/UDP from cluster c, "m" 50/TCP from cluster b`,
				}},
				"b": {conflicting: true, reason: portC, differs: true, msg: []string{`"z" 90/TCP from cluster a`}},
				"c": {conflicting: true, reason: portC, differs: true},
			},
		},
		{
			name: "E6 an extra port: the union, and a PortConflict (KEP: ports not identical)",
			recs: []registry.Record{
				rec("a", 0, withPorts(port("http", "TCP", 80))),
				rec("b", 1, withPorts(port("http", "TCP", 80), port("metrics", "TCP", 9090))),
			},
			ports: []mcsv1beta1.ServicePort{importPort("http", "TCP", 80), importPort("metrics", "TCP", 9090)},
			wants: map[string]want{
				"a": {conflicting: true, reason: portC, differs: true, msg: []string{
					`the import exposes the union of all clusters' ports, and this cluster does not export "metrics" 9090/TCP from cluster b`,
				}},
				"b": {conflicting: true, reason: portC, msg: []string{"matches the merged service", "cluster a on ports"}},
			},
		},
		{
			name: "E6 same name, other port number: winner's kept",
			recs: []registry.Record{
				rec("b", 1, withPorts(port("http", "TCP", 8080))),
				rec("a", 0, withPorts(port("http", "TCP", 80))),
			},
			ports: []mcsv1beta1.ServicePort{importPort("http", "TCP", 80)},
			wants: map[string]want{
				"a": {conflicting: true, reason: portC, msg: []string{"cluster b on ports"}},
				"b": {conflicting: true, reason: portC, differs: true, msg: []string{
					`port "http" 8080/TCP is not exported: cluster a, whose ServiceExport is older, exports the name as "http" 80/TCP`,
				}},
			},
		},
		{
			name: "E6 same name, other protocol: winner's kept",
			recs: []registry.Record{
				rec("a", 0, withPorts(port("dns", "UDP", 53))),
				rec("b", 1, withPorts(port("dns", "TCP", 53))),
			},
			ports: []mcsv1beta1.ServicePort{importPort("dns", "UDP", 53)},
			wants: map[string]want{
				"a": {conflicting: true, reason: portC},
				"b": {conflicting: true, reason: portC, differs: true, msg: []string{`exports the name as "dns" 53/UDP`}},
			},
		},
		{
			name: "E6 same protocol and port, other name: winner's kept",
			recs: []registry.Record{
				rec("a", 0, withPorts(port("http", "TCP", 80))),
				rec("b", 1, withPorts(port("web", "", 80))),
			},
			ports: []mcsv1beta1.ServicePort{importPort("http", "TCP", 80)},
			wants: map[string]want{
				"a": {conflicting: true, reason: portC},
				"b": {conflicting: true, reason: portC, differs: true, msg: []string{
					`port "web" 80/TCP is not exported: cluster a, whose ServiceExport is older, exports 80/TCP as "http" 80/TCP`,
				}},
			},
		},
		{
			name: "E6 same port number, other protocol and name: both kept",
			recs: []registry.Record{
				rec("a", 0, withPorts(port("dns", "UDP", 53))),
				rec("b", 1, withPorts(port("dns-tcp", "TCP", 53))),
			},
			ports: []mcsv1beta1.ServicePort{importPort("dns", "UDP", 53), importPort("dns-tcp", "TCP", 53)},
			wants: map[string]want{
				"a": {conflicting: true, reason: portC, differs: true},
				"b": {conflicting: true, reason: portC, differs: true},
			},
		},
		{
			name: "E6 unnamed ports clash by their empty name",
			recs: []registry.Record{
				rec("a", 0, withPorts(port("", "TCP", 80))),
				rec("b", 1, withPorts(port("", "TCP", 81))),
			},
			ports: []mcsv1beta1.ServicePort{importPort("", "TCP", 80)},
			wants: map[string]want{
				"a": {conflicting: true, reason: portC},
				"b": {conflicting: true, reason: portC, differs: true, msg: []string{`port "" 81/TCP is not exported`}},
			},
		},
		{
			name: "E6 I6 appProtocol: winner's value",
			recs: []registry.Record{
				rec("a", 0, withPorts(appPort("grpc", 9000, ptr.To("kubernetes.io/h2c")))),
				rec("b", 1, withPorts(appPort("grpc", 9000, nil))),
			},
			ports: []mcsv1beta1.ServicePort{{Name: "grpc", Protocol: "TCP", Port: 9000, AppProtocol: ptr.To("kubernetes.io/h2c")}},
			wants: map[string]want{
				"a": {conflicting: true, reason: portC},
				"b": {conflicting: true, reason: portC, differs: true, msg: []string{
					`port "grpc" has appProtocol "" here but "kubernetes.io/h2c" in cluster a, whose value is used`,
				}},
			},
		},
		{
			name: "E6 a later cluster's port clashing with an added port",
			recs: []registry.Record{
				rec("a", 0, withPorts(port("http", "TCP", 80))),
				rec("b", 1, withPorts(port("http", "TCP", 80), port("admin", "TCP", 9000))),
				rec("c", 2, withPorts(port("http", "TCP", 80), port("debug", "TCP", 9000))),
			},
			ports: []mcsv1beta1.ServicePort{importPort("http", "TCP", 80), importPort("admin", "TCP", 9000)},
			wants: map[string]want{
				"a": {conflicting: true, reason: portC, differs: true, msg: []string{`"admin" 9000/TCP from cluster b`}},
				"b": {conflicting: true, reason: portC},
				"c": {conflicting: true, reason: portC, differs: true, msg: []string{
					`port "debug" 9000/TCP is not exported: cluster b, whose ServiceExport is older, exports 9000/TCP as "admin" 9000/TCP`,
					`does not export "admin" 9000/TCP from cluster b`,
				}},
			},
		},
		{
			name: "E6 no ports anywhere",
			recs: []registry.Record{
				rec("a", 0, withPorts()),
				rec("b", 1, withPorts()),
			},
			ports: []mcsv1beta1.ServicePort{},
			wants: map[string]want{"a": noConflict, "b": noConflict},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, ok := Merge(tt.recs)
			if !ok {
				t.Fatal("Merge ok = false")
			}
			if !reflect.DeepEqual(res.Spec.Ports, tt.ports) {
				t.Errorf("Spec.Ports =\n%s\nwant\n%s", show(res.Spec.Ports), show(tt.ports))
			}
			checkConflicts(t, res, tt.wants)
		})
	}
}

// E6 I4: under a port conflict, a cluster serves only the import's ports it
// exposes itself with the same name, protocol and number; appProtocol does
// not matter. Every shape of mismatch, for ClusterSetIP and headless.
func TestMergeServedPortsE6(t *testing.T) {
	for _, typ := range []registry.ServiceType{registry.ClusterSetIP, registry.Headless} {
		tests := []struct {
			name   string
			recs   []registry.Record
			served map[string][]string
		}{
			{
				name: "same name, other number (the reported case)",
				recs: []registry.Record{
					rec("cls1", 0, withPorts(port("http", "TCP", 80))),
					rec("cls2", 1, withPorts(port("http", "TCP", 8080))),
				},
				served: map[string][]string{"cls1": {"http"}, "cls2": nil},
			},
			{
				name: "same number, other name",
				recs: []registry.Record{
					rec("cls1", 0, withPorts(port("http", "TCP", 80))),
					rec("cls2", 1, withPorts(port("web", "TCP", 80))),
				},
				served: map[string][]string{"cls1": {"http"}, "cls2": nil},
			},
			{
				name: "other protocol",
				recs: []registry.Record{
					rec("cls1", 0, withPorts(port("dns", "UDP", 53))),
					rec("cls2", 1, withPorts(port("dns", "TCP", 53))),
				},
				served: map[string][]string{"cls1": {"dns"}, "cls2": nil},
			},
			{
				name: "a port only one cluster has",
				recs: []registry.Record{
					rec("cls1", 0, withPorts(port("http", "TCP", 80))),
					rec("cls2", 1, withPorts(port("http", "", 80), port("metrics", "TCP", 9090))),
				},
				served: map[string][]string{"cls1": {"http"}, "cls2": {"http", "metrics"}},
			},
			{
				name: "one port matches, another clashes",
				recs: []registry.Record{
					rec("cls1", 0, withPorts(port("http", "TCP", 80), port("grpc", "TCP", 9000))),
					rec("cls2", 1, withPorts(port("grpc", "TCP", 9001), port("http", "TCP", 80))),
				},
				served: map[string][]string{"cls1": {"http", "grpc"}, "cls2": {"http"}},
			},
			{
				name: "appProtocol differs: still routable",
				recs: []registry.Record{
					rec("cls1", 0, withPorts(port("http", "TCP", 80))),
					rec("cls2", 1, withPorts(registry.Port{Name: "http", Protocol: "TCP", Port: 80, AppProtocol: ptr.To("h2c")})),
				},
				served: map[string][]string{"cls1": {"http"}, "cls2": {"http"}},
			},
			{
				name: "no ports anywhere",
				recs: []registry.Record{
					rec("cls1", 0, withPorts()),
					rec("cls2", 1, withPorts()),
				},
				served: map[string][]string{"cls1": {}, "cls2": {}},
			},
		}
		for _, tt := range tests {
			t.Run(string(typ)+"/"+tt.name, func(t *testing.T) {
				for i := range tt.recs {
					tt.recs[i].Spec.Type = typ
				}
				res, _ := Merge(tt.recs)
				for id, want := range tt.served {
					if got := res.Served[id]; !slices.Equal(got, want) {
						t.Errorf("Served[%s] = %q, want %q (import ports %s)", id, got, want, show(res.Spec.Ports))
					}
				}
			})
		}
	}
}

// E6 I6: the whole Result of a three-cluster service with a type conflict.
func TestMergeResultE6I6(t *testing.T) {
	res, ok := Merge([]registry.Record{
		rec("cls3", 5, withType(registry.Headless), withLabels(map[string]string{"app": "other"})),
		rec("cls1", 0, withLabels(map[string]string{"app": "hello"}), withAnnotations(map[string]string{"a": "b"})),
		rec("cls2", 5, withLabels(map[string]string{"app": "hello"}), withAnnotations(map[string]string{"a": "b"})),
	})
	if !ok {
		t.Fatal("Merge ok = false")
	}
	wantResult := Result{
		Spec: mcsv1beta1.ServiceImportSpec{
			Type:                  mcsv1beta1.ClusterSetIP,
			Ports:                 []mcsv1beta1.ServicePort{importPort("http", "TCP", 80)},
			SessionAffinity:       corev1.ServiceAffinityNone,
			IPFamilies:            []corev1.IPFamily{corev1.IPv4Protocol},
			InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyCluster),
		},
		Labels:      map[string]string{"app": "hello"},
		Annotations: map[string]string{"a": "b"},
		Clusters:    []string{"cls1", "cls2", "cls3"},
		Winner:      "cls1",
		Served:      map[string][]string{"cls1": {"http"}, "cls2": {"http"}, "cls3": {"http"}},
		Conflicts: map[string]Conflict{
			"cls1": {
				Conflicting: true, Reason: mcsv1beta1.ServiceExportReasonTypeConflict,
				Message: "this ServiceExport is the oldest, so its values are used; " +
					"conflicting: cluster cls3 on type, exportedLabels, exportedAnnotations",
			},
			"cls2": {
				Conflicting: true, Reason: mcsv1beta1.ServiceExportReasonTypeConflict,
				Message: "this ServiceExport matches the merged service (cluster cls1's is the oldest and wins); " +
					"conflicting: cluster cls3 on type, exportedLabels, exportedAnnotations",
			},
			"cls3": {
				Conflicting: true, Reason: mcsv1beta1.ServiceExportReasonTypeConflict, Differs: true,
				Message: `type is "Headless" here but "ClusterSetIP" in cluster cls1, ` +
					"whose ServiceExport is the oldest and whose value is used; " +
					"also conflicting here: exportedLabels, exportedAnnotations",
			},
		},
	}
	if !reflect.DeepEqual(res, wantResult) {
		t.Errorf("Merge =\n%s\nwant\n%s", show(res), show(wantResult))
	}
}

// E6: messages stay bounded and valid UTF-8 whatever the values.
func TestMergeLongValuesE6(t *testing.T) {
	long := strings.Repeat("é", 5000)
	res, _ := Merge([]registry.Record{
		rec("a", 0, withAnnotations(map[string]string{"k": long})),
		rec("b", 1, withAnnotations(map[string]string{"k": long + "x"})),
	})
	for id, c := range res.Conflicts {
		if len(c.Message) > maxMessage+10 {
			t.Errorf("cluster %s: message is %d bytes long", id, len(c.Message))
		}
		if !strings.Contains(c.Message, "exportedAnnotations") {
			t.Errorf("cluster %s: message %q does not name the property", id, c.Message)
		}
		if !utf8.ValidString(c.Message) {
			t.Errorf("cluster %s: message is not valid UTF-8", id)
		}
	}
}
