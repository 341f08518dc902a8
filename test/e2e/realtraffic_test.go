//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/inspect"
	"github.com/clusterset/clusterset/pkg/sandbox"
	wt "github.com/clusterset/clusterset/test/e2e/walkthrough"
)

// The real-node tests below send traffic from the client pod of each
// cluster (wt.ClientPod, created by TestRealNodes) and read who answered:
// every echo-server answers with its pod's name.

// readyPodNames returns the names of the ready pods labelled app=name.
func readyPodNames(t *testing.T, env *wt.Env, cluster, name string) []string {
	t.Helper()
	pods, err := env.ReadyPods(t.Context(), cluster, wt.Namespace, name)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(maps.Keys(pods))
}

// expectAnsweredBy sends requests from cluster's client pod to host:port
// until every pod of want has answered within a run of answers that came
// only from want (at least 6), and fails if that does not happen within
// propagation. Failed requests and answers from other pods are allowed
// before that run, while kube-proxy catches up with the EndpointSlices;
// they restart the run.
func expectAnsweredBy(t *testing.T, env *wt.Env, cluster, host string, port int, want []string) {
	t.Helper()
	deadline := time.Now().Add(propagation)
	seen := map[string]int{}
	var restarts []string
	for {
		body, err := env.HTTPGet(t.Context(), cluster, wt.Namespace, wt.ClientPod, host, port)
		switch {
		case err != nil:
			restarts = append(restarts, err.Error())
			clear(seen)
		case !slices.Contains(want, body):
			restarts = append(restarts, "answered by "+body)
			clear(seen)
		default:
			seen[body]++
		}
		if len(seen) == len(want) && total(seen) >= 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s -> %s:%d: after %s, answers %v, want every one of %v and no other; before that: %q",
				cluster, host, port, propagation, seen, want, restarts)
		}
		if err != nil {
			time.Sleep(pollEvery)
		}
	}
	t.Logf("%s -> %s:%d answered by %v (after %d failed or stray answers)", cluster, host, port, seen, len(restarts))
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// testControllersInCluster: on real nodes each cluster runs the controller
// as the 2 pods of config/manager, Running and Ready from the image the
// sandbox built (the image ID of .cache/images/clusterset-controller.tar).
func testControllersInCluster(t *testing.T, env *wt.Env) {
	ctx := t.Context()
	if !env.Sandbox.ControllersInCluster {
		t.Fatal("the sandbox runs the controllers as processes, not as pods")
	}
	digest := imageID(t, "clusterset-controller")
	for _, c := range env.Clusters() {
		var pods corev1.PodList
		if err := env.Client(c).List(ctx, &pods, client.InNamespace("clusterset-system")); err != nil {
			t.Fatal(err)
		}
		var ready int
		for _, p := range pods.Items {
			for _, cs := range p.Status.ContainerStatuses {
				if cs.Image != sandbox.ImageController || !strings.HasSuffix(cs.ImageID, digest) {
					t.Errorf("%s: pod %s runs %s (%s), want %s@%s", c, p.Name, cs.Image, cs.ImageID, sandbox.ImageController, digest)
				}
				if cs.Ready && p.Status.Phase == corev1.PodRunning {
					ready++
				}
			}
		}
		if ready != 2 {
			t.Errorf("%s: %d of %d controller pods Running and Ready, want 2", c, ready, len(pods.Items))
		}
		t.Logf("%s: %d controller pods Running and Ready from %s@%s", c, ready, sandbox.ImageController, digest)
	}
	// The shipped RBAC covers every call the controllers make: the API
	// server refused none of them (events included, which client-go only
	// logs).
	for _, f := range env.Sandbox.ControllerLogs() {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, "forbidden") {
				t.Errorf("%s: the API server refused a call of the controller: %.400s", f, line)
				break
			}
		}
	}
}

// imageID returns the ID (config digest, what the kubelet reports as a
// container's imageID) of an image tarball in .cache/images.
func imageID(t *testing.T, name string) string {
	t.Helper()
	img, err := tarball.ImageFromPath(filepath.Join(repoDir, ".cache", "images", name+".tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

// testDNSFromPods runs D2 and D4 through the pods' own resolver (D1 is in
// testTraffic, D3 in testHeadlessFromPods).
func testDNSFromPods(t *testing.T, env *wt.Env) {
	ctx := t.Context()
	name := wt.FQDN(wt.Service, wt.Namespace)
	for _, c := range env.Clusters() {
		srv := "_" + wt.PortName + "._tcp." + name
		out, errOut, err := env.Exec(ctx, c, wt.Namespace, wt.ClientPod, "nslookup", "-type=SRV", srv)
		if err != nil || !strings.Contains(out, fmt.Sprintf("%d %s", wt.Port, name)) {
			t.Errorf("D2 inside %s's pod: nslookup -type=SRV %s: %v\n%s%s", c, srv, err, out, errOut)
		}
		for _, n := range []string{wt.FQDN("not-imported", wt.Namespace), wt.FQDN(wt.Service, "no-such-namespace")} {
			if addrs, err := env.Nslookup(ctx, c, wt.Namespace, wt.ClientPod, n); err == nil || !strings.Contains(err.Error(), "NXDOMAIN") {
				t.Errorf("D4 inside %s's pod: %s = %v (%v), want NXDOMAIN", c, n, addrs, err)
			}
		}
		want, err := serviceIPs(env, c, "default", "kubernetes")(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if addrs, err := env.Nslookup(ctx, c, wt.Namespace, wt.ClientPod, "kubernetes.default.svc.cluster.local"); err != nil || !slices.Equal(addrs, want) {
			t.Errorf("D4 inside %s's pod: kubernetes.default.svc.cluster.local = %v (%v), want %v", c, addrs, err, want)
		}
	}
}

// testLocalAndClustersetNames: a Service that exists in both clusters but is
// exported only from cls1 is reached only at cls1's pods through its
// clusterset.local name, and only at the local pods through cluster.local.
func testLocalAndClustersetNames(t *testing.T, env *wt.Env) {
	ctx := t.Context()
	const name = "both"
	for _, c := range env.Clusters() {
		if err := env.Create(ctx, c, wt.Deployment(wt.Namespace, name, 2), wt.ServiceObject(wt.Namespace, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.Create(ctx, wt.Exporter, wt.ServiceExport(wt.Namespace, name)); err != nil {
		t.Fatal(err)
	}
	for _, c := range env.Clusters() {
		waitFor(t, "2 pods of both ready in "+c, propagation, podsReady(env, c, name, 2))
	}
	waitFor(t, "every cluster to import both from cls1 only", propagation, importedEverywhere(env, name, []string{wt.Exporter}, 2))
	exporterPods := readyPodNames(t, env, wt.Exporter, name)
	for _, c := range env.Clusters() {
		expectAnsweredBy(t, env, c, wt.FQDN(name, wt.Namespace), wt.Port, exporterPods)
		expectAnsweredBy(t, env, c, name+"."+wt.Namespace+".svc.cluster.local", wt.Port, readyPodNames(t, env, c, name))
	}
}

// testScaleFollowedByTraffic scales nginx-hello in cls1 3→0→3: at 0 a
// request through cls2's ClusterSetIP fails, at 3 it is answered by the new
// pods and only by them.
func testScaleFollowedByTraffic(t *testing.T, env *wt.Env) {
	ctx := t.Context()
	host := wt.FQDN(wt.Service, wt.Namespace)
	// The registry metrics of the exporter's controller (scraped from its
	// pods) count each publish the scaling causes.
	published := func() float64 {
		return controllerMetric(t, env, wt.Exporter, "clusterset_registry_calls_total", map[string]string{"backend": env.Sandbox.Registry, "operation": "publish", "result": "ok"})
	}
	publishedBefore := published()
	if publishedBefore < 1 {
		t.Errorf("the exporter's controller counted %v publishes after exporting %s, want at least 1", publishedBefore, wt.Service)
	}
	// The importer's controller measures how long each of cls1's changes
	// took to reach its import: the export itself, then each scaling step
	// (from the EndpointSlice controller's last-change-trigger-time).
	lag := func(suffix string) float64 {
		return controllerMetric(t, env, wt.Importer, "clusterset_propagation_lag_seconds_"+suffix, map[string]string{"source_cluster": wt.Exporter})
	}
	lagBefore := lag("count")
	// The export itself is measured when the importer's controllers ran
	// before it; after a Helm upgrade they started later and rightly
	// measure only what changed since.
	if importerControllersPredate(t, env, wt.Exporter, wt.Importer) && lagBefore < 1 {
		t.Errorf("%s's controller observed %v propagation lag samples from %s after the export, want at least 1", wt.Importer, lagBefore, wt.Exporter)
	}
	if err := env.Scale(ctx, wt.Exporter, wt.Namespace, wt.Service, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every cluster's import of nginx-hello to have no endpoint", propagation, endpointCount(env, wt.Service, 0))
	// The name still resolves (the import stays, with its VIP), and the
	// connection is rejected.
	waitFor(t, "a connection from cls2 to be rejected with no endpoint", propagation, func(ctx context.Context) (bool, string, error) {
		if _, err := env.Nslookup(ctx, wt.Importer, wt.Namespace, wt.ClientPod, host); err != nil {
			return false, "", fmt.Errorf("%s must still resolve at 0 replicas: %w", host, err)
		}
		// kube-proxy (nftables) rejects connections to a Service without
		// endpoints with an ICMP error, which nc reports as refused or
		// unreachable, at once rather than after its time-out.
		start := time.Now()
		out, errOut, err := env.Exec(ctx, wt.Importer, wt.Namespace, wt.ClientPod, "nc", "-w", "5", host, fmt.Sprint(wt.Port))
		msg := strings.ToLower(out + errOut)
		if err == nil || !(strings.Contains(msg, "refused") || strings.Contains(msg, "unreachable")) || time.Since(start) > 4*time.Second {
			return false, fmt.Sprintf("nc %s %d: %v %q after %s", host, wt.Port, err, out+errOut, time.Since(start).Round(time.Millisecond)), nil
		}
		return true, "rejected: " + strings.TrimSpace(errOut), nil
	})
	if err := env.Scale(ctx, wt.Exporter, wt.Namespace, wt.Service, wt.Replicas); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "3 pods of nginx-hello ready in cls1", propagation, podsReady(env, wt.Exporter, wt.Service, wt.Replicas))
	waitFor(t, "every cluster to import the 3 new pods", propagation,
		allOf(importedEverywhere(env, wt.Service, []string{wt.Exporter}, wt.Replicas), endpointCount(env, wt.Service, wt.Replicas)))
	expectAnsweredBy(t, env, wt.Importer, host, wt.Port, readyPodNames(t, env, wt.Exporter, wt.Service))
	// 3 → 0 → 3 is at least two records: none, then the new pods.
	if after := published(); after < publishedBefore+2 {
		t.Errorf("clusterset_registry_calls_total{operation=publish} went from %v to %v over 3→0→3, want at least 2 more", publishedBefore, after)
	}
	count, sum := lag("count"), lag("sum")
	if count < lagBefore+2 {
		t.Errorf("clusterset_propagation_lag_seconds_count{source_cluster=%q} in %s went from %v to %v over 3→0→3, want at least 2 more", wt.Exporter, wt.Importer, lagBefore, count)
	}
	if mean := sum / count; count > 0 && (mean <= 0 || mean > propagation.Seconds()) {
		t.Errorf("mean propagation lag from %s to %s: %.3fs over %v samples, want between 0 and %v", wt.Exporter, wt.Importer, mean, count, propagation)
	}
	t.Logf("propagation lag %s → %s: %v samples, mean %.3fs", wt.Exporter, wt.Importer, count, sum/max(count, 1))
}

// testHeadlessFromPods exports a headless Service of a StatefulSet from cls1;
// from every cluster's pod the headless name resolves to every pod IP (D3),
// each per-pod name <host>.cls1.<svc>.<ns>.svc.clusterset.local to its pod,
// and a connection to that name reaches that pod.
func testHeadlessFromPods(t *testing.T, env *wt.Env) {
	ctx := t.Context()
	exportHeadless(t, env)
	pods, err := env.ReadyPods(ctx, wt.Exporter, wt.Namespace, headless)
	if err != nil {
		t.Fatal(err)
	}
	podIPs := wt.PodIPs(pods)
	for _, c := range env.Clusters() {
		waitFor(t, "D3 inside "+c+"'s pod: "+wt.FQDN(headless, wt.Namespace)+" = every pod IP", propagation, func(ctx context.Context) (bool, string, error) {
			addrs, err := env.Nslookup(ctx, c, wt.Namespace, wt.ClientPod, wt.FQDN(headless, wt.Namespace))
			slices.Sort(addrs)
			return err == nil && slices.Equal(addrs, podIPs), fmt.Sprintf("%v (%v), want %v", addrs, err, podIPs), nil
		})
		for _, p := range pods {
			name := p.Name + "." + wt.Exporter + "." + wt.FQDN(headless, wt.Namespace)
			addrs, err := env.Nslookup(ctx, c, wt.Namespace, wt.ClientPod, name)
			if err != nil || !slices.Equal(addrs, []string{p.Status.PodIP}) {
				t.Errorf("D3 inside %s's pod: %s = %v (%v), want %s", c, name, addrs, err, p.Status.PodIP)
				continue
			}
			body, err := env.HTTPGet(ctx, c, wt.Namespace, wt.ClientPod, name, wt.TargetPort)
			if err != nil || body != p.Name {
				t.Errorf("inside %s's pod: http://%s:%d answered %q (%v), want %s", c, name, wt.TargetPort, body, err, p.Name)
			}
		}
	}
}

// testPortConflictTraffic is the port-conflict case with traffic: cls1
// exports dual with ports http 80 and admin 9090, cls2 with http 80 only.
// The import has both ports (the union, KEP-1645 "Service Port"); port 80
// reaches the pods of both clusters, port 9090 only cls1's, which expose it.
func testPortConflictTraffic(t *testing.T, env *wt.Env) {
	ctx := t.Context()
	const name, adminPort = "dual", 9090
	withAdmin := wt.Deployment(wt.Namespace, name, 2)
	echo := withAdmin.Spec.Template.Spec.Containers[0]
	admin := *echo.DeepCopy()
	admin.Name, admin.Args, admin.ReadinessProbe = "admin", []string{"-listen", fmt.Sprintf(":%d", adminPort)}, nil
	admin.Ports = []corev1.ContainerPort{{Name: "admin", ContainerPort: adminPort, Protocol: corev1.ProtocolTCP}}
	withAdmin.Spec.Template.Spec.Containers = append(withAdmin.Spec.Template.Spec.Containers, admin)
	svc1 := wt.ServiceObject(wt.Namespace, name)
	svc1.Spec.Ports = append(svc1.Spec.Ports, corev1.ServicePort{Name: "admin", Port: adminPort, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("admin")})
	if err := env.Create(ctx, wt.Exporter, withAdmin, svc1, wt.ServiceExport(wt.Namespace, name)); err != nil {
		t.Fatal(err)
	}
	if err := env.Create(ctx, wt.Importer, wt.Deployment(wt.Namespace, name, 2), wt.ServiceObject(wt.Namespace, name), wt.ServiceExport(wt.Namespace, name)); err != nil {
		t.Fatal(err)
	}
	for _, c := range env.Clusters() {
		waitFor(t, "2 pods of dual ready in "+c, propagation, podsReady(env, c, name, 2))
	}
	both := []string{wt.Exporter, wt.Importer}
	waitFor(t, "every cluster to import dual from both clusters", propagation, importedEverywhere(env, name, both, 4))
	for _, c := range env.Clusters() {
		imp, err := env.GetImport(ctx, c, wt.Namespace, name)
		if err != nil {
			t.Fatal(err)
		}
		var ports []string
		for _, p := range imp.ServiceImport.Spec.Ports {
			ports = append(ports, fmt.Sprintf("%s %d/%s", p.Name, p.Port, p.Protocol))
		}
		slices.Sort(ports)
		if want := []string{"admin 9090/TCP", "http 80/TCP"}; !slices.Equal(ports, want) {
			t.Errorf("%s: ServiceImport dual ports %v, want %v", c, ports, want)
		}
		if imp.ServiceImport.Spec.Type != mcsv1beta1.ClusterSetIP {
			t.Errorf("%s: ServiceImport dual type %s", c, imp.ServiceImport.Spec.Type)
		}
	}
	all := append(readyPodNames(t, env, wt.Exporter, name), readyPodNames(t, env, wt.Importer, name)...)
	slices.Sort(all)
	for _, c := range env.Clusters() {
		expectAnsweredBy(t, env, c, wt.FQDN(name, wt.Namespace), wt.Port, all)
		expectAnsweredBy(t, env, c, wt.FQDN(name, wt.Namespace), adminPort, readyPodNames(t, env, wt.Exporter, name))
	}
}

// testLeaderPodDeleted deletes the pod of the exporter's controller that
// holds the leader Lease: it releases the Lease, another pod (the standby or
// the replacement) takes it over within seconds, and a change made
// afterwards (nginx-hello scaled to 2) reaches every cluster and its traffic.
func testLeaderPodDeleted(t *testing.T, env *wt.Env) {
	ctx := t.Context()
	leader := func(ctx context.Context) (string, error) {
		var lease coordinationv1.Lease
		if err := env.Client(wt.Exporter).Get(ctx, client.ObjectKey{Namespace: "clusterset-system", Name: "clusterset-controller"}, &lease); err != nil {
			return "", err
		}
		holder, _, _ := strings.Cut(ptr.Deref(lease.Spec.HolderIdentity, ""), "_") // POD_UUID
		return holder, nil
	}
	old, err := leader(ctx)
	if err != nil || old == "" {
		t.Fatalf("%s: no leader (%q, %v)", wt.Exporter, old, err)
	}
	var pods corev1.PodList
	if err := env.Client(wt.Exporter).List(ctx, &pods, client.InNamespace("clusterset-system")); err != nil {
		t.Fatal(err)
	}
	var standbys []string
	for _, p := range pods.Items {
		if p.Name != old {
			standbys = append(standbys, p.Name)
		}
	}
	start := time.Now()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "clusterset-system", Name: old}}
	if err := env.Client(wt.Exporter).Delete(ctx, pod); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "another controller pod to take the Lease over", propagation, func(ctx context.Context) (bool, string, error) {
		now, err := leader(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		return now != "" && now != old, "leader " + now, nil
	})
	took := time.Since(start)
	now, err := leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Whoever asks first gets the Lease: the standby (it retries every
	// 2 s) or the pod that replaces the deleted one.
	if now == old {
		t.Errorf("%s: the deleted pod %s still holds the Lease", wt.Exporter, old)
	}
	// The leader releases the Lease when it stops; without that the
	// standby would wait out the lease duration (15 s).
	if took > 10*time.Second {
		t.Errorf("%s: the hand-over took %s, want well under the 15 s lease duration", wt.Exporter, took.Round(100*time.Millisecond))
	}
	role := "the replacement pod"
	if slices.Contains(standbys, now) {
		role = "the standby"
	}
	t.Logf("%s: leadership moved from %s to %s %s in %.1fs", wt.Exporter, old, role, now, took.Seconds())
	if err := env.Scale(ctx, wt.Exporter, wt.Namespace, wt.Service, 2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "2 pods of nginx-hello ready in cls1", propagation, podsReady(env, wt.Exporter, wt.Service, 2))
	waitFor(t, "every cluster to import exactly the 2 pods", propagation,
		allOf(importedEverywhere(env, wt.Service, []string{wt.Exporter}, 2), endpointCount(env, wt.Service, 2)))
	expectAnsweredBy(t, env, wt.Importer, wt.FQDN(wt.Service, wt.Namespace), wt.Port, readyPodNames(t, env, wt.Exporter, wt.Service))
}

// importerControllersPredate reports whether every clusterset-controller pod
// of importer started before the ServiceExport of nginx-hello in exporter
// was created.
func importerControllersPredate(t *testing.T, env *wt.Env, exporter, importer string) bool {
	t.Helper()
	export, err := env.GetExport(t.Context(), exporter, wt.Namespace, wt.Service)
	if err != nil {
		t.Fatal(err)
	}
	var pods corev1.PodList
	if err := env.Client(importer).List(t.Context(), &pods, client.InNamespace(inspect.ControllerNamespace),
		client.MatchingLabels{"app.kubernetes.io/name": inspect.ControllerName}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Status.StartTime == nil || !p.Status.StartTime.Before(&export.CreationTimestamp) {
			t.Logf("%s's controller pod %s started after the export: the export itself is not measured", importer, p.Name)
			return false
		}
	}
	return len(pods.Items) > 0
}
