//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilexec "k8s.io/client-go/util/exec"
	"k8s.io/kubectl/pkg/util/podutils"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/sandbox"
	wt "github.com/clusterset/clusterset/test/e2e/walkthrough"
)

// The fault matrix of docs/reliability.md, on real nodes (containerd,
// kubelet, kube-proxy; the controllers as pods) with the hub registry and
// three clusters: cls1 is the hub, cls2 and cls3 both export "shared" (2
// pods each), and the traffic that matters flows from cls3's client pod
// through the ClusterSetIP of "shared". Each fault is done to the running
// processes (paused: connections accepted and never answered; restarted;
// killed; frozen) while traffic flows, and each subtest logs a line
// "FAULT <name>: …" with the figures the matrix reports.
//
// The controllers run with a 2 s heartbeat and a 20 s liveness grace
// period, so that a silent member is judged within the test's time.
const (
	shared     = "shared"  // exported from cls2 and cls3
	leaving    = "leaving" // exported from cls2, unexported while the hub is down
	churn      = "churn"   // cls2 scales it 1 → 50 while its controller is killed
	hubCluster = "cls1"
	faultGrace = 20 * time.Second
)

func TestRealNodesFaults(t *testing.T) {
	env := startSandboxNodes(t, sandbox.RegistryHub, sandbox.NodesReal, func(o *sandbox.Options) {
		o.Dir = filepath.Join(repoDir, ".cache", "e2e", "faults-real")
		o.Clusters = 3
		o.ControllerArgs = []string{"--heartbeat-interval=2s", "--liveness-grace-period=" + faultGrace.String()}
	})
	setupFaults(t, env, "cls2", "cls3")
	hub := hubCluster + "/kube-apiserver"
	t.Run("HubUnreachable", func(t *testing.T) {
		testRegistryUnreachable(t, env, registryFault{
			what:  "hub API server hung",
			begin: func() error { return env.Sandbox.Pause(hub) },
			end:   func() error { return env.Sandbox.Resume(hub) },
		}, "cls2", "cls3")
	})
	t.Run("HubStopped", func(t *testing.T) {
		testRegistryUnreachable(t, env, registryFault{
			what:  "hub API server stopped",
			begin: func() error { return env.Sandbox.Stop(hub, 10*time.Second) },
			end:   func() error { return env.Sandbox.Start(hub) },
		}, "cls2", "cls3")
	})
	t.Run("HubEtcdRestarted", func(t *testing.T) { testHubEtcdRestarted(t, env) })
	t.Run("ControllerKilledDuringChurn", func(t *testing.T) { testControllerKilledDuringChurn(t, env) })
	t.Run("MemberClusterStopped", func(t *testing.T) { testMemberClusterStopped(t, env) })
}

// TestRealNodesFaultsCloudMap is the registry outage of the matrix with
// Cloud Map (moto) as the registry: two clusters, both exporting shared.
func TestRealNodesFaultsCloudMap(t *testing.T) {
	env := startSandboxNodes(t, sandbox.RegistryCloudMap, sandbox.NodesReal, func(o *sandbox.Options) {
		o.Dir = filepath.Join(repoDir, ".cache", "e2e", "faults-cloudmap-real")
		o.ControllerArgs = []string{"--heartbeat-interval=2s", "--liveness-grace-period=" + faultGrace.String()}
	})
	setupFaults(t, env, "cls1", "cls2")
	t.Run("CloudMapUnreachable", func(t *testing.T) {
		testRegistryUnreachable(t, env, registryFault{
			what:  "Cloud Map (moto) hung",
			begin: func() error { return env.Sandbox.Pause("moto") },
			end:   func() error { return env.Sandbox.Resume("moto") },
		}, "cls1", "cls2")
	})
	// moto holds its records in memory, so stopping its process would
	// lose them, which Cloud Map never does. Instead both nodes refuse
	// moto's port: to the controllers Cloud Map is down (connections
	// refused, open ones reset) and comes back with every record.
	u, err := url.Parse(env.Sandbox.MotoEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatalf("moto's port in %q: %v", env.Sandbox.MotoEndpoint, err)
	}
	refuse := func(refused bool) error {
		var errs []error
		for _, c := range []string{"cls1", "cls2"} {
			errs = append(errs, env.Sandbox.RefusePort(t.Context(), c, port, refused))
		}
		return errors.Join(errs...)
	}
	t.Run("CloudMapStopped", func(t *testing.T) {
		testRegistryUnreachable(t, env, registryFault{
			what:  "Cloud Map (moto) refused",
			begin: func() error { return refuse(true) },
			end:   func() error { return refuse(false) },
		}, "cls1", "cls2")
	})
}

// registryFault makes the registry unreachable (begin) and reachable again
// (end).
type registryFault struct {
	what       string
	begin, end func() error
}

// setupFaults runs the walkthrough with client pods, then exports shared (2
// pods) from writer and reader, and leaving (1 pod) from writer.
func setupFaults(t *testing.T, env *wt.Env, writer, reader string) {
	t.Helper()
	walkthroughWithClients(t, env)
	ctx := t.Context()
	for _, c := range []string{writer, reader} {
		if err := env.Create(ctx, c, wt.Deployment(wt.Namespace, shared, 2), wt.ServiceObject(wt.Namespace, shared), wt.ServiceExport(wt.Namespace, shared)); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.Create(ctx, writer, wt.Deployment(wt.Namespace, leaving, 1), wt.ServiceObject(wt.Namespace, leaving), wt.ServiceExport(wt.Namespace, leaving)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every cluster to import shared (2 pods in each exporter) and leaving", 3*time.Minute,
		allOf(importedEverywhere(env, shared, []string{writer, reader}, 4), importedEverywhere(env, leaving, []string{writer}, 1)))
}

// testRegistryUnreachable: the registry is unreachable for 60 s (hung:
// connections accepted and never answered; or down: connections reset or
// refused)
// while writer scales shared 2 → 4 and deletes the ServiceExport of leaving.
// Meanwhile reader keeps its imports as they were, so traffic keeps flowing
// to live endpoints; writer's exports say Ready=False Failed, and leaving
// stays Terminating. When the registry answers again, everything converges:
// reader imports the 4 new endpoints, leaving is gone everywhere. It starts
// from shared at 2 pods in each of writer and reader and leaving exported
// by writer, and sets that up again after an earlier run.
func testRegistryUnreachable(t *testing.T, env *wt.Env, fault registryFault, writer, reader string) {
	ctx := t.Context()
	host := wt.FQDN(shared, wt.Namespace)
	if err := env.Scale(ctx, writer, wt.Namespace, shared, 2); err != nil {
		t.Fatal(err)
	}
	if err := env.Create(ctx, writer, wt.ServiceExport(wt.Namespace, leaving)); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	waitFor(t, "every cluster to import shared (2 pods in each exporter) and leaving", 3*time.Minute,
		allOf(importedEverywhere(env, shared, []string{writer, reader}, 4), importedEverywhere(env, leaving, []string{writer}, 1)))
	before := importedAddresses(t, env, reader, shared)
	p := startProbe(t, env, reader, host)
	ended := false
	end := func() {
		if !ended {
			ended = true
			if err := fault.end(); err != nil {
				t.Error(err)
			}
		}
	}
	// Undone even when begin fails half-way (one node of two refused), so
	// that the tests after this one do not run with the fault in place.
	defer end()
	start := time.Now()
	if err := fault.begin(); err != nil {
		t.Fatal(err)
	}

	if err := env.Scale(ctx, writer, wt.Namespace, shared, 4); err != nil {
		t.Fatal(err)
	}
	if err := env.Client(writer).Delete(ctx, wt.ServiceExport(wt.Namespace, leaving)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, writer+"'s export of shared to say the registry fails", 50*time.Second, exportConditionIs(env, writer, shared, "Ready", metav1.ConditionFalse, "Failed"))
	waitFor(t, writer+"'s deleted export of leaving to stay, saying the withdrawal fails", 50*time.Second, allOf(
		exportConditionIs(env, writer, leaving, "Ready", metav1.ConditionFalse, "Failed"),
		eventOn(env, writer, "ServiceExport", leaving, "WithdrawFailed")))
	if got := importedAddresses(t, env, reader, shared); !slices.Equal(got, before) {
		t.Errorf("%s's import of shared changed while the registry was down: %v, was %v", reader, got, before)
	}
	if imp, err := env.GetImport(ctx, reader, wt.Namespace, leaving); err != nil || !imp.Exists() {
		t.Errorf("%s's import of leaving went while the registry was down (its record cannot have been withdrawn): %v", reader, err)
	}
	reported := time.Since(start)
	time.Sleep(time.Until(start.Add(60 * time.Second)))
	end()
	back := time.Now()

	waitFor(t, "the 4 new pods imported, the export Ready again, leaving gone", 3*time.Minute, allOf(
		importedIn(env, []string{writer, reader}, shared, []string{writer, reader}, 6),
		exportReady(env, writer, shared),
		exportGone(env, writer, leaving),
		importGoneIn(env, []string{writer, reader}, leaving),
	))
	converged := time.Since(back)
	ok, failed := p.stop().count(start, time.Now())
	if failed > 0 {
		t.Errorf("%d of %d requests from %s to %s failed while the registry was down and after: %v", failed, ok+failed, reader, host, p.errors(start, time.Now()))
	}
	t.Logf("FAULT registry-unreachable (%s): 60s; the exports said Failed within %.1fs; %d requests from %s during and after, %d failed; converged %.1fs after the registry answered again",
		fault.what, reported.Seconds(), ok+failed, reader, failed, converged.Seconds())
	expectAnsweredBy(t, env, reader, host, wt.Port, append(readyPodNames(t, env, writer, shared), readyPodNames(t, env, reader, shared)...))
}

// testHubEtcdRestarted: the hub's etcd is stopped (SIGTERM) and started
// again. Records survive, traffic keeps flowing, and the next change
// propagates.
func testHubEtcdRestarted(t *testing.T, env *wt.Env) {
	ctx := t.Context()
	host := wt.FQDN(shared, wt.Namespace)
	waitFor(t, "the hub's API server to answer", 2*time.Minute, apiAnswers(env, hubCluster))
	p := startProbe(t, env, "cls3", host)
	start := time.Now()
	if err := env.Sandbox.Restart(ctx, hubCluster+"/etcd", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the hub's API server to answer after etcd's restart", 2*time.Minute, apiAnswers(env, hubCluster))
	restarted := time.Since(start)
	// Some change must go through the restarted hub.
	changed := time.Now()
	if err := env.Scale(ctx, "cls2", wt.Namespace, shared, 2); err != nil {
		t.Fatal(err)
	}
	ok, failed := p.stop().count(start, changed)
	waitFor(t, "cls2's scale-down to reach cls3", 2*time.Minute, importedIn(env, []string{"cls2", "cls3"}, shared, []string{"cls2", "cls3"}, 4))
	converged := time.Since(changed)
	if failed > 0 {
		t.Errorf("%d of %d requests from cls3 to %s failed while the hub's etcd restarted: %v", failed, ok+failed, host, p.errors(start, changed))
	}
	t.Logf("FAULT hub-etcd-restarted: hub answered again %.1fs after etcd's SIGTERM; %d requests from cls3 meanwhile, %d failed; a scale-down then reached cls3 in %.1fs",
		restarted.Seconds(), ok+failed, failed, converged.Seconds())
}

// testControllerKilledDuringChurn: cls2 scales churn 1 → 50 and, when a
// third of the pods are ready, both of cls2's controller processes are
// killed with SIGKILL. The kubelet restarts them; cls3 then imports exactly
// the 50 ready pods, nothing stale and nothing missing.
func testControllerKilledDuringChurn(t *testing.T, env *wt.Env) {
	ctx := t.Context()
	const replicas = 50
	if err := env.Create(ctx, "cls2", wt.Deployment(wt.Namespace, churn, 1), wt.ServiceObject(wt.Namespace, churn), wt.ServiceExport(wt.Namespace, churn)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cls3 to import churn's first pod", 2*time.Minute, importedIn(env, []string{"cls3"}, churn, []string{"cls2"}, 1))
	restartsBefore := controllerRestarts(t, env, "cls2")
	if err := env.Scale(ctx, "cls2", wt.Namespace, churn, replicas); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a third of churn's pods ready in cls2", 5*time.Minute, podsReadyAtLeast(env, "cls2", churn, replicas/3))
	waitFor(t, "both of cls2's controller pods Ready", time.Minute, controllerPodsReady(env, "cls2", 2))
	killed, err := env.Sandbox.KillContainerProcesses("cls2", "clusterset-cont", syscall.SIGKILL)
	// Both replicas (config/manager), so that the leader is certainly one.
	if err != nil || killed != 2 {
		t.Fatalf("killing cls2's controller processes: %d killed, want its 2 replicas; %v", killed, err)
	}
	waitFor(t, "all of churn's pods ready in cls2", 8*time.Minute, podsReady(env, "cls2", churn, replicas))
	allReady := time.Now()
	waitFor(t, "cls3 to import exactly the 50 ready pods", 3*time.Minute, importedIn(env, []string{"cls3"}, churn, []string{"cls2"}, replicas))
	converged := time.Since(allReady)
	if after := controllerRestarts(t, env, "cls2"); after < restartsBefore+killed {
		t.Errorf("cls2's controller containers restarted %d times in all, want at least %d more than the %d before", after, killed, restartsBefore)
	}
	t.Logf("FAULT controller-killed: %d controller processes of cls2 SIGKILLed during a 1→%d churn; cls3 imported all %d ready pods %.1fs after the last became ready",
		killed, replicas, replicas, converged.Seconds())
	// Free the node for what follows; nothing of churn may stay behind.
	if err := env.Scale(ctx, "cls2", wt.Namespace, churn, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cls3's import of churn to have no endpoint", 3*time.Minute, importedIn(env, []string{"cls3"}, churn, []string{"cls2"}, 0))
}

// testMemberClusterStopped: every process of cls2 (control plane, kubelet,
// containerd, kube-proxy, and its pods through the freezer) stops for 40 s,
// longer than the 20 s grace period. cls3 keeps the ServiceImport, drops
// cls2's endpoints once cls2's heartbeat is past the grace period (then
// every request succeeds), says so in a ClusterStale event, and takes the
// endpoints back once cls2 runs again.
func testMemberClusterStopped(t *testing.T, env *wt.Env) {
	ctx := t.Context()
	host := wt.FQDN(shared, wt.Namespace)
	waitFor(t, "shared imported everywhere from both", 3*time.Minute, importedEverywhere(env, shared, []string{"cls2", "cls3"}, 4))
	cls2Pods := readyPodNames(t, env, "cls2", shared)
	cls3Pods := readyPodNames(t, env, "cls3", shared)
	procs := env.Sandbox.ProcessesOf("cls2")
	p := startProbe(t, env, "cls3", host)
	start := time.Now()
	if err := env.Sandbox.Pause(procs...); err != nil {
		t.Fatal(err)
	}
	if err := env.Sandbox.FreezePods("cls2", true); err != nil {
		t.Fatal(err)
	}
	stopped := true
	restart := func() {
		if stopped {
			stopped = false
			if err := env.Sandbox.FreezePods("cls2", false); err != nil {
				t.Error(err)
			}
			if err := env.Sandbox.Resume(procs...); err != nil {
				t.Error(err)
			}
		}
	}
	defer restart()

	waitFor(t, "cls3 to drop cls2's endpoints and keep its own", faultGrace+time.Minute, importReadyFrom(env, "cls3", shared, map[string]int{"cls2": 0, "cls3": 2}))
	dropped := time.Since(start)
	waitFor(t, "a ClusterStale event on cls3's ServiceImport", 30*time.Second, eventOn(env, "cls3", "ServiceImport", shared, "ClusterStale"))
	if imp, err := env.GetImport(ctx, "cls3", wt.Namespace, shared); err != nil {
		t.Error(err)
	} else if got := slices.Sorted(slices.Values(imp.Clusters())); !slices.Equal(got, []string{"cls2", "cls3"}) {
		t.Errorf("cls3's ServiceImport while cls2 is silent: clusters %v; its records still count, only its endpoints go", got)
	}
	settled := time.Now()
	time.Sleep(time.Until(start.Add(40 * time.Second)))
	restart()
	back := time.Now()
	waitFor(t, "cls3 to take cls2's endpoints back", 2*time.Minute, importReadyFrom(env, "cls3", shared, map[string]int{"cls2": 2, "cls3": 2}))
	returned := time.Since(back)
	res := p.stop()
	early, earlyFailed := res.count(start, settled)
	ok, failed := res.count(settled.Add(5*time.Second), back)
	if failed > 0 || ok == 0 {
		t.Errorf("once cls2's endpoints were dropped, %d of %d requests from cls3 failed: %v", failed, ok+failed, res.errors(settled.Add(5*time.Second), back))
	}
	t.Logf("FAULT member-stopped: cls2 stopped 40s (grace %s); cls3 dropped its endpoints after %.1fs (%d of %d requests failed before, to cls2's frozen pods), 0 of %d after; took them back %.1fs after cls2 ran again",
		faultGrace, dropped.Seconds(), earlyFailed, early, ok, returned.Seconds())
	t.Logf("requests that failed before cls2's endpoints were dropped: %q; execs that did not run: %q", res.errors(start, settled), p.execFailures())
	expectAnsweredBy(t, env, "cls3", host, wt.Port, append(cls2Pods, cls3Pods...))
}

// probe sends HTTP requests from a cluster's client pod to a host, one after
// the other, and records each answer.
type probe struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	res    probeResults
	noExec []string // execs that did not run, not counted in res
}

type probeResult struct {
	// at is when the request was sent. Windows count requests by it, not
	// by when they ended: on a loaded machine an exec can end seconds after
	// its request timed out, and a request sent to a frozen pod before its
	// endpoints were dropped must not count among those sent after (CI: an
	// exec whose nc timed out at 8 s ended 16 s after it began, inside the
	// window).
	at  time.Time
	by  string
	err error
}

type probeResults []probeResult

func startProbe(t *testing.T, env *wt.Env, cluster, host string) *probe {
	ctx, cancel := context.WithCancel(t.Context())
	p := &probe{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for ctx.Err() == nil {
			// The request in the pod ends within 8 s (HTTPGet); the bound
			// here ends an exec whose stream hangs after that.
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			began := time.Now()
			by, err := env.HTTPGet(rctx, cluster, wt.Namespace, wt.ClientPod, host, wt.Port)
			cancel()
			if ctx.Err() != nil {
				return
			}
			var exitErr utilexec.ExitError
			if err != nil && !errors.As(err, &exitErr) && strings.Contains(err.Error(), ": exec ") {
				// The exec itself (test → API server → kubelet) did not
				// start or broke: no request was sent, which says nothing
				// about the data plane. Counted apart and tried again.
				p.mu.Lock()
				p.noExec = append(p.noExec, err.Error())
				p.mu.Unlock()
				continue
			}
			if err != nil {
				err = fmt.Errorf("after %s: %w", time.Since(began).Round(100*time.Millisecond), err)
			}
			p.mu.Lock()
			p.res = append(p.res, probeResult{at: began, by: by, err: err})
			p.mu.Unlock()
			time.Sleep(200 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

// stop ends the probe and returns its results.
func (p *probe) stop() probeResults {
	p.cancel()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.res
}

// execFailures returns the execs that did not run: the probe's own
// plumbing, not the traffic it measures.
func (p *probe) execFailures() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.noExec)
}

func (p *probe) errors(from, to time.Time) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.res.errors(from, to)
}

// count returns the answered and the failed requests sent in [from, to].
func (r probeResults) count(from, to time.Time) (ok, failed int) {
	for _, x := range r {
		if x.at.Before(from) || x.at.After(to) {
			continue
		}
		if x.err != nil {
			failed++
		} else {
			ok++
		}
	}
	return ok, failed
}

func (r probeResults) errors(from, to time.Time) []string {
	var out []string
	for _, x := range r {
		if x.err != nil && !x.at.Before(from) && !x.at.After(to) {
			out = append(out, x.at.Format("15:04:05.0")+" "+x.err.Error())
		}
	}
	return out
}

// importedAddresses returns the ready addresses of cluster's import of name.
func importedAddresses(t *testing.T, env *wt.Env, cluster, name string) []string {
	t.Helper()
	imp, err := env.GetImport(t.Context(), cluster, wt.Namespace, name)
	if err != nil {
		t.Fatal(err)
	}
	return imp.ReadyAddresses()
}

// importReadyFrom holds when cluster's import of name has exactly the given
// number of ready endpoints from each source cluster.
func importReadyFrom(env *wt.Env, cluster, name string, want map[string]int) wt.Condition {
	return func(ctx context.Context) (bool, string, error) {
		imp, err := env.GetImport(ctx, cluster, wt.Namespace, name)
		if err != nil {
			return false, "", err
		}
		got := map[string]int{}
		for _, ep := range imp.Endpoints() {
			if ep.Ready {
				got[ep.Cluster]++
			}
		}
		for c := range want {
			if _, ok := got[c]; !ok {
				got[c] = 0
			}
		}
		return maps.Equal(got, want), fmt.Sprintf("%s: ready endpoints of %s by source cluster %v, want %v", cluster, name, got, want), nil
	}
}

// exportConditionIs holds when the ServiceExport's condition typ has status
// and reason.
func exportConditionIs(env *wt.Env, cluster, name, typ string, status metav1.ConditionStatus, reason string) wt.Condition {
	return func(ctx context.Context) (bool, string, error) {
		se, err := env.GetExport(ctx, cluster, wt.Namespace, name)
		if err != nil || se == nil {
			return false, fmt.Sprintf("%s: no ServiceExport %s (%v)", cluster, name, err), nil
		}
		c := meta.FindStatusCondition(se.Status.Conditions, typ)
		if c == nil {
			return false, fmt.Sprintf("%s: %s has no %s condition", cluster, name, typ), nil
		}
		return c.Status == status && c.Reason == reason, fmt.Sprintf("%s: %s %s=%s %s: %s", cluster, name, typ, c.Status, c.Reason, c.Message), nil
	}
}

// exportGone holds when cluster has no ServiceExport of that name.
func exportGone(env *wt.Env, cluster, name string) wt.Condition {
	return func(ctx context.Context) (bool, string, error) {
		err := env.Client(cluster).Get(ctx, client.ObjectKey{Namespace: wt.Namespace, Name: name}, &mcsv1beta1.ServiceExport{})
		if apierrors.IsNotFound(err) {
			return true, cluster + ": ServiceExport " + name + " gone", nil
		}
		return false, fmt.Sprintf("%s: ServiceExport %s still there (%v)", cluster, name, err), nil
	}
}

// importGoneIn holds when none of the clusters has the ServiceImport.
func importGoneIn(env *wt.Env, clusters []string, name string) wt.Condition {
	return func(ctx context.Context) (bool, string, error) {
		for _, c := range clusters {
			imp, err := env.GetImport(ctx, c, wt.Namespace, name)
			if err != nil {
				return false, "", err
			}
			if imp.Exists() {
				return false, c + ": ServiceImport " + name + " still there", nil
			}
		}
		return true, fmt.Sprintf("no ServiceImport %s in %v", name, clusters), nil
	}
}

// apiAnswers holds when cluster's API server answers a read.
func apiAnswers(env *wt.Env, cluster string) wt.Condition {
	return func(ctx context.Context) (bool, string, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		err := env.Client(cluster).Get(ctx, client.ObjectKey{Name: wt.Namespace}, &corev1.Namespace{})
		if err != nil {
			return false, fmt.Sprintf("%s: %v", cluster, err), nil
		}
		return true, cluster + "'s API server answers", nil
	}
}

// podsReadyAtLeast holds when at least n pods labelled app=name are ready.
func podsReadyAtLeast(env *wt.Env, cluster, name string, n int) wt.Condition {
	return func(ctx context.Context) (bool, string, error) {
		pods, err := env.ReadyPods(ctx, cluster, wt.Namespace, name)
		if err != nil {
			return false, "", err
		}
		return len(pods) >= n, fmt.Sprintf("%s: %d pods of %s ready, want at least %d", cluster, len(pods), name, n), nil
	}
}

// eventOn holds when an event with reason is about the object.
func eventOn(env *wt.Env, cluster, kind, name, reason string) wt.Condition {
	return func(ctx context.Context) (bool, string, error) {
		var list eventsv1.EventList
		if err := env.Client(cluster).List(ctx, &list, client.InNamespace(wt.Namespace)); err != nil {
			return false, "", err
		}
		var seen []string
		for _, e := range list.Items {
			if e.Regarding.Kind == kind && e.Regarding.Name == name {
				if e.Reason == reason {
					return true, fmt.Sprintf("%s: %s event on %s %s: %s", cluster, reason, kind, name, e.Note), nil
				}
				seen = append(seen, e.Reason)
			}
		}
		return false, fmt.Sprintf("%s: no %s event on %s %s (seen %v)", cluster, reason, kind, name, seen), nil
	}
}

// controllerRestarts adds up the restarts of cluster's controller
// containers.
// controllerPodsReady holds once n clusterset-controller pods of cluster
// are Ready.
func controllerPodsReady(env *wt.Env, cluster string, n int) wt.Condition {
	return func(ctx context.Context) (bool, string, error) {
		var pods corev1.PodList
		if err := env.Client(cluster).List(ctx, &pods, client.MatchingLabels{"app.kubernetes.io/name": "clusterset-controller"}); err != nil {
			return false, "", err
		}
		ready := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && podutils.IsPodReady(&p) {
				ready++
			}
		}
		return ready == n, fmt.Sprintf("%s: %d of %d controller pods Ready", cluster, ready, len(pods.Items)), nil
	}
}

func controllerRestarts(t *testing.T, env *wt.Env, cluster string) int {
	t.Helper()
	var pods corev1.PodList
	if err := env.Client(cluster).List(t.Context(), &pods, client.MatchingLabels{"app.kubernetes.io/name": "clusterset-controller"}); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) == 0 {
		t.Fatalf("%s has no clusterset-controller pod", cluster)
	}
	n := 0
	for _, p := range pods.Items {
		for _, s := range p.Status.ContainerStatuses {
			n += int(s.RestartCount)
		}
	}
	return n
}
