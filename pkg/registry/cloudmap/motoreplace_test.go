package cloudmap

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
)

// cancelAfterDeregister is an http.RoundTripper that, once a
// DeregisterInstance has been answered, calls the cancel function it holds
// (the caller's context ends between the two calls of a replacement on
// moto).
type cancelAfterDeregister struct {
	mu     sync.Mutex
	cancel context.CancelFunc
}

func (c *cancelAfterDeregister) arm(cancel context.CancelFunc) {
	c.mu.Lock()
	c.cancel = cancel
	c.mu.Unlock()
}

func (c *cancelAfterDeregister) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || !strings.HasSuffix(req.Header.Get("X-Amz-Target"), ".DeregisterInstance") || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	// The whole answer is read before the context ends: the
	// deregistration happened, and the client sees that it did.
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	c.mu.Lock()
	cancel := c.cancel
	c.cancel = nil
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	return resp, nil
}

// TestMotoReplaceOutlivesItsContext: with MotoWorkarounds, replacing an
// instance is a deregistration and then a registration. A controller that
// stops between the two must not leave the instance missing: a missing
// heartbeat reads as a cluster that never renewed one (TestCLICloudMap's
// silent member failed that way), a missing endpoint as one withdrawn.
func TestMotoReplaceOutlivesItsContext(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	rt := &cancelAfterDeregister{}
	newRegistry := func(cluster string) *Registry {
		cfg := cloudmaptest.Config()
		cfg.HTTPClient = &http.Client{Transport: rt}
		o := newTestRegistry(t, url, "set", cluster).opts
		o.MotoWorkarounds = true
		r, err := New(cfg, o)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	w := newRegistry("cls-a")
	reader := newTestRegistry(t, url, "set", "cls-b")

	t.Run("Heartbeat", func(t *testing.T) {
		if err := w.Heartbeat(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		rt.arm(cancel)
		if err := w.Heartbeat(ctx); err != nil {
			t.Errorf("a heartbeat whose context ended after the deregistration: %v, want the registration done", err)
		}
		if ctx.Err() == nil {
			t.Fatal("the context did not end: the test did not test anything")
		}
		hbs, err := reader.Liveness(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := hbs["cls-a"]; !ok {
			t.Errorf("cls-a has no heartbeat after a renewal whose context ended half-way: %v", hbs)
		}
	})

	t.Run("Publish", func(t *testing.T) {
		rec := sampleRecord("set", "cls-a", "ns", "web", "10.0.0.1")
		if err := w.Publish(context.Background(), &rec); err != nil {
			t.Fatal(err)
		}
		// The same endpoint, no longer ready: the same instance, replaced.
		changed := *rec.DeepCopy()
		changed.Endpoints[0].Ready = false
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		rt.arm(cancel)
		if err := w.Publish(ctx, &changed); err != nil {
			t.Errorf("a publish whose context ended after the deregistration: %v, want the registration done", err)
		}
		if ctx.Err() == nil {
			t.Fatal("the context did not end: the test did not test anything")
		}
		// The reader sees the changed endpoint; with the instance left
		// missing it would see none, and time out.
		run(t, reader)
		waitRecords(t, reader, changed.Key(), []registry.Record{changed})
	})
}
