#!/bin/bash
# tests/gpu/run.sh — build and run the GPU op tests (tests/gpu/test_gpu_*.c), then print
# one table: every check of every op with its measured error and tolerance.
#
# On a machine that cannot build (the GPU machine lacks some -dev headers) set
# GPU_TESTS_PREBUILT=1 and ship build/gpu-tests/ along. Logs go to $GPU_TESTS_LOG_DIR
# (default: $OUT when set, else build/gpu-tests). Exit: 0 all passed, 1 a failure,
# 77 no GPU visible (loudly: nothing was checked). Each program gets GPU_TEST_TIMEOUT_S
# (default 300) seconds and writes its rows line-buffered, so a hung kernel (it happened:
# an mma.sync issued by part of a warp) ends that program with its last finished check in
# the log instead of stopping the whole run.
set -u
cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
BIN=$BUILD/gpu-tests
if [ "${GPU_TESTS_PREBUILT:-0}" != 1 ]; then
    make --no-print-directory -j"${JOBS:-2}" gpu-tests || { echo "gpu-tests: build failed"; exit 1; }
fi
LOGDIR=${GPU_TESTS_LOG_DIR:-${OUT:-$BIN}}
mkdir -p "$LOGDIR"
shopt -s nullglob
bins=()
for f in "$BIN"/test_gpu_*; do
    case $f in *.d | *.o) continue ;; esac
    [ -x "$f" ] && bins+=("$f")
done
if [ ${#bins[@]} -eq 0 ]; then
    echo "gpu-tests: no test binaries in $BIN (expected make gpu-tests to build them)"
    exit 1
fi
rc_all=0 notrun=0
rows=$LOGDIR/gpu-tests-rows.txt
: >"$rows"
for b in "${bins[@]}"; do
    name=$(basename "$b")
    timeout -k 5 "${GPU_TEST_TIMEOUT_S:-300}" stdbuf -oL "$b" >"$LOGDIR/$name.out" 2>"$LOGDIR/$name.err"
    rc=$?
    [ $rc -eq 124 ] && echo "timed out after ${GPU_TEST_TIMEOUT_S:-300} s; last row: $(tail -1 "$LOGDIR/$name.out")" >>"$LOGDIR/$name.err"
    grep '^ROW|' "$LOGDIR/$name.out" >>"$rows"
    grep -h '^DEVICE|' "$LOGDIR/$name.out" | head -1 | sed 's/^DEVICE|/device: /' >"$LOGDIR/device.txt"
    case $rc in
    0) ;;
    77) notrun=$((notrun + 1)); echo "!!! $name NOT RUN: $(cat "$LOGDIR/$name.err")" ;;
    *) rc_all=1; echo "!!! $name exited $rc:"; cat "$LOGDIR/$name.err" ;;
    esac
done
echo
cat "$LOGDIR/device.txt" 2>/dev/null
printf '%-10s %-40s %-14s %-9s %s\n' group check measured tol result
awk -F'|' '{ printf "%-10s %-40s %-14s %-9s %s\n", $2, $3, $4, $5, $6 }' "$rows"
npass=$(grep -c '|PASS$' "$rows")
nfail=$(grep -c '|FAIL$' "$rows")
echo "gpu-tests: $npass passed, $nfail failed, $notrun program(s) not run"
[ "$nfail" -gt 0 ] && rc_all=1
if [ $rc_all -eq 0 ] && [ $notrun -gt 0 ]; then
    echo "gpu-tests: NOT RUN — no GPU visible; nothing was checked"
    exit 77
fi
exit $rc_all
