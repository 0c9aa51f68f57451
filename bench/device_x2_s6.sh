#!/usr/bin/env bash
# device_x2_s6.sh — one call on a 2-GPU machine (session 6; issues 6, 7 and 8); every log
# returns as one tarball (results.tgz.NN) plus summary.txt, also when WALL_S (520) stops it.
#   phase 1, side by side: GPU 0 the GPU tests; GPU 1 the whole calibration job on one
#     70B-shaped layer (bench/device_synth_job.sh, SYNTH_EPOCHS (1) epochs) with the
#     worker's phases/setup/io lines; the CPU writes the 2-layer W4A4/BF16 checkpoints;
#   phase 2, GPUs otherwise idle: GPU 0 the TP 1 decode/prefill bench (2 layers and the
#     1-layer view: per layer = difference), GPU 1 the decode-GEMM table of bench_w4a4;
#   phase 3: the same bench at TP 2 on both GPUs.
# Carried: bin, build/gpu-tests, build/bench, .dev/lib, .dev/data.
set -u
. bench/device_common.sh
device_begin x2s6
stages() {
    MPI="mpirun --allow-run-as-root --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE -x CUDA_VISIBLE_DEVICES"
    synth_70b /tmp/synth70b 2 "$w/synth.txt" &
    synth=$!
    CUDA_VISIBLE_DEVICES=0 gpu_tests "$w" 230 "$w/results.txt" &
    tests=$!
    (OUT=$w ONE_GPU=1 LAYERS=1 GPUS=" " EXTRA="--set quantization.epochs=${SYNTH_EPOCHS:-1}" \
        JOB_S=${ONE_JOB_S:-260} bash bench/device_synth_job.sh >"$w/synth_job.txt" 2>&1) &
    job=$!
    wait $synth
    stamp "inference checkpoints written"
    wait $tests
    stamp "gpu tests done"
    wait $job
    stamp "one-layer job done"
    bench() { # tp gpus file
        for m in /tmp/synth70b/quantized /tmp/synth70b/quantized-1 /tmp/synth70b /tmp/synth70b-1; do
            echo "== $m tp=$1"
            CUDA_VISIBLE_DEVICES=$2 timeout 90 $MPI -np "$1" bin/flatq run "$m" --device cuda --bench \
                --batch 1,8,64 --prompt-len 2048 --gen-len 64 --profile 2>&1 | grep --line-buffered -v '^$'
        done >"$w/$3" 2>&1
    }
    (bench 1 0 bench-tp1.txt) &
    b1=$!
    (CUDA_VISIBLE_DEVICES=1 timeout 150 build/bench/bench_w4a4 "$w/w4a4_decode.txt" decode \
        >"$w/bench_w4a4.out" 2>&1) &
    wait $b1
    stamp "tp1 bench done"
    wait
    stamp "kernel bench done"
    bench 2 0,1 bench-tp2.txt
    stamp "tp2 bench done"
}
timeout -k 5 "${WALL_S:-520}" bash -c "$(declare -f stages stamp synth_70b gpu_tests); w=$w; t0=$t0; MPI=''; stages"
echo "== stages rc $? at $(($(date +%s) - t0)) s" >>"$w/results.txt"
{
    cat "$w/device.txt" "$w/results.txt"
    grep -h "^RESULT\|phases:\|setup:\| io:" "$w/synth_job.txt" "$w"/one.log 2>/dev/null
    grep -h "^SUMMARY\|FAIL" "$w"/gputests/*.out 2>/dev/null | head -20
    grep -hE "^BENCH|^==" "$w/bench-tp1.txt" "$w/bench-tp2.txt" 2>/dev/null
    cat "$w/w4a4_decode.txt" 2>/dev/null
} >"$final/summary.txt"
cat "$final/summary.txt"
tar -C /tmp -czf /tmp/x2s6.tgz x2s6 && split -b 15m -d /tmp/x2s6.tgz "$final/results.tgz."
ls -la "$final"
