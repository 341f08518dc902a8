//go:build bench

package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/clusterset/clusterset/internal/promtext"
	"github.com/clusterset/clusterset/internal/testenv"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
	"github.com/clusterset/clusterset/pkg/sandbox"
	wt "github.com/clusterset/clusterset/test/e2e/walkthrough"
)

// BenchmarkSandboxMembers measures the registry in the clusterset users get
// from `kubectl clusterset sandbox up --clusters N --nodes kwok`: N full
// local clusters (etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, a kwok node, CoreDNS) with one clusterset-controller
// process each, built from this checkout and run at the flags' defaults
// (plus --cloudmap-moto-workarounds on Cloud Map), on the hub (cls1's API
// server) and on Cloud Map (the sandbox's moto server). For each backend in
// BENCH_BACKENDS (default hub,cloudmap) and each size in
// BENCH_SANDBOX_MEMBERS (comma-separated, default 2,10) it reports:
//   - over BENCH_MEMBERS_IDLE (default 30 s) with nothing changing:
//     registry-idle-calls/s-per-member (hub: the requests for
//     ClusterSetRecords the hub served, per member; Cloud Map: every
//     member's clusterset_cloudmap_requests_total, per member) and
//     sandbox-idle-cpu-% (every process of the sandbox and this benchmark's
//     own, in % of one core);
//   - import-all-s: cls1 exports BENCH_MEMBERS_SERVICES selector-less
//     Services (default 100, 3 ready endpoints each) at once, until every
//     member imports them all, and registry-burst-calls-per-service, the
//     registry calls of every member over it per service;
//   - on the hub also hub-watches (its open watches of ClusterSetRecords),
//     and hub-idle-requests/s, hub-idle-cpu-%, hub-burst-requests and
//     hub-burst-cpu-s: everything cls1's API server served and used, its
//     own member's traffic included.
//
// Unlike BenchmarkMembers (bare API servers, controllers in this process),
// every member here runs what a user's sandbox runs, on the same cores.
// It needs the sandbox binaries (make sandbox-binaries) and, for Cloud Map,
// moto_server (make moto). One op is the whole scenario; run it with
// -benchtime 1x:
//
//	go test -tags bench -run '^$' -bench BenchmarkSandboxMembers -benchtime 1x -timeout 30m ./test/bench/
func BenchmarkSandboxMembers(b *testing.B) {
	sizes := envSizes(b, "BENCH_SANDBOX_MEMBERS", []int{2, 10}, sandbox.MaxClusters)
	services := envInt(b, "BENCH_MEMBERS_SERVICES", 100)
	idle := time.Duration(envInt(b, "BENCH_MEMBERS_IDLE", 30)) * time.Second
	repo := testenv.RepoRoot()
	if missing := sandbox.MissingBinaries(filepath.Join(repo, ".cache", "sandbox")); len(missing) > 0 {
		b.Fatalf("sandbox binaries missing (%s): run make sandbox-binaries", strings.Join(missing, ", "))
	}
	bin := buildController(b)
	for _, backend := range backends(b) {
		for _, n := range sizes {
			b.Run(fmt.Sprintf("%s/clusters-%d", backend, n), func(b *testing.B) {
				if b.N > 1 {
					b.Skip("one op is the whole scenario: run with -benchtime 1x")
				}
				b.StopTimer()
				sb := upSandbox(b, repo, bin, backend, n)
				fmt.Fprintf(os.Stderr, "%s: %d clusters up; 15 s for the first heartbeats\n", b.Name(), n)
				time.Sleep(15 * time.Second)

				l0, cpu0 := sb.load(b), cpuByProcess(sb.apiPorts)
				fmt.Fprintf(os.Stderr, "%s: measuring the idle registry for %v\n", b.Name(), idle)
				time.Sleep(idle)
				l1, cpu1 := sb.load(b), cpuByProcess(sb.apiPorts)
				_, total := formatCPU(cpuUsed(cpu0, cpu1), idle)
				perMember := (l1.registry - l0.registry) / idle.Seconds() / float64(n)
				b.ReportMetric(perMember, "registry-idle-calls/s-per-member")
				b.ReportMetric(100*total/idle.Seconds(), "sandbox-idle-cpu-%")
				fmt.Fprintf(os.Stderr, "%s: idle: %.2f registry calls/s per member; the sandbox's %d processes %.0f%% of a core\n",
					b.Name(), perMember, len(cpu1)-1, 100*total/idle.Seconds())
				if backend == "hub" {
					b.ReportMetric(l1.hubWatches, "hub-watches")
					b.ReportMetric((l1.hubRequests-l0.hubRequests)/idle.Seconds(), "hub-idle-requests/s")
					b.ReportMetric(100*(l1.hubCPU-l0.hubCPU)/idle.Seconds(), "hub-idle-cpu-%")
					fmt.Fprintf(os.Stderr, "%s: idle hub: %d watches, %.2f requests/s in all, %.1f%% CPU\n",
						b.Name(), int(l1.hubWatches), (l1.hubRequests-l0.hubRequests)/idle.Seconds(), 100*(l1.hubCPU-l0.hubCPU)/idle.Seconds())
				}

				exports, want := selectorlessServices(b, sb.members[0].admin, services)
				l1, cpu1 = sb.load(b), cpuByProcess(sb.apiPorts) // the burst from here
				b.StartTimer()
				t0 := time.Now()
				mustCreate(b, sb.members[0].admin, exports...)
				for _, m := range sb.members {
					waitImported(b, m, want, t0)
				}
				took := time.Since(t0)
				b.StopTimer()
				l2, cpu2 := sb.load(b), cpuByProcess(sb.apiPorts)
				b.ReportMetric(took.Seconds(), "import-all-s")
				b.ReportMetric((l2.registry-l1.registry)/float64(services), "registry-burst-calls-per-service")
				if backend == "hub" {
					b.ReportMetric(l2.hubRequests-l1.hubRequests, "hub-burst-requests")
					b.ReportMetric(l2.hubCPU-l1.hubCPU, "hub-burst-cpu-s")
				}
				by, _ := formatCPU(cpuUsed(cpu1, cpu2), took)
				fmt.Fprintf(os.Stderr, "%s: %d services imported by all %d clusters in %v; %.0f registry calls (%.1f per service)\n  CPU over the burst: %s\n",
					b.Name(), services, n, took.Round(100*time.Millisecond), l2.registry-l1.registry, (l2.registry-l1.registry)/float64(services), by)
			})
		}
	}
}

// sandboxBench is a running sandbox seen by the benchmark.
type sandboxBench struct {
	s        *sandbox.Sandbox
	backend  string
	members  []*member         // cls1…clsN, admin clients only
	apiPorts map[string]string // API server port -> cluster, for cpuByProcess
	hubCfg   *rest.Config      // cls1's API server
}

// registryLoad is what the registry had served at one moment.
type registryLoad struct {
	// registry: hub, the requests for ClusterSetRecords the hub served;
	// Cloud Map, every member's Cloud Map calls (attempts).
	registry float64
	// The hub API server's process_cpu_seconds_total, apiserver_request_total
	// and open watches of ClusterSetRecords (hub only).
	hubCPU, hubRequests, hubWatches float64
}

// load reads registryLoad from the hub's /metrics or from every member's
// controller /metrics.
func (sb *sandboxBench) load(b *testing.B) registryLoad {
	if sb.backend == "cloudmap" {
		var l registryLoad
		for _, c := range sb.s.Clusters {
			scraped, err := scrape(fmt.Sprintf("127.0.0.1:%d", c.Ports.ControllerMetrics))
			if err != nil {
				b.Fatalf("%s controller: %v", c.Name, err)
			}
			l.registry += promtext.Sum(scraped, "clusterset_cloudmap_requests_total", nil)
		}
		return l
	}
	scraped, err := apiServerMetrics(sb.hubCfg)
	if err != nil {
		b.Fatal(err)
	}
	group := map[string]string{"group": hubv1alpha1.GroupVersion.Group}
	watches := map[string]string{"group": hubv1alpha1.GroupVersion.Group, "verb": "WATCH"}
	return registryLoad{
		registry:    promtext.Sum(scraped, "apiserver_request_total", group),
		hubCPU:      promtext.Sum(scraped, "process_cpu_seconds_total", nil),
		hubRequests: promtext.Sum(scraped, "apiserver_request_total", nil),
		hubWatches:  promtext.Sum(scraped, "apiserver_longrunning_requests", watches),
	}
}

// upSandbox starts a sandbox of n clusters with kwok nodes on backend
// ("hub" or "cloudmap"), running the controller bin, creates the benchmark
// namespace in every cluster, and stops the sandbox when b ends.
func upSandbox(b *testing.B, repo, bin, backend string, n int) *sandboxBench {
	opts := sandbox.Options{
		Dir:              filepath.Join(b.TempDir(), "sandbox"),
		Clusters:         n,
		Registry:         sandbox.RegistryHub,
		Nodes:            sandbox.NodesKwok,
		RepoDir:          repo,
		ControllerBinary: bin,
		Out:              os.Stderr,
	}
	if backend == "cloudmap" {
		moto, err := exec.LookPath("moto_server")
		if err != nil {
			b.Fatal("moto_server is not on PATH: run make moto (hack/install-moto.sh)")
		}
		opts.Registry, opts.MotoServer = sandbox.RegistryCloudMap, moto
	}
	c, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	t0 := time.Now()
	s, err := sandbox.Up(c, opts)
	if err != nil {
		b.Fatalf("sandbox up --clusters %d --registry %s: %v", n, opts.Registry, err)
	}
	b.Cleanup(func() {
		if err := s.Down(context.Background()); err != nil {
			b.Errorf("sandbox down: %v", err)
		}
	})
	fmt.Fprintf(os.Stderr, "%s: sandbox of %d clusters up in %.1fs\n", b.Name(), n, time.Since(t0).Seconds())
	e, err := wt.New(s)
	if err != nil {
		b.Fatal(err)
	}
	sb := &sandboxBench{s: s, backend: backend, apiPorts: map[string]string{}}
	if sb.hubCfg, err = s.RESTConfig("cls1"); err != nil {
		b.Fatal(err)
	}
	for _, c := range s.Clusters {
		sb.apiPorts[strconv.Itoa(c.Ports.APIServer)] = c.Name
		m := &member{name: c.Name, admin: e.Client(c.Name)}
		mustCreate(b, m.admin, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		sb.members = append(sb.members, m)
	}
	return sb
}

// selectorlessServices creates n Services without a selector in c, each
// with one EndpointSlice of 3 ready endpoints owned by the benchmark (the
// sandbox's kube-controller-manager would empty slices it thinks its own),
// and returns their ServiceExports (not created) and, by name, the sorted,
// space-separated addresses every member should import.
func selectorlessServices(b *testing.B, c client.Client, n int) ([]client.Object, map[string]string) {
	want := map[string]string{}
	var exports []client.Object
	for i := range n {
		name := fmt.Sprintf("m-%d", i+1)
		ips := make([]string, 3)
		for j := range ips {
			k := i*3 + j
			ips[j] = benchAddress(4, k)
		}
		svc := service(name)
		svc.Spec.Selector = nil
		slice := endpointSlice(name, name+"-1", ips...)
		slice.Labels[discoveryv1.LabelManagedBy] = "bench.clusterset.dev"
		mustCreate(b, c, svc, slice)
		sort.Strings(ips)
		want[name] = strings.Join(ips, " ")
		exports = append(exports, serviceExport(name))
	}
	return exports, want
}
