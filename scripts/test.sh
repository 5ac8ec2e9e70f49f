#!/usr/bin/env bash
# make test's runner: every test (root suites run when uid is 0), then one plain closing line,
# "N passed, N failed", counted from Swift Testing's per-test results.
set -uo pipefail
# At most 12 tests at once (Swift Testing's default is every test at once: ~40 root suites, each
# with a cluster, on 2 cores — timings then measure the pile-up, not kemu). 12 keeps the run as
# short (3.5 min here against 4.2) and each cluster's machine far less crowded.
export SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH=${SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH:-12}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
swift test --skip-build "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
passed=$(grep -E '^✔ Test .* passed' "$log" | grep -vc '^✔ Test run with')
failed=$(grep -E '^✘ Test .* failed after ' "$log" | grep -vc '^✘ Test run with')
echo "tests: $passed passed, $failed failed"
exit "$status"
