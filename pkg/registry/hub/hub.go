// Package hub is the registry backend that keeps every cluster's records in a
// Kubernetes API server, the hub: a member cluster or a dedicated one, which
// every member reaches with credentials of its own.
//
// # Layout
//
// Each member cluster of each clusterset has a namespace in the hub,
// NamespaceName(clusterSetID, clusterID), created with its RBAC by EnsureMember
// (or the manifests of config/hub). The member's credentials may write only in
// that namespace (a Role there); they may read records and Leases in every
// namespace (a ClusterRole). A reader trusts a record's cluster ID only when
// the record is in that cluster's namespace, so RBAC alone decides who may
// speak for a cluster.
//
// A record is stored in ConfigMaps rather than a custom resource: every hub
// already serves them, so joining a hub needs no CRD installed there nor a
// version skew between CRD and controllers, and Kubernetes documents ConfigMaps
// as holding no confidential data, which is what a cluster-wide read permission
// on them exposes (use a dedicated hub if that matters).
//
// Each record is a head ConfigMap named "<namespace>.<service>" holding the
// spec and the first ChunkSize endpoints; a record with more endpoints has
// chunk ConfigMaps "<namespace>.<service>.<digest>.<i>" with ChunkSize
// endpoints each, at about 40 to 80 bytes per endpoint. The digest is a hash of
// the whole record version. A writer creates the new version's chunks, then
// points the head to them (an optimistic-concurrency update), then deletes the
// previous version's chunks. Readers watch one informer over all of a
// clusterset's ConfigMaps, whose cache always holds a prefix of the hub's
// history: when it holds a head, it holds the chunks the head names. A reader
// assembles a record only from the chunks of the digest its head names, and
// keeps the record it assembled before if they are not all there, so it never
// returns a half-updated record.
//
// Liveness is a coordination.k8s.io/v1 Lease named LeaseName in each member's
// namespace, renewed by Heartbeat.
package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/clusterset/clusterset/pkg/registry"
)

// Defaults of Options.
const (
	DefaultChunkSize     = 1000
	DefaultLeaseDuration = 60 * time.Second
	DefaultQPS           = 20
	DefaultBurst         = 50
)

// Options configure a hub Registry.
type Options struct {
	ClusterSetID string
	ClusterID    string
	// Config reaches the hub with this member's credentials. QPS and Burst
	// default to DefaultQPS and DefaultBurst when zero.
	Config *rest.Config
	// ChunkSize is the most endpoints stored in one ConfigMap; 0 means
	// DefaultChunkSize. At most about 80 bytes each, 1,000 endpoints stay
	// far below the API server's 1.5 MiB object limit.
	ChunkSize int
	// LeaseDuration is written into the liveness Lease for humans and tools;
	// readers use the renew time. 0 means DefaultLeaseDuration.
	LeaseDuration time.Duration
}

// Registry is the hub backend of registry.Registry.
type Registry struct {
	setID, clusterID string
	namespace        string // this member's namespace in the hub
	setLabel         string
	chunkSize        int
	leaseDuration    time.Duration
	client           kubernetes.Interface

	view *view
}

var _ registry.Registry = (*Registry)(nil)

// New returns the Registry of opts.ClusterID. It does not contact the hub.
func New(opts Options) (*Registry, error) {
	if opts.ClusterSetID == "" || opts.ClusterID == "" {
		return nil, errors.New("hub registry: clusterset ID and cluster ID are required")
	}
	if opts.Config == nil {
		return nil, errors.New("hub registry: a rest.Config for the hub is required")
	}
	cfg := rest.CopyConfig(opts.Config)
	if cfg.QPS == 0 {
		cfg.QPS = DefaultQPS
	}
	if cfg.Burst == 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "clusterset-hub-registry/" + opts.ClusterID
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("hub registry: client: %w", err)
	}
	return NewWithClient(opts, client), nil
}

// NewWithClient is New with a ready client; opts.Config is ignored.
func NewWithClient(opts Options, client kubernetes.Interface) *Registry {
	r := &Registry{
		setID:         opts.ClusterSetID,
		clusterID:     opts.ClusterID,
		namespace:     NamespaceName(opts.ClusterSetID, opts.ClusterID),
		setLabel:      clusterSetLabel(opts.ClusterSetID),
		chunkSize:     opts.ChunkSize,
		leaseDuration: opts.LeaseDuration,
		client:        client,
	}
	if r.chunkSize <= 0 {
		r.chunkSize = DefaultChunkSize
	}
	if r.leaseDuration <= 0 {
		r.leaseDuration = DefaultLeaseDuration
	}
	r.view = newView(r)
	return r
}

// Namespace is this member's namespace in the hub.
func (r *Registry) Namespace() string { return r.namespace }

func (r *Registry) meta(name, kind string, key *registry.ServiceKey) metav1.ObjectMeta {
	m := metav1.ObjectMeta{
		Name:      name,
		Namespace: r.namespace,
		Labels: map[string]string{
			LabelClusterSet: r.setLabel,
			LabelKind:       kind,
			LabelManagedBy:  managedBy,
		},
		Annotations: map[string]string{
			AnnotationClusterSetID: r.setID,
			AnnotationClusterID:    r.clusterID,
		},
	}
	if key != nil {
		m.Labels[LabelRecord] = recordLabel(*key)
		m.Annotations[AnnotationService] = key.String()
	}
	return m
}

// Publish writes rec as this cluster's record of its service: the new
// version's chunks first, then the head that names them, then it deletes the
// previous version's chunks. An unchanged record costs one read.
func (r *Registry) Publish(ctx context.Context, rec *registry.Record) error {
	if rec.ClusterSetID != r.setID || rec.ClusterID != r.clusterID {
		return fmt.Errorf("hub registry of cluster %q in clusterset %q cannot publish a record of cluster %q in clusterset %q",
			r.clusterID, r.setID, rec.ClusterID, rec.ClusterSetID)
	}
	key := rec.Key()
	if err := validateKey(key); err != nil {
		return err
	}
	enc, err := encode(rec, r.chunkSize)
	if err != nil {
		return fmt.Errorf("encoding record of %s: %w", key, err)
	}
	logger := log.FromContext(ctx).WithValues("clusterSet", r.setID, "cluster", r.clusterID, "namespace", key.Namespace, "service", key.Name)
	cms := r.client.CoreV1().ConfigMaps(r.namespace)

	// Conflicts come from another writer of this same cluster (two replicas
	// during a rollout): read the head again and redo the write.
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		head, err := cms.Get(ctx, headName(key), metav1.GetOptions{})
		var prev *wireHead
		switch {
		case apierrors.IsNotFound(err):
			head = nil
		case err != nil:
			return fmt.Errorf("reading record of %s from the hub: %w", key, err)
		default:
			if prev, err = decodeHead(head.Data[dataRecord]); err != nil {
				logger.Info("Replacing an unreadable record head", "error", err.Error())
				prev = nil
			} else if prev.Digest == enc.digest {
				return nil
			}
		}

		for i := 1; i < len(enc.chunks); i++ {
			if err := r.putChunk(ctx, key, enc, i); err != nil {
				return err
			}
		}

		want := &corev1.ConfigMap{
			ObjectMeta: r.meta(headName(key), KindRecord, &key),
			Data: map[string]string{
				dataRecord:    string(enc.head),
				dataEndpoints: string(enc.chunks[0]),
			},
		}
		if head == nil {
			_, err = cms.Create(ctx, want, metav1.CreateOptions{})
		} else {
			want.ResourceVersion = head.ResourceVersion
			_, err = cms.Update(ctx, want, metav1.UpdateOptions{})
		}
		if err != nil {
			return fmt.Errorf("writing record of %s to the hub: %w", key, err)
		}
		logger.V(1).Info("Published record", "endpoints", len(rec.Endpoints), "chunks", len(enc.chunks), "digest", enc.digest)

		if prev != nil {
			for i := 1; i < prev.Chunks; i++ {
				name := chunkName(key, prev.Digest, i)
				if err := cms.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
					// Left over until the next withdrawal; readers ignore it.
					logger.Info("Could not delete a chunk of the previous record version", "configMap", name, "error", err.Error())
				}
			}
		}
		return nil
	})
}

// putChunk creates chunk i of enc, or overwrites what an interrupted earlier
// write of the same version left.
func (r *Registry) putChunk(ctx context.Context, key registry.ServiceKey, enc *encoded, i int) error {
	cms := r.client.CoreV1().ConfigMaps(r.namespace)
	cm := &corev1.ConfigMap{
		ObjectMeta: r.meta(chunkName(key, enc.digest, i), KindChunk, &key),
		Data:       map[string]string{dataEndpoints: string(enc.chunks[i])},
	}
	_, err := cms.Create(ctx, cm, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		var cur *corev1.ConfigMap
		if cur, err = cms.Get(ctx, cm.Name, metav1.GetOptions{}); err == nil {
			cm.ResourceVersion = cur.ResourceVersion
			_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		return fmt.Errorf("writing chunk %d of the record of %s to the hub: %w", i, key, err)
	}
	return nil
}

// Withdraw deletes the head first, so that readers see the record go at once,
// then every chunk of the record, whatever version it belonged to.
func (r *Registry) Withdraw(ctx context.Context, key registry.ServiceKey) error {
	if err := validateKey(key); err != nil {
		return err
	}
	cms := r.client.CoreV1().ConfigMaps(r.namespace)
	if err := cms.Delete(ctx, headName(key), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("withdrawing record of %s from the hub: %w", key, err)
	}
	sel := labels.SelectorFromSet(labels.Set{LabelRecord: recordLabel(key), LabelKind: KindChunk}).String()
	list, err := cms.List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return fmt.Errorf("listing chunks of the record of %s: %w", key, err)
	}
	for _, cm := range list.Items {
		if cm.Annotations[AnnotationService] != key.String() {
			continue
		}
		if err := cms.Delete(ctx, cm.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting chunk %s of the record of %s: %w", cm.Name, key, err)
		}
	}
	log.FromContext(ctx).V(1).Info("Withdrew record", "clusterSet", r.setID, "cluster", r.clusterID, "namespace", key.Namespace, "service", key.Name)
	return nil
}

// Heartbeat renews this cluster's Lease, creating it the first time.
func (r *Registry) Heartbeat(ctx context.Context) error {
	leases := r.client.CoordinationV1().Leases(r.namespace)
	now := metav1.NewMicroTime(time.Now())
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		lease, err := leases.Get(ctx, LeaseName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			lease = &coordinationv1.Lease{
				ObjectMeta: r.meta(LeaseName, KindLiveness, nil),
				Spec: coordinationv1.LeaseSpec{
					HolderIdentity:       ptr.To(r.clusterID),
					LeaseDurationSeconds: ptr.To(int32(r.leaseDuration / time.Second)),
					AcquireTime:          &now,
					RenewTime:            &now,
				},
			}
			_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return fmt.Errorf("reading liveness lease from the hub: %w", err)
		}
		lease.Spec.RenewTime = &now
		lease.Spec.HolderIdentity = ptr.To(r.clusterID)
		lease.Spec.LeaseDurationSeconds = ptr.To(int32(r.leaseDuration / time.Second))
		_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
		return err
	})
}

// Liveness returns each member's last renew time. It reads the watched
// Leases once Run has synced them, and lists them from the hub before that.
func (r *Registry) Liveness(ctx context.Context) (map[string]time.Time, error) {
	if leases, ok := r.view.leases(); ok {
		return r.liveness(leases), nil
	}
	list, err := r.client.CoordinationV1().Leases(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: r.selector()})
	if err != nil {
		return nil, fmt.Errorf("listing liveness leases from the hub: %w", err)
	}
	leases := make([]*coordinationv1.Lease, len(list.Items))
	for i := range list.Items {
		leases[i] = &list.Items[i]
	}
	return r.liveness(leases), nil
}

func (r *Registry) liveness(leases []*coordinationv1.Lease) map[string]time.Time {
	out := map[string]time.Time{}
	for _, l := range leases {
		cluster, ok := r.owner(&l.ObjectMeta)
		if !ok || l.Name != LeaseName || l.Spec.RenewTime == nil {
			continue
		}
		out[cluster] = l.Spec.RenewTime.Time
	}
	return out
}

// selector selects this clusterset's objects.
func (r *Registry) selector() string {
	return labels.SelectorFromSet(labels.Set{LabelClusterSet: r.setLabel}).String()
}

// owner returns the cluster ID of an object of this clusterset, when the
// object is in the namespace of the cluster it claims to be from: only that
// cluster may write there.
func (r *Registry) owner(m *metav1.ObjectMeta) (string, bool) {
	if m.Annotations[AnnotationClusterSetID] != r.setID {
		return "", false
	}
	cluster := m.Annotations[AnnotationClusterID]
	if cluster == "" || m.Namespace != NamespaceName(r.setID, cluster) {
		return "", false
	}
	return cluster, true
}
