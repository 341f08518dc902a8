package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// readTestdata reads testdata/bench.txt and returns the results and what
// was reported on stderr.
func readTestdata(t *testing.T) (*results, string) {
	t.Helper()
	f, err := os.Open("testdata/bench.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := newResults()
	var warn bytes.Buffer
	if err := r.read(f, "testdata/bench.txt", &warn); err != nil {
		t.Fatal(err)
	}
	return r, warn.String()
}

func TestReadSeries(t *testing.T) {
	r, warn := readTestdata(t)

	// The malformed line (line 18, cloudmap/services-500 of the second run)
	// is reported and its values are not used: that point has one run.
	if !strings.Contains(warn, "testdata/bench.txt:18") {
		t.Errorf("malformed line 18 not reported; stderr:\n%s", warn)
	}

	export := plotKey{Bench: "BenchmarkBurst", Dim: "services", Unit: "export-s"}
	want := []series{
		{Name: "cloudmap", Points: []point{{100, 6.5, 2}, {500, 40, 1}, {1000, 79.5, 2}}},
		{Name: "hub", Points: []point{{100, 3, 2}, {500, 15.5, 2}, {1000, 34, 2}}},
	}
	if got := r.series(export); !reflect.DeepEqual(got, want) {
		t.Errorf("export-s series:\n got %+v\nwant %+v", got, want)
	}
	writes := plotKey{Bench: "BenchmarkBurst", Dim: "services", Unit: "cls1-writes/service"}
	wantHub := series{Name: "hub", Points: []point{{100, 10.5, 2}, {500, 10.375, 2}, {1000, 10.75, 2}}}
	if got := r.series(writes); len(got) != 2 || !reflect.DeepEqual(got[1], wantHub) {
		t.Errorf("cls1-writes/service series:\n got %+v\nwant %+v as the second", got, wantHub)
	}
	cost := plotKey{Bench: "BenchmarkChangeCost", Dim: "services", Unit: "p50-ms"}
	wantCost := []series{{Name: "", Points: []point{{500, 402.5, 2}}}}
	if got := r.series(cost); !reflect.DeepEqual(got, wantCost) {
		t.Errorf("ChangeCost p50-ms:\n got %+v\nwant %+v", got, wantCost)
	}

	// ns/op and the rate export-services/s are neither latency nor count.
	var units []string
	for _, k := range r.keys() {
		if k.Bench == "BenchmarkBurst" {
			units = append(units, k.Unit)
		}
	}
	wantUnits := []string{"cls1-writes/service", "cls2-writes/service", "export-s", "withdraw-s"}
	if !slices.Equal(units, wantUnits) {
		t.Errorf("BenchmarkBurst units = %v, want %v", units, wantUnits)
	}
	// BenchmarkClusterset has no size element once its GOMAXPROCS suffix
	// is taken off.
	if !r.noSize["BenchmarkClusterset"] || len(r.noSize) != 1 {
		t.Errorf("benchmarks without size = %v, want BenchmarkClusterset only", r.noSize)
	}
}

func TestWritePlots(t *testing.T) {
	r, _ := readTestdata(t)
	dir := filepath.Join(t.TempDir(), "plots")
	var warn bytes.Buffer
	written, err := writePlots(r, dir, &warn)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range written {
		names = append(names, filepath.Base(p))
	}
	want := []string{
		"BenchmarkBurst-cls1-writes-per-service.svg",
		"BenchmarkBurst-cls2-writes-per-service.svg",
		"BenchmarkBurst-export-s.svg",
		"BenchmarkBurst-withdraw-s.svg",
	}
	if !slices.Equal(names, want) {
		t.Errorf("written %v, want %v", names, want)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		t.Errorf("%d files in %s, want %d", len(entries), dir, len(want))
	}

	// BenchmarkChangeCost has one size: skipped, and said so once.
	if n := strings.Count(warn.String(), "BenchmarkChangeCost: only services-500"); n != 1 {
		t.Errorf("ChangeCost skip reported %d times, want 1; stderr:\n%s", n, warn.String())
	}
	if !strings.Contains(warn.String(), "BenchmarkClusterset: no <dimension>-<N> element") {
		t.Errorf("BenchmarkClusterset not reported; stderr:\n%s", warn.String())
	}

	texts := svgTexts(t, filepath.Join(dir, "BenchmarkBurst-export-s.svg"))
	all := strings.Join(texts, "\n")
	for _, s := range []string{
		"BenchmarkBurst: export-s by services (median of up to 2 runs)",
		"export-s (latency, seconds)",
		"services (N)",
		"hub", "cloudmap", "100", "500", "1000",
	} {
		if !slices.Contains(texts, s) {
			t.Errorf("export-s plot has no text %q; texts:\n%s", s, all)
		}
	}
	texts = svgTexts(t, filepath.Join(dir, "BenchmarkBurst-cls1-writes-per-service.svg"))
	if !slices.Contains(texts, "cls1-writes/service (count)") {
		t.Errorf("writes plot has no count label; texts:\n%s", strings.Join(texts, "\n"))
	}
}

// svgTexts checks that path is a well-formed SVG document and returns the
// contents of its text elements.
func svgTexts(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := xml.NewDecoder(f)
	var texts []string
	var root string
	inText := false
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s is not well-formed XML: %v", path, err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
			}
			inText = tok.Name.Local == "text"
			if inText {
				texts = append(texts, "")
			}
		case xml.CharData:
			if inText {
				texts[len(texts)-1] += string(tok)
			}
		case xml.EndElement:
			inText = false
		}
	}
	if root != "svg" {
		t.Fatalf("%s: root element %q, want svg", path, root)
	}
	return texts
}

func TestProcsSuffix(t *testing.T) {
	for _, tc := range []struct {
		names []string
		want  string
	}{
		{[]string{"BenchmarkClusterset/hub/idle-2", "BenchmarkClusterset/hub/export-2"}, "-2"},
		{[]string{"BenchmarkBurst/hub/services-200-2", "BenchmarkBurst/cloudmap/services-200-2"}, "-2"},
		{[]string{"BenchmarkChangeCost/services-1-4", "BenchmarkChangeCost/services-100-4"}, "-4"},
		// GOMAXPROCS 1: no suffix, and the size is what ends the names.
		{[]string{"BenchmarkBurst/hub/services-200", "BenchmarkBurst/cloudmap/services-200"}, ""},
		{[]string{"BenchmarkChangeCost/services-1", "BenchmarkChangeCost/services-100"}, ""},
		{[]string{"BenchmarkClusterset/hub/idle", "BenchmarkBurst/hub/services-200"}, ""},
		{nil, ""},
	} {
		if got := procsSuffix(tc.names); got != tc.want {
			t.Errorf("procsSuffix(%q) = %q, want %q", tc.names, got, tc.want)
		}
	}
}

// Two burst runs at GOMAXPROCS 1, one size each, as make bench saves them
// (burst-200.txt, burst-1000.txt), make one family with two sizes.
func TestReadBurstFilesWithoutProcs(t *testing.T) {
	r := newResults()
	for name, text := range map[string]string{
		"burst-200.txt": "BenchmarkBurst/hub/services-200  1  5700000000 ns/op  5.7 export-s\n" +
			"BenchmarkBurst/cloudmap/services-200  1  12500000000 ns/op  12.5 export-s\n",
		"burst-1000.txt": "BenchmarkBurst/hub/services-1000  1  32900000000 ns/op  32.9 export-s\n" +
			"BenchmarkBurst/cloudmap/services-1000  1  78800000000 ns/op  78.8 export-s\n",
	} {
		if err := r.read(strings.NewReader(text), name, io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	got := r.series(plotKey{Bench: "BenchmarkBurst", Dim: "services", Unit: "export-s"})
	want := []series{
		{Name: "cloudmap", Points: []point{{200, 12.5, 1}, {1000, 78.8, 1}}},
		{Name: "hub", Points: []point{{200, 5.7, 1}, {1000, 32.9, 1}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("series:\n got %+v\nwant %+v", got, want)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{4}, 4},
		{[]float64{3, 1, 2}, 2},
		{[]float64{5, 1, 2, 4}, 3},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestUnitKinds(t *testing.T) {
	for unit, want := range map[string]string{
		"export-s": "latency", "p99-ms": "latency", "calls/change": "count", "cls1-writes/service": "count",
		"hub-burst-requests": "count", "restart-rewritten-objects": "count", "cls1-rss-MiB": "memory",
		"hub-idle-cpu-%": "share", "ns/op": "", "export-services/s": "",
	} {
		if got := unitKind(unit); got != want {
			t.Errorf("unitKind(%q) = %q, want %q", unit, got, want)
		}
	}
	for unit, want := range map[string]string{
		"cls1-rss-MiB": "cls1-rss-MiB (memory, MiB)", "hub-idle-cpu-%": "hub-idle-cpu-% (percent)", "export-s": "export-s (latency, seconds)",
	} {
		if got := yLabel(unit); got != want {
			t.Errorf("yLabel(%q) = %q, want %q", unit, got, want)
		}
	}
}
