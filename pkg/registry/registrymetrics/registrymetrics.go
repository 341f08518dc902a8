// Package registrymetrics wraps any registry.Registry so that every call
// that reaches the registry is counted and timed, by backend and operation,
// in the controller's Prometheus registry (docs/metrics.md). Backends then
// count only what is particular to them (Cloud Map's attempts, retries and
// throttling), and controllers count nothing.
package registrymetrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/clusterset/clusterset/pkg/registry"
)

// Operations, the values of the operation label: the Registry methods that
// read or write the registry itself. Records, Keys and HasSynced read the
// in-memory view and are not counted; Run is counted by the backend.
const (
	OpPublish   = "publish"
	OpWithdraw  = "withdraw"
	OpHeartbeat = "heartbeat"
	OpLiveness  = "liveness"
)

var (
	callsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "clusterset_registry_calls_total",
		Help: "Calls of this cluster's registry by backend (hub, cloudmap), operation (publish, withdraw, heartbeat, liveness) and result (ok, error). One call may make several API requests.",
	}, []string{"backend", "operation", "result"})
	callDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "clusterset_registry_call_duration_seconds",
		Help:    "Duration of calls of this cluster's registry in seconds, retries included, by backend and operation.",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"backend", "operation"})
)

func init() {
	metrics.Registry.MustRegister(callsTotal, callDuration)
}

// Wrap returns r with its calls counted under backend ("hub", "cloudmap").
func Wrap(backend string, r registry.Registry) registry.Registry {
	return &instrumented{Registry: r, backend: backend}
}

// instrumented embeds the backend, so methods it does not override (the
// view reads and Run) go straight to it.
type instrumented struct {
	registry.Registry
	backend string
}

func (i *instrumented) observe(op string, start time.Time, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	callsTotal.WithLabelValues(i.backend, op, result).Inc()
	callDuration.WithLabelValues(i.backend, op).Observe(time.Since(start).Seconds())
}

func (i *instrumented) Publish(ctx context.Context, rec *registry.Record) error {
	start := time.Now()
	err := i.Registry.Publish(ctx, rec)
	i.observe(OpPublish, start, err)
	return err
}

func (i *instrumented) Withdraw(ctx context.Context, key registry.ServiceKey) error {
	start := time.Now()
	err := i.Registry.Withdraw(ctx, key)
	i.observe(OpWithdraw, start, err)
	return err
}

func (i *instrumented) Heartbeat(ctx context.Context) error {
	start := time.Now()
	err := i.Registry.Heartbeat(ctx)
	i.observe(OpHeartbeat, start, err)
	return err
}

func (i *instrumented) Liveness(ctx context.Context) (map[string]registry.Heartbeat, error) {
	start := time.Now()
	out, err := i.Registry.Liveness(ctx)
	i.observe(OpLiveness, start, err)
	return out, err
}
