#!/usr/bin/env bash
# device_s12.sh — session 12's calls (one GPU, stages in order; each stage's log under $OUT):
#   1. W4A4=1 (default): test_gpu_w4a4 alone (the wgmma kernel's bit-exact rows, the TF32
#      transform's);
#      STRESS_RUNS > 0: then stress_wgmma with that many runs per case;
#   2. KB=1: bench_w4a4's $KB_WHAT rows (prefill: 70B shapes, TP 1/2/4, M 2048–16384);
#   3. SANITIZE=1: compute-sanitizer memcheck on test_gpu_w4a4;
#   4. SUITE=1: the whole GPU suite (tests/gpu/run.sh on the carried binaries);
#   5. STEP=1: bench_layer_step_cuda --shapes $STEP_SHAPES (70b) --math bf16 --steps 3;
#   6. RUNTIME=1: `flatq run --bench` at TP 1 on 2- and 1-layer LLaMA-3-70B-shaped
#      checkpoints written here (per layer = 2 − 1 layers): W4A4 with the session's defaults,
#      W4A4 with $RT_SWITCH=0 (FLATQ_TRANSFORM_TC: the cuBLAS transform; session 12 compared
#      FLATQ_TRANSFORM_TF32), BF16;
#      prompt 2048, batch 1 and 8, 32 generated tokens; then one W4A4 --profile run.
# Carried: bin, build/gpu-tests, build/bench, .dev/lib (and for the suite's runtime rows
# .dev/data/models/flatq-llama-16m, .dev/data/text/tinystories, .dev/data/text/wikitext-2-tokens).
set -u
. bench/device_common.sh
device_out
res() { echo "RESULT|$1|t $(($(date +%s) - t0)) s"; }

for tb in ${TESTS:-}; do # other test programs first (TESTS="test_gpu_runtime ...")
    timeout -k 5 150 build/gpu-tests/$tb >"$out/$tb.txt" 2>&1
    res "$tb rc=$? rows $(grep -c '^ROW|' "$out/$tb.txt"), failed $(grep -c '|FAIL$' "$out/$tb.txt")"
    grep '|FAIL$' "$out/$tb.txt" | head -5
done
if [ "${W4A4:-1}" = 1 ]; then
    timeout -k 5 "${W4A4_S:-150}" build/gpu-tests/test_gpu_w4a4 >"$out/w4a4.txt" 2>&1
    res "test_gpu_w4a4 rc=$? rows $(grep -c '^ROW|' "$out/w4a4.txt"), failed $(grep -c '|FAIL$' "$out/w4a4.txt")"
    grep '|FAIL$' "$out/w4a4.txt" | head -8
fi
if [ "${STRESS_RUNS:-0}" -gt 0 ]; then
    timeout -k 5 120 build/bench/stress_wgmma "$STRESS_RUNS" >"$out/stress.txt" 2>&1
    res "stress_wgmma rc=$?"
    cat "$out/stress.txt"
fi
if [ "${KB:-1}" = 1 ]; then
    timeout -k 5 "${KB_S:-240}" build/bench/bench_w4a4 "$out/w4a4_prefill.txt" "${KB_WHAT:-prefill}" \
        >"$out/bench_w4a4.out" 2>&1
    res "bench_w4a4 ${KB_WHAT:-prefill} rc=$?"
fi
if [ "${SANITIZE:-0}" = 1 ]; then
    timeout -k 5 "${SAN_S:-200}" compute-sanitizer --tool memcheck build/gpu-tests/test_gpu_w4a4 \
        >"$out/sanitizer_w4a4.txt" 2>&1
    res "sanitizer test_gpu_w4a4 rc=$? $(grep -h 'ERROR SUMMARY' "$out/sanitizer_w4a4.txt")"
fi
if [ "${SUITE:-0}" = 1 ]; then
    gpu_tests "$out" "${SUITE_S:-330}" "$out/suite.txt"
    cat "$out/suite.txt"
    grep -h '|FAIL$' "$out"/gputests/gpu-tests-rows.txt 2>/dev/null | head -10
    res "suite"
fi
if [ "${STEP:-0}" = 1 ]; then
    timeout -k 5 "${STEP_S:-150}" build/bench/bench_layer_step_cuda --shapes "${STEP_SHAPES:-70b}" \
        --math bf16 --steps 3 >"$out/step.txt" 2>&1
    res "layer step rc=$?"
    grep -A"${PROF_LINES:-14}" 'ms per profiled step' "$out/step.txt"
fi
if [ "${RUNTIME:-0}" = 1 ]; then
    synth_70b /tmp/synth70b 2 "$out/synth.txt"
    res "checkpoints rc=$?"
    for m in /tmp/synth70b/quantized /tmp/synth70b/quantized-1 /tmp/synth70b /tmp/synth70b-1; do
        for v in new old; do
            case $m in */quantized*) ;; *) [ $v = old ] && continue ;; esac
            sw=1
            [ $v = old ] && sw=0
            echo "== $m $v"
            env "${RT_SWITCH:-FLATQ_TRANSFORM_TC}=$sw" timeout 120 bin/flatq run "$m" --device cuda \
                --bench --batch 1,8 --prompt-len 2048 --gen-len 32 2>&1 | grep -v '^$' |
                sed "s/^BENCH|/BENCH|$v|/"
        done
    done >"$out/runtime.txt" 2>&1
    res "runtime bench"
    grep -E "^BENCH|^==|rror" "$out/runtime.txt"
    timeout 100 bin/flatq run /tmp/synth70b/quantized --device cuda --bench --batch 8 \
        --prompt-len 2048 --gen-len 16 --profile >"$out/profile.txt" 2>&1
    res "profile rc=$?"
    grep -v "^PROFILE|" "$out/profile.txt" | tail -30
fi
exit 0
