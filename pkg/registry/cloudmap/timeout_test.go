package cloudmap

import (
	"context"
	"testing"
	"time"

	"github.com/clusterset/clusterset/internal/blackhole"
)

// A Cloud Map endpoint that accepts connections and never answers fails each
// call within one RequestTimeout instead of holding it forever: an attempt
// that timed out is not retried at once, whatever MaxAttempts says.
func TestEndpointThatNeverAnswersTimesOut(t *testing.T) {
	r := newTestRegistry(t, "http://"+blackhole.Start(t), "set", "cls-a", func(o *Options) {
		o.RequestTimeout = 300 * time.Millisecond
		o.MaxAttempts = 10
	})
	rec := sampleRecord("set", "cls-a", "ns", "web", "10.0.0.1")
	for name, call := range map[string]func(context.Context) error{
		"Publish":   func(ctx context.Context) error { return r.Publish(ctx, &rec) },
		"Withdraw":  func(ctx context.Context) error { return r.Withdraw(ctx, rec.Key()) },
		"Heartbeat": func(ctx context.Context) error { return r.Heartbeat(ctx) },
	} {
		start := time.Now()
		if err := call(context.Background()); err == nil {
			t.Errorf("%s against an endpoint that never answers: no error", name)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s took %v, want about the 300ms request timeout (a timed-out attempt is not retried)", name, took)
		}
	}
}
