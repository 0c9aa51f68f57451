#!/usr/bin/env bash
# device_s10_call3.sh — session 10, call 3 (issues 10, 7, 8), one 4-GPU call:
#   GPU 0 first: test_gpu_gptq (the observed-input comparison now in quantization steps);
#   GPUs 0–2: the shipped recipe (configs/flatq.yaml, now with gptq_clip_search) on
#     flatq-llama-16m for SEEDS (default 8–23), `flatq eval --device cuda`, 190 windows:
#     bench/device_round.sh streams, two runs each;
#   GPU 3: the whole GPU test suite; then the GPTQ pass on one synthetic LLaMA-3-70B-shaped
#     layer (jobs/synth-70b.yaml, 32 windows, EPOCHS epochs, GPTQ + clip search from 32
#     windows, rank 0 with GPTQ_BLAS threads for the float64 factorisations): where a 70B
#     layer's GPTQ time goes; then `flatq run --bench` TP 1 on 2- and 1-layer 70B-shaped
#     checkpoints, W4A4 (wgmma 3-buffer default) and BF16.
# Carried: bin, build/gpu-tests, .dev/lib, .dev/data.
set -u
. bench/device_common.sh
device_begin s10c3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH="$PWD/.dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FLATQ_DATA="$PWD/.dev/data" FLATQ_PROGRESS=plain
CUDA_VISIBLE_DEVICES=0 timeout 100 build/gpu-tests/test_gpu_gptq >"$w/test_gpu_gptq.txt" 2>&1
echo "RESULT|test_gpu_gptq|rc=$?|$(grep -c '|PASS$' "$w/test_gpu_gptq.txt") PASS, $(grep -c '|FAIL$' "$w/test_gpu_gptq.txt") FAIL" >>"$w/results.txt"
streams="" i=0 st=""
for s in ${SEEDS:-8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23}; do
    st="$st${st:+ }shipped+seed=$s"
    i=$((i + 1))
    if [ $((i % 2)) = 0 ]; then streams="$streams${streams:+;}$st"; st=""; fi
done
[ -n "$st" ] && streams="$streams${streams:+;}$st"
(OUT=$final/round STOP_ON_FAIL=1 SKIP_GPU_TESTS=1 SANITIZE=0 KEEP_LAYERS=0 BLAS_THREADS=2 \
    STREAM_S=${STREAM_S:-400} DEADLINE_S=${DEADLINE_S:-410} STREAM_GPUS="0 1 2" \
    STREAMS="$streams" bash bench/device_round.sh >"$w/round.txt" 2>&1) &
round=$!
gpu3() {
    export CUDA_VISIBLE_DEVICES=3
    gpu_tests "$w" 200 "$w/results.txt"
    stamp "gpu tests done"
    local s
    s=$(date +%s)
    G70_S=${G70_S:-200} gptq_70b "$w/s70_gptq.txt"
    echo "RESULT|70B layer calibrate + GPU GPTQ|rc=$?|wall $(($(date +%s) - s)) s" >>"$w/results.txt"
    grep -E "gptq:|layer 0 done|calibration:|peak" "$w/s70_gptq.txt" >>"$w/results.txt"
    stamp "70B GPTQ done"
    synth_70b /tmp/synth70b 2 "$w/synth.txt"
    stamp "inference checkpoints written"
    for m in /tmp/synth70b/quantized /tmp/synth70b/quantized-1 /tmp/synth70b /tmp/synth70b-1; do
        echo "== $m"
        timeout 100 bin/flatq run "$m" --device cuda --bench --batch 1,8 --prompt-len 2048 \
            --gen-len 32 2>&1 | grep -v '^$'
    done >"$w/bench-tp1.txt" 2>&1
    stamp "runtime bench done"
}
timeout -k 5 "${WALL_S:-450}" bash -c "$(declare -f gpu3 stamp synth_70b gpu_tests gptq_70b); w=$w; t0=$t0; gpu3"
wait $round
{
    cat "$w/device.txt" "$w/results.txt"
    grep -h "FAIL" "$w/test_gpu_gptq.txt" "$w"/gputests/*.out 2>/dev/null | head -20
    grep -h "^ROW|gptq|layer" "$w/test_gpu_gptq.txt"
    grep -h "^BENCH" "$w/bench-tp1.txt"
    grep -h "^ABL\|RESULT" "$final/round/summary.txt" 2>/dev/null
} >"$final/summary.txt"
tar -C /tmp -czf "$final/s10c3.tgz" s10c3
cat "$final/summary.txt"
