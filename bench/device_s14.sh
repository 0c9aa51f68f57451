#!/usr/bin/env bash
# device_s14.sh — session 14's first call (one GPU), stages in order, logs under $OUT:
#   1. test_gpu_w4a4 (the fused kernel's 14-tile row of 6c2642f; the forced GEMM tiles);
#   2. BENCH=1: bench_w4a4's prefill rows (70B shapes, TP 1/2/4, M 2048–16384), with the
#      columns of the GEMM at each token tile forced (128 tokens at 5 and 8 stages, 256);
#   3. NCU=1: Nsight Compute (--set full) on the one-K-block GEMM of the narrow qkv slice
#      (TP 2, M 8192: 256-token tiles by default; then forced to 128) and of the TP 1 qkv
#      (M 8192, 128-token tiles by default): why the narrow slices run at ~47 % of the int8
#      peak where the wide ones run at ~70 %.
# Carried: build/gpu-tests, build/bench, .dev/lib.
set -u
. bench/device_common.sh
device_out
res() { echo "RESULT|$1|t $(($(date +%s) - t0)) s"; }

if [ "${W4A4:-1}" = 1 ]; then
    timeout -k 5 150 build/gpu-tests/test_gpu_w4a4 >"$out/w4a4.txt" 2>&1
    res "test_gpu_w4a4 rc=$? rows $(grep -c '^ROW|' "$out/w4a4.txt"), failed $(grep -c '|FAIL$' "$out/w4a4.txt")"
    grep '|FAIL$' "$out/w4a4.txt" | head -8
fi
if [ "${BENCH:-1}" = 1 ]; then
    timeout -k 5 "${BENCH_S:-300}" build/bench/bench_w4a4 "$out/w4a4_prefill.txt" prefill ${ROWS:-} \
        >"$out/bench_w4a4.out" 2>&1
    res "bench_w4a4 prefill rc=$?"
fi
# ncu_row NAME SKIP LAYER TP M: the (SKIP + 1)th one-K-block wgmma GEMM launch of that row
# (with BENCH_WARM_MS=0 each measurement is 3 + 20 launches: 0–22 the automatic tile; 23–45
# 128 tokens, 5 stages; 46–68 8 stages; 69–91 256)
ncu_row() {
    BENCH_WARM_MS=0 timeout -k 5 120 ncu --clock-control none --set full --import-source no --kernel-name-base demangled \
        --kernel-name "regex:w4a4_gemm_wgmma<.int.0," --launch-skip "$2" --launch-count 1 \
        build/bench/bench_w4a4 /dev/null prefill "$3" "$4" "$5" >"$out/ncu_$1.txt" 2>&1
    echo "RESULT|ncu $1 rc=$?"
    grep -E "w4a4_gemm_wgmma<|Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Hit Rate|DRAM Throughput|One or More Eligible|Issued Warp|Est. Speedup" \
        "$out/ncu_$1.txt" | head -16
}
if [ "${NCU:-1}" = 1 ]; then
    ncu_row qkv_tp2_auto 3 qkv 2 8192
    ncu_row qkv_tp2_t128 26 qkv 2 8192
    ncu_row qkv_tp1_auto 3 qkv 1 8192
fi
exit 0
