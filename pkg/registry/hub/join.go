package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

// MemberServiceAccount is the ServiceAccount, in the member's own hub
// namespace, whose tokens are the member's credentials on the hub. Keeping it
// in that namespace means deleting the namespace removes the member entirely.
const MemberServiceAccount = "clusterset-member"

// KindToken labels (LabelKind) the Secrets of a member's hub namespace that
// its tokens are bound to: deleting one revokes its token at once.
const KindToken = "token"

// MemberToken is a hub token of a member and what it is bound to.
type MemberToken struct {
	// Token is the bearer token.
	Token string
	// Secret is the name of the Secret, in the member's hub namespace, that
	// the token is bound to (TokenRequest boundObjectRef): the API server
	// accepts the token only while that Secret exists.
	Secret string
	// Expires is when the token stops being valid.
	Expires time.Time
}

// Join makes clusterID a member of clusterSetID on the hub (EnsureMember with
// the member's ServiceAccount as subject) and issues a new token of that
// ServiceAccount, valid for ttl and bound to a new Secret labeled KindToken.
// Earlier tokens stay valid until RevokeTokens. Run it again to rotate.
func Join(ctx context.Context, hub kubernetes.Interface, clusterSetID, clusterID string, ttl time.Duration) (MemberToken, error) {
	ns := NamespaceName(clusterSetID, clusterID)
	subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: MemberServiceAccount, Namespace: ns}
	if _, err := EnsureMember(ctx, hub, clusterSetID, clusterID, subject); err != nil {
		return MemberToken{}, err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: MemberServiceAccount}}
	if _, err := hub.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return MemberToken{}, fmt.Errorf("hub member %s: ServiceAccount %s/%s: %w", clusterID, ns, MemberServiceAccount, err)
	}
	// The Secret only anchors the token: it holds no data, and members
	// cannot read Secrets on the hub anyway.
	anchor, err := hub.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: MemberServiceAccount + "-token-",
			Labels:       map[string]string{LabelKind: KindToken, LabelManagedBy: managedBy},
			Annotations:  map[string]string{AnnotationClusterSetID: clusterSetID, AnnotationClusterID: clusterID},
		},
		Type: corev1.SecretTypeOpaque,
	}, metav1.CreateOptions{})
	if err != nil {
		return MemberToken{}, fmt.Errorf("hub member %s: Secret for a token in %s: %w", clusterID, ns, err)
	}
	secs := int64(ttl / time.Second)
	tr, err := hub.CoreV1().ServiceAccounts(ns).CreateToken(ctx, MemberServiceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: &secs,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: anchor.Name, UID: anchor.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		// Without its token the anchor is of no use.
		_ = hub.CoreV1().Secrets(ns).Delete(ctx, anchor.Name, metav1.DeleteOptions{})
		return MemberToken{}, fmt.Errorf("hub member %s: token for %s/%s: %w", clusterID, ns, MemberServiceAccount, err)
	}
	return MemberToken{Token: tr.Status.Token, Secret: anchor.Name, Expires: tr.Status.ExpirationTimestamp.Time}, nil
}

// RevokeTokens deletes the Secrets that the member's tokens are bound to,
// but keep, which revokes every token Join issued to the member but the one
// bound to keep. It returns the names of the Secrets it deleted. Tokens
// issued without a bound Secret (by earlier versions of clusterset) are
// revoked only by deleting the ServiceAccount.
func RevokeTokens(ctx context.Context, hub kubernetes.Interface, clusterSetID, clusterID, keep string) ([]string, error) {
	ns := NamespaceName(clusterSetID, clusterID)
	list, err := hub.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: LabelKind + "=" + KindToken})
	if err != nil {
		return nil, fmt.Errorf("hub member %s: listing token Secrets in %s: %w", clusterID, ns, err)
	}
	var revoked []string
	for _, s := range list.Items {
		if s.Name == keep {
			continue
		}
		if err := hub.CoreV1().Secrets(ns).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return revoked, fmt.Errorf("hub member %s: revoking the token bound to Secret %s/%s: %w", clusterID, ns, s.Name, err)
		}
		revoked = append(revoked, s.Name)
	}
	return revoked, nil
}

// ErrNoHeartbeat is returned by MemberHeartbeat when the member has never
// renewed a heartbeat.
var ErrNoHeartbeat = errors.New("no heartbeat")

// MemberHeartbeatInfo is what MemberHeartbeat reads of a member's heartbeat.
type MemberHeartbeatInfo struct {
	// Renewed is the renew time the member wrote, on its own clock.
	Renewed time.Time
	// Lease is how long the member means a renewal to last.
	Lease time.Duration
	// Credential is the CredentialDigest of the token the member last used
	// with success; "" for members that do not report it (versions before
	// token rotation, or credentials other than a bearer token).
	Credential string
}

// MemberHeartbeat reads, with admin credentials on the hub, the heartbeat of
// clusterID in clusterSetID. It returns ErrNoHeartbeat when there is none.
func MemberHeartbeat(ctx context.Context, hub kubernetes.Interface, clusterSetID, clusterID string) (MemberHeartbeatInfo, error) {
	ns := NamespaceName(clusterSetID, clusterID)
	raw, err := hub.Discovery().RESTClient().Get().
		AbsPath("/apis", hubv1alpha1.GroupVersion.Group, hubv1alpha1.GroupVersion.Version, "namespaces", ns, hubv1alpha1.Resource, HeartbeatName).
		DoRaw(ctx)
	if apierrors.IsNotFound(err) {
		return MemberHeartbeatInfo{}, ErrNoHeartbeat
	}
	if err != nil {
		return MemberHeartbeatInfo{}, fmt.Errorf("hub member %s: reading its heartbeat: %w", clusterID, err)
	}
	var hb hubv1alpha1.ClusterSetRecord
	if err := json.Unmarshal(raw, &hb); err != nil {
		return MemberHeartbeatInfo{}, fmt.Errorf("hub member %s: heartbeat: %w", clusterID, err)
	}
	info := MemberHeartbeatInfo{Credential: hb.Spec.Credential, Lease: DefaultLeaseDuration}
	if hb.Spec.RenewTime != nil {
		info.Renewed = hb.Spec.RenewTime.Time
	}
	if hb.Spec.LeaseDurationSeconds != nil && *hb.Spec.LeaseDurationSeconds > 0 {
		info.Lease = time.Duration(*hb.Spec.LeaseDurationSeconds) * time.Second
	}
	return info, nil
}
