package hub

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/clusterset/clusterset/pkg/registry"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

// StoredRecord is one member's record of a service as the hub holds it, for
// tools such as `kubectl clusterset status`.
type StoredRecord struct {
	ClusterID string
	// Record is the assembled record; nil when it cannot be read (Problem
	// says why: a missing chunk, an undecodable head).
	Record  *registry.Record
	Problem string
	// Changed is when the record's content last changed: the record's own
	// time (registry.Record.Changed, by the exporting cluster's clock), else,
	// for records without one, when the hub last accepted a write of its
	// head (the newest time in its managedFields; zero when it keeps none).
	Changed time.Time
}

// Heartbeat is one member's liveness record as the hub holds it.
type Heartbeat struct {
	ClusterID string
	RenewTime time.Time
	// LeaseDuration is how long the member means a renewal to last (its
	// --liveness lease); 0 when it did not say.
	LeaseDuration time.Duration
}

// ReadService lists every member's record of key in clusterSetID from the
// hub with cfg (any member's credentials may read every record), sorted by
// cluster ID. It reads once and starts no watch. Objects outside the
// namespace of the cluster they name are ignored, as the controllers do.
func ReadService(ctx context.Context, cfg *rest.Config, clusterSetID string, key registry.ServiceKey) ([]StoredRecord, error) {
	r, err := inspector(cfg, clusterSetID)
	if err != nil {
		return nil, err
	}
	sel := labels.SelectorFromSet(labels.Set{LabelClusterSet: r.setLabel, LabelRecord: recordLabel(key)}).String()
	list, err := r.client.list(ctx, "", sel)
	if err != nil {
		return nil, fmt.Errorf("listing the records of %s from the hub: %w", key, err)
	}
	store := cache.NewStore(cache.MetaNamespaceKeyFunc)
	changed := map[string]time.Time{}
	for i := range list.Items {
		obj := &list.Items[i]
		if err := store.Add(obj); err != nil {
			return nil, err
		}
		if cluster, ok := r.owner(obj); ok && obj.Spec.Type == hubv1alpha1.Head && obj.Spec.Service == key.String() {
			for _, f := range obj.ManagedFields {
				if f.Time != nil && f.Time.After(changed[cluster]) {
					changed[cluster] = f.Time.Time
				}
			}
			if _, seen := changed[cluster]; !seen {
				changed[cluster] = time.Time{}
			}
		}
	}
	var out []StoredRecord
	for cluster, at := range changed {
		sink := &problemSink{}
		r.view.assemble(logr.New(sink), store, cluster, key)
		s := StoredRecord{ClusterID: cluster, Changed: at, Problem: sink.problem}
		if rec, ok := r.view.records[key][cluster]; ok {
			s.Record = rec.DeepCopy()
			if !rec.Changed.IsZero() {
				s.Changed = rec.Changed
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b StoredRecord) int { return strings.Compare(a.ClusterID, b.ClusterID) })
	return out, nil
}

// ReadHeartbeats lists every member's heartbeat in clusterSetID from the hub
// with cfg, sorted by cluster ID.
func ReadHeartbeats(ctx context.Context, cfg *rest.Config, clusterSetID string) ([]Heartbeat, error) {
	r, err := inspector(cfg, clusterSetID)
	if err != nil {
		return nil, err
	}
	objs, err := r.listHeartbeats(ctx)
	if err != nil {
		return nil, err
	}
	out := r.heartbeats(objs)
	slices.SortFunc(out, func(a, b Heartbeat) int { return strings.Compare(a.ClusterID, b.ClusterID) })
	return out, nil
}

// inspector is a read-only Registry: it is never run and writes nothing, so
// its own cluster ID does not matter.
func inspector(cfg *rest.Config, clusterSetID string) (*Registry, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "kubectl-clusterset"
	return New(Options{ClusterSetID: clusterSetID, ClusterID: "-", Config: cfg})
}

// problemSink keeps the first error message assemble logs: why a record
// could not be assembled.
type problemSink struct{ problem string }

func (s *problemSink) Init(logr.RuntimeInfo)                 {}
func (s *problemSink) Enabled(int) bool                      { return true }
func (s *problemSink) WithValues(...any) logr.LogSink        { return s }
func (s *problemSink) WithName(string) logr.LogSink          { return s }
func (s *problemSink) Info(level int, msg string, _ ...any)  { s.note(msg) }
func (s *problemSink) Error(err error, msg string, _ ...any) { s.note(msg + ": " + err.Error()) }
func (s *problemSink) note(msg string) {
	if s.problem == "" && strings.HasPrefix(msg, "Keeping the last record") {
		s.problem = strings.TrimPrefix(msg, "Keeping the last record: ")
	}
}
