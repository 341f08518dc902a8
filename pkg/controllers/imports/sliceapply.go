package imports

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/names"
)

// The writes of an import's EndpointSlices (desiredSlices, in slices.go,
// decides what they hold).

// kindSlicesOf is the cachelag kind of the EndpointSlices of the import
// key, so that removing the import forgets their creates together.
func kindSlicesOf(key client.ObjectKey) string {
	return "EndpointSlice of " + key.String()
}

// applySlices makes this import's EndpointSlices exactly the desired ones.
func (c *Controller) applySlices(ctx context.Context, key client.ObjectKey, desired []discoveryv1.EndpointSlice) error {
	var existing discoveryv1.EndpointSliceList
	ofImport := client.ListOption(client.MatchingLabels{mcsv1beta1.LabelServiceName: key.Name, discoveryv1.LabelManagedBy: names.ManagedBy})
	if c.indexed {
		ofImport = client.MatchingFields{sliceIndex: key.Name}
	}
	if err := c.client.List(ctx, &existing, client.InNamespace(key.Namespace), ofImport); err != nil {
		return err
	}
	kind := kindSlicesOf(key)
	have := map[string]*discoveryv1.EndpointSlice{}
	for i := range existing.Items {
		have[existing.Items[i].Name] = &existing.Items[i]
		c.lag.Seen(kind, client.ObjectKeyFromObject(&existing.Items[i]))
	}
	behind := false
	for i := range desired {
		want := &desired[i]
		cur, ok := have[want.Name]
		delete(have, want.Name)
		switch {
		case !ok && c.lag.Unseen(kind, client.ObjectKeyFromObject(want)):
			// Created by this controller moments ago; the cache shows it
			// soon. The other slices are written meanwhile.
			behind = true
		case !ok:
			if err := c.client.Create(ctx, want); err != nil && !apierrors.IsAlreadyExists(err) {
				return err
			}
			c.lag.Created(kind, client.ObjectKeyFromObject(want))
			slicesWritten.WithLabelValues("create").Inc()
		case cur.AddressType != want.AddressType:
			// addressType is immutable: replace the slice.
			if err := c.client.Delete(ctx, cur); client.IgnoreNotFound(err) != nil {
				return err
			}
			if err := c.client.Create(ctx, want); err != nil {
				return err
			}
			c.lag.Created(kind, client.ObjectKeyFromObject(want))
			slicesWritten.WithLabelValues("replace").Inc()
		case !equality.Semantic.DeepEqual(cur.Endpoints, want.Endpoints) || !equality.Semantic.DeepEqual(cur.Ports, want.Ports) ||
			!equality.Semantic.DeepEqual(cur.Labels, want.Labels) || !equality.Semantic.DeepEqual(cur.OwnerReferences, want.OwnerReferences):
			cur.Endpoints, cur.Ports, cur.Labels, cur.OwnerReferences = want.Endpoints, want.Ports, want.Labels, want.OwnerReferences
			// The trigger time changes with the content only: a record
			// change that leaves this slice alone does not rewrite it.
			setTriggerTime(cur, want.Annotations[corev1.EndpointsLastChangeTriggerTime])
			if err := c.client.Update(ctx, cur); err != nil {
				return err
			}
			slicesWritten.WithLabelValues("update").Inc()
		}
	}
	for _, stale := range have {
		if err := c.client.Delete(ctx, stale); client.IgnoreNotFound(err) != nil {
			return err
		}
		slicesWritten.WithLabelValues("delete").Inc()
	}
	if behind {
		return errCacheBehind
	}
	return nil
}
