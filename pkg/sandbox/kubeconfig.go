package sandbox

import (
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// credentials is how a kubeconfig user authenticates: a client certificate
// or a bearer token.
type credentials struct {
	certPEM, keyPEM []byte
	token           string
}

// kubeconfigEntry is one context of a kubeconfig: context, cluster and user
// all share the name.
type kubeconfigEntry struct {
	name   string
	server string
	caPEM  []byte
	creds  credentials
	user   string // user entry name; default name
}

// writeKubeconfig writes a kubeconfig with one context per entry; the first
// entry is the current context.
func writeKubeconfig(file string, entries ...kubeconfigEntry) error {
	cfg := clientcmdapi.NewConfig()
	for i, e := range entries {
		user := e.user
		if user == "" {
			user = e.name
		}
		cfg.Clusters[e.name] = &clientcmdapi.Cluster{Server: e.server, CertificateAuthorityData: e.caPEM}
		cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{
			ClientCertificateData: e.creds.certPEM,
			ClientKeyData:         e.creds.keyPEM,
			Token:                 e.creds.token,
		}
		cfg.Contexts[e.name] = &clientcmdapi.Context{Cluster: e.name, AuthInfo: user}
		if i == 0 {
			cfg.CurrentContext = e.name
		}
	}
	return clientcmd.WriteToFile(*cfg, file)
}
