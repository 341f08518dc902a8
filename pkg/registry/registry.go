// Package registry defines what every cluster of a clusterset writes to and reads
// from the shared registry: one Record per exported service and cluster, and a
// liveness heartbeat per cluster. Backends (hub, cloudmap) live in sub-packages
// and must pass the contract suite in registrytest. Controllers depend on this
// package only, never on a backend; cmd/ chooses the backend.
package registry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ServiceType is the import type a cluster exports its Service as.
type ServiceType string

const (
	// ClusterSetIP services get a VIP in every importing cluster.
	ClusterSetIP ServiceType = "ClusterSetIP"
	// Headless services are imported without a VIP; DNS answers with endpoints.
	Headless ServiceType = "Headless"
)

// ServiceKey names an exported service: its namespace and name are the same in
// every cluster of the clusterset (namespace sameness).
type ServiceKey = types.NamespacedName

// Record is one cluster's export of one service: what the exporting cluster
// says about the service, and its endpoints. Only the cluster named by
// ClusterID ever writes it.
type Record struct {
	ClusterSetID string
	ClusterID    string
	Namespace    string
	Name         string
	Spec         ServiceSpec
	Endpoints    []Endpoint
	// Changed is when the change this version of the record carries
	// happened in the exporting cluster, by that cluster's clock: the
	// newest endpoints.kubernetes.io/last-change-trigger-time of its
	// EndpointSlices, else when the exporter saw the change. Importers
	// measure propagation lag from it. It is not part of the record's
	// content: a Publish that differs from the stored record only in
	// Changed is no change and keeps the stored time, so republishing after
	// a restart does not make an old change look new. Backends keep at least
	// millisecond precision; zero means unknown (records written by the AWS
	// Cloud Map MCS controller, or by older clusterset versions).
	Changed time.Time
}

// SameContent reports whether a and b say the same thing about the service:
// equal in every field but Changed.
func SameContent(a, b *Record) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, y := *a, *b
	x.Changed, y.Changed = time.Time{}, time.Time{}
	return reflect.DeepEqual(&x, &y)
}

// Key returns the service the record is about.
func (r *Record) Key() ServiceKey { return ServiceKey{Namespace: r.Namespace, Name: r.Name} }

// ServiceSpec holds the service-level properties that the MCS API merges across
// clusters and reports conflicts on.
type ServiceSpec struct {
	Type                  ServiceType
	Ports                 []Port
	SessionAffinity       corev1.ServiceAffinity
	SessionAffinityConfig *corev1.SessionAffinityConfig
	IPFamilies            []corev1.IPFamily
	InternalTrafficPolicy *corev1.ServiceInternalTrafficPolicy
	TrafficDistribution   *string
	ExportedLabels        map[string]string
	ExportedAnnotations   map[string]string
	// ExportCreated is the ServiceExport's creationTimestamp; the oldest export
	// wins conflicts. Backends keep at least millisecond precision.
	ExportCreated time.Time
}

// Port is a service port as exported.
type Port struct {
	Name        string
	Protocol    corev1.Protocol
	AppProtocol *string
	Port        int32
	// TargetPort is informational (the Cloud Map schema carries it); importers
	// route to the endpoint ports, not to this.
	TargetPort string
}

// Endpoint is one backend address of the exporting cluster with its ports.
type Endpoint struct {
	Address     string
	AddressType discoveryv1.AddressType // IPv4 or IPv6
	Ports       []EndpointPort
	Ready       bool
	Serving     bool
	Terminating bool
	Hostname    string
	NodeName    string
	Zone        string
}

// EndpointPort is a port an endpoint listens on; Name matches a service port name.
type EndpointPort struct {
	Name     string
	Protocol corev1.Protocol
	Port     int32
}

// Registry is one cluster's handle on the shared registry. A Registry is bound
// to one clusterset ID and one cluster ID at construction: it writes only that
// cluster's records and reads records of that clusterset only.
//
// Every method is safe for concurrent use. Records given to and returned by a
// Registry are never shared: Publish does not keep rec (the caller may change
// it afterwards), and Records returns deep copies the caller may keep and
// change.
type Registry interface {
	// Publish makes rec the current record of rec's service for this
	// cluster, replacing any earlier one. rec's ClusterSetID and ClusterID
	// may be left empty: the backend writes its own (see Own). A record
	// that names another cluster or clusterset is refused.
	//
	// When the stored record has the same content (SameContent), Publish
	// writes nothing and the stored Changed stays.
	//
	// A published record is kept until Withdraw: when the registry loses
	// it (deleted by hand, an asynchronous write that failed) or holds it
	// in a form readers cannot use, the backend writes it again once its
	// view shows that. A version written by another writer of the same
	// cluster ID is not written over (the last writer wins), so that two
	// writers never overwrite each other in a loop. A Publish that returns
	// an error is not kept: the caller retries it. A Publish of the record
	// that is kept writes nothing even while it is lost (the repair
	// restores it), unless a repair failed: then it writes, and returns
	// the error.
	// Callers need not check that their record is still there. The hub
	// sees a loss on its watch and repairs it two seconds later (hub
	// RepairDelay). Cloud Map sees it when it next reads the service: at
	// once after a change beacon, else at its full resync
	// (FullResyncPeriod, a hand edit bumps no beacon), and repairs no
	// sooner than RepairDelay after its last write, since reads lag writes
	// there.
	Publish(ctx context.Context, rec *Record) error
	// Withdraw removes this cluster's record of key and stops keeping it.
	// Withdrawing a record that does not exist is not an error.
	Withdraw(ctx context.Context, key ServiceKey) error
	// Run keeps a view of every cluster's records current until ctx ends and
	// calls onChange with the key of each service whose records may have
	// changed (spurious calls are allowed, missed ones are not), possibly
	// from several goroutines at once, and must not block. Run returns
	// when ctx ends. Registry errors are retried inside Run and never clear the
	// view: readers keep seeing the last records that were read successfully.
	Run(ctx context.Context, onChange func(ServiceKey)) error
	// HasSynced reports whether the view has been filled at least once.
	HasSynced() bool
	// Records returns every cluster's record of key from the view, sorted by
	// ClusterID; none (nil or empty) when no cluster exports key. It returns
	// ErrNotSynced before the view was first filled.
	Records(key ServiceKey) ([]Record, error)
	// Keys returns every service that has at least one record in the view,
	// sorted by namespace, then name (CompareKeys). It returns ErrNotSynced
	// before the view was first filled.
	Keys() ([]ServiceKey, error)
	// Heartbeat renews this cluster's liveness record, with the holder the
	// backend was built with.
	Heartbeat(ctx context.Context) error
	// Liveness returns each cluster's last heartbeat, by cluster ID: its
	// renew time (by the writer's clock) and holder.
	Liveness(ctx context.Context) (map[string]Heartbeat, error)
}

// Own returns rec as a record of clusterSetID and clusterID, the identity a
// backend was built for: rec itself when it names them, else a shallow copy
// with the empty IDs filled in. It returns an error when rec names another
// cluster or clusterset. Backends call it first thing in Publish.
func Own(rec *Record, clusterSetID, clusterID string) (*Record, error) {
	if (rec.ClusterSetID != "" && rec.ClusterSetID != clusterSetID) || (rec.ClusterID != "" && rec.ClusterID != clusterID) {
		return nil, fmt.Errorf("the registry of cluster %q in clusterset %q cannot publish a record of cluster %q in clusterset %q",
			clusterID, clusterSetID, rec.ClusterID, rec.ClusterSetID)
	}
	if rec.ClusterSetID == clusterSetID && rec.ClusterID == clusterID {
		return rec, nil
	}
	out := *rec
	out.ClusterSetID, out.ClusterID = clusterSetID, clusterID
	return &out, nil
}

// CompareKeys orders service keys by namespace, then name: the order of
// Registry.Keys.
func CompareKeys(a, b ServiceKey) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// ErrNotSynced is returned by reads before the view was first filled.
var ErrNotSynced = errors.New("registry view has not synced yet")

// DeepCopy returns a copy of r that shares no memory with it, so that a
// backend can keep records while callers change what they got.
func (r *Record) DeepCopy() *Record {
	out := *r
	out.Spec = r.Spec.DeepCopy()
	out.Endpoints = slices.Clone(r.Endpoints)
	for i := range out.Endpoints {
		out.Endpoints[i].Ports = slices.Clone(out.Endpoints[i].Ports)
	}
	return &out
}

// DeepCopy returns a copy of s that shares no memory with it.
func (s ServiceSpec) DeepCopy() ServiceSpec {
	out := s
	out.Ports = slices.Clone(s.Ports)
	for i := range out.Ports {
		out.Ports[i] = out.Ports[i].DeepCopy()
	}
	out.SessionAffinityConfig = s.SessionAffinityConfig.DeepCopy()
	out.IPFamilies = slices.Clone(s.IPFamilies)
	out.InternalTrafficPolicy = clonePtr(s.InternalTrafficPolicy)
	out.TrafficDistribution = clonePtr(s.TrafficDistribution)
	out.ExportedLabels = maps.Clone(s.ExportedLabels)
	out.ExportedAnnotations = maps.Clone(s.ExportedAnnotations)
	return out
}

// DeepCopy returns a copy of p that shares no memory with it.
func (p Port) DeepCopy() Port {
	p.AppProtocol = clonePtr(p.AppProtocol)
	return p
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
