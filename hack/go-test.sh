#!/usr/bin/env bash
# Runs `go test` with the given arguments and closes with one summary line,
# "tests: N passed, N failed, N skipped", counted from go test's JSON events.
# A skipped test is reported as skipped, never as passed.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
events=$(mktemp)
trap 'rm -f "$events"' EXIT
go test -json "$@" | tee "$events" | go run "$root/hack/testsummary" -print
status=${PIPESTATUS[0]}
go run "$root/hack/testsummary" < "$events"
exit "$status"
