//go:build bench

package bench

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/procfs"
	"k8s.io/client-go/rest"

	"github.com/clusterset/clusterset/internal/promtext"
)

// cpuByProcess returns the CPU seconds (user and system) used so far by this
// process, which runs the controllers and the benchmark's own clients, under
// "bench", and by its child processes, summed by command name
// ("kube-apiserver", "etcd", "python3" for moto). A child that has exited is
// missing. On a system without /proc it returns nil.
func cpuByProcess() map[string]float64 {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return nil
	}
	procs, err := fs.AllProcs()
	if err != nil {
		return nil
	}
	self := os.Getpid()
	out := map[string]float64{}
	for _, p := range procs {
		st, err := p.Stat()
		if err != nil {
			continue
		}
		switch {
		case p.PID == self:
			out["bench"] += st.CPUTime()
		case st.PPID == self:
			out[st.Comm] += st.CPUTime()
		}
	}
	return out
}

// cpuUsed is what each process of after used since before, in seconds.
func cpuUsed(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for name, s := range after {
		out[name] = s - before[name]
	}
	return out
}

// formatCPU formats used, in seconds over d, as "kube-apiserver 40.1 s
// (1.05 cores), etcd …", largest first, and returns the total in seconds.
func formatCPU(used map[string]float64, d time.Duration) (string, float64) {
	names := slices.Collect(maps.Keys(used))
	sort.Slice(names, func(i, j int) bool { return used[names[i]] > used[names[j]] })
	parts := make([]string, 0, len(names))
	total := 0.0
	for _, name := range names {
		total += used[name]
		parts = append(parts, fmt.Sprintf("%s %.1f s (%.2f cores)", name, used[name], used[name]/d.Seconds()))
	}
	return strings.Join(parts, ", "), total
}

// profileSelf, when BENCH_PROFILE_DIR is set, records a CPU profile of this
// process (the controllers of both members and the benchmark's clients)
// for d, in the background, as <name>-bench.pprof in that directory.
func profileSelf(name string, d time.Duration) {
	dir := os.Getenv("BENCH_PROFILE_DIR")
	if dir == "" {
		return
	}
	file := filepath.Join(dir, strings.ReplaceAll(name, "/", "_")+"-bench.pprof")
	f, err := os.Create(file)
	if err != nil {
		fmt.Fprintf(os.Stderr, "profile of the benchmark process: %v\n", err)
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		// go test -cpuprofile holds the profiler already.
		fmt.Fprintf(os.Stderr, "profile of the benchmark process: %v\n", err)
		f.Close()
		return
	}
	go func() {
		time.Sleep(d)
		pprof.StopCPUProfile()
		f.Close()
		fmt.Fprintf(os.Stderr, "CPU profile of the benchmark process: %s\n", file)
	}()
}

// servedRequests reads, from the /metrics of the API server at cfg, how many
// requests it has served so far (apiserver_request_total), by "VERB
// resource[/subresource]", watches included.
func servedRequests(cfg *rest.Config) (map[string]float64, error) {
	rc, err := rest.RESTClientFor(withoutTimeout(cfg))
	if err != nil {
		return nil, err
	}
	raw, err := rc.Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	scraped, err := promtext.Parse(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, m := range scraped["apiserver_request_total"].GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		key := l["verb"] + " " + l["resource"]
		if l["subresource"] != "" {
			key += "/" + l["subresource"]
		}
		out[key] += m.GetCounter().GetValue()
	}
	return out, nil
}

// requestsSince formats the requests of after not in before, per service
// (n), largest first: "POST events 3.00, PUT serviceimports 2.00, …". Kinds
// under 0.01 per service are left out.
func requestsSince(before, after map[string]float64, n int) string {
	type kind struct {
		key string
		k   float64
	}
	var kinds []kind
	total := 0.0
	for key, v := range after {
		if k := (v - before[key]) / float64(n); k >= 0.01 {
			kinds = append(kinds, kind{key, k})
			total += k
		}
	}
	sort.Slice(kinds, func(i, j int) bool { return kinds[i].k > kinds[j].k })
	parts := []string{fmt.Sprintf("%.2f in all", total)}
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %.2f", k.key, k.k))
	}
	return strings.Join(parts, ", ")
}

// servedRequests is servedRequests of cls1 and cls2, nil for one that could
// not be read (with a line on stderr).
func (e *env) servedRequests() [2]map[string]float64 {
	var out [2]map[string]float64
	for i, m := range []*member{e.cls1, e.cls2} {
		got, err := servedRequests(m.config)
		if err != nil {
			fmt.Fprintf(os.Stderr, "requests served by %s's API server: %v\n", m.name, err)
		}
		out[i] = got
	}
	return out
}
