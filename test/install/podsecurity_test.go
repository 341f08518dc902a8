package install

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

// TestPodsMeetRestricted evaluates the pod template of every Deployment that
// the chart (hub and Cloud Map values) and the kustomize overlays install
// against the Pod Security Standards' restricted level, with the checks of
// the PodSecurity admission plugin itself: the controller runs in a
// namespace that enforces it.
func TestPodsMeetRestricted(t *testing.T) {
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	restricted := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	sources := map[string]func(t *testing.T) []*unstructured.Unstructured{
		"chart, hub":        func(t *testing.T) []*unstructured.Unstructured { return render(t, nil) },
		"chart, Cloud Map":  func(t *testing.T) []*unstructured.Unstructured { return render(t, cloudMapValues()) },
		"overlays/hub":      func(t *testing.T) []*unstructured.Unstructured { return kustomizeBuild(t, "overlays/hub") },
		"overlays/cloudmap": func(t *testing.T) []*unstructured.Unstructured { return kustomizeBuild(t, "overlays/cloudmap") },
	}
	for name, objects := range sources {
		t.Run(name, func(t *testing.T) {
			n := 0
			for _, obj := range objects(t) {
				if obj.GetKind() != "Deployment" {
					continue
				}
				var d appsv1.Deployment
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &d); err != nil {
					t.Fatal(err)
				}
				n++
				tpl := d.Spec.Template
				result := policy.AggregateCheckResults(evaluator.EvaluatePod(restricted, &tpl.ObjectMeta, &tpl.Spec))
				if !result.Allowed {
					t.Errorf("Deployment %s violates the restricted Pod Security Standard: %s", d.Name, result.ForbiddenDetail())
				}
			}
			if n == 0 {
				t.Fatal("no Deployment rendered")
			}
		})
	}
}
