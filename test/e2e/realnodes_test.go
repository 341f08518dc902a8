//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clusterset/clusterset/pkg/sandbox"
	wt "github.com/clusterset/clusterset/test/e2e/walkthrough"
)

// TestRealNodes runs the walkthrough on real nodes (containerd, kubelet,
// kube-proxy, CNI bridge; the hub registry; the controllers as pods
// installed from config/) and sends traffic: DNS (D1-D4) from inside pods,
// HTTP through the ClusterSetIP to the exporting cluster's pods from every
// cluster, cluster.local against clusterset.local, scaling, a headless
// StatefulSet's per-pod names and a port conflict; and checks that a pod
// cannot reach anything outside the sandbox.
func TestRealNodes(t *testing.T) {
	env := startSandboxNodes(t, sandbox.RegistryHub, sandbox.NodesReal)
	walkthroughWithClients(t, env)
	t.Run("TrafficFromEveryCluster", func(t *testing.T) { testTraffic(t, env) })
	t.Run("ControllersInCluster", func(t *testing.T) { testControllersInCluster(t, env) })
	t.Run("OperatorCommands", func(t *testing.T) { testOperatorCommands(t, env) })
	t.Run("DNSFromPods", func(t *testing.T) { testDNSFromPods(t, env) })
	t.Run("LocalAndClustersetNames", func(t *testing.T) { testLocalAndClustersetNames(t, env) })
	t.Run("ScaleFollowedByTraffic", func(t *testing.T) { testScaleFollowedByTraffic(t, env) })
	t.Run("HeadlessStatefulSetFromPods", func(t *testing.T) { testHeadlessFromPods(t, env) })
	t.Run("PortConflictTraffic", func(t *testing.T) { testPortConflictTraffic(t, env) })
	t.Run("NoRouteOutOfTheSandbox", func(t *testing.T) { testNoRouteOut(t, env) })
	t.Run("LeaderPodDeleted", func(t *testing.T) { testLeaderPodDeleted(t, env) })
	t.Run("UnexportStopsTraffic", func(t *testing.T) {
		testUnexport(t, env, wt.Service)
		for _, c := range env.Clusters() {
			waitFor(t, "D4 from inside "+c+"'s pod: NXDOMAIN", propagation, func(ctx context.Context) (bool, string, error) {
				_, err := env.Nslookup(ctx, c, wt.Namespace, wt.ClientPod, wt.FQDN(wt.Service, wt.Namespace))
				if err != nil && strings.Contains(err.Error(), "NXDOMAIN") {
					return true, "NXDOMAIN", nil
				}
				return false, fmt.Sprintf("still resolves (%v)", err), nil
			})
			if body, err := env.HTTPGet(t.Context(), c, wt.Namespace, wt.ClientPod, wt.FQDN(wt.Service, wt.Namespace), wt.Port); err == nil {
				t.Errorf("%s: %s answered %q after the unexport", c, wt.FQDN(wt.Service, wt.Namespace), body)
			}
		}
	})
}

// testTraffic: from a pod in every cluster (the exporter too), the
// clusterset name resolves to that cluster's ServiceImport IP, and requests
// to it are answered by every one of the exporter's pods and only by them.
func testTraffic(t *testing.T, env *wt.Env) {
	ctx := t.Context()
	pods, err := env.ReadyPods(ctx, wt.Exporter, wt.Namespace, wt.Service)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, p := range pods {
		want = append(want, p.Name)
	}
	slices.Sort(want)
	name := wt.FQDN(wt.Service, wt.Namespace)
	for _, c := range env.Clusters() {
		ips, err := importIPs(env, c, wt.Service)(ctx)
		if err != nil {
			t.Fatal(err)
		}
		addrs, err := env.Nslookup(ctx, c, wt.Namespace, wt.ClientPod, name)
		if err != nil {
			t.Fatalf("D1 from inside %s's pod: %v", c, err)
		}
		if !slices.Equal(addrs, ips) {
			t.Errorf("D1 from inside %s's pod: %s = %v, want %s's ServiceImport IPs %v", c, name, addrs, c, ips)
		}
		seen := map[string]int{}
		for i := 0; i < 12 && len(seen) < len(want) || i < 9; i++ {
			body, err := env.HTTPGet(ctx, c, wt.Namespace, wt.ClientPod, name, wt.Port)
			if err != nil {
				t.Fatalf("request %d from %s: %v", i+1, c, err)
			}
			seen[body]++
		}
		var got []string
		for p := range seen {
			got = append(got, p)
		}
		slices.Sort(got)
		t.Logf("%s -> %s: answered by %v", c, name, seen)
		for _, p := range got {
			if !slices.Contains(want, p) {
				t.Errorf("%s: answered by %q, which is not one of %s's pods %v", c, p, wt.Exporter, want)
			}
		}
		if len(got) < len(want) {
			// kube-proxy picks backends at random: 12 requests miss one of 3
			// pods with probability 3*(2/3)^12 < 2.4%; try longer before failing.
			for i := 0; i < 30 && len(seen) < len(want); i++ {
				body, err := env.HTTPGet(ctx, c, wt.Namespace, wt.ClientPod, name, wt.Port)
				if err == nil {
					seen[body]++
				}
			}
			if len(seen) < len(want) {
				t.Errorf("%s: answered only by %v, want every pod of %v", c, seen, want)
			}
		}
	}
}

// testNoRouteOut: a pod's connection to an address outside the sandbox's
// ranges (TEST-NET-3, never assigned) fails for want of a route, long
// before its own 5 s time-out: node namespaces have no default route and no
// link to the machine. (Linux takes ICMP "network unreachable" as a soft
// error and fails the connect at the first SYN retransmission, after 1 s.)
func testNoRouteOut(t *testing.T, env *wt.Env) {
	for _, c := range env.Clusters() {
		start := time.Now()
		out, errOut, err := env.Exec(t.Context(), c, wt.Namespace, wt.ClientPod, "nc", "-w", "5", "203.0.113.1", "80")
		elapsed := time.Since(start)
		if err == nil {
			t.Fatalf("%s: a pod connected to 203.0.113.1:80 (%q)", c, out)
		}
		if !strings.Contains(errOut+out, "unreachable") {
			t.Errorf("%s: connecting to 203.0.113.1:80 failed with %q, want a network-unreachable error", c, errOut+out)
		}
		if elapsed > 4500*time.Millisecond {
			t.Errorf("%s: the connection took %s to fail, want about 1 s (no route, not a time-out)", c, elapsed.Round(time.Millisecond))
		}
		t.Logf("%s: a connection to 203.0.113.1:80 failed in %s: %s", c, elapsed.Round(time.Millisecond), strings.TrimSpace(errOut+out))
	}
}

// TestRealNodesCloudMap is the walkthrough with traffic on real nodes with
// the Cloud Map registry (moto), the controllers installed with the Helm
// chart (TestRealNodes installs them with the hub overlay): the controller
// pods reach moto through their node's address. Then `helm upgrade` to
// changed values, and `helm uninstall`.
func TestRealNodesCloudMap(t *testing.T) {
	env := startSandboxNodes(t, sandbox.RegistryCloudMap, sandbox.NodesReal, func(o *sandbox.Options) { o.Install = sandbox.InstallHelm })
	walkthroughWithClients(t, env)
	t.Run("ControllersInCluster", func(t *testing.T) { testControllersInCluster(t, env) })
	t.Run("OperatorCommands", func(t *testing.T) {
		// status and doctor read Cloud Map with this machine's AWS
		// settings: the sandbox's (`kubectl clusterset sandbox env`).
		for _, kv := range env.Sandbox.AWSEnv() {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
		testOperatorCommands(t, env)
	})
	t.Run("TrafficFromEveryCluster", func(t *testing.T) { testTraffic(t, env) })
	t.Run("ScaleFollowedByTraffic", func(t *testing.T) { testScaleFollowedByTraffic(t, env) })
	t.Run("HelmUpgrade", func(t *testing.T) { testHelmUpgrade(t, env) })
	t.Run("HelmUninstall", func(t *testing.T) { testHelmUninstall(t, env) })
}

// walkthroughWithClients runs the walkthrough on a real-node sandbox, then
// starts the client pod in every cluster; the traffic tests need both.
func walkthroughWithClients(t *testing.T, env *wt.Env) {
	t.Helper()
	seed(t, env)
	if !t.Run("Walkthrough", func(t *testing.T) { testWalkthrough(t, env) }) {
		t.Fatal("the walkthrough failed: the traffic steps are not run")
	}
	ctx := t.Context()
	for _, c := range env.Clusters() {
		if err := env.Create(ctx, c, wt.ClientPodObject(wt.Namespace)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range env.Clusters() {
		if err := env.WaitPodReady(ctx, c, wt.Namespace, wt.ClientPod, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
}
