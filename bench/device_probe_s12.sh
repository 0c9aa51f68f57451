#!/usr/bin/env bash
# device_probe_s12.sh — Nsight Compute on single launches of the W4A4 prefill GEMM at the
# first prefill row of bench_w4a4 (qkv TP 1, M 2048): one K-block (MODE 0) and 8 K-blocks
# (MODE 1, the TP per-block scales, 0.42–0.49× the speed of one block in session 12): speed
# of light, warp stall reasons, the source lines they sit on, scheduler and memory tables;
# and the SASS of both. Session 12 ran an earlier form of it (calls 2 and 3: the cp.async
# and TMA versions; bench/results/ncu_h200_s12_gemm.txt). Carried: build/bench/bench_w4a4,
# .dev/lib.
set -u
. bench/device_common.sh
device_out
which ncu cuobjdump nvdisasm >"$out/tools.txt" 2>&1
secs="--section SpeedOfLight --section WarpStateStats --section SourceCounters --section SchedulerStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section LaunchStats"
# MODE 0 (one K-block): the 4th launch of the kernel; MODE 1 (8 K-blocks): its first
ncu_bench_launch mode0 "w4a4_gemm_wgmma<0," 3 $secs
ncu_bench_launch mode1 "w4a4_gemm_wgmma<1," 0 $secs
cuobjdump -sass build/bench/bench_w4a4 >"$out/all.sass" 2>"$out/sass.err"
fn() { awk -v re="$1" '/Function :/{if(p)exit; if($0~re)p=1} p{print}' "$out/all.sass"; }
fn 'w4a4_gemm_wgmmaILi0ELi256' >"$out/mode0.sass"
fn 'w4a4_gemm_wgmmaILi1ELi128' >"$out/mode1.sass"
rm -f "$out/all.sass"
wc -l "$out"/*.sass
exit 0
