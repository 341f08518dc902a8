// Package hub is the registry backend that keeps every cluster's records in a
// Kubernetes API server, the hub: a member cluster or a dedicated one, which
// every member reaches with credentials of its own.
//
// # Layout and permissions
//
// Everything the backend stores is a ClusterSetRecord
// (hub.clusterset.dev/v1alpha1, package api/v1alpha1), a namespaced custom
// resource of its own whose CRD EnsureMember (or config/hub) installs in the
// hub. Each member cluster of each clusterset has a namespace in the hub,
// NamespaceName(clusterSetID, clusterID), created with its RBAC by
// EnsureMember. A member's credentials may create, change and delete
// ClusterSetRecords in that namespace only (a Role there), and read
// ClusterSetRecords in every namespace (the ClusterRole ReaderClusterRole).
// They grant nothing else: no ConfigMaps, Secrets, Leases or anything else of
// the hub, not even in the member's own namespace, so a hub may be an ordinary
// member cluster running unrelated workloads. A reader trusts a record's
// cluster ID only when the record is in that cluster's namespace, so RBAC
// alone decides who may speak for a cluster.
//
// # Records
//
// Each record is a head ClusterSetRecord (spec.type Head) named
// "<namespace>.<service>" holding the spec and the first ChunkSize endpoints;
// a record with more endpoints has chunk ClusterSetRecords (spec.type Chunk)
// "<namespace>.<service>.<digest>.<i>" with ChunkSize endpoints each, at about
// 40 to 80 bytes per endpoint in the compact, versioned encoding of
// encoding.go. The digest is a hash of the whole record version. A writer
// creates the new version's chunks, then points the head to them (an
// optimistic-concurrency update), then deletes the previous version's chunks.
// Readers watch one informer over all of a clusterset's ClusterSetRecords,
// whose cache always holds a prefix of the hub's history: when it holds a
// head, it holds the chunks the head names. A reader assembles a record only
// from the chunks of the digest its head names, and keeps the record it
// assembled before if they are not all there, so it never returns a
// half-updated record.
//
// # Liveness
//
// Each member's heartbeat is a ClusterSetRecord of spec.type Heartbeat named
// HeartbeatName in its namespace, whose spec.renewTime Heartbeat renews.
// Readers see heartbeats through the same informer as records, so liveness
// needs no permission beyond the records'.
package hub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/clusterset/clusterset/pkg/registry"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

// Defaults of Options.
const (
	DefaultChunkSize     = 1000
	DefaultLeaseDuration = registry.DefaultLeaseDuration
	// DefaultQPS and DefaultBurst limit one member's requests to the hub:
	// one write per exported service, so a burst of 1,000 exports takes
	// about 10 s; the hub's API Priority and Fairness shares it beyond that.
	DefaultQPS   = 100
	DefaultBurst = 200
	// DefaultRequestTimeout bounds each request to the hub but the watch:
	// far above a healthy hub's latency, and short enough that a hub that
	// stopped answering shows as Ready=False within a reconcile or two.
	DefaultRequestTimeout = 15 * time.Second
)

// Options configure a hub Registry.
type Options struct {
	ClusterSetID string
	ClusterID    string
	// Config reaches the hub with this member's credentials. QPS and Burst
	// default to DefaultQPS and DefaultBurst when zero.
	Config *rest.Config
	// ChunkSize is the most endpoints stored in one ClusterSetRecord; 0 means
	// DefaultChunkSize. At most about 80 bytes each, 1,000 endpoints stay
	// far below the API server's 1.5 MiB object limit.
	ChunkSize int
	// LeaseDuration is written into the heartbeat for humans and tools;
	// readers use the renew time. 0 means DefaultLeaseDuration.
	LeaseDuration time.Duration
	// RequestTimeout bounds every request but the watch. 0 means
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// Clock stamps heartbeats. Default the real clock.
	Clock clock.PassiveClock
	// Holder is written into the heartbeat (HolderIdentity): the UID of
	// this member's kube-system namespace.
	Holder string
	// TokenReloadInterval is how often a bearer token from a file
	// (Config.BearerTokenFile, a kubeconfig's tokenFile) is read again, so
	// that a rotated token is used without a restart. 0 means
	// DefaultTokenReloadInterval.
	TokenReloadInterval time.Duration
}

// Registry is the hub backend of registry.Registry.
type Registry struct {
	setID, clusterID string
	namespace        string // this member's namespace in the hub
	setLabel         string
	chunkSize        int
	leaseDuration    time.Duration
	client           *recordClient

	view *view

	// written holds, per service, the digest of the last record head this
	// process wrote. The view's cache may lag behind those writes; a cached
	// head with another digest is then stale, and trusting it could skip a
	// needed write (write A, write B, want A again while the cache still
	// shows A).
	writtenMu sync.Mutex
	written   map[registry.ServiceKey]string

	keeper *keeper
	clock  clock.PassiveClock
	holder string
	// credential knows which bearer token the hub last accepted; the
	// heartbeat reports it.
	credential *credential
}

var _ registry.Registry = (*Registry)(nil)

// New returns the Registry of opts.ClusterID. It does not contact the hub.
// IDs that registry.ValidateClusterSetID or registry.ValidateClusterID
// reject are an error.
func New(opts Options) (*Registry, error) {
	if err := registry.ValidateClusterSetID(opts.ClusterSetID); err != nil {
		return nil, fmt.Errorf("hub registry: %w", err)
	}
	if err := registry.ValidateClusterID(opts.ClusterID); err != nil {
		return nil, fmt.Errorf("hub registry: %w", err)
	}
	return newRegistry(opts)
}

// newRegistry is New without checking opts.ClusterID, for NewReader, which
// writes nothing.
func newRegistry(opts Options) (*Registry, error) {
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
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.TokenReloadInterval <= 0 {
		opts.TokenReloadInterval = DefaultTokenReloadInterval
	}
	cred := &credential{}
	client, err := newRecordClient(withCredential(cfg, opts.TokenReloadInterval, cred), opts.RequestTimeout)
	if err != nil {
		return nil, fmt.Errorf("hub registry: client: %w", err)
	}
	r := &Registry{
		setID:         opts.ClusterSetID,
		clusterID:     opts.ClusterID,
		namespace:     NamespaceName(opts.ClusterSetID, opts.ClusterID),
		setLabel:      clusterSetLabel(opts.ClusterSetID),
		chunkSize:     opts.ChunkSize,
		leaseDuration: opts.LeaseDuration,
		client:        client,
		written:       map[registry.ServiceKey]string{},
		keeper:        newKeeper(),
		clock:         opts.Clock,
		holder:        opts.Holder,
		credential:    cred,
	}
	if r.clock == nil {
		r.clock = clock.RealClock{}
	}
	if r.chunkSize <= 0 {
		r.chunkSize = DefaultChunkSize
	}
	if r.leaseDuration <= 0 {
		r.leaseDuration = DefaultLeaseDuration
	}
	r.view = newView(r)
	return r, nil
}

// Namespace is this member's namespace in the hub.
func (r *Registry) Namespace() string { return r.namespace }

// object returns a ClusterSetRecord of this cluster, of key unless typ is
// Heartbeat.
func (r *Registry) object(name string, typ hubv1alpha1.RecordType, key registry.ServiceKey) *hubv1alpha1.ClusterSetRecord {
	obj := &hubv1alpha1.ClusterSetRecord{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: r.namespace,
			Labels: map[string]string{
				LabelClusterSet: r.setLabel,
				LabelKind:       kindLabel[typ],
				LabelManagedBy:  managedBy,
			},
		},
		Spec: hubv1alpha1.ClusterSetRecordSpec{Type: typ, ClusterSetID: r.setID, ClusterID: r.clusterID},
	}
	if typ != hubv1alpha1.Heartbeat {
		obj.Labels[LabelRecord] = recordLabel(key)
		obj.Spec.Service = key.String()
	}
	return obj
}

var kindLabel = map[hubv1alpha1.RecordType]string{
	hubv1alpha1.Head:      KindRecord,
	hubv1alpha1.Chunk:     KindChunk,
	hubv1alpha1.Heartbeat: KindHeartbeat,
}

// Publish writes rec as this cluster's record of its service: the new
// version's chunks first, then the head that names them, then it deletes the
// previous version's chunks. An unchanged record costs no call: the head is
// read from the watch cache.
func (r *Registry) Publish(ctx context.Context, rec *registry.Record) error {
	rec, err := registry.Own(rec, r.setID, r.clusterID)
	if err != nil {
		return fmt.Errorf("hub registry: %w", err)
	}
	key := rec.Key()
	if err := validateKey(key); err != nil {
		return err
	}
	defer r.keeper.lock(key)()
	if r.keeper.keeps(key, rec) && !r.replacedByAnother(key) {
		// Published already and kept (encoded and valid then, so not
		// encoded again: every reconcile of an export comes here): should
		// the hub lose it, the keeper writes it again. A repair that
		// failed makes this Publish write, so that the caller learns why;
		// so does a version another writer of this cluster ID put there
		// (an old leader's late write): the last Publish wins.
		return nil
	}
	enc, err := encode(rec, r.chunkSize)
	if err != nil {
		return fmt.Errorf("encoding record of %s: %w", key, err)
	}
	if err := r.publish(ctx, rec, enc); err != nil {
		// As with Cloud Map: what failed is not kept; the caller retries.
		r.keeper.keep(key, nil)
		return err
	}
	r.keeper.keep(key, rec)
	return nil
}

// publish writes rec, encoded as enc; the caller holds rec's key lock.
func (r *Registry) publish(ctx context.Context, rec *registry.Record, enc *encoded) error {
	key := rec.Key()
	logger := log.FromContext(ctx).WithValues("clusterSet", r.setID, "cluster", r.clusterID, "namespace", key.Namespace, "service", key.Name)

	// The first attempt reads the head from the view's cache, so that an
	// unchanged record costs no call and a changed one a single write.
	// Conflicts (another writer of this cluster, two replicas during a
	// rollout, or a cache that is behind) read the head from the hub and
	// redo the write.
	fresh := false
	return retry.OnError(retry.DefaultBackoff, staleWrite, func() error {
		head, err := r.readOwn(ctx, headName(key), fresh)
		if !fresh && r.cacheBehind(key, head, err) {
			head, err = r.readOwn(ctx, headName(key), true)
		}
		fresh = true
		var prev *wireHead
		switch {
		case apierrors.IsNotFound(err):
			head = nil
		case err != nil:
			return fmt.Errorf("reading record of %s from the hub: %w", key, err)
		default:
			if prev, err = decodeHead(head.Spec.Record); err != nil {
				logger.Info("Replacing an unreadable record head", "error", err.Error())
				prev = nil
			} else if prev.Digest == enc.digest && head.Spec.Type == hubv1alpha1.Head && r.ownsSpec(head) {
				r.setWritten(key, enc.digest) // what the hub holds, as far as this process knows
				return nil
			}
		}

		for i := 1; i < len(enc.chunks); i++ {
			if err := r.putChunk(ctx, key, enc, i); err != nil {
				return err
			}
		}

		want := r.object(headName(key), hubv1alpha1.Head, key)
		want.Spec.Record = string(enc.head)
		want.Spec.Endpoints = string(enc.chunks[0])
		// Until the write is known to have succeeded (or not), the hub's
		// head is unknown: a response lost after the server applied it
		// must not let a stale cache decide the next publish.
		r.setWritten(key, writeUnknown)
		if head == nil {
			err = r.client.create(ctx, want)
		} else {
			want.ResourceVersion = head.ResourceVersion
			err = r.client.update(ctx, want)
		}
		if err != nil {
			return fmt.Errorf("writing record of %s to the hub: %w", key, err)
		}
		r.setWritten(key, enc.digest)
		logger.V(1).Info("Published record", "endpoints", len(rec.Endpoints), "chunks", len(enc.chunks), "digest", enc.digest)

		if prev != nil && prev.Digest != enc.digest {
			for i := 1; i < prev.Chunks; i++ {
				name := chunkName(key, prev.Digest, i)
				if err := r.client.delete(ctx, r.namespace, name); err != nil && !apierrors.IsNotFound(err) {
					// Left over until the next withdrawal; readers ignore it.
					logger.Info("Could not delete a chunk of the previous record version", "clusterSetRecord", name, "error", err.Error())
				}
			}
		}
		return nil
	})
}

// cacheBehind reports whether the cached head of key (head, or err from
// reading it) is older than the last head this process wrote.
func (r *Registry) cacheBehind(key registry.ServiceKey, head *hubv1alpha1.ClusterSetRecord, err error) bool {
	r.writtenMu.Lock()
	want, wrote := r.written[key]
	r.writtenMu.Unlock()
	if !wrote {
		return false
	}
	if err != nil {
		return want != "" // we wrote a head the cache does not have yet
	}
	h, derr := decodeHead(head.Spec.Record)
	return derr != nil || h.Digest != want
}

// writeUnknown is the written digest of a key while a write of its head is
// in flight or ended in an error: no cached head matches it.
const writeUnknown = "unknown"

// setWritten records the digest of the head just written, or "" after a
// withdrawal.
func (r *Registry) setWritten(key registry.ServiceKey, digest string) {
	r.writtenMu.Lock()
	defer r.writtenMu.Unlock()
	r.written[key] = digest
}

// ownsSpec reports whether obj's spec names this cluster, as the objects it
// writes do.
func (r *Registry) ownsSpec(obj *hubv1alpha1.ClusterSetRecord) bool {
	return obj.Spec.ClusterSetID == r.setID && obj.Spec.ClusterID == r.clusterID
}

// putChunk creates chunk i of enc, or overwrites what an interrupted earlier
// write of the same version left.
func (r *Registry) putChunk(ctx context.Context, key registry.ServiceKey, enc *encoded, i int) error {
	obj := r.object(chunkName(key, enc.digest, i), hubv1alpha1.Chunk, key)
	obj.Spec.Endpoints = string(enc.chunks[i])
	err := r.client.create(ctx, obj)
	if apierrors.IsAlreadyExists(err) {
		var cur *hubv1alpha1.ClusterSetRecord
		if cur, err = r.client.get(ctx, r.namespace, obj.Name); err == nil {
			obj.ResourceVersion = cur.ResourceVersion
			err = r.client.update(ctx, obj)
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
	defer r.keeper.lock(key)()
	r.keeper.keep(key, nil)
	if err := r.client.delete(ctx, r.namespace, headName(key)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("withdrawing record of %s from the hub: %w", key, err)
	}
	r.setWritten(key, "")
	sel := labels.SelectorFromSet(labels.Set{LabelRecord: recordLabel(key), LabelKind: KindChunk}).String()
	list, err := r.client.list(ctx, r.namespace, sel)
	if err != nil {
		return fmt.Errorf("listing chunks of the record of %s: %w", key, err)
	}
	for _, obj := range list.Items {
		if obj.Spec.Type != hubv1alpha1.Chunk || obj.Spec.Service != key.String() {
			continue
		}
		if err := r.client.delete(ctx, r.namespace, obj.Name); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting chunk %s of the record of %s: %w", obj.Name, key, err)
		}
	}
	log.FromContext(ctx).V(1).Info("Withdrew record", "clusterSet", r.setID, "cluster", r.clusterID, "namespace", key.Namespace, "service", key.Name)
	return nil
}

// Heartbeat renews this cluster's heartbeat, creating it the first time.
func (r *Registry) Heartbeat(ctx context.Context) error {
	// See Publish: the cache first, the hub after a conflict. Before the
	// hub accepted any request, reading from it shows which token it
	// accepts, which the heartbeat reports.
	fresh := r.credential.unknown()
	return retry.OnError(retry.DefaultBackoff, staleWrite, func() error {
		now := metav1.NewMicroTime(r.clock.Now())
		want := r.object(HeartbeatName, hubv1alpha1.Heartbeat, registry.ServiceKey{})
		want.Spec.RenewTime = &now
		want.Spec.LeaseDurationSeconds = ptr.To(int32(r.leaseDuration / time.Second))
		want.Spec.HolderIdentity = r.holder
		cur, err := r.readOwn(ctx, HeartbeatName, fresh)
		fresh = true
		// The token of an earlier request: the read just made when it
		// went to the hub. The write below carries the same token, unless
		// the file changed in between; the next heartbeat says so.
		want.Spec.Credential = r.credential.Accepted()
		switch {
		case apierrors.IsNotFound(err):
			err = r.client.create(ctx, want)
		case err != nil:
			return fmt.Errorf("reading heartbeat from the hub: %w", err)
		default:
			want.ResourceVersion = cur.ResourceVersion
			err = r.client.update(ctx, want)
		}
		if err != nil {
			return fmt.Errorf("renewing heartbeat in the hub: %w", err)
		}
		return nil
	})
}

// Liveness returns each member's last renew time. It reads the watched
// heartbeats once Run has synced them, and lists them from the hub before
// that.
func (r *Registry) Liveness(ctx context.Context) (map[string]registry.Heartbeat, error) {
	objs, ok := r.view.objects()
	if !ok {
		var err error
		if objs, err = r.listHeartbeats(ctx); err != nil {
			return nil, err
		}
	}
	out := map[string]registry.Heartbeat{}
	for _, hb := range r.heartbeats(objs) {
		out[hb.ClusterID] = hb
	}
	return out, nil
}

// listHeartbeats lists the clusterset's heartbeat objects from the hub.
func (r *Registry) listHeartbeats(ctx context.Context) ([]*hubv1alpha1.ClusterSetRecord, error) {
	sel := labels.SelectorFromSet(labels.Set{LabelClusterSet: r.setLabel, LabelKind: KindHeartbeat}).String()
	list, err := r.client.list(ctx, metav1.NamespaceAll, sel)
	if err != nil {
		return nil, fmt.Errorf("listing heartbeats from the hub: %w", err)
	}
	objs := make([]*hubv1alpha1.ClusterSetRecord, len(list.Items))
	for i := range list.Items {
		objs[i] = &list.Items[i]
	}
	return objs, nil
}

// heartbeats returns the heartbeats among objs that are in the namespace of
// the cluster they name, in the order of objs.
func (r *Registry) heartbeats(objs []*hubv1alpha1.ClusterSetRecord) []registry.Heartbeat {
	var out []registry.Heartbeat
	for _, obj := range objs {
		if obj.Name != HeartbeatName || obj.Spec.Type != hubv1alpha1.Heartbeat || obj.Spec.RenewTime == nil {
			continue
		}
		cluster, ok := r.owner(obj)
		if !ok {
			continue
		}
		hb := registry.Heartbeat{ClusterID: cluster, RenewTime: obj.Spec.RenewTime.Time, Holder: obj.Spec.HolderIdentity}
		if d := obj.Spec.LeaseDurationSeconds; d != nil {
			hb.LeaseDuration = time.Duration(*d) * time.Second
		}
		out = append(out, hb)
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
func (r *Registry) owner(obj *hubv1alpha1.ClusterSetRecord) (string, bool) {
	if obj.Spec.ClusterSetID != r.setID {
		return "", false
	}
	cluster := obj.Spec.ClusterID
	if cluster == "" || obj.Namespace != NamespaceName(r.setID, cluster) {
		return "", false
	}
	return cluster, true
}

// readOwn returns one of this member's objects: from the view's cache when
// fresh is false and the view has synced (NotFound when the cache has none),
// else from the hub.
func (r *Registry) readOwn(ctx context.Context, name string, fresh bool) (*hubv1alpha1.ClusterSetRecord, error) {
	if !fresh {
		if obj, ok, synced := r.view.cached(r.namespace, name); synced {
			if !ok {
				return nil, apierrors.NewNotFound(hubv1alpha1.GroupVersion.WithResource(hubv1alpha1.Resource).GroupResource(), name)
			}
			return obj, nil
		}
	}
	return r.client.get(ctx, r.namespace, name)
}

// staleWrite reports whether a write failed because what it was based on was
// not current: it is then redone from a fresh read.
func staleWrite(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
}
