// Package export implements the ServiceExport controller: it validates each
// ServiceExport against its Service, publishes this cluster's record of the
// service to the registry (behind a finalizer, so nothing is left behind), and
// reports the Valid, Ready and Conflict conditions of KEP-1645.
package export

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
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
	// reasonNamespaceExcluded is set on Valid for a ServiceExport in a
	// namespace excluded from the clusterset (--excluded-namespaces).
	reasonNamespaceExcluded = "NamespaceExcluded"

	// reasonRegistryNotReady is set on Ready while the identity or the
	// registry is not usable yet; its message says which.
	reasonRegistryNotReady = "RegistryNotReady"

	// reasonConflictResolved is the reason of the event that says a
	// conflict this export had is gone.
	reasonConflictResolved = "ConflictResolved"
)

// Link is what the export controller needs of this cluster's link to the
// registry; *registrylink.Link is the one cmd/ gives it.
type Link interface {
	// Registry returns the backend and this cluster's identity once both
	// are usable, else an error (registrylink.ErrNotReady, or the
	// identity's problem) that the Ready condition shows.
	Registry() (registry.Registry, identity.Identity, error)
	// ClusterID is this cluster's ID, "" while unknown; for logs.
	ClusterID() string
	// Source enqueues each service whose records may have changed in the
	// registry (other clusters' exports decide conflicts).
	Source() source.Source
}

// Controller reconciles ServiceExports of this cluster.
type Controller struct {
	client   client.Client
	recorder recorder.EventRecorder
	link     Link
	excluded namespaces.Exclusions
	// Workers is how many services are reconciled at once (default 1).
	Workers int
	// Clock stamps records with the time of a change that carries no
	// trigger time (registry.Record.Changed). Default the real clock.
	Clock clock.PassiveClock

	// published remembers the last record written per service, so that
	// reconciles which change nothing cost no registry call. Whether that
	// record is still in the registry is the backend's concern: Publish
	// keeps it there (registry.Registry). It is empty after a restart,
	// which republishes every export once (R3).
	mu        sync.Mutex
	published map[registry.ServiceKey]publishedRecord

	stats exportStats
	// registered is when Register was called: the process's start, for
	// startGrace.
	registered time.Time
	// indexed is set by Register: the client reads a cache with
	// sliceIndex, so that a service's EndpointSlices are found without
	// going through every slice of its namespace.
	indexed bool
	// lag tells a reconcile that reads a ServiceExport this controller has
	// since written (finalizer, status) from a cache that has not caught
	// up: writing from it would be refused (409) and repeat its events.
	lag cachelag.Tracker
}

type publishedRecord struct {
	// rec is the record as this controller built it, without the
	// cluster's identity, which the backend fills in.
	rec *registry.Record
	// trigger is the newest EndpointSlice last-change-trigger-time seen at
	// the last reconcile, published or not.
	trigger time.Time
}

// NewController returns the export controller.
// ServiceExports in excluded namespaces are refused with Valid=False
// (reasonNamespaceExcluded) and never published.
func NewController(c client.Client, rec recorder.EventRecorder, link Link, excluded namespaces.Exclusions) *Controller {
	return &Controller{client: c, recorder: rec, link: link, excluded: excluded, Clock: clock.RealClock{}, published: map[registry.ServiceKey]publishedRecord{}}
}

// Name is used in logs and metrics.
func (c *Controller) Name() string { return "export" }

// Register wires the ServiceExport, its Service, the Service's EndpointSlices
// and registry changes (for conflicts) to the controller.
func (c *Controller) Register(ctx context.Context, mgr ctrl.Manager) error {
	c.registered = c.Clock.Now()
	if err := mgr.GetFieldIndexer().IndexField(ctx, &discoveryv1.EndpointSlice{}, sliceIndex, func(o client.Object) []string {
		if name := o.GetLabels()[discoveryv1.LabelServiceName]; name != "" {
			return []string{name}
		}
		return nil
	}); err != nil {
		return err
	}
	c.indexed = true
	notOurSlices := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetLabels()[discoveryv1.LabelManagedBy] != names.ManagedBy
	})
	sliceToService := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		name := o.GetLabels()[discoveryv1.LabelServiceName]
		if name == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: name}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named(c.Name()).
		WithOptions(controller.Options{RateLimiter: registrylink.RateLimiter(), MaxConcurrentReconciles: max(c.Workers, 1)}).
		For(&mcsv1beta1.ServiceExport{}).
		Watches(&corev1.Service{}, &handler.EnqueueRequestForObject{}).
		Watches(&discoveryv1.EndpointSlice{}, sliceToService, builder.WithPredicates(notOurSlices)).
		WatchesRawSource(c.link.Source()).
		Complete(c)
}

// Reconcile brings the registry and the ServiceExport's status in line with
// the ServiceExport and its Service.
func (c *Controller) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithValues("namespace", req.Namespace, "service", req.Name, "cluster", c.link.ClusterID()))
	var export mcsv1beta1.ServiceExport
	if err := c.client.Get(ctx, req.NamespacedName, &export); err != nil {
		if !apierrors.IsNotFound(err) {
			return reconcile.Result{}, err
		}
		// No export: make sure no record of ours outlives it, for example
		// after its finalizer was removed by hand while we were down. Until
		// the registry is ready there is nothing to check; its first sync
		// notifies every key again.
		c.stats.setConflict(req.NamespacedName, "", false)
		if _, _, rerr := c.link.Registry(); rerr != nil {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, c.withdrawIfPublished(ctx, req.NamespacedName)
	}
	if c.lag.Behind(&export) {
		// The watch event of this controller's last write is on its way
		// and reconciles the export again; the requeue is in case it is
		// lost.
		log.FromContext(ctx).V(1).Info("cache is behind this controller's last write of the ServiceExport; waiting for it", "resourceVersion", export.ResourceVersion)
		return reconcile.Result{RequeueAfter: cacheLagRequeue}, nil
	}
	if !export.DeletionTimestamp.IsZero() {
		return c.finalize(ctx, &export)
	}

	before := export.Status.DeepCopy()
	result, err := c.reconcileExport(ctx, &export)
	if !equality.Semantic.DeepEqual(before, &export.Status) {
		if uerr := c.updateStatus(ctx, &export); uerr != nil {
			return reconcile.Result{}, errors.Join(err, uerr)
		}
	}
	return result, err
}

// sliceIndex is the name of the cache index of EndpointSlices by their
// kubernetes.io/service-name label. A label selector on a cached List is
// matched against every object of the namespace, so each reconcile cost
// more the more services the namespace held (it showed in CPU profiles of
// the controllers, docs/benchmarks.md).
const sliceIndex = "export.serviceName"

// startGrace is how long after its start the controller leaves Ready
// exports alone while its registry link is still starting. A restarted
// controller had reconciled 5,000 services within 10 s (docs/benchmarks.md);
// a link that is not ready after a minute has a problem the export's
// condition should show.
const startGrace = time.Minute

// cacheLagRequeue is when a reconcile that found the cache behind its own
// write looks again, in case the write's watch event never comes.
const cacheLagRequeue = 5 * time.Second

// updateStatus writes export's status and records the write (lag).
func (c *Controller) updateStatus(ctx context.Context, export *mcsv1beta1.ServiceExport) error {
	prev := export.ResourceVersion
	if err := c.client.Status().Update(ctx, export); err != nil {
		return err
	}
	c.lag.Wrote(prev, export)
	return nil
}

func (c *Controller) reconcileExport(ctx context.Context, export *mcsv1beta1.ServiceExport) (reconcile.Result, error) {
	logger := log.FromContext(ctx)
	key := client.ObjectKeyFromObject(export)

	if c.excluded.Excluded(key.Namespace) {
		msg := fmt.Sprintf("namespace %s is excluded from the clusterset (--excluded-namespaces=%s): nothing in it is exported", key.Namespace, c.excluded)
		if c.setCondition(export, string(mcsv1beta1.ServiceExportConditionValid), metav1.ConditionFalse, reasonNamespaceExcluded, msg) {
			c.recorder.Eventf(export, nil, corev1.EventTypeWarning, reasonNamespaceExcluded, "Export", "%s", msg)
		}
		return c.notExported(ctx, export)
	}

	var svc corev1.Service
	err := c.client.Get(ctx, key, &svc)
	switch {
	case apierrors.IsNotFound(err):
		// E2/E4: no Service, nothing to export; withdraw what was published.
		c.refuse(export, mcsv1beta1.ServiceExportReasonNoService, fmt.Sprintf("Service %s/%s does not exist", key.Namespace, key.Name))
		return c.notExported(ctx, export)
	case err != nil:
		return reconcile.Result{}, err
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		// E3: an ExternalName Service has no endpoints to export.
		c.refuse(export, mcsv1beta1.ServiceExportReasonInvalidServiceType, "Service type ExternalName cannot be exported")
		return c.notExported(ctx, export)
	}
	c.setValid(export, metav1.ConditionTrue, mcsv1beta1.ServiceExportReasonValid, "Service is valid for export")

	reg, id, err := c.link.Registry()
	if err != nil {
		if registrylink.Starting(err) && c.Clock.Since(c.registered) < startGrace &&
			meta.IsStatusConditionTrue(export.Status.Conditions, string(mcsv1beta1.ServiceExportConditionReady)) {
			// This process has just started and its view of the registry
			// is not synced yet: the record an earlier run published is
			// still there (records outlive the controller, R3), so the
			// export stays Ready rather than flip to False and back, a
			// rewrite of every ServiceExport at every restart. The link's
			// first sync reconciles every service again; a registry that
			// is still not ready after startGrace is reported.
			return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
		}
		// C1: no usable identity or registry yet: say so and look again.
		c.setReady(export, metav1.ConditionFalse, reasonRegistryNotReady, err.Error())
		return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
	}
	// The finalizer goes on before the first registry write, so that a
	// deletion can never leak the record.
	if err := c.setFinalizer(ctx, export, true); err != nil {
		return reconcile.Result{}, err
	}

	var slices discoveryv1.EndpointSliceList
	byService := client.ListOption(client.MatchingLabels{discoveryv1.LabelServiceName: key.Name})
	if c.indexed {
		byService = client.MatchingFields{sliceIndex: key.Name}
	}
	if err := c.client.List(ctx, &slices, client.InNamespace(key.Namespace), byService); err != nil {
		return reconcile.Result{}, err
	}
	own := slices.Items[:0]
	for _, s := range slices.Items {
		if s.Labels[discoveryv1.LabelManagedBy] != names.ManagedBy {
			own = append(own, s)
		}
	}
	rec := buildRecord(export, &svc, own)
	// Ready went False only because this process started before its
	// registry view was ready, and the record was there all along: the
	// export did not change, so there is no Exported event to give again.
	restarted := false
	if r := meta.FindStatusCondition(export.Status.Conditions, string(mcsv1beta1.ServiceExportConditionReady)); r != nil && r.Reason == reasonRegistryNotReady {
		held, _ := ownInView(reg, key, id.ClusterID)
		restarted = held != nil
	}
	if err := c.publish(ctx, reg, id.ClusterID, rec, lastChangeTrigger(own)); err != nil {
		// R2: the registry is unreachable or refused the record.
		c.setReady(export, metav1.ConditionFalse, mcsv1beta1.ServiceExportReasonFailed, "publishing to the registry: "+err.Error())
		c.recorder.Eventf(export, nil, corev1.EventTypeWarning, "PublishFailed", "Publish", "publishing to the registry: %v", err)
		return reconcile.Result{}, err
	}
	ready := readyEndpoints(rec.Endpoints)
	msg := fmt.Sprintf("exported to clusterset %s as cluster %s with %d endpoints (%d ready)", id.ClusterSetID, id.ClusterID, len(rec.Endpoints), ready)
	if c.setCondition(export, string(mcsv1beta1.ServiceExportConditionReady), metav1.ConditionTrue, mcsv1beta1.ServiceExportReasonExported, msg) && !restarted {
		c.recorder.Eventf(export, nil, corev1.EventTypeNormal, string(mcsv1beta1.ServiceExportReasonExported), "Publish", "%s", msg)
	}
	// E6: every cluster merges the same records the same way; this
	// cluster's own record is the one just written, even if the view has not
	// caught up with it yet.
	records, err := reg.Records(key)
	if err != nil {
		return reconcile.Result{}, err
	}
	records = withOwn(records, rec, id.ClusterID)
	res, _ := merge.Merge(records)
	conflict := res.Conflicts[id.ClusterID]
	status := metav1.ConditionFalse
	if conflict.Conflicting {
		status = metav1.ConditionTrue
	}
	wasConflicting := meta.IsStatusConditionTrue(export.Status.Conditions, string(mcsv1beta1.ServiceExportConditionConflict))
	if c.setCondition(export, string(mcsv1beta1.ServiceExportConditionConflict), status, conflict.Reason, conflict.Message) {
		switch {
		case conflict.Conflicting:
			logger.Info("export conflicts with the clusterset", "reason", conflict.Reason, "message", conflict.Message)
			c.recorder.Eventf(export, nil, corev1.EventTypeWarning, string(conflict.Reason), "Merge", "%s", conflict.Message)
		case wasConflicting:
			logger.Info("export no longer conflicts with the clusterset")
			c.recorder.Eventf(export, nil, corev1.EventTypeNormal, reasonConflictResolved, "Merge", "the exports of this service across the clusterset agree again")
		}
	}
	c.stats.setConflict(key, conflict.Reason, conflict.Conflicting)
	return reconcile.Result{}, nil
}

// notExported withdraws the record of an export that is not valid and marks
// it not ready. The ServiceExport itself stays (E4).
func (c *Controller) notExported(ctx context.Context, export *mcsv1beta1.ServiceExport) (reconcile.Result, error) {
	meta.RemoveStatusCondition(&export.Status.Conditions, string(mcsv1beta1.ServiceExportConditionConflict))
	c.stats.setConflict(client.ObjectKeyFromObject(export), "", false)
	if err := c.withdrawIfPublished(ctx, client.ObjectKeyFromObject(export)); err != nil {
		if errors.Is(err, registrylink.ErrNotReady) {
			c.setReady(export, metav1.ConditionFalse, reasonRegistryNotReady, err.Error())
			return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
		}
		c.setReady(export, metav1.ConditionFalse, mcsv1beta1.ServiceExportReasonFailed, "withdrawing from the registry: "+err.Error())
		return reconcile.Result{}, err
	}
	c.setReady(export, metav1.ConditionFalse, mcsv1beta1.ServiceExportReasonPending, "not exported: the ServiceExport is not valid")
	return reconcile.Result{}, nil
}

// finalize withdraws the record of a deleted ServiceExport (E5), then lets
// the deletion finish.
func (c *Controller) finalize(ctx context.Context, export *mcsv1beta1.ServiceExport) (reconcile.Result, error) {
	if !controllerutil.ContainsFinalizer(export, names.ExportFinalizer) {
		return reconcile.Result{}, nil
	}
	if err := c.withdrawIfPublished(ctx, client.ObjectKeyFromObject(export)); err != nil {
		if errors.Is(err, registrylink.ErrNotReady) {
			return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
		}
		// R2: the registry is unreachable or refused; the ServiceExport
		// stays (Terminating) until its record is gone, and says why.
		before := export.Status.DeepCopy()
		msg := "withdrawing from the registry before the ServiceExport can go: " + err.Error()
		if c.setCondition(export, string(mcsv1beta1.ServiceExportConditionReady), metav1.ConditionFalse, mcsv1beta1.ServiceExportReasonFailed, msg) {
			c.recorder.Eventf(export, nil, corev1.EventTypeWarning, "WithdrawFailed", "Withdraw", "%s", msg)
		}
		if !equality.Semantic.DeepEqual(before, &export.Status) {
			err = errors.Join(err, client.IgnoreNotFound(c.updateStatus(ctx, export)))
		}
		return reconcile.Result{}, err
	}
	c.stats.setConflict(client.ObjectKeyFromObject(export), "", false)
	return reconcile.Result{}, c.setFinalizer(ctx, export, false)
}

// setFinalizer adds (on) or removes the export finalizer with a merge patch
// of the finalizers only, under optimistic locking (the patch carries the
// resourceVersion read): it never writes back fields this controller's
// ServiceExport type does not know, and a concurrent change makes it fail
// with a conflict, retried by the next reconcile. Nothing is sent when the
// finalizer is already as wanted.
//
// The patch is sent from a copy: the server's answer carries the stored
// status, which would overwrite the conditions this reconcile has set on
// export but not written yet. Only the finalizers and the resourceVersion
// are taken from it.
func (c *Controller) setFinalizer(ctx context.Context, export *mcsv1beta1.ServiceExport, on bool) error {
	patched := export.DeepCopy()
	var changed bool
	if on {
		changed = controllerutil.AddFinalizer(patched, names.ExportFinalizer)
	} else {
		changed = controllerutil.RemoveFinalizer(patched, names.ExportFinalizer)
	}
	if !changed {
		return nil
	}
	if err := c.client.Patch(ctx, patched, client.MergeFromWithOptions(export, client.MergeFromWithOptimisticLock{})); err != nil {
		return err
	}
	c.lag.Wrote(export.ResourceVersion, patched)
	export.Finalizers, export.ResourceVersion = patched.Finalizers, patched.ResourceVersion
	return nil
}

// publish makes rec (this cluster's record, without its identity) the
// registry's. It sets rec.Changed: the previous version's time when the
// content is the same, else trigger (the EndpointSlices' last change) when
// that is newer than the previous version, else now.
//
// Publish is called at every reconcile, even when rec is what this
// controller last published: the backend then writes nothing and makes no
// call (registry.Registry), unless the record was lost and could not be
// written again, and then this reconcile reports why (Ready=False).
func (c *Controller) publish(ctx context.Context, reg registry.Registry, cluster string, rec *registry.Record, trigger time.Time) error {
	key := rec.Key()
	c.mu.Lock()
	last, ok := c.published[key]
	c.mu.Unlock()
	prev := last.rec
	if !ok {
		prev, _ = ownInView(reg, key, cluster) // after a restart; none without a view
	}
	changeTrigger := trigger
	if ok && !trigger.After(last.trigger) {
		// Seen at an earlier reconcile: it caused an earlier version, or
		// a slice change that changed no record. Either way not this change.
		changeTrigger = time.Time{}
	}
	rec.Changed = changeTime(prev, rec, changeTrigger, c.Clock.Now())
	unchanged := ok && registry.SameContent(last.rec, rec)
	if err := reg.Publish(ctx, rec); err != nil {
		return err
	}
	c.mu.Lock()
	c.published[key] = publishedRecord{rec: rec, trigger: trigger}
	c.mu.Unlock()
	if unchanged {
		publishSkipped.Inc()
		return nil
	}
	c.stats.setExported(key, rec)
	log.FromContext(ctx).V(1).Info("published record", "endpoints", len(rec.Endpoints))
	return nil
}

// ownInView returns this cluster's record of key in the registry's view,
// without its identity (as this controller builds records); nil when the
// view has none, or the view's error (not synced).
func ownInView(reg registry.Registry, key registry.ServiceKey, cluster string) (*registry.Record, error) {
	recs, err := reg.Records(key)
	if err != nil {
		return nil, err
	}
	for i := range recs {
		if recs[i].ClusterID == cluster {
			own := recs[i]
			own.ClusterSetID, own.ClusterID = "", ""
			return &own, nil
		}
	}
	return nil, nil
}

// withdrawIfPublished removes this cluster's record of key when the registry
// has one, or when this controller wrote one that the view may not show yet.
func (c *Controller) withdrawIfPublished(ctx context.Context, key registry.ServiceKey) error {
	reg, id, err := c.link.Registry()
	if err != nil {
		return err
	}
	c.mu.Lock()
	_, wrote := c.published[key]
	c.mu.Unlock()
	if !wrote {
		own, err := ownInView(reg, key, id.ClusterID)
		if err != nil {
			return err
		}
		wrote = own != nil
	}
	if !wrote {
		return nil
	}
	err = reg.Withdraw(ctx, key)
	if err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.published, key)
	c.mu.Unlock()
	c.stats.setExported(key, nil)
	log.FromContext(ctx).Info("withdrew record", "cluster", id.ClusterID)
	return nil
}

func (c *Controller) setValid(export *mcsv1beta1.ServiceExport, status metav1.ConditionStatus, reason mcsv1beta1.ServiceExportConditionReason, msg string) {
	c.setCondition(export, string(mcsv1beta1.ServiceExportConditionValid), status, reason, msg)
}

// refuse sets Valid=False and, when that is news, says so in a Warning event.
func (c *Controller) refuse(export *mcsv1beta1.ServiceExport, reason mcsv1beta1.ServiceExportConditionReason, msg string) {
	if c.setCondition(export, string(mcsv1beta1.ServiceExportConditionValid), metav1.ConditionFalse, reason, msg) {
		c.recorder.Eventf(export, nil, corev1.EventTypeWarning, string(reason), "Export", "%s; not exported", msg)
	}
}

func (c *Controller) setReady(export *mcsv1beta1.ServiceExport, status metav1.ConditionStatus, reason mcsv1beta1.ServiceExportConditionReason, msg string) {
	c.setCondition(export, string(mcsv1beta1.ServiceExportConditionReady), status, reason, msg)
}

// setCondition sets a condition and reports whether its status or reason
// changed (conditions.Set). The types are those of conditions.Export.
func (c *Controller) setCondition(export *mcsv1beta1.ServiceExport, typ string, status metav1.ConditionStatus, reason mcsv1beta1.ServiceExportConditionReason, msg string) bool {
	return conditions.Set(&export.Status.Conditions, metav1.Condition{
		Type:               typ,
		Status:             status,
		Reason:             string(reason),
		Message:            msg,
		ObservedGeneration: export.Generation,
	})
}

// withOwn returns records with cluster's entry replaced by own, named for
// the merge.
func withOwn(records []registry.Record, own *registry.Record, cluster string) []registry.Record {
	out := make([]registry.Record, 0, len(records)+1)
	for _, r := range records {
		if r.ClusterID != cluster {
			out = append(out, r)
		}
	}
	mine := *own
	mine.ClusterID = cluster
	return append(out, mine)
}
