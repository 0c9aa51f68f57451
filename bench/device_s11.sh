#!/usr/bin/env bash
# device_s11.sh — session 11's calls (2 GPUs), two chains side by side:
#   GPU 1: the GPU tests named in TESTS (test_gpu_kron test_gpu_fq_layer test_gpu_calibrate;
#          "all": the whole suite through tests/gpu/run.sh); WSIDE=1: bench_wside_cuda;
#          then bench_layer_step_cuda on STEP_SHAPES (70b), bf16 codes, once per entry of
#          STEP_VARIANTS ("none": no step bench):
#          "old" = .dev/old/bench_layer_step_cuda (the session's start, 71044af), "new" =
#          this tree; then stress_wgmma when STRESS_RUNS > 0.
#   GPU 0: gptq_70b (device_common.sh): one 70B-shaped layer calibrated for EPOCHS (1)
#          epoch on 32 windows, then the GPU GPTQ pass with the cuSOLVER factorisations.
# Call 1 ran it as bench/device_s11_call1.sh (TESTS default, STEP_VARIANTS "old new",
# STRESS_RUNS 1000). Carried: bin, build/gpu-tests, build/bench, .dev (lib, old,
# data/text/wikitext-2-tokens).
set -u
. bench/device_common.sh
device_out
(
    export CUDA_VISIBLE_DEVICES=1
    if [ "${TESTS:-}" = all ]; then # the whole suite (tests/gpu/run.sh on the carried binaries)
        gpu_tests "$out" "${SUITE_S:-300}" "$out/suite.txt"
        cat "$out/suite.txt"
        grep -h '|FAIL$' "$out"/gputests/gpu-tests-rows.txt 2>/dev/null | head -10
        TESTS=none
    fi
    [ "${WSIDE:-0}" = 1 ] && timeout -k 5 90 build/bench/bench_wside_cuda --reps 7 >"$out/wside.txt" 2>&1
    for t in ${TESTS:-test_gpu_kron test_gpu_fq_layer test_gpu_calibrate}; do
        [ "$t" = none ] && continue
        timeout -k 5 "${TEST_S:-150}" build/gpu-tests/$t >"$out/$t.txt" 2>&1
        rc=$?
        echo "RESULT|$t|rc=$rc|rows $(grep -c '^ROW|' "$out/$t.txt"), failed $(grep -c '|FAIL$' "$out/$t.txt")|t $(($(date +%s) - t0)) s"
        grep '|FAIL$' "$out/$t.txt" | head -5
    done
    for v in ${STEP_VARIANTS:-old new}; do
        [ "$v" = none ] && continue
        b=build/bench/bench_layer_step_cuda
        [ "$v" = old ] && b=.dev/old/bench_layer_step_cuda
        timeout -k 5 "${STEP_S:-150}" $b --shapes "${STEP_SHAPES:-70b}" --math bf16 --steps 3 \
            >"$out/step_$v.txt" 2>&1
        echo "RESULT|layer step ${STEP_SHAPES:-70b} bf16 ($v)|rc=$?|t $(($(date +%s) - t0)) s"
    done
    if [ "${STRESS_RUNS:-0}" -gt 0 ]; then
        timeout -k 5 90 build/bench/stress_wgmma "$STRESS_RUNS" >"$out/stress.txt" 2>&1
        echo "RESULT|stress_wgmma|rc=$?|t $(($(date +%s) - t0)) s"
    fi
) >"$out/gpu1.txt" 2>&1 &
CUDA_VISIBLE_DEVICES=0 LAYERS=1 EPOCHS=${EPOCHS:-1} G70_S=${G70_S:-400} gptq_70b "$out/gptq70b.txt"
echo "RESULT|70B calibrate + GPU GPTQ|rc=$?|t $(($(date +%s) - t0)) s"
wait
cat "$out/gpu1.txt"
grep -E "^gptq: layer|layer [0-9]+ done|^calibration:" "$out/gptq70b.txt" | head -10
for v in ${STEP_VARIANTS:-old new}; do
    [ "$v" = none ] && continue
    echo "== step $v"
    grep -A${PROF_LINES:-1} 'ms per profiled step' "$out/step_$v.txt"
    grep -E '^(fp32|tf32|bf16) ' "$out/step_$v.txt" | head -6
done
[ -f "$out/stress.txt" ] && tail -12 "$out/stress.txt"
[ -f "$out/wside.txt" ] && cat "$out/wside.txt"
exit 0
