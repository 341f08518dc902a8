// Package bench holds fewest-requests-1.patch and fewest-requests-2.patch,
// the experiment behind the "fewest requests" figures of docs/benchmarks.md,
// and the test that keeps them applicable to the controllers they edit, so
// that those figures stay reproducible.
package bench

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clusterset/clusterset/internal/prereq"
	"github.com/clusterset/clusterset/internal/testenv"
)

// fewestRequestsPatches are applied in this order; each removes the writes
// named by the markers ("// EXPERIMENT: <removal>") it adds in their place,
// as its header and docs/benchmarks.md say.
var fewestRequestsPatches = []struct {
	file     string
	removals []string
}{
	{"fewest-requests-1.patch", []string{"no Exported event", "no finalizer", "no Imported event", "no ServiceImport status"}},
	{"fewest-requests-2.patch", []string{"no ServiceExport status"}},
}

// TestFewestRequestsPatchesApply applies both patches, in order, to copies
// of the files they edit, and after each checks that its removals are in the
// patched code and compiles the patched packages (go build -overlay), without
// touching the working tree. It fails when a change to the controllers
// altered the lines a patch edits or keeps as context, or made the patched
// code stop compiling: make the same edits in a worktree then, and save each
// step's `git diff` (the second one taken against the first step's state)
// under its header.
func TestFewestRequestsPatchesApply(t *testing.T) {
	git, gotool := lookTool(t, "git"), lookTool(t, "go")
	root := testenv.RepoRoot()
	copies := t.TempDir()

	edited := map[string]bool{}
	for _, p := range fewestRequestsPatches {
		patch, err := filepath.Abs(p.file)
		if err != nil {
			t.Fatal(err)
		}
		for _, rel := range patchedFiles(t, patch) {
			if edited[rel] {
				continue
			}
			edited[rel] = true
			src, err := os.ReadFile(filepath.Join(root, rel))
			if err != nil {
				t.Fatalf("%s edits %s: %v", p.file, rel, err)
			}
			if err := os.MkdirAll(filepath.Join(copies, filepath.Dir(rel)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(copies, rel), src, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		apply := exec.Command(git, "apply", "--verbose", patch)
		apply.Dir = copies
		// Outside a repository git applies paths as they are; inside one
		// (TMPDIR in a work tree) it would skip them and still succeed.
		apply.Env = append(os.Environ(), "GIT_CEILING_DIRECTORIES="+filepath.Dir(copies))
		if out, err := apply.CombinedOutput(); err != nil {
			hint := ""
			reverse := exec.Command(git, "apply", "--check", "--reverse", patch)
			reverse.Dir = root
			if reverse.Run() == nil {
				hint = " (it is applied in the working tree already: take it out, it must never be committed applied)"
			}
			t.Fatalf("%s no longer applies to the controllers%s: %v\n%s", p.file, hint, err, out)
		}
		var patched strings.Builder
		for rel := range edited {
			src, err := os.ReadFile(filepath.Join(copies, rel))
			if err != nil {
				t.Fatal(err)
			}
			patched.Write(src)
		}
		for _, removal := range p.removals {
			if !strings.Contains(patched.String(), "// EXPERIMENT: "+removal+"\n") {
				t.Errorf("%s no longer removes %q, which docs/benchmarks.md says it does", p.file, removal)
			}
		}
		buildPatched(t, gotool, root, copies, edited, p.file)
	}
}

// buildPatched compiles the packages of the edited files (paths relative to
// root), with the copies under dir in place of the originals.
func buildPatched(t *testing.T, gotool, root, dir string, edited map[string]bool, step string) {
	t.Helper()
	overlay := map[string]map[string]string{"Replace": {}}
	pkgs := map[string]bool{}
	for rel := range edited {
		overlay["Replace"][filepath.Join(root, rel)] = filepath.Join(dir, rel)
		pkgs["./"+filepath.Dir(rel)] = true
	}
	overlayJSON, err := json.Marshal(overlay)
	if err != nil {
		t.Fatal(err)
	}
	overlayFile := filepath.Join(t.TempDir(), "overlay.json")
	if err := os.WriteFile(overlayFile, overlayJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"build", "-overlay", overlayFile}
	for pkg := range pkgs {
		args = append(args, pkg)
	}
	build := exec.Command(gotool, args...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("the controllers do not compile with the patches up to %s applied: %v\n%s", step, err, out)
	}
}

// patchedFiles returns the paths, relative to the repository's root, of the
// files a git diff edits (its "+++ b/<path>" lines).
func patchedFiles(t *testing.T, patch string) []string {
	t.Helper()
	text, err := os.ReadFile(patch)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, line := range strings.Split(string(text), "\n") {
		if rel, ok := strings.CutPrefix(line, "+++ b/"); ok {
			files = append(files, rel)
		}
	}
	if len(files) == 0 {
		t.Fatalf("%s edits no file", patch)
	}
	return files
}

// lookTool returns the path of a program this test runs; without it the test
// ends as prereq.Missing says.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		prereq.Missing(t, name+" is not on PATH: install it (git: apt-get install git; go: https://go.dev/doc/install)")
	}
	return path
}
