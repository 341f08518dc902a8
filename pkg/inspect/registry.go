package inspect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/hub"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

// cloudMapNotRead is why Cloud Map records are not shown: the CLI holds the
// operator's credentials, not the controller's, and reads only a hub.
const cloudMapNotRead = "this command reads only a hub registry; for Cloud Map use `aws servicediscovery discover-instances --namespace-name NAMESPACE --service-name SERVICE`"

// ReadRegistry reads every cluster's record of key from the registry of
// clusters: a hub, read with the first member's own hub credentials (the
// Secret that join wrote), since any member may read every record. It needs
// clusters read with ReadOptions.Health.
func ReadRegistry(ctx context.Context, clusters []*Cluster, key types.NamespacedName) RegistryState {
	cl := hubReader(clusters)
	if cl == nil {
		return RegistryState{Backend: backendOf(clusters), Problem: registryUnread(clusters)}
	}
	recs, err := hub.ReadService(ctx, cl.HubConfig, cl.ClusterSetID, key)
	if err != nil {
		return RegistryState{Backend: "hub", Problem: "read with " + cl.Name() + "'s hub credentials: " + err.Error()}
	}
	st := RegistryState{Backend: "hub", Records: []RegistryRecord{}}
	for _, r := range recs {
		rr := RegistryRecord{Cluster: r.ClusterID, Problem: r.Problem}
		if !r.Changed.IsZero() {
			at := r.Changed
			rr.Changed = &at
		}
		if r.Record != nil {
			summarise(&rr, r.Record)
		}
		st.Records = append(st.Records, rr)
	}
	return st
}

func summarise(rr *RegistryRecord, rec *registry.Record) {
	rr.Type = string(rec.Spec.Type)
	for _, p := range rec.Spec.Ports {
		rr.Ports = append(rr.Ports, portString(p.Name, string(p.Protocol), p.Port))
	}
	for _, ep := range rec.Endpoints {
		rr.Total++
		if ep.Ready {
			rr.Ready++
		}
	}
}

// hubReader is the first member whose hub credentials and clusterset ID are
// known.
func hubReader(clusters []*Cluster) *Cluster {
	for _, cl := range clusters {
		if cl.HubConfig != nil && cl.ClusterSetID != "" {
			return cl
		}
	}
	return nil
}

func backendOf(clusters []*Cluster) string {
	for _, cl := range clusters {
		if cl.Registry != "" {
			return cl.Registry
		}
	}
	return ""
}

func registryUnread(clusters []*Cluster) string {
	if backendOf(clusters) == "cloudmap" {
		return cloudMapNotRead
	}
	for _, cl := range clusters {
		if cl.HubProblem != "" {
			return "no member's hub credentials are readable (" + cl.Name() + ": " + cl.HubProblem + ")"
		}
	}
	return "no member's hub credentials are readable"
}

// HubAccess is what one member's hub credentials may do, checked on the hub
// itself (SelfSubjectAccessReview).
type HubAccess struct {
	// Problem is why access was not checked; Unreachable when it is
	// because the hub could not be reached from this machine (which the
	// member's pods may still reach).
	Problem     string
	Unreachable bool
	// WriteOwn: may create and update records in its own namespace.
	WriteOwn bool
	// WriteOther: may create records in another member's namespace (must
	// not); ReadSecrets: may read Secrets in its namespace (must not).
	WriteOther, ReadSecrets bool
}

// HubHealth is what doctor learns from a hub.
type HubHealth struct {
	// Access is by member context.
	Access map[string]HubAccess
	// Heartbeats are every member's, read with the first readable
	// member's credentials; HeartbeatProblem says why they were not.
	Heartbeats       []hub.Heartbeat
	HeartbeatProblem string
	// HeartbeatUnreachable: the hub could not be reached from this machine
	// (the members may still reach it).
	HeartbeatUnreachable bool
}

// ReadHub checks each member's hub credentials and reads the heartbeats.
func ReadHub(ctx context.Context, clusters []*Cluster) HubHealth {
	h := HubHealth{Access: map[string]HubAccess{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, cl := range clusters {
		if cl.HubConfig == nil || cl.ClusterSetID == "" || cl.ClusterID == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := hubAccess(ctx, cl)
			mu.Lock()
			h.Access[cl.Context] = a
			mu.Unlock()
		}()
	}
	wg.Wait()
	// Heartbeats are read with credentials that just worked, when any did.
	cl := hubReader(clusters)
	for _, c := range clusters {
		if a, ok := h.Access[c.Context]; ok && a.Problem == "" {
			cl = c
			break
		}
	}
	if cl == nil {
		h.HeartbeatProblem = registryUnread(clusters)
	} else if hbs, err := hub.ReadHeartbeats(ctx, cl.HubConfig, cl.ClusterSetID); err != nil {
		h.HeartbeatProblem = "read with " + cl.Name() + "'s hub credentials: " + err.Error()
		h.HeartbeatUnreachable = unreachable(err)
	} else {
		h.Heartbeats = hbs
	}
	return h
}

func hubAccess(ctx context.Context, cl *Cluster) HubAccess {
	cs, err := kubernetes.NewForConfig(cl.HubConfig)
	if err != nil {
		return HubAccess{Problem: err.Error()}
	}
	own := hub.NamespaceName(cl.ClusterSetID, cl.ClusterID)
	// A namespace no member has: what any other member's would be.
	other := hub.NamespaceName(cl.ClusterSetID, cl.ClusterID+"-doctor-probe")
	res := hubv1alpha1.GroupVersion.WithResource(hubv1alpha1.Resource)
	var a HubAccess
	checks := []struct {
		attrs authorizationv1.ResourceAttributes
		dst   *bool
	}{
		{authorizationv1.ResourceAttributes{Namespace: own, Verb: "create", Group: res.Group, Resource: res.Resource}, &a.WriteOwn},
		{authorizationv1.ResourceAttributes{Namespace: other, Verb: "create", Group: res.Group, Resource: res.Resource}, &a.WriteOther},
		{authorizationv1.ResourceAttributes{Namespace: own, Verb: "get", Resource: "secrets", Version: corev1.SchemeGroupVersion.Version}, &a.ReadSecrets},
	}
	for _, c := range checks {
		r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &c.attrs},
		}, metav1.CreateOptions{})
		if err != nil {
			return HubAccess{Problem: "asking the hub what these credentials may do: " + err.Error(), Unreachable: unreachable(err)}
		}
		*c.dst = r.Status.Allowed
	}
	// The own-namespace check needs update too: every Publish updates.
	if a.WriteOwn {
		r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: own, Verb: "update", Group: res.Group, Resource: res.Resource}},
		}, metav1.CreateOptions{})
		if err != nil {
			return HubAccess{Problem: err.Error(), Unreachable: unreachable(err)}
		}
		a.WriteOwn = r.Status.Allowed
	}
	return a
}

// unreachable reports whether err means the hub could not be reached at
// all (no route, refused, DNS, time-out), as opposed to an answer or a TLS
// failure, which say something about the credentials or the hub itself.
func unreachable(err error) bool {
	var op *net.OpError
	var dns *net.DNSError
	var ne net.Error
	switch {
	case errors.As(err, &op) && op.Op == "dial", errors.As(err, &dns):
		return true
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return true
	}
	return false
}

// Server is an API server address of the kubeconfig and the CA it is
// verified with.
type Server struct {
	URL    string
	CAData []byte
}

// PreferReachableHub makes each member's hub credentials usable from this
// machine: when the hub address in the member's Secret (as its pods see
// it) cannot be reached from here, and one of servers has the same CA (the
// same API server as the kubeconfig reaches it), the member's credentials
// are used at that address instead. HubVia then says so.
func PreferReachableHub(ctx context.Context, clusters []*Cluster, servers []Server) {
	var wg sync.WaitGroup
	for _, cl := range clusters {
		if cl.HubConfig == nil || len(cl.HubConfig.CAData) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := probe(ctx, cl.HubConfig)
			if err == nil || !unreachable(err) {
				return
			}
			for _, s := range servers {
				if s.URL == cl.HubConfig.Host || !bytes.Equal(s.CAData, cl.HubConfig.CAData) {
					continue
				}
				alt := rest.CopyConfig(cl.HubConfig)
				alt.Host = s.URL
				if probe(ctx, alt) == nil {
					cl.HubVia = fmt.Sprintf("the hub's address in the Secret, %s, is not reachable from here; reached the same API server at %s", cl.HubConfig.Host, s.URL)
					cl.HubConfig = alt
					return
				}
			}
		}()
	}
	wg.Wait()
}

// probe asks the API server of cfg for its version.
func probe(ctx context.Context, cfg *rest.Config) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	_, err = cs.Discovery().RESTClient().Get().AbsPath("/version").Do(ctx).Raw()
	return err
}
