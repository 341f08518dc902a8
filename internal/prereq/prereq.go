// Package prereq holds the project's one rule for a test whose external
// prerequisite (a tool, a built binary) is missing: skip it on a developer's
// machine, fail it under CI, which must run everything. Every test that
// checks for a prerequisite goes through Missing.
package prereq

import (
	"os"
	"testing"
)

// Missing ends t because a prerequisite is missing. msg says what is missing
// and how to install or build it. With the environment variable CI set
// (non-empty) the test fails with msg; otherwise it is skipped with msg, so
// that it counts as skipped, never as passed.
func Missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}
