// Command benchplot draws the results of `go test -bench` against size.
//
//	benchplot [-out dir] file...
//
// It reads files in Go's benchmark format (what go test -bench prints, what
// benchstat reads) and takes the name element <dimension>-<N>
// ("BenchmarkBurst/hub/services-1000") as the x axis, the other elements
// after the benchmark's own name as the series ("hub"), and the benchmark's
// own name as the plot family. For each family and each latency unit
// (ending in -ms or -s) or count unit (containing calls or writes) it
// writes dir/<benchmark>-<unit>.svg: the metric against N, one marked line
// per series, the median where a benchmark ran several times (-count).
// It prints the files written on stdout; families with fewer than two
// sizes, benchmarks without a size element and malformed lines are
// reported on stderr. It exits 1 when nothing could be read or written.
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	out := flag.String("out", "docs/benchmarks", "directory to write the SVG plots into")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: benchplot [-out dir] file...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	written, err := run(flag.Args(), *out)
	for _, path := range written {
		fmt.Println(path)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchplot: %v\n", err)
		os.Exit(1)
	}
}

// run reads the benchmark files at paths and writes their plots into dir.
// It returns the files written.
func run(paths []string, dir string) ([]string, error) {
	r := newResults()
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		err = r.read(f, path, os.Stderr)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	if len(r.values) == 0 && len(r.noSize) == 0 {
		return nil, fmt.Errorf("%w: %v", errNoResults, paths)
	}
	return writePlots(r, dir, os.Stderr)
}
