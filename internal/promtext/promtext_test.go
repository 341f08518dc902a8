package promtext

import (
	"strings"
	"testing"
)

const exposition = `# HELP controller_runtime_reconcile_total Total number of reconciliations per controller
# TYPE controller_runtime_reconcile_total counter
controller_runtime_reconcile_total{controller="export",result="success"} 7
controller_runtime_reconcile_total{controller="export",result="error"} 2
controller_runtime_reconcile_total{controller="imports",result="success"} 5
controller_runtime_reconcile_total{controller="imports",result="requeue_after"} 1
# HELP workqueue_depth Current depth of workqueue
# TYPE workqueue_depth gauge
workqueue_depth{controller="export",name="export"} 3
workqueue_depth{controller="imports",name="imports"} 0
workqueue_depth{controller="x",name="imports-x"} 11
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 1.5
# HELP clusterset_propagation_lag_seconds How long a change took to be imported.
# TYPE clusterset_propagation_lag_seconds histogram
clusterset_propagation_lag_seconds_bucket{source_cluster="cls1",le="1"} 2
clusterset_propagation_lag_seconds_bucket{source_cluster="cls1",le="+Inf"} 3
clusterset_propagation_lag_seconds_sum{source_cluster="cls1"} 2.5
clusterset_propagation_lag_seconds_count{source_cluster="cls1"} 3
clusterset_propagation_lag_seconds_bucket{source_cluster="cls2",le="1"} 1
clusterset_propagation_lag_seconds_bucket{source_cluster="cls2",le="+Inf"} 1
clusterset_propagation_lag_seconds_sum{source_cluster="cls2"} 0.25
clusterset_propagation_lag_seconds_count{source_cluster="cls2"} 1
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5"} 0.1
rpc_duration_seconds_sum 4
rpc_duration_seconds_count 20
untyped_thing{a="b"} 4
untyped_thing 6
`

// TestSum parses a literal exposition and adds up counters, gauges, an
// untyped metric and histogram and summary counts and sums, by exact label
// values; a missing metric or label value sums to 0.
func TestSum(t *testing.T) {
	families, err := Parse(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"controller_runtime_reconcile_total", nil, 15},
		{"controller_runtime_reconcile_total", map[string]string{"controller": "export"}, 9},
		{"controller_runtime_reconcile_total", map[string]string{"controller": "imports", "result": "success"}, 5},
		{"controller_runtime_reconcile_total", map[string]string{"controller": "imports", "result": "error"}, 0},
		// Exact values: name="imports" is not name="imports-x".
		{"workqueue_depth", map[string]string{"name": "imports"}, 0},
		{"workqueue_depth", map[string]string{"name": "export"}, 3},
		{"workqueue_depth", nil, 14},
		{"process_cpu_seconds_total", nil, 1.5},
		{"process_cpu_seconds_total", map[string]string{"host": ""}, 1.5},
		{"process_cpu_seconds_total", map[string]string{"host": "h"}, 0},
		{"clusterset_propagation_lag_seconds_count", map[string]string{"source_cluster": "cls1"}, 3},
		{"clusterset_propagation_lag_seconds_sum", map[string]string{"source_cluster": "cls1"}, 2.5},
		{"clusterset_propagation_lag_seconds_count", nil, 4},
		{"clusterset_propagation_lag_seconds", nil, 0},
		{"rpc_duration_seconds_count", nil, 20},
		{"rpc_duration_seconds_sum", nil, 4},
		{"untyped_thing", nil, 10},
		{"untyped_thing", map[string]string{"a": "b"}, 4},
		{"not_there_total", nil, 0},
		{"not_there_count", nil, 0},
	} {
		if got := Sum(families, c.name, c.labels); got != c.want {
			t.Errorf("Sum(%s, %v) = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// TestParseRefusesWhatIsNotAnExposition: a broken sample line is an error,
// not a metric left out.
func TestParseRefusesWhatIsNotAnExposition(t *testing.T) {
	if _, err := Parse(strings.NewReader("workqueue_depth{name=\"export\"} three\n")); err == nil {
		t.Error("no error for a sample whose value is not a number")
	}
}

// TestLabel reads a sample's label values; a label the sample lacks reads
// as "".
func TestLabel(t *testing.T) {
	families, err := Parse(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range families["controller_runtime_reconcile_total"].GetMetric() {
		got[Label(m, "controller")+"/"+Label(m, "result")+"/"+Label(m, "missing")] = ""
	}
	for _, want := range []string{"export/success/", "export/error/", "imports/success/", "imports/requeue_after/"} {
		if _, ok := got[want]; !ok {
			t.Errorf("labels read %v, want %q among them", got, want)
		}
	}
	if len(got) != 4 {
		t.Errorf("labels read %v, want 4 samples", got)
	}
}
