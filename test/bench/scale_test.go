//go:build bench

package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/clusterset/clusterset/internal/promtext"
	"github.com/clusterset/clusterset/internal/testenv"
	"github.com/clusterset/clusterset/pkg/names"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
	"github.com/clusterset/clusterset/pkg/registry/hub"
)

// BenchmarkScale runs clusterset-controller as users do, one process per
// member built from cmd/clusterset-controller, on a clusterset of two
// members that together export BENCH_SCALE services (default 5,000) of
// BENCH_SCALE_ENDPOINTS ready endpoints each (default 10), spread over
// BENCH_SCALE_NAMESPACES namespaces (default 50); cls1 exports the even
// services, cls2 the odd ones, and both import all of them. The hub is a
// third control plane, so that each controller's requests to its own
// cluster and to the registry are told apart (by host).
//
// It reports:
//   - converge-s: from creating all ServiceExports at once (both members)
//     until both members import every service with all its endpoints;
//   - <member>-rss-MiB and <member>-peak-rss-MiB: each controller's resident
//     memory (VmRSS, VmHWM) once converged;
//   - <member>-cpu-s: each controller's CPU seconds from its start until
//     then (process_cpu_seconds_total);
//   - restart-s: after cls2's controller is stopped (SIGTERM) and started
//     again, until it has reconciled every service (controller-runtime's
//     reconcile counters) and its work queues are empty;
//   - restart-member-writes, restart-registry-writes: the requests of the
//     restarted controller that change something (POST, PUT, PATCH,
//     DELETE), to its cluster and to the registry, until then: for Cloud
//     Map, its calls that write (cloudMapWrites; the heartbeat's included),
//     and restart-registry-calls counts all of its Cloud Map calls
//     (clusterset_cloudmap_requests_total).
//
// The controllers run with the Go runtime settings of the shipped
// Deployment (GOGC from config/manager/manager.yaml; its GOMEMLIMIT comes
// from a container limit that a process does not have). BENCH_CONTROLLER_ENV
// adds space-separated VAR=value settings after them (GOGC=100 for Go's
// default, GOMEMLIMIT=200MiB), to measure what they trade.
//
// One op is the whole scenario; run it with -benchtime 1x:
//
//	go test -tags bench -run '^$' -bench BenchmarkScale -benchtime 1x -timeout 60m ./test/bench/
func BenchmarkScale(b *testing.B) {
	services := envInt(b, "BENCH_SCALE", 5000)
	endpoints := envInt(b, "BENCH_SCALE_ENDPOINTS", 10)
	namespaces := envInt(b, "BENCH_SCALE_NAMESPACES", 50)
	bin := buildController(b)
	for _, backend := range backends(b) {
		b.Run(fmt.Sprintf("%s/services-%d", backend, services), func(b *testing.B) {
			if b.N > 1 {
				b.Skip("one op is the whole scenario: run with -benchtime 1x")
			}
			s := startScale(b, bin, backend)
			s.run(b, services, endpoints, namespaces)
		})
	}
}

// backends is BENCH_BACKENDS (comma-separated), default both.
func backends(b *testing.B) []string {
	v := os.Getenv("BENCH_BACKENDS")
	if v == "" {
		return []string{"hub", "cloudmap"}
	}
	out := strings.Split(v, ",")
	for _, backend := range out {
		if backend != "hub" && backend != "cloudmap" {
			b.Fatalf("BENCH_BACKENDS=%q: want hub, cloudmap or both", v)
		}
	}
	return out
}

// buildController builds cmd/clusterset-controller from this checkout.
func buildController(b *testing.B) string {
	bin := filepath.Join(b.TempDir(), "clusterset-controller")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/clusterset-controller")
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building clusterset-controller: %v\n%s", err, out)
	}
	return bin
}

// scaleMember is one member cluster and its controller process.
type scaleMember struct {
	name       string
	cp         *testenv.Cluster
	admin      client.Client
	kubeconfig string // admin credentials of its control plane
	args       []string
	env        []string
	metrics    string // the controller's metrics address
	pprof      string // the controller's /debug/pprof address
	proc       *exec.Cmd
	exited     chan struct{}
	logFile    string
	imported   func() (services, endpoints int)
}

type scale struct {
	backend string
	bin     string
	hubHost string
	members []*scaleMember
	motoURL string
	logDir  string
}

func startScale(b *testing.B, bin, backend string) *scale {
	s := &scale{backend: backend, bin: bin, logDir: b.TempDir()}
	var hubCP *testenv.Cluster
	var hubKubeconfig map[string]string
	switch backend {
	case "hub":
		hubCP = testenv.Start(b)
		s.hubHost = hostOf(b, hubCP.Config)
		hubKubeconfig = map[string]string{}
	case "cloudmap":
		s.motoURL = cloudmaptest.StartMoto(b)
	}
	for _, name := range []string{"cls1", "cls2"} {
		cp := testenv.Start(b)
		m := &scaleMember{name: name, cp: cp, admin: cp.Client, kubeconfig: testenv.WriteKubeconfig(b, name, map[string]*rest.Config{name: cp.Config})}
		m.args = []string{
			"--kubeconfig", m.kubeconfig,
			"--cluster-id", name, "--clusterset-id", clusterSet,
			"--health-probe-bind-address", "0",
		}
		switch backend {
		case "hub":
			user := "clusterset:member:" + name
			if _, err := hub.EnsureMember(ctx, kubernetes.NewForConfigOrDie(hubCP.Config), clusterSet, name,
				rbacv1.Subject{Kind: rbacv1.UserKind, Name: user, APIGroup: rbacv1.GroupName}); err != nil {
				b.Fatal(err)
			}
			asMember := rest.CopyConfig(hubCP.Config)
			asMember.Impersonate.UserName = user
			hubKubeconfig[name] = testenv.WriteKubeconfig(b, "hub", map[string]*rest.Config{"hub": asMember})
			m.args = append(m.args, "--registry", "hub", "--hub-kubeconfig", hubKubeconfig[name])
		case "cloudmap":
			m.args = append(m.args, "--registry", "cloudmap", "--cloudmap-moto-workarounds")
			m.env = append(os.Environ(), "AWS_ENDPOINT_URL="+s.motoURL, "AWS_REGION="+cloudmaptest.Region,
				"AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing")
		}
		if m.env == nil {
			m.env = os.Environ()
		}
		// As shipped, then what the run asks for (the later of two
		// settings of a variable wins).
		m.env = append(m.env, shippedGoEnv(b)...)
		m.env = append(m.env, strings.Fields(os.Getenv("BENCH_CONTROLLER_ENV"))...)
		s.members = append(s.members, m)
	}
	for _, m := range s.members {
		s.startController(b, m)
		m.imported = watchAllImports(b, m.cp.Config)
	}
	b.Cleanup(func() {
		for _, m := range s.members {
			s.stopController(b, m)
		}
	})
	return s
}

// hostOf is the host:port of cfg's API server, as client-go's request
// metrics label it.
func hostOf(b *testing.B, cfg *rest.Config) string {
	u, err := url.Parse(cfg.Host)
	if err != nil {
		b.Fatal(err)
	}
	return u.Host
}

// startController starts m's controller process with a fresh metrics port.
func (s *scale) startController(b *testing.B, m *scaleMember) {
	m.metrics, m.pprof = freeAddress(b), freeAddress(b)
	log, err := os.CreateTemp(s.logDir, m.name+"-*.log")
	if err != nil {
		b.Fatal(err)
	}
	m.logFile = log.Name()
	m.proc = exec.Command(s.bin, append(m.args, "--metrics-bind-address", m.metrics, "--pprof-bind-address", m.pprof)...)
	m.proc.Env = m.env
	// The controller dies with the benchmark, even one that is killed.
	m.proc.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	m.proc.Stdout, m.proc.Stderr = log, log
	if err := m.proc.Start(); err != nil {
		b.Fatal(err)
	}
	_ = log.Close()
	m.exited = make(chan struct{})
	go func(p *exec.Cmd, done chan struct{}) { _ = p.Wait(); close(done) }(m.proc, m.exited)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := scrape(m.metrics); err == nil {
			return
		}
		select {
		case <-m.exited:
			b.Fatalf("%s: clusterset-controller exited at start; its log: %s", m.name, m.logFile)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: no metrics at %s after 30s; its log: %s", m.name, m.metrics, m.logFile)
		}
	}
}

// freeAddress is a 127.0.0.1 address with a port free at the time of the
// call.
func freeAddress(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// heapProfile saves m's controller's heap profile into BENCH_PROFILE_DIR,
// when it is set.
func (m *scaleMember) heapProfile(b *testing.B) {
	dir := os.Getenv("BENCH_PROFILE_DIR")
	if dir == "" {
		return
	}
	resp, err := http.Get("http://" + m.pprof + "/debug/pprof/heap")
	if err != nil {
		b.Logf("heap profile of %s: %v", m.name, err)
		return
	}
	defer resp.Body.Close()
	file := filepath.Join(dir, strings.ReplaceAll(b.Name(), "/", "_")+"-"+m.name+"-heap.pprof")
	f, err := os.Create(file)
	if err == nil {
		_, err = io.Copy(f, resp.Body)
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		b.Logf("heap profile of %s: %v", m.name, err)
		return
	}
	fmt.Fprintf(os.Stderr, "heap profile of %s's controller: %s\n", m.name, file)
}

// stopController stops m's controller as the kubelet would (SIGTERM) and
// waits for it to exit.
func (s *scale) stopController(b *testing.B, m *scaleMember) {
	if m.proc == nil {
		return
	}
	_ = m.proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(30 * time.Second):
		_ = m.proc.Process.Kill()
		<-m.exited
		b.Errorf("%s: clusterset-controller did not stop within 30s of SIGTERM", m.name)
	}
	m.proc = nil
}

// watchAllImports keeps an informer on the EndpointSlices clusterset wrote in
// the cluster of cfg (all namespaces) and returns a func that counts the
// services they import and their endpoints.
func watchAllImports(b *testing.B, cfg *rest.Config) func() (int, int) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = -1, 0
	f := informers.NewSharedInformerFactoryWithOptions(kubernetes.NewForConfigOrDie(cfg), 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = discoveryv1.LabelManagedBy + "=" + names.ManagedBy
		}))
	inf := f.Discovery().V1().EndpointSlices().Informer()
	stop := make(chan struct{})
	f.Start(stop)
	b.Cleanup(func() { close(stop); f.Shutdown() })
	if !cache.WaitForCacheSync(stop, inf.HasSynced) {
		b.Fatal("EndpointSlice informer did not sync")
	}
	return func() (int, int) {
		svcs := map[string]bool{}
		eps := 0
		for _, o := range inf.GetStore().List() {
			s := o.(*discoveryv1.EndpointSlice)
			if len(s.Endpoints) > 0 {
				svcs[s.Namespace+"/"+s.Labels[discoveryv1.LabelServiceName]] = true
			}
			eps += len(s.Endpoints)
		}
		return len(svcs), eps
	}
}

func (s *scale) run(b *testing.B, services, endpoints, namespaces int) {
	b.StopTimer()
	fmt.Fprintf(os.Stderr, "%s: creating %d Services of %d endpoints in %d namespaces\n", b.Name(), services, endpoints, namespaces)
	exports := s.createServices(b, services, endpoints, namespaces)

	b.StartTimer()
	t0 := time.Now()
	parallel(b, 16, len(exports), func(c int) error {
		return exports[c].m.admin.Create(ctx, exports[c].obj)
	})
	converge := s.untilImported(b, "imported", t0, services, services*endpoints)
	b.StopTimer()
	b.ReportMetric(converge.Seconds(), "converge-s")
	b.ReportMetric(float64(services)/converge.Seconds(), "services/s")

	time.Sleep(10 * time.Second) // what the controllers hold once settled
	for _, m := range s.members {
		rss, peak := memory(b, m.proc.Process.Pid)
		b.ReportMetric(rss, m.name+"-rss-MiB")
		b.ReportMetric(peak, m.name+"-peak-rss-MiB")
		// CPU from the start through convergence and the 10 s settling,
		// for the memory/CPU trade of GOGC or GOMEMLIMIT
		// (BENCH_CONTROLLER_ENV).
		cpu := 0.0
		if scraped, err := scrape(m.metrics); err == nil {
			cpu = promtext.Sum(scraped, "process_cpu_seconds_total", nil)
		}
		b.ReportMetric(cpu, m.name+"-cpu-s")
		fmt.Fprintf(os.Stderr, "%s: %s's controller: RSS %.0f MiB, peak %.0f MiB, CPU %.1f s\n", b.Name(), m.name, rss, peak, cpu)
		m.heapProfile(b)
	}

	// Restart cls2's controller: it must find everything in place.
	cls2 := s.members[1]
	before, err := testenv.ResourceVersions(ctx, cls2.admin, metav1.NamespaceAll)
	if err != nil {
		b.Fatal(err)
	}
	s.stopController(b, cls2)
	b.StartTimer()
	t0 = time.Now()
	s.startController(b, cls2)
	restart := s.untilReconciled(b, cls2, t0, services, services/2)
	b.StopTimer()
	b.ReportMetric(restart.Seconds(), "restart-s")
	scraped, err := scrape(cls2.metrics)
	if err != nil {
		b.Fatal(err)
	}
	memberWrites, registryWrites := writesByHost(scraped, hostOf(b, cls2.cp.Config), s.hubHost)
	b.ReportMetric(memberWrites, "restart-member-writes")
	if s.backend == "hub" {
		b.ReportMetric(registryWrites, "restart-registry-writes")
	} else {
		b.ReportMetric(promtext.Sum(scraped, "clusterset_cloudmap_requests_total", nil), "restart-registry-calls")
		registryWrites = cloudMapWrites(scraped)
		b.ReportMetric(registryWrites, "restart-registry-writes")
	}
	rewritten := map[string]int{}
	total := 0
	after, err := testenv.ResourceVersions(ctx, cls2.admin, metav1.NamespaceAll)
	if err != nil {
		b.Fatal(err)
	}
	for obj, rv := range after {
		if old, ok := before[obj]; !ok || old != rv {
			kind, _, _ := strings.Cut(obj, " ")
			rewritten[kind]++
			total++
		}
	}
	b.ReportMetric(float64(total), "restart-rewritten-objects")
	fmt.Fprintf(os.Stderr, "%s: objects the restarted controller wrote or created in cls2, by kind: %v\n", b.Name(), rewritten)
	rss, peak := memory(b, cls2.proc.Process.Pid)
	b.ReportMetric(peak, "restart-peak-rss-MiB")
	fmt.Fprintf(os.Stderr, "%s: restarted cls2 converged in %v with %v writes to its cluster, %v to the registry; RSS %.0f MiB, peak %.0f MiB\n",
		b.Name(), restart.Round(100*time.Millisecond), memberWrites, registryWrites, rss, peak)
	if n, _ := cls2.imported(); n != services {
		b.Errorf("after the restart cls2 imports %d services, want %d", n, services)
	}
}

type pendingExport struct {
	m   *scaleMember
	obj client.Object
}

// createServices creates the namespaces in both members, and in the
// exporting member each Service and its EndpointSlice; it returns the
// ServiceExports, not created yet.
func (s *scale) createServices(b *testing.B, services, endpoints, namespaces int) []pendingExport {
	for _, m := range s.members {
		for i := range namespaces {
			if err := m.admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("scale-%d", i)}}); err != nil {
				b.Fatal(err)
			}
		}
	}
	exports := make([]pendingExport, services)
	var created atomic.Int64
	t0 := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Second):
				fmt.Fprintf(os.Stderr, "%s: %d/%d Services created after %v\n", b.Name(), created.Load(), services, time.Since(t0).Round(time.Second))
			}
		}
	}()
	parallel(b, 16, services, func(i int) error {
		defer created.Add(1)
		m := s.members[i%2]
		namespace, name := fmt.Sprintf("scale-%d", i%namespaces), fmt.Sprintf("svc-%d", i)
		svc := service(name)
		svc.Namespace = namespace
		slice := endpointSlice(name, name+"-1")
		slice.Namespace = namespace
		for j := range endpoints {
			k := i*endpoints + j
			slice.Endpoints = append(slice.Endpoints, readyEndpoint(benchAddress(100, k)))
		}
		export := serviceExport(name)
		export.Namespace = namespace
		exports[i] = pendingExport{m: m, obj: export}
		if err := m.admin.Create(ctx, svc); err != nil {
			return err
		}
		return m.admin.Create(ctx, slice)
	})
	return exports
}

// parallel runs f(0..n-1) on workers goroutines and fails b on the first
// error.
func parallel(b *testing.B, workers, n int, f func(i int) error) {
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
}

// untilImported returns how long after t0 every member imported services
// services with endpoints endpoints in all, printing progress.
func (s *scale) untilImported(b *testing.B, what string, t0 time.Time, services, endpoints int) time.Duration {
	last, lastAt, printed := "", time.Now(), time.Time{}
	for {
		done := true
		var state []string
		for _, m := range s.members {
			n, eps := m.imported()
			done = done && n == services && eps == endpoints
			state = append(state, fmt.Sprintf("%s %d/%d services, %d/%d endpoints", m.name, n, services, eps, endpoints))
		}
		now := strings.Join(state, "; ")
		if done {
			fmt.Fprintf(os.Stderr, "%s %s: %s after %v\n", b.Name(), what, now, time.Since(t0).Round(100*time.Millisecond))
			return time.Since(t0)
		}
		if now != last {
			last, lastAt = now, time.Now()
		}
		if time.Since(printed) >= 5*time.Second {
			printed = time.Now()
			fmt.Fprintf(os.Stderr, "%s %s: %s after %v\n", b.Name(), what, now, time.Since(t0).Round(100*time.Millisecond))
		}
		if time.Since(lastAt) > 2*waitTimeout {
			b.Fatalf("%s: stuck at %s for %v; controller logs in %s", what, now, 2*waitTimeout, s.logDir)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// untilReconciled returns how long after t0 m's controller had reconciled
// at least imports services in its import controller and exports in its
// export controller with success (not requeued), with both work queues
// empty at two scrapes in a row.
func (s *scale) untilReconciled(b *testing.B, m *scaleMember, t0 time.Time, imports, exports int) time.Duration {
	empty := 0
	printed := time.Now()
	for {
		scraped, err := scrape(m.metrics)
		if err != nil {
			b.Fatal(err)
		}
		// Only reconciles that did their work: the first pass after a
		// start finds the registry view not synced yet and requeues
		// (result="requeue_after").
		ri := promtext.Sum(scraped, "controller_runtime_reconcile_total", map[string]string{"controller": "imports", "result": "success"})
		re := promtext.Sum(scraped, "controller_runtime_reconcile_total", map[string]string{"controller": "export", "result": "success"})
		depth := promtext.Sum(scraped, "workqueue_depth", map[string]string{"name": "imports"}) + promtext.Sum(scraped, "workqueue_depth", map[string]string{"name": "export"})
		if ri >= float64(imports) && re >= float64(exports) && depth == 0 {
			if empty++; empty == 2 {
				return time.Since(t0)
			}
		} else {
			empty = 0
		}
		if time.Since(t0) > 5*time.Minute {
			b.Fatalf("%s: after 5m, %v import and %v export reconciles (want %d, %d), %v queued; log: %s", m.name, ri, re, imports, exports, depth, m.logFile)
		}
		if time.Since(printed) >= 5*time.Second {
			printed = time.Now()
			fmt.Fprintf(os.Stderr, "%s: restarted %s: %.0f/%d import and %.0f/%d export reconciles, %.0f queued, after %v\n",
				b.Name(), m.name, ri, imports, re, exports, depth, time.Since(t0).Round(time.Second))
		}
		time.Sleep(250 * time.Millisecond)
	}
}
