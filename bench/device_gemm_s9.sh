#!/usr/bin/env bash
# device_gemm_s9.sh — one call (session 9; issues 7 and 8): the prefill kernels of session
# 9 against the ones they replaced, as kernels and in the runtime. SWITCH names the runtime
# switch the W4A4 runs are repeated with (=1, the new default, and =0):
# FLATQ_GEMM_WGMMA (default; the wgmma GEMM of kernels/w4a4_gemm_sm90.cu against mma.sync)
# or FLATQ_TRANSFORM_GEMM (the cuBLAS prefill transform against the per-token kernel).
# Every log returns as summary.txt plus gemms9.tgz, also when WALL_S (570) stops it.
#   GPU 0: test_gpu_w4a4 alone first (the new kernel's bit-exact checks, in seconds), then
#     bench_w4a4's prefill linear rows (M 2048–16384, 70B shapes at TP 1/2/4: wgmma,
#     mma.sync, the other wgmma forms (the warp-specialised one only if its test rows passed
#     just before), cuBLAS BF16, cuBLASLt FP8, both transforms), then `flatq run --bench` at TP 1
#     on the 2-layer 70B-shaped checkpoints (W4A4 with $SWITCH=1 and 0, BF16; 2 − 1
#     layers = one layer), and one W4A4 run with --profile (the prefill's op split);
#   GPU 1: the whole GPU test suite (tests/gpu/run.sh), then with SANITIZE=1
#     compute-sanitizer memcheck on test_gpu_w4a4;
#   GPUs 2–3 (on a 4-GPU machine): the same runtime benchmark at TP 2;
#   the CPU writes the checkpoints meanwhile.
# Carried: bin, build/gpu-tests, build/bench/bench_w4a4, .dev/lib (and for the runtime
# test's 16m rows .dev/data/models/flatq-llama-16m, .dev/data/text/tinystories).
set -u
. bench/device_common.sh
device_begin gemms9
SWITCH=${SWITCH:-FLATQ_GEMM_WGMMA}
stages() {
    MPI="mpirun --allow-run-as-root --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE -x CUDA_VISIBLE_DEVICES -x $SWITCH"
    ngpu=$(nvidia-smi -L | wc -l)
    synth_70b /tmp/synth70b 2 "$w/synth.txt" &
    synth=$!
    # SANITIZE=1: then compute-sanitizer memcheck on test_gpu_w4a4 on the same GPU
    (CUDA_VISIBLE_DEVICES=1 gpu_tests "$w" 240 "$w/results.txt"
     if [ "${SANITIZE:-0}" = 1 ]; then
         CUDA_VISIBLE_DEVICES=1 timeout 150 compute-sanitizer --tool memcheck \
             build/gpu-tests/test_gpu_w4a4 >"$w/sanitizer_w4a4.txt" 2>&1
         echo "RESULT|sanitizer test_gpu_w4a4|rc=$?|$(grep -h 'ERROR SUMMARY' "$w/sanitizer_w4a4.txt")" >>"$w/results.txt"
     fi) &
    tests=$!
    CUDA_VISIBLE_DEVICES=0 timeout 100 build/gpu-tests/test_gpu_w4a4 >"$w/w4a4_first.out" 2>&1
    rc=$?
    echo "RESULT|test_gpu_w4a4 first|rc=$rc|$(grep -c '|PASS$' "$w/w4a4_first.out") PASS rows, $(grep -c '|FAIL$' "$w/w4a4_first.out") FAIL rows" >>"$w/results.txt"
    stamp "test_gpu_w4a4 done"
    # the warp-specialised wgmma form joins the kernel table only once its rows passed
    if [ $rc = 0 ] && grep -q 'wgmma-ws.*|PASS$' "$w/w4a4_first.out"; then
        export BENCH_WGMMA_WS=1
    fi
    CUDA_VISIBLE_DEVICES=0 timeout "${KB_S:-200}" build/bench/bench_w4a4 "$w/w4a4_prefill.txt" prefill \
        >"$w/bench_w4a4.out" 2>&1
    stamp "kernel bench done"
    wait $synth
    stamp "inference checkpoints written"
    bench() { # tp gpus file
        for m in /tmp/synth70b/quantized /tmp/synth70b/quantized-1 /tmp/synth70b /tmp/synth70b-1; do
            for wg in 1 0; do
                case $m in */quantized*) ;; *) [ $wg = 0 ] && continue ;; esac
                echo "== $m tp=$1 $SWITCH=$wg"
                env "$SWITCH=$wg" CUDA_VISIBLE_DEVICES=$2 timeout 120 $MPI -np "$1" bin/flatq run "$m" \
                    --device cuda --bench --batch 1,8 --prompt-len 2048 --gen-len 32 2>&1 |
                    grep --line-buffered -v '^$' | sed -u "s/^BENCH|/BENCH|sw=$wg|/"
            done
        done >"$w/$3" 2>&1
    }
    [ "$ngpu" -ge 4 ] && { bench 2 2,3 bench-tp2.txt; stamp "tp2 bench done"; } &
    tp2=$!
    bench 1 0 bench-tp1.txt
    stamp "tp1 bench done"
    # where the W4A4 prefill's time goes now (op marks synchronise: a separate run)
    CUDA_VISIBLE_DEVICES=0 timeout 100 bin/flatq run /tmp/synth70b/quantized --device cuda --bench \
        --batch 8 --prompt-len 2048 --gen-len 16 --profile >"$w/profile-tp1.txt" 2>&1
    stamp "tp1 profile done"
    wait $tests $tp2
    stamp "all done"
}
timeout -k 5 "${WALL_S:-570}" bash -c "$(declare -f stages stamp synth_70b gpu_tests); w=$w; t0=$t0; SWITCH=$SWITCH; SANITIZE=${SANITIZE:-0}; stages"
echo "== stages rc $? at $(($(date +%s) - t0)) s" >>"$w/results.txt"
{
    cat "$w/device.txt" "$w/results.txt"
    grep -h "wgmma\|FAIL" "$w/w4a4_first.out" 2>/dev/null | head -40
    grep -h "^SUMMARY\|FAIL" "$w"/gputests/*.out 2>/dev/null | head -40
    grep -h "gpu-tests:\|!!!" "$w/gpu-tests.txt" 2>/dev/null | head
    cat "$w/w4a4_prefill.txt" 2>/dev/null
    tail -5 "$w/bench_w4a4.out" 2>/dev/null
    grep -hE "^BENCH|^==|rror" "$w"/bench-tp*.txt 2>/dev/null
    grep -v "^PROFILE|" "$w/profile-tp1.txt" 2>/dev/null | tail -40
} >"$final/summary.txt"
cat "$final/summary.txt"
tar -C /tmp -czf "$final/gemms9.tgz" gemms9
ls -la "$final"
