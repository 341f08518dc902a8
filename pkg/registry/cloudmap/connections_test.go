package cloudmap

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
)

// TestConnectionsReused publishes as the export controller's workers do
// under load, many services at once with several calls in flight each, and
// checks that the registry's calls reuse the connections that the first
// round opened instead of opening new ones (keepIdleConnections). On the way
// to real Cloud Map every new connection is a TLS handshake. With the SDK's
// default of 10 idle connections per host, the rounds after the first opened
// a new connection for about a quarter of their calls (198 for 774).
func TestConnectionsReused(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	const (
		workers   = 16 // Publish calls at once, twice the default --workers
		endpoints = 4  // calls in flight per Publish at the default Concurrency
	)
	w := newTestRegistry(t, url, "cs-conns", "cls1", func(o *Options) { o.Concurrency = endpoints })
	recs := make([]registry.Record, workers)
	publishAll := func(round int) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for i := range recs {
			addrs := make([]string, endpoints)
			for j := range addrs {
				addrs[j] = fmt.Sprintf("10.%d.%d.%d", round, i, j+1)
			}
			recs[i] = sampleRecord("cs-conns", "cls1", "conns", fmt.Sprintf("svc-%02d", i), addrs...)
			wg.Go(func() {
				if err := w.Publish(context.Background(), &recs[i]); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}

	publishAll(1) // opens the connections the load needs
	calls0, conns0 := total(w.calls.snapshot()), cloudmaptest.Connections(url)
	for round := 2; round <= 4; round++ {
		publishAll(round)
	}
	calls, opened := total(w.calls.snapshot())-calls0, cloudmaptest.Connections(url)-conns0
	t.Logf("first round: %d calls, %d connections; next three rounds: %d calls, %d new connections", calls0, conns0, calls, opened)
	if calls < 3*workers*endpoints {
		t.Fatalf("the rounds made %d calls, fewer than the %d endpoint registrations they publish", calls, 3*workers*endpoints)
	}
	if opened*10 > int64(calls) {
		t.Errorf("%d calls opened %d new connections after the first round; want them to reuse its %d (at most one new connection per 10 calls)", calls, opened, conns0)
	}
}
