package integration

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/clusterset/clusterset/internal/testenv"
	aboutv1alpha1 "github.com/clusterset/clusterset/pkg/apis/about/v1alpha1"
	"github.com/clusterset/clusterset/pkg/cli"
	"github.com/clusterset/clusterset/pkg/controllers/identity"
	"github.com/clusterset/clusterset/pkg/controllers/registrylink"
	"github.com/clusterset/clusterset/pkg/inspect"
	"github.com/clusterset/clusterset/pkg/membership"
	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/hub"
)

var updateGolden = flag.Bool("update", os.Getenv("UPDATE_GOLDEN") != "", "rewrite testdata/cli/*.golden from what the commands print")

// cliLease is the heartbeat lease of the members in TestCLI: short, so that
// a stopped member turns silent within seconds.
const cliLease = 3 * time.Second

// TestCLI runs `kubectl clusterset` export, list, status SERVICE, doctor and
// unexport against three real control planes joined to a hub the way `join`
// does (cls1 is also the hub), with clusterset-controller running for each
// under the shipped RBAC. Output is compared with testdata/cli/*.golden
// (UPDATE_GOLDEN=1 rewrites them). The controllers run in this process, so
// the test creates what an install would add around them: the controller's
// Deployment and leader Lease, and CoreDNS's Corefile and RBAC from
// config/coredns. doctor on a real installation is in test/e2e.
func TestCLI(t *testing.T) {
	var members []*member
	var cps []*testenv.Cluster
	for i := 1; i <= 3; i++ {
		cps = append(cps, testenv.Start(t))
	}
	for i, cp := range cps {
		m := &member{name: fmt.Sprintf("cls%d", i+1), cp: cp, admin: cp.Client, root: t, excluded: defaultExcluded(t)}
		m.defaults = identity.Identity{ClusterID: m.name, ClusterSetID: clusterSet}
		if err := membership.Join(ctx, io.Discard, cps[0].Config, cp.Config, membership.Options{ClusterID: m.name, ClusterSetID: clusterSet, TokenTTL: time.Hour}); err != nil {
			t.Fatalf("join %s: %v", m.name, err)
		}
		hubCfg := memberHubConfig(t, m)
		m.backend = func(_ context.Context, id identity.Identity) (registry.Registry, error) {
			return hub.New(hub.Options{ClusterSetID: id.ClusterSetID, ClusterID: id.ClusterID, Config: hubCfg, LeaseDuration: cliLease})
		}
		installControllerRBAC(t, m)
		installAround(t, m)
		mustCreate(t, m.admin, namespace("demo"))
		m.start(t, registrylink.Options{HeartbeatInterval: 500 * time.Millisecond})
		members = append(members, m)
	}
	cls1, cls2, cls3 := members[0], members[1], members[2]
	bare := testenv.StartWithoutCRDs(t)
	// cls1-alias is a second context of cls1, as an admin often has: the
	// commands count it once.
	kubeconfig := testenv.WriteKubeconfig(t, "cls1", map[string]*rest.Config{"cls1": cls1.cp.Config, "cls1-alias": cls1.cp.Config, "cls2": cls2.cp.Config, "cls3": cls3.cp.Config, "bare": bare.Config})
	run := func(args ...string) (string, error) {
		t.Helper()
		return runCLI(kubeconfig, args...)
	}

	// demo/nginx-hello: cls1 (3 ready) and cls2 (1 ready, 1 not).
	// demo/api: cls1 on 8080, cls2 on 9090: a port conflict.
	// demo/late: exported in cls3 without a Service.
	mustCreate(t, cls1.admin,
		service("demo", "nginx-hello", tcpPort("http", 80)),
		endpointSlice("demo", "nginx-hello", "nginx-hello-1", discoveryv1.AddressTypeIPv4, 8080, true, "10.11.0.1", "10.11.0.2", "10.11.0.3"),
		service("demo", "api", tcpPort("http", 8080)),
		endpointSlice("demo", "api", "api-1", discoveryv1.AddressTypeIPv4, 8080, true, "10.11.1.1"),
	)
	mustCreate(t, cls2.admin,
		service("demo", "nginx-hello", tcpPort("http", 80)),
		endpointSlice("demo", "nginx-hello", "nginx-hello-1", discoveryv1.AddressTypeIPv4, 8080, true, "10.12.0.1"),
		endpointSlice("demo", "nginx-hello", "nginx-hello-2", discoveryv1.AddressTypeIPv4, 8080, false, "10.12.0.2"),
		service("demo", "api", tcpPort("http", 9090)),
		endpointSlice("demo", "api", "api-1", discoveryv1.AddressTypeIPv4, 9090, true, "10.12.1.1"),
	)

	t.Run("Export", func(t *testing.T) {
		for _, m := range []*member{cls1, cls2} {
			out, err := run("export", "nginx-hello", "-n", "demo", "--context", m.name)
			if err != nil {
				t.Fatalf("export in %s: %v\n%s", m.name, err, out)
			}
			compareGolden(t, "export-"+m.name, out)
		}
		mustCreate(t, cls1.admin, serviceExport("demo", "api"))
		eventually(t, 30*time.Second, "cls1's api export Ready", exportCondition(cls1.admin, "demo", "api", "Ready", metav1.ConditionTrue, ""))
		mustCreate(t, cls2.admin, serviceExport("demo", "api"))
		out, err := run("export", "late", "-n", "demo", "--context", "cls3", "--wait", "20s")
		if err == nil || !strings.Contains(err.Error(), "not valid for export") {
			t.Fatalf("export of a Service that does not exist: err %v, want not valid\n%s", err, out)
		}
		compareGolden(t, "export-invalid", out)
	})

	converged := func() error {
		for _, m := range members {
			sl, err := importedSlices(m.admin, "demo", "nginx-hello")
			if err != nil {
				return err
			}
			if got := addressesOf(append(sl["cls1"], sl["cls2"]...)); got != "10.11.0.1 10.11.0.2 10.11.0.3 10.12.0.1 10.12.0.2!" {
				return fmt.Errorf("%s imports nginx-hello as %q", m.name, got)
			}
			if err := exportCondition(cls2.admin, "demo", "api", "Conflict", metav1.ConditionTrue, "PortConflict")(); err != nil {
				return err
			}
			if _, err := getImport(m.admin, "demo", "api"); err != nil {
				return fmt.Errorf("%s: api: %w", m.name, err)
			}
		}
		return nil
	}
	eventually(t, 60*time.Second, "the clusterset to converge", converged)

	t.Run("List", func(t *testing.T) {
		out, err := run("list", "-A")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		compareGolden(t, "list", out)
		out, err = run("list", "-n", "demo", "--contexts", "cls1,cls3", "-o", "yaml")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		compareGolden(t, "list-yaml", out)
	})

	t.Run("FlagMistakes", func(t *testing.T) {
		for _, args := range [][]string{
			{"status", "-o", "json"},
			{"status", "--contexts", "cls1,cls2"},
			{"list", "-o", "wide"},
			{"doctor", "--contexts", "cls1,nope"},
			{"doctor", "--contexts", "cls1,cls2", "--server", "https://127.0.0.1:1"},
			{"status", "nginx-hello", "-A"},
		} {
			if out, err := run(args...); err == nil {
				t.Errorf("%v succeeded, want an error:\n%s", args, out)
			}
		}
	})

	t.Run("StatusService", func(t *testing.T) {
		out, err := run("status", "nginx-hello", "-n", "demo", "--contexts", "cls1,cls2,cls3")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		compareGolden(t, "status-nginx-hello", out)
		out, err = run("status", "api", "-n", "demo", "--contexts", "cls1,cls2,cls3")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		compareGolden(t, "status-api", out)
	})

	doctor := func(t *testing.T, golden string, wantFail bool, args ...string) {
		t.Helper()
		out, err := run(append([]string{"doctor"}, args...)...)
		var exit cli.ExitError
		switch {
		case wantFail && !(errors.As(err, &exit) && exit == 1):
			t.Errorf("doctor: err %v, want exit status 1", err)
		case !wantFail && err != nil:
			t.Errorf("doctor: %v, want success", err)
		}
		compareGolden(t, golden, out)
	}

	t.Run("DoctorHealthy", func(t *testing.T) {
		// Without --contexts doctor takes every context that serves
		// ServiceExports: bare is left out.
		doctor(t, "doctor-healthy", false)
	})

	t.Run("DoctorCoreDNSWithoutPlugin", func(t *testing.T) {
		var cm corev1.ConfigMap
		key := client.ObjectKey{Namespace: inspect.CoreDNSNamespace, Name: inspect.CoreDNSConfigMap}
		if err := cls3.admin.Get(ctx, key, &cm); err != nil {
			t.Fatal(err)
		}
		shipped := cm.Data["Corefile"]
		cm.Data["Corefile"] = strings.ReplaceAll(strings.ReplaceAll(shipped, "    multicluster clusterset.local\n", ""), " clusterset.local", "")
		if err := cls3.admin.Update(ctx, &cm); err != nil {
			t.Fatal(err)
		}
		doctor(t, "doctor-coredns", true, "--contexts", "cls1,cls2,cls3")
		cm.Data["Corefile"] = shipped
		if err := cls3.admin.Update(ctx, &cm); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("DoctorMissingCRDs", func(t *testing.T) {
		doctor(t, "doctor-missing-crds", true, "--contexts", "cls1,cls2,cls3,bare")
	})

	t.Run("DoctorDuplicateClusterID", func(t *testing.T) {
		if _, err := envtest.InstallCRDs(bare.Config, envtest.CRDInstallOptions{Paths: []string{filepath.Join(testenv.RepoRoot(), "config", "crd")}}); err != nil {
			t.Fatal(err)
		}
		for name, value := range map[string]string{aboutv1alpha1.ClusterIDName: "cls2", aboutv1alpha1.ClusterSetIDName: clusterSet} {
			if err := createClusterProperty(ctx, bare.Client, name, value); err != nil {
				t.Fatal(err)
			}
		}
		doctor(t, "doctor-duplicate-id", true, "--contexts", "cls1,cls2,cls3,bare")
	})

	t.Run("DoctorSilentMember", func(t *testing.T) {
		cls3.stopController()
		time.Sleep(cliLease + time.Second)
		doctor(t, "doctor-silent-member", true, "--contexts", "cls1,cls2,cls3")
	})

	// An installation outside clusterset-system with another Secret name
	// (the chart's -n and registry.hub.secretName): doctor finds the
	// controller by its label and the Secret through the Deployment's
	// volume; join writes the Secret there. Two controllers in one cluster
	// fail the controller check.
	t.Run("DoctorControllerElsewhere", func(t *testing.T) {
		mustCreate(t, cls3.admin, namespace("platform"))
		out, err := run("join", "--context", "cls3", "--hub-kubeconfig", kubeconfig, "--hub-context", "cls1", "--cluster-id", "cls3", "--clusterset-id", clusterSet,
			"--controller-namespace", "platform", "--hub-secret-name", "hub-creds", "--hub-secret-key", "config")
		if err != nil || !strings.Contains(out, "secret platform/hub-creds holds the hub credentials") {
			t.Fatalf("join into platform/hub-creds: %v\n%s", err, out)
		}
		installDeployment(t, cls3, "platform", func(d *appsv1.Deployment) {
			c := &d.Spec.Template.Spec.Containers[0]
			c.Args = append(c.Args, "--hub-kubeconfig=/etc/clusterset/hub/config")
			c.VolumeMounts = []corev1.VolumeMount{{Name: "hub", MountPath: "/etc/clusterset/hub/", ReadOnly: true}}
			d.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "hub", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "hub-creds"}}}}
		})
		row := func(out, verdict, check, msg string) bool {
			return regexp.MustCompile(`(?m)^` + verdict + `\s+cls3\s+` + check + `\s+` + regexp.QuoteMeta(msg)).MatchString(out)
		}
		out, _ = run("doctor", "--contexts", "cls1,cls2,cls3")
		if !row(out, "FAIL", "controller", "2 clusterset-controller Deployments: "+inspect.ControllerNamespace+"/"+inspect.ControllerName+" and platform/"+inspect.ControllerName) {
			t.Errorf("doctor with two controllers in cls3: no FAIL naming both:\n%s", out)
		}
		if err := cls3.admin.Delete(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: inspect.ControllerNamespace, Name: inspect.ControllerName}}); err != nil {
			t.Fatal(err)
		}
		out, _ = run("doctor", "--contexts", "cls1,cls2,cls3")
		for _, want := range [][2]string{{"controller", "2/2 replicas available, leader"}, {"registry", "hub reachable; the member may write its own records and nothing else"}} {
			if !row(out, "OK", want[0], want[1]) {
				t.Errorf("doctor with cls3's controller in platform: %s is not OK %q:\n%s", want[0], want[1], out)
			}
		}
		// Told where to look, doctor looks only there.
		out, _ = run("doctor", "--contexts", "cls3", "--controller-namespace", "elsewhere")
		if !row(out, "FAIL", "controller", "no clusterset-controller Deployment; looked for elsewhere/clusterset-controller (--controller-namespace)") || !row(out, "FAIL", "registry", "Secret elsewhere/clusterset-hub-kubeconfig does not exist") {
			t.Errorf("doctor --controller-namespace elsewhere:\n%s", out)
		}
	})

	t.Run("Unexport", func(t *testing.T) {
		out, err := run("unexport", "nginx-hello", "-n", "demo", "--context", "cls2")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		compareGolden(t, "unexport", out)
		var se = serviceExport("demo", "nginx-hello")
		if err := cls2.admin.Get(ctx, client.ObjectKeyFromObject(se), se); err == nil {
			t.Errorf("the ServiceExport is still there after unexport")
		}
		eventually(t, 30*time.Second, "cls2's endpoints withdrawn from cls1's import", func() error {
			sl, err := importedSlices(cls1.admin, "demo", "nginx-hello")
			if err != nil {
				return err
			}
			if len(sl["cls2"]) > 0 {
				return fmt.Errorf("cls1 still imports %s from cls2", addressesOf(sl["cls2"]))
			}
			return nil
		})
		if _, err := run("unexport", "nginx-hello", "-n", "demo", "--context", "cls2"); err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("unexport of what is not exported: %v, want does not exist", err)
		}
	})
}

// memberHubConfig is the hub config in the Secret that join wrote in m.
func memberHubConfig(t *testing.T, m *member) *rest.Config {
	t.Helper()
	var s corev1.Secret
	if err := m.admin.Get(ctx, client.ObjectKey{Namespace: membership.HubSecretNamespace, Name: membership.HubSecretName}, &s); err != nil {
		t.Fatal(err)
	}
	cfg, err := membership.HubConfig(&s, membership.HubSecretKey)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// installDeployment creates in m's namespace ns the controller's Deployment
// (2 replicas, available, labelled as config/ and the chart label it;
// changed by each of deployment) and its leader Lease.
func installDeployment(t *testing.T, m *member, ns string, deployment ...func(*appsv1.Deployment)) {
	t.Helper()
	labels := map[string]string{"app.kubernetes.io/name": inspect.ControllerName}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: inspect.ControllerName, Labels: map[string]string{inspect.ControllerLabel: inspect.ControllerName}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "manager", Image: "clusterset-controller:dev",
					Args: []string{"--registry=hub", "--leader-elect"},
				}}},
			},
		},
	}
	for _, f := range deployment {
		f(dep)
	}
	mustCreate(t, m.admin, dep)
	dep.Status = appsv1.DeploymentStatus{Replicas: 2, ReadyReplicas: 2, AvailableReplicas: 2, UpdatedReplicas: 2}
	if err := m.admin.Status().Update(ctx, dep); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, m.admin, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: inspect.ControllerName},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To("clusterset-controller-5d8f7-x2x9q_0b1c"),
			LeaseDurationSeconds: ptr.To(int32(3600)),
			RenewTime:            ptr.To(metav1.NewMicroTime(time.Now())),
		},
	})

}

// installAround creates in m what an install puts around the controller:
// its Deployment and Lease in clusterset-system (installDeployment),
// CoreDNS's RBAC from config/coredns and the Corefile of
// config/coredns/corefile-patch.yaml.
func installAround(t *testing.T, m *member, deployment ...func(*appsv1.Deployment)) {
	t.Helper()
	installDeployment(t, m, inspect.ControllerNamespace, deployment...)
	dir := filepath.Join(testenv.RepoRoot(), "config", "coredns")
	var role rbacv1.ClusterRole
	var binding rbacv1.ClusterRoleBinding
	var patch struct {
		Data map[string]string `json:"data"`
	}
	for file, into := range map[string]any{"clusterrole.yaml": &role, "clusterrolebinding.yaml": &binding, "corefile-patch.yaml": &patch} {
		raw, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(raw, into); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	mustCreate(t, m.admin, &role, &binding, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: inspect.CoreDNSNamespace, Name: inspect.CoreDNSConfigMap},
		Data:       map[string]string{"Corefile": patch.Data["Corefile"]},
	})
}

// runCLI runs `kubectl clusterset ARGS --kubeconfig KUBECONFIG` and returns
// what it printed to stdout and stderr.
func runCLI(kubeconfig string, args ...string) (string, error) {
	cmd := cli.NewRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append(args, "--kubeconfig", kubeconfig))
	c, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err := cmd.ExecuteContext(c)
	return out.String(), err
}

// What varies from run to run in the commands' output: ages, and the
// ServiceImport IPs the API servers allocate.
var (
	ageRE = regexp.MustCompile(`\b[0-9][0-9dhms]* ago\b`)
	ipRE  = regexp.MustCompile(`\b10\.0\.[0-9]+\.[0-9]+\b`)
)

func compareGolden(t *testing.T, name, got string) {
	t.Helper()
	got = ipRE.ReplaceAllString(ageRE.ReplaceAllString(got, "<age> ago"), "<clusterset-ip>")
	path := filepath.Join("testdata", "cli", name+".golden")
	if *updateGolden {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (UPDATE_GOLDEN=1 writes it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (UPDATE_GOLDEN=1 rewrites it):\n--- got\n%s\n--- want\n%s", name, path, got, want)
	}
}
