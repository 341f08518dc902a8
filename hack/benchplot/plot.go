package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// family is one benchmark along one dimension; it has one plot per unit.
type family struct{ Bench, Dim string }

// writePlots draws one SVG per plot of r into dir (created if missing),
// named <benchmark>-<unit>.svg, with the dimension after the benchmark when
// one benchmark has several. Families with fewer than two sizes, and
// benchmarks without a size element, are reported on warn and not drawn.
// It returns the paths written, in the order of r.keys.
func writePlots(r *results, dir string, warn io.Writer) ([]string, error) {
	for _, bench := range sortedKeys(r.noSize) {
		fmt.Fprintf(warn, "benchplot: %s: no <dimension>-<N> element in its names, not plotted\n", bench)
	}
	sizes := map[family]map[int]bool{}
	dims := map[string]map[string]bool{}
	for k, bySeries := range r.values {
		f := family{k.Bench, k.Dim}
		if sizes[f] == nil {
			sizes[f] = map[int]bool{}
		}
		for _, bySize := range bySeries {
			for n := range bySize {
				sizes[f][n] = true
			}
		}
		if dims[k.Bench] == nil {
			dims[k.Bench] = map[string]bool{}
		}
		dims[k.Bench][k.Dim] = true
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var written []string
	reported := map[family]bool{}
	for _, k := range r.keys() {
		f := family{k.Bench, k.Dim}
		if len(sizes[f]) < 2 {
			if !reported[f] {
				reported[f] = true
				fmt.Fprintf(warn, "benchplot: %s: only %s-%s, need two sizes to plot: skipped\n",
					k.Bench, k.Dim, strings.Join(sortedKeys(sizes[f]), ", "+k.Dim+"-"))
			}
			continue
		}
		name := k.Bench
		if len(dims[k.Bench]) > 1 {
			name += "-" + k.Dim
		}
		path := filepath.Join(dir, name+"-"+fileUnit(k.Unit)+".svg")
		if err := drawPlot(k, r.series(k), path); err != nil {
			return written, fmt.Errorf("%s: %w", path, err)
		}
		written = append(written, path)
	}
	return written, nil
}

// drawPlot writes the plot of k with lines ss to path as SVG: the medians
// against N, one marked line per series, the y axis from 0.
func drawPlot(k plotKey, ss []series, path string) error {
	p := plot.New()
	p.Title.Text = k.Bench + ": " + k.Unit + " by " + k.Dim + runsNote(ss)
	p.X.Label.Text = k.Dim + " (N)"
	p.Y.Label.Text = yLabel(k.Unit)
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(8), -vg.Points(4)
	p.Add(plotter.NewGrid())

	minN, maxN := -1, 0
	var ticks plot.ConstantTicks
	seen := map[int]bool{}
	for i, s := range ss {
		xys := make(plotter.XYs, len(s.Points))
		for j, pt := range s.Points {
			xys[j] = plotter.XY{X: float64(pt.N), Y: pt.Median}
			if !seen[pt.N] {
				seen[pt.N] = true
				ticks = append(ticks, plot.Tick{Value: float64(pt.N), Label: strconv.Itoa(pt.N)})
			}
			if minN < 0 || pt.N < minN {
				minN = pt.N
			}
			maxN = max(maxN, pt.N)
		}
		line, points, err := plotter.NewLinePoints(xys)
		if err != nil {
			return err
		}
		line.Color = plotutil.Color(i)
		points.Color = plotutil.Color(i)
		points.Shape = plotutil.Shape(i)
		p.Add(line, points)
		label := s.Name
		if label == "" {
			label = k.Bench
		}
		p.Legend.Add(label, line, points)
	}
	// Ticks only at the measured sizes; sizes such as 1, 100, 500 or 10,
	// 100, 1000 crowd the low end of a linear axis, so a wide range is
	// drawn on a log scale.
	p.X.Tick.Marker = ticks
	if minN > 0 && maxN >= 20*minN {
		p.X.Scale = plot.LogScale{}
		p.X.Label.Text += ", log scale"
	}
	// Latencies and counts start at zero; an axis cut above it would
	// exaggerate differences. The room above the highest point keeps the
	// legend off the lines.
	if p.Y.Min > 0 {
		p.Y.Min = 0
	}
	if p.Y.Max <= p.Y.Min {
		p.Y.Max = p.Y.Min + 1
	}
	p.Y.Max += 0.25 * (p.Y.Max - p.Y.Min)
	return p.Save(6*vg.Inch, 4*vg.Inch, path)
}

// runsNote returns " (median of K runs)" when some point has several
// values, "" when every point has one.
func runsNote(ss []series) string {
	lo, hi := 0, 0
	for _, s := range ss {
		for _, pt := range s.Points {
			if lo == 0 || pt.Runs < lo {
				lo = pt.Runs
			}
			hi = max(hi, pt.Runs)
		}
	}
	switch {
	case hi <= 1:
		return ""
	case lo == hi:
		return fmt.Sprintf(" (median of %d runs)", hi)
	default:
		return fmt.Sprintf(" (median of up to %d runs)", hi)
	}
}

// yLabel names the unit and what it measures: "export-s (latency,
// seconds)", "calls/change (count)".
func yLabel(unit string) string {
	switch {
	case strings.HasSuffix(unit, "-ms"):
		return unit + " (latency, milliseconds)"
	case unitKind(unit) == "latency":
		return unit + " (latency, seconds)"
	case unitKind(unit) == "memory":
		return unit + " (memory, MiB)"
	case unitKind(unit) == "share":
		return unit + " (percent)"
	}
	return unit + " (count)"
}

var unsafeInFileName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// fileUnit turns a unit into part of a file name: "calls/change" becomes
// "calls-per-change", "cpu-%" "cpu-pct".
func fileUnit(unit string) string {
	unit = strings.NewReplacer("/", "-per-", "%", "pct").Replace(unit)
	return unsafeInFileName.ReplaceAllString(unit, "_")
}

// sortedKeys returns the keys of m in increasing order, as strings.
func sortedKeys[K string | int](m map[K]bool) []string {
	var ks []K
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = fmt.Sprint(k)
	}
	return out
}
