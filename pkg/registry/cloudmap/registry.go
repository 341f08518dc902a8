package cloudmap

import (
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/go-logr/logr"
	"k8s.io/utils/clock"
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
	// heals what the change beacons cannot announce (a hand edit, another
	// controller's first write into a service that exists, a writer that
	// died between its write and its beacon and never led again) and is
	// the largest idle cost that grows with the number of services.
	// Default 30m.
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
	// Cloud Map quotas, which Publish checks against every writer's
	// instances the view saw. Defaults 1000 and 2000 (the AWS defaults).
	// MaxInstancesPerService is at most 1000: one DiscoverInstances returns
	// no more, so readers could not read a fuller service.
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
	// RequestTimeout bounds each attempt of an API call, the response read
	// included. Default 10s: Cloud Map answers in well under a second.
	RequestTimeout time.Duration
	// Clock stamps heartbeats. Default the real clock.
	Clock clock.PassiveClock
	// Holder is written into the heartbeat (HEARTBEAT_HOLDER): the UID of
	// this member's kube-system namespace.
	Holder string
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
	if o.MaxInstancesPerService <= 0 || o.MaxInstancesPerService > maxDiscoverResults {
		o.MaxInstancesPerService = maxDiscoverResults
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
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 10 * time.Second
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Logger.GetSink() == nil {
		o.Logger = ctrllog.Log.WithName("cloudmap")
	}
}

// QuotaError is returned by Publish when a record would exceed a Cloud Map
// instance quota; nothing of the record is written. When Cloud Map itself
// refused a write (Err), Scope is empty and the writes before it may have
// gone through.
type QuotaError struct {
	Key registry.ServiceKey
	// Scope is "service" or "namespace": the quota the record would exceed.
	Scope string
	// Want is how many instances the scope would hold with the record, and
	// Others how many of them other writers hold (other clusters, other
	// clustersets, anyone), as this cluster's view last read them.
	Want, Others int
	Limit        int
	Err          error // the Cloud Map error, when Cloud Map reported it
}

func (e *QuotaError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("cloudmap: service %s: Cloud Map instance quota exceeded: %v", e.Key, e.Err)
	}
	msg := fmt.Sprintf("cloudmap: service %s needs %d Cloud Map instances in its %s, the quota is %d", e.Key, e.Want, e.Scope, e.Limit)
	if e.Others > 0 {
		msg += fmt.Sprintf("; %d of them are already held by other writers there (other clusters, other clustersets or anyone else)", e.Others)
	}
	if e.Scope == "namespace" {
		return msg + " (one instance per endpoint and port, and one per exported service; raise the AWS Cloud Map quota of instances per namespace, then --cloudmap-max-instances-per-namespace)"
	}
	return msg + fmt.Sprintf(" (one instance per endpoint and port, and one per exported service; a service holds at most %d, which one DiscoverInstances returns)", maxDiscoverResults)
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
	listed     map[string]map[string][]svcInfo   // namespace ID -> name -> services, from its last listing
	published  map[registry.ServiceKey]*pubState // what this cluster wrote, per key
	// withdrawn holds when this process last withdrew a key with nothing
	// of its own left there and published nothing since (see Withdraw).
	withdrawn   map[registry.ServiceKey]time.Time
	keyLocks    map[registry.ServiceKey]*sync.Mutex
	createMu    sync.Mutex                // serialises namespace creation in this process
	createLocks map[[2]string]*sync.Mutex // serialise the creation of one service name (lockCreate)

	beacons map[string]*beaconState // by namespace: this cluster's change beacons
	writer  string                  // CHANGE_WRITER of this process's beacons
	// writing is set once this process renewed the heartbeat (it leads and
	// owns its cluster ID); restartAnnounced once announceRestart ran.
	writing, restartAnnounced atomic.Bool

	view view
	poke chan struct{}

	pollMu sync.Mutex // held for a whole poll
	ps     pollState  // guarded by pollMu
}

var _ registry.Registry = (*Registry)(nil)

// New returns a Cloud Map registry using cfg (credentials, region; see
// config.LoadDefaultConfig). IDs that registry.ValidateClusterSetID or
// registry.ValidateClusterID reject are an error.
func New(cfg aws.Config, opts Options) (*Registry, error) {
	if err := registry.ValidateClusterSetID(opts.ClusterSetID); err != nil {
		return nil, fmt.Errorf("cloudmap: %w", err)
	}
	if err := registry.ValidateClusterID(opts.ClusterID); err != nil {
		return nil, fmt.Errorf("cloudmap: %w", err)
	}
	opts.setDefaults()
	r := &Registry{
		opts:        opts,
		log:         opts.Logger.WithValues("clusterset", opts.ClusterSetID, "cluster", opts.ClusterID),
		namespaces:  map[string]nsInfo{},
		svcNS:       map[string]string{},
		services:    map[[2]string]svcInfo{},
		listed:      map[string]map[string][]svcInfo{},
		createLocks: map[[2]string]*sync.Mutex{},
		published:   map[registry.ServiceKey]*pubState{},
		withdrawn:   map[registry.ServiceKey]time.Time{},
		keyLocks:    map[registry.ServiceKey]*sync.Mutex{},
		beacons:     map[string]*beaconState{},
		writer:      rand.Text()[:12],
		poke:        make(chan struct{}, 1),
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

func (r *Registry) ours(a map[string]string) bool {
	return clusterSetOf(a) == r.opts.ClusterSetID && a[attrClusterID] == r.opts.ClusterID
}
