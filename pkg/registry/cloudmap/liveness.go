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
	return r.registerSystem(ctx, heartbeatService, instance{
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
		if err := r.deregister(ctx, svc.ID, in.ID); err != nil && !isCode(err, "ServiceNotFound") {
			return err
		}
	}
	err = r.register(ctx, svc.ID, in)
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
