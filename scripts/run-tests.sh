#!/usr/bin/env bash
# run-tests.sh — run every unit test binary given and every tests/integration/*.sh,
# then print one summary line "N passed, N failed". Exit status 1 if anything failed.
# Integration scripts exit 0 (pass), 1 (fail) or 77 (not run: they print why, loudly).
set -u
pass=0; fail=0; notrun=0; failed=()
export FLATQ_DATA="${FLATQ_DATA:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if [ "${SAN:-0}" = 1 ]; then
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:fast_unwind_on_malloc=0:${ASAN_OPTIONS:-}"
    export LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp:print_suppressions=0"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
    export FLATQ_SAN=1
fi
for t in "$@"; do
    echo "=== $t"
    if "$t"; then pass=$((pass+1)); else fail=$((fail+1)); failed+=("$t"); fi
done
for s in tests/integration/*.sh; do
    [ -e "$s" ] || continue
    echo "=== $s"
    bash "$s"; rc=$?
    case $rc in
        0) pass=$((pass+1));;
        77) notrun=$((notrun+1)); echo "!!! NOT RUN: $s (see the reason above)";;
        *) fail=$((fail+1)); failed+=("$s");;
    esac
done
[ ${#failed[@]} -gt 0 ] && printf 'FAILED: %s\n' "${failed[@]}"
[ $notrun -gt 0 ] && echo "!!! $notrun test script(s) were NOT RUN; see the lines starting with '!!!' above"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
