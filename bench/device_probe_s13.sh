#!/usr/bin/env bash
# device_probe_s13.sh — Nsight Compute on the fused TF32 transform + quantize
# (kernels/w4a4_quant_tc.cu) at bench_w4a4's prefill rows: qkv TP 1 M 2048 (64 × 128, one
# block), o's tp-8 M_o alone (8 × 128 blocks) and down's tp-8 blocks (56 × 64). Speed of
# light, warp stalls, shared-memory conflicts; the SASS of <8, 8>. Calls 3–5 of session 13
# ran it on the kernel's earlier forms (the first of <8, 8>, <4, 8>, and the 139th of <8, 8>).
# Carried: build/bench/bench_w4a4, .dev/lib.
set -u
. bench/device_common.sh
device_out
secs="--section SpeedOfLight --section WarpStateStats --section SourceCounters --section SchedulerStats --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables --section ComputeWorkloadAnalysis --section LaunchStats --section Occupancy"
# bench_w4a4 runs the fused kernel as the runtime does; the first launch of each
# instantiation (demangled: transform_quant_tc_kernel<(int)8, (int)8>) is a TP 1, M 2048 row:
# <8, 8> qkv (64 × 128), <1, 8> o's M_o alone (8 × 128 blocks), <7, 8> down's tp-8 blocks
# (56 × 64)
ncu_bench_launch tc_qkv "tc_kernel<.int.8, .int.8>" 0 $secs
ncu_bench_launch tc_o_tp8 "tc_kernel<.int.1, .int.8>" 0 $secs
ncu_bench_launch tc_down_tp8 "tc_kernel<.int.7, .int.8>" 0 $secs
cuobjdump -sass build/bench/bench_w4a4 2>/dev/null |
    awk '/Function :/{if(p)exit; if($0~/transform_quant_tc_kernelILi8ELi8E/)p=1} p{print}' >"$out/tc88.sass"
wc -l "$out/tc88.sass"
exit 0
