package inspect

import (
	"cmp"
	"slices"

	"github.com/clusterset/clusterset/pkg/conditions"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// Service is one row of `kubectl clusterset list`: a service exported or
// imported in at least one member.
type Service struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Type is the ServiceImport type the importing members agree on
	// (ClusterSetIP or Headless); "" when no member imports the service,
	// "mixed" when they disagree.
	Type       string         `json:"type,omitempty"`
	ExportedBy []ExportState  `json:"exportedBy"`
	ImportedIn []ImportCounts `json:"importedIn"`
	// Conflicts are the exports whose Conflict condition is True (KEP-1645
	// "Constraints and Conflict Resolution").
	Conflicts []ExportState `json:"conflicts,omitempty"`
}

// ExportState is one member's ServiceExport of a service.
type ExportState struct {
	Cluster string `json:"cluster"`
	// Ready is the export's Ready condition is True.
	Ready bool `json:"ready"`
	// Reason is the reason of the first condition that needs attention
	// (Valid not True, Ready not True, Conflict True); "" when none does.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// ImportCounts is one member's ServiceImport of a service and its
// endpoints, counted over every source cluster.
type ImportCounts struct {
	Cluster string `json:"cluster"`
	Ready   int    `json:"readyEndpoints"`
	Total   int    `json:"endpoints"`
}

// List returns every service that any of clusters exports or imports,
// sorted by namespace and name, with members sorted by cluster name.
func List(clusters []*Cluster) []Service {
	rows := map[types.NamespacedName]*Service{}
	row := func(ns, name string) *Service {
		k := types.NamespacedName{Namespace: ns, Name: name}
		if rows[k] == nil {
			rows[k] = &Service{Namespace: ns, Name: name, ExportedBy: []ExportState{}, ImportedIn: []ImportCounts{}}
		}
		return rows[k]
	}
	for _, cl := range clusters {
		if cl.Problem != "" {
			continue
		}
		for i := range cl.Exports {
			e := &cl.Exports[i]
			r := row(e.Namespace, e.Name)
			st := ExportStateOf(cl.Name(), e.Status.Conditions)
			r.ExportedBy = append(r.ExportedBy, st)
			if c := meta.FindStatusCondition(e.Status.Conditions, string(mcsv1beta1.ServiceExportConditionConflict)); c != nil && c.Status == metav1.ConditionTrue {
				r.Conflicts = append(r.Conflicts, ExportState{Cluster: cl.Name(), Ready: st.Ready, Reason: c.Reason, Message: c.Message})
			}
		}
		counts := EndpointCounts(cl.ImportedSlices)
		for i := range cl.Imports {
			imp := &cl.Imports[i]
			r := row(imp.Namespace, imp.Name)
			ic := ImportCounts{Cluster: cl.Name()}
			ic.Ready, ic.Total = Sum(counts[types.NamespacedName{Namespace: imp.Namespace, Name: imp.Name}])
			r.ImportedIn = append(r.ImportedIn, ic)
			switch t := string(imp.Spec.Type); {
			case r.Type == "":
				r.Type = t
			case r.Type != t:
				r.Type = "mixed"
			}
		}
	}
	out := make([]Service, 0, len(rows))
	for _, r := range rows {
		slices.SortFunc(r.ExportedBy, func(a, b ExportState) int { return cmp.Compare(a.Cluster, b.Cluster) })
		slices.SortFunc(r.ImportedIn, func(a, b ImportCounts) int { return cmp.Compare(a.Cluster, b.Cluster) })
		slices.SortFunc(r.Conflicts, func(a, b ExportState) int { return cmp.Compare(a.Cluster, b.Cluster) })
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// Name is how output names the member: its cluster ID; its context in
// brackets when the ID is unknown, and after the ID when another member
// claims the same ID.
func (cl *Cluster) Name() string {
	switch {
	case cl.ClusterID == "":
		return "[" + cl.Context + "]"
	case cl.sharedID:
		return cl.ClusterID + " [" + cl.Context + "]"
	}
	return cl.ClusterID
}

// ExportStateOf judges one ServiceExport of cluster by its conditions
// (conditions.Export: Valid, Ready, Conflict of KEP-1645): Ready, and the
// first condition that needs attention in that order.
func ExportStateOf(cluster string, conds []metav1.Condition) ExportState {
	v := conditions.Judge(conds, conditions.Export, "export")
	return ExportState{
		Cluster: cluster,
		Ready:   meta.IsStatusConditionTrue(conds, string(mcsv1beta1.ServiceExportConditionReady)),
		Reason:  v.Reason,
		Message: v.Message,
	}
}

// SourceCounts counts the endpoints one member imported from one source
// cluster.
type SourceCounts struct {
	Source string `json:"sourceCluster"`
	Ready  int    `json:"readyEndpoints"`
	Total  int    `json:"endpoints"`
}

// Sum adds up counts of all sources: ready and total endpoints.
func Sum(counts []SourceCounts) (ready, total int) {
	for _, c := range counts {
		ready += c.Ready
		total += c.Total
	}
	return ready, total
}

// EndpointCounts counts imported endpoints by service and source cluster
// (multicluster.kubernetes.io/source-cluster), sources sorted. An endpoint
// counts as ready unless its ready condition is false (EndpointSlice API:
// nil means unknown, to be read as ready).
func EndpointCounts(eps []discoveryv1.EndpointSlice) map[types.NamespacedName][]SourceCounts {
	bySource := map[types.NamespacedName]map[string]*SourceCounts{}
	for _, s := range eps {
		k := types.NamespacedName{Namespace: s.Namespace, Name: s.Labels[mcsv1beta1.LabelServiceName]}
		src := s.Labels[mcsv1beta1.LabelSourceCluster]
		if bySource[k] == nil {
			bySource[k] = map[string]*SourceCounts{}
		}
		c := bySource[k][src]
		if c == nil {
			c = &SourceCounts{Source: src}
			bySource[k][src] = c
		}
		for _, ep := range s.Endpoints {
			c.Total++
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				c.Ready++
			}
		}
	}
	out := map[types.NamespacedName][]SourceCounts{}
	for k, m := range bySource {
		for _, c := range m {
			out[k] = append(out[k], *c)
		}
		slices.SortFunc(out[k], func(a, b SourceCounts) int { return cmp.Compare(a.Source, b.Source) })
	}
	return out
}
