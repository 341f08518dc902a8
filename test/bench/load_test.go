//go:build bench

package bench

// What a benchmark costs the machine: the CPU of each process, and the
// requests each API server served.

import (
	"bytes"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/procfs"
	"k8s.io/client-go/rest"

	"github.com/clusterset/clusterset/internal/promtext"
)

// procCPU is one process's CPU seconds (user and system) so far, and the
// name it is reported under.
type procCPU struct {
	name string
	cpu  float64
}

// cpuByProcess returns, by PID, the CPU seconds used so far by this process,
// which runs the controllers and the benchmark's own clients, named
// "bench", and by its child processes, named by command: "kube-apiserver
// cls1" and "etcd cls1" for the control plane of the member whose API
// server listens on a port that members maps to its name, the bare command
// name for any other ("python3" for moto). A child that has exited is
// missing. Without /proc it returns nil.
func cpuByProcess(members map[string]string) map[int]procCPU {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return nil
	}
	procs, err := fs.AllProcs()
	if err != nil {
		return nil
	}
	self := os.Getpid()
	type child struct {
		pid  int
		comm string
		args []string
		cpu  float64
	}
	var children []child
	out := map[int]procCPU{}
	for _, p := range procs {
		st, err := p.Stat()
		if err != nil {
			continue // exited meanwhile
		}
		switch {
		case p.PID == self:
			out[p.PID] = procCPU{"bench", st.CPUTime()}
		case st.PPID == self:
			args, _ := p.CmdLine()
			children = append(children, child{p.PID, st.Comm, args, st.CPUTime()})
		}
	}
	// An API server names its etcd's client URL; its etcd listens on it.
	etcdOf := map[string]string{}
	for _, c := range children {
		if m := members[flagPort(c.args, "--secure-port")]; c.comm == "kube-apiserver" && m != "" {
			etcdOf[flagPort(c.args, "--etcd-servers")] = m
		}
	}
	for _, c := range children {
		m := ""
		switch c.comm {
		case "kube-apiserver":
			m = members[flagPort(c.args, "--secure-port")]
		case "etcd":
			m = etcdOf[flagPort(c.args, "--listen-client-urls")]
		}
		name := c.comm
		if m != "" {
			name += " " + m
		}
		out[c.pid] = procCPU{name, c.cpu}
	}
	return out
}

// flagPort returns the port that flag has in args, in the form
// "--flag=value": value itself ("--secure-port=6443"), or the port of its
// first URL ("--etcd-servers=http://127.0.0.1:2379,…"). "" when args lack
// the flag or its value has no port.
func flagPort(args []string, flag string) string {
	for _, a := range args {
		v, ok := strings.CutPrefix(a, flag+"=")
		if !ok {
			continue
		}
		v, _, _ = strings.Cut(v, ",")
		if !strings.Contains(v, "://") {
			return v
		}
		if u, err := url.Parse(v); err == nil {
			return u.Port()
		}
		return ""
	}
	return ""
}

// cpuUsed is what the processes of after used since before, in seconds, by
// name. A process is compared with itself (by PID): one that started in
// between counts from 0, one that exited in between is missing.
func cpuUsed(before, after map[int]procCPU) map[string]float64 {
	out := map[string]float64{}
	for pid, a := range after {
		out[a.name] += a.cpu - before[pid].cpu
	}
	return out
}

// controlPlaneCPU adds up the seconds of used that went to the API servers
// and etcds, all of them, or of member only when member is not "".
func controlPlaneCPU(used map[string]float64, member string) float64 {
	total := 0.0
	for name, s := range used {
		comm, m, _ := strings.Cut(name, " ")
		if (comm == "kube-apiserver" || comm == "etcd") && (member == "" || m == member) {
			total += s
		}
	}
	return total
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

// profileSelf, when BENCH_PROFILE_DIR is set, starts a CPU profile of this
// process (the controllers of both members and the benchmark's clients)
// into <name>-bench.pprof in that directory, for d at most, and returns the
// function that stops it sooner (safe to call more than once, and when no
// profile was started).
func profileSelf(name string, d time.Duration) (stop func()) {
	dir := os.Getenv("BENCH_PROFILE_DIR")
	if dir == "" {
		return func() {}
	}
	file := filepath.Join(dir, strings.ReplaceAll(name, "/", "_")+"-bench.pprof")
	f, err := os.Create(file)
	if err != nil {
		fmt.Fprintf(os.Stderr, "profile of the benchmark process: %v\n", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		// go test -cpuprofile holds the profiler already.
		fmt.Fprintf(os.Stderr, "profile of the benchmark process: %v\n", err)
		f.Close()
		os.Remove(file)
		return func() {}
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			f.Close()
			fmt.Fprintf(os.Stderr, "CPU profile of the benchmark process: %s\n", file)
		})
	}
	time.AfterFunc(d, stop)
	return stop
}

// apiServerMetrics reads the /metrics of the API server at cfg.
func apiServerMetrics(cfg *rest.Config) (map[string]*dto.MetricFamily, error) {
	rc, err := rest.RESTClientFor(withoutTimeout(cfg))
	if err != nil {
		return nil, err
	}
	raw, err := rc.Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	return promtext.Parse(bytes.NewReader(raw))
}

// servedRequests reads, from the /metrics of the API server at cfg, how many
// requests it has served so far (apiserver_request_total), by "VERB
// resource[/subresource]", watches included, with the HTTP code appended
// to those not answered 2xx ("PUT serviceimports/status 409").
func servedRequests(cfg *rest.Config) (map[string]float64, error) {
	scraped, err := apiServerMetrics(cfg)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, m := range scraped["apiserver_request_total"].GetMetric() {
		key := promtext.Label(m, "verb") + " " + promtext.Label(m, "resource")
		if sub := promtext.Label(m, "subresource"); sub != "" {
			key += "/" + sub
		}
		if code := promtext.Label(m, "code"); !strings.HasPrefix(code, "2") {
			key += " " + code
		}
		out[key] += m.GetCounter().GetValue()
	}
	return out, nil
}

// requestsSince formats the requests of after not in before, per service
// (n), largest first: "19.00 in all, POST events 3.00, PUT serviceimports
// 2.00, …". Kinds under 0.01 per service count in the total but are not
// listed.
func requestsSince(before, after map[string]float64, n int) string {
	type kind struct {
		key string
		k   float64
	}
	var kinds []kind
	total := 0.0
	for key, v := range after {
		k := (v - before[key]) / float64(n)
		total += k
		if k >= 0.01 {
			kinds = append(kinds, kind{key, k})
		}
	}
	sort.Slice(kinds, func(i, j int) bool { return kinds[i].k > kinds[j].k })
	parts := []string{fmt.Sprintf("%.2f in all", total)}
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %.2f", k.key, k.k))
	}
	return strings.Join(parts, ", ")
}

// apiPorts maps the port of each member's API server to the member's name,
// for cpuByProcess.
func (e *env) apiPorts() map[string]string {
	out := map[string]string{}
	for _, m := range []*member{e.cls1, e.cls2} {
		if u, err := url.Parse(m.config.Host); err == nil && u.Port() != "" {
			out[u.Port()] = m.name
		}
	}
	return out
}

// servedByMember is servedRequests of cls1 and cls2, nil for one that could
// not be read (with a line on stderr).
func (e *env) servedByMember() [2]map[string]float64 {
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
