//go:build bench

// Package bench measures what clusterset claims, on both registry backends:
// how fast a change made in one cluster is visible in another (propagation
// latency), and what it costs in registry calls, per change and when idle.
//
// Two envtest control planes (cls1, cls2) run the real controllers in this
// process (pkg/controllers.Register, as test/integration does); cls1 also
// serves as the hub for the hub backend, moto's server is Cloud Map for the
// cloudmap backend. Registry calls are counted by a RoundTripper wrapped
// around each member's registry client. Run it with `make bench`; see
// docs/benchmarks.md.
package bench

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// BenchmarkClusterset runs, for each backend, on one clusterset:
//
//   - idle: registry calls per second with nothing changing (one op = 1s),
//     measured once the backend has settled after the setup's writes;
//   - endpoint: one op adds or removes one endpoint of the exported
//     Service's EndpointSlice in cls1 and waits until cls2's imported
//     EndpointSlices show it;
//   - export: one op creates a ServiceExport in cls1 (its Service and
//     EndpointSlice already exist) and waits until cls2 imports its endpoint,
//     then deletes the ServiceExport and waits until cls2's imported slices
//     are gone.
//
// ns/op is the mean of the timed propagations (the pauses between ops are
// not timed); the *-ms metrics are percentiles of them; calls/* count both
// members' registry requests over the whole loop, pauses included, and
// net-calls/* subtract the idle rate measured just before.
//
// BENCH_OTHERS=N first exports N other services (3 endpoints each) from cls1
// into the same namespace and waits until cls2 imports them all, so that
// each change happens among N others; the sub-benchmarks are then named
// <backend>/others-N/{idle,endpoint,export}.
func BenchmarkClusterset(b *testing.B) {
	others := envInt(b, "BENCH_OTHERS", 0)
	for _, backend := range []string{"hub", "cloudmap"} {
		b.Run(backend, func(b *testing.B) {
			e := startEnv(b, backend)
			run := b.Run
			if others > 0 {
				e.exportAndWait(b, "other", others)
				run = func(name string, f func(*testing.B)) bool {
					return b.Run(fmt.Sprintf("others-%d/%s", others, name), f)
				}
			}
			run("idle", e.benchIdle)
			run("endpoint", e.benchEndpoint)
			run("export", e.benchExport)
		})
	}
}

// envInt is the positive integer in environment variable name, or def when
// it is unset.
func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// envSizes is the comma-separated list of sizes in environment variable
// name, or def when it is unset. Each size is at least 2 and, when max is
// not 0, at most max.
func envSizes(b *testing.B, name string, def []int, max int) []int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var sizes []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 2 || max != 0 && n > max {
			want := "at least 2"
			if max != 0 {
				want = fmt.Sprintf("from 2 to %d", max)
			}
			b.Fatalf("%s=%q: want sizes %s, comma-separated", name, v, want)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// benchAddress is the k-th distinct IPv4 address of the benchmark's
// endpoints, 10.<base+k/62500>.<k/250%250>.<k%250+1>: k up to 62,499
// per base.
func benchAddress(base, k int) string {
	return fmt.Sprintf("10.%d.%d.%d", base+k/62500, k/250%250, k%250+1)
}

func (e *env) benchIdle(b *testing.B) {
	b.StopTimer()
	if wait := time.Until(e.lastWrite.Add(e.quiet)); wait > 0 {
		time.Sleep(wait)
	}
	m0 := e.mark()
	b.StartTimer()
	for range b.N {
		time.Sleep(time.Second)
	}
	b.StopTimer()
	secs := time.Since(m0.at).Seconds()
	d1, d2 := e.cls1.calls.n.Load()-m0.c1, e.cls2.calls.n.Load()-m0.c2
	e.idleRate, e.idleDone = float64(d1+d2)/secs, true
	b.ReportMetric(e.idleRate, "idle-calls/s")
	b.ReportMetric(float64(d1)/secs, "cls1-idle-calls/s")
	b.ReportMetric(float64(d2)/secs, "cls2-idle-calls/s")
	e.logCalls(b, m0, "s", int(secs+0.5))
}

// settle waits until the readers have stopped checking what the last burst
// of exports changed (exportAndWait: the BENCH_OTHERS services), so that
// those checks do not count as the cost of the changes measured next.
func (e *env) settle() {
	if wait := time.Until(e.settleUntil); wait > 0 {
		time.Sleep(wait)
	}
}

func (e *env) benchEndpoint(b *testing.B) {
	b.StopTimer()
	e.settle()
	defer profileProcess(b)()
	base := []string{"10.1.0.1", "10.1.0.2", "10.1.0.3"}
	var lat []time.Duration
	m0 := e.mark()
	for range b.N {
		e.pause()
		var s discoveryv1.EndpointSlice
		if err := e.cls1.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-1"}, &s); err != nil {
			b.Fatal(err)
		}
		// Alternate: add a new endpoint, then remove it.
		if e.extra == "" {
			e.seq++
			e.extra = fmt.Sprintf("10.2.%d.%d", e.seq/250, e.seq%250+1)
			s.Endpoints = append(s.Endpoints, readyEndpoint(e.extra))
		} else {
			s.Endpoints = slices.DeleteFunc(s.Endpoints, func(ep discoveryv1.Endpoint) bool { return ep.Addresses[0] == e.extra })
			e.extra = ""
		}
		want := append([]string{}, base...)
		if e.extra != "" {
			want = append(want, e.extra)
		}
		sort.Strings(want)

		b.StartTimer()
		t0 := time.Now()
		if err := e.cls1.admin.Update(ctx, &s); err != nil {
			b.Fatal(err)
		}
		e.lastWrite = time.Now()
		seen, err := e.await("web", strings.Join(want, " "), waitTimeout)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, seen.Sub(t0))
	}
	e.reportLatency(b, "", lat)
	e.reportCalls(b, "change", m0)
}

func (e *env) benchExport(b *testing.B) {
	b.StopTimer()
	e.settle()
	// With BENCH_PROFILE_DIR: where the API servers' CPU goes during the
	// first 20 s of exports and withdrawals.
	e.profileAPIServers(b, b.Name(), 20*time.Second)
	var exp, wd []time.Duration
	m0 := e.mark()
	for range b.N {
		e.seq++
		name := fmt.Sprintf("svc-%d", e.seq)
		ip := fmt.Sprintf("10.3.%d.%d", e.seq/250, e.seq%250+1)
		slice := endpointSlice(name, name+"-1", ip)
		mustCreate(b, e.cls1.admin, service(name), slice)
		e.pause()

		b.StartTimer()
		t0 := time.Now()
		mustCreate(b, e.cls1.admin, serviceExport(name))
		e.lastWrite = time.Now()
		seen, err := e.await(name, ip, waitTimeout)
		b.StopTimer()
		if err != nil {
			b.Fatalf("export: %v", err)
		}
		exp = append(exp, seen.Sub(t0))
		e.pause()

		b.StartTimer()
		t0 = time.Now()
		if err := e.cls1.admin.Delete(ctx, serviceExport(name)); err != nil {
			b.Fatal(err)
		}
		e.lastWrite = time.Now()
		seen, err = e.await(name, "", waitTimeout)
		b.StopTimer()
		if err != nil {
			b.Fatalf("withdraw: %v", err)
		}
		wd = append(wd, seen.Sub(t0))
		for _, o := range []client.Object{slice, service(name)} {
			if err := e.cls1.admin.Delete(ctx, o); err != nil {
				b.Fatal(err)
			}
		}
	}
	e.reportLatency(b, "export-", exp)
	e.reportLatency(b, "withdraw-", wd)
	e.reportCalls(b, "cycle", m0)
}

// pause sleeps a random time so that changes land at random points of the
// Cloud Map poll cycle (and of the hub's, for symmetry).
func (e *env) pause() {
	time.Sleep(20*time.Millisecond + rand.N(e.jitterMax))
}

func (e *env) reportLatency(b *testing.B, prefix string, lat []time.Duration) {
	sorted := slices.Clone(lat)
	slices.Sort(sorted)
	b.ReportMetric(percentileMS(sorted, 0.50), prefix+"p50-ms")
	b.ReportMetric(percentileMS(sorted, 0.95), prefix+"p95-ms")
	b.ReportMetric(percentileMS(sorted, 0.99), prefix+"p99-ms")
	b.ReportMetric(percentileMS(sorted, 1), prefix+"max-ms")
}

// reportCalls reports both members' registry requests since m0 per op
// (unit calls/<per>), split by member, and net of the idle rate.
func (e *env) reportCalls(b *testing.B, per string, m0 mark) {
	secs := time.Since(m0.at).Seconds()
	d1, d2 := e.cls1.calls.n.Load()-m0.c1, e.cls2.calls.n.Load()-m0.c2
	n := float64(b.N)
	b.ReportMetric(float64(d1+d2)/n, "calls/"+per)
	b.ReportMetric(float64(d1)/n, "cls1-calls/"+per)
	b.ReportMetric(float64(d2)/n, "cls2-calls/"+per)
	if e.idleDone {
		b.ReportMetric((float64(d1+d2)-e.idleRate*secs)/n, "net-calls/"+per)
	}
	e.logCalls(b, m0, per, b.N)
}

// logCalls logs each member's registry requests since m0 by operation, per
// op (or per second for idle), and checks the Cloud Map count against
// clusterset_cloudmap_requests_total. The first, one-op run of each
// benchmark is a warm-up and logs nothing.
func (e *env) logCalls(b *testing.B, m0 mark, per string, n int) {
	if b.N == 1 {
		return
	}
	b.Logf("cls1 calls/%s: %s", per, e.cls1.calls.since(m0.by1, n))
	b.Logf("cls2 calls/%s: %s", per, e.cls2.calls.since(m0.by2, n))
	if e.backend != "cloudmap" {
		return
	}
	d := e.cls1.calls.n.Load() - m0.c1 + e.cls2.calls.n.Load() - m0.c2
	if m := cloudMapRequestsMetric() - m0.metric; m != float64(d) {
		// The metric counts a request when it ends, the RoundTripper when
		// it starts: requests in flight at the window's edges differ.
		b.Logf("clusterset_cloudmap_requests_total grew by %v, the RoundTrippers counted %d", m, d)
	}
}

// BenchmarkBurst exports many services at once and measures, for each
// backend, how long until cls2 imports every one (export-s), and then, after
// all ServiceExports are deleted at once, until cls2 imports none
// (withdraw-s). Each service is selector-less with one EndpointSlice of 3
// ready endpoints. BENCH_BURST sets the number of services (default 200).
// import-p50-ms … import-max-ms are the percentiles, over the services, of
// the time from a service's own ServiceExport create (they are created one
// after the other) until cls2 imports its addresses; withdraw-p50-ms … the
// same from its delete until cls2 imports none; import-stall-max-s and
// withdraw-stall-max-s the longest time during which no further service
// was done (a reader that imports in waves pauses between them). It also reports the registry calls and the controllers' writes to their
// API servers per service (<member>-calls/service, <member>-writes/service)
// and where the machine's CPU went until all were imported (reportCPU), and
// prints the requests each API server served per service.
// One op is one burst; run it with -benchtime 1x:
//
//	go test -tags bench -run '^$' -bench BenchmarkBurst -benchtime 1x -timeout 30m ./test/bench/
func BenchmarkBurst(b *testing.B) {
	n := envInt(b, "BENCH_BURST", 200)
	for _, backend := range []string{"hub", "cloudmap"} {
		b.Run(fmt.Sprintf("%s/services-%d", backend, n), func(b *testing.B) {
			e := startEnv(b, backend)
			b.ResetTimer()
			for range b.N {
				e.burst(b, n)
			}
		})
	}
}

// servicesToExport creates n selector-less Services named prefix-<seq> in
// cls1, each with one EndpointSlice of 3 ready endpoints, and returns their
// ServiceExports (not created) and, by name, the addresses cls2 should
// import (sorted, space-separated).
func (e *env) servicesToExport(b *testing.B, prefix string, n int) ([]client.Object, map[string]string) {
	want := map[string]string{}
	var exports []client.Object
	for range n {
		e.seq++
		name := fmt.Sprintf("%s-%d", prefix, e.seq)
		ips := make([]string, 3)
		for j := range ips {
			k := e.seq*3 + j
			ips[j] = benchAddress(4, k)
		}
		mustCreate(b, e.cls1.admin, service(name), endpointSlice(name, name+"-1", ips...))
		sort.Strings(ips)
		want[name] = strings.Join(ips, " ")
		exports = append(exports, serviceExport(name))
	}
	return exports, want
}

// exportAndWait exports n new services from cls1 at once and waits until
// cls2 imports them all.
func (e *env) exportAndWait(b *testing.B, prefix string, n int) {
	exports, want := e.servicesToExport(b, prefix, n)
	t0 := time.Now()
	created := createInBackground(e.cls1.admin, exports)
	e.until(b, "imported "+prefix, n, t0, imported(want))
	if c := <-created; c.err != nil {
		b.Fatal(c.err)
	}
	e.lastWrite = time.Now()
	e.settleUntil = e.lastWrite.Add(e.quiet)
}

// imported returns the names of the services of want that cls2 imports
// with exactly their addresses.
func imported(want map[string]string) func(got map[string]string) []string {
	return func(got map[string]string) []string {
		var out []string
		for name, ips := range want {
			if got[name] == ips {
				out = append(out, name)
			}
		}
		return out
	}
}

// until returns how long after t0 done, given what cls2 imports, reached n
// services, and when each service was first done. done returns the names of
// the services that are. It prints progress to stderr every 2s and fails b
// when done stays the same for waitTimeout. It sets e.longestStall.
func (e *env) until(b *testing.B, what string, n int, t0 time.Time, done func(got map[string]string) []string) (time.Duration, map[string]time.Time) {
	first := map[string]time.Time{}
	last, lastAt, printed := -1, t0, time.Time{}
	e.longestStall = 0
	for {
		names := done(e.importedAll())
		now := time.Now()
		for _, name := range names {
			if _, ok := first[name]; !ok {
				first[name] = now
			}
		}
		k := len(names)
		if k != last {
			if last >= 0 { // from the first look: until may start late
				e.longestStall = max(e.longestStall, now.Sub(lastAt))
			}
			last, lastAt = k, now
		}
		if k == n {
			fmt.Fprintf(os.Stderr, "%s %s: %d/%d after %v (longest stall %v)\n", b.Name(), what, k, n, now.Sub(t0).Round(100*time.Millisecond), e.longestStall.Round(100*time.Millisecond))
			return now.Sub(t0), first
		}
		if now.Sub(printed) >= 2*time.Second {
			// Progress as it happens: b.Logf prints only at the end.
			printed = now
			fmt.Fprintf(os.Stderr, "%s %s: %d/%d after %v\n", b.Name(), what, k, n, now.Sub(t0).Round(100*time.Millisecond))
		}
		if now.Sub(lastAt) > waitTimeout {
			b.Fatalf("%s: stuck at %d/%d for %v", what, k, n, waitTimeout)
		}
		select {
		case <-e.changed:
		case <-time.After(time.Second):
		}
	}
}

// sinceEach is, for each service of first, how long after its own start
// (by name) it was first done.
func sinceEach(start, first map[string]time.Time) []time.Duration {
	out := make([]time.Duration, 0, len(first))
	for name, t := range first {
		out = append(out, t.Sub(start[name]))
	}
	return out
}

// reportCPU prints where the machine's CPU went during a burst of n
// services that took d (used, by process: the API servers, etcd, and this
// process, which runs the controllers of both members and the benchmark's
// clients and informers), and reports:
//   - cpu-per-service-ms: all of it, per service;
//   - apiserver-floor-s: what the API servers and etcds used, over the
//     cores this process may use. An estimate of how long the burst would
//     take if they had the machine to themselves and the controllers cost
//     nothing, with this request mix; it includes their background work,
//     and CPU time on shared cores is inflated by contention;
//   - export-over-floor: d over apiserver-floor-s, how much longer the
//     burst took than the API servers' and etcds' CPU alone would. Hosts of
//     the same machine kind differ by up to 2.5x in the floor; this ratio
//     is what to compare between runs on different hosts;
//   - <member>-controlplane-cpu-s: the seconds of each member's API server
//     and etcd, what it would need on a control plane of its own.
func (e *env) reportCPU(b *testing.B, n int, d time.Duration, used map[string]float64) {
	cores := runtime.GOMAXPROCS(0) // the cgroup's CPU limit, when it has one
	each, total := formatCPU(used, d)
	floor := controlPlaneCPU(used, "") / float64(cores)
	fmt.Fprintf(os.Stderr, "burst: CPU until imported: %.1f s (%.2f cores): %s; the API servers' and etcds' share alone takes %.1f s on %d cores\n",
		total, total/d.Seconds(), each, floor, cores)
	b.ReportMetric(total/float64(n)*1000, "cpu-per-service-ms")
	b.ReportMetric(floor, "apiserver-floor-s")
	if floor > 0 {
		b.ReportMetric(d.Seconds()/floor, "export-over-floor")
	}
	for _, m := range []*member{e.cls1, e.cls2} {
		b.ReportMetric(controlPlaneCPU(used, m.name), m.name+"-controlplane-cpu-s")
	}
}

func (e *env) burst(b *testing.B, n int) {
	b.StopTimer()
	exports, want := e.servicesToExport(b, "burst", n)
	e.cls1.api.Reset()
	e.cls2.api.Reset()
	e.profileAPIServers(b, b.Name(), 20*time.Second)
	stopProfile := profileSelf(b.Name(), 20*time.Second)
	before := e.mark()
	cpu0 := cpuByProcess(e.apiPorts())
	served0 := e.servedByMember()
	b.StartTimer()
	t0 := time.Now()
	// Each service's latency counts from its own ServiceExport: creating
	// a thousand, one request each, takes seconds.
	creating := createInBackground(e.cls1.admin, exports)
	exp, importedAt := e.until(b, "imported", n, t0, imported(want))
	b.StopTimer()
	c := <-creating
	if c.err != nil {
		b.Fatal(c.err)
	}
	created := c.at
	importStall := e.longestStall
	stopProfile()
	if cpu0 != nil {
		e.reportCPU(b, n, exp, cpuUsed(cpu0, cpuByProcess(e.apiPorts())))
	}
	for i, m := range []*member{e.cls1, e.cls2} {
		if after, err := servedRequests(m.config); err == nil && served0[i] != nil {
			fmt.Fprintf(os.Stderr, "burst: %s's API server served, per service, until imported: %s\n", m.name, requestsSince(served0[i], after, n))
		}
	}
	// What the burst cost in registry calls, idle calls included (the
	// heartbeats and polls of the burst's duration).
	for _, m := range []struct {
		*member
		before map[string]int64
		count  int64
	}{{e.cls1, before.by1, before.c1}, {e.cls2, before.by2, before.c2}} {
		calls := float64(m.calls.n.Load()-m.count) / float64(n)
		fmt.Fprintf(os.Stderr, "burst: %s made %.2f registry calls per service: %s\n", m.name, calls, m.calls.since(m.before, n))
		b.ReportMetric(calls, m.name+"-calls/service")
	}
	// What the controllers wrote to their own API servers for the burst
	// (until all were imported): the cost that grows with the services.
	for _, m := range []*member{e.cls1, e.cls2} {
		writes := 0
		var each []string
		conflicts := m.api.Conflicts()
		for c, k := range m.api.Counts() {
			if c.IsWrite() {
				writes += k
				line := fmt.Sprintf("%s %s %.2f", c.Verb, c.Resource, float64(k)/float64(n))
				if conflicts[c] > 0 {
					line += fmt.Sprintf(" (%.2f conflicts)", float64(conflicts[c])/float64(n))
				}
				each = append(each, line)
			}
		}
		sort.Strings(each)
		conflicted := 0
		for _, k := range conflicts {
			conflicted += k
		}
		fmt.Fprintf(os.Stderr, "burst: %s's controllers wrote %.2f times per service to its API server (%.2f answered 409 Conflict): %s\n",
			m.name, float64(writes)/float64(n), float64(conflicted)/float64(n), strings.Join(each, ", "))
		b.ReportMetric(float64(writes)/float64(n), m.name+"-writes/service")
	}
	b.StartTimer()
	t0 = time.Now()
	deleted := map[string]time.Time{}
	for _, o := range exports {
		if err := e.cls1.admin.Delete(ctx, o); err != nil {
			b.Fatal(err)
		}
		deleted[o.GetName()] = time.Now()
	}
	wd, withdrawnAt := e.until(b, "withdrawn", n, t0, func(got map[string]string) []string {
		var out []string
		for name := range want {
			if got[name] == "" {
				out = append(out, name)
			}
		}
		return out
	})
	b.StopTimer()
	e.lastWrite = time.Now()
	b.ReportMetric(exp.Seconds(), "export-s")
	b.ReportMetric(float64(n)/exp.Seconds(), "export-services/s")
	b.ReportMetric(wd.Seconds(), "withdraw-s")
	b.ReportMetric(importStall.Seconds(), "import-stall-max-s")
	b.ReportMetric(e.longestStall.Seconds(), "withdraw-stall-max-s")
	e.reportLatency(b, "import-", sinceEach(created, importedAt))
	e.reportLatency(b, "withdraw-", sinceEach(deleted, withdrawnAt))
}

// importedAll is what cls2 imports from cls1, by service: the sorted
// addresses of its imported EndpointSlices.
func (e *env) importedAll() map[string]string {
	out := map[string]string{}
	for _, svc := range e.byName.ListIndexFuncValues(importedFrom) {
		if a := e.importedAddresses(svc); a != "" {
			out[svc] = a
		}
	}
	return out
}

// BenchmarkChurn scales an exported service the way a Deployment's rollout
// does, and measures how long after the last change in cls1 cls2 imports the
// result. The service starts with 1 ready endpoint; one op adds 99, one at a
// time as pods become ready (one EndpointSlice update each, 10ms apart, as
// the EndpointSlice controller writes without batching), timed from the last
// update until cls2 imports all 100 (up-*); then removes them again the same
// way, timed until cls2 imports the 1 left (down-*). BENCH_CHURN sets the
// replicas (default 100, at most 1,000: one EndpointSlice holds 1,000
// endpoints at most, and the controller's default is 100 per slice, so the
// slice is rewritten whole at every step). Run it with -benchtime 10x.
func BenchmarkChurn(b *testing.B) {
	replicas := envInt(b, "BENCH_CHURN", 100)
	if replicas > 1000 {
		b.Fatalf("BENCH_CHURN=%d: at most 1000", replicas)
	}
	for _, backend := range []string{"hub", "cloudmap"} {
		b.Run(fmt.Sprintf("%s/replicas-%d", backend, replicas), func(b *testing.B) {
			e := startEnv(b, backend)
			var s discoveryv1.EndpointSlice
			if err := e.cls1.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-1"}, &s); err != nil {
				b.Fatal(err)
			}
			s.Endpoints = s.Endpoints[:1]
			if err := e.cls1.admin.Update(ctx, &s); err != nil {
				b.Fatal(err)
			}
			first := s.Endpoints[0].Addresses[0]
			if _, err := e.await("web", first, waitTimeout); err != nil {
				b.Fatal(err)
			}
			var up, down []time.Duration
			m0 := e.mark()
			b.ResetTimer()
			b.StopTimer()
			for range b.N {
				e.pause()
				all := []string{first}
				for i := 1; i < replicas; i++ {
					e.seq++
					ip := fmt.Sprintf("10.2.%d.%d", e.seq/250%250, e.seq%250+1)
					all = append(all, ip)
					s.Endpoints = append(s.Endpoints, readyEndpoint(ip))
					e.updateSlice(b, &s)
					if i < replicas-1 {
						time.Sleep(10 * time.Millisecond)
					}
				}
				b.StartTimer()
				t0 := time.Now()
				sort.Strings(all)
				seen, err := e.await("web", strings.Join(all, " "), waitTimeout)
				b.StopTimer()
				if err != nil {
					b.Fatalf("scale up: %v", err)
				}
				up = append(up, seen.Sub(t0))

				e.pause()
				for len(s.Endpoints) > 1 {
					s.Endpoints = s.Endpoints[:len(s.Endpoints)-1]
					e.updateSlice(b, &s)
					if len(s.Endpoints) > 1 {
						time.Sleep(10 * time.Millisecond)
					}
				}
				b.StartTimer()
				t0 = time.Now()
				seen, err = e.await("web", first, waitTimeout)
				b.StopTimer()
				if err != nil {
					b.Fatalf("scale down: %v", err)
				}
				down = append(down, seen.Sub(t0))
			}
			e.reportLatency(b, "up-", up)
			e.reportLatency(b, "down-", down)
			e.reportCalls(b, "cycle", m0)
		})
	}
}

// updateSlice writes s to cls1 and keeps the stored version in s.
func (e *env) updateSlice(b *testing.B, s *discoveryv1.EndpointSlice) {
	if err := e.cls1.admin.Update(ctx, s); err != nil {
		b.Fatal(err)
	}
	e.lastWrite = time.Now()
}

// profileProcess, when BENCH_PROFILE_DIR is set, records a CPU profile of
// this process (the controllers of every member, and the benchmark) until
// the returned func is called, into <dir>/<benchmark>-process.pprof.
func profileProcess(b *testing.B) func() {
	dir := os.Getenv("BENCH_PROFILE_DIR")
	if dir == "" || b.N == 1 {
		return func() {}
	}
	file := filepath.Join(dir, strings.ReplaceAll(b.Name(), "/", "_")+"-process.pprof")
	f, err := os.Create(file)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Logf("CPU profile: %v", err)
		_ = f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
		fmt.Fprintf(os.Stderr, "CPU profile of the benchmark process: %s\n", file)
	}
}
