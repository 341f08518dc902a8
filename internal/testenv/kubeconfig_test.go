package testenv

import (
	"maps"
	"slices"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// TestWriteKubeconfig reads back a kubeconfig of two contexts, one of them
// impersonating a member: each context gives back its config's server,
// credentials and impersonation.
func TestWriteKubeconfig(t *testing.T) {
	admin := &rest.Config{Host: "https://127.0.0.1:6443", BearerToken: "token", TLSClientConfig: rest.TLSClientConfig{
		CAData: []byte("ca"), CertData: []byte("cert"), KeyData: []byte("key"),
	}}
	member := rest.CopyConfig(admin)
	member.Host = "https://127.0.0.1:7443"
	member.Impersonate = rest.ImpersonationConfig{UserName: "clusterset:member:cls2", Groups: []string{"g"}}
	path := WriteKubeconfig(t, "cls1", map[string]*rest.Config{"cls1": admin, "cls2": member})

	raw, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if raw.CurrentContext != "cls1" {
		t.Errorf("current context %q, want cls1", raw.CurrentContext)
	}
	if got := slices.Sorted(maps.Keys(raw.Contexts)); !slices.Equal(got, []string{"cls1", "cls2"}) {
		t.Errorf("contexts %v, want [cls1 cls2]", got)
	}
	for name, want := range map[string]*rest.Config{"cls1": admin, "cls2": member} {
		if ns := raw.Contexts[name].Namespace; ns != "default" {
			t.Errorf("%s: namespace %q, want default", name, ns)
		}
		got, err := clientcmd.NewNonInteractiveClientConfig(*raw, name, &clientcmd.ConfigOverrides{}, nil).ClientConfig()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.Host != want.Host || got.BearerToken != want.BearerToken || string(got.CAData) != "ca" ||
			string(got.CertData) != "cert" || string(got.KeyData) != "key" {
			t.Errorf("%s: host %q token %q CA %q cert %q key %q, want %q %q ca cert key",
				name, got.Host, got.BearerToken, got.CAData, got.CertData, got.KeyData, want.Host, want.BearerToken)
		}
		if got.Impersonate.UserName != want.Impersonate.UserName || !slices.Equal(got.Impersonate.Groups, want.Impersonate.Groups) {
			t.Errorf("%s: impersonates %+v, want %+v", name, got.Impersonate, want.Impersonate)
		}
	}
}
