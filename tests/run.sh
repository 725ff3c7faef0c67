#!/bin/sh
# Runs every test binary in $BUILD/tests and every tests/*.sh, sums their
# RESULT lines, prints "N passed, N failed, N skipped" and exits non-zero on failure.
BUILD=${BUILD:-build}
export DN_BIN="$PWD/$BUILD/defectnet"
pass=0; fail=0; skip=0
tmp=$(mktemp)
for t in "$BUILD"/tests/test_* tests/*.sh; do
    case "$t" in *.o|*.d|tests/run.sh) continue;; esac
    [ -f "$t" ] || continue
    echo "== $t"
    if [ "${t%.sh}" != "$t" ]; then sh "$t" >"$tmp" 2>&1; rc=$?; else "$t" >"$tmp" 2>&1; rc=$?; fi
    cat "$tmp"
    line=$(grep '^RESULT ' "$tmp" | tail -1)
    if [ -z "$line" ]; then
        echo "FAIL $t: no RESULT line (exit $rc)"; fail=$((fail+1)); continue
    fi
    p=$(echo "$line" | sed -n 's/.*passed=\([0-9]*\).*/\1/p')
    f=$(echo "$line" | sed -n 's/.*failed=\([0-9]*\).*/\1/p')
    s=$(echo "$line" | sed -n 's/.*skipped=\([0-9]*\).*/\1/p')
    pass=$((pass+p)); fail=$((fail+f)); skip=$((skip+${s:-0}))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then echo "FAIL $t: exit $rc"; fail=$((fail+1)); fi
done
rm -f "$tmp"
echo "SKIPPED: $skip (see SKIP lines above)"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
