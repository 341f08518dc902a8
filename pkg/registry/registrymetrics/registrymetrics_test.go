package registrymetrics

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/registrytest"
)

// failing fails every write, to show that errors are counted apart.
type failing struct{ registry.Registry }

func (failing) Publish(context.Context, *registry.Record) error { return errors.New("refused") }

// Each counted call moves its own series by one, errors apart from
// successes, and the wrapper passes the backend's result through.
func TestWrapCountsEachCall(t *testing.T) {
	ctx := context.Background()
	store := registrytest.NewMemoryStore()
	mem := Wrap("memory", store.Registry("set", "cls1"))
	rec := &registry.Record{ClusterSetID: "set", ClusterID: "cls1", Namespace: "demo", Name: "svc", Spec: registry.ServiceSpec{Type: registry.ClusterSetIP}}
	count := func(op, result string) float64 {
		return testutil.ToFloat64(callsTotal.WithLabelValues("memory", op, result))
	}

	if err := mem.Publish(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := mem.Withdraw(ctx, rec.Key()); err != nil {
		t.Fatal(err)
	}
	if err := mem.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := mem.Liveness(ctx); err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{OpPublish, OpWithdraw, OpHeartbeat, OpLiveness} {
		if got := count(op, "ok"); got != 1 {
			t.Errorf("%s ok = %v, want 1", op, got)
		}
	}
	bad := Wrap("memory", failing{store.Registry("set", "cls2")})
	if err := bad.Publish(ctx, rec); err == nil || err.Error() != "refused" {
		t.Errorf("Publish through the wrapper = %v, want the backend's error", err)
	}
	if got := count(OpPublish, "error"); got != 1 {
		t.Errorf("publish error = %v, want 1", got)
	}
	if got := testutil.CollectAndCount(callDuration); got != 4 {
		t.Errorf("%d duration series, want one per operation (4)", got)
	}
}
