#!/usr/bin/env bash
# slurm_smoke.sh — start a real single-host Slurm (slurm/local-harness.sh), submit a
# batch job that runs the scheduler test job on 3 MPI ranks, wait for it, check its log
# and output, resubmit to see the resume path, and stop Slurm (also on failure).
set -u
BUILD="${BUILD:-build}"
DRIVER="$(pwd)/$BUILD/tests/test_scheduler_mpi"
[ -x "$DRIVER" ] || { echo "!!! $DRIVER is not built"; exit 77; }
[ "$(id -u)" = 0 ] || { echo "!!! slurm_smoke needs root to start slurmd/munged"; exit 77; }
for b in sbatch slurmctld munged mpirun; do
    command -v $b >/dev/null || [ -x /usr/sbin/$b ] || { echo "!!! $b missing (apt-get install slurm-wlm munge openmpi-bin)"; exit 77; }
done
fail() { echo "FAIL: $*"; exit 1; }
WORK=$(mktemp -d /tmp/fq_slurm_smoke.XXXXXX)
STATE=""
cleanup() { [ -n "$STATE" ] && slurm/local-harness.sh stop "$STATE"; rm -rf "$WORK"; }
trap cleanup EXIT
STATE=$(slurm/local-harness.sh start) || fail "the local Slurm did not start"
export SLURM_CONF="$STATE/slurm.conf"
mkdir -p "$WORK/cache"
cat >"$WORK/job.sbatch" <<JOB
#!/bin/bash
#SBATCH --job-name=flatq-smoke
#SBATCH --ntasks=1
#SBATCH --output=$WORK/slurm-%j.out
mpirun --allow-run-as-root --oversubscribe -np 3 "$DRIVER" --job "$WORK/cache" "$WORK/out" "$WORK/log"
JOB
submit() {
    local id
    id=$(sbatch --parsable --wait "$WORK/job.sbatch") || { cat "$WORK"/slurm-*.out; fail "sbatch job failed"; }
    LOG="$WORK/slurm-$id.out"
    [ -s "$LOG" ] || fail "no job log $LOG"
}
submit
grep -q "^job done: 6 layers run" "$LOG" || { cat "$LOG"; fail "job did not finish its 6 layers"; }
[ "$(grep -c '^stats rank' "$LOG")" = 3 ] || { cat "$LOG"; fail "expected stats of 3 ranks"; }
grep -q $'\r' "$LOG" && fail "progress bar escape codes in the Slurm log (expected plain lines)"
[ -s "$WORK/out/final.bin" ] || fail "no output"
cp "$WORK/out/final.bin" "$WORK/first.bin"
submit
grep -q "^job done: 0 layers run, 6 skipped" "$LOG" || { cat "$LOG"; fail "resubmission did not resume"; }
cmp "$WORK/first.bin" "$WORK/out/final.bin" || fail "resumed output differs"
echo "slurm_smoke: sbatch of a 3-rank MPI job ran, resubmission resumed"
