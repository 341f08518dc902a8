// Package apicalls records the Kubernetes API calls a client makes, as RBAC
// rules, and compares them with the rules a role grants. Tests use it to show
// that a shipped role is exactly what the code calls: nothing it needs is
// missing, and nothing it grants goes unused.
package apicalls

import (
	"cmp"
	"net/http"
	"slices"
	"sync"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/client-go/rest"
	"k8s.io/component-helpers/auth/rbac/validation"
)

// Call is one kind of request: a verb on a resource of an API group, as the
// API server's authorizer sees it (Kubernetes "Authorization Overview":
// get, list, watch, create, update, patch, delete, deletecollection).
// Subresources are written "resource/subresource", as in RBAC rules.
type Call struct {
	Group, Resource, Verb string
	// Namespace is the request's namespace, "" for cluster-wide requests.
	Namespace string
}

// Rule is the RBAC rule that allows exactly c.
func (c Call) Rule() rbacv1.PolicyRule {
	return rbacv1.PolicyRule{APIGroups: []string{c.Group}, Resources: []string{c.Resource}, Verbs: []string{c.Verb}}
}

// Recorder collects the calls of the clients built from configs it wrapped.
// It is safe for concurrent use.
type Recorder struct {
	mu    sync.Mutex
	calls map[Call]int // how many requests of each call
	// conflicts counts the requests of each call answered 409 Conflict:
	// a write based on an out-of-date resourceVersion, or a create of an
	// object that exists.
	conflicts map[Call]int
	// nonResource counts requests that are not to a resource (discovery,
	// /version), which RBAC grants through nonResourceURLs.
	nonResource sets.Set[string]
}

// parser reads requests the way kube-apiserver does before authorizing them.
var parser = &request.RequestInfoFactory{
	APIPrefixes:          sets.NewString("api", "apis"),
	GrouplessAPIPrefixes: sets.NewString("api"),
}

// Wrap returns a copy of cfg whose clients report every request to r. The
// request is recorded before it is sent, so calls the API server refuses are
// recorded too.
func (r *Recorder) Wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(next http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			c, ok := r.record(req)
			resp, err := next.RoundTrip(req)
			if ok && err == nil && resp.StatusCode == http.StatusConflict {
				r.mu.Lock()
				if r.conflicts == nil { // Reset while the request was out
					r.conflicts = map[Call]int{}
				}
				r.conflicts[c]++
				r.mu.Unlock()
			}
			return resp, err
		})
	})
	return cfg
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// record counts req and returns its call; ok is false for a request that is
// not to a resource.
func (r *Recorder) record(req *http.Request) (c Call, ok bool) {
	info, err := parser.NewRequestInfo(req)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls == nil {
		r.calls, r.conflicts, r.nonResource = map[Call]int{}, map[Call]int{}, sets.New[string]()
	}
	if err != nil || !info.IsResourceRequest {
		r.nonResource.Insert(req.URL.Path)
		return Call{}, false
	}
	res := info.Resource
	if info.Subresource != "" {
		res += "/" + info.Subresource
	}
	c = Call{Group: info.APIGroup, Resource: res, Verb: info.Verb, Namespace: info.Namespace}
	r.calls[c]++
	// client-go's informers list through a watch (sendInitialEvents,
	// feature WatchListClient) where the API server streams lists, which it
	// authorizes as a watch, and fall back to a LIST where it does not: the
	// list grant is what that request stands for.
	if c.Verb == "watch" && req.URL.Query().Get("sendInitialEvents") == "true" {
		list := c
		list.Verb = "list"
		r.calls[list]++
	}
	return c, true
}

// Calls returns the distinct calls recorded so far, sorted.
func (r *Recorder) Calls() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Call, 0, len(r.calls))
	for c := range r.calls {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Call) int {
		return cmp.Or(cmp.Compare(a.Group, b.Group), cmp.Compare(a.Resource, b.Resource), cmp.Compare(a.Verb, b.Verb), cmp.Compare(a.Namespace, b.Namespace))
	})
	return out
}

// Counts returns how many requests of each call were recorded, with
// Namespace left empty: the calls of all namespaces are added up.
func (r *Recorder) Counts() map[Call]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return byCall(r.calls)
}

// Conflicts returns, like Counts, how many requests of each call the API
// server answered 409 Conflict.
func (r *Recorder) Conflicts() map[Call]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return byCall(r.conflicts)
}

// ConflictsIn returns how many requests of each call in namespace the API
// server answered 409 Conflict.
func (r *Recorder) ConflictsIn(namespace string) map[Call]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[Call]int{}
	for c, n := range r.conflicts {
		if c.Namespace == namespace {
			out[c] += n
		}
	}
	return out
}

func byCall(counts map[Call]int) map[Call]int {
	out := map[Call]int{}
	for c, n := range counts {
		c.Namespace = ""
		out[c] += n
	}
	return out
}

// Reset forgets every call recorded so far.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls, r.conflicts, r.nonResource = nil, nil, nil
}

// IsWrite tells whether c changes what the API server stores.
func (c Call) IsWrite() bool {
	switch c.Verb {
	case "create", "update", "patch", "delete", "deletecollection":
		return true
	}
	return false
}

// Compare returns the calls that granted does not allow, and the grants of
// granted that no call used, each broken down to one verb on one resource of
// one group (validation.BreakdownRule). Both are empty when granted is
// exactly what the calls need. Namespaces are not compared: a ClusterRole
// applies in all of them.
func Compare(granted []rbacv1.PolicyRule, calls []Call) (notGranted []Call, unused []rbacv1.PolicyRule) {
	var used []rbacv1.PolicyRule
	for _, c := range calls {
		if ok, _ := validation.Covers(granted, []rbacv1.PolicyRule{c.Rule()}); !ok {
			notGranted = append(notGranted, c)
		}
		used = append(used, c.Rule())
	}
	_, unused = validation.Covers(used, granted)
	return notGranted, unused
}
