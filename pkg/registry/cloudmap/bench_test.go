//go:build bench

package cloudmap

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
)

// BenchmarkChangeCost measures what one endpoint change costs across a
// clusterset of two members on Cloud Map (moto), at the default Options,
// when the namespace of the changed service holds 1, 100 or 500 services
// (BENCH_CHANGE_SERVICES, comma-separated, sets other sizes):
//
//   - one op adds an endpoint to a random service of the namespace, or
//     removes it again, through cls1's Publish, after an untimed pause of
//     20ms plus up to one PollInterval (so that changes land anywhere in the
//     poll cycle), and waits until every other member's view shows it;
//   - calls/change: the registry calls of every member from the first op
//     until no reader checks anything any more (announcements, hot
//     namespaces), minus the idle cost of each member (one
//     DiscoverInstancesRevision per poll, and ListNamespaces and
//     ListServices per sweep, every minute), per op; cls1-calls/change is
//     the writer's share, reader-calls/change the mean of each other
//     member's;
//   - p50-ms, p95-ms, p99-ms, max-ms: from the Publish call to the last
//     reader's view showing the change (nearest rank).
//
// Run it with `make bench`, or alone:
//
//	go test -tags bench -run '^$' -bench BenchmarkChangeCost -benchtime 30x ./pkg/registry/cloudmap/
func BenchmarkChangeCost(b *testing.B) {
	sizes := []int{1, 100, 500}
	if v := os.Getenv("BENCH_CHANGE_SERVICES"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				b.Fatalf("BENCH_CHANGE_SERVICES=%q: want positive integers separated by commas", v)
			}
			sizes = append(sizes, n)
		}
	}
	for _, size := range sizes {
		b.Run(fmt.Sprintf("services-%d", size), func(b *testing.B) { benchChangeCost(b, size, 2) })
	}
}

// BenchmarkChangeCostMembers is BenchmarkChangeCost with 100 services in the
// namespace and 2, 4, 6 or 10 members (one writer, the others readers), to
// check the model that each further member adds its beacon read and its
// read of the service (docs/cloudmap.md):
//
//	go test -tags bench -run '^$' -bench BenchmarkChangeCostMembers -benchtime 30x ./pkg/registry/cloudmap/
func BenchmarkChangeCostMembers(b *testing.B) {
	for _, members := range []int{2, 4, 6, 10} {
		b.Run(fmt.Sprintf("members-%d", members), func(b *testing.B) { benchChangeCost(b, 100, members) })
	}
}

// benchChangeCost runs one size of BenchmarkChangeCost: members members
// (cls1 writes, the others read), size services in the namespace.
func benchChangeCost(b *testing.B, size, members int) {
	url := cloudmaptest.StartMoto(b)
	ctx := context.Background()
	member := func(cluster string) *Registry {
		r, err := New(cloudmaptest.Config(), Options{
			ClusterSetID: "set1", ClusterID: cluster, Endpoint: url,
			MotoWorkarounds: true, Logger: funcr.New(func(string, string) {}, funcr.Options{}),
			// Each service is a marker and an instance per port of its
			// endpoint (2), 2 more while one is changed: past 500
			// services the AWS default quota (2,000 per namespace) is
			// raised, as an account holding them would have it.
			MaxInstancesPerNamespace: max(2000, 5*size),
		})
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	w := member("cls1")
	readers := make([]*Registry, members-1)
	for i := range readers {
		readers[i] = member(fmt.Sprintf("cls%d", i+2))
	}
	recs := publishServices(b, w, "bench", size)
	run(b, w)
	for _, rd := range readers {
		run(b, rd)
		for i := range recs {
			waitRecords(b, rd, recs[i].Key(), recs[i:i+1])
		}
	}
	waitSettled := func() {
		deadline := time.Now().Add(2 * time.Minute)
		for _, rd := range readers {
			for checking(rd) {
				if time.Now().After(deadline) {
					b.Fatalf("%s never stopped checking", rd.opts.ClusterID)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	// counts returns the calls of rs so far, added up, less their idle
	// calls: one DiscoverInstancesRevision per poll, and per sweep one
	// ListNamespaces and one ListServices (one page: moto does not page,
	// and no service is new, so the sweep checks none).
	counts := func(rs ...*Registry) int {
		net := 0
		for _, r := range rs {
			r.pollMu.Lock()
			for _, n := range r.calls.snapshot() {
				net += n
			}
			net -= int(r.ps.polls + 2*r.ps.sweeps)
			r.pollMu.Unlock()
		}
		return net
	}
	waitSettled()
	w0, r0 := counts(w), counts(readers...)

	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		time.Sleep(20*time.Millisecond + rand.N(w.opts.PollInterval))
		rec := &recs[rand.N(len(recs))]
		if len(rec.Endpoints) == 1 {
			ep := rec.Endpoints[0]
			ep.Address = "10.0.1.1"
			rec.Endpoints = append(rec.Endpoints, ep)
		} else {
			rec.Endpoints = rec.Endpoints[:1]
		}
		// The time of the change, as the export controller sets it on
		// every change it publishes (the marker's RECORD_CHANGED, at
		// millisecond precision).
		rec.Changed = time.Now().UTC().Truncate(time.Millisecond)
		b.StartTimer()
		start := time.Now()
		if err := w.Publish(ctx, rec); err != nil {
			b.Fatal(err)
		}
		for _, rd := range readers {
			for {
				got, _ := rd.Records(rec.Key())
				if len(got) == 1 && registry.SameContent(&got[0], rec) && got[0].Changed.Equal(rec.Changed) {
					break
				}
				if time.Since(start) > time.Minute {
					b.Fatalf("%s did not see the change of %s", rd.opts.ClusterID, rec.Key())
				}
				time.Sleep(2 * time.Millisecond)
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	waitSettled()
	wNet := float64(counts(w) - w0)
	rNet := float64(counts(readers...) - r0)
	n := float64(b.N)
	b.ReportMetric((wNet+rNet)/n, "calls/change")
	b.ReportMetric(wNet/n, "cls1-calls/change")
	b.ReportMetric(rNet/n/float64(len(readers)), "reader-calls/change")
	slices.Sort(lat)
	pct := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(lat)))) - 1
		return float64(lat[max(i, 0)].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.95), "p95-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(1), "max-ms")
}
