package testenv

import (
	"path/filepath"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// WriteKubeconfig writes a kubeconfig with one context per entry of
// contexts, each with a cluster and a user of the same name and the
// namespace "default", and current as its current context; it returns the
// file's path, in a directory of its own that is removed when the test ends.
// A context gets its config's server, CA, client certificate and bearer
// token (the envtest admin's credentials, say), and acts as the config's
// Impersonate user, UID, groups and extra when they are set.
func WriteKubeconfig(t testing.TB, current string, contexts map[string]*rest.Config) string {
	t.Helper()
	if _, ok := contexts[current]; !ok {
		t.Fatalf("kubeconfig: current context %q is not one of the contexts", current)
	}
	kc := clientcmdapi.NewConfig()
	for name, cfg := range contexts {
		kc.Clusters[name] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
		kc.AuthInfos[name] = &clientcmdapi.AuthInfo{
			ClientCertificateData: cfg.CertData,
			ClientKeyData:         cfg.KeyData,
			Token:                 cfg.BearerToken,
			Impersonate:           cfg.Impersonate.UserName,
			ImpersonateUID:        cfg.Impersonate.UID,
			ImpersonateGroups:     cfg.Impersonate.Groups,
			ImpersonateUserExtra:  cfg.Impersonate.Extra,
		}
		kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name, Namespace: "default"}
	}
	kc.CurrentContext = current
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}
