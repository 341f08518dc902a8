package export

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/registry"
)

// E1 I3 I4: the record carries the Service's type and properties and one
// endpoint per address, with conditions defaulted as the EndpointSlice API says.
func TestBuildRecord(t *testing.T) {
	created := metav1.NewTime(time.UnixMilli(1_700_000_000_123))
	export := &mcsv1beta1.ServiceExport{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "db", CreationTimestamp: created},
		Spec:       mcsv1beta1.ServiceExportSpec{ExportedLabels: map[string]string{"a": "b"}},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "db"},
		Spec: corev1.ServiceSpec{
			ClusterIP:       corev1.ClusterIPNone,
			SessionAffinity: corev1.ServiceAffinityNone,
			Ports:           []corev1.ServicePort{{Name: "pg", Port: 5432}},
		},
	}
	slice := func(name string, family discoveryv1.AddressType, eps ...discoveryv1.Endpoint) discoveryv1.EndpointSlice {
		return discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: name}, AddressType: family, Endpoints: eps,
			Ports: []discoveryv1.EndpointPort{{Name: ptr.To("pg"), Port: ptr.To[int32](5432)}}}
	}
	slices := []discoveryv1.EndpointSlice{
		// Ready unset means ready; serving follows ready when unset.
		slice("a", discoveryv1.AddressTypeIPv4,
			discoveryv1.Endpoint{Addresses: []string{"10.0.0.2"}, Hostname: ptr.To("db-1")},
			discoveryv1.Endpoint{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}}),
		// The same address seen ready in another slice wins over the not-ready copy.
		slice("b", discoveryv1.AddressTypeIPv4, discoveryv1.Endpoint{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}),
		slice("c", discoveryv1.AddressTypeIPv6, discoveryv1.Endpoint{Addresses: []string{"fd00::1"}, Conditions: discoveryv1.EndpointConditions{
			Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}}),
		slice("d", discoveryv1.AddressTypeFQDN, discoveryv1.Endpoint{Addresses: []string{"example.com"}}),
	}
	rec := buildRecord(export, svc, slices)
	if rec.ClusterID != "" || rec.ClusterSetID != "" {
		t.Errorf("the record names cluster %q of %q; the backend fills in its identity", rec.ClusterID, rec.ClusterSetID)
	}

	if rec.Spec.Type != registry.Headless || rec.Spec.SessionAffinity != "" || !rec.Spec.ExportCreated.Equal(created.Time) ||
		rec.Spec.ExportedLabels["a"] != "b" || len(rec.Spec.Ports) != 1 || rec.Spec.Ports[0].Protocol != corev1.ProtocolTCP {
		t.Fatalf("spec = %+v", rec.Spec)
	}
	if len(rec.Endpoints) != 3 {
		t.Fatalf("endpoints = %+v, want 10.0.0.1, 10.0.0.2 and fd00::1 (FQDN dropped)", rec.Endpoints)
	}
	byAddr := map[string]registry.Endpoint{}
	for _, e := range rec.Endpoints {
		byAddr[e.Address] = e
	}
	if e := byAddr["10.0.0.1"]; !e.Ready {
		t.Fatalf("10.0.0.1 should be ready (the ready copy wins): %+v", e)
	}
	if e := byAddr["10.0.0.2"]; !e.Ready || !e.Serving || e.Hostname != "db-1" {
		t.Fatalf("10.0.0.2 = %+v", e)
	}
	if e := byAddr["fd00::1"]; e.Ready || !e.Serving || !e.Terminating || e.AddressType != discoveryv1.AddressTypeIPv6 {
		t.Fatalf("fd00::1 = %+v", e)
	}
}

// The record's Changed: the time of the change it carries, for the
// propagation lag importers measure.
func TestChangeTime(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0.Add(time.Hour)
	rec := func(addrs ...string) *registry.Record {
		r := &registry.Record{ClusterID: "a", Namespace: "n", Name: "s"}
		for _, a := range addrs {
			r.Endpoints = append(r.Endpoints, registry.Endpoint{Address: a, Ready: true})
		}
		return r
	}
	withTime := func(r *registry.Record, at time.Time) *registry.Record { r.Changed = at; return r }
	cases := []struct {
		name    string
		prev    *registry.Record
		rec     *registry.Record
		trigger time.Time
		want    time.Time
	}{
		{"first export: now, whatever the slices say", nil, rec("10.0.0.1"), t0.Add(-24 * time.Hour), now},
		{"same content keeps the previous time", withTime(rec("10.0.0.1"), t0), rec("10.0.0.1"), t0.Add(time.Minute), t0},
		{"same content without a previous time: now", withTime(rec("10.0.0.1"), time.Time{}), rec("10.0.0.1"), time.Time{}, now},
		{"an endpoint change takes the Pod change's time", withTime(rec("10.0.0.1"), t0), rec("10.0.0.1", "10.0.0.2"), t0.Add(time.Minute), t0.Add(time.Minute)},
		{"a trigger older than the previous version is another change's: now", withTime(rec("10.0.0.1"), t0), rec("10.0.0.2"), t0.Add(-time.Minute), now},
		{"no trigger: now", withTime(rec("10.0.0.1"), t0), rec(), time.Time{}, now},
		{"a trigger in the future is not believed", withTime(rec("10.0.0.1"), t0), rec("10.0.0.2"), now.Add(time.Second), now},
		{"a previous record of an older version (no time) and a trigger", withTime(rec("10.0.0.1"), time.Time{}), rec("10.0.0.2"), t0, t0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := changeTime(tc.prev, tc.rec, tc.trigger, now); !got.Equal(tc.want) {
				t.Fatalf("changeTime = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLastChangeTrigger(t *testing.T) {
	slice := func(v string) discoveryv1.EndpointSlice {
		s := discoveryv1.EndpointSlice{}
		if v != "" {
			s.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: v}
		}
		return s
	}
	got := lastChangeTrigger([]discoveryv1.EndpointSlice{
		slice("2026-01-01T00:00:01.5Z"), slice(""), slice("not a time"), slice("2026-01-01T00:00:03.25Z"), slice("2026-01-01T00:00:02Z"),
	})
	if want := time.Date(2026, 1, 1, 0, 0, 3, 250_000_000, time.UTC); !got.Equal(want) {
		t.Fatalf("lastChangeTrigger = %v, want the newest parseable annotation %v", got, want)
	}
	if got := lastChangeTrigger([]discoveryv1.EndpointSlice{slice("")}); !got.IsZero() {
		t.Fatalf("lastChangeTrigger without annotations = %v, want zero", got)
	}
}
