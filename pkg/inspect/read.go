// Package inspect reads what each member cluster of a clusterset says about
// it and turns that into what an operator asks: which services are shared
// where (List), how one service looks from every cluster (Describe), and
// what is broken and how to fix it (Doctor). Reading (this file) is apart
// from judging (list.go, describe.go, doctor.go), which are pure functions of
// what was read, so that they are tested on any state.
package inspect

import (
	"cmp"
	"context"
	"net/http"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/internal/scheme"
	aboutv1alpha1 "github.com/clusterset/clusterset/pkg/apis/about/v1alpha1"
	"github.com/clusterset/clusterset/pkg/membership"
)

// Where clusterset-controller and CoreDNS live when installed from config/
// or the chart with its defaults.
const (
	ControllerNamespace = membership.HubSecretNamespace
	ControllerName      = "clusterset-controller" // Deployment and leader election Lease
	// ControllerLabel is the label config/ and the chart put on the
	// controller's Deployment, with the value ControllerName.
	ControllerLabel  = "app.kubernetes.io/name"
	CoreDNSNamespace = "kube-system"
	CoreDNSConfigMap = "coredns"
	CoreDNSAccount   = "coredns" // its ServiceAccount
)

// APIs lists the API groups and versions a member must serve, by what needs
// them (KEP-1645 and KEP-2149).
var APIs = []API{
	{Group: mcsv1beta1.GroupVersion.Group, Version: mcsv1beta1.GroupVersion.Version, Resources: []string{"serviceexports", "serviceimports"}},
	{Group: aboutv1alpha1.GroupVersion.Group, Version: aboutv1alpha1.GroupVersion.Version, Resources: []string{"clusterproperties"}},
}

// API is one group/version and the resources clusterset needs of it.
type API struct {
	Group, Version string
	Resources      []string
}

// Member is one cluster to read: a kubeconfig context and its config.
type Member struct {
	Context string
	Config  *rest.Config
}

// Cluster is what one member's API server said. When Problem is set the
// member could not be read at all and nothing else is filled in.
type Cluster struct {
	Context string
	Problem string
	// UID is the kube-system namespace's UID: two contexts with the same
	// UID reach the same cluster.
	UID string

	// MissingAPIs are the resources of APIs the member does not serve, as
	// "resource.group/version".
	MissingAPIs []string
	// ClusterID and ClusterSetID are the ClusterProperties' values; ""
	// when unset (IdentityProblem then says why).
	ClusterID, ClusterSetID string
	IdentityProblem         string

	Exports []mcsv1beta1.ServiceExport
	Imports []mcsv1beta1.ServiceImport
	// ImportedSlices are the EndpointSlices of imports (those labelled with
	// multicluster.kubernetes.io/service-name).
	ImportedSlices []discoveryv1.EndpointSlice

	// ControllerNamespace is where the controller was found (or looked
	// for, when absent); ControllerSearch says what was looked for.
	ControllerNamespace string
	ControllerSearch    string
	// Controller is the controller's Deployment, nil when absent; Lease
	// its leader election Lease, nil when absent. OtherControllers are
	// further clusterset-controller Deployments of the cluster
	// ("namespace/name") that are not scaled to 0: two controllers would
	// write the same records.
	Controller       *appsv1.Deployment
	OtherControllers []string
	Lease            *coordinationv1.Lease
	// Registry is the controller's --registry ("hub" unless set).
	Registry string
	// AWSRegion is the controller's AWS_REGION (Cloud Map only), from its
	// container's env or the ConfigMaps it takes env from; "" when it
	// cannot be found.
	AWSRegion string
	// HubSecret is the Secret ("namespace/name") holding the member's hub
	// credentials: the one the controller's Deployment mounts, else the
	// default that join writes.
	HubSecret string
	// HubConfig reaches the hub with this member's own credentials (from
	// HubSecret); nil when the Secret is absent, and HubProblem then says
	// why.
	HubConfig  *rest.Config
	HubProblem string
	// HubVia says when HubConfig's address was replaced by one this
	// machine reaches (PreferReachableHub).
	HubVia string

	// Corefile is CoreDNS's configuration ("" when CoreDNSProblem is set).
	Corefile       string
	CoreDNSProblem string
	// CoreDNSDenied lists what CoreDNS's ServiceAccount may not do of what
	// the multicluster plugin needs ("list serviceimports.multicluster.x-k8s.io").
	CoreDNSDenied []string

	// sharedID: another member has the same ClusterID (Name then adds the
	// context).
	sharedID bool

	// Unchecked holds, by check name (controller, coredns), why what the
	// check needs could not be read (a read that was refused, say): the
	// check is then not judged.
	Unchecked map[string]string

	// ClockOffset is the member API server's clock minus this machine's,
	// to about a second (HTTP Date headers have whole seconds).
	ClockOffset time.Duration
}

// ReadOptions says what Read reads.
type ReadOptions struct {
	// Namespace limits services to one namespace; "" reads all.
	Namespace string
	// Registry also reads the controller's Deployment (for its registry)
	// and the member's hub Secret (status of one service).
	Registry bool
	// Health reads what Registry reads, the leader election Lease, CoreDNS's
	// Corefile and what its ServiceAccount may do (doctor).
	Health bool
	// ControllerNamespace is where clusterset-controller runs; "" finds it:
	// the namespace of the Deployment labelled ControllerLabel=ControllerName
	// (ControllerNamespace when there is none or it may not be listed).
	ControllerNamespace string
}

// Read reads every member at once. A member that cannot be read gets a
// Problem, never an error: the others are still shown.
func Read(ctx context.Context, members []Member, o ReadOptions) []*Cluster {
	out := make([]*Cluster, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = read(ctx, m, o)
		}()
	}
	wg.Wait()
	// Clusters (by kube-system UID, else by context) per cluster ID.
	ids := map[string]map[string]bool{}
	for _, cl := range out {
		if cl.ClusterID == "" {
			continue
		}
		if ids[cl.ClusterID] == nil {
			ids[cl.ClusterID] = map[string]bool{}
		}
		ids[cl.ClusterID][cmp.Or(cl.UID, "context:"+cl.Context)] = true
	}
	for _, cl := range out {
		cl.sharedID = len(ids[cl.ClusterID]) > 1
	}
	return out
}

func read(ctx context.Context, m Member, o ReadOptions) *Cluster {
	cl := &Cluster{Context: m.Context}
	cfg := rest.CopyConfig(m.Config)
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	clock := &clockProbe{}
	cfg.Wrap(clock.wrap)
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		cl.Problem = err.Error()
		return cl
	}
	if _, err := dc.ServerVersion(); err != nil {
		cl.Problem = "cannot reach the API server: " + err.Error()
		return cl
	}
	cl.ClockOffset = clock.offset()
	for _, api := range APIs {
		served := map[string]bool{}
		if list, err := dc.ServerResourcesForGroupVersion(api.Group + "/" + api.Version); err == nil {
			for _, r := range list.APIResources {
				served[r.Name] = true
			}
		}
		for _, r := range api.Resources {
			if !served[r] {
				cl.MissingAPIs = append(cl.MissingAPIs, r+"."+api.Group+"/"+api.Version)
			}
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		cl.Problem = err.Error()
		return cl
	}
	var sys corev1.Namespace
	if err := c.Get(ctx, client.ObjectKey{Name: metav1.NamespaceSystem}, &sys); err == nil {
		cl.UID = string(sys.UID)
	}
	readIdentity(ctx, c, cl)
	ns := client.InNamespace(o.Namespace)
	var exports mcsv1beta1.ServiceExportList
	if err := c.List(ctx, &exports, ns); err == nil {
		cl.Exports = exports.Items
	} else if !meta.IsNoMatchError(err) {
		cl.Problem = "listing ServiceExports: " + err.Error()
		return cl
	}
	var imports mcsv1beta1.ServiceImportList
	if err := c.List(ctx, &imports, ns); err == nil {
		cl.Imports = imports.Items
	} else if !meta.IsNoMatchError(err) {
		cl.Problem = "listing ServiceImports: " + err.Error()
		return cl
	}
	var slices discoveryv1.EndpointSliceList
	if err := c.List(ctx, &slices, ns, client.HasLabels{mcsv1beta1.LabelServiceName}); err != nil {
		cl.Problem = "listing imported EndpointSlices: " + err.Error()
		return cl
	}
	cl.ImportedSlices = slices.Items
	if o.Registry || o.Health {
		readRegistryAccess(ctx, c, cfg, cl, o)
	}
	if o.Health {
		readHealth(ctx, c, cl)
	}
	return cl
}

func readIdentity(ctx context.Context, c client.Client, cl *Cluster) {
	for _, p := range []struct {
		name string
		dst  *string
	}{{aboutv1alpha1.ClusterIDName, &cl.ClusterID}, {aboutv1alpha1.ClusterSetIDName, &cl.ClusterSetID}} {
		var prop aboutv1alpha1.ClusterProperty
		switch err := c.Get(ctx, client.ObjectKey{Name: p.name}, &prop); {
		case err == nil:
			*p.dst = prop.Spec.Value
		case apierrors.IsNotFound(err):
			cl.IdentityProblem = joinProblem(cl.IdentityProblem, "ClusterProperty "+p.name+" does not exist")
		case meta.IsNoMatchError(err):
			cl.IdentityProblem = "the ClusterProperty API is not served"
			return
		default:
			cl.IdentityProblem = joinProblem(cl.IdentityProblem, "ClusterProperty "+p.name+": "+err.Error())
		}
	}
}

// readHealth reads the controller's leader election Lease, CoreDNS's
// Corefile and what CoreDNS's ServiceAccount may do.
func readHealth(ctx context.Context, c client.Client, cl *Cluster) {
	var l coordinationv1.Lease
	switch err := c.Get(ctx, client.ObjectKey{Namespace: cl.ControllerNamespace, Name: ControllerName}, &l); {
	case err == nil:
		cl.Lease = &l
	case !apierrors.IsNotFound(err):
		cl.unchecked("controller", "reading Lease "+cl.ControllerNamespace+"/"+ControllerName+": "+err.Error())
	}
	var cm corev1.ConfigMap
	switch err := c.Get(ctx, client.ObjectKey{Namespace: CoreDNSNamespace, Name: CoreDNSConfigMap}, &cm); {
	case apierrors.IsNotFound(err):
		cl.CoreDNSProblem = "ConfigMap " + CoreDNSNamespace + "/" + CoreDNSConfigMap + " does not exist"
	case err != nil:
		cl.unchecked("coredns", "reading ConfigMap "+CoreDNSNamespace+"/"+CoreDNSConfigMap+": "+err.Error())
	default:
		cl.Corefile = cm.Data["Corefile"]
	}
	user := "system:serviceaccount:" + CoreDNSNamespace + ":" + CoreDNSAccount
	for _, need := range coreDNSNeeds {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   user,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + CoreDNSNamespace, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: need.verb, Group: need.group, Resource: need.resource,
			},
		}}
		if err := c.Create(ctx, sar); err != nil {
			cl.unchecked("coredns", "asking what CoreDNS may do (SubjectAccessReview): "+err.Error())
			return
		}
		if !sar.Status.Allowed {
			cl.CoreDNSDenied = append(cl.CoreDNSDenied, need.verb+" "+need.resource+"."+need.group)
		}
	}
}

// coreDNSNeeds is what the multicluster plugin reads (config/coredns).
var coreDNSNeeds = []struct{ verb, group, resource string }{
	{"list", mcsv1beta1.GroupVersion.Group, "serviceimports"},
	{"watch", mcsv1beta1.GroupVersion.Group, "serviceimports"},
	{"list", discoveryv1.GroupName, "endpointslices"},
	{"watch", discoveryv1.GroupName, "endpointslices"},
}

func (cl *Cluster) unchecked(check, why string) {
	if cl.Unchecked == nil {
		cl.Unchecked = map[string]string{}
	}
	if cl.Unchecked[check] == "" {
		cl.Unchecked[check] = why
	}
}

func joinProblem(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// clockProbe measures a server's clock from the Date header of one response
// against the middle of the request's round trip.
type clockProbe struct {
	mu  sync.Mutex
	off time.Duration
	set bool
}

func (p *clockProbe) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		start := time.Now()
		resp, err := rt.RoundTrip(r)
		if err != nil {
			return resp, err
		}
		end := time.Now()
		if date, perr := http.ParseTime(resp.Header.Get("Date")); perr == nil {
			p.mu.Lock()
			if !p.set {
				mid := start.Add(end.Sub(start) / 2)
				// Date is truncated to the second: compare from the
				// middle of that second.
				p.off, p.set = date.Add(500*time.Millisecond).Sub(mid), true
			}
			p.mu.Unlock()
		}
		return resp, nil
	})
}

func (p *clockProbe) offset() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.off
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
