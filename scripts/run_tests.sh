#!/usr/bin/env bash
# Runs every test against the build in $1 (default build/): the C unit tests (kiln_tests), then
# the Python oracle tests (pytest). Ends with one line "N passed, N failed" over both; exits
# non-zero if anything failed or nothing ran.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${1:-build}
export KILN_BUILD="$root/$build"
export KILN_SHARED="${KILN_SHARED:-$(cd "$root/../shared" 2>/dev/null && pwd)}"
if [ -z "$KILN_SHARED" ] || [ ! -d "$KILN_SHARED/models" ]; then
  echo "run_tests: ../shared (test data) not found beside the repository" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
if grep -q '^KILN_SANITIZE:BOOL=ON' "$KILN_BUILD/CMakeCache.txt" 2>/dev/null; then
  export KILN_SANITIZED=1
fi
c_pass=0 c_fail=0 p_pass=0 p_fail=0
log=$(mktemp)
"$KILN_BUILD/kiln_tests" 2>&1 | tee "$log"
c_rc=${PIPESTATUS[0]}
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
if [ -n "$line" ]; then
  c_pass=$(echo "$line" | cut -d' ' -f1)
  c_fail=$(echo "$line" | cut -d' ' -f3)
fi
[ "$c_rc" -ne 0 ] && [ "$c_fail" -eq 0 ] && c_fail=1   # crashed before its summary

.venv/bin/python -m pytest -q -p no:cacheprovider tests/py 2>&1 | tee "$log"
p_rc=${PIPESTATUS[0]}
summary=$(grep -E '(passed|failed|error)' "$log" | tail -n 1)
p_pass=$(echo "$summary" | grep -oE '[0-9]+ passed' | cut -d' ' -f1)
p_fail=$(echo "$summary" | grep -oE '[0-9]+ failed' | cut -d' ' -f1)
p_err=$(echo "$summary" | grep -oE '[0-9]+ errors?' | cut -d' ' -f1)
p_pass=${p_pass:-0}
p_fail=$(( ${p_fail:-0} + ${p_err:-0} ))
[ "$p_rc" -ne 0 ] && [ "$p_fail" -eq 0 ] && p_fail=1
rm -f "$log"

total_pass=$((c_pass + p_pass))
total_fail=$((c_fail + p_fail))
echo
echo "C unit tests: $c_pass passed, $c_fail failed; Python oracle tests: $p_pass passed, $p_fail failed"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ] && [ "$total_pass" -gt 0 ]
