// Package imports implements the import controller: it turns every cluster's
// records of a service into the ServiceImport, the derived Service that owns
// the local VIP, and the EndpointSlices of the remote endpoints, in every
// namespace that exists locally, and removes them when the last export goes.
package imports

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/conditions"
	"github.com/clusterset/clusterset/pkg/controllers/cachelag"
	"github.com/clusterset/clusterset/pkg/controllers/identity"
	"github.com/clusterset/clusterset/pkg/controllers/registrylink"
	"github.com/clusterset/clusterset/pkg/merge"
	"github.com/clusterset/clusterset/pkg/names"
	"github.com/clusterset/clusterset/pkg/namespaces"
	"github.com/clusterset/clusterset/pkg/registry"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

const (
	// LabelServiceImport names the ServiceImport a derived Service belongs to.
	LabelServiceImport = "multicluster.clusterset.dev/service-import"
)

// Link is what the import controller needs of this cluster's link to the
// registry; *registrylink.Link is the one cmd/ gives it.
type Link interface {
	// Registry returns the backend once it is usable, else an error
	// (registrylink.ErrNotReady, or the identity's problem).
	Registry() (registry.Registry, identity.Identity, error)
	// Alive reports whether cluster's endpoints are used: its heartbeat is
	// within the grace period (R1).
	Alive(cluster string) bool
	// ClusterID is this cluster's ID, "" while unknown; for logs.
	ClusterID() string
	// Source enqueues each service whose records may have changed.
	Source() source.Source
}

// Controller reconciles one imported service per request (namespace/name).
type Controller struct {
	client   client.Client
	recorder recorder.EventRecorder
	link     Link
	excluded namespaces.Exclusions
	observer *observer
	// Workers is how many services are reconciled at once (default 1).
	Workers int
	// Clock times the propagation lag (clusterset_propagation_lag_seconds).
	// Default the real clock.
	Clock clock.PassiveClock
	// indexed is set by Register: the client reads a cache with
	// sliceIndex.
	indexed bool
	// lag tells a reconcile that reads a ServiceImport this controller has
	// since written (IPs, status) from a cache that has not caught up:
	// writing from it would be refused (409) and repeat its events.
	lag cachelag.Tracker
}

// sliceIndex is the name of the cache index of the EndpointSlices this
// controller wrote, by the service they import (the
// multicluster.kubernetes.io/service-name label), so that applySlices does
// not match a label selector against every slice of the namespace.
const sliceIndex = "imports.serviceImport"

// errCacheBehind stops a reconcile that read a ServiceImport older than this
// controller's own last write of it, or whose cache does not show yet a
// ServiceImport, derived Service or EndpointSlice it has just created.
var errCacheBehind = errors.New("the cache is behind this controller's own writes")

// Kinds of the objects whose creation the controller tracks (cachelag).
const (
	kindServiceImport = "ServiceImport"
	kindService       = "Service"
)

// cacheLagRequeue is when a reconcile stopped by errCacheBehind looks again,
// in case the watch event of the write, which reconciles it first, is lost.
const cacheLagRequeue = 5 * time.Second

// NewController returns the import controller. Nothing is imported into
// excluded namespaces, and imports of ours found there are removed.
func NewController(c client.Client, rec recorder.EventRecorder, link Link, excluded namespaces.Exclusions) *Controller {
	return &Controller{client: c, recorder: rec, link: link, excluded: excluded, observer: newObserver(rec), Clock: clock.RealClock{}}
}

// Name is used in logs and metrics.
func (c *Controller) Name() string { return "imports" }

// Register wires registry changes, the objects the controller writes and
// namespace creation to the controller.
func (c *Controller) Register(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &discoveryv1.EndpointSlice{}, sliceIndex, func(o client.Object) []string {
		l := o.GetLabels()
		if l[discoveryv1.LabelManagedBy] == names.ManagedBy && l[mcsv1beta1.LabelServiceName] != "" {
			return []string{l[mcsv1beta1.LabelServiceName]}
		}
		return nil
	}); err != nil {
		return err
	}
	c.indexed = true
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetLabels()[names.LabelManagedBy] == names.ManagedBy })
	oursSlice := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetLabels()[discoveryv1.LabelManagedBy] == names.ManagedBy
	})
	byLabel := func(label string) handler.EventHandler {
		return handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if name := o.GetLabels()[label]; name != "" {
				return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: name}}}
			}
			return nil
		})
	}
	// A runnable without NeedLeaderElection starts once this replica leads,
	// like the controller itself: the propagation lag is measured from then.
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		c.observer.lead(c.Clock.Now())
		<-ctx.Done()
		return nil
	})); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named(c.Name()).
		WithOptions(controller.Options{RateLimiter: registrylink.RateLimiter(), MaxConcurrentReconciles: max(c.Workers, 1)}).
		For(&mcsv1beta1.ServiceImport{}).
		Watches(&corev1.Service{}, byLabel(LabelServiceImport), builder.WithPredicates(ours)).
		Watches(&discoveryv1.EndpointSlice{}, byLabel(mcsv1beta1.LabelServiceName), builder.WithPredicates(oursSlice)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(c.importsOfNamespace), builder.WithPredicates(predicate.Funcs{
			// I1: a namespace created later gets its imports.
			CreateFunc:  func(event.CreateEvent) bool { return true },
			UpdateFunc:  func(event.UpdateEvent) bool { return false },
			DeleteFunc:  func(event.DeleteEvent) bool { return false },
			GenericFunc: func(event.GenericEvent) bool { return false },
		})).
		WatchesRawSource(c.link.Source()).
		Complete(c)
}

// importsOfNamespace maps a namespace to every service exported from it.
func (c *Controller) importsOfNamespace(ctx context.Context, ns client.Object) []reconcile.Request {
	reg, _, err := c.link.Registry()
	if err != nil {
		return nil // the link's own notifications cover everything once ready
	}
	keys, err := reg.Keys()
	if err != nil {
		log.FromContext(ctx).Error(err, "listing registry keys for a new namespace", "namespace", ns.GetName())
		return nil
	}
	var out []reconcile.Request
	for _, k := range keys {
		if k.Namespace == ns.GetName() && !c.excluded.Excluded(k.Namespace) {
			out = append(out, reconcile.Request{NamespacedName: k})
		}
	}
	return out
}

// Reconcile makes the local import of one service match the registry.
func (c *Controller) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	logger := log.FromContext(ctx).WithValues("namespace", req.Namespace, "service", req.Name, "cluster", c.link.ClusterID())
	ctx = log.IntoContext(ctx, logger)
	if c.excluded.Excluded(req.Namespace) {
		// Another member exported from a namespace this one excludes (or
		// an import predates the exclusion): keep nothing of ours there.
		logger.V(1).Info("not importing: the namespace is excluded from the clusterset", "excluded", c.excluded.String())
		return reconcile.Result{}, c.remove(ctx, req.NamespacedName)
	}

	reg, _, err := c.link.Registry()
	var records []registry.Record
	if err == nil {
		records, err = reg.Records(req.NamespacedName)
	}
	if err != nil {
		// R2: without a usable registry view nothing local is touched.
		if errors.Is(err, registrylink.ErrNotReady) || errors.Is(err, registry.ErrNotSynced) {
			return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
		}
		return reconcile.Result{}, err
	}

	var ns corev1.Namespace
	if err := c.client.Get(ctx, client.ObjectKey{Name: req.Namespace}, &ns); err != nil {
		// I1: namespaces are never created; one that appears later is
		// reconciled through the namespace watch.
		if apierrors.IsNotFound(err) {
			c.observer.removed(req.NamespacedName) // the import went with its namespace
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !ns.DeletionTimestamp.IsZero() {
		// Nothing of clusterset holds the namespace (no finalizer on what
		// it imported there), so the import goes with it; an Event could
		// not be created in a terminating namespace, so this says it.
		logger.Info("the namespace is being deleted: nothing is imported into it, and the import goes with it")
		c.observer.removed(req.NamespacedName)
		return reconcile.Result{}, nil
	}

	res, ok := merge.Merge(records)
	if !ok {
		// I5: the last export is gone.
		return reconcile.Result{}, c.remove(ctx, req.NamespacedName)
	}
	imp, err := c.ensureServiceImport(ctx, req.NamespacedName, &res)
	if errors.Is(err, errCacheBehind) {
		logger.V(1).Info("waiting for the cache to show this controller's last write of the ServiceImport")
		return reconcile.Result{RequeueAfter: cacheLagRequeue}, nil
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	ips, err := c.ensureDerivedService(ctx, imp, &res)
	if errors.Is(err, errCacheBehind) {
		logger.V(1).Info("waiting for the cache to show the derived Service this controller created")
		return reconcile.Result{RequeueAfter: cacheLagRequeue}, nil
	}
	if err != nil {
		return reconcile.Result{}, c.setNotReady(ctx, imp, err)
	}
	if res.Spec.Type == mcsv1beta1.ClusterSetIP && !equality.Semantic.DeepEqual(imp.Spec.IPs, ips) {
		imp.Spec.IPs = ips
		prev := imp.ResourceVersion
		if err := c.client.Update(ctx, imp); err != nil {
			return reconcile.Result{}, err
		}
		c.lag.Wrote(prev, imp)
	}
	slices := desiredSlices(req.Namespace, req.Name, DerivedServiceName(req.Name), names.ManagedBy, records, &res, c.link.Alive)
	for i := range slices {
		if err := controllerutil.SetControllerReference(imp, &slices[i], c.client.Scheme()); err != nil {
			return reconcile.Result{}, err
		}
	}
	if err := c.applySlices(ctx, req.NamespacedName, slices); errors.Is(err, errCacheBehind) {
		logger.V(1).Info("waiting for the cache to show the EndpointSlices this controller created")
		return reconcile.Result{RequeueAfter: cacheLagRequeue}, nil
	} else if err != nil {
		return reconcile.Result{}, err
	}
	if err := c.updateStatus(ctx, imp, &res, len(slices)); err != nil {
		return reconcile.Result{}, err
	}
	c.observer.reflected(imp, ns.CreationTimestamp.Time, records, c.link.Alive, slices, c.Clock.Now())
	return reconcile.Result{}, nil
}

// ensureServiceImport creates or updates the ServiceImport's spec (without
// IPs), labels and annotations from the merge result (I6).
func (c *Controller) ensureServiceImport(ctx context.Context, key client.ObjectKey, res *merge.Result) (*mcsv1beta1.ServiceImport, error) {
	var imp mcsv1beta1.ServiceImport
	err := c.client.Get(ctx, key, &imp)
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, err
	}
	exists := err == nil
	if exists && imp.Labels[names.LabelManagedBy] != names.ManagedBy {
		return nil, reconcile.TerminalError(fmt.Errorf("ServiceImport %s exists and is not managed by clusterset; not touching it", key))
	}
	if exists && c.lag.Behind(&imp) {
		return nil, errCacheBehind
	}
	if exists {
		c.lag.Seen(kindServiceImport, key)
	} else if c.lag.Unseen(kindServiceImport, key) {
		return nil, errCacheBehind
	}
	desired := imp.DeepCopy()
	desired.Namespace, desired.Name = key.Namespace, key.Name
	desired.Labels = maps.Clone(res.Labels)
	if desired.Labels == nil {
		desired.Labels = map[string]string{}
	}
	desired.Labels[names.LabelManagedBy] = names.ManagedBy
	desired.Annotations = res.Annotations
	ips := imp.Spec.IPs
	desired.Spec = *res.Spec.DeepCopy()
	if res.Spec.Type == mcsv1beta1.ClusterSetIP {
		desired.Spec.IPs = ips
	}
	if !exists {
		if err := c.client.Create(ctx, desired); err != nil {
			return nil, err
		}
		c.lag.Created(kindServiceImport, key)
		log.FromContext(ctx).Info("created ServiceImport", "type", desired.Spec.Type)
		c.recorder.Eventf(desired, nil, corev1.EventTypeNormal, reasonImported, "Import", "imported as %s, exported by %s", desired.Spec.Type, strings.Join(res.Clusters, ", "))
		return desired, nil
	}
	if equality.Semantic.DeepEqual(imp.Spec, desired.Spec) && equality.Semantic.DeepEqual(imp.Labels, desired.Labels) &&
		maps.Equal(imp.Annotations, desired.Annotations) {
		return &imp, nil
	}
	if err := c.client.Update(ctx, desired); err != nil {
		return nil, err
	}
	c.lag.Wrote(imp.ResourceVersion, desired)
	return desired, nil
}

// ensureDerivedService creates or updates the Service that allocates the
// import's VIP (I2) and returns its cluster IPs. Headless imports get a
// headless derived Service, so that their EndpointSlices' service-name label
// names a real Service.
func (c *Controller) ensureDerivedService(ctx context.Context, imp *mcsv1beta1.ServiceImport, res *merge.Result) ([]string, error) {
	name := DerivedServiceName(imp.Name)
	desired := corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: imp.Namespace,
			Name:      name,
			Labels:    map[string]string{names.LabelManagedBy: names.ManagedBy, LabelServiceImport: imp.Name},
		},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeClusterIP,
			SessionAffinity:       res.Spec.SessionAffinity,
			SessionAffinityConfig: res.Spec.SessionAffinityConfig,
			InternalTrafficPolicy: res.Spec.InternalTrafficPolicy,
			TrafficDistribution:   res.Spec.TrafficDistribution,
		},
	}
	if desired.Spec.SessionAffinity == "" {
		desired.Spec.SessionAffinity = corev1.ServiceAffinityNone
	}
	if res.Spec.Type == mcsv1beta1.Headless {
		desired.Spec.ClusterIP = corev1.ClusterIPNone
	}
	if fams := res.Spec.IPFamilies; len(fams) > 0 {
		desired.Spec.IPFamilies = fams
		policy := corev1.IPFamilyPolicySingleStack
		if len(fams) > 1 {
			policy = corev1.IPFamilyPolicyRequireDualStack
		}
		desired.Spec.IPFamilyPolicy = &policy
	}
	for _, p := range res.Spec.Ports {
		desired.Spec.Ports = append(desired.Spec.Ports, corev1.ServicePort{
			Name: p.Name, Protocol: p.Protocol, AppProtocol: p.AppProtocol, Port: p.Port, TargetPort: intstr.FromInt32(p.Port),
		})
	}
	if len(desired.Spec.Ports) == 0 {
		// A Service needs a port; an export without ports still gets a VIP.
		desired.Spec.Ports = []corev1.ServicePort{{Name: "none", Protocol: corev1.ProtocolTCP, Port: 1, TargetPort: intstr.FromInt32(1)}}
	}
	if err := controllerutil.SetControllerReference(imp, &desired, c.client.Scheme()); err != nil {
		return nil, err
	}

	var svc corev1.Service
	svcKey := client.ObjectKeyFromObject(&desired)
	err := c.client.Get(ctx, svcKey, &svc)
	if apierrors.IsNotFound(err) {
		if c.lag.Unseen(kindService, svcKey) {
			return nil, errCacheBehind
		}
		if err := c.client.Create(ctx, &desired); err != nil {
			return nil, err
		}
		c.lag.Created(kindService, svcKey)
		log.FromContext(ctx).Info("created derived Service", "derivedService", name, "clusterIPs", desired.Spec.ClusterIPs)
		return desired.Spec.ClusterIPs, nil
	}
	if err != nil {
		return nil, err
	}
	c.lag.Seen(kindService, svcKey)
	if svc.Labels[names.LabelManagedBy] != names.ManagedBy {
		// The name is derived from the import's, so a user's Service can
		// hold it; taking it over would rewrite (or later delete) theirs.
		return nil, fmt.Errorf("Service %s/%s exists and is not managed by clusterset; not touching it", svc.Namespace, name)
	}
	if (svc.Spec.ClusterIP == corev1.ClusterIPNone) != (desired.Spec.ClusterIP == corev1.ClusterIPNone) ||
		(len(desired.Spec.IPFamilies) > 0 && !equality.Semantic.DeepEqual(svc.Spec.IPFamilies, desired.Spec.IPFamilies)) {
		// The type or family changed: a Service's cluster IPs are immutable,
		// so the derived Service is replaced and the VIP changes.
		if err := c.client.Delete(ctx, &svc); client.IgnoreNotFound(err) != nil {
			return nil, err
		}
		return nil, fmt.Errorf("replacing derived Service %s whose type or IP families changed", name)
	}
	updated := svc.DeepCopy()
	updated.Labels = desired.Labels
	updated.OwnerReferences = desired.OwnerReferences
	updated.Spec.Ports = desired.Spec.Ports
	updated.Spec.SessionAffinity = desired.Spec.SessionAffinity
	updated.Spec.SessionAffinityConfig = desired.Spec.SessionAffinityConfig
	updated.Spec.InternalTrafficPolicy = desired.Spec.InternalTrafficPolicy
	updated.Spec.TrafficDistribution = desired.Spec.TrafficDistribution
	if !equality.Semantic.DeepEqual(svc.Labels, updated.Labels) || !equality.Semantic.DeepEqual(svc.OwnerReferences, updated.OwnerReferences) ||
		!equality.Semantic.DeepEqual(svc.Spec, updated.Spec) {
		if err := c.client.Update(ctx, updated); err != nil {
			return nil, err
		}
	}
	if desired.Spec.ClusterIP == corev1.ClusterIPNone {
		return nil, nil
	}
	return updated.Spec.ClusterIPs, nil
}

// updateStatus records the exporting clusters and the Ready condition (I5),
// and says in an event when the exporting clusters changed.
func (c *Controller) updateStatus(ctx context.Context, imp *mcsv1beta1.ServiceImport, res *merge.Result, sliceCount int) error {
	before := imp.Status.DeepCopy()
	var was []string
	for _, cl := range before.Clusters {
		was = append(was, cl.Cluster)
	}
	imp.Status.Clusters = nil
	for _, cl := range res.Clusters {
		imp.Status.Clusters = append(imp.Status.Clusters, mcsv1beta1.ClusterStatus{Cluster: cl})
	}
	imp.Status.EndpointSliceObjects = mcsv1beta1.EndpointSliceObjectsAbsent
	if sliceCount > 0 {
		imp.Status.EndpointSliceObjects = mcsv1beta1.EndpointSliceObjectsPresent
	}
	conditions.Set(&imp.Status.Conditions, metav1.Condition{
		Type:               string(mcsv1beta1.ServiceImportConditionReady),
		Status:             metav1.ConditionTrue,
		Reason:             string(mcsv1beta1.ServiceImportReasonReady),
		Message:            fmt.Sprintf("imported from %d cluster(s) with %d EndpointSlice(s)", len(res.Clusters), sliceCount),
		ObservedGeneration: imp.Generation,
	})
	if equality.Semantic.DeepEqual(before, &imp.Status) {
		return nil
	}
	prev := imp.ResourceVersion
	if err := c.client.Status().Update(ctx, imp); err != nil {
		return err
	}
	c.lag.Wrote(prev, imp)
	if len(was) > 0 && !slices.Equal(was, res.Clusters) {
		c.recorder.Eventf(imp, nil, corev1.EventTypeNormal, reasonClustersChanged, "Import", "exported by %s (was %s)",
			strings.Join(res.Clusters, ", "), strings.Join(was, ", "))
	}
	return nil
}

// setNotReady reports why the import could not be completed, then returns
// err so that the request is retried with backoff.
func (c *Controller) setNotReady(ctx context.Context, imp *mcsv1beta1.ServiceImport, err error) error {
	reason := mcsv1beta1.ServiceImportReasonPending
	if apierrors.IsInvalid(err) {
		reason = mcsv1beta1.ServiceImportReasonIPFamilyNotSupported
	}
	conditions.Set(&imp.Status.Conditions, metav1.Condition{
		Type: string(mcsv1beta1.ServiceImportConditionReady), Status: metav1.ConditionFalse,
		Reason: string(reason), Message: err.Error(), ObservedGeneration: imp.Generation,
	})
	c.recorder.Eventf(imp, nil, corev1.EventTypeWarning, string(reason), "Import", "%v", err)
	prev := imp.ResourceVersion
	uerr := c.client.Status().Update(ctx, imp)
	if uerr == nil {
		c.lag.Wrote(prev, imp)
	}
	return errors.Join(err, client.IgnoreNotFound(uerr))
}

// remove deletes the import, its derived Service and its slices, but only
// objects that carry our label (a ServiceImport somebody else wrote stays).
func (c *Controller) remove(ctx context.Context, key client.ObjectKey) error {
	var imp mcsv1beta1.ServiceImport
	if err := c.client.Get(ctx, key, &imp); err == nil {
		if imp.Labels[names.LabelManagedBy] != names.ManagedBy {
			return nil
		}
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	// Owner references would let the garbage collector do this, but the
	// collector may be slow or absent; deleting explicitly leaves nothing.
	if err := c.client.DeleteAllOf(ctx, &discoveryv1.EndpointSlice{}, client.InNamespace(key.Namespace),
		client.MatchingLabels{mcsv1beta1.LabelServiceName: key.Name, discoveryv1.LabelManagedBy: names.ManagedBy}); err != nil {
		return err
	}
	var svc corev1.Service
	err := c.client.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: DerivedServiceName(key.Name)}, &svc)
	switch {
	case err == nil && svc.Labels[names.LabelManagedBy] == names.ManagedBy:
		if err := c.client.Delete(ctx, &svc); client.IgnoreNotFound(err) != nil {
			return err
		}
	case err != nil && !apierrors.IsNotFound(err):
		return err
	}
	// What this controller created and its cache may not show yet is gone
	// too (or its create event removes it): nothing to wait for if the
	// service is imported again.
	c.lag.ForgetCreated(kindSlicesOf(key))
	c.lag.Seen(kindService, client.ObjectKey{Namespace: key.Namespace, Name: DerivedServiceName(key.Name)})
	c.lag.Seen(kindServiceImport, key)
	if imp.Name != "" {
		if err := c.client.Delete(ctx, &imp); client.IgnoreNotFound(err) != nil {
			return err
		}
		c.lag.Forget(imp.UID)
		log.FromContext(ctx).Info("deleted ServiceImport: no cluster exports the service any more")
		c.recorder.Eventf(&imp, nil, corev1.EventTypeNormal, reasonRemoved, "Import", "removed: no cluster exports the service any more, or its namespace is excluded")
	}
	c.observer.removed(key)
	return nil
}
