package hub_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/clusterset/clusterset/internal/testenv"
	"github.com/clusterset/clusterset/pkg/registry/hub"
)

// TestConfigHubManifests checks that config/hub ships what EnsureMember
// creates. UPDATE_CONFIG=1 rewrites the files.
func TestConfigHubManifests(t *testing.T) {
	dir := filepath.Join(testenv.RepoRoot(), "config", "hub")
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
				"# it reads all members' records (ConfigMaps) and liveness Leases.\n" +
				"# Generated from pkg/registry/hub (ReaderRole); UPDATE_CONFIG=1 go test ./pkg/registry/hub regenerates it.\n",
			objs: []metav1.Object{hub.ReaderRole()},
		},
		"member-example.yaml": {
			header: "# What one member needs in the hub, here cluster cls1 of clusterset demo: its\n" +
				"# namespace (hub.NamespaceName, a readable prefix and a hash of both IDs),\n" +
				"# a Role that lets it write there only, the bindings of its credentials\n" +
				"# (here a ServiceAccount whose token goes into the member's hub kubeconfig)\n" +
				"# to that Role and to clusterset-hub-reader. `kubectl clusterset join` and\n" +
				"# hub.EnsureMember create the same objects for any IDs.\n" +
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
