//go:build bench

package bench

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterset/clusterset/internal/apicalls"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/internal/testcontrollers"
	"github.com/clusterset/clusterset/internal/testenv"
	"github.com/clusterset/clusterset/pkg/controllers"
	"github.com/clusterset/clusterset/pkg/controllers/identity"
	"github.com/clusterset/clusterset/pkg/controllers/registrylink"
	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
	"github.com/clusterset/clusterset/pkg/registry/hub"
)

const (
	clusterSet = "clusterset1"
	ns         = "bench"
	// cloudMapPoll is the members' --cloudmap-poll-interval: the default.
	cloudMapPoll = cloudmap.DefaultPollInterval
	// cloudMapQuiet is how long after the last write the Cloud Map view
	// stops treating a namespace as hot (cloudmap.Options.RepairDelay, 30s
	// by default) plus a margin: idle is measured only after it.
	cloudMapQuiet = 35 * time.Second
	hubQuiet      = 3 * time.Second
	// waitTimeout bounds one propagation; a miss fails the benchmark.
	waitTimeout = 60 * time.Second
)

var ctx = context.Background()

func init() {
	var w io.Writer = io.Discard
	if os.Getenv("CLUSTERSET_TEST_LOGS") != "" {
		w = os.Stderr
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(w), zap.UseDevMode(false)))
}

// counter counts the HTTP requests (attempts, retries included) that one
// member's registry client sends, in total and by operation.
type counter struct {
	n  atomic.Int64
	mu sync.Mutex
	by map[string]int64
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (c *counter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		c.n.Add(1)
		op := operation(r)
		c.mu.Lock()
		if c.by == nil {
			c.by = map[string]int64{}
		}
		c.by[op]++
		c.mu.Unlock()
		return rt.RoundTrip(r)
	})
}

// operation names a registry request: the Cloud Map action (from the
// X-Amz-Target header), or the hub's HTTP verb and resource.
func operation(r *http.Request) string {
	if t := r.Header.Get("X-Amz-Target"); t != "" {
		return t[strings.LastIndex(t, ".")+1:]
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	res := parts[len(parts)-1]
	for i, p := range parts {
		if p == "namespaces" && i+2 < len(parts) {
			res = parts[i+2]
		}
	}
	verb := r.Method
	if r.URL.Query().Get("watch") == "true" {
		verb = "WATCH"
	}
	return verb + " " + res
}

// snapshot copies the per-operation counts.
func (c *counter) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.by)
}

// since formats the per-operation counts grown since before, per op.
func (c *counter) since(before map[string]int64, n int) string {
	var out []string
	for op, v := range c.snapshot() {
		if d := v - before[op]; d > 0 {
			out = append(out, fmt.Sprintf("%s %.2f", op, float64(d)/float64(n)))
		}
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// member is one control plane with clusterset-controller running in-process.
type member struct {
	name  string
	admin client.Client
	calls *counter // this member's registry requests
	// api records the controllers' requests to the member's own API
	// server.
	api *apicalls.Recorder
	// config is the member's control plane, with admin credentials.
	config *rest.Config
}

// env is a two-member clusterset on one backend, and a watch of cls2's
// EndpointSlices in the benchmark namespace.
type env struct {
	backend   string
	cls1      *member
	cls2      *member
	quiet     time.Duration // settle time before idle is measured
	jitterMax time.Duration // upper bound of the random pause between ops

	byName  cache.Indexer // cls2's slices by the imported service's name (importedFrom)
	changed chan struct{} // signalled on every event of cls2's slices

	lastWrite time.Time // of the benchmark, in cls1
	// longestStall is, for the last until, the longest time the count of
	// services done did not grow before it reached n: how long a reader
	// that imports in waves paused.
	longestStall time.Duration
	// settleUntil is when the readers are done checking the last burst
	// (exportAndWait); benchEndpoint and benchExport start after it.
	settleUntil time.Time
	idleRate    float64 // registry calls/s of both members
	idleDone    bool    // idleRate is measured
	seq         int     // unique suffix for objects across runs
	extra       string  // the endpoint benchEndpoint added to web-1, if any
	// profiled holds the benchmarks whose API servers were profiled.
	profiled map[string]bool
}

// startEnv starts two control planes (cls1 doubles as the hub for the hub
// backend, as in test/integration) and a controller in each, exports the
// base service web from cls1 and waits until cls2 imports it.
func startEnv(b *testing.B, backend string) *env {
	b.Helper()
	e := &env{backend: backend, changed: make(chan struct{}, 1)}
	var motoURL string
	switch backend {
	case "hub":
		e.quiet, e.jitterMax = hubQuiet, 200*time.Millisecond
	case "cloudmap":
		motoURL = cloudmaptest.StartMoto(b)
		e.quiet, e.jitterMax = cloudMapQuiet, cloudMapPoll
	default:
		b.Fatalf("unknown backend %q", backend)
	}
	var cps []*testenv.Cluster
	for _, name := range []string{"cls1", "cls2"} {
		cp := testenv.Start(b)
		cps = append(cps, cp)
		m := &member{name: name, admin: cp.Client, calls: &counter{}, api: &apicalls.Recorder{}, config: cp.Config}
		var factory registrylink.Factory
		if backend == "hub" {
			factory = hubFactory(b, cps[0], m)
		} else {
			factory = cloudMapFactory(motoURL, m)
		}
		startController(b, cp.Config, m, factory)
		if name == "cls1" {
			e.cls1 = m
		} else {
			e.cls2 = m
		}
	}
	for _, m := range []*member{e.cls1, e.cls2} {
		mustCreate(b, m.admin, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	e.watchImports(b, cps[1].Config)

	mustCreate(b, e.cls1.admin, service("web"), endpointSlice("web", "web-1", "10.1.0.1", "10.1.0.2", "10.1.0.3"), serviceExport("web"))
	e.lastWrite = time.Now()
	if _, err := e.await("web", "10.1.0.1 10.1.0.2 10.1.0.3", 3*waitTimeout); err != nil {
		b.Fatalf("%s: first import: %v", backend, err)
	}
	return e
}

// hubFactory gives m its namespace and RBAC in the hub and returns a factory
// of hub registries that impersonate the member and count its requests.
func hubFactory(b *testing.B, hubCP *testenv.Cluster, m *member) registrylink.Factory {
	user := "clusterset:member:" + m.name
	if _, err := hub.EnsureMember(ctx, kubernetes.NewForConfigOrDie(hubCP.Config), clusterSet, m.name,
		rbacv1.Subject{Kind: rbacv1.UserKind, Name: user, APIGroup: rbacv1.GroupName}); err != nil {
		b.Fatal(err)
	}
	cfg := rest.CopyConfig(hubCP.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	cfg.WrapTransport = m.calls.wrap
	return func(_ context.Context, id identity.Identity) (registry.Registry, error) {
		return hub.New(hub.Options{ClusterSetID: id.ClusterSetID, ClusterID: id.ClusterID, Config: cfg})
	}
}

// cloudMapFactory returns a factory of Cloud Map registries on moto whose
// HTTP requests are counted.
func cloudMapFactory(motoURL string, m *member) registrylink.Factory {
	return func(_ context.Context, id identity.Identity) (registry.Registry, error) {
		cfg := cloudmaptest.Config()
		cfg.HTTPClient = &http.Client{Transport: m.calls.wrap(http.DefaultTransport.(*http.Transport).Clone())}
		return cloudmap.New(cfg, cloudmap.Options{
			ClusterSetID: id.ClusterSetID, ClusterID: id.ClusterID, Endpoint: motoURL,
			MotoWorkarounds: true,
			// The AWS default, 2,000 instances per namespace, holds 500 of
			// the burst's services (3 endpoints and a marker each): raised,
			// as an account exporting up to 7,000 services in one
			// namespace (BENCH_OTHERS=5000 and a burst) would.
			MaxInstancesPerNamespace: 30000,
			// Every other option at its default.
		})
	}
}

// startController runs clusterset-controller's controllers for m, with the
// flags' defaults for heartbeat and liveness, until the benchmark ends. It
// runs with the control plane's admin credentials: authorization is not
// what is measured.
func startController(b *testing.B, cfg *rest.Config, m *member, factory registrylink.Factory) {
	_, stop, err := testcontrollers.Run(m.api.Wrap(cfg), m.name, controllers.Options{
		Defaults: identity.Identity{ClusterID: m.name, ClusterSetID: clusterSet},
		Registry: factory,
		Link:     registrylink.Options{HeartbeatInterval: 10 * time.Second, GracePeriod: 2 * time.Minute},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := stop(); err != nil {
			b.Error(err)
		}
	})
}

// watchImports keeps an informer on cls2's EndpointSlices in ns, the way a
// consumer (kube-proxy, CoreDNS) sees imports.
func (e *env) watchImports(b *testing.B, cfg *rest.Config) {
	// In protobuf, as kube-proxy and CoreDNS watch: the API server encodes
	// each event once per encoding its watchers ask for, and the
	// controllers' informers ask for protobuf too.
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType = k8sruntime.ContentTypeProtobuf
	f := informers.NewSharedInformerFactoryWithOptions(kubernetes.NewForConfigOrDie(cfg), 0, informers.WithNamespace(ns))
	inf := f.Discovery().V1().EndpointSlices()
	signal := func() {
		select {
		case e.changed <- struct{}{}:
		default:
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { signal() },
		UpdateFunc: func(any, any) { signal() },
		DeleteFunc: func(any) { signal() },
	}); err != nil {
		b.Fatal(err)
	}
	// The waiter looks up one service's slices at every event: a scan of
	// the namespace (thousands of slices with BENCH_OTHERS) would take the
	// CPU that the controllers are being timed on.
	if err := inf.Informer().AddIndexers(cache.Indexers{importedFrom: func(obj any) ([]string, error) {
		s, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok || s.Labels[mcsv1beta1.LabelSourceCluster] != "cls1" {
			return nil, nil
		}
		return []string{s.Labels[mcsv1beta1.LabelServiceName]}, nil
	}}); err != nil {
		b.Fatal(err)
	}
	e.byName = inf.Informer().GetIndexer()
	stop := make(chan struct{})
	f.Start(stop)
	b.Cleanup(func() { close(stop); f.Shutdown() })
	if !cache.WaitForCacheSync(stop, inf.Informer().HasSynced) {
		b.Fatal("cls2 EndpointSlice informer did not sync")
	}
}

// importedFrom indexes cls2's EndpointSlices imported from cls1 by the name
// of their service (label multicluster.kubernetes.io/service-name).
const importedFrom = "importedFromCls1"

// importedAddresses is what cls2 imports of svc from cls1: the sorted
// addresses of the imported EndpointSlices ("" when there are none).
func (e *env) importedAddresses(svc string) string {
	list, err := e.byName.ByIndex(importedFrom, svc)
	if err != nil {
		return "error: " + err.Error()
	}
	var out []string
	for _, obj := range list {
		for _, ep := range obj.(*discoveryv1.EndpointSlice).Endpoints {
			out = append(out, ep.Addresses...)
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// await returns when cls2 imports exactly want of svc, and the time it did.
func (e *env) await(svc, want string, timeout time.Duration) (time.Time, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if got := e.importedAddresses(svc); got == want {
			return time.Now(), nil
		}
		select {
		case <-e.changed:
		case <-deadline.C:
			return time.Time{}, fmt.Errorf("cls2 imports %q of %s, want %q after %s", e.importedAddresses(svc), svc, want, timeout)
		}
	}
}

// mark is both members' registry request counts at one time.
type mark struct {
	c1, c2   int64
	by1, by2 map[string]int64
	metric   float64
	at       time.Time
}

func (e *env) mark() mark {
	return mark{
		c1: e.cls1.calls.n.Load(), c2: e.cls2.calls.n.Load(),
		by1: e.cls1.calls.snapshot(), by2: e.cls2.calls.snapshot(),
		metric: cloudMapRequestsMetric(), at: time.Now(),
	}
}

// cloudMapRequestsMetric is the sum of clusterset_cloudmap_requests_total in
// controller-runtime's registry, all members of the process together.
func cloudMapRequestsMetric() float64 {
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		return -1
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "clusterset_cloudmap_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func mustCreate(b *testing.B, c client.Client, objs ...client.Object) {
	b.Helper()
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil {
			b.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

func service(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
}

// endpointSlice is what Kubernetes' EndpointSlice controller would write
// for the Service (envtest runs no controller-manager).
func endpointSlice(svc, name string, ips ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc,
			discoveryv1.LabelManagedBy:   "endpointslice-controller.k8s.io",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](8080)}},
	}
	for _, ip := range ips {
		s.Endpoints = append(s.Endpoints, readyEndpoint(ip))
	}
	return s
}

func readyEndpoint(ip string) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{ip},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		NodeName:   ptr.To("node-1"),
	}
}

// createdEach is what createInBackground reports: when each object was
// created, by name, or the first error.
type createdEach struct {
	at  map[string]time.Time
	err error
}

// createInBackground creates objs one after the other in a goroutine, so
// that the caller can watch their effect as they land: creating thousands takes minutes when the API server is busy. The
// times say when each create returned: the object is stored from then on.
func createInBackground(c client.Client, objs []client.Object) <-chan createdEach {
	out := make(chan createdEach, 1)
	go func() {
		at := make(map[string]time.Time, len(objs))
		for _, o := range objs {
			if err := c.Create(ctx, o); err != nil {
				out <- createdEach{err: fmt.Errorf("creating %T %s: %w", o, o.GetName(), err)}
				return
			}
			at[o.GetName()] = time.Now()
		}
		out <- createdEach{at: at}
	}()
	return out
}

func serviceExport(name string) *mcsv1beta1.ServiceExport {
	return &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

// percentile of sorted durations, nearest rank, in milliseconds.
func percentileMS(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.999999) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i]) / float64(time.Millisecond)
}

// profileAPIServers, when BENCH_PROFILE_DIR is set, records a CPU profile
// of each member's kube-apiserver (its /debug/pprof/profile, on by
// default) for d, in the background, into that directory as
// <name>-<member>-kube-apiserver.pprof. Read it with go tool pprof.
func (e *env) profileAPIServers(b *testing.B, name string, d time.Duration) {
	dir := os.Getenv("BENCH_PROFILE_DIR")
	if dir == "" || e.profiled[name] {
		// Once per benchmark: the testing package runs it with b.N = 1
		// first, and an API server profiles one request at a time.
		return
	}
	if e.profiled == nil {
		e.profiled = map[string]bool{}
	}
	e.profiled[name] = true
	for _, m := range []*member{e.cls1, e.cls2} {
		go func() {
			rc, err := rest.RESTClientFor(withoutTimeout(m.config))
			if err != nil {
				fmt.Fprintf(os.Stderr, "profile of %s: %v\n", m.name, err)
				return
			}
			raw, err := rc.Get().AbsPath("/debug/pprof/profile").Param("seconds", strconv.Itoa(int(d.Seconds()))).DoRaw(ctx)
			if err != nil {
				fmt.Fprintf(os.Stderr, "profile of %s: %v\n", m.name, err)
				return
			}
			file := filepath.Join(dir, fmt.Sprintf("%s-%s-kube-apiserver.pprof", strings.ReplaceAll(name, "/", "_"), m.name))
			if err := os.WriteFile(file, raw, 0o644); err != nil {
				fmt.Fprintf(os.Stderr, "profile of %s: %v\n", m.name, err)
				return
			}
			fmt.Fprintf(os.Stderr, "CPU profile of %s's kube-apiserver: %s\n", m.name, file)
		}()
	}
}

// withoutTimeout is cfg for a raw REST client with no request timeout
// (a profile takes its seconds).
func withoutTimeout(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = 0
	cfg.GroupVersion = &corev1.SchemeGroupVersion
	cfg.APIPath = "/api"
	cfg.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	return cfg
}
