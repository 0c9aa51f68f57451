#!/usr/bin/env bash
# device_decode_prof.sh — where the W4A4 decode step's time goes, kernel by kernel (issues 7
# and 8). One GPU. On a 2-layer LLaMA-3-70B-shaped quantized checkpoint (written here by
# `flatq synth`, never carried):
#   1. `flatq run --bench --profile` at batch 1 and 8 (CUDA events between ops, as the
#      session-6 table), 2 layers and the 1-layer view;
#   2. the same decode steps under Nsight Compute (gpu__time_duration of every kernel,
#      clocks as they are): the sum of kernel time per op against the events' op time says
#      how much of each op is launch gap rather than kernel;
#   3. optionally (GPU_TESTS=1) the GPU tests first, (SANITIZE=1) compute-sanitizer's
#      memcheck on test_gpu_w4a4 and (KERNEL_BENCH=1) bench_w4a4's decode table after;
#      BF16=1 adds the BF16 checkpoints to step 1 (the baseline of the same run).
# Carried: bin, build/gpu-tests, build/bench, .dev/lib, .dev/data (GPU tests). Output: $OUT/summary.txt + logs.
set -u
. bench/device_common.sh
device_begin decprof
synth_70b /tmp/synth70b 2 "$w/synth.txt" &
synth=$!
if [ "${GPU_TESTS:-0}" = 1 ]; then
    gpu_tests "$w" "${GPU_TESTS_S:-200}" "$w/results.txt"
    stamp "gpu tests done"
fi
wait $synth || echo "RESULT|synth|failed" >>"$w/results.txt"
stamp "checkpoints written"
for m in /tmp/synth70b/quantized /tmp/synth70b/quantized-1 ${BF16:+/tmp/synth70b /tmp/synth70b-1}; do
    echo "== $m"
    timeout 120 bin/flatq run "$m" --device cuda --bench --batch "${BATCHES:-1,8}" \
        --prompt-len 2048 --gen-len 64 --profile 2>&1 | grep -v '^$'
done >"$w/bench.txt" 2>&1
stamp "event profile done"
for b in ${NCU_BATCHES:-1 8}; do
    timeout 240 ncu --clock-control none --metrics gpu__time_duration.sum --csv \
        --print-units base bin/flatq run /tmp/synth70b/quantized --device cuda --bench \
        --batch "$b" --prompt-len 2048 --gen-len 3 >"$w/ncu_b$b.csv" 2>"$w/ncu_b$b.err"
    echo "RESULT|ncu b$b|rc=$?" >>"$w/results.txt"
    python3 - "$w/ncu_b$b.csv" "$b" >"$w/ncu_b$b.txt" 2>&1 <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
hdr = rows[0]; rows = rows[1:]
ki, vi = hdr.index("Kernel Name"), hdr.index("Metric Value")
names = [r[ki] for r in rows]; ns = [float(r[vi].replace(",", "")) for r in rows]
# the last decode step: kernels after the last occurrence of the first decode kernel
# pattern; simpler: take the last third of the run (3 decode steps after the prefill) and
# print per step the kernels of the final step in order
n = len(names)
print(f"kernels profiled: {n}")
# find the step length: the embedding kernel starts every forward
starts = [i for i, k in enumerate(names) if "embed" in k.lower()]
print("forward starts at kernel indices:", starts)
if len(starts) >= 2:
    a, b = starts[-1], n
    tot = collections.OrderedDict()
    print(f"batch {sys.argv[2]}: last decode step, kernels {a}..{b - 1}")
    for i in range(a, b):
        print(f"  {ns[i] / 1e3:9.2f} us  {names[i][:110]}")
        key = names[i].split("(")[0].split("<")[0].replace("void ", "").strip()
        tot[key] = tot.get(key, 0) + ns[i]
    print("  per kernel name (sum over the step, 2 layers + head):")
    for k, v in sorted(tot.items(), key=lambda kv: -kv[1]):
        print(f"  {v / 1e3:9.2f} us  {k}")
    print(f"  step kernel time {sum(ns[a:b]) / 1e3:.2f} us")
PY
done
stamp "ncu done"
if [ "${SANITIZE:-0}" = 1 ]; then
    timeout "${SANITIZE_S:-150}" compute-sanitizer --tool memcheck build/gpu-tests/test_gpu_w4a4 \
        >"$w/sanitize.txt" 2>&1
    echo "RESULT|compute-sanitizer test_gpu_w4a4|rc=$?|$(grep -h 'ERROR SUMMARY' "$w/sanitize.txt" | tail -1)" >>"$w/results.txt"
    stamp "sanitizer done"
fi
if [ "${KERNEL_BENCH:-0}" = 1 ]; then
    timeout "${KBENCH_S:-150}" build/bench/bench_w4a4 "$w/w4a4_decode.txt" decode >"$w/bench_w4a4.out" 2>&1
    stamp "kernel bench done"
fi
{
    cat "$w/device.txt" "$w/results.txt"
    grep -h "^SUMMARY\|FAIL" "$w"/gputests/*.out 2>/dev/null | head -20
    grep -h "gpu-tests:\|!!!" "$w/gpu-tests.txt" 2>/dev/null | head -20
    grep -h "FAIL" "$w"/gputests/gpu-tests-rows.txt 2>/dev/null | head -20
    grep -hE "^BENCH|^==|ms|tok" "$w/bench.txt" 2>/dev/null | head -120
    cat "$w"/ncu_b*.txt
    cat "$w/w4a4_decode.txt" 2>/dev/null
} >"$final/summary.txt"
cat "$final/summary.txt" | head -400
tar -C /tmp -czf "$final/decprof.tgz" decprof 2>/dev/null
ls -la "$final"
