// Package membership makes a cluster a member of a clusterset whose
// registry is a hub API server, the way `kubectl clusterset join` does.
package membership

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
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
	// HubSecretTokenKey is the key of the member's hub token in the same
	// Secret. The kubeconfig names it as its tokenFile, relative to itself,
	// so the controller reads the token from the mounted Secret again after
	// a rotation, without a restart (hub.DefaultTokenReloadInterval).
	HubSecretTokenKey = "token"
)

// DefaultRevokeTimeout is how long Join waits, before it revokes a member's
// previous hub tokens, for the member's controller to use the new one. The
// kubelet updates a mounted Secret within about a minute (its sync period
// plus its cache), and the controller reads the token file every
// hub.DefaultTokenReloadInterval.
const DefaultRevokeTimeout = 5 * time.Minute

// DefaultRevokeGrace is how long Join waits, after the member's heartbeat
// names the new token, before it revokes the previous ones: the heartbeat
// is the leader's, and the kubelet of the standby replica's node may update
// the Secret up to about a minute later.
const DefaultRevokeGrace = 90 * time.Second

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
	// HubSecretName, HubSecretKey. The token goes under HubSecretTokenKey.
	SecretNamespace, SecretName, SecretKey string
	// KeepPreviousTokens leaves the member's earlier hub tokens valid until
	// they expire. By default Join revokes them once the member's controller
	// uses the new token (its heartbeat says so), or at once when the
	// member has never written a heartbeat.
	KeepPreviousTokens bool
	// RevokeTimeout bounds that wait; 0 means DefaultRevokeTimeout. It is
	// never shorter than twice the heartbeat's lease and a poll, the time
	// it takes to tell a stopped controller.
	RevokeTimeout time.Duration
	// RevokeGrace is the wait between the heartbeat naming the new token
	// and the revocation; 0 means DefaultRevokeGrace.
	RevokeGrace time.Duration
	// Poll is how often the heartbeat is read during that wait; 0 means 2s.
	Poll time.Duration
	// AllowInsecureHub lets the member reach the hub over http or without
	// verifying its certificate, when the hub's config does. By default
	// Join refuses both: the member would send its token to whoever
	// answers.
	AllowInsecureHub bool
}

// Join does the work of `kubectl clusterset join`: on the hub (hubCfg, admin
// rights) the member's namespace, RBAC, ServiceAccount and CRD (hub.Join);
// in the member (memberCfg) the Secret o.SecretNamespace/o.SecretName with a
// kubeconfig for the hub and the identity ClusterProperties when absent. It
// checks the member's identity before touching the hub, so a refused join
// leaves nothing behind; it reports each step to out. Running it again
// rotates the token: the previous ones are revoked once the member's
// controller uses the new one (see Options.KeepPreviousTokens). IDs that
// the member's controller would refuse are an error before anything is read
// or written.
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
	if o.SecretKey == HubSecretTokenKey {
		return fmt.Errorf("the kubeconfig's key in Secret %s cannot be %q: the token goes there", o.SecretName, HubSecretTokenKey)
	}
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

	if err := checkHubTLS(hubCfg, o); err != nil {
		return err
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

	kubeconfig, err := memberHubKubeconfig(hubCfg, o.HubServer)
	if err != nil {
		return err
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.SecretNamespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("member: namespace %s: %w", o.SecretNamespace, err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: o.SecretNamespace, Name: o.SecretName}}
	// A Secret written by a join before token rotation holds the token in
	// the kubeconfig, which a running controller read at its start and does
	// not read again.
	inline := false
	if _, err := controllerutil.CreateOrUpdate(ctx, c, secret, func() error {
		if secret.ResourceVersion != "" {
			_, hasToken := secret.Data[HubSecretTokenKey]
			inline = !hasToken
		}
		secret.Type = corev1.SecretTypeOpaque
		secret.Data = map[string][]byte{o.SecretKey: kubeconfig, HubSecretTokenKey: []byte(token.Token)}
		return nil
	}); err != nil {
		return fmt.Errorf("member: secret %s/%s: %w", o.SecretNamespace, o.SecretName, err)
	}
	fmt.Fprintf(out, "member: secret %s/%s holds the hub credentials (token valid %s, until %s)\n", o.SecretNamespace, o.SecretName, o.TokenTTL, token.Expires.UTC().Format(time.RFC3339))

	for _, name := range missing {
		p := aboutv1alpha1.ClusterProperty{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: aboutv1alpha1.ClusterPropertySpec{Value: identity[name]}}
		if err := c.Create(ctx, &p); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("member: ClusterProperty %s: %w", name, err)
		}
		fmt.Fprintf(out, "member: ClusterProperty %s = %s\n", name, identity[name])
	}
	if o.KeepPreviousTokens {
		return nil
	}
	if inline {
		fmt.Fprintf(out, "member: the Secret held the previous token inside the kubeconfig, which a running controller read when it started and does not read again: restart it once (kubectl -n %s rollout restart deployment clusterset-controller), then run join again to revoke the previous tokens\n", o.SecretNamespace)
		return nil
	}
	return revokePrevious(ctx, out, hubClient, o, token)
}

// revokePrevious revokes the member's hub tokens but token once that cuts
// off no running controller:
//   - at once when the member never wrote a heartbeat (no controller used a
//     token);
//   - when its heartbeat is not renewed for twice its lease while Join
//     waits (its controller is down, and starts with the Secret's new
//     token);
//   - o.RevokeGrace after its heartbeat names the new token (the hub
//     accepts it from the leader; the standby's node catches up meanwhile);
//   - never when the heartbeat, renewed since Join began, names no token:
//     the controller does not report one (a version before token
//     rotation), so nothing tells when it switched.
func revokePrevious(ctx context.Context, out io.Writer, hubClient kubernetes.Interface, o Options, token hub.MemberToken) error {
	want := hub.CredentialDigest(token.Token)
	poll := cmp.Or(o.Poll, 2*time.Second)
	start := time.Now()
	var last hub.MemberHeartbeatInfo
	lastMoved, seen, moved, said := start, false, false, false
	for {
		hb, err := hub.MemberHeartbeat(ctx, hubClient, o.ClusterSetID, o.ClusterID)
		if errors.Is(err, hub.ErrNoHeartbeat) {
			return revoke(ctx, out, hubClient, o, token, "")
		}
		if err != nil {
			return err
		}
		switch {
		case !seen:
			last, seen = hb, true
		case !hb.Renewed.Equal(last.Renewed):
			last, lastMoved, moved = hb, time.Now(), true
		}
		switch {
		case hb.Credential == want:
			grace := cmp.Or(o.RevokeGrace, DefaultRevokeGrace)
			fmt.Fprintf(out, "hub: the member's controller uses the new token; the previous ones are revoked in %s, once every node's kubelet has updated the Secret\n", grace)
			if err := sleep(ctx, grace); err != nil {
				return err
			}
			return revoke(ctx, out, hubClient, o, token, "")
		case hb.Credential == "" && moved:
			fmt.Fprintf(out, "hub: the member's controller does not report which token it uses (a version before token rotation), so the previous tokens stay valid until they expire; once it runs with the new one, run join again to revoke them\n")
			return nil
		}
		if still := time.Since(lastMoved); still > 2*hb.Lease {
			return revoke(ctx, out, hubClient, o, token, fmt.Sprintf(" (its heartbeat was not renewed for %s: its controller is not running, and starts with the new token)", still.Round(time.Second)))
		}
		if timeout := max(cmp.Or(o.RevokeTimeout, DefaultRevokeTimeout), 2*hb.Lease+poll); time.Since(start) > timeout {
			return fmt.Errorf("hub: the member's controller has not used the new token within %s (its heartbeat names another one), so the previous tokens stay valid: check that clusterset-controller runs in the member with the Secret mounted (kubectl clusterset doctor), then run join again, or pass --keep-previous-tokens", timeout)
		}
		if !said {
			fmt.Fprintf(out, "hub: waiting for the member's controller to use the new token (the kubelet updates the Secret's files within about a minute)\n")
			said = true
		}
		if err := sleep(ctx, poll); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// revoke revokes the member's tokens but token and says so, with why.
func revoke(ctx context.Context, out io.Writer, hubClient kubernetes.Interface, o Options, token hub.MemberToken, why string) error {
	revoked, err := hub.RevokeTokens(ctx, hubClient, o.ClusterSetID, o.ClusterID, token.Secret)
	if err != nil {
		return err
	}
	if len(revoked) > 0 {
		fmt.Fprintf(out, "hub: revoked %d previous token(s) of the member%s\n", len(revoked), why)
	}
	return nil
}

// HubConfig returns the rest.Config of the hub kubeconfig under key of
// Secret s, as Join writes it, for callers that read the Secret through the
// API rather than from the files the kubelet mounts: its tokenFile, relative
// to the kubeconfig, is read from the Secret's key of that name.
func HubConfig(s *corev1.Secret, key string) (*rest.Config, error) {
	cfg, err := clientcmd.Load(s.Data[key])
	if err != nil {
		return nil, err
	}
	for name, ai := range cfg.AuthInfos {
		if ai.TokenFile == "" || filepath.IsAbs(ai.TokenFile) {
			continue
		}
		tok, ok := s.Data[filepath.Base(ai.TokenFile)]
		if !ok {
			return nil, fmt.Errorf("user %s: tokenFile %s is not a key of the Secret", name, ai.TokenFile)
		}
		ai.Token, ai.TokenFile = strings.TrimSpace(string(tok)), ""
	}
	return clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
}

// checkHubTLS refuses, unless o.AllowInsecureHub, a hub the member would
// reach over http or without verifying its certificate.
func checkHubTLS(hubCfg *rest.Config, o Options) error {
	if o.AllowInsecureHub {
		return nil
	}
	server := cmp.Or(o.HubServer, hubCfg.Host)
	if u, err := url.Parse(server); err != nil || u.Scheme != "https" {
		return fmt.Errorf("hub: the member would reach the hub at %q, not over https, and send its token in the clear: give an https address (--hub-server), or pass --allow-insecure-hub", server)
	}
	if hubCfg.Insecure {
		return fmt.Errorf("hub: the hub's context skips TLS verification (insecure-skip-tls-verify), and the member's controller would too, sending its token to whoever answers: give the context the hub's CA (certificate-authority-data), or pass --allow-insecure-hub")
	}
	return nil
}

// memberHubKubeconfig is a kubeconfig for the hub whose token is the file
// HubSecretTokenKey next to it.
func memberHubKubeconfig(hubCfg *rest.Config, server string) ([]byte, error) {
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
	cfg.AuthInfos["member"] = &clientcmdapi.AuthInfo{TokenFile: HubSecretTokenKey}
	cfg.Contexts["hub"] = &clientcmdapi.Context{Cluster: "hub", AuthInfo: "member"}
	cfg.CurrentContext = "hub"
	return clientcmd.Write(*cfg)
}
