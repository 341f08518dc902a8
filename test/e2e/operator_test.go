//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/clusterset/clusterset/internal/promtext"
	"github.com/clusterset/clusterset/pkg/cli"
	"github.com/clusterset/clusterset/pkg/inspect"
	wt "github.com/clusterset/clusterset/test/e2e/walkthrough"
)

// testOperatorCommands runs doctor, list and status SERVICE against a real
// installation (controller and CoreDNS as pods, installed from config/)
// after the walkthrough: every per-cluster check passes, and the
// walkthrough's service shows with all its endpoints in every cluster.
// test/integration's TestCLI holds the golden output and the broken cases.
func testOperatorCommands(t *testing.T, env *wt.Env) {
	run := func(args ...string) (string, error) {
		cmd := cli.NewRootCommand()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append(args, "--kubeconfig", env.Sandbox.Kubeconfig, "--contexts", strings.Join(env.Clusters(), ",")))
		err := cmd.ExecuteContext(t.Context())
		return out.String(), err
	}

	out, err := run("doctor")
	if err != nil {
		t.Errorf("doctor failed on a healthy installation: %v\n%s", err, out)
	}
	for _, c := range env.Clusters() {
		// The hub's address in the members' Secret is cls1's node
		// address, which this machine has no route to; doctor reaches the
		// same API server through the kubeconfig's cls1 (same CA), with
		// each member's own credentials.
		for _, check := range []string{"apis", "identity", "controller", "coredns", "registry", "clock", "heartbeat"} {
			if !regexp.MustCompile(`(?m)^OK\s+` + c + `\s+` + check + `\s`).MatchString(out) {
				t.Errorf("doctor: %s %s is not OK:\n%s", c, check, out)
			}
		}
	}
	if strings.Contains(out, "WARN") {
		t.Errorf("doctor warns on a healthy installation:\n%s", out)
	}
	t.Logf("doctor:\n%s", out)
	for _, c := range env.Clusters() {
		// Every replica judges liveness; each sees both clusters alive.
		// Replicas set the gauge at their liveness check, once per
		// heartbeat interval (10s), so one that started moments ago may
		// not have judged yet: wait up to three intervals.
		var wrong []string
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
			wrong = nil
			alive := controllerMetricByPod(t, env, c, "clusterset_members", map[string]string{"state": "alive"})
			stale := controllerMetricByPod(t, env, c, "clusterset_members", map[string]string{"state": "stale"})
			for pod, v := range alive {
				if v < float64(len(env.Clusters())) || stale[pod] != 0 {
					wrong = append(wrong, fmt.Sprintf("%s: alive %v, stale %v", pod, v, stale[pod]))
				}
			}
			if len(wrong) == 0 || time.Now().After(deadline) {
				break
			}
		}
		if len(wrong) > 0 {
			t.Errorf("%s: replicas that do not see all %d clusters alive after 30s (clusterset_members): %s", c, len(env.Clusters()), strings.Join(wrong, "; "))
		}
	}

	out, err = run("list", "-n", wt.Namespace)
	if err != nil {
		t.Fatalf("list: %v\n%s", err, out)
	}
	all := fmt.Sprintf("%d/%d", wt.Replicas, wt.Replicas)
	row := regexp.MustCompile(`(?m)^` + wt.Namespace + `\s+` + wt.Service + `\s+ClusterSetIP\s+cls1\s+cls1 ` + all + `, cls2 ` + all + `\s+<none>$`)
	if !row.MatchString(out) {
		t.Errorf("list: no row for %s exported by cls1 and imported with %s endpoints in cls1 and cls2:\n%s", wt.Service, all, out)
	}

	out, err = run("status", wt.Service, "-n", wt.Namespace)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	if n := strings.Count(out, fmt.Sprintf("Endpoints from cls1: %d ready of %d", wt.Replicas, wt.Replicas)); n != len(env.Clusters()) {
		t.Errorf("status: %d clusters show all %d endpoints from cls1, want %d:\n%s", n, wt.Replicas, len(env.Clusters()), out)
	}
	// The registry's record of cls1, read from the hub or Cloud Map.
	record := regexp.MustCompile(`(?m)^Registry \(` + env.Sandbox.Registry + `\)\n.*\n\s+cls1\s+ClusterSetIP\s.*\s` + all + `\s.* ago$`)
	if !record.MatchString(out) {
		t.Errorf("status: no registry record of cls1 with %s endpoints:\n%s", all, out)
	}
}

// controllerMetric sums one metric's samples whose labels have every value
// of labels (see promtext.Sum), over every running clusterset-controller
// pod of cluster that is not being deleted, read from each pod's /metrics
// through the API server's pod proxy.
func controllerMetric(t *testing.T, env *wt.Env, cluster, name string, labels map[string]string) float64 {
	t.Helper()
	var sum float64
	for _, v := range controllerMetricByPod(t, env, cluster, name, labels) {
		sum += v
	}
	return sum
}

// controllerMetricByPod is controllerMetric for each running controller pod
// of cluster, by pod name.
func controllerMetricByPod(t *testing.T, env *wt.Env, cluster, name string, labels map[string]string) map[string]float64 {
	t.Helper()
	cfg, err := env.Sandbox.RESTConfig(cluster)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pods, err := cs.CoreV1().Pods(inspect.ControllerNamespace).List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + inspect.ControllerName})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) == 0 {
		t.Fatalf("%s: no clusterset-controller pod", cluster)
	}
	out := map[string]float64{}
	for _, p := range pods.Items {
		// A pod a rollout is replacing may still be listed; its counts
		// leave with it.
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		raw, err := cs.CoreV1().Pods(p.Namespace).ProxyGet("http", p.Name, "8080", "/metrics", nil).DoRaw(t.Context())
		if err != nil {
			t.Fatalf("%s: /metrics of %s: %v", cluster, p.Name, err)
		}
		scraped, err := promtext.Parse(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s: /metrics of %s: %v", cluster, p.Name, err)
		}
		// A replica without the series yet reads 0.
		out[p.Name] = promtext.Sum(scraped, name, labels)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no running clusterset-controller pod", cluster)
	}
	return out
}
