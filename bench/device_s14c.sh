#!/usr/bin/env bash
# device_s14c.sh — bench_w4a4's M = 16384 prefill rows with a 400 ms warm-up per measurement
# (BENCH_WARM_MS), each side in its own steady state, the SM clock and power sampled every
# 100 ms beside it (nvidia-smi): is session 14's 50 ms warm-up a steady state? Carried:
# build/bench/bench_w4a4, .dev/lib.
set -u
. bench/device_common.sh
device_out
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu --format=csv,noheader -lms 100 \
    >"$out/clocks.csv" 2>&1 &
smi=$!
BENCH_WARM_MS=${WARM:-400} timeout -k 5 "${BENCH_S:-170}" build/bench/bench_w4a4 "$out/w4a4_prefill.txt" \
    prefill all 0 16384 >"$out/bench_w4a4.out" 2>&1
echo "RESULT|bench_w4a4 rc=$?|t $(($(date +%s) - t0)) s"
kill $smi
awk -F', ' '{split($2,c," "); split($3,p," "); n++; s+=c[1]; w+=p[1]; if(c[1]<mn||mn=="")mn=c[1]; if(c[1]>mx)mx=c[1]} END{print "clock MHz mean",s/n,"min",mn,"max",mx," power W mean",w/n}' "$out/clocks.csv"
exit 0
