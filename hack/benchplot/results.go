package main

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/perf/benchfmt"
)

// sizeElement is a name element that gives the x axis: "services-1000",
// "members-10". The dimension starts with a letter so that a bare number
// is never read as one.
var sizeElement = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9_.-]*)-([0-9]+)$`)

// trailingNumber matches a name that ends in "-N".
var trailingNumber = regexp.MustCompile(`^(.*)(-[0-9]+)$`)

// plotKey names one plot: one benchmark, one dimension on the x axis, one
// unit on the y axis.
type plotKey struct {
	Bench string // top-level benchmark, e.g. "BenchmarkBurst"
	Dim   string // dimension of the size element, e.g. "services"
	Unit  string // unit as the benchmark reported it, e.g. "export-s"
}

// results accumulates the values read from benchmark files, keyed by plot,
// then series, then size; each size holds one value per run (-count).
type results struct {
	values map[plotKey]map[string]map[int][]float64
	// noSize holds the benchmarks that had a latency or count metric but no
	// size element, reported once instead of once per line.
	noSize map[string]bool
}

func newResults() *results {
	return &results{values: map[plotKey]map[string]map[int][]float64{}, noSize: map[string]bool{}}
}

// line is one benchmark result kept until its whole file is read, because
// whether names end in a GOMAXPROCS suffix is only known from all of them.
type line struct {
	name   string
	values []benchfmt.Value
}

// read adds the results of one file in Go benchmark format (the output of
// go test -bench) to r. fileName is used in messages. Malformed benchmark
// lines are reported on warn and skipped; only an I/O error is returned.
func (r *results) read(in io.Reader, fileName string, warn io.Writer) error {
	br := benchfmt.NewReader(in, fileName)
	var lines []line
	for br.Scan() {
		switch rec := br.Result().(type) {
		case *benchfmt.SyntaxError:
			fmt.Fprintf(warn, "benchplot: %v: line skipped\n", rec)
		case *benchfmt.Result:
			// The reader reuses rec, so keep copies. Its names lack the
			// "Benchmark" that every line starts with; plots and files
			// carry the name as go test printed it.
			lines = append(lines, line{name: "Benchmark" + rec.Name.String(), values: slices.Clone(rec.Values)})
		}
	}
	if err := br.Err(); err != nil {
		return err
	}
	names := make([]string, len(lines))
	for i, l := range lines {
		names[i] = l.name
	}
	procs := procsSuffix(names)
	for _, l := range lines {
		r.add(strings.TrimSuffix(l.name, procs), l.values)
	}
	return nil
}

// procsSuffix returns the "-P" that go test appended to every name of the
// file because GOMAXPROCS was P > 1, or "" if it did not. By shape alone,
// "services-200" at the end of a name is either size 200 at GOMAXPROCS 1 or
// the element "services" at GOMAXPROCS 200. One run puts the same suffix on
// every line, so a suffix shared by all names is GOMAXPROCS when some name
// ends in two numbers ("services-200-2") or the last elements differ before
// it ("idle-2", "export-2"). Otherwise ("hub/services-200" and
// "cloudmap/services-200") it is read as a size.
func procsSuffix(names []string) string {
	suffix := ""
	words := map[string]bool{}
	twoNumbers := false
	for i, name := range names {
		m := trailingNumber.FindStringSubmatch(name)
		if m == nil || (i > 0 && m[2] != suffix) {
			return ""
		}
		suffix = m[2]
		last := m[1][strings.LastIndexByte(m[1], '/')+1:]
		twoNumbers = twoNumbers || trailingNumber.MatchString(last)
		words[last] = true
	}
	if twoNumbers || len(words) > 1 {
		return suffix
	}
	return ""
}

// add files the latency and count values of one result, its name without
// GOMAXPROCS suffix, under its plot, series and size. The last size
// element is the x axis; the other elements after the top-level name make
// up the series.
func (r *results) add(name string, values []benchfmt.Value) {
	elems := strings.Split(name, "/")
	bench, rest := elems[0], elems[1:]
	sizeAt := -1
	for i := len(rest) - 1; i >= 0; i-- {
		if sizeElement.MatchString(rest[i]) {
			sizeAt = i
			break
		}
	}
	for _, v := range values {
		unit, value := v.Unit, v.Value
		// The reader rescales some units (ns to sec); plot what the
		// benchmark reported, in its own unit.
		if v.OrigUnit != "" {
			unit, value = v.OrigUnit, v.OrigValue
		}
		if unitKind(unit) == "" {
			continue
		}
		if sizeAt < 0 {
			r.noSize[bench] = true
			continue
		}
		m := sizeElement.FindStringSubmatch(rest[sizeAt])
		n, err := strconv.Atoi(m[2])
		if err != nil { // more digits than an int holds: not a size
			r.noSize[bench] = true
			continue
		}
		series := strings.Join(slices.Delete(slices.Clone(rest), sizeAt, sizeAt+1), "/")
		key := plotKey{Bench: bench, Dim: m[1], Unit: unit}
		if r.values[key] == nil {
			r.values[key] = map[string]map[int][]float64{}
		}
		if r.values[key][series] == nil {
			r.values[key][series] = map[int][]float64{}
		}
		r.values[key][series][n] = append(r.values[key][series][n], value)
	}
}

// unitKind returns "latency" for units ending in -ms or -s, "count" for
// units about calls, writes, requests or objects, "memory" for units ending
// in -MiB, "share" for units ending in -%, and "" for the units benchplot
// does not plot (ns/op, rates such as export-services/s).
func unitKind(unit string) string {
	switch {
	case strings.HasSuffix(unit, "-ms"), strings.HasSuffix(unit, "-s"):
		return "latency"
	case strings.HasSuffix(unit, "-MiB"):
		return "memory"
	case strings.HasSuffix(unit, "-%"):
		return "share"
	case strings.Contains(unit, "calls"), strings.Contains(unit, "writes"), strings.Contains(unit, "requests"), strings.Contains(unit, "objects"):
		return "count"
	}
	return ""
}

// point is one plotted value: the median of the Runs values read for size N.
type point struct {
	N      int
	Median float64
	Runs   int
}

// series is one line of a plot, its points in increasing N.
type series struct {
	Name   string
	Points []point
}

// series returns the lines of plot k, sorted by name.
func (r *results) series(k plotKey) []series {
	var out []series
	for name, bySize := range r.values[k] {
		s := series{Name: name}
		for n, vs := range bySize {
			s.Points = append(s.Points, point{N: n, Median: median(vs), Runs: len(vs)})
		}
		sort.Slice(s.Points, func(i, j int) bool { return s.Points[i].N < s.Points[j].N })
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// median returns the median of vs, the mean of the two middle values when
// their number is even. vs must not be empty; it is not modified.
func median(vs []float64) float64 {
	s := slices.Sorted(slices.Values(vs))
	mid := len(s) / 2
	if len(s)%2 == 1 {
		return s[mid]
	}
	return (s[mid-1] + s[mid]) / 2
}

// keys returns the plots read, sorted by benchmark, dimension and unit.
func (r *results) keys() []plotKey {
	var ks []plotKey
	for k := range r.values {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool {
		a, b := ks[i], ks[j]
		if a.Bench != b.Bench {
			return a.Bench < b.Bench
		}
		if a.Dim != b.Dim {
			return a.Dim < b.Dim
		}
		return a.Unit < b.Unit
	})
	return ks
}

// errNoResults says that no input held a metric benchplot can plot.
var errNoResults = errors.New("no latency or count metric in the input")
