package export

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	// registryWrites counts this cluster's writes to the registry by
	// operation (publish, withdraw) and result (success, error).
	registryWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "clusterset",
		Subsystem: "export",
		Name:      "registry_writes_total",
		Help:      "Writes of this cluster's service records to the registry, by operation (publish, withdraw) and result (success, error).",
	}, []string{"operation", "result"})
	// publishSkipped counts reconciles that found the registry already up to
	// date and so made no call: the point of diffing before writing.
	publishSkipped = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "clusterset",
		Subsystem: "export",
		Name:      "publish_skipped_total",
		Help:      "Reconciles of a ServiceExport whose record was unchanged, so no registry call was made.",
	})
)

func init() {
	metrics.Registry.MustRegister(registryWrites, publishSkipped)
}

func countWrite(op string, err error) {
	result := "success"
	if err != nil {
		result = "error"
	}
	registryWrites.WithLabelValues(op, result).Inc()
}
