package identity

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	aboutv1alpha1 "github.com/clusterset/clusterset/pkg/apis/about/v1alpha1"
)

// Names of the well-known ClusterProperties.
const (
	ClusterIDProperty    = aboutv1alpha1.ClusterIDName
	ClusterSetIDProperty = aboutv1alpha1.ClusterSetIDName
)

// Controller reads the identity ClusterProperties into a Store and creates
// them from Defaults when they are absent.
type Controller struct {
	client   client.Client
	recorder recorder.EventRecorder
	store    *Store
	// Defaults come from --cluster-id and --clusterset-id; empty fields are
	// not created.
	defaults Identity
}

// NewController returns the identity controller.
func NewController(c client.Client, recorder recorder.EventRecorder, store *Store, defaults Identity) *Controller {
	return &Controller{client: c, recorder: recorder, store: store, defaults: defaults}
}

// Name is used in logs and metrics.
func (c *Controller) Name() string { return "identity" }

// Register wires the controller to the two well-known ClusterProperties.
func (c *Controller) Register(_ context.Context, mgr ctrl.Manager) error {
	wellKnown := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetName() == ClusterIDProperty || o.GetName() == ClusterSetIDProperty
	})
	// Every event maps to one request: the identity is one thing made of two objects.
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: "identity"}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named(c.Name()).
		// Every replica needs the identity: it builds the registry view
		// that a standby keeps warm and that readiness waits for. A standby
		// that waited for leadership would never be Ready, and a rolling
		// update of two replicas would never finish. Creating an absent
		// property from the same flags twice is harmless.
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
		WatchesRawSource(startupKick()).
		Watches(&aboutv1alpha1.ClusterProperty{}, one, builder.WithPredicates(wellKnown)).
		Complete(c)
}

// Reconcile reads both properties, creating absent ones from the defaults.
func (c *Controller) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	logger := log.FromContext(ctx)
	clusterProp, err := c.ensure(ctx, ClusterIDProperty, c.defaults.ClusterID)
	if err != nil {
		return reconcile.Result{}, err
	}
	setProp, err := c.ensure(ctx, ClusterSetIDProperty, c.defaults.ClusterSetID)
	if err != nil {
		return reconcile.Result{}, err
	}
	id := Identity{ClusterID: valueOf(clusterProp), ClusterSetID: valueOf(setProp), UID: c.systemUID(ctx)}
	invalid := id.Validate()
	c.store.set(id, invalid)
	if invalid != nil {
		logger.Error(invalid, "cluster identity is not usable; exports are stopped until it is fixed")
		// Events about one object and reason are merged into a series that
		// keeps the first note, so a missing and an invalid identity get
		// different reasons, and the event is about the property itself.
		reason := "InvalidClusterIdentity"
		if id.ClusterID == "" || id.ClusterSetID == "" {
			reason = "MissingClusterIdentity"
		}
		regarding := &corev1.ObjectReference{Kind: "ClusterProperty", APIVersion: aboutv1alpha1.GroupVersion.String(), Name: ClusterIDProperty}
		if clusterProp != nil && id.ClusterID != "" {
			regarding.UID, regarding.ResourceVersion = clusterProp.UID, clusterProp.ResourceVersion
		}
		c.recorder.Eventf(regarding, nil, corev1.EventTypeWarning, reason, "Validate", "%s", invalid.Error())
		// The ClusterProperty watch brings the fix; the requeue is a
		// safety net in case a watch event is missed.
		return reconcile.Result{RequeueAfter: time.Minute}, nil
	}
	if _, err := c.store.Current(); err != nil {
		logger.Error(err, "cluster identity changed")
		return reconcile.Result{}, nil
	}
	logger.V(1).Info("cluster identity", "cluster", id.ClusterID, "clusterset", id.ClusterSetID)
	return reconcile.Result{}, nil
}

// ensure returns the named ClusterProperty, creating it with value def when
// it is absent and def is set; nil when it is absent and def is empty.
func (c *Controller) ensure(ctx context.Context, name, def string) (*aboutv1alpha1.ClusterProperty, error) {
	var prop aboutv1alpha1.ClusterProperty
	err := c.client.Get(ctx, client.ObjectKey{Name: name}, &prop)
	if err == nil {
		return &prop, nil
	}
	if !apierrors.IsNotFound(err) || def == "" {
		return nil, client.IgnoreNotFound(err)
	}
	prop = aboutv1alpha1.ClusterProperty{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/managed-by": "clusterset-controller"}},
		Spec:       aboutv1alpha1.ClusterPropertySpec{Value: def},
	}
	if err := c.client.Create(ctx, &prop); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	log.FromContext(ctx).Info("created ClusterProperty from flags", "property", name, "value", def)
	return &prop, nil
}

func valueOf(p *aboutv1alpha1.ClusterProperty) string {
	if p == nil {
		return ""
	}
	return p.Spec.Value
}

// startupKick enqueues one reconcile when the controller starts, so that absent
// ClusterProperties are created even though no watch event will mention them.
func startupKick() source.Source {
	return source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		q.Add(reconcile.Request{NamespacedName: client.ObjectKey{Name: "identity"}})
		return nil
	})
}

// systemUID returns the UID of the kube-system namespace, "" (logged) when
// it cannot be read.
func (c *Controller) systemUID(ctx context.Context) string {
	var ns corev1.Namespace
	if err := c.client.Get(ctx, client.ObjectKey{Name: metav1.NamespaceSystem}, &ns); err != nil {
		log.FromContext(ctx).Error(err, "reading the kube-system namespace's UID; another cluster given the same cluster ID will not be detected")
		return ""
	}
	return string(ns.UID)
}
