// Package install tests what users install: the Helm chart in
// charts/clusterset and the kustomize overlays in config/overlays. Rendering
// and the values schema are checked here without a cluster; install_test.go
// sends the results to a real API server. The install on real nodes, where
// the controller runs and passes the walkthrough, is in test/e2e.
package install

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/clusterset/clusterset/internal/helmchart"
	"github.com/clusterset/clusterset/internal/testenv"
	"github.com/clusterset/clusterset/pkg/namespaces"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
)

// oldestKubernetes is the oldest version Chart.yaml's kubeVersion accepts.
const oldestKubernetes = "v1.29.0"

// cloudMapValues is what docs/eks.md passes to the chart.
func cloudMapValues() map[string]any {
	return map[string]any{
		"clusterID":    "cls1",
		"clusterSetID": "prod",
		"registry": map[string]any{
			"type":     "cloudmap",
			"cloudMap": map[string]any{"region": "eu-west-1", "pollInterval": "2s"},
		},
		"serviceAccount": map[string]any{
			"annotations": map[string]any{"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/clusterset"},
		},
		"metrics": map[string]any{"serviceMonitor": map[string]any{"enabled": true}},
	}
}

func loadChart(t *testing.T) *chartv2.Chart {
	t.Helper()
	ch, err := helmchart.Load(testenv.RepoRoot())
	if err != nil {
		t.Fatalf("loading charts/clusterset: %v", err)
	}
	return ch
}

func render(t *testing.T, values map[string]any) []*unstructured.Unstructured {
	t.Helper()
	objs, err := helmchart.Render(loadChart(t), helmchart.Namespace, oldestKubernetes, values)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	return objs
}

// kustomizeBuild is `kubectl kustomize config/DIR`.
func kustomizeBuild(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(testenv.RepoRoot(), "config", dir))
	if err != nil {
		t.Fatalf("kustomize build config/%s: %v", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range res.Resources() {
		data, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(data); err != nil {
			t.Fatal(err)
		}
		out = append(out, obj)
	}
	return out
}

// find returns the one object of that kind and name, converted to T.
func find[T any](t *testing.T, objs []*unstructured.Unstructured, kind, name string) *T {
	t.Helper()
	var hits []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			hits = append(hits, o)
		}
	}
	if len(hits) != 1 {
		t.Fatalf("want exactly one %s %s in the rendered manifests, found %d (have: %s)", kind, name, len(hits), inventory(objs))
	}
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(hits[0].Object, out); err != nil {
		t.Fatalf("%s %s: %v", kind, name, err)
	}
	return out
}

func inventory(objs []*unstructured.Unstructured) string {
	var s []string
	for _, o := range objs {
		s = append(s, o.GetKind()+"/"+o.GetName())
	}
	return strings.Join(s, " ")
}

// readYAML reads one object of the repository.
func readYAML[T any](t *testing.T, path string) *T {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), path))
	if err != nil {
		t.Fatal(err)
	}
	out := new(T)
	if err := yaml.UnmarshalStrict(data, out); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return out
}

func controllerContainer(t *testing.T, d *appsv1.Deployment) corev1.Container {
	t.Helper()
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("Deployment %s has %d containers, want 1", d.Name, len(d.Spec.Template.Spec.Containers))
	}
	return d.Spec.Template.Spec.Containers[0]
}

// The chart ships exactly the rules of config/rbac and config/coredns, which
// the integration tests run the controller and the sandbox runs CoreDNS
// under, and exactly the CRDs of config/crd.
func TestChartMatchesConfig(t *testing.T) {
	objs := render(t, nil)

	role := readYAML[rbacv1.ClusterRole](t, "config/rbac/role.yaml")
	if got := find[rbacv1.ClusterRole](t, objs, "ClusterRole", "clusterset-controller"); !equality.Semantic.DeepEqual(got.Rules, role.Rules) {
		t.Errorf("chart ClusterRole clusterset-controller rules differ from config/rbac/role.yaml:\nchart:  %+v\nconfig: %+v", got.Rules, role.Rules)
	}
	le := readYAML[rbacv1.Role](t, "config/rbac/leader_election_role.yaml")
	if got := find[rbacv1.Role](t, objs, "Role", "clusterset-controller-leader-election"); !equality.Semantic.DeepEqual(got.Rules, le.Rules) {
		t.Errorf("chart leader election Role rules differ from config/rbac/leader_election_role.yaml:\nchart:  %+v\nconfig: %+v", got.Rules, le.Rules)
	}
	dns := readYAML[rbacv1.ClusterRole](t, "config/coredns/clusterrole.yaml")
	if got := find[rbacv1.ClusterRole](t, objs, "ClusterRole", "clusterset:coredns"); !equality.Semantic.DeepEqual(got.Rules, dns.Rules) {
		t.Errorf("chart ClusterRole clusterset:coredns rules differ from config/coredns/clusterrole.yaml:\nchart:  %+v\nconfig: %+v", got.Rules, dns.Rules)
	}
	crb := find[rbacv1.ClusterRoleBinding](t, objs, "ClusterRoleBinding", "clusterset:coredns")
	if want := (rbacv1.Subject{Kind: "ServiceAccount", Name: "coredns", Namespace: "kube-system"}); len(crb.Subjects) != 1 || crb.Subjects[0] != want {
		t.Errorf("CoreDNS binding subjects %+v, want [%+v]", crb.Subjects, want)
	}

	// CRDs: the chart's crds/ holds byte-identical copies of config/crd
	// (make crds); here, the rendered CRDs are those of config/crd.
	var chartCRDs, configCRDs []string
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			chartCRDs = append(chartCRDs, o.GetName())
		}
	}
	for _, o := range kustomizeBuild(t, "crd") {
		configCRDs = append(configCRDs, o.GetName())
	}
	slices.Sort(chartCRDs)
	slices.Sort(configCRDs)
	if !slices.Equal(chartCRDs, configCRDs) {
		t.Errorf("chart CRDs %v, want those of config/crd %v", chartCRDs, configCRDs)
	}
	entries, err := os.ReadDir(filepath.Join(testenv.RepoRoot(), "charts", "clusterset", "crds"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		chartFile, _ := os.ReadFile(filepath.Join(testenv.RepoRoot(), "charts", "clusterset", "crds", e.Name()))
		configFile, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "crd", e.Name()))
		if err != nil || string(chartFile) != string(configFile) {
			t.Errorf("charts/clusterset/crds/%s is not a copy of config/crd/%s (run make crds)", e.Name(), e.Name())
		}
	}
}

// The chart with its defaults and the hub overlay install the same
// controller: same image name, arguments, probes, security and volumes, so
// users can move between the two.
func TestChartAndOverlaysAgree(t *testing.T) {
	for _, tc := range []struct {
		registry string
		values   map[string]any
	}{
		{"hub", nil},
		{"cloudmap", map[string]any{"registry": map[string]any{"type": "cloudmap", "cloudMap": map[string]any{"region": "us-west-2"}}}},
	} {
		t.Run(tc.registry, func(t *testing.T) {
			chart := find[appsv1.Deployment](t, render(t, tc.values), "Deployment", "clusterset-controller")
			overlay := find[appsv1.Deployment](t, kustomizeBuild(t, "overlays/"+tc.registry), "Deployment", "clusterset-controller")
			cc, oc := controllerContainer(t, chart), controllerContainer(t, overlay)

			// The overlay takes the IDs from cloudmap.env through $(VARS);
			// the chart passes them only when set. The chart passes the log
			// level and the excluded namespaces always; their defaults are
			// the controller's, which the overlay gets by passing nothing.
			var overlayArgs []string
			for _, a := range oc.Args {
				if !strings.Contains(a, "$(") {
					overlayArgs = append(overlayArgs, a)
				}
			}
			defaults := []string{"--zap-log-level=info", "--excluded-namespaces=" + strings.Join(namespaces.DefaultExcluded, ",")}
			chartArgs := slices.DeleteFunc(slices.Clone(cc.Args), func(a string) bool { return slices.Contains(defaults, a) })
			slices.Sort(chartArgs)
			slices.Sort(overlayArgs)
			if !slices.Equal(chartArgs, overlayArgs) {
				t.Errorf("controller args differ:\nchart:   %q\noverlay: %q", chartArgs, overlayArgs)
			}
			if !strings.HasPrefix(cc.Image, "clusterset-controller:") || !strings.HasPrefix(oc.Image, "clusterset-controller:") {
				t.Errorf("images %q (chart) and %q (overlay), want repository clusterset-controller", cc.Image, oc.Image)
			}
			for name, pair := range map[string][2]any{
				"securityContext":     {cc.SecurityContext, oc.SecurityContext},
				"podSecurityContext":  {chart.Spec.Template.Spec.SecurityContext, overlay.Spec.Template.Spec.SecurityContext},
				"resources":           {cc.Resources, oc.Resources},
				"volumeMounts":        {cc.VolumeMounts, oc.VolumeMounts},
				"volumes":             {chart.Spec.Template.Spec.Volumes, overlay.Spec.Template.Spec.Volumes},
				"replicas":            {chart.Spec.Replicas, overlay.Spec.Replicas},
				"serviceAccountName":  {chart.Spec.Template.Spec.ServiceAccountName, overlay.Spec.Template.Spec.ServiceAccountName},
				"readinessProbe path": {cc.ReadinessProbe.HTTPGet.Path, oc.ReadinessProbe.HTTPGet.Path},
				"livenessProbe path":  {cc.LivenessProbe.HTTPGet.Path, oc.LivenessProbe.HTTPGet.Path},
			} {
				if !equality.Semantic.DeepEqual(pair[0], pair[1]) {
					t.Errorf("%s differs:\nchart:   %+v\noverlay: %+v", name, pair[0], pair[1])
				}
			}
		})
	}
}

// Values reach the controller as the flags docs/configuration.md describes.
func TestChartValues(t *testing.T) {
	t.Run("hub defaults", func(t *testing.T) {
		objs := render(t, nil)
		d := find[appsv1.Deployment](t, objs, "Deployment", "clusterset-controller")
		c := controllerContainer(t, d)
		wantArgs(t, c.Args, "--leader-elect", "--registry=hub", "--hub-kubeconfig=/etc/clusterset/hub/kubeconfig")
		noArgPrefix(t, c.Args, "--cluster-id", "--clusterset-id", "--cloudmap-")
		if len(d.Spec.Template.Spec.Volumes) != 1 || d.Spec.Template.Spec.Volumes[0].Secret == nil ||
			d.Spec.Template.Spec.Volumes[0].Secret.SecretName != "clusterset-hub-kubeconfig" {
			t.Errorf("volumes %+v, want the Secret clusterset-hub-kubeconfig that kubectl clusterset join writes", d.Spec.Template.Spec.Volumes)
		}
		if *d.Spec.Replicas != 2 {
			t.Errorf("replicas %d, want 2", *d.Spec.Replicas)
		}
		if c.Image != "clusterset-controller:0.1.0" {
			t.Errorf("image %q, want the chart's appVersion as tag", c.Image)
		}
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container securityContext %+v, want a read-only root and no privilege escalation", sc)
		}
		if psc := d.Spec.Template.Spec.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
			t.Errorf("pod securityContext %+v, want runAsNonRoot", psc)
		}
		pdb := find[unstructured.Unstructured](t, objs, "PodDisruptionBudget", "clusterset-controller")
		if v, _, _ := unstructured.NestedInt64(pdb.Object, "spec", "maxUnavailable"); v != 1 {
			t.Errorf("PodDisruptionBudget maxUnavailable %d, want 1", v)
		}
		svc := find[corev1.Service](t, objs, "Service", "clusterset-controller-metrics")
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8080 {
			t.Errorf("metrics Service ports %+v, want 8080", svc.Spec.Ports)
		}
		for _, o := range objs {
			if o.GetKind() == "ServiceMonitor" {
				t.Error("a ServiceMonitor is rendered by default; it needs the Prometheus Operator's CRDs")
			}
			if ns := o.GetNamespace(); ns != "" && ns != helmchart.Namespace && o.GetKind() != "ClusterRoleBinding" {
				t.Errorf("%s/%s in namespace %q, want the release namespace", o.GetKind(), o.GetName(), ns)
			}
		}
	})

	t.Run("cloudmap with IRSA and ServiceMonitor", func(t *testing.T) {
		objs := render(t, cloudMapValues())
		d := find[appsv1.Deployment](t, objs, "Deployment", "clusterset-controller")
		c := controllerContainer(t, d)
		wantArgs(t, c.Args, "--registry=cloudmap", "--cluster-id=cls1", "--clusterset-id=prod", "--cloudmap-poll-interval=2s")
		noArgPrefix(t, c.Args, "--hub-kubeconfig", "--cloudmap-full-resync", "--heartbeat-interval")
		if len(d.Spec.Template.Spec.Volumes) != 0 || len(c.VolumeMounts) != 0 {
			t.Errorf("volumes %+v mounts %+v, want none with Cloud Map", d.Spec.Template.Spec.Volumes, c.VolumeMounts)
		}
		if !slices.Contains(c.Env, corev1.EnvVar{Name: "AWS_REGION", Value: "eu-west-1"}) {
			t.Errorf("env %+v, want AWS_REGION=eu-west-1", c.Env)
		}
		sa := find[corev1.ServiceAccount](t, objs, "ServiceAccount", "clusterset-controller")
		if sa.Annotations["eks.amazonaws.com/role-arn"] != "arn:aws:iam::111122223333:role/clusterset" {
			t.Errorf("ServiceAccount annotations %v, want the IRSA role", sa.Annotations)
		}
		find[unstructured.Unstructured](t, objs, "ServiceMonitor", "clusterset-controller")
	})

	t.Run("alert rules and dashboard", func(t *testing.T) {
		objs := render(t, map[string]any{"metrics": map[string]any{
			"prometheusRule":   map[string]any{"enabled": true, "labels": map[string]any{"release": "kube-prometheus"}},
			"grafanaDashboard": map[string]any{"enabled": true},
		}})
		rule := find[unstructured.Unstructured](t, objs, "PrometheusRule", "clusterset-controller")
		if rule.GetLabels()["release"] != "kube-prometheus" {
			t.Errorf("PrometheusRule labels %v, want release=kube-prometheus", rule.GetLabels())
		}
		want := readYAML[map[string]any](t, "config/monitoring/prometheus-rules.yaml")
		if got, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups"); !reflect.DeepEqual(got, (*want)["groups"]) {
			t.Errorf("PrometheusRule groups differ from config/monitoring/prometheus-rules.yaml:\n%v", got)
		}
		cm := find[corev1.ConfigMap](t, objs, "ConfigMap", "clusterset-controller-dashboard")
		dash, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config/monitoring/grafana-dashboard.json"))
		if err != nil {
			t.Fatal(err)
		}
		if cm.Labels["grafana_dashboard"] != "1" || strings.TrimSpace(cm.Data["clusterset.json"]) != strings.TrimSpace(string(dash)) {
			t.Errorf("dashboard ConfigMap labels %v, data differs from config/monitoring/grafana-dashboard.json: %v", cm.Labels, cm.Data["clusterset.json"] != string(dash))
		}
	})

	t.Run("optional parts off", func(t *testing.T) {
		objs := render(t, map[string]any{
			"replicas":            1,
			"podDisruptionBudget": map[string]any{"enabled": false},
			"metrics":             map[string]any{"service": map[string]any{"enabled": false}},
			"coredns":             map[string]any{"rbac": map[string]any{"create": false}},
			"extraArgs":           []any{"--liveness-grace-period=5m"},
			"image":               map[string]any{"repository": "registry.example/clusterset-controller", "tag": "v9"},
		})
		for _, o := range objs {
			switch {
			case o.GetKind() == "PodDisruptionBudget", o.GetKind() == "Service", strings.Contains(o.GetName(), "coredns"):
				t.Errorf("%s/%s rendered although disabled", o.GetKind(), o.GetName())
			}
		}
		c := controllerContainer(t, find[appsv1.Deployment](t, objs, "Deployment", "clusterset-controller"))
		wantArgs(t, c.Args, "--liveness-grace-period=5m")
		if c.Image != "registry.example/clusterset-controller:v9" {
			t.Errorf("image %q", c.Image)
		}
	})
}

// Bad values fail at `helm install` with an error that names the value,
// before anything reaches the cluster.
func TestChartRejectsBadValues(t *testing.T) {
	ch := loadChart(t)
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   string // in the error
	}{
		{"unknown registry", map[string]any{"registry": map[string]any{"type": "etcd"}}, "registry"},
		{"cloudmap without region", map[string]any{"registry": map[string]any{"type": "cloudmap"}}, "region"},
		{"region not a region", map[string]any{"registry": map[string]any{"type": "cloudmap", "cloudMap": map[string]any{"region": "Frankfurt"}}}, "region"},
		{"cluster ID not a DNS label", map[string]any{"clusterID": "Cluster_1"}, "clusterID"},
		{"cluster ID too long", map[string]any{"clusterID": strings.Repeat("a", 64)}, "clusterID"},
		{"clusterset ID too long", map[string]any{"clusterSetID": strings.Repeat(strings.Repeat("a", 63)+".", 4)[:254]}, "clusterSetID"},
		{"clusterset ID label too long", map[string]any{"clusterSetID": strings.Repeat("a", 64)}, "clusterSetID"},
		{"clusterset ID not a DNS subdomain", map[string]any{"clusterSetID": "prod_1"}, "clusterSetID"},
		{"misspelled value", map[string]any{"replica": 3}, "replica"},
		{"misspelled nested value", map[string]any{"registry": map[string]any{"type": "hub", "hub": map[string]any{"secret": "x"}}}, "secret"},
		{"negative replicas", map[string]any{"replicas": -1}, "replicas"},
		{"pod label that is the selector", map[string]any{"podLabels": map[string]any{"app.kubernetes.io/name": "x"}}, "podLabels"},
		{"AWS_REGION in extraEnv", map[string]any{"extraEnv": []any{map[string]any{"name": "AWS_REGION", "value": "eu-west-1"}}}, "extraEnv"},
		{"extraEnv value not a string", map[string]any{"extraEnv": []any{map[string]any{"name": "X", "value": 1}}}, "extraEnv"},
		{"hub secret not a name", map[string]any{"registry": map[string]any{"type": "hub", "hub": map[string]any{"secretName": "Bad_Name"}}}, "secretName"},
		{"ServiceMonitor interval not a Prometheus duration", map[string]any{"metrics": map[string]any{"serviceMonitor": map[string]any{"interval": "1.5s"}}}, "interval"},
		{"excluded namespace not a name", map[string]any{"excludedNamespaces": []any{"Kube-System"}}, "excludedNamespaces"},
		{"duration without unit", map[string]any{"heartbeatInterval": "10"}, "heartbeatInterval"},
		{"metrics on the probe port", map[string]any{"metrics": map[string]any{"port": 8081}}, "port"},
		{"extra arg not a flag", map[string]any{"extraArgs": []any{"verbose"}}, "extraArgs"},
		{"log level", map[string]any{"logLevel": "trace"}, "logLevel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := helmchart.Render(ch, helmchart.Namespace, oldestKubernetes, tc.values)
			if err == nil {
				t.Fatalf("values %v rendered; want a schema error", tc.values)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %q", err, tc.want)
			}
		})
	}
}

// Values at the edges of what the schema allows render.
func TestChartAcceptsEdgeValues(t *testing.T) {
	ch := loadChart(t)
	for name, values := range map[string]map[string]any{
		"0 replicas (cut-over)":       {"replicas": 0},
		"0 disables the sweep":        {"registry": map[string]any{"type": "cloudmap", "cloudMap": map[string]any{"region": "eu-west-1", "foreignSweepPeriod": "0"}}},
		"0 disables the grace period": {"livenessGracePeriod": "0"},
		"no excluded namespace":       {"excludedNamespaces": []any{}},
		"GovCloud region":             {"registry": map[string]any{"type": "cloudmap", "cloudMap": map[string]any{"region": "us-gov-west-1"}}},
		"63-character cluster ID":     {"clusterID": strings.Repeat("a", 63)},
		"253-character clusterset ID": {"clusterSetID": strings.Repeat(strings.Repeat("a", 63)+".", 3) + strings.Repeat("a", 61)},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := helmchart.Render(ch, helmchart.Namespace, oldestKubernetes, values); err != nil {
				t.Fatalf("values %v: %v", values, err)
			}
		})
	}
}

func wantArgs(t *testing.T, args []string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(args, w) {
			t.Errorf("args %q lack %q", args, w)
		}
	}
}

func noArgPrefix(t *testing.T, args []string, prefixes ...string) {
	t.Helper()
	for _, a := range args {
		for _, p := range prefixes {
			if strings.HasPrefix(a, p) {
				t.Errorf("args %q have %q; want no %s flag", args, a, p)
			}
		}
	}
}

// The chart's notes tell how to write the hub Secret where this release
// reads it: `join` with the release's namespace and Secret name when they
// are not join's defaults.
func TestChartNotes(t *testing.T) {
	for _, tc := range []struct {
		namespace string
		values    map[string]any
		want      string
		wantNot   string
	}{
		{helmchart.Namespace, nil, "`kubectl clusterset join` writes it.", "--controller-namespace"},
		{"platform", map[string]any{"registry": map[string]any{"hub": map[string]any{"secretName": "hub-creds"}}},
			"when given --controller-namespace platform --hub-secret-name hub-creds --hub-secret-key kubeconfig.", ""},
		{helmchart.Namespace, map[string]any{"registry": map[string]any{"hub": map[string]any{"secretKey": "config"}}},
			"--hub-secret-name clusterset-hub-kubeconfig --hub-secret-key config.", ""},
		{helmchart.Namespace, map[string]any{"registry": map[string]any{"type": "cloudmap", "cloudMap": map[string]any{"region": "eu-west-1"}}}, "cloudmap registry", "join"},
	} {
		notes, err := helmchart.Notes(loadChart(t), tc.namespace, oldestKubernetes, tc.values)
		if err != nil {
			t.Fatalf("%s %v: %v", tc.namespace, tc.values, err)
		}
		if !strings.Contains(notes, tc.want) || (tc.wantNot != "" && strings.Contains(notes, tc.wantNot)) {
			t.Errorf("notes in %s with %v: want %q and not %q:\n%s", tc.namespace, tc.values, tc.want, tc.wantNot, notes)
		}
	}
}

// Every way to install gives the controller a memory limit, and the Go
// runtime that limit as GOMEMLIMIT (from the container's own limit, through
// the downward API), so that it collects harder before the limit instead of
// being killed at it, and GOGC=50 (docs/benchmarks.md: 15% less memory for
// 13% more CPU).
func TestMemoryLimitIsTheGoMemoryLimit(t *testing.T) {
	for name, objs := range map[string]func(t *testing.T) []*unstructured.Unstructured{
		"chart, hub":         func(t *testing.T) []*unstructured.Unstructured { return render(t, nil) },
		"chart, Cloud Map":   func(t *testing.T) []*unstructured.Unstructured { return render(t, cloudMapValues()) },
		"overlay, hub":       func(t *testing.T) []*unstructured.Unstructured { return kustomizeBuild(t, "overlays/hub") },
		"overlay, Cloud Map": func(t *testing.T) []*unstructured.Unstructured { return kustomizeBuild(t, "overlays/cloudmap") },
	} {
		t.Run(name, func(t *testing.T) {
			c := controllerContainer(t, find[appsv1.Deployment](t, objs(t), "Deployment", "clusterset-controller"))
			if c.Resources.Limits.Memory().IsZero() {
				t.Error("no memory limit")
			}
			var found bool
			for _, e := range c.Env {
				if e.Name == "GOMEMLIMIT" {
					found = true
					if e.ValueFrom == nil || e.ValueFrom.ResourceFieldRef == nil || e.ValueFrom.ResourceFieldRef.Resource != "limits.memory" {
						t.Errorf("GOMEMLIMIT = %+v, want the container's limits.memory", e)
					}
				}
			}
			if !found {
				t.Errorf("no GOMEMLIMIT in the controller's environment: %+v", c.Env)
			}
			if gogc := envValue(c.Env, "GOGC"); gogc != "50" {
				t.Errorf("GOGC = %q, want 50", gogc)
			}
		})
	}
	// The chart's goGC sets it, and empty leaves Go's default.
	for value, want := range map[any]string{"100": "100", "": ""} {
		c := controllerContainer(t, find[appsv1.Deployment](t, render(t, map[string]any{"goGC": value}), "Deployment", "clusterset-controller"))
		if got := envValue(c.Env, "GOGC"); got != want {
			t.Errorf("goGC=%q: GOGC = %q, want %q", value, got, want)
		}
	}
}

// envValue is the value of the environment variable name, "" without it.
func envValue(env []corev1.EnvVar, name string) string {
	for _, e := range env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}
