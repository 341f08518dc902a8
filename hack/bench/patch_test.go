// Package bench holds what the benchmarks in test/bench need besides Go code:
// fewest-requests.patch, the experiment behind the "fewest requests" figures
// of docs/benchmarks.md. This test keeps the patch applicable to the code it
// describes, so that those figures stay reproducible.
package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/clusterset/clusterset/internal/testenv"
)

// TestFewestRequestsPatchApplies checks, with `git apply --check` against the
// working tree, that fewest-requests.patch still applies and still takes out
// each write it is documented to take out. It fails when a change to the
// controllers moved the lines the patch edits: update the patch then (make
// the same edits in a worktree and save its `git diff` under the header).
func TestFewestRequestsPatchApplies(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("git is not on PATH: install git (apt-get install git)")
		}
		t.Skip("git is not on PATH")
	}
	patch, err := filepath.Abs("fewest-requests.patch")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(git, "apply", "--check", "--verbose", patch)
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fewest-requests.patch no longer applies to the controllers: %v\n%s", err, out)
	}

	text, err := os.ReadFile(patch)
	if err != nil {
		t.Fatal(err)
	}
	// Each documented removal, by the marker the patch adds in its place.
	var added []string
	for _, line := range strings.Split(string(text), "\n") {
		if strings.HasPrefix(line, "+") && !strings.HasPrefix(line, "+++") {
			added = append(added, line)
		}
	}
	for _, removed := range []string{
		"no Exported event", "no finalizer", "no ServiceExport status",
		"no Imported event", "no ServiceImport status",
	} {
		if !slices.ContainsFunc(added, func(line string) bool { return strings.HasSuffix(line, "// EXPERIMENT: "+removed) }) {
			t.Errorf("fewest-requests.patch no longer removes %q, which docs/benchmarks.md says it does", removed)
		}
	}
}
