package imports

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/events"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/registry"
)

// Reasons of the events on ServiceImports.
const (
	reasonImported        = "Imported"
	reasonClustersChanged = "ClustersChanged"
	reasonRemoved         = "Removed"
	reasonClusterStale    = "ClusterStale"
	reasonClusterReturned = "ClusterReturned"
)

// observer remembers, per imported service, what this process last saw:
// each source record's Changed time (for the propagation lag), the clusters
// judged stale (for events) and the endpoint counts (for the gauges). It is
// empty after a restart, and so is a standby's until it leads: changes older
// than its first reconcile are not measured, and what it first sees of a
// service (stale clusters included) is taken as known, without events.
type observer struct {
	started time.Time // when this replica began to lead (else its first reflected call)
	rec     events.EventRecorder

	mu    sync.Mutex
	byKey map[registry.ServiceKey]*observed
}

type observed struct {
	changed   map[string]time.Time // source cluster → Changed last reflected
	stale     map[string]bool      // source clusters judged stale
	endpoints map[[2]string]int    // (source cluster, ready) → endpoints
}

func newObserver(rec events.EventRecorder) *observer {
	return &observer{rec: rec, byKey: map[registry.ServiceKey]*observed{}}
}

// lead marks now as the start of this replica's lead: changes before it are
// not measured. The manager calls it once elected (see Register).
func (o *observer) lead(now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.started = now
}

// reflected is called once imp and its slices reflect records. It observes
// the propagation lag of every record whose Changed this process has not
// seen reflected yet, as long as the change happened after this process
// started and after the namespace was created (an import that could not
// exist earlier measures nothing), updates the gauges, and tells the
// ServiceImport which source clusters went stale or came back.
func (o *observer) reflected(imp *mcsv1beta1.ServiceImport, nsCreated time.Time, records []registry.Record, alive func(string) bool, eps []discoveryv1.EndpointSlice, now time.Time) {
	key := registry.ServiceKey{Namespace: imp.Namespace, Name: imp.Name}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.started.IsZero() {
		o.started = now
	}
	st, known := o.byKey[key]
	if !known {
		st = &observed{changed: map[string]time.Time{}, stale: map[string]bool{}, endpoints: map[[2]string]int{}}
		o.byKey[key] = st
		importedServices.Inc()
	}
	stale := map[string]bool{}
	present := map[string]bool{}
	for _, r := range records {
		present[r.ClusterID] = true
		// Only a newer time is a new version: an eventually consistent read
		// may show an older one again, which was measured already.
		if r.Changed.IsZero() || !r.Changed.After(st.changed[r.ClusterID]) {
			if !alive(r.ClusterID) {
				stale[r.ClusterID] = true
			}
			continue
		}
		st.changed[r.ClusterID] = r.Changed
		if !alive(r.ClusterID) {
			// Not reflected (its endpoints are left out), and not measured
			// when the cluster returns: that would time the outage.
			stale[r.ClusterID] = true
			continue
		}
		if r.Changed.After(o.started) && !nsCreated.After(r.Changed) {
			propagationLag.WithLabelValues(r.ClusterID).Observe(max(now.Sub(r.Changed), 0).Seconds())
		}
	}
	if known {
		for _, c := range slicesSorted(stale) {
			if !st.stale[c] {
				o.rec.Eventf(imp, nil, corev1.EventTypeWarning, reasonClusterStale, "Import",
					"cluster %s sends no heartbeat: its endpoints are left out of this import until it does", c)
			}
		}
		for _, c := range slicesSorted(st.stale) {
			if !stale[c] && present[c] {
				o.rec.Eventf(imp, nil, corev1.EventTypeNormal, reasonClusterReturned, "Import",
					"cluster %s sends heartbeats again: its endpoints are imported", c)
			}
		}
	}
	st.stale = stale

	counts := map[[2]string]int{}
	for i := range eps {
		cluster := eps[i].Labels[mcsv1beta1.LabelSourceCluster]
		for _, ep := range eps[i].Endpoints {
			counts[[2]string{cluster, fmt.Sprint(ep.Conditions.Ready == nil || *ep.Conditions.Ready)}]++
		}
	}
	o.setEndpoints(st, counts)
}

// removed forgets key, whose import is gone.
func (o *observer) removed(key registry.ServiceKey) {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := o.byKey[key]
	if st == nil {
		return
	}
	o.setEndpoints(st, nil)
	delete(o.byKey, key)
	importedServices.Dec()
}

// setEndpoints moves the endpoint gauges from st's counts to counts.
func (o *observer) setEndpoints(st *observed, counts map[[2]string]int) {
	for k, n := range st.endpoints {
		if counts[k] != n {
			importedEndpoints.WithLabelValues(k[0], k[1]).Add(float64(counts[k] - n))
		}
	}
	for k, n := range counts {
		if _, ok := st.endpoints[k]; !ok {
			importedEndpoints.WithLabelValues(k[0], k[1]).Add(float64(n))
		}
	}
	st.endpoints = counts
}

func slicesSorted(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }
