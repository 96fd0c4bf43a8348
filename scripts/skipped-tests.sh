#!/usr/bin/env bash
# Prints the test cases the last ctest run skipped, and why: ctest counts a test binary
# whose cases were skipped (no CUDA device, a fault tier not built, too little
# /dev/shm) as passed, and --output-on-failure shows only failures' output. One line per
# test and reason: "TEST: N skipped: REASON". Usage: skipped-tests.sh [LastTest.log].
set -euo pipefail
log="${1:-Testing/Temporary/LastTest.log}"
if [[ ! -r "$log" ]]; then
  echo "skipped-tests: no ctest log at $log" >&2
  exit 1
fi
skips="$(awk '
  /^[0-9]+\/[0-9]+ Test: / { test = $3 }
  # googletest: "FILE:LINE: Skipped" then the reason on the next line
  want_reason { r = $0; if (r ~ /^\[  SKIPPED \]/) r = "(no reason given)"; count[test ": \t" r]++; want_reason = 0; next }
  /: Skipped$/ { want_reason = 1; next }
  # Python unittest -v: "name (module.Class) ... skipped REASON"
  / \.\.\. skipped / { r = $0; sub(/.* \.\.\. skipped /, "", r); count[test ": \t" r]++ }
  END { for (k in count) { split(k, p, "\t"); print p[1] count[k] " skipped: " p[2] } }' "$log" | sort)"
if [[ -z "$skips" ]]; then
  echo "Skipped test cases: none"
else
  echo "Skipped test cases (ctest counts a test whose cases skip as passed):"
  sed 's/^/  /' <<<"$skips"
fi
