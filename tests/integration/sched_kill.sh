#!/usr/bin/env bash
# sched_kill.sh — kill -9 a worker while it calibrates a layer (after >= 1 layer is
# done): the job ends quickly with a line naming the rank, host and layer; a rerun
# recomputes only the unfinished layers and its output equals an uninterrupted run.
# Both ways Open MPI can behave are checked: mpirun's default (it SIGTERMs every rank)
# and --enable-recovery (ranks survive; the coordinator's heartbeat timeout notices).
set -u
. "$(dirname "$0")/sched_common.bash"
job 2 ref || { show ref; fail "reference job failed"; }

# kill_run NAME MPIRUN_EXTRA...: start the job with layer 3 hanging, kill its worker.
kill_run() {
    local name=$1; shift
    mkdir -p "$SCRATCH/$name.cache"
    local t0=$SECONDS
    timeout 60 mpirun --oversubscribe "$@" -np 3 "$DRIVER" --job "$SCRATCH/$name.cache" \
        "$SCRATCH/$name.out" "$SCRATCH/$name.log" --hang-layer 3 --heartbeat 3 \
        >"$SCRATCH/$name.stdout" 2>"$SCRATCH/$name.stderr" &
    local mp=$!
    for _ in $(seq 1 300); do
        [ -s "$SCRATCH/$name.log.hang.pid" ] && grep -q "done on rank" "$SCRATCH/$name.stdout" && break
        sleep 0.1
    done
    [ -s "$SCRATCH/$name.log.hang.pid" ] || { kill $mp; show $name; fail "layer 3 never started"; }
    kill -9 "$(cat "$SCRATCH/$name.log.hang.pid")"
    wait $mp; local rc=$?
    local took=$((SECONDS - t0))
    # mpirun --enable-recovery exits 0 even after MPI_Abort (Open MPI 4.1), so the
    # status is checked only for the default mode; the message is checked for both.
    [ $rc -ne 0 ] || [ "$*" = --enable-recovery ] || { show $name; fail "job with a killed worker exited 0"; }
    [ $rc -ne 124 ] || { show $name; fail "job with a killed worker hung"; }
    [ $took -le 30 ] || fail "job took ${took}s to notice the dead worker"
    echo "$name: ended after ${took}s with status $rc"
}
check_resume() {
    local name=$1
    local finished; finished=$(cd "$SCRATCH/$name.out" && ls layer_*.sha256 2>/dev/null | sed 's/layer_0*\([0-9]*\).*/\1/')
    [ -n "$finished" ] || { show $name; fail "no layer was finished before the kill"; }
    : >"$SCRATCH/$name.log"
    job 3 $name || { show $name; fail "rerun after the kill failed"; }
    for l in $finished; do
        ! grep -q "^run layer $l " "$SCRATCH/$name.log" || fail "finished layer $l was recomputed"
    done
    grep -q "^run layer 3 " "$SCRATCH/$name.log" || fail "the killed layer 3 was not redone"
    cmp "$SCRATCH/ref.out/final.bin" "$SCRATCH/$name.out/final.bin" ||
        fail "resumed output differs from an uninterrupted run"
    grep -q "resuming: [1-9] of 6 layers already finished" "$SCRATCH/$name.stdout" || { show $name; fail "no resume line"; }
}

kill_run killed
grep -q "in flight:.*layer 3 on rank [12] (host " "$SCRATCH/killed.stderr" || { show killed; fail "no state line naming layer 3"; }
grep -q "rerun the same command to resume" "$SCRATCH/killed.stderr" || { show killed; fail "no resume hint"; }
check_resume killed

kill_run recovery --enable-recovery
grep -q "worker rank [12] (host .*) died while calibrating layer 3" "$SCRATCH/recovery.stderr" ||
    { show recovery; fail "coordinator did not name the dead worker"; }
check_resume recovery
echo "sched_kill: dead worker reported, rerun resumed with identical output"
