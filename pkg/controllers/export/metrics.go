package export

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/registry"
)

var (
	// publishSkipped counts reconciles whose record had not changed since the
	// last publish: the backend's Publish then writes nothing and makes no
	// call (registry.Registry).
	publishSkipped = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "clusterset",
		Subsystem: "export",
		Name:      "publish_skipped_total",
		Help:      "Reconciles of a ServiceExport whose record was unchanged, so the registry backend wrote nothing.",
	})
	exportedServices = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "clusterset_exported_services",
		Help: "Services this cluster has a record of in the registry, as counted by the replica that leads (a standby reports 0).",
	})
	exportedEndpoints = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "clusterset_exported_endpoints",
		Help: "Endpoints in this cluster's records in the registry, by readiness (ready: true or false).",
	}, []string{"ready"})
	exportConflicts = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "clusterset_export_conflicts",
		Help: "ServiceExports of this cluster with Conflict=True, by the condition's reason (KEP-1645 conflict resolution).",
	}, []string{"reason"})
)

func init() {
	metrics.Registry.MustRegister(publishSkipped, exportedServices, exportedEndpoints, exportConflicts)
}

// exportStats keeps what the export gauges count, per service, so that each
// change moves the gauges by its difference. Several controllers in one
// process (the integration tests) add up.
type exportStats struct {
	mu        sync.Mutex
	exported  map[registry.ServiceKey][2]int // ready, not ready endpoints
	conflicts map[registry.ServiceKey]mcsv1beta1.ServiceExportConditionReason
}

// setExported records that rec is this cluster's record of key now; nil: it
// has none.
func (s *exportStats) setExported(key registry.ServiceKey, rec *registry.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exported == nil {
		s.exported = map[registry.ServiceKey][2]int{}
	}
	old, had := s.exported[key]
	var now [2]int
	if rec != nil {
		ready := readyEndpoints(rec.Endpoints)
		now = [2]int{ready, len(rec.Endpoints) - ready}
		s.exported[key] = now
	} else {
		delete(s.exported, key)
	}
	switch {
	case had && rec == nil:
		exportedServices.Dec()
	case !had && rec != nil:
		exportedServices.Inc()
	}
	exportedEndpoints.WithLabelValues("true").Add(float64(now[0] - old[0]))
	exportedEndpoints.WithLabelValues("false").Add(float64(now[1] - old[1]))
}

// setConflict records whether key's export is in conflict, and why.
func (s *exportStats) setConflict(key registry.ServiceKey, reason mcsv1beta1.ServiceExportConditionReason, conflicting bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conflicts == nil {
		s.conflicts = map[registry.ServiceKey]mcsv1beta1.ServiceExportConditionReason{}
	}
	old, had := s.conflicts[key]
	if had && conflicting && old == reason {
		return
	}
	if had {
		exportConflicts.WithLabelValues(string(old)).Dec()
		delete(s.conflicts, key)
	}
	if conflicting {
		exportConflicts.WithLabelValues(string(reason)).Inc()
		s.conflicts[key] = reason
	}
}
