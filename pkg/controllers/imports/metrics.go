package imports

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	// slicesWritten counts writes of imported EndpointSlices by operation
	// (create, update, replace, delete): the local cost of propagating changes.
	slicesWritten = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "clusterset",
		Subsystem: "import",
		Name:      "endpointslice_writes_total",
		Help:      "Writes of imported EndpointSlices, by operation (create, update, replace, delete).",
	}, []string{"operation"})

	// propagationLag is the time from a change in an exporting cluster
	// (registry.Record.Changed, by that cluster's clock) to this cluster's
	// import reflecting it. Buckets from 5 ms (the hub on one machine) to
	// 2 minutes (Cloud Map's sweep of foreign writes).
	propagationLag = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "clusterset_propagation_lag_seconds",
		Help:    "Seconds from a change of a service in the exporting cluster (the time in its registry record) until this cluster's ServiceImport and EndpointSlices reflect it, by source cluster. Includes the clock offset between the two clusters.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60, 120},
	}, []string{"source_cluster"})

	importedServices = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "clusterset_imported_services",
		Help: "ServiceImports this cluster maintains.",
	})
	importedEndpoints = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "clusterset_imported_endpoints",
		Help: "Endpoints in this cluster's imported EndpointSlices, by source cluster and readiness (ready: true or false). Endpoints of stale clusters are not imported.",
	}, []string{"source_cluster", "ready"})
)

func init() {
	metrics.Registry.MustRegister(slicesWritten, propagationLag, importedServices, importedEndpoints)
}
