package hub

import (
	"context"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// MemberServiceAccount is the ServiceAccount, in the member's own hub
// namespace, whose tokens are the member's credentials on the hub. Keeping it
// in that namespace means deleting the namespace removes the member entirely.
const MemberServiceAccount = "clusterset-member"

// Join makes clusterID a member of clusterSetID on the hub (EnsureMember with
// the member's ServiceAccount as subject) and returns a token of that
// ServiceAccount valid for ttl. Run it again to rotate the token.
func Join(ctx context.Context, hub kubernetes.Interface, clusterSetID, clusterID string, ttl time.Duration) (string, error) {
	ns := NamespaceName(clusterSetID, clusterID)
	subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: MemberServiceAccount, Namespace: ns}
	if _, err := EnsureMember(ctx, hub, clusterSetID, clusterID, subject); err != nil {
		return "", err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: MemberServiceAccount}}
	if _, err := hub.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("hub member %s: ServiceAccount %s/%s: %w", clusterID, ns, MemberServiceAccount, err)
	}
	secs := int64(ttl / time.Second)
	tr, err := hub.CoreV1().ServiceAccounts(ns).CreateToken(ctx, MemberServiceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("hub member %s: token for %s/%s: %w", clusterID, ns, MemberServiceAccount, err)
	}
	return tr.Status.Token, nil
}
