#!/usr/bin/env bash
# device_x4_s5.sh — one call on a 4-GPU machine for issues 6, 7 and 8; every log returns
# as one tarball (results.tgz.NN) plus summary.txt, also when WALL_S (default 500) stops it.
#   phase 1, side by side: GPU 0 the GPU tests; GPU 1 the decode-GEMM table of bench_w4a4;
#     GPU 3 compute-sanitizer memcheck of the W4A4 test; GPU 2 the TP 1 decode/prefill bench
#     of a synthetic 70B-shaped W4A4 checkpoint and its BF16 twin (2 layers and the 1-layer
#     view: per layer = difference); the CPU the cache I/O benchmark;
#   phase 2: TP 1/2/4 equality of both checkpoints (bench/tp_equality.sh);
#   phase 3 (what time is left): the whole calibration job (bench/device_synth_job.sh): one
#     layer on one GPU, then SCALE_LAYERS (8) layers on SCALE_GPUS (4) GPUs.
# Carried: bin, build/gpu-tests, build/bench, .dev/lib, .dev/data.
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH="$PWD/.dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FLATQ_DATA="$PWD/.dev/data"
final=${OUT:-/tmp/out}
w=/tmp/x4s5
rm -rf "$w" && mkdir -p "$w/gputests" "$final"
t0=$(date +%s)
stages() {
    stamp() { echo "STAGE|$1|$(($(date +%s) - t0)) s" >>"$w/results.txt"; }
    nvidia-smi -L >"$w/device.txt"
    (timeout 120 build/bench/bench_layer_cache --samples 32 --hidden 8192 1 8 16 \
        >"$w/layer_cache.txt" 2>&1) &
    (CUDA_VISIBLE_DEVICES=1 timeout 150 build/bench/bench_w4a4 "$w/w4a4_decode.txt" decode \
        >"$w/bench_w4a4.out" 2>&1) &
    (CUDA_VISIBLE_DEVICES=3 timeout 180 compute-sanitizer --tool memcheck --error-exitcode 3 \
        build/gpu-tests/test_gpu_w4a4 >"$w/sanitizer.txt" 2>&1
     echo "RESULT|compute-sanitizer memcheck test_gpu_w4a4|rc=$?" >>"$w/sanitizer.txt") &
    MPI="mpirun --allow-run-as-root --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE -x CUDA_VISIBLE_DEVICES"
    (bin/flatq synth /tmp/synth70b --shape llama-3-70b --layers 2 --quantized --tp-blocks 8 \
        >"$w/synth.txt" 2>&1
     bash bench/one_layer_view.sh /tmp/synth70b /tmp/synth70b-1
     bash bench/one_layer_view.sh /tmp/synth70b/quantized /tmp/synth70b/quantized-1
     for m in /tmp/synth70b/quantized /tmp/synth70b/quantized-1 /tmp/synth70b /tmp/synth70b-1; do
         echo "== $m tp=1"
         CUDA_VISIBLE_DEVICES=2 timeout 90 $MPI -np 1 bin/flatq run "$m" --device cuda --bench \
             --batch 1,8,64 --prompt-len 2048 --gen-len 64 --profile 2>&1 | grep --line-buffered -v '^$'
     done >"$w/bench-tp1.txt" 2>&1) &
    bench=$!
    (CUDA_VISIBLE_DEVICES=0 GPU_TESTS_PREBUILT=1 GPU_TESTS_LOG_DIR="$w/gputests" timeout 200 \
        bash tests/gpu/run.sh >"$w/gpu-tests.txt" 2>&1
     echo "RESULT|gpu-tests|rc=$?|$(grep -o 'gpu-tests: .*' "$w/gpu-tests.txt" | head -1)" >>"$w/results.txt") &
    tests=$!
    wait $bench
    stamp "tp1 bench done"
    wait $tests
    stamp "gpu tests done"
    wait # the kernel bench, the sanitizer, the cache I/O bench
    stamp "phase 1 done"
    OUT=$w TP_TIMEOUT_S=60 bash bench/tp_equality.sh /tmp/synth70b /tmp/synth70b/quantized \
        >>"$w/results.txt"
    stamp "tp check done"
    rm -rf /tmp/synth70b /tmp/synth70b-1
    OUT=$w LAYERS=${SCALE_LAYERS:-8} GPUS="${SCALE_GPUS:-4}" \
        EXTRA="${SCALE_EXTRA:---set quantization.epochs=1}" JOB_S=${SCALE_JOB_S:-120} \
        bash bench/device_synth_job.sh >"$w/synth_job.txt" 2>&1
    stamp "scaling done"
}
timeout -k 5 "${WALL_S:-500}" bash -c "$(declare -f stages); w=$w; t0=$t0; stages"
echo "== stages rc $? at $(($(date +%s) - t0)) s" >>"$w/results.txt"
{
    cat "$w/device.txt" "$w/results.txt"
    grep -h "^RESULT" "$w/sanitizer.txt" "$w/synth_job.txt" 2>/dev/null
    grep -h "ERROR SUMMARY" "$w/sanitizer.txt" 2>/dev/null
    grep -h "^SUMMARY\|FAIL" "$w"/gputests/*.out 2>/dev/null | head -20
    grep -E "^BENCH" "$w/bench-tp1.txt" 2>/dev/null
    cat "$w/w4a4_decode.txt" 2>/dev/null
    cat "$w/layer_cache.txt" 2>/dev/null
    tail -3 "$w/tp.err" 2>/dev/null
} >"$final/summary.txt"
cat "$final/summary.txt"
tar -C /tmp -czf /tmp/x4s5.tgz x4s5 && split -b 15m -d /tmp/x4s5.tgz "$final/results.tgz."
ls -la "$final"
