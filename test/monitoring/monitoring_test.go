// Package monitoring checks config/monitoring: the Prometheus alerting rules
// pass promtool's checks and their unit tests, and every query of the
// Grafana dashboard parses and names only documented metrics.
package monitoring

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/clusterset/clusterset/internal/prereq"
)

const dir = "../../config/monitoring"

// promtool returns the path of promtool: .cache/tools/promtool (make
// test-tools), else one on PATH. Without it the test is skipped, unless CI is
// set: then it fails and says how to build it.
func promtool(t *testing.T) string {
	t.Helper()
	if p, err := filepath.Abs("../../.cache/tools/promtool"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	prereq.Missing(t, "promtool not found: run `make test-tools` (builds it from the Go module proxy into .cache/tools)")
	return ""
}

func run(t *testing.T, dir, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// The alerting rules are valid and each fires on its fault and only then
// (prometheus-rules_test.yaml).
func TestAlertRules(t *testing.T) {
	bin := promtool(t)
	run(t, dir, bin, "check", "rules", "prometheus-rules.yaml")
	run(t, dir, bin, "test", "rules", "prometheus-rules_test.yaml")
}

type dashboard struct {
	Panels []struct {
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// Every query of the dashboard parses (promtool checks it as a recording
// rule), and every metric it or an alert names is documented in
// docs/metrics.md.
func TestDashboardQueries(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(dir, "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	var exprs []string
	for i, p := range d.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for j, tg := range p.Targets {
			// Grafana substitutes the variables; any value will do here.
			e := strings.ReplaceAll(tg.Expr, "$job", ".*")
			rules = append(rules, rule{Record: fmt.Sprintf("dashboard:panel_%d_%d", i, j), Expr: e})
			exprs = append(exprs, e)
		}
	}
	if len(rules) < 10 {
		t.Fatalf("the dashboard has %d queries; it should show members, lag, services, endpoints, conflicts and registry calls", len(rules))
	}
	file, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	if err := os.WriteFile(filepath.Join(tmp, "dashboard-rules.yaml"), file, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, tmp, promtool(t), "check", "rules", "dashboard-rules.yaml")

	alerts, err := os.ReadFile(filepath.Join(dir, "prometheus-rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	docs, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`\b(clusterset|controller_runtime|workqueue)_[a-z_]+\b`)
	var undocumented []string
	for _, e := range append(exprs, string(alerts)) {
		for _, n := range names.FindAllString(e, -1) {
			base := n
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				base = strings.TrimSuffix(base, suffix)
			}
			if !strings.Contains(string(docs), "`"+base) && !slices.Contains(undocumented, n) {
				undocumented = append(undocumented, n)
			}
		}
	}
	if len(undocumented) > 0 {
		t.Errorf("metrics used by config/monitoring but not documented in docs/metrics.md: %v", undocumented)
	}
}
