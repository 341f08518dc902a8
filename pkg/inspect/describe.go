package inspect

import (
	"fmt"
	"slices"
	"time"

	"github.com/clusterset/clusterset/pkg/conditions"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ServiceDetail is `kubectl clusterset status SVC`: one service as every
// member and the registry see it.
type ServiceDetail struct {
	Namespace string          `json:"namespace"`
	Name      string          `json:"name"`
	Clusters  []ClusterDetail `json:"clusters"`
	Registry  RegistryState   `json:"registry"`
}

// ClusterDetail is one member's view of a service.
type ClusterDetail struct {
	Cluster string `json:"cluster"`
	Context string `json:"context"`
	// Problem is why the member could not be read.
	Problem string        `json:"problem,omitempty"`
	Export  *ExportDetail `json:"export,omitempty"`
	Import  *ImportDetail `json:"import,omitempty"`
}

// ExportDetail is a member's ServiceExport of the service.
type ExportDetail struct {
	Conditions []Condition `json:"conditions"`
}

// Condition is a status condition, without its times.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// ImportDetail is a member's ServiceImport of the service and the endpoints
// it imported, by source cluster.
type ImportDetail struct {
	Type      string         `json:"type"`
	IPs       []string       `json:"ips,omitempty"`
	Ports     []string       `json:"ports,omitempty"`
	Clusters  []string       `json:"clusters,omitempty"`
	Endpoints []SourceCounts `json:"endpoints"`
}

// RegistryState is what the registry holds about the service: one record
// per exporting cluster, or why it was not read.
type RegistryState struct {
	Backend string           `json:"backend,omitempty"`
	Problem string           `json:"problem,omitempty"`
	Records []RegistryRecord `json:"records,omitempty"`
}

// RegistryRecord summarises one cluster's record in the registry.
type RegistryRecord struct {
	Cluster string   `json:"cluster"`
	Ready   int      `json:"readyEndpoints"`
	Total   int      `json:"endpoints"`
	Type    string   `json:"type,omitempty"`
	Ports   []string `json:"ports,omitempty"`
	// Changed is when the record's content last changed (its own time, by
	// the exporting cluster's clock, else when the registry last accepted a
	// write of it); nil when neither is known.
	Changed *time.Time `json:"changed,omitempty"`
	// Problem is why the record, or part of it, could not be read: with
	// Type "" none of it was, else what does not decode was left out.
	Problem string `json:"problem,omitempty"`
}

// Describe returns key as seen by every member of clusters (in their order)
// and by the registry (reg, from ReadRegistry).
func Describe(clusters []*Cluster, key types.NamespacedName, reg RegistryState) ServiceDetail {
	d := ServiceDetail{Namespace: key.Namespace, Name: key.Name, Clusters: []ClusterDetail{}, Registry: reg}
	for _, cl := range clusters {
		cd := ClusterDetail{Cluster: cl.Name(), Context: cl.Context, Problem: cl.Problem}
		for i := range cl.Exports {
			if e := &cl.Exports[i]; e.Namespace == key.Namespace && e.Name == key.Name {
				cd.Export = &ExportDetail{Conditions: Conditions(e.Status.Conditions)}
			}
		}
		for i := range cl.Imports {
			imp := &cl.Imports[i]
			if imp.Namespace != key.Namespace || imp.Name != key.Name {
				continue
			}
			id := &ImportDetail{Type: string(imp.Spec.Type), IPs: imp.Spec.IPs, Endpoints: EndpointCounts(cl.ImportedSlices)[key]}
			if id.Endpoints == nil {
				id.Endpoints = []SourceCounts{}
			}
			for _, p := range imp.Spec.Ports {
				id.Ports = append(id.Ports, portString(p.Name, string(p.Protocol), p.Port))
			}
			for _, c := range imp.Status.Clusters {
				id.Clusters = append(id.Clusters, c.Cluster)
			}
			slices.Sort(id.Clusters)
			cd.Import = id
		}
		d.Clusters = append(d.Clusters, cd)
	}
	return d
}

// Conditions lists a ServiceExport's conditions in the order readers show
// them (conditions.Export: Valid, Ready, Conflict), then any other by type.
func Conditions(conds []metav1.Condition) []Condition {
	out := make([]Condition, 0, len(conds))
	for _, c := range conditions.Sorted(conds, conditions.Export) {
		out = append(out, Condition{Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: c.Message})
	}
	return out
}

// portString writes a port as "name 80/TCP", or "80/TCP" without a name.
func portString(name, protocol string, port int32) string {
	if protocol == "" {
		protocol = "TCP"
	}
	if name == "" {
		return fmt.Sprintf("%d/%s", port, protocol)
	}
	return fmt.Sprintf("%s %d/%s", name, port, protocol)
}
