package sandbox

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/clusterset/clusterset/internal/prereq"
)

// testWriter sends progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startSandbox brings up a sandbox in a temporary directory and takes it
// down when the test ends. Without the binaries the test is skipped, unless
// CI is set: then it fails.
func startSandbox(t *testing.T, opts Options) *Sandbox {
	t.Helper()
	repo, err := FindRepoDir()
	if err != nil {
		t.Fatal(err)
	}
	bin := os.Getenv("CLUSTERSET_SANDBOX_BIN")
	if bin == "" {
		bin = filepath.Join(repo, ".cache", "sandbox")
	}
	if missing := MissingBinaries(bin); len(missing) > 0 {
		prereq.Missing(t, "sandbox binaries "+strings.Join(missing, ", ")+" not in "+bin+": run `hack/build-binaries.sh sandbox`")
	}
	opts.Dir = t.TempDir()
	if opts.Nodes == "" {
		// These tests are about the control planes and kwok's simulated
		// pods; node_test.go covers real nodes.
		opts.Nodes = NodesKwok
	}
	opts.BinDir = bin
	opts.RepoDir = repo
	opts.Out = testWriter{t}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	s, err := Up(ctx, opts)
	if err != nil {
		t.Fatalf("sandbox up: %v", err)
	}
	t.Logf("sandbox up took %.1fs", time.Since(start).Seconds())
	t.Cleanup(func() {
		start := time.Now()
		if err := s.Down(context.Background()); err != nil {
			t.Errorf("sandbox down: %v", err)
		}
		t.Logf("sandbox down took %.1fs", time.Since(start).Seconds())
		for _, p := range s.Processes {
			if p.alive() {
				t.Errorf("%s (pid %d) still runs after down", p.Name, p.PID)
			}
		}
	})
	return s
}

func TestSandboxTwoClusters(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two local control planes")
	}
	s := startSandbox(t, Options{Clusters: 2, SkipControllers: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Load sees what Up recorded.
	loaded, err := Load(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Ready || len(loaded.Clusters) != 2 || len(loaded.Processes) != len(s.Processes) {
		t.Fatalf("state.json: ready=%v clusters=%d processes=%d, want ready, 2, %d", loaded.Ready, len(loaded.Clusters), len(loaded.Processes), len(s.Processes))
	}
	if s.Clusters[0].PodCIDR == s.Clusters[1].PodCIDR || s.Clusters[0].ServiceCIDR == s.Clusters[1].ServiceCIDR {
		t.Fatalf("clusters share CIDRs: %+v %+v", s.Clusters[0], s.Clusters[1])
	}

	cls1 := s.Clusters[0]
	kube, err := s.Kubernetes(cls1.Name)
	if err != nil {
		t.Fatal(err)
	}

	// Identity: the ClusterProperties name the cluster and the clusterset.
	for name, want := range map[string]string{"cluster.clusterset.k8s.io": "cls1", "clusterset.k8s.io": DefaultClusterSetID} {
		body, err := kube.Discovery().RESTClient().Get().AbsPath("/apis/about.k8s.io/v1alpha1/clusterproperties", name).DoRaw(ctx)
		if err != nil || !strings.Contains(string(body), `"value":"`+want+`"`) {
			t.Errorf("ClusterProperty %s: %s %v, want value %s", name, body, err, want)
		}
	}

	// A Deployment's pods become Running with IPs from cls1's pod CIDR.
	replicas := int32(3)
	labels := map[string]string{"app": "hello"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "hello", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "hello", Image: "nginx"}}},
			},
		},
	}
	if _, err := kube.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, podNet, err := net.ParseCIDR(cls1.PodCIDR)
	if err != nil {
		t.Fatal(err)
	}
	var pods *corev1.PodList
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err = kube.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=hello"})
		if err != nil || len(pods.Items) != int(replicas) {
			return false, nil
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("pods not Running with IPs: %v; pods: %+v", err, pods)
	}
	for _, p := range pods.Items {
		if ip := net.ParseIP(p.Status.PodIP); !podNet.Contains(ip) {
			t.Errorf("pod %s has IP %s outside cls1's pod CIDR %s", p.Name, p.Status.PodIP, cls1.PodCIDR)
		}
	}

	// cls1's CoreDNS answers cluster.local with the kubernetes Service's IP.
	svc, err := kube.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rcode, addrs, err := QueryA(ctx, cls1.DNS, "kubernetes.default.svc.cluster.local")
	if err != nil || rcode != 0 || len(addrs) != 1 || addrs[0].String() != svc.Spec.ClusterIP {
		t.Fatalf("DNS kubernetes.default.svc.cluster.local at %s: rcode %d, %v, %v; want %s", cls1.DNS, rcode, addrs, err, svc.Spec.ClusterIP)
	}
	// A name in clusterset.local that nobody exports does not exist.
	rcode, _, err = QueryA(ctx, cls1.DNS, "nothing.default.svc.clusterset.local")
	if err != nil || rcode != 3 {
		t.Errorf("DNS nothing.default.svc.clusterset.local: rcode %d, %v; want NXDOMAIN (3)", rcode, err)
	}

	// The shipped Corefile patch applies to a kube-system/coredns ConfigMap
	// as real clusters have it.
	if _, err := kube.CoreV1().ConfigMaps("kube-system").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system"},
		Data:       map[string]string{"Corefile": ".:53 {\n    kubernetes cluster.local\n}\n"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	repo, err := FindRepoDir()
	if err != nil {
		t.Fatal(err)
	}
	patchYAML, err := os.ReadFile(filepath.Join(repo, "config", "coredns", "corefile-patch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	patchJSON, err := sigsyaml.YAMLToJSON(patchYAML)
	if err != nil {
		t.Fatal(err)
	}
	cm, err := kube.CoreV1().ConfigMaps("kube-system").Patch(ctx, "coredns", types.StrategicMergePatchType, patchJSON, metav1.PatchOptions{})
	if err != nil || !strings.Contains(cm.Data["Corefile"], "multicluster clusterset.local") {
		t.Errorf("patching kube-system/coredns with corefile-patch.yaml: %v; Corefile now:\n%s", err, cm.Data["Corefile"])
	}

	// CoreDNS runs as the shipped ClusterRole's ServiceAccount, not as admin.
	corefile, err := os.ReadFile(filepath.Join(cls1.Dir, "Corefile"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(corefile), "multicluster clusterset.local") || !strings.Contains(string(corefile), "bind 127.0.0.1") {
		t.Errorf("Corefile lacks the shipped multicluster patch or the loopback bind:\n%s", corefile)
	}
	kc, err := os.ReadFile(filepath.Join(cls1.Dir, "coredns.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(kc), "client-certificate-data") || !strings.Contains(string(kc), "token:") {
		t.Errorf("CoreDNS kubeconfig should carry a ServiceAccount token only")
	}
}

// TestUpAfterCrash: a second Up in the same directory, after the first was
// left behind without Down (as after a crash), stops the old processes and
// starts cleanly; a third Up on a running sandbox refuses.
func TestUpAfterCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a local control plane")
	}
	first := startSandbox(t, Options{Clusters: 1, SkipControllers: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	opts := Options{Clusters: 1, SkipControllers: true, Dir: first.Dir, BinDir: first.BinDir, Out: testWriter{t}}
	if _, err := Up(ctx, opts); err == nil || !strings.Contains(err.Error(), ErrRunning.Error()) {
		t.Fatalf("Up on a running sandbox: %v, want ErrRunning", err)
	}
	// Simulate a crash in the middle of Up: state says not ready.
	first.Ready = false
	if err := first.save(); err != nil {
		t.Fatal(err)
	}
	second, err := Up(ctx, opts)
	if err != nil {
		t.Fatalf("Up after a crash: %v", err)
	}
	t.Cleanup(func() { _ = second.Down(context.Background()) })
	for _, p := range first.Processes {
		if p.alive() {
			t.Errorf("%s of the crashed sandbox still runs", p.Name)
		}
	}
	if _, _, err := QueryA(ctx, second.Clusters[0].DNS, "kubernetes.default.svc.cluster.local"); err != nil {
		t.Errorf("second sandbox's DNS: %v", err)
	}
}

// TestSandboxCloudMap: --registry cloudmap starts a local moto server that
// answers Cloud Map on 127.0.0.1.
func TestSandboxCloudMap(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a local control plane")
	}
	if _, err := exec.LookPath("moto_server"); err != nil {
		prereq.Missing(t, "moto_server is not installed (pip install 'moto[server]')")
	}
	s := startSandbox(t, Options{Clusters: 1, Registry: RegistryCloudMap, SkipControllers: true})
	if !strings.HasPrefix(s.MotoEndpoint, "http://127.0.0.1:") {
		t.Fatalf("moto endpoint %q is not on 127.0.0.1", s.MotoEndpoint)
	}
	env := strings.Join(s.AWSEnv(), " ")
	for _, want := range []string{"AWS_ENDPOINT_URL=" + s.MotoEndpoint, "AWS_EC2_METADATA_DISABLED=true"} {
		if !strings.Contains(env, want) {
			t.Errorf("AWSEnv lacks %s: %s", want, env)
		}
	}
	// ListNamespaces, the way the AWS SDK sends it, without the SDK.
	req, err := http.NewRequest(http.MethodPost, s.MotoEndpoint+"/", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "Route53AutoNaming_v20170314.ListNamespaces")
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/servicediscovery/aws4_request, SignedHeaders=host, Signature=0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "Namespaces") {
		t.Errorf("moto ListNamespaces: %d %s", resp.StatusCode, body)
	}
}

// The Corefile patch that users apply must be the Corefile the sandbox runs.
func TestShippedCorefilePatchMatchesCorefile(t *testing.T) {
	repo, err := FindRepoDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(repo, "config", "coredns")
	core, err := os.ReadFile(filepath.Join(dir, "Corefile"))
	if err != nil {
		t.Fatal(err)
	}
	patch, err := os.ReadFile(filepath.Join(dir, "corefile-patch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, l := range strings.Split(string(core), "\n") {
		if !strings.HasPrefix(l, "#") && strings.TrimSpace(l) != "" {
			want = append(want, l)
		}
	}
	_, body, ok := strings.Cut(string(patch), "Corefile: |\n")
	if !ok {
		t.Fatal("corefile-patch.yaml has no data.Corefile block")
	}
	var got []string
	for _, l := range strings.Split(body, "\n") {
		if strings.TrimSpace(l) != "" {
			got = append(got, strings.TrimPrefix(l, "    "))
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("corefile-patch.yaml and Corefile differ:\npatch:\n%s\nCorefile:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	block, err := shippedKubernetesBlock(repo)
	if err != nil {
		t.Fatal(err)
	}
	c := sandboxCorefile(block, 5353, 8181, "/k", "cls1")
	for _, want := range []string{".:5353 {", "bind 127.0.0.1", "ready 127.0.0.1:8181", "kubeconfig /k cls1", "multicluster clusterset.local"} {
		if !strings.Contains(c, want) {
			t.Errorf("sandbox Corefile lacks %q:\n%s", want, c)
		}
	}
	if strings.Contains(c, "forward") {
		t.Errorf("sandbox Corefile must not forward outside 127.0.0.0/8:\n%s", c)
	}
}

// The links the kubelets leave in /var/log/containers are removed when they
// point into the sandbox's pod logs, and only then.
func TestRemoveContainerLogLinks(t *testing.T) {
	links, podLogs, other := t.TempDir(), filepath.Join(t.TempDir(), "pods"), t.TempDir()
	mk := func(name, target string) {
		if err := os.Symlink(target, filepath.Join(links, name)); err != nil {
			t.Fatal(err)
		}
	}
	mk("ours.log", filepath.Join(podLogs, "cls1", "demo_web_uid", "web", "0.log"))
	mk("theirs.log", filepath.Join(other, "demo_web_uid", "web", "0.log"))
	mk("prefix.log", podLogs+"-other/x.log")
	if err := os.WriteFile(filepath.Join(links, "file.log"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := removeContainerLogLinks(links, podLogs); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(links)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if want := []string{"file.log", "prefix.log", "theirs.log"}; !slices.Equal(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
	if err := removeContainerLogLinks(filepath.Join(links, "absent"), podLogs); err != nil {
		t.Errorf("absent link directory: %v", err)
	}
}

func TestSplitImage(t *testing.T) {
	for ref, want := range map[string][2]string{
		"clusterset.dev/clusterset-controller:dev": {"clusterset.dev/clusterset-controller", "dev"},
		"localhost:5000/c:v1":                      {"localhost:5000/c", "v1"},
	} {
		name, tag, err := splitImage(ref)
		if err != nil || name != want[0] || tag != want[1] {
			t.Errorf("splitImage(%q) = %q, %q, %v; want %q, %q", ref, name, tag, err, want[0], want[1])
		}
	}
	if _, _, err := splitImage("localhost:5000/c"); err == nil {
		t.Error("splitImage accepted a reference without a tag (the ':' is the registry's port)")
	}
}
