#!/usr/bin/env bash
# device_decode_s7.sh — one call on a 2-GPU machine (session 7; issues 7 and 8): the decode
# step after the small-kernel fixes, programmatic dependent launch on and off, and the BF16
# baseline now attending with the same split-context kernel (bf16 K/V) as the KV4 runtime.
# Every log returns as summary.txt plus decs7.tgz, also when WALL_S (560) stops it.
#   phase 1: GPU 1 the GPU tests; the CPU writes the 2-layer 70B-shaped W4A4/BF16
#     checkpoints (and their 1-layer views: per layer = 2 layers − 1 layer);
#   phase 2: GPU 0 `flatq run --bench` at TP 1 (W4A4 with FLATQ_PDL=1 and 0, BF16), then
#     the --profile tables; GPU 1 meanwhile bench_w4a4's decode GEMM and attention tables;
#   phase 3: TP 2 on both GPUs (W4A4 PDL on/off, BF16), then Nsight Compute's kernel
#     times of one TP 1 batch-1 decode step (NCU=1).
# Carried: bin, build/gpu-tests, build/bench, .dev/lib, .dev/data.
set -u
. bench/device_common.sh
device_begin decs7
stages() {
    MPI="mpirun --allow-run-as-root --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE -x CUDA_VISIBLE_DEVICES -x FLATQ_PDL"
    synth_70b /tmp/synth70b 2 "$w/synth.txt" &
    synth=$!
    CUDA_VISIBLE_DEVICES=1 gpu_tests "$w" 200 "$w/results.txt" &
    tests=$!
    wait $synth
    stamp "inference checkpoints written"
    wait $tests
    stamp "gpu tests done"
    bench() { # tp gpus file [--profile]
        for m in /tmp/synth70b/quantized /tmp/synth70b/quantized-1 /tmp/synth70b /tmp/synth70b-1; do
            for pdl in 1 0; do
                case $m in */quantized*) ;; *) [ $pdl = 0 ] && continue ;; esac
                [ -n "${4:-}" ] && [ $pdl = 0 ] && continue
                echo "== $m tp=$1 pdl=$pdl"
                FLATQ_PDL=$pdl CUDA_VISIBLE_DEVICES=$2 timeout 100 $MPI -np "$1" bin/flatq run "$m" \
                    --device cuda --bench --batch 1,8,64 --prompt-len 2048 --gen-len 64 ${4:-} 2>&1 |
                    grep --line-buffered -v '^$' | sed -u "s/^BENCH|/BENCH|pdl=$pdl|/"
            done
        done >"$w/$3" 2>&1
    }
    (bench 1 0 bench-tp1.txt; stamp "tp1 bench done"
     bench 1 0 profile-tp1.txt --profile; stamp "tp1 profile done") &
    b1=$!
    (CUDA_VISIBLE_DEVICES=1 timeout 200 build/bench/bench_w4a4 "$w/w4a4_decode.txt" decode \
        >"$w/bench_w4a4.out" 2>&1
     CUDA_VISIBLE_DEVICES=1 timeout 120 build/bench/bench_w4a4 "$w/w4a4_attn.txt" attn \
        >>"$w/bench_w4a4.out" 2>&1) &
    kb=$!
    wait $b1
    wait $kb
    stamp "kernel bench done"
    bench 2 0,1 bench-tp2.txt
    stamp "tp2 bench done"
    if [ "${NCU:-1}" = 1 ]; then
        CUDA_VISIBLE_DEVICES=0 timeout 120 ncu --clock-control none --metrics gpu__time_duration.sum \
            --csv --print-units base bin/flatq run /tmp/synth70b/quantized --device cuda --bench \
            --batch 1 --prompt-len 2048 --gen-len 3 >"$w/ncu_b1.csv" 2>"$w/ncu_b1.err"
        stamp "ncu done"
    fi
}
timeout -k 5 "${WALL_S:-560}" bash -c "$(declare -f stages stamp synth_70b gpu_tests); w=$w; t0=$t0; stages"
echo "== stages rc $? at $(($(date +%s) - t0)) s" >>"$w/results.txt"
{
    cat "$w/device.txt" "$w/results.txt"
    grep -h "^SUMMARY\|FAIL" "$w"/gputests/*.out 2>/dev/null | head -20
    grep -h "gpu-tests:\|!!!" "$w/gpu-tests.txt" 2>/dev/null | head
    grep -hE "^BENCH|^==" "$w/bench-tp1.txt" "$w/bench-tp2.txt" 2>/dev/null
    grep -hE "^PROFILE|^==" "$w/profile-tp1.txt" 2>/dev/null
    cat "$w/w4a4_decode.txt" "$w/w4a4_attn.txt" 2>/dev/null
} >"$final/summary.txt"
cat "$final/summary.txt"
tar -C /tmp -czf "$final/decs7.tgz" decs7
ls -la "$final"
