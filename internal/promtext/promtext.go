// Package promtext reads what a Prometheus /metrics endpoint serves in the
// text exposition format, with the Prometheus parser, and adds up samples
// of it, for tests and benchmarks that read a process's metrics.
package promtext

import (
	"io"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Parse reads a text exposition from r and returns its metric families by
// name. A histogram's or summary's _bucket, _count and _sum samples are in
// its family, by the family's name.
func Parse(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}

// Sum adds up the samples of the metric name, of families, whose labels
// have every value of labels (nil matches every sample; as in PromQL, a
// label wanted as "" matches a sample without that label). name is a
// counter, gauge or untyped metric, or the _count or _sum of a histogram or
// summary. A metric that is not in families sums to 0.
func Sum(families map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	mf, read := lookup(families, name)
	var sum float64
	for _, m := range mf.GetMetric() {
		if matches(m, labels) {
			sum += read(m)
		}
	}
	return sum
}

// lookup returns the family of the metric name and how to read a sample of
// it; nil when families has no such metric.
func lookup(families map[string]*dto.MetricFamily, name string) (*dto.MetricFamily, func(*dto.Metric) float64) {
	if mf := families[name]; mf != nil {
		return mf, value
	}
	if base, ok := strings.CutSuffix(name, "_count"); ok && aggregates(families[base]) {
		return families[base], count
	}
	if base, ok := strings.CutSuffix(name, "_sum"); ok && aggregates(families[base]) {
		return families[base], total
	}
	return nil, nil
}

// aggregates reports whether mf is a histogram or a summary (nil is
// neither).
func aggregates(mf *dto.MetricFamily) bool {
	switch mf.GetType() {
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM, dto.MetricType_SUMMARY:
		return true
	}
	return false
}

// value is a counter's, gauge's or untyped metric's sample.
func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// count is a histogram's or summary's _count.
func count(m *dto.Metric) float64 {
	if h := m.GetHistogram(); h != nil {
		if h.SampleCountFloat != nil {
			return h.GetSampleCountFloat()
		}
		return float64(h.GetSampleCount())
	}
	return float64(m.GetSummary().GetSampleCount())
}

// total is a histogram's or summary's _sum.
func total(m *dto.Metric) float64 {
	if h := m.GetHistogram(); h != nil {
		return h.GetSampleSum()
	}
	return m.GetSummary().GetSampleSum()
}

// Label returns the value of m's label name, "" when m has no such label
// (as in PromQL, where a missing label and an empty one are the same).
func Label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// matches reports whether m has every label value of want.
func matches(m *dto.Metric, want map[string]string) bool {
	for name, v := range want {
		if Label(m, name) != v {
			return false
		}
	}
	return true
}
