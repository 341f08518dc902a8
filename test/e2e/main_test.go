//go:build e2e

// Package e2e is clusterset's end-to-end suite: real local clusters from
// pkg/sandbox (etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, kwok, CoreDNS with the multicluster plugin) and one
// clusterset-controller process per cluster, once with the hub registry and
// once with Cloud Map (a local moto server).
//
// Run it with `make e2e`, or
//
//	go test -tags e2e -timeout 40m ./test/e2e/...
//
// Pod and Service IPs are data only: the suite never sends traffic to them.
// Its only network traffic goes to the sandbox's API servers and to its
// CoreDNS servers on 127.0.0.1 (real DNS queries, checks D1-D4 of DESIGN.md).
//
// Without the sandbox binaries (hack/build-binaries.sh sandbox) or, for the
// Cloud Map test, moto_server (hack/install-moto.sh), the tests skip, unless
// CI is set: then they fail and say what to install.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/kubectl/pkg/util/podutils"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/internal/prereq"
	"github.com/clusterset/clusterset/pkg/sandbox"
	wt "github.com/clusterset/clusterset/test/e2e/walkthrough"
)

var (
	// repoDir is the repository under test.
	repoDir string
	// binDir holds the sandbox's component binaries.
	binDir string
	// controllerBinary is the clusterset-controller every sandbox runs.
	controllerBinary string
	// setupProblem, when set, is why no sandbox can start: each test skips
	// with it, or fails under CI.
	setupProblem string
)

func TestMain(m *testing.M) {
	// The suite's controller-runtime clients log nothing worth reading; without
	// a logger, controller-runtime prints a stack trace about it after 30 s.
	ctrllog.SetLogger(logr.Discard())
	if err := setup(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e setup: %v\n", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// setup finds the repository and the sandbox binaries and builds
// bin/clusterset-controller (a no-op relink when `make e2e` has just built
// it), so that the suite always runs the controller of this source tree.
// $CLUSTERSET_E2E_CONTROLLER names a prebuilt controller to use instead.
func setup() error {
	var err error
	if repoDir, err = sandbox.FindRepoDir(); err != nil {
		return err
	}
	if binDir = os.Getenv("CLUSTERSET_SANDBOX_BIN"); binDir == "" {
		binDir = filepath.Join(repoDir, ".cache", "sandbox")
	}
	if missing := sandbox.MissingBinaries(binDir); len(missing) > 0 {
		setupProblem = fmt.Sprintf("sandbox binaries %s are not in %s: run `make sandbox-binaries` (hack/build-binaries.sh sandbox; cold: 15-25 min on 2 cores)",
			strings.Join(missing, ", "), binDir)
		return nil
	}
	if controllerBinary = os.Getenv("CLUSTERSET_E2E_CONTROLLER"); controllerBinary != "" {
		if _, err := os.Stat(controllerBinary); err != nil {
			return fmt.Errorf("CLUSTERSET_E2E_CONTROLLER: %w", err)
		}
		return nil
	}
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", filepath.Join(repoDir, "bin")+string(filepath.Separator), "./cmd/clusterset-controller")
	cmd.Dir = repoDir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/clusterset-controller: %v\n%s", err, out.String())
	}
	controllerBinary = filepath.Join(repoDir, "bin", "clusterset-controller")
	fmt.Fprintf(os.Stderr, "e2e: built %s in %.1fs\n", controllerBinary, time.Since(start).Seconds())
	return nil
}

// startSandbox brings up a 2-cluster sandbox with the given registry in
// .cache/e2e/REGISTRY (logs stay there after the test) and tears it down
// when the test ends, whatever happens.
func startSandbox(t *testing.T, registry string) *wt.Env {
	t.Helper()
	return startSandboxNodes(t, registry, sandbox.NodesKwok)
}

// startSandboxNodes is startSandbox with the given node mode; real nodes
// use .cache/e2e/REGISTRY-real.
func startSandboxNodes(t *testing.T, registry, nodes string, options ...func(*sandbox.Options)) *wt.Env {
	t.Helper()
	if setupProblem != "" {
		prereq.Missing(t, setupProblem)
	}
	dir := filepath.Join(repoDir, ".cache", "e2e", registry)
	if nodes == sandbox.NodesReal {
		dir += "-real"
		if problem := sandbox.RealNodesProblem(filepath.Join(repoDir, ".cache", "node")); problem != "" {
			prereq.Missing(t, problem)
		}
	}
	opts := sandbox.Options{
		Dir:              dir,
		Clusters:         2,
		Registry:         registry,
		Nodes:            nodes,
		RepoDir:          repoDir,
		BinDir:           binDir,
		ControllerBinary: controllerBinary,
		Recreate:         true,
		Out:              t.Output(),
	}
	if registry == sandbox.RegistryCloudMap {
		moto, err := exec.LookPath("moto_server")
		if err != nil {
			prereq.Missing(t, "moto_server is not on PATH: run hack/install-moto.sh (pip install 'moto[server]')")
		}
		opts.MotoServer = moto
	}
	for _, o := range options {
		o(&opts)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	s, err := sandbox.Up(ctx, opts)
	if err != nil {
		t.Fatalf("sandbox up (%s registry): %v\nlogs: %s", registry, err, filepath.Join(opts.Dir, "logs"))
	}
	t.Logf("sandbox up (%s registry) in %.1fs, logs in %s", registry, time.Since(start).Seconds(), filepath.Join(s.Dir, "logs"))
	t.Cleanup(func() {
		if t.Failed() {
			dumpState(t, s)
			dumpLogs(t, s)
		}
		start := time.Now()
		if err := s.Down(context.Background()); err != nil {
			t.Errorf("sandbox down: %v", err)
		}
		t.Logf("sandbox down in %.1fs", time.Since(start).Seconds())
	})
	if !s.Controllers {
		t.Fatal("the sandbox started no clusterset-controller")
	}
	env, err := wt.New(s)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// dumpState shows, for every cluster and every namespace that holds a
// ServiceExport or ServiceImport, what the export and import were built
// from: the pods (IP, Ready), the EndpointSlices (address, ready), and the
// ServiceExports' conditions and ServiceImports' IPs and clusters. A wait
// that timed out says what it last saw; this says why.
func dumpState(t *testing.T, s *sandbox.Sandbox) {
	t.Helper()
	env, err := wt.New(s)
	if err != nil {
		t.Logf("state dump: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, cluster := range env.Clusters() {
		var b strings.Builder
		if err := writeState(ctx, &b, env.Client(cluster)); err != nil {
			fmt.Fprintf(&b, "error: %v\n", err)
		}
		t.Logf("state of %s at the failure:\n%s", cluster, b.String())
	}
}

// writeState writes the state dumpState shows for one cluster.
func writeState(ctx context.Context, w io.Writer, c client.Client) error {
	var exports mcsv1beta1.ServiceExportList
	var imports mcsv1beta1.ServiceImportList
	if err := c.List(ctx, &exports); err != nil {
		return err
	}
	if err := c.List(ctx, &imports); err != nil {
		return err
	}
	namespaces := map[string]bool{}
	for _, se := range exports.Items {
		namespaces[se.Namespace] = true
		var conds []string
		for _, cond := range se.Status.Conditions {
			conds = append(conds, fmt.Sprintf("%s=%s(%s: %s)", cond.Type, cond.Status, cond.Reason, cond.Message))
		}
		fmt.Fprintf(w, "ServiceExport %s/%s: %s\n", se.Namespace, se.Name, strings.Join(conds, "; "))
	}
	for _, si := range imports.Items {
		namespaces[si.Namespace] = true
		var clusters []string
		for _, sc := range si.Status.Clusters {
			clusters = append(clusters, sc.Cluster)
		}
		fmt.Fprintf(w, "ServiceImport %s/%s: type %s, ips %v, clusters %v\n", si.Namespace, si.Name, si.Spec.Type, si.Spec.IPs, clusters)
	}
	for _, ns := range slices.Sorted(maps.Keys(namespaces)) {
		var slicesList discoveryv1.EndpointSliceList
		if err := c.List(ctx, &slicesList, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, es := range slicesList.Items {
			var eps []string
			for _, ep := range es.Endpoints {
				eps = append(eps, fmt.Sprintf("%v ready=%t", ep.Addresses, ptr.Deref(ep.Conditions.Ready, true)))
			}
			fmt.Fprintf(w, "EndpointSlice %s/%s (service %s, managed by %s, rv %s): %s\n", ns, es.Name,
				es.Labels[discoveryv1.LabelServiceName], es.Labels[discoveryv1.LabelManagedBy], es.ResourceVersion, strings.Join(eps, ", "))
		}
		var pods corev1.PodList
		if err := c.List(ctx, &pods, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, p := range pods.Items {
			fmt.Fprintf(w, "Pod %s/%s: %s, IP %s, ready=%t, deleting=%t\n", ns, p.Name, p.Status.Phase, p.Status.PodIP, podutils.IsPodReady(&p), p.DeletionTimestamp != nil)
		}
	}
	return nil
}

// dumpLogs shows the end of every controller's and CoreDNS's log (and moto's) in the test
// output: usually the quickest way to see why an import did not happen.
func dumpLogs(t *testing.T, s *sandbox.Sandbox) {
	t.Helper()
	logs := s.ControllerLogs()
	dnsLogs, _ := filepath.Glob(filepath.Join(s.Dir, "logs", "*coredns*.log"))
	logs = append(logs, dnsLogs...)
	if moto := filepath.Join(s.Dir, "logs", "moto.log"); fileExists(moto) {
		logs = append(logs, moto)
	}
	for _, f := range logs {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var lines []string
		for _, l := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
			// moto's access log says nothing that the controllers' logs
			// do not.
			if !strings.Contains(l, "\" 200 -") {
				lines = append(lines, l)
			}
		}
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		t.Logf("last %d lines of %s:\n%s", len(lines), f, strings.Join(lines, "\n"))
	}
	// Then what each controller's goroutines were doing, ours only (after
	// the log tails, which the dump would push out): a reconcile that never
	// returns shows here, and nowhere else.
	if err := s.QuitControllers(); err != nil {
		t.Logf("SIGQUIT to the controllers: %v", err)
	}
	for _, f := range s.ControllerLogs() {
		if stacks := ourGoroutines(f); stacks != "" {
			t.Logf("goroutines of clusterset code in %s at the failure (SIGQUIT):\n%s", f, stacks)
		}
	}
}

var criPrefix = regexp.MustCompile(`^\S+ (stdout|stderr) [FP] ?`)

// ourGoroutines returns the goroutine stacks that the Go runtime wrote to log
// file f on SIGQUIT and that run clusterset's code (a frame in
// github.com/clusterset/clusterset/pkg/), "" when there are none.
func ourGoroutines(f string) string {
	data, err := os.ReadFile(f)
	if err != nil {
		return ""
	}
	// A pod's log file (CRI format) prefixes every line with its time,
	// stream and a tag: "2026-11-30T17:49:43.1Z stderr F goroutine 1 ...".
	lines := strings.Split(string(data), "\n")
	for k, l := range lines {
		if m := criPrefix.FindStringIndex(l); m != nil {
			lines[k] = l[m[1]:]
		}
	}
	text := strings.Join(lines, "\n")
	i := strings.LastIndex(text, "SIGQUIT: quit")
	if i < 0 {
		return ""
	}
	var out []string
	for _, g := range strings.Split(text[i:], "\n\n") {
		if strings.HasPrefix(g, "goroutine ") && strings.Contains(g, "github.com/clusterset/clusterset/pkg/") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
