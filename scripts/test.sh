#!/usr/bin/env bash
# make test's runner: every test (root suites run when uid is 0), then one plain closing line,
# "N passed, N failed", counted from Swift Testing's per-test results.
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
swift test --skip-build "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
passed=$(grep -E '^✔ Test .* passed' "$log" | grep -vc '^✔ Test run with')
failed=$(grep -E '^✘ Test .* failed after ' "$log" | grep -vc '^✘ Test run with')
echo "tests: $passed passed, $failed failed"
exit "$status"
