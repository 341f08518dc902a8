package testenv

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// ResourceVersions lists, through c, every ServiceExport, ServiceImport,
// Service, EndpointSlice and Event in namespace ("": in all namespaces) and
// returns their resourceVersions keyed by "Kind namespace/name". An event's
// key also says what it is about: "Event namespace/name about regarding
// (reason)". Comparing two calls shows what was written or created in
// between.
func ResourceVersions(ctx context.Context, c client.Client, namespace string) (map[string]string, error) {
	out := map[string]string{}
	for kind, list := range map[string]client.ObjectList{
		"ServiceExport": &mcsv1beta1.ServiceExportList{}, "ServiceImport": &mcsv1beta1.ServiceImportList{},
		"Service": &corev1.ServiceList{}, "EndpointSlice": &discoveryv1.EndpointSliceList{}, "Event": &eventsv1.EventList{},
	} {
		if err := c.List(ctx, list, client.InNamespace(namespace)); err != nil {
			return nil, fmt.Errorf("listing %ss: %w", kind, err)
		}
		items, err := meta.ExtractList(list)
		if err != nil {
			return nil, err
		}
		for _, item := range items {
			o := item.(client.Object)
			key := kind + " " + o.GetNamespace() + "/" + o.GetName()
			if e, ok := o.(*eventsv1.Event); ok {
				key += fmt.Sprintf(" about %s (%s)", e.Regarding.Name, e.Reason)
			}
			out[key] = o.GetResourceVersion()
		}
	}
	return out, nil
}
