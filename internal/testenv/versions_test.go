package testenv

import (
	"maps"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// TestResourceVersions lists a fake client's objects in one namespace and in
// all: the five kinds, keyed "Kind namespace/name" (an event's also with what
// it is about), and nothing of another kind.
func TestResourceVersions(t *testing.T) {
	meta := func(ns, name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }
	c := fake.NewClientBuilder().WithScheme(Scheme).WithObjects(
		&mcsv1beta1.ServiceExport{ObjectMeta: meta("a", "web")},
		&mcsv1beta1.ServiceImport{ObjectMeta: meta("a", "web")},
		&corev1.Service{ObjectMeta: meta("a", "web")},
		&discoveryv1.EndpointSlice{ObjectMeta: meta("a", "web-1"), AddressType: discoveryv1.AddressTypeIPv4},
		&eventsv1.Event{ObjectMeta: meta("a", "web.1"), Regarding: corev1.ObjectReference{Name: "web"}, Reason: "Exported"},
		&corev1.Service{ObjectMeta: meta("b", "db")},
		&corev1.ConfigMap{ObjectMeta: meta("a", "not-listed")},
	).Build()

	want := []string{
		"EndpointSlice a/web-1",
		"Event a/web.1 about web (Exported)",
		"Service a/web",
		"ServiceExport a/web",
		"ServiceImport a/web",
	}
	got, err := ResourceVersions(t.Context(), c, "a")
	if err != nil {
		t.Fatal(err)
	}
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, want) {
		t.Errorf("keys in a: %q, want %q", keys, want)
	}
	var svc corev1.Service
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: "a", Name: "web"}, &svc); err != nil {
		t.Fatal(err)
	}
	if rv := got["Service a/web"]; rv == "" || rv != svc.ResourceVersion {
		t.Errorf("Service a/web at %q, want %q", rv, svc.ResourceVersion)
	}

	all, err := ResourceVersions(t.Context(), c, metav1.NamespaceAll)
	if err != nil {
		t.Fatal(err)
	}
	if keys := slices.Sorted(maps.Keys(all)); !slices.Equal(keys, slices.Sorted(slices.Values(append(want, "Service b/db")))) {
		t.Errorf("keys in all namespaces: %q, want those of a and Service b/db", keys)
	}
}
