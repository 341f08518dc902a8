package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/clusterset/clusterset/internal/scheme"
	aboutv1alpha1 "github.com/clusterset/clusterset/pkg/apis/about/v1alpha1"
	"github.com/clusterset/clusterset/pkg/registry/hub"
)

// Where the member's controller finds its hub credentials (config/manager).
const (
	controllerNamespace = "clusterset-system"
	hubSecretName       = "clusterset-hub-kubeconfig"
	hubSecretKey        = "kubeconfig"
)

type joinOptions struct {
	hubKubeconfig, hubContext, hubServer string
	clusterID, clusterSetID              string
	tokenTTL                             time.Duration
}

func newJoinCommand() *cobra.Command {
	member := genericclioptions.NewConfigFlags(false)
	var o joinOptions
	cmd := &cobra.Command{
		Use:   "join",
		Short: "Make a cluster a member of a clusterset that uses a hub registry",
		Long: `join sets up a member cluster of a clusterset whose registry is a hub API server:
on the hub, the member's namespace, RBAC, ServiceAccount and the ClusterSetRecord CRD; in the
member (the current or --context cluster), the secret clusterset-system/clusterset-hub-kubeconfig
that clusterset-controller reads, and the identity ClusterProperties when they are absent.
Run it again to rotate the member's token.`,
		Example: `  kubectl clusterset join --context cls2 --hub-context cls1 --cluster-id cls2 --clusterset-id clusterset1`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			memberCfg, err := member.ToRESTConfig()
			if err != nil {
				return fmt.Errorf("member cluster: %w", err)
			}
			rules := clientcmd.NewDefaultClientConfigLoadingRules()
			if o.hubKubeconfig != "" {
				rules.ExplicitPath = o.hubKubeconfig
			}
			hubCfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: o.hubContext}).ClientConfig()
			if err != nil {
				return fmt.Errorf("hub: %w", err)
			}
			return join(cmd.Context(), cmd.OutOrStdout(), hubCfg, memberCfg, o)
		},
	}
	member.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&o.hubKubeconfig, "hub-kubeconfig", "", "kubeconfig with admin access to the hub (default: the usual kubeconfig)")
	cmd.Flags().StringVar(&o.hubContext, "hub-context", "", "context of the hub (required)")
	cmd.Flags().StringVar(&o.hubServer, "hub-server", "", "hub API server URL as the member's controller reaches it (default: the hub context's server)")
	cmd.Flags().StringVar(&o.clusterID, "cluster-id", "", "this member's cluster ID, a DNS label (required)")
	cmd.Flags().StringVar(&o.clusterSetID, "clusterset-id", "", "the clusterset's ID (required)")
	cmd.Flags().DurationVar(&o.tokenTTL, "token-ttl", 365*24*time.Hour, "how long the member's hub token is valid; run join again before it expires")
	for _, f := range []string{"hub-context", "cluster-id", "clusterset-id"} {
		_ = cmd.MarkFlagRequired(f)
	}
	return cmd
}

// join does the work of `kubectl clusterset join`. It checks the member's
// identity before touching the hub, so a refused join leaves nothing behind.
func join(ctx context.Context, out io.Writer, hubCfg, memberCfg *rest.Config, o joinOptions) error {
	c, err := client.New(memberCfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		return err
	}
	identity := map[string]string{aboutv1alpha1.ClusterIDName: o.clusterID, aboutv1alpha1.ClusterSetIDName: o.clusterSetID}
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
	token, err := hub.Join(ctx, hubClient, o.clusterSetID, o.clusterID, o.tokenTTL)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "hub: member %s of clusterset %s in namespace %s\n", o.clusterID, o.clusterSetID, hub.NamespaceName(o.clusterSetID, o.clusterID))

	kubeconfig, err := memberHubKubeconfig(hubCfg, o.hubServer, token)
	if err != nil {
		return err
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: controllerNamespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("member: namespace %s: %w", controllerNamespace, err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: controllerNamespace, Name: hubSecretName}}
	if _, err := controllerutil.CreateOrUpdate(ctx, c, secret, func() error {
		secret.Type = corev1.SecretTypeOpaque
		secret.Data = map[string][]byte{hubSecretKey: kubeconfig}
		return nil
	}); err != nil {
		return fmt.Errorf("member: secret %s/%s: %w", controllerNamespace, hubSecretName, err)
	}
	fmt.Fprintf(out, "member: secret %s/%s holds the hub credentials (token valid %s)\n", controllerNamespace, hubSecretName, o.tokenTTL)

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
