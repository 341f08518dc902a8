package cloudmap

import (
	"context"
	"strconv"
	"time"

	"github.com/clusterset/clusterset/pkg/registry"
)

// Heartbeat registers (replaces) this cluster's heartbeat instance in
// Options.SystemNamespace/heartbeat with the current time. It also retries
// the change beacons whose last write failed.
func (r *Registry) Heartbeat(ctx context.Context) error {
	r.flushBeacons(ctx)
	err := r.registerSystem(ctx, heartbeatService, instance{
		ID: heartbeatID(r.opts.ClusterSetID, r.opts.ClusterID),
		Attrs: map[string]string{
			attrClusterSetID:    r.opts.ClusterSetID,
			attrClusterID:       r.opts.ClusterID,
			attrController:      controllerName,
			attrRecordKind:      kindHeartbeat,
			attrHeartbeat:       strconv.FormatInt(r.opts.Clock.Now().UnixMilli(), 10),
			attrHeartbeatLease:  strconv.FormatInt(int64(r.opts.LeaseDuration/time.Second), 10),
			attrHeartbeatHolder: r.opts.Holder,
		},
	})
	if err == nil {
		// Only the replica that leads, with a cluster ID of its own,
		// renews the heartbeat: from now on this process writes.
		r.writing.Store(true)
		r.maybeAnnounceRestart(ctx)
	}
	return err
}

// registerSystem registers (replaces) an instance of this cluster in a
// service of Options.SystemNamespace, creating both when missing.
func (r *Registry) registerSystem(ctx context.Context, service string, in instance) error {
	ns, _, err := r.namespace(ctx, r.opts.SystemNamespace, true)
	if err != nil {
		return err
	}
	svc, _, err := r.service(ctx, ns, service, true)
	if err != nil {
		return err
	}
	if r.opts.MotoWorkarounds {
		// Without this, moto keeps every version and DiscoverInstances (at
		// most 1,000 results) would eventually stop returning the newest.
		err = r.replaceOnMoto(ctx, svc.ID, in, true)
	} else {
		err = r.register(ctx, svc.ID, in)
	}
	if isCode(err, "ServiceNotFound") {
		r.forgetService(ns, service)
	}
	return err
}

// Liveness returns the last heartbeat of every cluster of the clusterset
// that has one. Clusters run by the AWS controller have none: callers must
// treat a missing entry as unknown, not as dead.
func (r *Registry) Liveness(ctx context.Context) (map[string]registry.Heartbeat, error) {
	hbs, err := readHeartbeats(ctx, r.api, r.opts.SystemNamespace, r.opts.ClusterSetID)
	if isCode(err, "NamespaceNotFound", "ServiceNotFound") {
		return map[string]registry.Heartbeat{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := make(map[string]registry.Heartbeat, len(hbs))
	for _, hb := range hbs {
		out[hb.ClusterID] = hb
	}
	return out, nil
}

// replaceOnMoto replaces instance in of the service with ID serviceID on
// moto (MotoWorkarounds), which keeps every registration of an instance ID
// where Cloud Map replaces it: it deregisters the old version, then
// registers in. A deregistration refused with ServiceNotFound is ignored
// when missingServiceOK (the register then reports it).
//
// Once started, the pair is finished even when ctx ends in between (a
// controller stopping), for up to RequestTimeout after ctx ends: stopped
// half-way, it would leave no version at all, which readers take for a
// withdrawn endpoint or, for a heartbeat, a cluster that never renewed one.
// Cloud Map itself replaces in one call and has no such gap.
func (r *Registry) replaceOnMoto(ctx context.Context, serviceID string, in instance, missingServiceOK bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ctx, cancel := outliving(ctx, r.opts.RequestTimeout)
	defer cancel()
	if err := r.deregister(ctx, serviceID, in.ID); err != nil && !(missingServiceOK && isCode(err, "ServiceNotFound")) {
		return err
	}
	return r.register(ctx, serviceID, in)
}

// outliving returns a context with ctx's values that ends grace after ctx
// does, or when its cancel function is called.
func outliving(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	out, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(grace, cancel) })
	return out, func() {
		stop()
		cancel()
	}
}
