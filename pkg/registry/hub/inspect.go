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

// NewReader returns a registry.Reader of clusterSetID's records on the hub
// that cfg reaches (any member's credentials may read every record).
// Objects outside the namespace of the cluster they name are ignored, as the
// controllers do.
func NewReader(cfg *rest.Config, clusterSetID string) (registry.Reader, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "kubectl-clusterset"
	if err := registry.ValidateClusterSetID(clusterSetID); err != nil {
		return nil, fmt.Errorf("hub registry: %w", err)
	}
	// It is never run and writes nothing, so its own cluster ID does not
	// matter; "-" is no member's.
	r, err := newRegistry(Options{ClusterSetID: clusterSetID, ClusterID: "-", Config: cfg})
	if err != nil {
		return nil, err
	}
	return reader{r}, nil
}

type reader struct{ r *Registry }

// ReadService implements registry.Reader. A record without its own change
// time gets the hub's last accepted write of its head (the newest time in
// its managedFields).
func (rd reader) ReadService(ctx context.Context, key registry.ServiceKey) ([]registry.StoredRecord, error) {
	r := rd.r
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
	var out []registry.StoredRecord
	for cluster, at := range changed {
		sink := &problemSink{}
		r.view.assemble(logr.New(sink), store, cluster, key, headName(key))
		s := registry.StoredRecord{ClusterID: cluster, Changed: at, Problem: sink.problem}
		if rec, ok := r.view.records[key][cluster]; ok {
			s.Record = rec.DeepCopy()
			if !rec.Changed.IsZero() {
				s.Changed = rec.Changed
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b registry.StoredRecord) int { return strings.Compare(a.ClusterID, b.ClusterID) })
	return out, nil
}

// ReadHeartbeats implements registry.Reader.
func (rd reader) ReadHeartbeats(ctx context.Context) ([]registry.Heartbeat, error) {
	r := rd.r
	objs, err := r.listHeartbeats(ctx)
	if err != nil {
		return nil, err
	}
	out := r.heartbeats(objs)
	slices.SortFunc(out, func(a, b registry.Heartbeat) int { return strings.Compare(a.ClusterID, b.ClusterID) })
	return out, nil
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
