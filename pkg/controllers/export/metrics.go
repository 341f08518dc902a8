package export

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
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
	metrics.Registry.MustRegister(publishSkipped)
}
