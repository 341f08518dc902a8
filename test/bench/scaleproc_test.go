//go:build bench

package bench

// What BenchmarkScale reads of its controller processes: their /metrics,
// their memory, and the Go runtime settings they ship with.

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/clusterset/clusterset/internal/promtext"
	"github.com/clusterset/clusterset/internal/testenv"
)

// scrape reads the Prometheus text exposition at addr's /metrics.
func scrape(addr string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	return promtext.Parse(resp.Body)
}

// writesByHost adds up client-go's rest_client_requests_total of the
// methods that change something, to member and to hub ("" for none).
func writesByHost(scraped map[string]*dto.MetricFamily, member, hub string) (toMember, toHub float64) {
	for _, method := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		toMember += promtext.Sum(scraped, "rest_client_requests_total", map[string]string{"host": member, "method": method})
		if hub != "" {
			toHub += promtext.Sum(scraped, "rest_client_requests_total", map[string]string{"host": hub, "method": method})
		}
	}
	return toMember, toHub
}

// shippedGoEnv returns the GOGC setting of the container "controller" in
// config/manager/manager.yaml as "GOGC=<value>", or nothing when it sets
// none.
func shippedGoEnv(b *testing.B) []string {
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "manager", "manager.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	var d appsv1.Deployment
	if err := yaml.Unmarshal(raw, &d); err != nil {
		b.Fatalf("config/manager/manager.yaml: %v", err)
	}
	var out []string
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if c.Name == "controller" && e.Name == "GOGC" && e.ValueFrom == nil {
				out = append(out, "GOGC="+e.Value)
			}
		}
	}
	return out
}

// cloudMapWrites adds up, in what a controller's /metrics served, its Cloud
// Map requests that write (every operation but Get*, List* and Discover*;
// the heartbeat's RegisterInstance included; attempts, failed ones
// included), and prints them by operation on stderr.
func cloudMapWrites(scraped map[string]*dto.MetricFamily) float64 {
	by := map[string]float64{}
	total := 0.0
	for _, m := range scraped["clusterset_cloudmap_requests_total"].GetMetric() {
		op := promtext.Label(m, "operation")
		if op == "" || strings.HasPrefix(op, "Get") || strings.HasPrefix(op, "List") || strings.HasPrefix(op, "Discover") {
			continue
		}
		by[op] += m.GetCounter().GetValue()
		total += m.GetCounter().GetValue()
	}
	fmt.Fprintf(os.Stderr, "Cloud Map writes of the restarted controller, by operation: %v\n", by)
	return total
}

// memory reads the resident set of process pid and its peak, in MiB.
func memory(b *testing.B, pid int) (rss, peak float64) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		key, value, _ := strings.Cut(line, ":")
		fields := strings.Fields(value)
		if len(fields) != 2 || fields[1] != "kB" {
			continue
		}
		kb, _ := strconv.ParseFloat(fields[0], 64)
		switch key {
		case "VmRSS":
			rss = kb / 1024
		case "VmHWM":
			peak = kb / 1024
		}
	}
	return rss, peak
}
