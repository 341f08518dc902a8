package prereq

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMissing runs a test that calls Missing in a child process of this
// test binary, with CI set and unset, and checks that it fails under CI and
// is skipped (not passed) otherwise, with the message either way.
func TestMissing(t *testing.T) {
	if os.Getenv("PREREQ_CHILD") != "" {
		Missing(t, "frobnicator is missing: apt-get install frobnicator")
		t.Error("Missing returned")
		return
	}
	for _, tc := range []struct {
		ci       string
		wantFail bool
		want     string
	}{
		{ci: "1", wantFail: true, want: "--- FAIL: TestMissing"},
		{ci: "true", wantFail: true, want: "--- FAIL: TestMissing"},
		{ci: "", wantFail: false, want: "--- SKIP: TestMissing"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMissing$", "-test.v")
		cmd.Env = append(os.Environ(), "PREREQ_CHILD=1", "CI="+tc.ci)
		out, err := cmd.CombinedOutput()
		if failed := err != nil; failed != tc.wantFail {
			t.Errorf("CI=%q: child failed=%v, want %v\n%s", tc.ci, failed, tc.wantFail, out)
		}
		if !strings.Contains(string(out), tc.want) || !strings.Contains(string(out), "frobnicator is missing: apt-get install frobnicator") {
			t.Errorf("CI=%q: child output lacks %q or the message:\n%s", tc.ci, tc.want, out)
		}
		if strings.Contains(string(out), "Missing returned") {
			t.Errorf("CI=%q: Missing returned instead of ending the test:\n%s", tc.ci, out)
		}
	}
}
