// Command testsummary reads `go test -json` events on stdin. With -print it
// echoes what `go test` without -v would print: each package's result line
// and the whole output of failed tests. Without -print it prints the failed
// tests and one closing line: "tests: N passed, N failed, N skipped".
// A package that fails to build or fails outside any test counts as failed.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

func main() {
	echo := flag.Bool("print", false, "echo test output instead of summarising")
	flag.Parse()

	printer := &failurePrinter{buffered: map[string][]string{}}
	var passed, failed, skipped int
	var failures []string
	failedTestsIn := map[string]int{}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	for in.Scan() {
		line := in.Bytes()
		var ev event
		if err := json.Unmarshal(line, &ev); err != nil || ev.Action == "" {
			// Build errors and other non-JSON lines go through as they are.
			if *echo {
				fmt.Println(string(line))
			}
			continue
		}
		if *echo {
			printer.handle(ev)
			continue
		}
		switch {
		case ev.Test != "" && ev.Action == "pass":
			passed++
		case ev.Test != "" && ev.Action == "skip":
			skipped++
		case ev.Test != "" && ev.Action == "fail":
			failed++
			failedTestsIn[ev.Package]++
			failures = append(failures, ev.Package+" "+ev.Test)
		case ev.Action == "fail" && failedTestsIn[ev.Package] == 0:
			// The package failed without a failing test: a build error,
			// a panic outside tests or a timeout.
			failed++
			failures = append(failures, ev.Package+" (package)")
		}
	}
	if *echo {
		return
	}
	sort.Strings(failures)
	for _, f := range failures {
		fmt.Println("FAILED:", f)
	}
	fmt.Printf("tests: %d passed, %d failed, %d skipped\n", passed, failed, skipped)
}

// failurePrinter keeps each running test's output and prints it only if the
// test fails, so a green run prints one line per package.
type failurePrinter struct {
	buffered map[string][]string
}

func (p *failurePrinter) handle(ev event) {
	id := ev.Package + " " + ev.Test
	switch {
	case ev.Test == "" && ev.Action == "output":
		fmt.Print(ev.Output)
	case ev.Action == "output":
		p.buffered[id] = append(p.buffered[id], ev.Output)
	case ev.Action == "fail":
		for _, line := range p.buffered[id] {
			fmt.Print(line)
		}
		delete(p.buffered, id)
	case ev.Action == "pass" || ev.Action == "skip":
		delete(p.buffered, id)
	}
}
