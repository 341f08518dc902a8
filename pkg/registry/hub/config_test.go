package hub_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/clusterset/clusterset/internal/testenv"
	"github.com/clusterset/clusterset/pkg/registry/hub"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

// TestConfigHubManifests checks that config/hub ships what EnsureMember
// creates. UPDATE_CONFIG=1 rewrites the generated files.
func TestConfigHubManifests(t *testing.T) {
	dir := filepath.Join(testenv.RepoRoot(), "config", "hub")
	checkHubKustomization(t, dir)
	ns := hub.NamespaceName("demo", "cls1")
	sa := &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: metav1.ObjectMeta{Name: "clusterset-member", Namespace: ns},
	}
	member := hub.MemberObjects("demo", "cls1", rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: ns})
	files := map[string]struct {
		header string
		objs   []metav1.Object
	}{
		"reader-clusterrole.yaml": {
			header: "# Every member of every clusterset on this hub is bound to this ClusterRole:\n" +
				"# it reads all members' records and heartbeats (ClusterSetRecords) and nothing else.\n" +
				"# Generated from pkg/registry/hub (ReaderRole); UPDATE_CONFIG=1 go test ./pkg/registry/hub regenerates it.\n",
			objs: []metav1.Object{hub.ReaderRole()},
		},
		"member-example.yaml": {
			header: "# What one member needs in the hub, here cluster cls1 of clusterset demo: its\n" +
				"# namespace (hub.NamespaceName, a readable prefix and a hash of both IDs),\n" +
				"# a Role that lets it write ClusterSetRecords there only, the bindings of\n" +
				"# its credentials (here a ServiceAccount whose token goes into the member's\n" +
				"# hub kubeconfig) to that Role and to clusterset-hub-reader.\n" +
				"# `kubectl clusterset join` and hub.EnsureMember create the same objects for\n" +
				"# any IDs, and install the ClusterSetRecord CRD of crd/.\n" +
				"# Generated from pkg/registry/hub (MemberObjects); UPDATE_CONFIG=1 go test ./pkg/registry/hub regenerates it.\n",
			objs: append(member, sa),
		},
	}
	for name, f := range files {
		var b bytes.Buffer
		b.WriteString(f.header)
		for _, obj := range f.objs {
			u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
			if err != nil {
				t.Fatal(err)
			}
			meta := u["metadata"].(map[string]any)
			delete(meta, "creationTimestamp")
			delete(u, "status")
			out, err := yaml.Marshal(u)
			if err != nil {
				t.Fatal(err)
			}
			b.WriteString("---\n")
			b.Write(out)
		}
		path := filepath.Join(dir, name)
		if os.Getenv("UPDATE_CONFIG") != "" {
			if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (UPDATE_CONFIG=1 writes it)", err)
		}
		if !bytes.Equal(got, b.Bytes()) {
			t.Errorf("%s differs from what pkg/registry/hub creates; run UPDATE_CONFIG=1 go test ./pkg/registry/hub", path)
		}
	}
}

// checkHubKustomization checks that config/hub/kustomization.yaml applies the
// CRDs that EnsureMember installs, which serve the API the backend uses, and
// the reader ClusterRole.
func checkHubKustomization(t *testing.T, dir string) {
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(raw, &k); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"reader-clusterrole.yaml": true}
	if len(hub.CRDs()) != 1 {
		t.Fatalf("%d CRDs, want 1", len(hub.CRDs()))
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(hub.CRDs()[0], &crd); err != nil {
		t.Fatal(err)
	}
	gv := hubv1alpha1.GroupVersion
	if crd.Spec.Group != gv.Group || crd.Spec.Names.Plural != hubv1alpha1.Resource || crd.Spec.Scope != apiextensionsv1.NamespaceScoped ||
		len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Name != gv.Version {
		t.Errorf("embedded CRD %s does not serve namespaced %s in %s", crd.Name, hubv1alpha1.Resource, gv)
	}
	path := "crd/" + crd.Spec.Group + "_" + crd.Spec.Names.Plural + ".yaml"
	want[path] = true
	onDisk, err := os.ReadFile(filepath.Join(dir, path))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, hub.CRDs()[0]) {
		t.Errorf("%s differs from the embedded CRD", path)
	}
	for _, r := range k.Resources {
		delete(want, r)
	}
	if len(want) > 0 {
		t.Errorf("config/hub/kustomization.yaml misses %v", want)
	}
}
