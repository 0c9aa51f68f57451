#!/usr/bin/env bash
# device_s14b.sh — session 14's last call (one GPU): the binaries arrive as one archive
# (.dev/c14.tar.xz: bin/flatq, build/gpu-tests, build/bench/bench_w4a4; the 16m model and
# the text beside it would not fit the 64 MiB carry uncompressed), then
#   1. the whole GPU suite (tests/gpu/run.sh on the carried binaries, the 16m model carried);
#   2. compute-sanitizer memcheck on test_gpu_w4a4;
#   3. bench_w4a4's prefill rows, the linear and cuBLAS BF16 timed in turns (time_pair).
# Carried: .dev/c14.tar.xz, .dev/lib, .dev/data/models/flatq-llama-16m, .dev/data/text.
set -u
tar -xJf .dev/c14.tar.xz
. bench/device_common.sh
device_out
res() { echo "RESULT|$1|t $(($(date +%s) - t0)) s"; }
gpu_tests "$out" "${SUITE_S:-240}" "$out/suite.txt"
cat "$out/suite.txt"
grep -h '|FAIL$' "$out"/gputests/gpu-tests-rows.txt 2>/dev/null | head -10
res "suite"
timeout -k 5 "${SAN_S:-220}" compute-sanitizer --tool memcheck build/gpu-tests/test_gpu_w4a4 \
    >"$out/sanitizer_w4a4.txt" 2>&1
res "sanitizer test_gpu_w4a4 rc=$? $(grep -h 'ERROR SUMMARY' "$out/sanitizer_w4a4.txt")"
grep -c '^ROW|' "$out/sanitizer_w4a4.txt"
timeout -k 5 "${BENCH_S:-150}" build/bench/bench_w4a4 "$out/w4a4_prefill.txt" prefill >"$out/bench_w4a4.out" 2>&1
res "bench_w4a4 prefill rc=$?"
exit 0
