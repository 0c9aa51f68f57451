#!/usr/bin/env bash
# device_round.sh — one GPU-machine call that checks a merged tree and runs accuracy jobs side
# by side on the one GPU: the GPU op/runtime tests (prebuilt), compute-sanitizer memcheck of
# the W4A4 kernels' test, and parallel streams of bench/device_ablation_16m.sh runs.
#   STREAMS="default default+seed=1;smoothrot;stories260k stories260k+tp=4" bash bench/device_round.sh
# ';' separates streams (run concurrently), spaces separate runs of a stream (in order).
# Everything a run leaves (logs, layer shards, eval JSON) goes into one tar under $OUT, split
# into 15 MB parts (the device tool returns at most 8 files): results.tgz.NN, plus summary.txt,
# also when DEADLINE_S (default 540) passes first: set it below the call's time limit.
# SANITIZE_BIN: the test program compute-sanitizer runs (default test_gpu_w4a4).
# STREAM_GPUS="1 2 3": stream i runs on GPU number i mod the list (round-robin; default: all
# on the visible GPUs); OFFICIAL_SEEDS="3 4" with OFFICIAL_GPU=0: the official FlatQuant code
# (bench/official_seeds.sh, .dev/official carried) on those seeds beside the streams.
# Expects bin/flatq, build/gpu-tests/, .dev/lib and .dev/data carried along.
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH="$PWD/.dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FLATQ_DATA="$PWD/.dev/data"
final=${OUT:-/tmp/out}
work=/tmp/round
rm -rf "$work" && mkdir -p "$work/gputests"
summary=$final/summary.txt
mkdir -p "$final"
nvidia-smi -L | tee "$summary"
t_start=$(date +%s)

pids=()
if [ "${SKIP_GPU_TESTS:-0}" != 1 ]; then
    (GPU_TESTS_PREBUILT=1 GPU_TESTS_LOG_DIR="$work/gputests" timeout "${GPU_TESTS_S:-200}" \
        bash tests/gpu/run.sh >"$work/gpu-tests.txt" 2>&1
     echo "RESULT|gpu-tests|rc=$?" >>"$work/gpu-tests.txt") &
    pids+=($!)
fi
if [ "${SANITIZE:-1}" = 1 ] && command -v compute-sanitizer >/dev/null; then
    sbin=${SANITIZE_BIN:-test_gpu_w4a4}
    (timeout "${SANITIZE_S:-300}" compute-sanitizer --tool memcheck --leak-check full \
        --error-exitcode 3 build/gpu-tests/$sbin >"$work/sanitizer.txt" 2>&1
     echo "RESULT|compute-sanitizer memcheck $sbin|rc=$?" >>"$work/sanitizer.txt") &
    pids+=($!)
fi
if [ -n "${OFFICIAL_SEEDS:-}" ]; then
    (CUDA_VISIBLE_DEVICES=${OFFICIAL_GPU:-0} OUT=$work SEEDS=$OFFICIAL_SEEDS \
        SEED_S=${STREAM_S:-480} bash bench/official_seeds.sh >"$work/official.txt" 2>&1) &
    pids+=($!)
fi
i=0
read -r -a gpus <<<"${STREAM_GPUS:-}"
IFS=';' read -r -a streams <<<"${STREAMS:-}"
for s in "${streams[@]}"; do
    i=$((i + 1))
    dev=${CUDA_VISIBLE_DEVICES:-}
    [ ${#gpus[@]} -gt 0 ] && dev=${gpus[$(((i - 1) % ${#gpus[@]}))]}
    # shellcheck disable=SC2086
    (export CUDA_VISIBLE_DEVICES=$dev
     OUT=$work timeout "${STREAM_S:-480}" bash bench/device_ablation_16m.sh $s \
        >"$work/stream$i.txt" 2>&1; echo "RESULT|stream $i (GPU ${dev:-all})|rc=$?" >>"$work/stream$i.txt") &
    pids+=($!)
done
# what is there goes back even when the call is stopped at its limit (SIGTERM): the
# summary and the tar are written by this trap, not only after the last stream
finish() {
    trap - EXIT TERM INT
    {
        echo "== wall $(($(date +%s) - t_start)) s"
        tail -n 80 "$work/gpu-tests.txt" 2>/dev/null
        tail -n 15 "$work/sanitizer.txt" 2>/dev/null
        for f in "$work"/stream*.txt; do echo "== $f"; cat "$f"; done
        grep -h "^RESULT" "$work/official.txt" 2>/dev/null
    } >>"$summary"
    cat "$summary"
    tar -C /tmp -czf /tmp/results.tgz round && split -b 15m -d /tmp/results.tgz "$final/results.tgz."
    ls -la "$final"
    exit 0
}
trap finish EXIT TERM INT
(sleep "${DEADLINE_S:-540}"; kill -TERM $$) &
watchdog=$!
[ ${#pids[@]} -gt 0 ] && wait "${pids[@]}"
kill "$watchdog" 2>/dev/null
