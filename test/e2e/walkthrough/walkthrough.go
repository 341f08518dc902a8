// Package walkthrough is the seed scenario of clusterset on a local sandbox:
// nginx-hello in namespace demo, exported from cls1 and imported everywhere.
// `make demo` (hack/demo.sh, through test/e2e/cmd/demo) and the e2e suite
// both use it, so that the demo shows exactly what the tests check.
//
// Pod and Service IPs in the sandbox are data only: nothing here sends
// traffic to them. The only network traffic is to the sandbox's API servers
// and CoreDNS servers on 127.0.0.1.
package walkthrough

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/kubectl/pkg/util/podutils"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/internal/scheme"
	"github.com/clusterset/clusterset/pkg/conditions"
	"github.com/clusterset/clusterset/pkg/controllers/imports"
	"github.com/clusterset/clusterset/pkg/names"
	"github.com/clusterset/clusterset/pkg/sandbox"
)

// The seed scenario.
const (
	Namespace = "demo"
	Service   = "nginx-hello"
	// Image answers every HTTP request with its pod name (the part nginx
	// plays in the classic walkthrough). Real nodes hold it from the start
	// (`make images`); kwok nodes only simulate its pods.
	Image    = sandbox.ImageEchoServer
	Replicas = 3
	// PortName is the Service's port name, so that D2 SRV
	// _http._tcp.nginx-hello.demo.svc.clusterset.local exists, and the
	// container port's, which the Service targets by name.
	PortName = "http"
	Port     = 80
	// TargetPort is the container port the echo server listens on.
	TargetPort = 8080
	Exporter   = "cls1"
	Importer   = "cls2"
	// ClusterSetZone is the multicluster DNS zone.
	ClusterSetZone = "svc.clusterset.local"
	// LabelApp selects the walkthrough's pods.
	LabelApp = "app"
	// ManagedBy is the endpointslice.kubernetes.io/managed-by value of
	// imported EndpointSlices (I4).
	ManagedBy = names.ManagedBy
)

// FQDN is <svc>.<ns>.svc.clusterset.local.
func FQDN(service, namespace string) string {
	return service + "." + namespace + "." + ClusterSetZone
}

// Env is a loaded sandbox with one admin client per cluster.
type Env struct {
	Sandbox *sandbox.Sandbox
	clients map[string]client.Client
}

// New makes admin clients for every cluster of s.
func New(s *sandbox.Sandbox) (*Env, error) {
	e := &Env{Sandbox: s, clients: map[string]client.Client{}}
	for _, name := range s.ClusterNames() {
		cfg, err := s.RESTConfig(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		e.clients[name] = c
	}
	return e, nil
}

// Client is the admin client of a cluster; it panics on an unknown name.
func (e *Env) Client(cluster string) client.Client {
	c, ok := e.clients[cluster]
	if !ok {
		panic(fmt.Sprintf("no cluster %q in the sandbox", cluster))
	}
	return c
}

// Clusters are cls1…clsN.
func (e *Env) Clusters() []string { return e.Sandbox.ClusterNames() }

// DNS is the CoreDNS address (127.0.0.1:PORT) of a cluster.
func (e *Env) DNS(cluster string) string { return e.Sandbox.Cluster(cluster).DNS }

// ---------------------------------------------------------------- objects

// NamespaceObject is a namespace.
func NamespaceObject(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func podTemplate(name string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{LabelApp: name}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:            "echo",
			Image:           Image,
			ImagePullPolicy: corev1.PullIfNotPresent,
			Ports:           []corev1.ContainerPort{{Name: PortName, ContainerPort: TargetPort, Protocol: corev1.ProtocolTCP}},
			Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
				FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"},
			}}},
			// On real nodes readiness is the kubelet's probe, as users have it.
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString(PortName)}},
				PeriodSeconds: 1,
			},
		}}},
	}
}

// Deployment runs replicas echo-server pods labelled app=name. On kwok
// nodes they are simulated; on real nodes they run.
func Deployment(namespace, name string, replicas int32) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{LabelApp: name}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{LabelApp: name}},
			Template: podTemplate(name),
		},
	}
}

// StatefulSet runs replicas nginx pods name-0…name-(replicas-1) with
// hostnames under the headless Service of the same name.
func StatefulSet(namespace, name string, replicas int32) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{LabelApp: name}},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(replicas),
			ServiceName:         name,
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: map[string]string{LabelApp: name}},
			Template:            podTemplate(name),
		},
	}
}

// ServiceObject is a ClusterIP Service selecting app=name, port http
// 80/TCP → the pods' port http (8080).
func ServiceObject(namespace, name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{LabelApp: name},
			Ports: []corev1.ServicePort{{
				Name: PortName, Port: Port, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString(PortName),
			}},
		},
	}
}

// HeadlessServiceObject is ServiceObject with clusterIP None.
func HeadlessServiceObject(namespace, name string) *corev1.Service {
	svc := ServiceObject(namespace, name)
	svc.Spec.ClusterIP = corev1.ClusterIPNone
	return svc
}

// ServiceExport exports the Service of that name.
func ServiceExport(namespace, name string) *mcsv1beta1.ServiceExport {
	return &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
}

// SeedObjects are the objects of the walkthrough in cls1, in creation
// order: the Deployment, the Service and the ServiceExport.
func SeedObjects() []client.Object {
	return []client.Object{
		Deployment(Namespace, Service, Replicas),
		ServiceObject(Namespace, Service),
		ServiceExport(Namespace, Service),
	}
}

// Create creates objects in a cluster; those that exist already are left as
// they are, so that a walkthrough can be repeated on the same sandbox.
func (e *Env) Create(ctx context.Context, cluster string, objs ...client.Object) error {
	c := e.Client(cluster)
	for _, obj := range objs {
		if err := c.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("%s: creating %T %s/%s: %w", cluster, obj, obj.GetNamespace(), obj.GetName(), err)
		}
	}
	return nil
}

// CreateNamespace creates a namespace in every given cluster.
func (e *Env) CreateNamespace(ctx context.Context, name string, clusters ...string) error {
	for _, c := range clusters {
		if err := e.Create(ctx, c, NamespaceObject(name)); err != nil {
			return err
		}
	}
	return nil
}

// Scale sets the replicas of a Deployment.
func (e *Env) Scale(ctx context.Context, cluster, namespace, name string, replicas int32) error {
	c := e.Client(cluster)
	d := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, d); err != nil {
		return fmt.Errorf("%s: %w", cluster, err)
	}
	patch := client.MergeFrom(d.DeepCopy())
	d.Spec.Replicas = ptr.To(replicas)
	if err := c.Patch(ctx, d, patch); err != nil {
		return fmt.Errorf("%s: scaling deployment %s/%s to %d: %w", cluster, namespace, name, replicas, err)
	}
	return nil
}

// Unexport deletes a ServiceExport (a missing one is not an error).
func (e *Env) Unexport(ctx context.Context, cluster, namespace, name string) error {
	err := e.Client(cluster).Delete(ctx, ServiceExport(namespace, name))
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("%s: deleting ServiceExport %s/%s: %w", cluster, namespace, name, err)
	}
	return nil
}

// ---------------------------------------------------------------- observations

// ReadyPods are the Running and Ready pods labelled app=name, by name.
func (e *Env) ReadyPods(ctx context.Context, cluster, namespace, name string) (map[string]corev1.Pod, error) {
	list := &corev1.PodList{}
	if err := e.Client(cluster).List(ctx, list, client.InNamespace(namespace), client.MatchingLabels{LabelApp: name}); err != nil {
		return nil, fmt.Errorf("%s: listing pods: %w", cluster, err)
	}
	ready := map[string]corev1.Pod{}
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			continue
		}
		if podutils.IsPodReady(&p) {
			ready[p.Name] = p
		}
	}
	return ready, nil
}

// PodIPs are the sorted IPs of pods.
func PodIPs(pods map[string]corev1.Pod) []string {
	var ips []string
	for _, p := range pods {
		ips = append(ips, p.Status.PodIP)
	}
	sort.Strings(ips)
	return ips
}

// GetExport reads a ServiceExport; nil when it does not exist.
func (e *Env) GetExport(ctx context.Context, cluster, namespace, name string) (*mcsv1beta1.ServiceExport, error) {
	se := &mcsv1beta1.ServiceExport{}
	err := e.Client(cluster).Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, se)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cluster, err)
	}
	return se, nil
}

// Import is what one cluster holds for an imported service: the
// ServiceImport, its derived Service and its EndpointSlices.
type Import struct {
	Cluster string
	// ServiceImport is nil when the cluster has none.
	ServiceImport *mcsv1beta1.ServiceImport
	// Derived is the Service holding the VIP (I2); nil when absent.
	Derived *corev1.Service
	// Slices are the EndpointSlices labelled with the service's name,
	// sorted by name.
	Slices []discoveryv1.EndpointSlice
}

// GetImport reads everything a cluster holds for an imported service.
func (e *Env) GetImport(ctx context.Context, cluster, namespace, name string) (*Import, error) {
	c := e.Client(cluster)
	imp := &Import{Cluster: cluster}
	si := &mcsv1beta1.ServiceImport{}
	switch err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, si); {
	case err == nil:
		imp.ServiceImport = si
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("%s: ServiceImport: %w", cluster, err)
	}
	svc := &corev1.Service{}
	switch err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: imports.DerivedServiceName(name)}, svc); {
	case err == nil:
		imp.Derived = svc
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("%s: derived Service: %w", cluster, err)
	}
	list := &discoveryv1.EndpointSliceList{}
	if err := c.List(ctx, list, client.InNamespace(namespace), client.MatchingLabels{mcsv1beta1.LabelServiceName: name}); err != nil {
		return nil, fmt.Errorf("%s: EndpointSlices: %w", cluster, err)
	}
	imp.Slices = list.Items
	sort.Slice(imp.Slices, func(i, j int) bool { return imp.Slices[i].Name < imp.Slices[j].Name })
	return imp, nil
}

// Exists tells whether anything of the import is left.
func (i *Import) Exists() bool {
	return i.ServiceImport != nil || i.Derived != nil || len(i.Slices) > 0
}

// IPs are the ServiceImport's spec.ips (nil without one).
func (i *Import) IPs() []string {
	if i.ServiceImport == nil {
		return nil
	}
	return i.ServiceImport.Spec.IPs
}

// Clusters are the ServiceImport's status.clusters.
func (i *Import) Clusters() []string {
	if i.ServiceImport == nil {
		return nil
	}
	var out []string
	for _, c := range i.ServiceImport.Status.Clusters {
		out = append(out, c.Cluster)
	}
	return out
}

// Endpoint is one endpoint of an imported EndpointSlice.
type Endpoint struct {
	Address  string
	Hostname string
	Ready    bool
	Cluster  string
	Slice    string
}

// Endpoints are the endpoints of all slices, sorted by address.
func (i *Import) Endpoints() []Endpoint {
	var out []Endpoint
	for _, s := range i.Slices {
		for _, ep := range s.Endpoints {
			for _, a := range ep.Addresses {
				out = append(out, Endpoint{
					Address:  a,
					Hostname: ptr.Deref(ep.Hostname, ""),
					Ready:    ptr.Deref(ep.Conditions.Ready, true),
					Cluster:  s.Labels[mcsv1beta1.LabelSourceCluster],
					Slice:    s.Name,
				})
			}
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Address < out[b].Address })
	return out
}

// ReadyAddresses are the sorted addresses of the ready endpoints.
func (i *Import) ReadyAddresses() []string {
	var out []string
	for _, ep := range i.Endpoints() {
		if ep.Ready {
			out = append(out, ep.Address)
		}
	}
	return out
}

// ExportCondition returns a condition of a ServiceExport, or nil.
func ExportCondition(se *mcsv1beta1.ServiceExport, t mcsv1beta1.ServiceExportConditionType) *metav1.Condition {
	if se == nil {
		return nil
	}
	return meta.FindStatusCondition(se.Status.Conditions, string(t))
}

// ExportReady tells whether a ServiceExport needs no attention by the rule
// the CLI uses (conditions.Export: Valid=True, Ready=True, Conflict not
// True), and if it does, what it shows instead.
func ExportReady(se *mcsv1beta1.ServiceExport) (bool, string) {
	if se == nil {
		return false, "no ServiceExport"
	}
	if v := conditions.Judge(se.Status.Conditions, conditions.Export, "export"); !v.Healthy {
		return false, fmt.Sprintf("ServiceExport %s: %s: %s", cmp.Or(v.Type, "status"), v.Reason, v.Message)
	}
	var shown []string
	for _, c := range conditions.Sorted(se.Status.Conditions, conditions.Export) {
		shown = append(shown, c.Type+"="+string(c.Status))
	}
	return true, "ServiceExport " + strings.Join(shown, ", ")
}

// ImportReady tells whether a cluster's import of a ClusterSetIP service
// from the given clusters is complete with exactly wantReady ready endpoints,
// and if not, what is missing.
func ImportReady(imp *Import, from []string, wantReady int) (bool, string) {
	si := imp.ServiceImport
	switch {
	case si == nil:
		return false, imp.Cluster + ": no ServiceImport yet"
	case si.Spec.Type == mcsv1beta1.ClusterSetIP && len(si.Spec.IPs) == 0:
		return false, imp.Cluster + ": ServiceImport without spec.ips yet"
	case !slices.Equal(sorted(imp.Clusters()), sorted(from)):
		return false, fmt.Sprintf("%s: ServiceImport status.clusters=%v, want %v", imp.Cluster, imp.Clusters(), from)
	}
	if got := len(imp.ReadyAddresses()); got != wantReady {
		return false, fmt.Sprintf("%s: %d ready endpoint(s) in %d EndpointSlice(s), want %d", imp.Cluster, got, len(imp.Slices), wantReady)
	}
	return true, fmt.Sprintf("%s: ServiceImport %s ips=%v with %d ready endpoint(s)", imp.Cluster, si.Spec.Type, si.Spec.IPs, wantReady)
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return out
}

// ---------------------------------------------------------------- DNS

// Answer is a DNS answer reduced to what the checks need.
type Answer struct {
	Rcode int
	// A are the addresses of A records, sorted.
	A []string
	// SRV are the SRV records as "target:port", sorted.
	SRV []string
	// RRs are the answer and additional records as dig prints them.
	RRs []string
}

// RcodeString is NOERROR, NXDOMAIN, …
func (a Answer) RcodeString() string { return dns.RcodeToString[a.Rcode] }

// Query asks a cluster's CoreDNS (on 127.0.0.1) one question.
func (e *Env) Query(ctx context.Context, cluster, name string, qtype uint16) (Answer, error) {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := sandbox.Query(qctx, e.DNS(cluster), name, qtype)
	if err != nil {
		return Answer{}, fmt.Errorf("%s's CoreDNS at %s: %s %s: %w", cluster, e.DNS(cluster), dns.TypeToString[qtype], name, err)
	}
	a := Answer{Rcode: r.Rcode}
	for _, rr := range r.Answer {
		switch v := rr.(type) {
		case *dns.A:
			a.A = append(a.A, v.A.String())
		case *dns.SRV:
			a.SRV = append(a.SRV, fmt.Sprintf("%s:%d", v.Target, v.Port))
		}
		a.RRs = append(a.RRs, rr.String())
	}
	for _, rr := range r.Extra {
		a.RRs = append(a.RRs, rr.String())
	}
	sort.Strings(a.A)
	sort.Strings(a.SRV)
	return a, nil
}

// QueryA asks a cluster's CoreDNS for the A records of name.
func (e *Env) QueryA(ctx context.Context, cluster, name string) (Answer, error) {
	return e.Query(ctx, cluster, name, dns.TypeA)
}

// ---------------------------------------------------------------- waiting

// ErrTimeout is wrapped by Wait's error when the condition was not met in
// time.
var ErrTimeout = errors.New("timed out")

// Condition reports whether what is awaited holds and, either way, a short
// description of the state it saw. An error is transient: it is reported as
// the state and polling goes on.
type Condition func(ctx context.Context) (done bool, state string, err error)

// Wait polls cond every interval until it holds or timeout passes. Each
// distinct state is passed to progress (when not nil) with the time waited.
// On timeout the error names what was awaited and the last state seen.
func Wait(ctx context.Context, what string, timeout, interval time.Duration, progress func(elapsed time.Duration, state string), cond Condition) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		done, state, err := cond(ctx)
		if err != nil {
			state = "error: " + err.Error()
		}
		if state != last && progress != nil {
			progress(time.Since(start), state)
		}
		last = state
		if done && err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w after %s waiting for %s; last seen: %s", ErrTimeout, time.Since(start).Round(100*time.Millisecond), what, last)
		case <-time.After(interval):
		}
	}
}

// ---------------------------------------------------------------- the seed walkthrough

// SeedReady is the condition of the whole walkthrough: wantReady pods of
// nginx-hello Ready in cls1, its ServiceExport Valid and Ready, cls2's
// ServiceImport with ips, status.clusters=[cls1] and wantReady ready
// endpoints, and cls2's CoreDNS answering the name with those ips.
func (e *Env) SeedReady(wantReady int) Condition {
	return func(ctx context.Context) (bool, string, error) {
		pods, err := e.ReadyPods(ctx, Exporter, Namespace, Service)
		if err != nil {
			return false, "", err
		}
		if len(pods) != wantReady {
			return false, fmt.Sprintf("%s: %d/%d pods of %s Ready", Exporter, len(pods), wantReady, Service), nil
		}
		se, err := e.GetExport(ctx, Exporter, Namespace, Service)
		if err != nil {
			return false, "", err
		}
		if ok, state := ExportReady(se); !ok {
			return false, Exporter + ": " + state, nil
		}
		imp, err := e.GetImport(ctx, Importer, Namespace, Service)
		if err != nil {
			return false, "", err
		}
		if ok, state := ImportReady(imp, []string{Exporter}, wantReady); !ok {
			// Say what the exporter published, so that a timeout shows on
			// which side the change stopped.
			if c := ExportCondition(se, mcsv1beta1.ServiceExportConditionReady); c != nil {
				state += "; " + Exporter + ": " + c.Message
			}
			return false, state, nil
		}
		ans, err := e.QueryA(ctx, Importer, FQDN(Service, Namespace))
		if err != nil {
			return false, "", err
		}
		if ans.Rcode != dns.RcodeSuccess || !slices.Equal(ans.A, sorted(imp.IPs())) {
			return false, fmt.Sprintf("%s's CoreDNS: %s %v for %s, ServiceImport ips %v", Importer, ans.RcodeString(), ans.A, FQDN(Service, Namespace), imp.IPs()), nil
		}
		return true, fmt.Sprintf("%s's CoreDNS answers %s A %v = ServiceImport ips", Importer, FQDN(Service, Namespace), ans.A), nil
	}
}
