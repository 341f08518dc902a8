package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clusterset/clusterset/pkg/membership"
)

type joinOptions struct {
	hubKubeconfig, hubContext string
	membership.Options
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
that clusterset-controller reads (--controller-namespace, --hub-secret-name and --hub-secret-key
when the controller is installed elsewhere or with other registry.hub values), and the identity
ClusterProperties when they are absent.

Run it again to rotate the member's token: join issues a new token, writes it into the Secret,
waits until the member's controller uses it (the kubelet updates the mounted Secret within about
a minute and the controller reads it again without a restart; its heartbeat on the hub names the
token it uses), waits --revoke-grace for the standby replica's node, then revokes the member's
previous tokens. A member whose controller is stopped has them revoked once its heartbeat is
seen stale; one whose Secret was written by a join before token rotation must restart its
controller once first (join says so).`,
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
			return membership.Join(cmd.Context(), cmd.OutOrStdout(), hubCfg, memberCfg, o.Options)
		},
	}
	member.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&o.hubKubeconfig, "hub-kubeconfig", "", "kubeconfig with admin access to the hub (default: the usual kubeconfig)")
	cmd.Flags().StringVar(&o.hubContext, "hub-context", "", "context of the hub (required)")
	cmd.Flags().StringVar(&o.HubServer, "hub-server", "", "hub API server URL as the member's controller reaches it (default: the hub context's server)")
	cmd.Flags().StringVar(&o.ClusterID, "cluster-id", "", "this member's cluster ID, a DNS-1123 label of at most 63 characters (required)")
	cmd.Flags().StringVar(&o.ClusterSetID, "clusterset-id", "", "the clusterset's ID, a DNS-1123 subdomain of at most 253 characters (required)")
	cmd.Flags().StringVar(&o.SecretNamespace, "controller-namespace", membership.HubSecretNamespace, "the member's namespace of clusterset-controller, where the hub credentials go")
	cmd.Flags().StringVar(&o.SecretName, "hub-secret-name", membership.HubSecretName, "name of the Secret with the hub credentials (the chart's registry.hub.secretName)")
	cmd.Flags().StringVar(&o.SecretKey, "hub-secret-key", membership.HubSecretKey, "key of the kubeconfig in that Secret (the chart's registry.hub.secretKey)")
	cmd.Flags().DurationVar(&o.TokenTTL, "token-ttl", 365*24*time.Hour, "how long the member's hub token is valid; run join again before it expires")
	cmd.Flags().BoolVar(&o.KeepPreviousTokens, "keep-previous-tokens", false, "leave the member's previous hub tokens valid until they expire instead of revoking them once the controller uses the new one")
	cmd.Flags().DurationVar(&o.RevokeTimeout, "revoke-timeout", membership.DefaultRevokeTimeout, "how long to wait for the member's controller to use the new token before giving up on revoking the previous ones")
	cmd.Flags().BoolVar(&o.AllowInsecureHub, "allow-insecure-hub", false, "let the member reach the hub over http or without verifying its certificate, as the hub context does (refused by default: the member would send its token to whoever answers)")
	cmd.Flags().DurationVar(&o.RevokeGrace, "revoke-grace", membership.DefaultRevokeGrace, "how long to wait, once the member's leader uses the new token, before revoking the previous ones (the standby replica's node may update the Secret later)")
	for _, f := range []string{"hub-context", "cluster-id", "clusterset-id"} {
		_ = cmd.MarkFlagRequired(f)
	}
	return cmd
}
