package hub_test

import (
	"context"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/clusterset/clusterset/internal/blackhole"
	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/hub"
)

// A hub that accepts connections and never answers fails each call within
// RequestTimeout instead of holding it (and the reconcile or heartbeat that
// made it) forever.
func TestHubThatNeverAnswersTimesOut(t *testing.T) {
	addr := blackhole.Start(t)
	reg, err := hub.New(hub.Options{ClusterSetID: "set", ClusterID: "cls-a", RequestTimeout: 500 * time.Millisecond,
		Config: &rest.Config{Host: "https://" + addr, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}})
	if err != nil {
		t.Fatal(err)
	}
	key := registry.ServiceKey{Namespace: "ns", Name: "web"}
	for name, call := range map[string]func(context.Context) error{
		"Publish":   func(ctx context.Context) error { return reg.Publish(ctx, record("set", "cls-a", key, 1, "")) },
		"Withdraw":  func(ctx context.Context) error { return reg.Withdraw(ctx, key) },
		"Heartbeat": func(ctx context.Context) error { return reg.Heartbeat(ctx) },
		"Liveness":  func(ctx context.Context) error { _, err := reg.Liveness(ctx); return err },
	} {
		start := time.Now()
		err := call(context.Background())
		if err == nil {
			t.Errorf("%s against a hub that never answers: no error", name)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%s took %v, want about the 500ms request timeout", name, took)
		}
	}
}
