package hub

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/go-logr/logr"

	"github.com/clusterset/clusterset/pkg/registry"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

// view is the decoded, assembled records of a clusterset, kept current by
// one informer over its ClusterSetRecords in the hub.
type view struct {
	r *Registry

	mu      sync.RWMutex
	records map[registry.ServiceKey]map[string]registry.Record // key → cluster ID → record

	synced   atomic.Pointer[func() bool]
	informer atomic.Pointer[cache.SharedIndexInformer]
}

func newView(r *Registry) *view {
	return &view{r: r, records: map[registry.ServiceKey]map[string]registry.Record{}}
}

// Run watches the clusterset's records and heartbeats in the hub until ctx
// ends. The informer retries every failure with backoff and keeps its cache,
// so a hub that cannot be reached leaves the view as it was.
func (r *Registry) Run(ctx context.Context, onChange func(registry.ServiceKey)) error {
	logger := log.FromContext(ctx).WithValues("clusterSet", r.setID, "cluster", r.clusterID)
	lw := cache.NewFilteredListWatchFromClient(r.client.rest, hubv1alpha1.Resource, metav1.NamespaceAll,
		func(o *metav1.ListOptions) { o.LabelSelector = r.selector() })
	inf, err := newRecordInformer(lw)
	if err != nil {
		return err
	}
	if err := inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		logger.Info("Watching the hub failed; retrying and keeping the current view", "error", err.Error())
	}); err != nil {
		return err
	}
	v := r.view
	store := inf.GetStore()
	handle := func(obj any) { v.handle(logger, store, obj, onChange) }
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    handle,
		UpdateFunc: func(_, obj any) { handle(obj) },
		DeleteFunc: handle,
	})
	if err != nil {
		return err
	}
	hasSynced := reg.HasSynced
	v.synced.Store(&hasSynced)
	v.informer.Store(&inf)

	logger.V(1).Info("Watching the hub", "selector", r.selector())
	repairsDone := make(chan struct{})
	go func() { defer close(repairsDone); r.runRepairs(log.IntoContext(ctx, logger), onChange) }()
	inf.RunWithContext(ctx)
	<-repairsDone
	return nil
}

// cached returns a copy of the cached object namespace/name; synced is false
// while the informer has not filled its cache, and then nothing is known.
func (v *view) cached(namespace, name string) (obj *hubv1alpha1.ClusterSetRecord, found, synced bool) {
	inf, hasSynced := v.informer.Load(), v.synced.Load()
	if inf == nil || hasSynced == nil || !(*hasSynced)() {
		return nil, false, false
	}
	item, found, err := (*inf).GetStore().GetByKey(namespace + "/" + name)
	if err != nil || !found {
		return nil, false, err == nil
	}
	rec, ok := item.(*hubv1alpha1.ClusterSetRecord)
	if !ok {
		return nil, false, false
	}
	return rec.DeepCopy(), true, true
}

// newRecordInformer returns an informer of the ClusterSetRecords that lw
// lists and watches, which keeps them without their managed fields: those
// are a good part of a small object and of no use here.
func newRecordInformer(lw cache.ListerWatcher) (cache.SharedIndexInformer, error) {
	inf := cache.NewSharedIndexInformer(lw, &hubv1alpha1.ClusterSetRecord{}, 0, cache.Indexers{})
	if err := inf.SetTransform(crcache.TransformStripManagedFields()); err != nil {
		return nil, err
	}
	return inf, nil
}

// handle re-assembles the record that a changed head or chunk belongs to.
// The informer's store already holds the change, and every other change
// before it.
func (v *view) handle(logger logr.Logger, store cache.Store, obj any, onChange func(registry.ServiceKey)) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	rec, ok := obj.(*hubv1alpha1.ClusterSetRecord)
	if !ok || (rec.Spec.Type != hubv1alpha1.Head && rec.Spec.Type != hubv1alpha1.Chunk) {
		return
	}
	cluster, ok := v.r.owner(rec)
	if !ok {
		logger.V(1).Info("Ignoring a record that is not in the namespace of the cluster it names", "clusterSetRecord", rec.Namespace+"/"+rec.Name)
		return
	}
	if err := registry.ImportableClusterID(cluster); err != nil {
		// Join and New refuse such IDs, but the hub's admin can write any
		// record in any namespace; its slices could not be written.
		logger.Info("Ignoring a record whose cluster ID cannot be imported", "clusterSetRecord", rec.Namespace+"/"+rec.Name, "reason", err.Error())
		return
	}
	ns, name, ok := strings.Cut(rec.Spec.Service, "/")
	key := registry.ServiceKey{Namespace: ns, Name: name}
	if !ok || validateKey(key) != nil || (rec.Name != headName(key) && !strings.HasPrefix(rec.Name, headName(key)+".")) {
		logger.Info("Ignoring a record whose service does not match its name", "clusterSetRecord", rec.Namespace+"/"+rec.Name)
		return
	}
	if v.assemble(logger.WithValues("namespace", key.Namespace, "service", key.Name, "sourceCluster", cluster), store, cluster, key, rec.Name) {
		onChange(key)
	}
	if cluster == v.r.clusterID && rec.Name == headName(key) {
		v.r.headChanged(key)
	}
}

// assemble reads cluster's record of key from the store into the view, after
// a change of its object named changed. It reports whether the view may have
// changed. When the head names chunks that are not all in the store (yet),
// the view keeps the record it had.
func (v *view) assemble(logger logr.Logger, store cache.Store, cluster string, key registry.ServiceKey, changed string) bool {
	ns := NamespaceName(v.r.setID, cluster)
	obj, exists, err := store.GetByKey(ns + "/" + headName(key))
	if err != nil {
		logger.Error(err, "Reading the record head from the informer cache")
		return false
	}
	if !exists {
		return v.set(key, cluster, nil)
	}
	head := obj.(*hubv1alpha1.ClusterSetRecord)
	if head.Spec.Type != hubv1alpha1.Head {
		logger.Info("Keeping the last record: the record head is not of type Head", "type", head.Spec.Type)
		return false
	}
	h, err := decodeHead(head.Spec.Record)
	if err != nil {
		logger.Error(err, "Keeping the last record: cannot read the record head")
		return false
	}
	if changed != head.Name && !namesChunk(h, key, changed) {
		// A chunk of another version (the next one, written before its
		// head; the last one, deleted after it) changes nothing here.
		// Reading the record at each of them would make every new version
		// of a record of n chunks cost 2n readings of it.
		return false
	}
	// Every chunk must be there before any is decoded: a head written
	// before its chunks would otherwise have the first chunks decoded
	// again at the arrival of each next one.
	raws := []string{head.Spec.Endpoints}
	for i := 1; i < h.Chunks; i++ {
		obj, exists, err := store.GetByKey(ns + "/" + chunkName(key, h.Digest, i))
		if err != nil || !exists {
			logger.V(1).Info("Keeping the last record: a chunk of the newest version is missing", "chunk", i, "digest", h.Digest)
			return false
		}
		raws = append(raws, obj.(*hubv1alpha1.ClusterSetRecord).Spec.Endpoints)
	}
	var eps []registry.Endpoint
	var faults endpointFaults
	for i, raw := range raws {
		c, err := decodeChunk(raw)
		if err == nil && (c.Digest != h.Digest || c.Index != i) {
			err = errChunkMismatch
		}
		if err == nil {
			eps, err = appendEndpoints(eps, c, faults.add)
		}
		if err != nil {
			logger.Error(err, "Keeping the last record: cannot read a chunk", "chunk", i, "digest", h.Digest)
			return false
		}
	}
	rec := registry.Record{
		ClusterSetID: v.r.setID,
		ClusterID:    cluster,
		Namespace:    key.Namespace,
		Name:         key.Name,
		Spec:         fromWireSpec(&h.Spec),
		Endpoints:    eps,
		Changed:      h.Changed,
	}
	if err := rec.Spec.ValidatePorts(); err != nil {
		logger.Error(err, "Keeping the last record: the record's service ports cannot be imported")
		return false
	}
	faults.log(logger)
	return v.set(key, cluster, &rec)
}

// endpointFaults counts what reading a record left out of its endpoints, so
// that a record reports it in one log line per reading, however many
// endpoints its writer got wrong: a chunk can hold thousands.
type endpointFaults struct {
	dropped, cleared           int
	firstDropped, firstCleared error
}

func (f *endpointFaults) add(err error, dropped bool) {
	if dropped {
		if f.dropped++; f.firstDropped == nil {
			f.firstDropped = err
		}
	} else if f.cleared++; f.firstCleared == nil {
		f.firstCleared = err
	}
}

func (f *endpointFaults) log(logger logr.Logger) {
	if f.dropped > 0 {
		logger.Error(f.firstDropped, "Leaving out endpoints that cannot be imported; the error is the first one's", "endpoints", f.dropped)
	}
	if f.cleared > 0 {
		logger.Error(f.firstCleared, "Importing endpoints without the hostname or node name that cannot be imported; the error is the first one's", "endpoints", f.cleared)
	}
}

// namesChunk reports whether name is one of the chunks after chunk 0 that
// head h of key names.
func namesChunk(h *wireHead, key registry.ServiceKey, name string) bool {
	index, ok := strings.CutPrefix(name, headName(key)+"."+h.Digest+".")
	if !ok {
		return false
	}
	i, err := strconv.Atoi(index)
	return err == nil && i >= 1 && i < h.Chunks && name == chunkName(key, h.Digest, i)
}

type chunkMismatch struct{}

func (chunkMismatch) Error() string { return "chunk belongs to another record version or position" }

var errChunkMismatch error = chunkMismatch{}

// set stores rec (nil: removes it) and reports whether the view may have
// changed.
func (v *view) set(key registry.ServiceKey, cluster string, rec *registry.Record) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	byCluster := v.records[key]
	if rec == nil {
		if _, ok := byCluster[cluster]; !ok {
			return false
		}
		delete(byCluster, cluster)
		if len(byCluster) == 0 {
			delete(v.records, key)
		}
		return true
	}
	if byCluster == nil {
		byCluster = map[string]registry.Record{}
		v.records[key] = byCluster
	}
	byCluster[cluster] = *rec
	return true
}

func (v *view) hasSynced() bool {
	f := v.synced.Load()
	return f != nil && (*f)()
}

// objects returns every watched ClusterSetRecord once they have synced.
func (v *view) objects() ([]*hubv1alpha1.ClusterSetRecord, bool) {
	inf := v.informer.Load()
	if inf == nil || !(*inf).HasSynced() {
		return nil, false
	}
	var out []*hubv1alpha1.ClusterSetRecord
	for _, obj := range (*inf).GetStore().List() {
		if rec, ok := obj.(*hubv1alpha1.ClusterSetRecord); ok {
			out = append(out, rec)
		}
	}
	return out, true
}

// HasSynced reports whether every record in the hub at start has been read.
func (r *Registry) HasSynced() bool { return r.view.hasSynced() }

// Records returns copies of every cluster's record of key, sorted by cluster ID.
func (r *Registry) Records(key registry.ServiceKey) ([]registry.Record, error) {
	if !r.view.hasSynced() {
		return nil, registry.ErrNotSynced
	}
	r.view.mu.RLock()
	defer r.view.mu.RUnlock()
	byCluster := r.view.records[key]
	out := make([]registry.Record, 0, len(byCluster))
	for _, rec := range byCluster {
		out = append(out, *rec.DeepCopy())
	}
	slices.SortFunc(out, func(a, b registry.Record) int { return strings.Compare(a.ClusterID, b.ClusterID) })
	return out, nil
}

// Keys returns every service with at least one record.
func (r *Registry) Keys() ([]registry.ServiceKey, error) {
	if !r.view.hasSynced() {
		return nil, registry.ErrNotSynced
	}
	r.view.mu.RLock()
	defer r.view.mu.RUnlock()
	keys := make([]registry.ServiceKey, 0, len(r.view.records))
	for k := range r.view.records {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, registry.CompareKeys)
	return keys, nil
}
