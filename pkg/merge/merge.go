// Package merge turns every cluster's record of one service into the
// ServiceImport that all clusters must agree on, and into the Conflict
// condition of each exporting cluster's ServiceExport. It is pure: the same
// records give the same answer in every cluster, whatever their order.
//
// # Precedence
//
// Records are ordered by the ServiceExport's creationTimestamp
// (Spec.ExportCreated), oldest first, ties broken by cluster ID. The first
// record is the winner: its type, sessionAffinity, sessionAffinityConfig,
// internalTrafficPolicy, trafficDistribution, ipFamilies, exportedLabels and
// exportedAnnotations become the ServiceImport's. This is KEP-1645's
// conflict resolution policy ("The conflict will be resolved by assigning
// precedence based on each ServiceExport's creationTimestamp, from oldest to
// newest"); the cluster ID tie-break is ours, so that every cluster picks the
// same winner.
//
// # Who is marked
//
// KEP-1645, "Constraints and Conflict Resolution": "If any properties have
// conflicting values that can not simply be merged, a ServiceExportConflict
// condition will be set on all ServiceExports for the conflicted service with
// a description of the conflict." The mcs-api v1beta1 documentation of the
// Conflict condition says it "must be at least raised on the conflicting
// ServiceExport and is recommended to be raised on all the constituent
// ServiceExports if feasible". Every cluster runs Merge on the same records,
// so raising it everywhere is feasible, and the KEP wins over
// ../../../shared/DESIGN.md (E6), which can be read as marking only the
// clusters that differ: as soon as any cluster conflicts, every exporting
// cluster, the winner and clusters that agree with it included, gets
// Conflict=True. Conflict.Differs tells the clusters whose own values differ
// from the merged ones apart from the others, and the message says which
// clusters conflict on what. Only when all exports agree does every cluster
// get Conflict=False with reason NoConflicts.
//
// # Reasons
//
// A condition carries one reason. When several properties conflict, the
// reason is the first in this order, and the message names the others:
// type, ports, ipFamilies, sessionAffinity, sessionAffinityConfig,
// internalTrafficPolicy, trafficDistribution, exportedLabels,
// exportedAnnotations. The order goes from what changes whether traffic can
// reach the service at all (type, ports, IP families) to how it is routed
// and finally to metadata. (mcs-api allows reasons joined by commas; we keep
// one constant so that clients can match it exactly.) A cluster that does
// not differ itself carries the reason of the highest-priority conflict
// among all clusters.
//
// # Comparison
//
// Values are compared by meaning, not by representation:
//   - nil and empty maps and slices are equal; ipFamilies are compared as
//     ordered lists ([IPv4 IPv6] differs from [IPv6 IPv4]: the first family
//     is the primary one);
//   - an empty sessionAffinity equals None, the API server's default;
//   - a nil sessionAffinityConfig, one without clientIP and one without
//     timeoutSeconds all equal clientIP.timeoutSeconds=10800, the API
//     server's default (corev1.DefaultClientIPServiceAffinitySeconds);
//   - a nil internalTrafficPolicy equals Cluster, the API server's default;
//   - a nil trafficDistribution equals an empty one;
//   - an empty port protocol equals TCP, and a nil appProtocol an empty one.
//
// The ServiceImport gets the winner's values as they are (copies), except
// that port protocols are written out (TCP rather than empty).
//
// # Ports
//
// KEP-1645, "Service Port": the derived service exposes "the union of
// service ports declared on its constituent services"; the ports must have no
// duplicated names and no two the same protocol and port number, so
// "implementations should merge ports from constituent services first based
// on port name then by the protocol and port number pair", and the conflict
// resolution policy decides which duplicate is used. Ports are visited in
// precedence order (winner first, each cluster's ports in its own order):
//   - a port whose name is already taken by a port with the same protocol
//     and number is the same port (the first one's appProtocol is used);
//   - a port whose name is already taken by a port with another protocol or
//     number is dropped;
//   - a port whose protocol and number are already taken under another name
//     is dropped;
//   - any other port is added.
//
// The import's ports are in that order of first appearance, so the winner's
// ports come first, in its own order.
//
// The current KEP text goes on: if the ports "don't match, the clusterset
// service will expose the union ... and raise a PortConflict conflict
// condition", and the mcs-api reason applies "if the ports are not identical
// in all the constituent Services". So a cluster differs on ports whenever
// its own set of ports (name, protocol, number, appProtocol; targetPort is
// not part of the import) is not the merged set: when one of its ports was
// dropped, when its appProtocol was not used, and also when another cluster
// added a port it lacks, which can make the winner itself differ.
//
// Traffic for a port of the import must only reach clusters whose own
// Service exposes that port: kube-proxy matches EndpointSlice ports to
// Service ports by name, so an endpoint imported under a name its cluster
// serves on another number or protocol would receive traffic it does not
// serve. Result.Served says, per cluster, which of the import's ports its
// endpoints may carry: those equal to one of the cluster's own ports in
// name, protocol and number (appProtocol is a hint to consumers and does not
// change where packets go, so it does not count).
//
// Records must be of one service and at most one per cluster ID; the result
// is unspecified otherwise.
package merge

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/registry"
)

// Conflict is the Conflict condition one exporting cluster's ServiceExport
// should carry. Reason is one of the mcs-api ServiceExportReason*Conflict
// constants, or ServiceExportReasonNoConflicts.
type Conflict struct {
	Conflicting bool
	Reason      mcsv1beta1.ServiceExportConditionReason
	Message     string
	// Differs is true when this cluster's own values differ from the merged
	// ones, i.e. when this cluster is one of the causes of the conflict.
	// Clusters marked Conflicting only because another cluster conflicts
	// (the KEP marks every export of a conflicted service) have it false.
	Differs bool
}

// Result is the merged view of a service.
type Result struct {
	// Spec is the desired ServiceImport spec, without IPs (those are local).
	Spec mcsv1beta1.ServiceImportSpec
	// Labels and Annotations are the winning exportedLabels/exportedAnnotations.
	Labels      map[string]string
	Annotations map[string]string
	// Clusters are the exporting cluster IDs, sorted.
	Clusters []string
	// Conflicts holds an entry for every exporting cluster ID.
	Conflicts map[string]Conflict
	// Winner is the ID of the cluster whose ServiceExport is the oldest (ties
	// by cluster ID) and whose values the import uses.
	Winner string
	// Served holds, for every exporting cluster ID, the names of the
	// import's ports (Spec.Ports) that the cluster's own Service exposes with
	// the same name, protocol and port number, in the import's order. Only
	// these ports may carry that cluster's endpoints; a cluster with none
	// contributes no endpoints unless the import has no ports at all. See
	// "Ports" in the package documentation.
	Served map[string][]string
}

// Merge computes the Result of the records of one service. ok is false when
// there are no records, i.e. nothing is exported and no import should exist.
func Merge(records []registry.Record) (res Result, ok bool) {
	if len(records) == 0 {
		return Result{}, false
	}
	recs := make([]*registry.Record, len(records))
	for i := range records {
		recs[i] = &records[i]
	}
	slices.SortFunc(recs, func(a, b *registry.Record) int {
		if c := a.Spec.ExportCreated.Compare(b.Spec.ExportCreated); c != 0 {
			return c
		}
		return cmp.Compare(a.ClusterID, b.ClusterID)
	})
	winner := recs[0]
	ports := mergePorts(recs)

	// diffs[i] lists, in priority order, the properties on which recs[i]
	// differs from the merged result, with a description of each.
	diffs := make([][]difference, len(recs))
	for i, r := range recs {
		for _, p := range properties {
			if p.reason == mcsv1beta1.ServiceExportReasonPortConflict {
				if notes := ports.notes[r.ClusterID]; len(notes) > 0 {
					diffs[i] = append(diffs[i], difference{property: p, detail: strings.Join(notes, "; ")})
				}
				continue
			}
			if !p.equal(&r.Spec, &winner.Spec) {
				diffs[i] = append(diffs[i], difference{property: p, detail: fmt.Sprintf(
					"%s is %s here but %s in cluster %s, whose ServiceExport is the oldest and whose value is used",
					p.name, p.show(&r.Spec), p.show(&winner.Spec), winner.ClusterID)})
			}
		}
	}

	res = Result{
		Spec:        importSpec(&winner.Spec, ports.merged),
		Labels:      maps.Clone(winner.Spec.ExportedLabels),
		Annotations: maps.Clone(winner.Spec.ExportedAnnotations),
		Clusters:    make([]string, 0, len(recs)),
		Conflicts:   make(map[string]Conflict, len(recs)),
		Winner:      winner.ClusterID,
		Served:      make(map[string][]string, len(recs)),
	}
	for _, r := range recs {
		res.Clusters = append(res.Clusters, r.ClusterID)
		res.Served[r.ClusterID] = servedPorts(r, ports.merged)
	}
	slices.Sort(res.Clusters)
	res.Clusters = slices.Compact(res.Clusters)

	summary, top := summarize(recs, diffs)
	for i, r := range recs {
		var c Conflict
		switch {
		case top == nil:
			c = Conflict{
				Reason:  mcsv1beta1.ServiceExportReasonNoConflicts,
				Message: fmt.Sprintf("all %d exporting clusters agree on the service's properties", len(recs)),
			}
		case len(diffs[i]) > 0:
			msg := diffs[i][0].detail
			if len(diffs[i]) > 1 {
				others := make([]string, 0, len(diffs[i])-1)
				for _, d := range diffs[i][1:] {
					others = append(others, d.property.name)
				}
				msg += "; also conflicting here: " + strings.Join(others, ", ")
			}
			c = Conflict{Conflicting: true, Reason: diffs[i][0].property.reason, Message: truncate(msg, maxMessage), Differs: true}
		default:
			var msg string
			if r == winner {
				msg = "this ServiceExport is the oldest, so its values are used; "
			} else {
				msg = fmt.Sprintf("this ServiceExport matches the merged service (cluster %s's is the oldest and wins); ",
					winner.ClusterID)
			}
			c = Conflict{Conflicting: true, Reason: top.reason, Message: truncate(msg+summary, maxMessage)}
		}
		res.Conflicts[r.ClusterID] = c
	}
	return res, true
}

// difference is one property on which a cluster differs from the merged
// result, and why.
type difference struct {
	property *property
	detail   string
}

// maxListed caps how many clusters a message names one by one.
const maxListed = 5

// summarize describes which clusters conflict on what, for the messages of
// the clusters that do not differ themselves, and returns the
// highest-priority property any cluster conflicts on (nil if none).
func summarize(recs []*registry.Record, diffs [][]difference) (string, *property) {
	type entry struct {
		cluster string
		names   []string
	}
	var entries []entry
	var top *property
	for i, r := range recs {
		if len(diffs[i]) == 0 {
			continue
		}
		names := make([]string, 0, len(diffs[i]))
		for _, d := range diffs[i] {
			names = append(names, d.property.name)
			if top == nil || d.property.priority < top.priority {
				top = d.property
			}
		}
		entries = append(entries, entry{cluster: r.ClusterID, names: names})
	}
	slices.SortFunc(entries, func(a, b entry) int { return cmp.Compare(a.cluster, b.cluster) })
	parts := make([]string, 0, maxListed+1)
	for i, e := range entries {
		if i == maxListed {
			parts = append(parts, fmt.Sprintf("and %d more clusters", len(entries)-maxListed))
			break
		}
		parts = append(parts, fmt.Sprintf("cluster %s on %s", e.cluster, strings.Join(e.names, ", ")))
	}
	return "conflicting: " + strings.Join(parts, "; "), top
}

// property is one merged service property and how to compare and show it.
type property struct {
	priority int
	name     string
	reason   mcsv1beta1.ServiceExportConditionReason
	equal    func(a, b *registry.ServiceSpec) bool
	show     func(s *registry.ServiceSpec) string
}

// properties are in priority order: the first one a cluster conflicts on
// gives its condition's reason. Ports are compared by mergePorts.
var properties = []*property{
	{
		name:   "type",
		reason: mcsv1beta1.ServiceExportReasonTypeConflict,
		equal:  func(a, b *registry.ServiceSpec) bool { return a.Type == b.Type },
		show:   func(s *registry.ServiceSpec) string { return quote(string(s.Type)) },
	},
	{
		name:   "ports",
		reason: mcsv1beta1.ServiceExportReasonPortConflict,
	},
	{
		name:   "ipFamilies",
		reason: mcsv1beta1.ServiceExportReasonIPFamilyConflict,
		equal:  func(a, b *registry.ServiceSpec) bool { return slices.Equal(a.IPFamilies, b.IPFamilies) },
		show:   func(s *registry.ServiceSpec) string { return fmt.Sprint(s.IPFamilies) },
	},
	{
		name:   "sessionAffinity",
		reason: mcsv1beta1.ServiceExportReasonSessionAffinityConflict,
		equal:  func(a, b *registry.ServiceSpec) bool { return affinity(a) == affinity(b) },
		show:   func(s *registry.ServiceSpec) string { return quote(string(affinity(s))) },
	},
	{
		name:   "sessionAffinityConfig",
		reason: mcsv1beta1.ServiceExportReasonSessionAffinityConfigConflict,
		equal:  func(a, b *registry.ServiceSpec) bool { return affinityTimeout(a) == affinityTimeout(b) },
		show: func(s *registry.ServiceSpec) string {
			return "clientIP.timeoutSeconds=" + strconv.Itoa(int(affinityTimeout(s)))
		},
	},
	{
		name:   "internalTrafficPolicy",
		reason: mcsv1beta1.ServiceExportReasonInternalTrafficPolicyConflict,
		equal:  func(a, b *registry.ServiceSpec) bool { return trafficPolicy(a) == trafficPolicy(b) },
		show:   func(s *registry.ServiceSpec) string { return quote(string(trafficPolicy(s))) },
	},
	{
		name:   "trafficDistribution",
		reason: mcsv1beta1.ServiceExportReasonTrafficDistributionConflict,
		equal: func(a, b *registry.ServiceSpec) bool {
			return ptr.Deref(a.TrafficDistribution, "") == ptr.Deref(b.TrafficDistribution, "")
		},
		show: func(s *registry.ServiceSpec) string { return quote(ptr.Deref(s.TrafficDistribution, "")) },
	},
	{
		name:   "exportedLabels",
		reason: mcsv1beta1.ServiceExportReasonLabelsConflict,
		equal:  func(a, b *registry.ServiceSpec) bool { return maps.Equal(a.ExportedLabels, b.ExportedLabels) },
		show:   func(s *registry.ServiceSpec) string { return showMap(s.ExportedLabels) },
	},
	{
		name:   "exportedAnnotations",
		reason: mcsv1beta1.ServiceExportReasonAnnotationsConflict,
		equal:  func(a, b *registry.ServiceSpec) bool { return maps.Equal(a.ExportedAnnotations, b.ExportedAnnotations) },
		show:   func(s *registry.ServiceSpec) string { return showMap(s.ExportedAnnotations) },
	},
}

func init() {
	for i, p := range properties {
		p.priority = i
	}
}

func affinity(s *registry.ServiceSpec) corev1.ServiceAffinity {
	if s.SessionAffinity == "" {
		return corev1.ServiceAffinityNone
	}
	return s.SessionAffinity
}

func affinityTimeout(s *registry.ServiceSpec) int32 {
	c := s.SessionAffinityConfig
	if c == nil || c.ClientIP == nil || c.ClientIP.TimeoutSeconds == nil {
		return corev1.DefaultClientIPServiceAffinitySeconds
	}
	return *c.ClientIP.TimeoutSeconds
}

func trafficPolicy(s *registry.ServiceSpec) corev1.ServiceInternalTrafficPolicy {
	if s.InternalTrafficPolicy == nil || *s.InternalTrafficPolicy == "" {
		return corev1.ServiceInternalTrafficPolicyCluster
	}
	return *s.InternalTrafficPolicy
}

const (
	// maxShown caps how much of one value a message shows.
	maxShown = 200
	// maxMessage keeps messages far below the condition message limit
	// (32768) whatever the number of ports or clusters.
	maxMessage = 4096
)

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

func quote(s string) string {
	return strconv.Quote(truncate(s, maxShown))
}

func showMap(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+m[k])
	}
	return "{" + truncate(strings.Join(parts, ", "), maxShown) + "}"
}

// portID is what makes two exported ports the same port of the import.
type portID struct {
	name        string
	protocol    corev1.Protocol
	port        int32
	appProtocol string
}

func (p portID) String() string {
	s := fmt.Sprintf("%s %d/%s", quote(p.name), p.port, p.protocol)
	if p.appProtocol != "" {
		s += " (appProtocol " + quote(p.appProtocol) + ")"
	}
	return s
}

type protoPort struct {
	protocol corev1.Protocol
	port     int32
}

func idOf(p *registry.Port) portID {
	proto := p.Protocol
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	return portID{name: p.Name, protocol: proto, port: p.Port, appProtocol: ptr.Deref(p.AppProtocol, "")}
}

// mergedPort is a port of the import and the port it was taken from.
type mergedPort struct {
	id     portID
	from   string
	source *registry.Port
}

type portMerge struct {
	merged []mergedPort
	// notes says, by cluster ID, how that cluster's ports differ from the
	// merged ones; clusters whose ports are the merged ones have none.
	notes map[string][]string
}

// mergePorts merges the ports of recs, which are in precedence order: first
// by name, then by protocol and port number (see the package documentation).
func mergePorts(recs []*registry.Record) portMerge {
	pm := portMerge{notes: make(map[string][]string)}
	byName := make(map[string]int)
	byProtoPort := make(map[protoPort]int)
	for _, r := range recs {
		for i := range r.Spec.Ports {
			p := &r.Spec.Ports[i]
			id := idOf(p)
			pp := protoPort{id.protocol, id.port}
			if j, ok := byName[id.name]; ok {
				m := pm.merged[j]
				switch {
				case m.id == id:
				case m.id.protocol == id.protocol && m.id.port == id.port:
					pm.notes[r.ClusterID] = append(pm.notes[r.ClusterID], fmt.Sprintf(
						"port %s has appProtocol %s here but %s in cluster %s, whose value is used",
						quote(id.name), quote(id.appProtocol), quote(m.id.appProtocol), m.from))
				default:
					pm.notes[r.ClusterID] = append(pm.notes[r.ClusterID], fmt.Sprintf(
						"port %s is not exported: cluster %s, whose ServiceExport is older, exports the name as %s",
						id, m.from, m.id))
				}
				continue
			}
			if j, ok := byProtoPort[pp]; ok {
				m := pm.merged[j]
				pm.notes[r.ClusterID] = append(pm.notes[r.ClusterID], fmt.Sprintf(
					"port %s is not exported: cluster %s, whose ServiceExport is older, exports %d/%s as %s",
					id, m.from, id.port, id.protocol, m.id))
				continue
			}
			byName[id.name] = len(pm.merged)
			byProtoPort[pp] = len(pm.merged)
			pm.merged = append(pm.merged, mergedPort{id: id, from: r.ClusterID, source: p})
		}
	}
	// A cluster that lacks a port of the union differs too: the KEP raises
	// PortConflict whenever the constituent services' ports do not match.
	for _, r := range recs {
		own := make(map[portID]bool, len(r.Spec.Ports))
		for i := range r.Spec.Ports {
			own[idOf(&r.Spec.Ports[i])] = true
		}
		var missing []string
		for _, m := range pm.merged {
			if !own[m.id] {
				missing = append(missing, fmt.Sprintf("%s from cluster %s", m.id, m.from))
			}
		}
		if len(missing) > 0 {
			pm.notes[r.ClusterID] = append(pm.notes[r.ClusterID],
				"the import exposes the union of all clusters' ports, and this cluster does not export "+
					strings.Join(missing, ", "))
		}
	}
	return pm
}

// servedPorts returns the names of the merged ports that r's own Service
// exposes with the same name, protocol and number, in merged order.
func servedPorts(r *registry.Record, merged []mergedPort) []string {
	type routable struct {
		name     string
		protocol corev1.Protocol
		port     int32
	}
	own := make(map[routable]bool, len(r.Spec.Ports))
	for i := range r.Spec.Ports {
		id := idOf(&r.Spec.Ports[i])
		own[routable{id.name, id.protocol, id.port}] = true
	}
	names := make([]string, 0, len(merged))
	for _, m := range merged {
		if own[routable{m.id.name, m.id.protocol, m.id.port}] {
			names = append(names, m.id.name)
		}
	}
	return names
}

// importSpec is the ServiceImport spec of the winning spec w with the merged
// ports; it shares no memory with the records.
func importSpec(w *registry.ServiceSpec, ports []mergedPort) mcsv1beta1.ServiceImportSpec {
	c := w.DeepCopy()
	spec := mcsv1beta1.ServiceImportSpec{
		Type:                  mcsv1beta1.ServiceImportType(c.Type),
		Ports:                 make([]mcsv1beta1.ServicePort, 0, len(ports)),
		SessionAffinity:       c.SessionAffinity,
		SessionAffinityConfig: c.SessionAffinityConfig,
		IPFamilies:            c.IPFamilies,
		InternalTrafficPolicy: c.InternalTrafficPolicy,
		TrafficDistribution:   c.TrafficDistribution,
	}
	for _, m := range ports {
		spec.Ports = append(spec.Ports, mcsv1beta1.ServicePort{
			Name:        m.id.name,
			Protocol:    m.id.protocol,
			AppProtocol: m.source.DeepCopy().AppProtocol,
			Port:        m.id.port,
		})
	}
	return spec
}
