package install

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/clusterset/clusterset/internal/helmchart"
	"github.com/clusterset/clusterset/internal/testenv"
)

// Every way to install renders objects that a real API server accepts as
// they are (server-side apply, dry run): the chart with hub and Cloud Map
// values, both overlays and config/coredns.
func TestManifestsAcceptedByAPIServer(t *testing.T) {
	ctx := context.Background()
	cls := testenv.Start(t)
	if err := cls.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: helmchart.Namespace}}); err != nil {
		t.Fatal(err)
	}
	cm := cloudMapValues()
	// The API server here has no Prometheus Operator CRDs.
	cm["metrics"] = map[string]any{"serviceMonitor": map[string]any{"enabled": false}}
	for name, objs := range map[string][]*unstructured.Unstructured{
		"chart hub":                 render(t, nil),
		"chart cloudmap":            render(t, cm),
		"config/overlays/hub":       kustomizeBuild(t, "overlays/hub"),
		"config/overlays/cloudmap":  kustomizeBuild(t, "overlays/cloudmap"),
		"config/coredns":            kustomizeBuild(t, "coredns"),
		"config/hub (hub API only)": kustomizeBuild(t, "hub"),
	} {
		t.Run(name, func(t *testing.T) {
			if len(objs) == 0 {
				t.Fatal("nothing rendered")
			}
			for _, o := range objs {
				o = o.DeepCopy()
				if o.GetNamespace() == "" && namespaced(t, cls.Client, o) {
					o.SetNamespace(helmchart.Namespace) // as kubectl apply -n does
				}
				err := cls.Client.Patch(ctx, o, client.Apply, client.DryRunAll, client.FieldOwner("install-test"), client.ForceOwnership)
				if err != nil {
					t.Errorf("%s %s: %v", o.GetKind(), o.GetName(), err)
				}
			}
		})
	}
}

func namespaced(t *testing.T, c client.Client, o *unstructured.Unstructured) bool {
	t.Helper()
	ok, err := c.IsObjectNamespaced(o)
	if err != nil {
		// A kind the API server does not know: leave it to the apply to say.
		return false
	}
	return ok
}

// `helm install`, `helm upgrade` to a changed value and `helm uninstall`
// against a real API server: the objects appear, change and then go, leaving
// only the CRDs (and the namespace, which helm never deletes).
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cls := testenv.Start(t)
	helm := helmClient(t, cls.Env)
	ch := loadChart(t)

	if err := helm.Install(ctx, ch, map[string]any{"clusterID": "cls1", "clusterSetID": "prod"}, time.Minute); err != nil {
		t.Fatalf("helm install: %v", err)
	}
	installed := releaseObjects(ctx, t, cls.Client)
	for _, want := range []string{
		"Deployment/clusterset-controller", "ServiceAccount/clusterset-controller", "ClusterRole/clusterset-controller",
		"ClusterRoleBinding/clusterset-controller", "Role/clusterset-controller-leader-election",
		"RoleBinding/clusterset-controller-leader-election", "Service/clusterset-controller-metrics",
		"PodDisruptionBudget/clusterset-controller", "ClusterRole/clusterset:coredns", "ClusterRoleBinding/clusterset:coredns",
	} {
		if !installed[want] {
			t.Errorf("after helm install, %s is missing (have %v)", want, installed)
		}
	}

	err := helm.Upgrade(ctx, ch, map[string]any{
		"clusterID": "cls1", "clusterSetID": "prod", "replicas": 3, "heartbeatInterval": "5s",
		"coredns": map[string]any{"rbac": map[string]any{"create": false}},
	}, time.Minute)
	if err != nil {
		t.Fatalf("helm upgrade: %v", err)
	}
	d := &unstructured.Unstructured{}
	d.SetGroupVersionKind(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"})
	if err := cls.Client.Get(ctx, client.ObjectKey{Namespace: helmchart.Namespace, Name: "clusterset-controller"}, d); err != nil {
		t.Fatal(err)
	}
	replicas, _, _ := unstructured.NestedInt64(d.Object, "spec", "replicas")
	containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	if replicas != 3 || !strings.Contains(strings.Join(args, " "), "--heartbeat-interval=5s") {
		t.Errorf("after helm upgrade: replicas %d args %q, want 3 and --heartbeat-interval=5s", replicas, args)
	}
	if upgraded := releaseObjects(ctx, t, cls.Client); upgraded["ClusterRole/clusterset:coredns"] {
		t.Error("after helm upgrade with coredns.rbac.create=false, ClusterRole clusterset:coredns is still there")
	}

	if err := helm.Uninstall(time.Minute); err != nil {
		t.Fatalf("helm uninstall: %v", err)
	}
	if left := releaseObjects(ctx, t, cls.Client); len(left) > 0 {
		t.Errorf("after helm uninstall, left behind: %v", left)
	}
	for _, crd := range []string{"serviceexports.multicluster.x-k8s.io", "serviceimports.multicluster.x-k8s.io", "clusterproperties.about.k8s.io"} {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
		if err := cls.Client.Get(ctx, client.ObjectKey{Name: crd}, u); err != nil {
			t.Errorf("CRD %s after helm uninstall: %v (CRDs must stay: deleting them deletes every ServiceExport)", crd, err)
		}
	}
}

// helmClient returns a Helm client for an envtest control plane, through a
// kubeconfig file as the helm command would use.
func helmClient(t *testing.T, env *envtest.Environment) *helmchart.Client {
	t.Helper()
	user, err := env.AddUser(envtest.User{Name: "helm-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	flags := genericclioptions.NewConfigFlags(true)
	flags.KubeConfig = &path
	ns := helmchart.Namespace
	flags.Namespace = &ns
	c, err := helmchart.NewClient(flags)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// releaseObjects lists every object of the kinds the chart can create, and
// helm's release records, that belong to release clusterset: "Kind/name".
func releaseObjects(ctx context.Context, t *testing.T, c client.Client) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, gvk := range helmchart.ReleaseKinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk)
		if err := c.List(ctx, list); err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("listing %s: %v", gvk.Kind, err)
		}
		for _, o := range list.Items {
			if helmchart.OfRelease(o.GetLabels()) {
				out[strings.TrimSuffix(gvk.Kind, "List")+"/"+o.GetName()] = true
			}
		}
	}
	return out
}
