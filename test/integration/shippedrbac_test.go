package integration

// TestShippedRBACIsWhatTheCodeCalls compares the calls that every other test
// of the package made with the shipped RBAC, so it runs last: it is the
// package's only parallel test, and go test starts the parallel top-level
// tests once every other one has returned, whatever their order (-shuffle
// included).

import (
	"flag"
	"maps"
	"slices"
	"sync"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/component-helpers/auth/rbac/validation"

	"github.com/clusterset/clusterset/internal/apicalls"
	"github.com/clusterset/clusterset/pkg/registry/hub"
)

var (
	// controllerCalls are the calls of every member's controllers in
	// their own cluster (controllerConfig).
	controllerCalls apicalls.Recorder
	// hubCalls are the calls of each member on the hub, by the member's
	// hub namespace (hub.NamespaceName).
	hubCalls = &recorders{byNamespace: map[string]*apicalls.Recorder{}}
)

type recorders struct {
	mu          sync.Mutex
	byNamespace map[string]*apicalls.Recorder
}

// byOwner returns a copy of the recorders by namespace.
func (r *recorders) byOwner() map[string]*apicalls.Recorder {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.byNamespace)
}

func (r *recorders) of(namespace string) *apicalls.Recorder {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byNamespace[namespace] == nil {
		r.byNamespace[namespace] = &apicalls.Recorder{}
	}
	return r.byNamespace[namespace]
}

// TestShippedRBACIsWhatTheCodeCalls compares the calls that the controllers
// made in all the tests of this package with config/rbac/role.yaml and
// leader_election_role.yaml (leader election runs as in the shipped
// Deployment), and the
// calls that members made on the hub with the hub's member roles
// (hub.ReaderRole, hub.MemberObjects): every call is granted (RBAC already
// refused any other, so this only names it), and every grant was used by
// some call, so a rule added "just in case" fails here. Writes on the hub go
// to the writer's own namespace only.
func TestShippedRBACIsWhatTheCodeCalls(t *testing.T) {
	for _, name := range []string{"test.run", "test.skip"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			t.Skip("compares the calls of the whole package's tests; run without -run and -skip")
		}
	}
	// Waits until every other (sequential) test of the package has
	// returned. Another parallel test would run alongside: there is none.
	t.Parallel()
	role := shippedRBAC[rbacv1.ClusterRole](t, "role.yaml")
	leader := shippedRBAC[rbacv1.Role](t, "leader_election_role.yaml")
	calls := controllerCalls.Calls()
	for _, c := range calls {
		// The Role grants only in the Lease's namespace.
		if ok, _ := validation.Covers(role.Rules, []rbacv1.PolicyRule{c.Rule()}); !ok && c.Namespace != leaderElectionNamespace {
			t.Errorf("the controllers called %s %s (group %q) in namespace %q, which only the leader election Role grants, in its namespace", c.Verb, c.Resource, c.Group, c.Namespace)
		}
	}
	compare(t, "config/rbac (role.yaml and leader_election_role.yaml)", append(slices.Clone(role.Rules), leader.Rules...), calls, grantedWithoutCall...)

	var hubGrants []rbacv1.PolicyRule
	hubGrants = append(hubGrants, hub.ReaderRole().Rules...)
	for _, obj := range hub.MemberObjects(clusterSet, "any") {
		if r, ok := obj.(*rbacv1.Role); ok {
			hubGrants = append(hubGrants, r.Rules...)
		}
	}
	var all []apicalls.Call
	for own, rec := range hubCalls.byOwner() {
		for _, c := range rec.Calls() {
			switch c.Verb {
			case "get", "list", "watch":
			default:
				if c.Namespace != own {
					t.Errorf("the member of hub namespace %s called %s %s in namespace %q of the hub, want only its own", own, c.Verb, c.Resource, c.Namespace)
				}
			}
			all = append(all, c)
		}
	}
	compare(t, "the hub's member roles", hubGrants, all)
}

// grantedWithoutCall are the grants that no request of the tests calls, each
// needed all the same:
//   - update on serviceimports/finalizers is what the admission plugin
//     OwnerReferencesPermissionEnforcement (testenv turns it on) checks before
//     it lets the controller set blockOwnerDeletion on the derived Service
//     and the imported slices: without it those creates are Forbidden, and
//     the suite fails;
//   - patch on core events is how client-go's event recorder, which leader
//     election uses, sends an event again, which happens when a controller
//     loses its Lease and becomes leader again with the same identity.
var grantedWithoutCall = []apicalls.Call{
	{Group: "multicluster.x-k8s.io", Resource: "serviceimports/finalizers", Verb: "update"},
	{Group: "", Resource: "events", Verb: "patch"},
}

// compare fails t for each call granted does not allow and each grant that
// neither a call nor checked uses.
func compare(t *testing.T, what string, granted []rbacv1.PolicyRule, calls []apicalls.Call, checked ...apicalls.Call) {
	t.Helper()
	if len(calls) == 0 {
		t.Fatalf("%s: no calls recorded", what)
	}
	notGranted, unused := apicalls.Compare(granted, append(slices.Clone(calls), checked...))
	for _, c := range notGranted {
		t.Errorf("%s does not grant %s %s (group %q), which the code called", what, c.Verb, c.Resource, c.Group)
	}
	for _, r := range unused {
		t.Errorf("%s grants %v %v (group %v), which no test called", what, r.Verbs, r.Resources, r.APIGroups)
	}
	for _, c := range calls {
		t.Logf("%s: called %s %s (group %q) in %q", what, c.Verb, c.Resource, c.Group, c.Namespace)
	}
}
