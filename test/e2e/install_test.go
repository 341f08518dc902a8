//go:build e2e

package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/clusterset/clusterset/internal/helmchart"
	"github.com/clusterset/clusterset/pkg/names"
	wt "github.com/clusterset/clusterset/test/e2e/walkthrough"
)

// testHelmUpgrade: `helm upgrade` of every cluster's release to changed
// values rolls the controller pods out with them, a leader is elected
// again, and changes keep flowing between the clusters.
func testHelmUpgrade(t *testing.T, env *wt.Env) {
	ctx := t.Context()
	ch, err := helmchart.Load(repoDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range env.Clusters() {
		hc, err := env.Sandbox.HelmClient(c)
		if err != nil {
			t.Fatal(err)
		}
		values, err := env.Sandbox.HelmValues(env.Sandbox.Cluster(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		values["heartbeatInterval"] = "5s"
		values["logLevel"] = "debug"
		start := time.Now()
		if err := hc.Upgrade(ctx, ch, values, 2*time.Minute); err != nil {
			t.Fatalf("%s: helm upgrade: %v", c, err)
		}
		if err := env.Sandbox.WaitControllers(ctx, c); err != nil {
			t.Fatalf("%s: after helm upgrade: %v", c, err)
		}
		t.Logf("%s: helm upgrade rolled out in %s", c, time.Since(start).Round(100*time.Millisecond))
		var pods corev1.PodList
		if err := env.Client(c).List(ctx, &pods, client.InNamespace(helmchart.Namespace), client.MatchingLabels{"app.kubernetes.io/name": "clusterset-controller"}); err != nil {
			t.Fatal(err)
		}
		var upgraded int
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && slices.Contains(p.Spec.Containers[0].Args, "--heartbeat-interval=5s") &&
				slices.Contains(p.Spec.Containers[0].Args, "--zap-log-level=debug") {
				upgraded++
			}
		}
		if upgraded != 2 {
			t.Errorf("%s: %d controller pods run with the upgraded values, want 2", c, upgraded)
		}
	}
	t.Run("ScaleFollowedByTraffic", func(t *testing.T) { testScaleFollowedByTraffic(t, env) })
}

// testHelmUninstall follows docs/install.md's uninstall: ServiceExports
// are deleted first (so the other clusters drop the imports), then
// `helm uninstall` in every cluster leaves none of the release's objects,
// no controller pod and no import object behind; the CRDs stay.
func testHelmUninstall(t *testing.T, env *wt.Env) {
	ctx := t.Context()
	for _, c := range env.Clusters() {
		var exports unstructured.UnstructuredList
		exports.SetGroupVersionKind(schema.GroupVersionKind{Group: "multicluster.x-k8s.io", Version: "v1beta1", Kind: "ServiceExportList"})
		if err := env.Client(c).List(ctx, &exports); err != nil {
			t.Fatal(err)
		}
		for _, e := range exports.Items {
			if err := env.Unexport(ctx, c, e.GetNamespace(), e.GetName()); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, "no ServiceExport and no ServiceImport left in any cluster", propagation, func(ctx context.Context) (bool, string, error) {
		var left []string
		for _, c := range env.Clusters() {
			for _, kind := range []string{"ServiceExportList", "ServiceImportList"} {
				var list unstructured.UnstructuredList
				list.SetGroupVersionKind(schema.GroupVersionKind{Group: "multicluster.x-k8s.io", Version: "v1beta1", Kind: kind})
				if err := env.Client(c).List(ctx, &list); err != nil {
					return false, "", err
				}
				for _, o := range list.Items {
					left = append(left, c+":"+strings.TrimSuffix(kind, "List")+"/"+o.GetNamespace()+"/"+o.GetName())
				}
			}
		}
		return len(left) == 0, strings.Join(left, " "), nil
	})

	for _, c := range env.Clusters() {
		hc, err := env.Sandbox.HelmClient(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := hc.Uninstall(2 * time.Minute); err != nil {
			t.Fatalf("%s: helm uninstall: %v", c, err)
		}
	}
	waitFor(t, "no controller pod, release object or imported object left", propagation, func(ctx context.Context) (bool, string, error) {
		var left []string
		for _, c := range env.Clusters() {
			cl := env.Client(c)
			var pods corev1.PodList
			if err := cl.List(ctx, &pods, client.InNamespace(helmchart.Namespace)); err != nil {
				return false, "", err
			}
			for _, p := range pods.Items {
				left = append(left, c+":Pod/"+p.Name)
			}
			kinds := append(slices.Clone(helmchart.ReleaseKinds), schema.GroupVersionKind{Group: "discovery.k8s.io", Version: "v1", Kind: "EndpointSliceList"})
			for _, gvk := range kinds {
				var list unstructured.UnstructuredList
				list.SetGroupVersionKind(gvk)
				if err := cl.List(ctx, &list); err != nil {
					return false, "", err
				}
				for _, o := range list.Items {
					l := o.GetLabels()
					ours := helmchart.OfRelease(l) ||
						l[discoveryv1.LabelManagedBy] == names.ManagedBy ||
						l[names.LabelManagedBy] == names.ManagedBy
					if ours {
						left = append(left, c+":"+strings.TrimSuffix(gvk.Kind, "List")+"/"+o.GetName())
					}
				}
			}
		}
		return len(left) == 0, strings.Join(left, " "), nil
	})
	for _, c := range env.Clusters() {
		var crds unstructured.UnstructuredList
		crds.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinitionList"})
		if err := env.Client(c).List(ctx, &crds); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, crd := range crds.Items {
			names = append(names, crd.GetName())
		}
		for _, want := range []string{"serviceexports.multicluster.x-k8s.io", "serviceimports.multicluster.x-k8s.io", "clusterproperties.about.k8s.io"} {
			if !slices.Contains(names, want) {
				t.Errorf("%s: CRD %s is gone after helm uninstall; CRDs must stay", c, want)
			}
		}
		var d appsv1.DeploymentList
		_ = env.Client(c).List(ctx, &d, client.InNamespace(helmchart.Namespace))
		t.Logf("%s: after helm uninstall %d Deployments in %s, CRDs kept", c, len(d.Items), helmchart.Namespace)
	}
}
