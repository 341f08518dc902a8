package hub_test

import (
	"context"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/component-helpers/auth/rbac/validation"

	"github.com/clusterset/clusterset/pkg/registry/hub"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

// TestHubMemberRulesAreExactlyItsRoles asks the hub's authorizer for every
// rule that a member's credentials hold (SelfSubjectRulesReview: every verb
// on every resource and URL), in its own namespace, another member's, a
// namespace of an unrelated workload and the system namespaces (the rules
// of ClusterRoleBindings, cluster-scoped resources included, appear in each),
// and compares them with what every authenticated ServiceAccount holds
// anyway plus exactly what the member roles say: get, list and watch ClusterSetRecords
// anywhere, create, update and delete them in its own namespace. A grant
// added by mistake, to any resource, fails here.
func TestHubMemberRulesAreExactlyItsRoles(t *testing.T) {
	h := startHub(t)
	ctx := context.Background()
	const set = "rules"
	member := h.member(t, set, "cls-a", nil)
	h.member(t, set, "cls-b", nil)
	own, other := hub.NamespaceName(set, "cls-a"), hub.NamespaceName(set, "cls-b")
	const workload = "workload"
	if _, err := h.admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: workload}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A ServiceAccount bound to nothing: what any authenticated caller holds.
	if _, err := h.admin.CoreV1().ServiceAccounts(workload).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := h.admin.CoreV1().ServiceAccounts(workload).CreateToken(ctx, "nobody", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nobody := rest.AnonymousClientConfig(h.cfg)
	nobody.BearerToken = tok.Status.Token

	records := func(verbs ...string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{APIGroups: []string{hubv1alpha1.GroupVersion.Group}, Resources: []string{hubv1alpha1.Resource}, Verbs: verbs}
	}
	for _, ns := range []string{own, other, workload, metav1.NamespaceDefault, metav1.NamespaceSystem} {
		want := append(rulesOf(t, nobody, ns), records("get", "list", "watch"))
		if ns == own {
			want = append(want, records("create", "update", "delete"))
		}
		got := rulesOf(t, member, ns)
		if ok, extra := validation.Covers(want, got); !ok {
			t.Errorf("namespace %q: the member holds more than its roles: %v", ns, extra)
		}
		if ok, missing := validation.Covers(got, want); !ok {
			t.Errorf("namespace %q: the member lacks grants of its roles: %v", ns, missing)
		}
	}
}

// rulesOf is every rule that cfg's credentials hold in namespace ns, as the
// hub's authorizer evaluates them.
func rulesOf(t *testing.T, cfg *rest.Config, ns string) []rbacv1.PolicyRule {
	t.Helper()
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	review, err := c.AuthorizationV1().SelfSubjectRulesReviews().Create(context.Background(),
		&authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if review.Status.Incomplete {
		t.Fatalf("namespace %q: the hub's rules review is incomplete: %s", ns, review.Status.EvaluationError)
	}
	var out []rbacv1.PolicyRule
	for _, r := range review.Status.ResourceRules {
		out = append(out, rbacv1.PolicyRule{Verbs: r.Verbs, APIGroups: r.APIGroups, Resources: r.Resources, ResourceNames: r.ResourceNames})
	}
	for _, r := range review.Status.NonResourceRules {
		out = append(out, rbacv1.PolicyRule{Verbs: r.Verbs, NonResourceURLs: r.NonResourceURLs})
	}
	return out
}
