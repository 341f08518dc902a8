package imports

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// slicesWritten counts writes of imported EndpointSlices by operation
// (create, update, replace, delete): the local cost of propagating changes.
var slicesWritten = prometheus.NewCounterVec(prometheus.CounterOpts{
	Namespace: "clusterset",
	Subsystem: "import",
	Name:      "endpointslice_writes_total",
	Help:      "Writes of imported EndpointSlices, by operation (create, update, replace, delete).",
}, []string{"operation"})

func init() { metrics.Registry.MustRegister(slicesWritten) }
