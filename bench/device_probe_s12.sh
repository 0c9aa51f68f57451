#!/usr/bin/env bash
# device_probe_s12.sh — why the wgmma GEMMs stay near 600–700 TOPS (session 12): Nsight
# Compute on one launch of each form at the first prefill row of bench_w4a4 (qkv TP 1,
# M 2048: warp stall reasons, scheduler and memory tables), and the SASS of the x8 kernel.
set -u
out=${OUT:-/tmp/out}
mkdir -p "$out"
nvidia-smi -L >"$out/device.txt"
which ncu cuobjdump nvdisasm >"$out/tools.txt" 2>&1
secs="--section SpeedOfLight --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section LaunchStats --section Occupancy"
for k in w4a4_gemm_x8 w4a4_gemm_wgmma; do
    BENCH_WGMMA_X8=1 timeout -k 5 150 ncu --clock-control none --kill on $secs \
        --kernel-name "regex:$k" --launch-skip 3 --launch-count 1 \
        build/bench/bench_w4a4 /dev/null prefill >"$out/ncu_$k.txt" 2>&1
    echo "RESULT|ncu $k rc=$?"
done
cuobjdump -sass build/bench/bench_w4a4 >"$out/all.sass" 2>"$out/sass.err"
fn() { awk -v re="$1" '/Function :/{if(p)exit; if($0~re)p=1} p{print}' "$out/all.sass"; }
fn 'w4a4_gemm_x8ILi0ELi256' >"$out/x8.sass"
fn 'w4a4_gemm_wgmmaILi0ELi256ELi3' >"$out/wg3.sass"
rm -f "$out/all.sass"
wc -l "$out"/*.sass
exit 0
