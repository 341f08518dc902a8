// Package membership makes a cluster a member of a clusterset whose
// registry is a hub API server, the way `kubectl clusterset join` does.
package membership

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/clusterset/clusterset/internal/scheme"
	aboutv1alpha1 "github.com/clusterset/clusterset/pkg/apis/about/v1alpha1"
	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/hub"
)

// Where the member's controller finds its hub credentials: the Secret that
// config/manager mounts.
const (
	HubSecretNamespace = "clusterset-system"
	HubSecretName      = "clusterset-hub-kubeconfig"
	HubSecretKey       = "kubeconfig"
)

// Options of Join.
type Options struct {
	// ClusterID and ClusterSetID are the member's identity (KEP-2149
	// ClusterProperties): a DNS-1123 label and a DNS-1123 subdomain
	// (registry.ValidateClusterID, registry.ValidateClusterSetID).
	ClusterID, ClusterSetID string
	// HubServer is the hub API server's URL as the member's controller
	// reaches it; "" means hubCfg's host.
	HubServer string
	// TokenTTL is how long the member's hub token is valid.
	TokenTTL time.Duration
	// SecretNamespace, SecretName and SecretKey say where in the member the
	// hub credentials go: the controller's namespace and the chart's
	// registry.hub.secretName and .secretKey. Defaults HubSecretNamespace,
	// HubSecretName, HubSecretKey.
	SecretNamespace, SecretName, SecretKey string
}

// Join does the work of `kubectl clusterset join`: on the hub (hubCfg, admin
// rights) the member's namespace, RBAC, ServiceAccount and CRD (hub.Join);
// in the member (memberCfg) the Secret o.SecretNamespace/o.SecretName with a
// kubeconfig for the hub and the identity ClusterProperties when absent. It
// checks the member's identity before touching the hub, so a refused join
// leaves nothing behind; it reports each step to out. Running it again
// rotates the token. IDs that the member's controller would refuse are an
// error before anything is read or written.
func Join(ctx context.Context, out io.Writer, hubCfg, memberCfg *rest.Config, o Options) error {
	if err := registry.ValidateClusterID(o.ClusterID); err != nil {
		return fmt.Errorf("--cluster-id: %w", err)
	}
	if err := registry.ValidateClusterSetID(o.ClusterSetID); err != nil {
		return fmt.Errorf("--clusterset-id: %w", err)
	}
	o.SecretNamespace = cmp.Or(o.SecretNamespace, HubSecretNamespace)
	o.SecretName = cmp.Or(o.SecretName, HubSecretName)
	o.SecretKey = cmp.Or(o.SecretKey, HubSecretKey)
	c, err := client.New(memberCfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		return err
	}
	identity := map[string]string{aboutv1alpha1.ClusterIDName: o.ClusterID, aboutv1alpha1.ClusterSetIDName: o.ClusterSetID}
	var missing []string
	for name, value := range identity {
		var p aboutv1alpha1.ClusterProperty
		err := c.Get(ctx, client.ObjectKey{Name: name}, &p)
		switch {
		case apierrors.IsNotFound(err):
			missing = append(missing, name)
		case err != nil:
			return fmt.Errorf("member: ClusterProperty %s: %w (are the CRDs of config/crd installed?)", name, err)
		case p.Spec.Value != value:
			return fmt.Errorf("member: ClusterProperty %s is %q, not %q: a cluster's ID must not change while it is a member; fix the flag or the property", name, p.Spec.Value, value)
		}
	}

	hubClient, err := kubernetes.NewForConfig(hubCfg)
	if err != nil {
		return err
	}
	token, err := hub.Join(ctx, hubClient, o.ClusterSetID, o.ClusterID, o.TokenTTL)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "hub: member %s of clusterset %s in namespace %s\n", o.ClusterID, o.ClusterSetID, hub.NamespaceName(o.ClusterSetID, o.ClusterID))

	kubeconfig, err := memberHubKubeconfig(hubCfg, o.HubServer, token)
	if err != nil {
		return err
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.SecretNamespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("member: namespace %s: %w", o.SecretNamespace, err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: o.SecretNamespace, Name: o.SecretName}}
	if _, err := controllerutil.CreateOrUpdate(ctx, c, secret, func() error {
		secret.Type = corev1.SecretTypeOpaque
		secret.Data = map[string][]byte{o.SecretKey: kubeconfig}
		return nil
	}); err != nil {
		return fmt.Errorf("member: secret %s/%s: %w", o.SecretNamespace, o.SecretName, err)
	}
	fmt.Fprintf(out, "member: secret %s/%s holds the hub credentials (token valid %s)\n", o.SecretNamespace, o.SecretName, o.TokenTTL)

	for _, name := range missing {
		p := aboutv1alpha1.ClusterProperty{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: aboutv1alpha1.ClusterPropertySpec{Value: identity[name]}}
		if err := c.Create(ctx, &p); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("member: ClusterProperty %s: %w", name, err)
		}
		fmt.Fprintf(out, "member: ClusterProperty %s = %s\n", name, identity[name])
	}
	return nil
}

// memberHubKubeconfig is a kubeconfig for the hub with the member's token.
func memberHubKubeconfig(hubCfg *rest.Config, server, token string) ([]byte, error) {
	if server == "" {
		server = hubCfg.Host
	}
	ca := hubCfg.CAData
	if len(ca) == 0 && hubCfg.CAFile != "" {
		var err error
		if ca, err = os.ReadFile(hubCfg.CAFile); err != nil {
			return nil, fmt.Errorf("hub CA: %w", err)
		}
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["hub"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca, InsecureSkipTLSVerify: hubCfg.Insecure}
	cfg.AuthInfos["member"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["hub"] = &clientcmdapi.Context{Cluster: "hub", AuthInfo: "member"}
	cfg.CurrentContext = "hub"
	return clientcmd.Write(*cfg)
}
