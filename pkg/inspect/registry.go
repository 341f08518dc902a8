package inspect

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/smithy-go/logging"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	aboutv1alpha1 "github.com/clusterset/clusterset/pkg/apis/about/v1alpha1"
	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap"
	"github.com/clusterset/clusterset/pkg/registry/hub"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

// ReadRegistry reads every cluster's record of key from the clusters'
// registry (readerOf says with which credentials). It needs clusters read
// with ReadOptions.Registry or Health.
func ReadRegistry(ctx context.Context, clusters []*Cluster, key types.NamespacedName) RegistryState {
	rd, via, problem := readerOf(ctx, clusters, nil)
	st := RegistryState{Backend: backendOf(clusters)}
	if rd == nil {
		st.Problem = problem
		return st
	}
	recs, err := rd.ReadService(ctx, key)
	if err != nil {
		st.Problem = "read with " + via + ": " + err.Error()
		return st
	}
	st.Records = []RegistryRecord{}
	for _, r := range recs {
		rr := RegistryRecord{Cluster: cmp.Or(r.ClusterID, "<no cluster ID>"), Problem: r.Problem}
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

// readerOf returns a reader of the clusters' registry, what it reads with
// (for messages), or why there is none:
//   - hub: the first member's own hub credentials (the Secret that join
//     wrote; any member may read every record), preferring the member
//     prefer says;
//   - Cloud Map: the AWS credentials of this machine (AWS_PROFILE, AWS_*
//     variables, ~/.aws; config.LoadDefaultConfig), in the controller's
//     region (its AWS_REGION) when known, else this machine's. They need
//     only servicediscovery:DiscoverInstances
//     (config/iam/cloudmap-readonly-policy.json).
func readerOf(ctx context.Context, clusters []*Cluster, prefer func(*Cluster) bool) (registry.Reader, string, string) {
	if backendOf(clusters) == "cloudmap" {
		return cloudMapReader(ctx, clusters)
	}
	cl := hubReader(clusters)
	for _, c := range clusters {
		if prefer != nil && prefer(c) {
			cl = c
			break
		}
	}
	if cl == nil {
		return nil, "", registryUnread(clusters)
	}
	via := cl.Name() + "'s hub credentials"
	rd, err := hub.NewReader(cl.HubConfig, cl.ClusterSetID)
	if err != nil {
		return nil, via, via + ": " + err.Error()
	}
	return rd, via, ""
}

// awsTimeout bounds each step of reading Cloud Map from this machine:
// finding credentials (which may ask the EC2 instance metadata service) and
// each HTTP request.
const awsTimeout = 10 * time.Second

func cloudMapReader(ctx context.Context, clusters []*Cluster) (registry.Reader, string, string) {
	var setID, region string
	for _, cl := range clusters {
		setID = cmp.Or(setID, cl.ClusterSetID)
		region = cmp.Or(region, cl.AWSRegion)
	}
	if setID == "" {
		return nil, "", "the clusterset ID is unknown: no member has ClusterProperty " + aboutv1alpha1.ClusterSetIDName
	}
	opts := []func(*awsconfig.LoadOptions) error{
		// The SDK's own warnings (IMDSv1 fallback) would garble the output.
		awsconfig.WithLogger(logging.Nop{}),
		awsconfig.WithHTTPClient(awshttp.NewBuildableClient().WithTimeout(awsTimeout)),
	}
	if region != "" {
		opts = append(opts, awsconfig.WithRegion(region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, "", "loading this machine's AWS configuration: " + err.Error()
	}
	whose := "the controller's AWS_REGION"
	if region == "" {
		whose = "this machine's; the controller's AWS_REGION was not found"
	}
	if cfg.Region == "" {
		return nil, "", "no AWS region: the controller's AWS_REGION was not found and AWS_REGION is not set here"
	}
	via := "this machine's AWS credentials (region " + cfg.Region + ", " + whose + ")"
	if cfg.Credentials == nil {
		return nil, via, "no AWS credentials on this machine (AWS_PROFILE, AWS_ACCESS_KEY_ID, ~/.aws, an instance role)"
	}
	cctx, cancel := context.WithTimeout(ctx, awsTimeout)
	defer cancel()
	if _, err := cfg.Credentials.Retrieve(cctx); err != nil {
		return nil, via, "no AWS credentials on this machine (AWS_PROFILE, AWS_ACCESS_KEY_ID, ~/.aws, an instance role): " + err.Error()
	}
	rd, err := cloudmap.NewReader(cfg, cloudmap.ReaderOptions{ClusterSetID: setID})
	if err != nil {
		return nil, via, via + ": " + err.Error()
	}
	return rd, via, ""
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

// RegistryHealth is what doctor learns from the registry.
type RegistryHealth struct {
	// Backend is the members' registry: hub or cloudmap.
	Backend string
	// Access is, by member context, what its hub credentials may do (hub
	// only).
	Access map[string]HubAccess
	// Read says which credentials the heartbeats were read with.
	Read string
	// Heartbeats are every member's; HeartbeatProblem says why they were
	// not read.
	Heartbeats       []registry.Heartbeat
	HeartbeatProblem string
	// HeartbeatUnreachable: the registry could not be reached from this
	// machine (the members may still reach it).
	HeartbeatUnreachable bool
}

// ReadRegistryHealth checks each member's hub credentials (hub) and reads
// the heartbeats, with credentials that just passed their check when any
// did.
func ReadRegistryHealth(ctx context.Context, clusters []*Cluster) RegistryHealth {
	h := RegistryHealth{Backend: backendOf(clusters), Access: map[string]HubAccess{}}
	if h.Backend != "cloudmap" {
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
	}
	rd, via, problem := readerOf(ctx, clusters, func(c *Cluster) bool {
		a, ok := h.Access[c.Context]
		return ok && a.Problem == ""
	})
	h.Read = via
	if rd == nil {
		h.HeartbeatProblem = problem
	} else if hbs, err := rd.ReadHeartbeats(ctx); err != nil {
		h.HeartbeatProblem = "read with " + via + ": " + err.Error()
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

// unreachable reports whether err means the registry could not be reached
// at all (no route, refused, DNS, time-out), as opposed to an answer or a TLS
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
