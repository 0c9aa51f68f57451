#!/usr/bin/env bash
# slurm_smoke.sh — start a real single-host Slurm (slurm/local-harness.sh), submit the
# demo calibration job with slurm/calibrate.sbatch, wait for it, check its log and
# checkpoint, resubmit to see the resume path, and stop Slurm (also on failure).
set -u
export FLATQ_BIN="${FLATQ:-bin/flatq}"
[ -x "$FLATQ_BIN" ] || { echo "!!! $FLATQ_BIN is not built"; exit 77; }
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
# The real job through the shipped batch script: 2 ranks (1 coordinator + 1 worker) on
# this 2-core node; no GPUs here, so --gpus-per-task is overridden to 0.
submit() {
    local id
    id=$(sbatch --parsable --wait --ntasks=2 --ntasks-per-node=2 --cpus-per-task=1 \
        --gpus-per-task=0 --output="$WORK/slurm-%j.out" slurm/calibrate.sbatch \
        jobs/demo-tiny.yaml --set output="$WORK/out" --set quantization.epochs=1 \
        --set eval.max_windows=1 --set "eval.methods=[fp, flatquant]") || {
        cat "$WORK"/slurm-*.out; fail "sbatch job failed"; }
    LOG="$WORK/slurm-$id.out"
    [ -s "$LOG" ] || fail "no job log $LOG"
}
submit
grep -q "^calibration: 5 layers run, 0 reused" "$LOG" || { cat "$LOG"; fail "job did not calibrate its 5 layers"; }
grep -q "^flatquant " "$LOG" || { cat "$LOG"; fail "no eval of the quantized model in the log"; }
grep -q $'\r' "$LOG" && fail "progress bar escape codes in the Slurm log (expected plain lines)"
[ -s "$WORK/out/model.safetensors.index.json" ] || fail "no checkpoint"
(cd "$WORK/out" && sha256sum layer_*.safetensors model-head.safetensors) >"$WORK/sums"
submit
grep -q "^calibration: 0 layers run, 5 reused" "$LOG" || { cat "$LOG"; fail "resubmission did not resume"; }
(cd "$WORK/out" && sha256sum --quiet -c "$WORK/sums") || fail "resumed output differs"
echo "slurm_smoke: sbatch slurm/calibrate.sbatch of the demo job ran on 2 ranks, resubmission resumed"
