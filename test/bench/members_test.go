//go:build bench

package bench

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/internal/apicalls"
	"github.com/clusterset/clusterset/internal/promtext"
	"github.com/clusterset/clusterset/internal/testenv"
)

// BenchmarkMembers measures the hub API server's load as the clusterset
// grows: for each size in BENCH_MEMBERS (comma-separated, default 2,5,10),
// a hub control plane and that many member control planes, each running
// the controllers in this process with the flags' defaults (heartbeat 10s).
//
// It reports, from the hub's own /metrics (process_cpu_seconds_total,
// apiserver_request_total):
//   - hub-idle-cpu-%, hub-idle-requests/s: over BENCH_MEMBERS_IDLE (default
//     30s) with nothing changing, once the members have settled;
//   - import-all-s: cls1 exports BENCH_MEMBERS_SERVICES services (default
//     100, 3 endpoints each) at once, until every member imports them all;
//   - hub-burst-cpu-s, hub-burst-requests: the hub's CPU time and requests
//     over that burst.
//
// One op is the whole scenario; run it with -benchtime 1x:
//
//	go test -tags bench -run '^$' -bench BenchmarkMembers -benchtime 1x -timeout 60m ./test/bench/
func BenchmarkMembers(b *testing.B) {
	sizes := envSizes(b, "BENCH_MEMBERS", []int{2, 5, 10}, 0)
	services := envInt(b, "BENCH_MEMBERS_SERVICES", 100)
	idle := time.Duration(envInt(b, "BENCH_MEMBERS_IDLE", 30)) * time.Second
	for _, n := range sizes {
		b.Run(fmt.Sprintf("hub/members-%d", n), func(b *testing.B) {
			if b.N > 1 {
				b.Skip("one op is the whole scenario: run with -benchtime 1x")
			}
			b.StopTimer()
			hubCP := testenv.Start(b)
			var members []*member
			for i := range n {
				cp := testenv.Start(b)
				m := &member{name: fmt.Sprintf("cls%d", i+1), admin: cp.Client, calls: &counter{}, api: &apicalls.Recorder{}, config: cp.Config}
				startController(b, cp.Config, m, hubFactory(b, hubCP, m))
				mustCreate(b, m.admin, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
				members = append(members, m)
			}
			fmt.Fprintf(os.Stderr, "%s: %d members started; 15 s for their first heartbeats\n", b.Name(), n)
			time.Sleep(15 * time.Second) // first heartbeats, views synced

			cpu0, req0 := hubLoad(b, hubCP.Config)
			fmt.Fprintf(os.Stderr, "%s: measuring the idle hub for %v\n", b.Name(), idle)
			time.Sleep(idle)
			cpu1, req1 := hubLoad(b, hubCP.Config)
			b.ReportMetric(100*(cpu1-cpu0)/idle.Seconds(), "hub-idle-cpu-%")
			b.ReportMetric((req1-req0)/idle.Seconds(), "hub-idle-requests/s")

			e := &env{cls1: members[0]}
			exports, want := e.servicesToExport(b, "m", services)
			cpu1, req1 = hubLoad(b, hubCP.Config) // the burst from here
			b.StartTimer()
			t0 := time.Now()
			mustCreate(b, members[0].admin, exports...)
			for _, m := range members {
				waitImported(b, m, want, t0)
			}
			took := time.Since(t0)
			b.StopTimer()
			cpu2, req2 := hubLoad(b, hubCP.Config)
			b.ReportMetric(took.Seconds(), "import-all-s")
			b.ReportMetric(cpu2-cpu1, "hub-burst-cpu-s")
			b.ReportMetric(req2-req1, "hub-burst-requests")
			fmt.Fprintf(os.Stderr, "%s: idle hub %.1f%% CPU, %.2f requests/s; %d services imported by all in %v, hub %.1f CPU-s and %.0f requests\n",
				b.Name(), 100*(cpu1-cpu0)/idle.Seconds(), (req1-req0)/idle.Seconds(), services, took.Round(100*time.Millisecond), cpu2-cpu1, req2-req1)
		})
	}
}

// hubLoad reads the hub API server's CPU seconds and served requests so far
// from its /metrics.
func hubLoad(b *testing.B, cfg *rest.Config) (cpuSeconds, requests float64) {
	scraped, err := apiServerMetrics(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return promtext.Sum(scraped, "process_cpu_seconds_total", nil), promtext.Sum(scraped, "apiserver_request_total", nil)
}

// waitImported waits until m imports every service of want from cls1 with
// exactly its addresses (sorted, space-separated), polling m's API server.
func waitImported(b *testing.B, m *member, want map[string]string, t0 time.Time) {
	printed := time.Now()
	for {
		var list discoveryv1.EndpointSliceList
		if err := m.admin.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{mcsv1beta1.LabelSourceCluster: "cls1"}); err != nil {
			b.Fatal(err)
		}
		got := map[string][]string{}
		for _, s := range list.Items {
			for _, ep := range s.Endpoints {
				got[s.Labels[mcsv1beta1.LabelServiceName]] = append(got[s.Labels[mcsv1beta1.LabelServiceName]], ep.Addresses...)
			}
		}
		done := 0
		for name, ips := range want {
			a := got[name]
			sort.Strings(a)
			if strings.Join(a, " ") == ips {
				done++
			}
		}
		if done == len(want) {
			return
		}
		if time.Since(t0) > 5*time.Minute {
			b.Fatalf("%s imports %d of %d services after 5m", m.name, done, len(want))
		}
		if time.Since(printed) >= 5*time.Second {
			printed = time.Now()
			fmt.Fprintf(os.Stderr, "%s: %s imports %d/%d after %v\n", b.Name(), m.name, done, len(want), time.Since(t0).Round(time.Second))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
