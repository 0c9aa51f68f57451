#!/usr/bin/env bash
# device_probe_s13.sh — Nsight Compute on the fused TF32 transform + quantize
# (kernels/w4a4_quant_tc.cu) at bench_w4a4's prefill rows: qkv TP 1 M 2048 (64 × 128, one
# block: the first launch of <8, 8>), o's tp-8 M_o alone (8 × 128 blocks: the first of
# <4, 8>) and down's tp-8 blocks (56 × 64: the 139th launch of <8, 8>). Speed of light, warp stalls and where, shared-memory conflicts.
# Carried: build/bench/bench_w4a4, .dev/lib.
set -u
. bench/device_common.sh
device_out
secs="--section SpeedOfLight --section WarpStateStats --section SourceCounters --section SchedulerStats --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables --section ComputeWorkloadAnalysis --section LaunchStats --section Occupancy"
# bench_w4a4 runs the fused kernel as the runtime does: per row 23 timed launches for
# "quant" and 23 for "quant + gemm", and for o and down 23 of the tp-8 transform
# (demangled: transform_quant_tc_kernel<(int)8, (int)8>)
for k in "tc_kernel<.int.8, .int.8>:0:qkv" "tc_kernel<.int.4, .int.8>:0:o_tp8" "tc_kernel<.int.8, .int.8>:138:down_tp8"; do
    re=${k%%:*} rest=${k#*:} skip=${rest%%:*} name=${rest#*:}
    timeout -k 5 150 ncu --clock-control none --kill on $secs --kernel-name-base demangled \
        --kernel-name "regex:$re" --launch-skip "$skip" --launch-count 1 \
        build/bench/bench_w4a4 /dev/null prefill >"$out/ncu_tc_$name.txt" 2>&1
    echo "RESULT|ncu $name rc=$?"
    grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|One or More Eligible|Issued Warp|Registers Per|Bank Conflicts|Est. Speedup" \
        "$out/ncu_tc_$name.txt" | head -14
done
cuobjdump -sass build/bench/bench_w4a4 2>/dev/null |
    awk '/Function :/{if(p)exit; if($0~/transform_quant_tc_kernelILi8ELi8E/)p=1} p{print}' >"$out/tc88.sass"
wc -l "$out/tc88.sass"
exit 0
