#!/usr/bin/env bash
# device_attn_s8.sh — one call (session 8; issues 7 and 8): the tensor-core attention
# (kernels/w4a4_attn.cu attn_tc) against the CUDA-core one, as kernels and in the runtime,
# on every GPU count the machine has (TP 1, 2 and, on 4 GPUs, 4).
# Every log returns as summary.txt plus attns8.tgz, also when WALL_S (570) stops it.
#   phase 1: GPU 1 the GPU tests; the last GPU (GPU 1 after the tests on 2 GPUs)
#     bench_w4a4's attention table (decode b1/b8 at 2k–32k, causal prefill at 2k/8k; both
#     kernels, KV4 and bf16 K/V); the CPU writes
#     the 2-layer 70B-shaped W4A4/BF16 checkpoints and their 1-layer views;
#   phase 2: GPU 0 `flatq run --bench` at TP 1, W4A4 and BF16, FLATQ_ATTN_TC=1 and 0;
#   phase 3: TP 2 and TP 4 (when there are 4 GPUs), both kernels (TPS: which degrees);
#   CALIB=1: then the calibration job on LAYERS (4) 70B-shaped layers, 1 epoch, 2 GPUs: the
#     FP pass's boundary cadence with the cache written beside it (layer start times).
# Carried: bin, build/gpu-tests, build/bench/bench_w4a4, .dev/lib, .dev/data.
set -u
. bench/device_common.sh
device_begin attns8
stages() {
    MPI="mpirun --allow-run-as-root --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE -x CUDA_VISIBLE_DEVICES -x FLATQ_ATTN_TC"
    ngpu=$(nvidia-smi -L | wc -l)
    synth_70b /tmp/synth70b 2 "$w/synth.txt" &
    synth=$!
    CUDA_VISIBLE_DEVICES=1 gpu_tests "$w" 240 "$w/results.txt" &
    tests=$!
    # the kernel table on a GPU of its own (GPU 2+), else on GPU 1 after the tests: the
    # tests' device-memory peaks (cudaMemGetInfo) read 0 with another process freeing
    # memory on their GPU (call 4)
    (if [ "$ngpu" -lt 3 ]; then while kill -0 $tests 2>/dev/null; do sleep 1; done; fi
     CUDA_VISIBLE_DEVICES=$((ngpu >= 3 ? ngpu - 1 : 1)) timeout 200 build/bench/bench_w4a4 \
         "$w/w4a4_attn.txt" attn >"$w/bench_w4a4.out" 2>&1) &
    kb=$!
    wait $synth
    stamp "inference checkpoints written"
    bench() { # tp gpus file
        for m in /tmp/synth70b/quantized /tmp/synth70b/quantized-1 /tmp/synth70b /tmp/synth70b-1; do
            for tc in 1 0; do
                echo "== $m tp=$1 attn_tc=$tc"
                FLATQ_ATTN_TC=$tc CUDA_VISIBLE_DEVICES=$2 timeout 120 $MPI -np "$1" bin/flatq run "$m" \
                    --device cuda --bench --batch 1,8,64 --prompt-len 2048 --gen-len 64 2>&1 |
                    grep --line-buffered -v '^$' | sed -u "s/^BENCH|/BENCH|tc=$tc|/"
            done
        done >"$w/$3" 2>&1
    }
    # TPS: the tensor-parallel degrees to time (default "1 2 4"; 4 only on 4 GPUs)
    for tp in ${TPS-1 2 4}; do
        [ "$tp" -gt "$ngpu" ] && continue
        bench "$tp" "$(seq -s, 0 $((tp - 1)))" "bench-tp$tp.txt"
        stamp "tp$tp bench done"
        if [ "$tp" = 1 ]; then
            wait $tests
            stamp "gpu tests done"
            wait $kb
            stamp "kernel bench done"
        fi
    done
    wait $tests $kb
    if [ "${CALIB:-0}" = 1 ]; then
        OUT=$w LAYERS=${LAYERS:-4} GPUS=2 EXTRA="--set quantization.epochs=1" JOB_S=200 \
            bash bench/device_synth_job.sh >"$w/calib.txt" 2>&1
        stamp "calibration job done"
    fi
}
timeout -k 5 "${WALL_S:-570}" bash -c "$(declare -f stages stamp synth_70b gpu_tests); w=$w; t0=$t0; stages"
echo "== stages rc $? at $(($(date +%s) - t0)) s" >>"$w/results.txt"
{
    cat "$w/device.txt" "$w/results.txt"
    grep -h "^SUMMARY\|FAIL" "$w"/gputests/*.out 2>/dev/null | head -40
    grep -h "attn" "$w"/gputests/*w4a4*.out 2>/dev/null | head -80
    grep -h "gpu-tests:\|!!!" "$w/gpu-tests.txt" 2>/dev/null | head
    cat "$w/w4a4_attn.txt" 2>/dev/null
    grep -hE "^BENCH|^==|rror" "$w"/bench-tp*.txt 2>/dev/null
    echo "== calib"; grep -v "^GPU [0-9]" "$w/calib.txt" 2>/dev/null
    grep -h "started\|done on" "$w"/gpus2.log 2>/dev/null
} >"$final/summary.txt"
cat "$final/summary.txt"
tar -C /tmp -czf "$final/attns8.tgz" attns8
ls -la "$final"
