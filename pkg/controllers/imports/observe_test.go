package imports

import (
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/registry"
)

// lagSamples returns the count and sum of the propagation lag observed for
// cluster.
func lagSamples(t *testing.T, cluster string) (uint64, float64) {
	t.Helper()
	var m dto.Metric
	if err := propagationLag.WithLabelValues(cluster).(prometheus.Histogram).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

func gaugeValue(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

// The lag is measured once per change, from the record's Changed, only for
// changes made while this process ran and after the namespace existed; stale
// and returning clusters are told on the ServiceImport; the gauges follow.
func TestObserverLagEventsAndGauges(t *testing.T) {
	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	rec := events.NewFakeRecorder(10)
	o := newObserver(rec)
	imp := &mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: "lag", Name: "web"}}
	nsCreated := start.Add(-time.Hour)
	record := func(cluster string, changed time.Time) registry.Record {
		return registry.Record{ClusterID: cluster, Namespace: "lag", Name: "web", Changed: changed}
	}
	slice := func(cluster string, ready ...bool) discoveryv1.EndpointSlice {
		s := discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{mcsv1beta1.LabelSourceCluster: cluster}}}
		for _, r := range ready {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(r)}})
		}
		return s
	}
	alive := map[string]bool{"lag-a": true, "lag-b": true, "lag-old": true}
	isAlive := func(c string) bool { return alive[c] }
	services0 := gaugeValue(t, importedServices)

	// A change older than the first reconcile (a restart, a standby that
	// took over) is not measured.
	o.reflected(imp, nsCreated, []registry.Record{record("lag-old", start.Add(-time.Minute))}, isAlive, nil, start)
	if n, _ := lagSamples(t, "lag-old"); n != 0 {
		t.Fatalf("a change made before the process started was measured (%d samples)", n)
	}
	if got := gaugeValue(t, importedServices) - services0; got != 1 {
		t.Fatalf("imported services moved by %v, want 1", got)
	}

	// A new change is measured once, however often it is reflected again.
	changed := start.Add(10 * time.Second)
	recs := []registry.Record{record("lag-a", changed), record("lag-b", time.Time{})}
	eps := []discoveryv1.EndpointSlice{slice("lag-a", true, true, false)}
	for i := range 3 {
		o.reflected(imp, nsCreated, recs, isAlive, eps, changed.Add(250*time.Millisecond+time.Duration(i)*time.Second))
	}
	if n, sum := lagSamples(t, "lag-a"); n != 1 || sum != 0.25 {
		t.Fatalf("lag of lag-a: %d samples summing to %vs, want 1 of 0.25s", n, sum)
	}
	if n, _ := lagSamples(t, "lag-b"); n != 0 {
		t.Fatalf("a record without a time was measured")
	}
	if ready := gaugeValue(t, importedEndpoints.WithLabelValues("lag-a", "true")); ready != 2 {
		t.Fatalf("ready endpoints of lag-a: %v, want 2", ready)
	}
	if notReady := gaugeValue(t, importedEndpoints.WithLabelValues("lag-a", "false")); notReady != 1 {
		t.Fatalf("not ready endpoints of lag-a: %v, want 1", notReady)
	}

	// An older version read again (an eventually consistent read), then the
	// newer one: nothing new to measure.
	o.reflected(imp, nsCreated, []registry.Record{record("lag-a", changed.Add(-time.Second))}, isAlive, eps, changed.Add(5*time.Second))
	o.reflected(imp, nsCreated, recs, isAlive, eps, changed.Add(6*time.Second))
	if n, _ := lagSamples(t, "lag-a"); n != 1 {
		t.Fatalf("lag of lag-a after re-reading older and newer versions: %d samples, want still 1", n)
	}

	// A clock behind the exporter's gives no negative lag.
	ahead := start.Add(time.Minute)
	o.reflected(imp, nsCreated, []registry.Record{record("lag-a", ahead)}, isAlive, eps, ahead.Add(-time.Second))
	if n, sum := lagSamples(t, "lag-a"); n != 2 || sum != 0.25 {
		t.Fatalf("lag of lag-a after a change from a clock ahead: %d samples summing to %vs, want 2 summing to 0.25s", n, sum)
	}

	// A namespace created after the change: the import could not exist
	// earlier, so nothing is measured.
	late := &mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: "lag-late", Name: "web"}}
	o.reflected(late, start.Add(time.Hour), []registry.Record{record("lag-b", start.Add(time.Minute))}, isAlive, nil, start.Add(time.Hour+time.Second))
	if n, _ := lagSamples(t, "lag-b"); n != 0 {
		t.Fatalf("a change made before its namespace existed was measured")
	}

	// Stale, then back: one event each. A change made while stale is not
	// measured on return (that would time the outage).
	alive["lag-a"] = false
	o.reflected(imp, nsCreated, recs, isAlive, nil, start.Add(2*time.Minute))
	recs = []registry.Record{record("lag-a", start.Add(150*time.Second)), record("lag-b", time.Time{})}
	o.reflected(imp, nsCreated, recs, isAlive, nil, start.Add(3*time.Minute))
	alive["lag-a"] = true
	o.reflected(imp, nsCreated, recs, isAlive, eps, start.Add(4*time.Minute))
	if n, _ := lagSamples(t, "lag-a"); n != 2 {
		t.Fatalf("lag of lag-a after a change made while it was stale: %d samples, want still 2", n)
	}
	// lag-b goes stale, then withdraws its record: it did not come back.
	alive["lag-b"] = false
	o.reflected(imp, nsCreated, recs, isAlive, eps, start.Add(5*time.Minute))
	o.reflected(imp, nsCreated, recs[:1], isAlive, eps, start.Add(6*time.Minute))
	// What a new leader sees first is known: no event for a cluster
	// already stale.
	other := &mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: "lag", Name: "other"}}
	o.reflected(other, nsCreated, []registry.Record{record("lag-b", time.Time{})}, isAlive, nil, start.Add(7*time.Minute))
	o.removed(registry.ServiceKey{Namespace: "lag", Name: "other"})
	var got []string
	for len(rec.Events) > 0 {
		got = append(got, <-rec.Events)
	}
	want := []string{
		"Warning ClusterStale cluster lag-a sends no heartbeat: its endpoints are left out of this import until it does",
		"Normal ClusterReturned cluster lag-a sends heartbeats again: its endpoints are imported",
		"Warning ClusterStale cluster lag-b sends no heartbeat: its endpoints are left out of this import until it does",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events:\n%q\nwant\n%q", got, want)
	}

	// Removed: the gauges drop what the import held.
	o.removed(registry.ServiceKey{Namespace: "lag", Name: "web"})
	o.removed(registry.ServiceKey{Namespace: "lag-late", Name: "web"})
	if ready := gaugeValue(t, importedEndpoints.WithLabelValues("lag-a", "true")); ready != 0 {
		t.Fatalf("ready endpoints of lag-a after removal: %v, want 0", ready)
	}
	if got := gaugeValue(t, importedServices) - services0; got != 0 {
		t.Fatalf("imported services after removal moved by %v, want 0", got)
	}
}
