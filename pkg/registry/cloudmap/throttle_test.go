package cloudmap

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
)

// TestThrottlingRecovers: a proxy in front of moto answers
// ThrottlingException to every third request, and to the first four attempts
// of every RegisterInstance batch; writes and reads are retried with
// jittered backoff, no update is lost, and the throttle counter grows (R2).
func TestThrottlingRecovers(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	proxy := newFaultProxy(t, url)
	ctx := context.Background()
	w := newTestRegistry(t, proxy.URL, "set1", "cls1", func(o *Options) { o.MotoWorkarounds = true })
	rd := newTestRegistry(t, proxy.URL, "set1", "cls2", func(o *Options) { o.MotoWorkarounds = true })
	before := totalThrottled()

	proxy.setThrottle(func(target string, n int) bool { return n%3 == 0 })
	run(t, rd)
	rec := sampleRecord("set1", "cls1", "demo", "web", "10.0.0.1", "10.0.0.2", "10.0.0.3")
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatalf("Publish under throttling: %v", err)
	}
	waitRecords(t, rd, rec.Key(), []registry.Record{rec})

	// A burst of updates, each one throttled several times in a row.
	var streak int
	proxy.setThrottle(func(target string, n int) bool {
		if target == "RegisterInstance" || target == "DeregisterInstance" {
			streak++
			return streak%5 != 0 // four rejections, then one through
		}
		return n%3 == 0
	})
	for i := 0; i < 3; i++ {
		rec.Endpoints[i].Ready = !rec.Endpoints[i].Ready
		rec.Endpoints[i].Terminating = !rec.Endpoints[i].Terminating
		if err := w.Publish(ctx, &rec); err != nil {
			t.Fatalf("update %d under throttling: %v", i, err)
		}
	}
	rec.Endpoints = rec.Endpoints[1:]
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatalf("removal under throttling: %v", err)
	}
	waitRecords(t, rd, rec.Key(), []registry.Record{rec})
	proxy.setThrottle(nil)

	got := totalThrottled() - before
	if got < float64(proxy.throttled.Load()) || got == 0 {
		t.Fatalf("clusterset_cloudmap_throttled_requests_total grew by %v, the proxy throttled %d requests", got, proxy.throttled.Load())
	}
	t.Logf("throttled %d requests, passed %d; metric grew by %v", proxy.throttled.Load(), proxy.passed.Load(), got)
}

func totalThrottled() float64 {
	var sum float64
	for _, op := range []string{"ListNamespaces", "ListServices", "GetService", "CreateHttpNamespace", "GetOperation",
		"CreateService", "ListInstances", "RegisterInstance", "DeregisterInstance", "DiscoverInstances", "DiscoverInstancesRevision"} {
		sum += testutil.ToFloat64(throttledTotal.WithLabelValues(op))
	}
	return sum
}

// TestOutageKeepsView: while Cloud Map is unreachable the view keeps its
// records, Publish fails with an error, and everything converges after (R2).
func TestOutageKeepsView(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	proxy := newFaultProxy(t, url)
	ctx := context.Background()
	w := newTestRegistry(t, proxy.URL, "set1", "cls1", func(o *Options) { o.MaxAttempts = 3 })
	rd := newTestRegistry(t, proxy.URL, "set1", "cls2")
	run(t, rd)
	rec := sampleRecord("set1", "cls1", "demo", "web", "10.0.0.1")
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, rd, rec.Key(), []registry.Record{rec})
	proxy.setDown(true)
	upd := rec
	upd.Endpoints = nil
	if err := w.Publish(ctx, &upd); err == nil {
		t.Fatal("Publish during an outage succeeded")
	}
	time.Sleep(time.Second) // several failed polls
	got, err := rd.Records(rec.Key())
	if err != nil || !equalRecords(got, []registry.Record{rec}) {
		t.Fatalf("view changed during the outage: %v %v", got, err)
	}
	proxy.setDown(false)
	if err := w.Publish(ctx, &upd); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, rd, rec.Key(), []registry.Record{upd})
}

// TestCallRate checks the steady-state call-rate model of docs/cloudmap.md:
// once synced, a poll with no change costs one ListNamespaces, one
// ListServices page and one DiscoverInstancesRevision per service; no
// DiscoverInstances until a revision moves or FullResyncPeriod passes; a
// change in one service costs one DiscoverInstances.
func TestCallRate(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	const services = 12
	w := newTestRegistry(t, url, "set1", "cls1", func(o *Options) { o.MotoWorkarounds = true })
	rd := newTestRegistry(t, url, "set1", "cls2", func(o *Options) {
		o.PollInterval = 250 * time.Millisecond
		o.FullResyncPeriod = time.Hour
	})
	var recs []registry.Record
	for i := 0; i < services; i++ {
		rec := sampleRecord("set1", "cls1", "demo", "svc-"+string(rune('a'+i)), "10.0.0.1")
		if err := w.Publish(ctx, &rec); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	run(t, rd)
	waitRecords(t, rd, recs[services-1].Key(), recs[services-1:])

	time.Sleep(300 * time.Millisecond)
	c0 := rd.calls.snapshot()
	time.Sleep(2 * time.Second)
	c1 := rd.calls.snapshot()
	polls := c1["ListNamespaces"] - c0["ListNamespaces"]
	if polls < 4 {
		t.Fatalf("only %d polls in 2s", polls)
	}
	if d := c1["ListServices"] - c0["ListServices"]; d != polls {
		t.Errorf("ListServices: %d calls in %d polls", d, polls)
	}
	if d := c1["DiscoverInstancesRevision"] - c0["DiscoverInstancesRevision"]; d < (polls-1)*services || d > (polls+1)*services {
		t.Errorf("DiscoverInstancesRevision: %d calls in %d polls of %d services", d, polls, services)
	}
	for _, op := range []string{"DiscoverInstances", "GetService", "ListInstances"} {
		if d := c1[op] - c0[op]; d != 0 {
			t.Errorf("%s: %d calls in a steady state", op, d)
		}
	}
	t.Logf("steady state: %d polls, calls %v", polls, diff(c1, c0))

	// One change: one full read of that service only.
	recs[3].Endpoints[0].Ready = false
	if err := w.Publish(ctx, &recs[3]); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, rd, recs[3].Key(), recs[3:4])
	time.Sleep(600 * time.Millisecond)
	if d := rd.calls.snapshot()["DiscoverInstances"] - c1["DiscoverInstances"]; d != 1 {
		t.Errorf("one changed service cost %d DiscoverInstances, want 1", d)
	}
}

func diff(a, b map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range a {
		if d := v - b[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}
