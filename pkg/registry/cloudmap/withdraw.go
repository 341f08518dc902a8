package cloudmap

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"

	"github.com/clusterset/clusterset/pkg/registry"
)

// Withdraw deregisters every instance of this cluster in key's service and
// deletes the Cloud Map service when a clusterset controller created it and
// no instance (of any writer) is left. Namespaces are never deleted.
//
// Withdrawing a key again, with nothing published since, within
// withdrawnMemory costs no call: the export controller does so when it
// reconciles again before this registry's view has caught up with the
// first withdrawal, and each such call used to list the namespace (a page
// per 100 services) to find the service the first had deleted. Once the
// view has read the service again since, the memory no longer counts: a
// record of this cluster that the view still shows came back after the
// withdrawal (a registration whose asynchronous operation landed after
// the withdrawal listed the instances, or a deregistration whose operation
// failed), and is withdrawn again.
func (r *Registry) Withdraw(ctx context.Context, key registry.ServiceKey) (err error) {
	defer r.lockKey(key)()
	r.mu.Lock()
	delete(r.published, key)
	at, done := r.withdrawn[key]
	r.mu.Unlock()
	if done && time.Since(at) < withdrawnMemory && !r.view.readSince(key, at) {
		return nil
	}
	defer r.wake()
	defer func() {
		if err == nil {
			r.mu.Lock()
			r.withdrawn[key] = time.Now()
			r.mu.Unlock()
		}
	}()
	r.view.markDirty(key)

	ns, ok, err := r.namespace(ctx, key.Namespace, false)
	if err != nil || !ok {
		return err
	}
	svc, ok, err := r.service(ctx, ns, key.Name, false)
	if err != nil || !ok {
		return err
	}
	insts, err := r.api.listInstances(ctx, svc.ID)
	if isCode(err, "ServiceNotFound") {
		r.forgetService(ns, key.Name)
		return nil
	}
	if err != nil {
		return err
	}
	_, copies := dedupe(insts)
	var mine []string
	othersLeft := false
	seen := map[string]bool{}
	for _, in := range insts {
		if seen[in.ID] {
			continue
		}
		seen[in.ID] = true
		if r.ours(in.Attrs) {
			// moto keeps one copy per registration and removes one per
			// deregistration: deregister every copy.
			for i := 0; i < copies[in.ID]; i++ {
				mine = append(mine, in.ID)
			}
		} else {
			othersLeft = true
		}
	}
	digest := unknownDigest
	if len(mine) > 0 {
		// After the deregistrations (and the deletion of the service), even
		// partial ones: tell the other clusters.
		defer func() { r.changed(ctx, key, digest) }()
	}
	err = r.parallel(ctx, len(mine), func(ctx context.Context, i int) error {
		return r.deregister(ctx, svc.ID, mine[i])
	})
	if err != nil {
		return fmt.Errorf("cloudmap: withdraw %s: %w", key, err)
	}
	digest = instanceDigest(nil)
	r.log.V(1).Info("withdrawn", "namespace", key.Namespace, "service", key.Name, "deregistered", len(mine))
	if othersLeft {
		return nil
	}
	return r.deleteIfOurs(ctx, ns, svc)
}

// withdrawnMemory is how long a withdrawal is remembered (Withdraw): far
// longer than a reconcile takes to repeat, and short enough that the
// memory holds only recent withdrawals (forgetWithdrawn).
const withdrawnMemory = 5 * time.Minute

// forgetWithdrawn drops the withdrawals older than withdrawnMemory.
func (r *Registry) forgetWithdrawn(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, at := range r.withdrawn {
		if now.Sub(at) >= withdrawnMemory {
			delete(r.withdrawn, k)
		}
	}
}

// deleteIfOurs deletes an empty Cloud Map service created by a clusterset
// controller (tagged). Real Cloud Map refuses to delete a service that has
// instances (ResourceInUse), which closes the race with a concurrent
// registration by another cluster.
func (r *Registry) deleteIfOurs(ctx context.Context, ns nsInfo, svc svcInfo) error {
	tags, err := r.api.c.ListTagsForResource(ctx, &sd.ListTagsForResourceInput{ResourceARN: aws.String(svc.ARN)})
	if err != nil {
		if isCode(err, "ResourceNotFoundException", "ServiceNotFound") {
			r.forgetService(ns, svc.Name)
			return nil
		}
		return err
	}
	created := false
	for _, t := range tags.Tags {
		if aws.ToString(t.Key) == createdByTag {
			created = true
		}
	}
	if !created {
		return nil
	}
	_, err = r.api.c.DeleteService(ctx, &sd.DeleteServiceInput{Id: aws.String(svc.ID)})
	switch {
	case isCode(err, "ResourceInUse"):
		return nil // someone registered meanwhile: the service stays
	case err != nil && !isCode(err, "ServiceNotFound"):
		return err
	}
	r.forgetService(ns, svc.Name)
	r.log.Info("deleted empty Cloud Map service", "namespace", ns.Name, "service", svc.Name)
	return nil
}
