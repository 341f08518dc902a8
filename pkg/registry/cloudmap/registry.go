package cloudmap

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	sdtypes "github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/clusterset/clusterset/pkg/registry"
)

const (
	// createdByTag marks Cloud Map services (and namespaces) that a
	// clusterset controller created; only those are ever deleted.
	createdByTag = "clusterset.k8s.io/created-by"
	// heartbeatService is the Cloud Map service holding one heartbeat
	// instance per cluster, in Options.SystemNamespace.
	heartbeatService = "heartbeat"
	// changesService is the Cloud Map service holding the change beacons:
	// one instance per clusterset, cluster and namespace, re-registered by
	// that cluster after each of its writes in the namespace.
	changesService = "changes"
	description    = "Created by clusterset-controller (Kubernetes Multi-Cluster Services); deleted by it when empty."
)

// DefaultPollInterval and DefaultFullResyncPeriod are the defaults of
// Options.PollInterval and Options.FullResyncPeriod, and of the flags that
// set them.
const (
	DefaultPollInterval     = time.Second
	DefaultFullResyncPeriod = 30 * time.Minute
)

// Options configures a Cloud Map registry.
type Options struct {
	// ClusterSetID and ClusterID bind the registry to one cluster (required).
	ClusterSetID string
	ClusterID    string
	// Endpoint overrides the Cloud Map endpoint (moto in tests, a VPC
	// endpoint). AWS_ENDPOINT_URL, read by the AWS config loader, works too.
	Endpoint string
	// PollInterval is how often Run checks for changes: one
	// DiscoverInstancesRevision per poll when nothing changed. Default 1s,
	// about 2.6 million calls a month (docs/configuration.md).
	PollInterval time.Duration
	// FullResyncPeriod bounds how long an unchanged DiscoverInstancesRevision
	// is trusted: every service is read in full at least this often. It
	// heals what the change beacons cannot announce (a writer that died
	// between its write and its beacon, a hand edit) and is the only idle
	// cost that grows with the number of services. Default 30m.
	FullResyncPeriod time.Duration
	// ForeignSweepPeriod is how often the services of the account are
	// listed (ListNamespaces, ListServices) and checked for changes (one
	// DiscoverInstancesRevision each): every service once the view holds a
	// record of another controller, else only the services new to the view.
	// Writes by clusterset controllers are seen at the next poll through the
	// change beacons; writes by anyone else (the AWS Cloud Map MCS
	// controller, people) bump no beacon and are seen at this sweep, or at
	// the full resync when they are the first of that writer and go into a
	// service that exists. Default 1m; a negative value disables the sweep,
	// leaving FullResyncPeriod.
	ForeignSweepPeriod time.Duration
	// ForeignPollInterval is how often, once the view holds a record written
	// by another controller (mixed clustersets, during a migration from the
	// AWS Cloud Map MCS controller), the namespaces holding such records
	// and any new namespace or service are checked, so that those writes
	// arrive within this interval instead of ForeignSweepPeriod. A
	// clusterset of clusterset-controllers only never pays for it. Checked
	// at polls, so PollInterval bounds it from below. Default 10s; a
	// negative value disables it.
	ForeignPollInterval time.Duration
	// SystemNamespace is the Cloud Map namespace holding the heartbeats and
	// the change beacons. Its
	// default, "clusterset.system", cannot be a Kubernetes namespace name, so
	// no MCS controller imports it. Default "clusterset.system".
	SystemNamespace string
	// LeaseDuration is written into the heartbeat (HEARTBEAT_LEASE_SECONDS)
	// for tools: how long this cluster means one renewal to last. Readers
	// of the registry judge liveness by the renew time and their own grace
	// period. Default registry.DefaultLeaseDuration.
	LeaseDuration time.Duration
	// MaxInstancesPerService and MaxInstancesPerNamespace are the account's
	// Cloud Map quotas. Defaults 1000 and 2000 (the AWS defaults).
	MaxInstancesPerService   int
	MaxInstancesPerNamespace int
	// MaxAttempts is the number of attempts per API call (throttling, 5xx and
	// network errors are retried). Default 10.
	MaxAttempts int
	// RetryBaseDelay and RetryMaxDelay shape the jittered exponential
	// backoff between attempts. Defaults 200ms and 20s.
	RetryBaseDelay time.Duration
	RetryMaxDelay  time.Duration
	// Concurrency bounds parallel API calls of one Publish or one poll.
	// Default 4.
	Concurrency int
	// RepairDelay is how long after its last write of a service the view
	// may repair this cluster's instances there when they differ from what
	// was written (DiscoverInstances lags writes by seconds). Default 30s.
	RepairDelay time.Duration
	// WaitForOperations makes Publish and Withdraw wait (GetOperation) until
	// Cloud Map has applied each asynchronous RegisterInstance and
	// DeregisterInstance. Off by default: it doubles the calls, and the view
	// shows the result anyway.
	WaitForOperations bool
	// MotoWorkarounds makes Publish deregister an instance before
	// registering its new version: moto (5.2.1) appends a second copy on
	// re-registration instead of replacing it. Real Cloud Map replaces, so
	// leave this off in production (it would open a gap per update).
	MotoWorkarounds bool
	// Logger defaults to controller-runtime's logger named "cloudmap".
	Logger logr.Logger
}

func (o *Options) setDefaults() {
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.FullResyncPeriod <= 0 {
		o.FullResyncPeriod = DefaultFullResyncPeriod
	}
	if o.ForeignSweepPeriod == 0 {
		o.ForeignSweepPeriod = time.Minute
	}
	if o.ForeignPollInterval == 0 {
		o.ForeignPollInterval = 10 * time.Second
	}
	if o.SystemNamespace == "" {
		o.SystemNamespace = "clusterset.system"
	}
	if o.LeaseDuration <= 0 {
		o.LeaseDuration = registry.DefaultLeaseDuration
	}
	if o.MaxInstancesPerService <= 0 {
		o.MaxInstancesPerService = 1000
	}
	if o.MaxInstancesPerNamespace <= 0 {
		o.MaxInstancesPerNamespace = 2000
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 10
	}
	if o.RetryBaseDelay <= 0 {
		o.RetryBaseDelay = 200 * time.Millisecond
	}
	if o.RetryMaxDelay <= 0 {
		o.RetryMaxDelay = 20 * time.Second
	}
	if o.RepairDelay <= 0 {
		o.RepairDelay = 30 * time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.Logger.GetSink() == nil {
		o.Logger = ctrllog.Log.WithName("cloudmap")
	}
}

// QuotaError is returned by Publish when a record would exceed a Cloud Map
// instance quota; nothing of the record is written.
type QuotaError struct {
	Key registry.ServiceKey
	// Scope is "service" or "namespace".
	Scope string
	Want  int
	Limit int
	Err   error // the Cloud Map error, when Cloud Map reported it
}

func (e *QuotaError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("cloudmap: service %s: Cloud Map instance quota exceeded: %v", e.Key, e.Err)
	}
	return fmt.Sprintf("cloudmap: service %s needs %d Cloud Map instances in its %s, the quota is %d (one instance per endpoint and port; raise the AWS Cloud Map quota, then --cloudmap-max-instances-per-%s)",
		e.Key, e.Want, e.Scope, e.Limit, e.Scope)
}

func (e *QuotaError) Unwrap() error { return e.Err }

// Registry is the Cloud Map backend of registry.Registry.
type Registry struct {
	opts  Options
	api   api
	calls callCounter
	log   logr.Logger

	mu         sync.Mutex
	namespaces map[string]nsInfo                 // by name; first listed wins
	svcNS      map[string]string                 // service ID -> namespace ID (immutable)
	services   map[[2]string]svcInfo             // (namespace ID, name) -> service
	published  map[registry.ServiceKey]*pubState // what this cluster wrote, per key
	keyLocks   map[registry.ServiceKey]*sync.Mutex
	createMu   sync.Mutex // serialises namespace/service creation in this process

	beacons map[string]*beaconState // by namespace: this cluster's change beacons
	writer  string                  // CHANGE_WRITER of this process's beacons

	view view
	poke chan struct{}

	pollMu sync.Mutex // held for a whole poll
	ps     pollState  // guarded by pollMu
}

var _ registry.Registry = (*Registry)(nil)

// New returns a Cloud Map registry using cfg (credentials, region; see
// config.LoadDefaultConfig).
func New(cfg aws.Config, opts Options) (*Registry, error) {
	if opts.ClusterSetID == "" || opts.ClusterID == "" {
		return nil, errors.New("cloudmap: ClusterSetID and ClusterID are required")
	}
	opts.setDefaults()
	r := &Registry{
		opts:       opts,
		log:        opts.Logger.WithValues("clusterset", opts.ClusterSetID, "cluster", opts.ClusterID),
		namespaces: map[string]nsInfo{},
		svcNS:      map[string]string{},
		services:   map[[2]string]svcInfo{},
		published:  map[registry.ServiceKey]*pubState{},
		keyLocks:   map[registry.ServiceKey]*sync.Mutex{},
		beacons:    map[string]*beaconState{},
		writer:     rand.Text()[:12],
		poke:       make(chan struct{}, 1),
	}
	r.view.init()
	r.ps.init()
	r.api = api{c: newClient(cfg, &r.opts, &r.calls)}
	return r, nil
}

func (r *Registry) lockKey(key registry.ServiceKey) func() {
	r.mu.Lock()
	l := r.keyLocks[key]
	if l == nil {
		l = &sync.Mutex{}
		r.keyLocks[key] = l
	}
	r.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (r *Registry) wake() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// refreshNamespaces lists the account's namespaces into the cache.
func (r *Registry) refreshNamespaces(ctx context.Context) ([]nsInfo, error) {
	list, err := r.api.listNamespaces(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]nsInfo{}
	var uniq []nsInfo
	for _, n := range list {
		if _, dup := byName[n.Name]; dup {
			continue // moto allows duplicate names; DiscoverInstances uses the first
		}
		byName[n.Name] = n
		uniq = append(uniq, n)
	}
	r.mu.Lock()
	r.namespaces = byName
	r.mu.Unlock()
	return uniq, nil
}

// namespace finds the Cloud Map namespace of name, creating an HTTP
// namespace when it is missing and create is set. An existing namespace of
// any type (HTTP, private DNS) is used as it is.
func (r *Registry) namespace(ctx context.Context, name string, create bool) (nsInfo, bool, error) {
	r.mu.Lock()
	n, ok := r.namespaces[name]
	r.mu.Unlock()
	if ok {
		return n, true, nil
	}
	if _, err := r.refreshNamespaces(ctx); err != nil {
		return nsInfo{}, false, err
	}
	r.mu.Lock()
	n, ok = r.namespaces[name]
	r.mu.Unlock()
	if ok || !create {
		return n, ok, nil
	}

	r.createMu.Lock()
	defer r.createMu.Unlock()
	out, err := r.api.c.CreateHttpNamespace(ctx, &sd.CreateHttpNamespaceInput{
		Name:             aws.String(name),
		Description:      aws.String(description),
		CreatorRequestId: aws.String(requestID("ns", r.opts.ClusterID, name)),
		Tags:             []sdtypes.Tag{{Key: aws.String(createdByTag), Value: aws.String(controllerName)}},
	})
	var created string
	switch {
	case isCode(err, "NamespaceAlreadyExists", "DuplicateRequest"):
	case err != nil:
		return nsInfo{}, false, fmt.Errorf("cloudmap: create namespace %s: %w", name, err)
	default:
		targets, err := r.api.waitOperation(ctx, aws.ToString(out.OperationId))
		if err != nil {
			return nsInfo{}, false, fmt.Errorf("cloudmap: create namespace %s: %w", name, err)
		}
		created = targets[string(sdtypes.OperationTargetTypeNamespace)]
		r.log.Info("created Cloud Map namespace", "namespace", name, "id", created)
	}
	if _, err := r.refreshNamespaces(ctx); err != nil {
		return nsInfo{}, false, err
	}
	r.mu.Lock()
	n, ok = r.namespaces[name]
	r.mu.Unlock()
	if !ok {
		return nsInfo{}, false, fmt.Errorf("cloudmap: namespace %s not listed after creation", name)
	}
	if created != "" && created != n.ID {
		// Another cluster created the same name at the same moment (only
		// moto allows that): keep the first one, drop ours while it is empty.
		_, _ = r.api.c.DeleteNamespace(ctx, &sd.DeleteNamespaceInput{Id: aws.String(created)})
	}
	return n, true, nil
}

// namespaceOf returns the namespace ID of a service (cached for good).
func (r *Registry) namespaceOf(ctx context.Context, serviceID string) (string, error) {
	r.mu.Lock()
	ns, ok := r.svcNS[serviceID]
	r.mu.Unlock()
	if ok {
		return ns, nil
	}
	out, err := r.api.c.GetService(ctx, &sd.GetServiceInput{Id: aws.String(serviceID)})
	if err != nil {
		return "", err
	}
	ns = aws.ToString(out.Service.NamespaceId)
	r.mu.Lock()
	r.svcNS[serviceID] = ns
	r.mu.Unlock()
	return ns, nil
}

// findService lists the services of ns and returns the first named name.
func (r *Registry) findService(ctx context.Context, ns nsInfo, name string) (svcInfo, bool, error) {
	list, err := r.api.listServices(ctx, ns.ID)
	if err != nil {
		return svcInfo{}, false, err
	}
	for _, s := range list {
		if s.Name != name {
			continue
		}
		nsID, err := r.namespaceOf(ctx, s.ID)
		if err != nil {
			if isCode(err, "ServiceNotFound") {
				continue
			}
			return svcInfo{}, false, err
		}
		if nsID != ns.ID {
			continue
		}
		s.NamespaceID = nsID
		r.mu.Lock()
		r.services[[2]string{ns.ID, name}] = s
		r.mu.Unlock()
		return s, true, nil
	}
	return svcInfo{}, false, nil
}

// service finds (and with create, creates) the Cloud Map service name in ns.
// Services are created without DNS records: discovery is through the API
// (DiscoverInstances), and instances without an IP (markers) stay valid.
func (r *Registry) service(ctx context.Context, ns nsInfo, name string, create bool) (svcInfo, bool, error) {
	r.mu.Lock()
	s, ok := r.services[[2]string{ns.ID, name}]
	r.mu.Unlock()
	if ok {
		return s, true, nil
	}
	s, ok, err := r.findService(ctx, ns, name)
	if err != nil || ok || !create {
		return s, ok, err
	}

	r.createMu.Lock()
	defer r.createMu.Unlock()
	out, err := r.api.c.CreateService(ctx, &sd.CreateServiceInput{
		Name:             aws.String(name),
		NamespaceId:      aws.String(ns.ID),
		Description:      aws.String(description),
		CreatorRequestId: aws.String(requestID("svc", r.opts.ClusterID, ns.ID+"/"+name)),
		Tags:             []sdtypes.Tag{{Key: aws.String(createdByTag), Value: aws.String(controllerName)}},
	})
	var created string
	switch {
	case isCode(err, "ServiceAlreadyExists", "DuplicateRequest"):
	case err != nil:
		return svcInfo{}, false, fmt.Errorf("cloudmap: create service %s/%s: %w", ns.Name, name, err)
	default:
		created = aws.ToString(out.Service.Id)
		r.mu.Lock()
		r.svcNS[created] = ns.ID
		r.mu.Unlock()
		r.log.Info("created Cloud Map service", "namespace", ns.Name, "service", name, "id", created)
	}
	s, ok, err = r.findService(ctx, ns, name)
	if err != nil {
		return svcInfo{}, false, err
	}
	if !ok {
		return svcInfo{}, false, fmt.Errorf("cloudmap: service %s/%s not listed after creation", ns.Name, name)
	}
	if created != "" && created != s.ID {
		// Concurrent creation of the same name (moto only): keep the first.
		_, _ = r.api.c.DeleteService(ctx, &sd.DeleteServiceInput{Id: aws.String(created)})
	}
	return s, true, nil
}

func (r *Registry) forgetNamespace(name string) {
	r.mu.Lock()
	delete(r.namespaces, name)
	r.mu.Unlock()
}

func (r *Registry) forgetService(ns nsInfo, name string) {
	r.mu.Lock()
	delete(r.services, [2]string{ns.ID, name})
	r.mu.Unlock()
}

// requestID is a CreatorRequestId: unique per attempt, so that a retry
// after a deletion is not mistaken for a duplicate request.
func requestID(kind, cluster, name string) string {
	id := fmt.Sprintf("%s-%s-%d", kind, boundedID("", cluster+"/"+name), time.Now().UnixNano())
	if len(id) > 64 {
		id = id[len(id)-64:]
	}
	return id
}

func (r *Registry) ours(a map[string]string) bool {
	return clusterSetOf(a) == r.opts.ClusterSetID && a[attrClusterID] == r.opts.ClusterID
}

// Publish makes rec this cluster's record of its service. It compares the
// record with what this cluster has registered and only registers the
// instances that are new or changed and deregisters the ones that are gone.
func (r *Registry) Publish(ctx context.Context, rec *registry.Record) error {
	if rec.ClusterSetID != r.opts.ClusterSetID || rec.ClusterID != r.opts.ClusterID {
		return fmt.Errorf("cloudmap: record of %s/%s published through the registry of %s/%s",
			rec.ClusterSetID, rec.ClusterID, r.opts.ClusterSetID, r.opts.ClusterID)
	}
	if rec.Namespace == "" || rec.Name == "" {
		return errors.New("cloudmap: record without namespace or name")
	}
	if rec.Namespace == r.opts.SystemNamespace {
		return fmt.Errorf("cloudmap: namespace %s is reserved for heartbeats", rec.Namespace)
	}
	key := rec.Key()
	defer r.lockKey(key)()

	// Validate before any side effect: a bad record creates nothing.
	if _, err := encodeRecord(rec, nil, nil); err != nil {
		return err
	}
	err := r.publish(ctx, rec)
	if isCode(err, "ServiceNotFound", "NamespaceNotFound") {
		// Another cluster deleted the service (or someone the namespace)
		// after its last instance went: the caches were dropped, go again.
		err = r.publish(ctx, rec)
	}
	return err
}

func (r *Registry) publish(ctx context.Context, rec *registry.Record) error {
	key := rec.Key()
	ns, _, err := r.namespace(ctx, rec.Namespace, true)
	if err != nil {
		return err
	}
	svc, _, err := r.service(ctx, ns, rec.Name, true)
	if err != nil {
		return err
	}

	r.mu.Lock()
	var cur map[string]instance
	if p := r.published[key]; p != nil {
		cur = p.insts
	}
	r.mu.Unlock()
	if cur == nil {
		// First publish of this key since start (or after an error): read
		// what we hold from the control plane, which is consistent.
		insts, err := r.api.listInstances(ctx, svc.ID)
		if err != nil {
			if isCode(err, "ServiceNotFound") {
				r.forgetService(ns, rec.Name)
			}
			if isCode(err, "NamespaceNotFound") {
				r.forgetNamespace(ns.Name)
			}
			return err
		}
		insts, _ = dedupe(insts)
		cur = map[string]instance{}
		for _, in := range insts {
			if r.ours(in.Attrs) {
				cur[in.ID] = in
			}
		}
	}
	return r.apply(ctx, ns, svc, rec, cur, false)
}

// pubState is a record this cluster published and the instances it wrote
// for it.
type pubState struct {
	rec   registry.Record
	insts map[string]instance
	at    time.Time
}

// apply writes the difference between the instances of rec and cur (what
// this cluster holds in the service).
//
// When repairing, cur comes from the eventually consistent view, so an
// instance missing from it may still exist: with MotoWorkarounds it is
// deregistered before being registered again, or moto would keep two copies.
func (r *Registry) apply(ctx context.Context, ns nsInfo, svc svcInfo, rec *registry.Record, cur map[string]instance, repairing bool) error {
	key := rec.Key()
	log := r.log.WithValues("namespace", key.Namespace, "service", key.Name)
	held := map[string]string{}
	for id, in := range cur {
		a := in.Attrs
		addr := a[attrIPv4]
		if addr == "" {
			addr = a[attrIPv6]
		}
		if addr == "" || a[attrPort] == "" {
			continue
		}
		held[portKey(corev1Protocol(a[attrEPProtocol]), addr, atoi32(a[attrPort]))] = id
	}
	others := r.view.otherInstances(key, r.opts.ClusterID)
	desired, err := encodeRecord(rec, held, others)
	if err != nil {
		return err
	}
	if n := len(desired) + len(others); n > r.opts.MaxInstancesPerService {
		return &QuotaError{Key: key, Scope: "service", Want: n, Limit: r.opts.MaxInstancesPerService}
	}
	if n := len(desired) + r.namespaceLoad(key); n > r.opts.MaxInstancesPerNamespace {
		return &QuotaError{Key: key, Scope: "namespace", Want: n, Limit: r.opts.MaxInstancesPerNamespace}
	}

	var reg []instance
	for id, in := range desired {
		if old, ok := cur[id]; !ok || !sameAttrs(old.Attrs, in.Attrs) {
			reg = append(reg, in)
		}
	}
	var dereg []string
	for id := range cur {
		if _, ok := desired[id]; !ok {
			dereg = append(dereg, id)
		}
	}
	mid := markerID(rec.ClusterSetID, rec.ClusterID)
	if len(reg) == 1 && len(dereg) == 0 && reg[0].ID == mid && onlyChangedTimeDiffers(cur[mid].Attrs, reg[0].Attrs) {
		// Same content, newer Changed (a republish after a restart): the
		// record did not change, so neither does its time (registry.Record).
		// What is remembered as published keeps the held time too, so that
		// a later repair does not write a new one.
		desired[mid] = cur[mid]
		reg = nil
		kept := *rec
		kept.Changed = recordChanged(cur[mid].Attrs)
		rec = &kept
	}
	done := func() {
		r.mu.Lock()
		r.published[key] = &pubState{rec: *rec.DeepCopy(), insts: desired, at: time.Now()}
		r.mu.Unlock()
	}
	if len(reg) == 0 && len(dereg) == 0 {
		done()
		return nil
	}

	fail := func(err error) error {
		r.mu.Lock()
		delete(r.published, key)
		r.mu.Unlock()
		r.view.markDirty(key)
		// Some writes may have gone through: tell the other clusters.
		r.changed(ctx, key, unknownDigest)
		r.wake()
		if isCode(err, "ResourceLimitExceeded") {
			return &QuotaError{Key: key, Scope: "service", Err: err}
		}
		if isCode(err, "ServiceNotFound") {
			r.forgetService(ns, rec.Name)
		}
		return fmt.Errorf("cloudmap: publish %s: %w", key, err)
	}
	// Register first, then deregister, so that an endpoint that is only
	// renamed never disappears in between.
	markerDropped := false
	var dmu sync.Mutex
	err = r.parallel(ctx, len(reg), func(ctx context.Context, i int) error {
		if _, exists := cur[reg[i].ID]; (exists || repairing) && r.opts.MotoWorkarounds {
			if err := r.deregister(ctx, svc.ID, reg[i].ID); err != nil {
				return err
			}
		}
		err := r.register(ctx, svc.ID, reg[i])
		if err != nil && reg[i].ID == mid && isCode(err, "InvalidInput") && len(desired) > 1 {
			// A service created by someone else with DNS records rejects an
			// instance without an IP. Readers then take the service-level
			// attributes from the endpoint instances, which carry them too.
			log.Info("Cloud Map rejected the service marker; relying on endpoint instances", "error", err.Error())
			dmu.Lock()
			markerDropped = true
			dmu.Unlock()
			return nil
		}
		return err
	})
	if err != nil {
		return fail(err)
	}
	err = r.parallel(ctx, len(dereg), func(ctx context.Context, i int) error {
		return r.deregister(ctx, svc.ID, dereg[i])
	})
	if err != nil {
		return fail(err)
	}
	if markerDropped {
		delete(desired, mid)
	}
	done()
	log.V(1).Info("published", "registered", len(reg), "deregistered", len(dereg))
	r.view.markDirty(key)
	r.changed(ctx, key, instanceDigest(desired))
	r.wake()
	return nil
}

// repair re-applies a published record when the view shows that what this
// cluster holds in Cloud Map differs from what it wrote: an asynchronous
// operation that failed, an InstanceId taken over by another cluster's
// writer, or a stale copy left by moto. It waits RepairDelay after the last
// write, since DiscoverInstances is eventually consistent.
//
// readStart is when the read that produced mine started: only a read that
// started RepairDelay after the last write may be compared with it.
func (r *Registry) repair(ctx context.Context, key registry.ServiceKey, mine map[string]instance, readStart time.Time) {
	r.mu.Lock()
	p := r.published[key]
	r.mu.Unlock()
	if p == nil || readStart.Sub(p.at) < r.opts.RepairDelay || sameInstances(p.insts, mine) {
		return
	}
	defer r.lockKey(key)()
	r.mu.Lock()
	p2 := r.published[key]
	r.mu.Unlock()
	if p2 != p {
		return // published or withdrawn meanwhile
	}
	ns, ok, err := r.namespace(ctx, key.Namespace, false)
	if err != nil || !ok {
		return
	}
	svc, ok, err := r.service(ctx, ns, key.Name, false)
	if err != nil || !ok {
		return
	}
	r.log.Info("repairing this cluster's instances in Cloud Map", "namespace", key.Namespace, "service", key.Name,
		"held", len(mine), "published", len(p.insts))
	rec := p.rec
	if err := r.apply(ctx, ns, svc, &rec, mine, true); err != nil {
		r.log.Error(err, "repair failed", "namespace", key.Namespace, "service", key.Name)
	}
}

func sameInstances(a, b map[string]instance) bool {
	if len(a) != len(b) {
		return false
	}
	for id, in := range a {
		o, ok := b[id]
		if !ok || !sameAttrs(in.Attrs, o.Attrs) {
			return false
		}
	}
	return true
}

// namespaceLoad counts the instances in key's namespace other than key's own
// ones of this cluster: this cluster's other services and the instances of
// other clusters seen by the view. Writers outside the clusterset are not
// counted; Cloud Map's own error then reports the quota.
func (r *Registry) namespaceLoad(key registry.ServiceKey) int {
	n := 0
	r.mu.Lock()
	for k, p := range r.published {
		if k.Namespace == key.Namespace && k != key {
			n += len(p.insts)
		}
	}
	r.mu.Unlock()
	return n + r.view.otherInstancesInNamespace(key.Namespace, r.opts.ClusterID)
}

func (r *Registry) register(ctx context.Context, serviceID string, in instance) error {
	out, err := r.api.c.RegisterInstance(ctx, &sd.RegisterInstanceInput{
		ServiceId:        aws.String(serviceID),
		InstanceId:       aws.String(in.ID),
		Attributes:       in.Attrs,
		CreatorRequestId: aws.String(requestID("i", r.opts.ClusterID, in.ID)),
	})
	if err != nil {
		return err
	}
	if r.opts.WaitForOperations {
		_, err = r.api.waitOperation(ctx, aws.ToString(out.OperationId))
	}
	return err
}

func (r *Registry) deregister(ctx context.Context, serviceID, id string) error {
	out, err := r.api.c.DeregisterInstance(ctx, &sd.DeregisterInstanceInput{
		ServiceId:  aws.String(serviceID),
		InstanceId: aws.String(id),
	})
	if isCode(err, "InstanceNotFound") {
		return nil
	}
	if err != nil {
		return err
	}
	if r.opts.WaitForOperations {
		_, err = r.api.waitOperation(ctx, aws.ToString(out.OperationId))
	}
	return err
}

// parallel runs fn for 0..n-1 with at most Options.Concurrency at a time.
func (r *Registry) parallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	if n == 0 {
		return nil
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(r.opts.Concurrency)
	for i := 0; i < n; i++ {
		g.Go(func() error { return fn(ctx, i) })
	}
	return g.Wait()
}

// Withdraw deregisters every instance of this cluster in key's service and
// deletes the Cloud Map service when a clusterset controller created it and
// no instance (of any writer) is left. Namespaces are never deleted.
func (r *Registry) Withdraw(ctx context.Context, key registry.ServiceKey) error {
	defer r.lockKey(key)()
	defer r.wake()
	r.mu.Lock()
	delete(r.published, key)
	r.mu.Unlock()
	r.view.markDirty(key)

	ns, ok, err := r.namespace(ctx, key.Namespace, false)
	if err != nil || !ok {
		return err
	}
	svc, ok, err := r.service(ctx, ns, key.Name, false)
	if err != nil || !ok {
		return err
	}
	insts, err := r.api.listInstances(ctx, svc.ID)
	if isCode(err, "ServiceNotFound") {
		r.forgetService(ns, key.Name)
		return nil
	}
	if err != nil {
		return err
	}
	_, copies := dedupe(insts)
	var mine []string
	othersLeft := false
	seen := map[string]bool{}
	for _, in := range insts {
		if seen[in.ID] {
			continue
		}
		seen[in.ID] = true
		if r.ours(in.Attrs) {
			// moto keeps one copy per registration and removes one per
			// deregistration: deregister every copy.
			for i := 0; i < copies[in.ID]; i++ {
				mine = append(mine, in.ID)
			}
		} else {
			othersLeft = true
		}
	}
	digest := unknownDigest
	if len(mine) > 0 {
		// After the deregistrations (and the deletion of the service), even
		// partial ones: tell the other clusters.
		defer func() { r.changed(ctx, key, digest) }()
	}
	err = r.parallel(ctx, len(mine), func(ctx context.Context, i int) error {
		return r.deregister(ctx, svc.ID, mine[i])
	})
	if err != nil {
		return fmt.Errorf("cloudmap: withdraw %s: %w", key, err)
	}
	digest = instanceDigest(nil)
	r.log.V(1).Info("withdrawn", "namespace", key.Namespace, "service", key.Name, "deregistered", len(mine))
	if othersLeft {
		return nil
	}
	return r.deleteIfOurs(ctx, ns, svc)
}

// deleteIfOurs deletes an empty Cloud Map service created by a clusterset
// controller (tagged). Real Cloud Map refuses to delete a service that has
// instances (ResourceInUse), which closes the race with a concurrent
// registration by another cluster.
func (r *Registry) deleteIfOurs(ctx context.Context, ns nsInfo, svc svcInfo) error {
	tags, err := r.api.c.ListTagsForResource(ctx, &sd.ListTagsForResourceInput{ResourceARN: aws.String(svc.ARN)})
	if err != nil {
		if isCode(err, "ResourceNotFoundException", "ServiceNotFound") {
			r.forgetService(ns, svc.Name)
			return nil
		}
		return err
	}
	created := false
	for _, t := range tags.Tags {
		if aws.ToString(t.Key) == createdByTag {
			created = true
		}
	}
	if !created {
		return nil
	}
	_, err = r.api.c.DeleteService(ctx, &sd.DeleteServiceInput{Id: aws.String(svc.ID)})
	switch {
	case isCode(err, "ResourceInUse"):
		return nil // someone registered meanwhile: the service stays
	case err != nil && !isCode(err, "ServiceNotFound"):
		return err
	}
	r.forgetService(ns, svc.Name)
	r.log.Info("deleted empty Cloud Map service", "namespace", ns.Name, "service", svc.Name)
	return nil
}

// Heartbeat registers (replaces) this cluster's heartbeat instance in
// Options.SystemNamespace/heartbeat with the current time. It also retries
// the change beacons whose last write failed.
func (r *Registry) Heartbeat(ctx context.Context) error {
	r.flushBeacons(ctx)
	return r.registerSystem(ctx, heartbeatService, instance{
		ID: heartbeatID(r.opts.ClusterSetID, r.opts.ClusterID),
		Attrs: map[string]string{
			attrClusterSetID:   r.opts.ClusterSetID,
			attrClusterID:      r.opts.ClusterID,
			attrController:     controllerName,
			attrRecordKind:     kindHeartbeat,
			attrHeartbeat:      strconv.FormatInt(time.Now().UnixMilli(), 10),
			attrHeartbeatLease: strconv.FormatInt(int64(r.opts.LeaseDuration/time.Second), 10),
		},
	})
}

// registerSystem registers (replaces) an instance of this cluster in a
// service of Options.SystemNamespace, creating both when missing.
func (r *Registry) registerSystem(ctx context.Context, service string, in instance) error {
	ns, _, err := r.namespace(ctx, r.opts.SystemNamespace, true)
	if err != nil {
		return err
	}
	svc, _, err := r.service(ctx, ns, service, true)
	if err != nil {
		return err
	}
	if r.opts.MotoWorkarounds {
		// Without this, moto keeps every version and DiscoverInstances (at
		// most 1,000 results) would eventually stop returning the newest.
		if err := r.deregister(ctx, svc.ID, in.ID); err != nil && !isCode(err, "ServiceNotFound") {
			return err
		}
	}
	err = r.register(ctx, svc.ID, in)
	if isCode(err, "ServiceNotFound") {
		r.forgetService(ns, service)
	}
	return err
}

// Liveness returns the last heartbeat of every cluster of the clusterset
// that has one. Clusters run by the AWS controller have none: callers must
// treat a missing entry as unknown, not as dead.
func (r *Registry) Liveness(ctx context.Context) (map[string]time.Time, error) {
	hbs, err := readHeartbeats(ctx, r.api, r.opts.SystemNamespace, r.opts.ClusterSetID)
	if err != nil {
		return nil, err
	}
	out := make(map[string]time.Time, len(hbs))
	for _, hb := range hbs {
		out[hb.ClusterID] = hb.RenewTime
	}
	return out, nil
}

// onlyChangedTimeDiffers reports whether two markers differ in
// RECORD_CHANGED only.
func onlyChangedTimeDiffers(a, b map[string]string) bool {
	if a == nil || b == nil {
		return false
	}
	x, y := maps.Clone(a), maps.Clone(b)
	delete(x, attrRecordChanged)
	delete(y, attrRecordChanged)
	return sameAttrs(x, y)
}

func sameAttrs(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func atoi32(s string) int32 {
	n, _ := strconv.ParseInt(s, 10, 32)
	return int32(n)
}
