#!/usr/bin/env bash
# device_s11_x4.sh — session 11 on 4 GPUs (issue 6): the whole calibration job with the
# full recipe (15 epochs) on LAYERS (8) synthetic 70B-shaped layers, one worker on one
# layer first (the 1-GPU per-layer time) and then 4 workers on all layers
# (bench/device_synth_job.sh: efficiency, projections). Beside the 1-GPU run: the GPU tests
# of this session's kernels on GPU 1, bench_wside_cuda and bench_layer_step_cuda (70B, 8B)
# on GPU 2 — both finish before the 4-GPU job starts.
# Carried: bin, build/gpu-tests, build/bench, .dev (lib, data/text/wikitext-2-tokens).
set -u
. bench/device_common.sh
out=${OUT:-/tmp/out}
mkdir -p "$out"
t0=$(date +%s)
nvidia-smi -L >"$out/device.txt"
L=${LAYERS:-8}
bin/flatq synth /tmp/synthjob --shape llama-3-70b --layers "$L" >"$out/synth.txt" 2>&1 &&
    bash bench/one_layer_view.sh /tmp/synthjob /tmp/synthjob-1 || { echo "synth failed"; cat "$out/synth.txt"; exit 1; }
echo "STAGE|synthetic checkpoint|$(($(date +%s) - t0)) s"
(
    export CUDA_VISIBLE_DEVICES=1
    for t in ${TESTS:-test_gpu_quantizer test_gpu_kron test_gpu_fq_layer test_gpu_calibrate test_gpu_llama_layer test_gpu_gptq}; do
        timeout -k 5 100 build/gpu-tests/$t >"$out/$t.txt" 2>&1
        echo "RESULT|$t|rc=$?|rows $(grep -c '^ROW|' "$out/$t.txt"), failed $(grep -c '|FAIL$' "$out/$t.txt")"
        grep '|FAIL$' "$out/$t.txt" | head -5
    done
) >"$out/tests.txt" 2>&1 &
(
    export CUDA_VISIBLE_DEVICES=2
    timeout -k 5 60 build/bench/bench_wside_cuda --reps 7
    for s in 70b 8b; do
        timeout -k 5 80 build/bench/bench_layer_step_cuda --shapes $s --math bf16 --steps 3
    done
) >"$out/benches.txt" 2>&1 &
OUT=$out REUSE_SYNTH=1 SYNTH_JOB_DIR=/tmp/synthjob LAYERS=$L GPUS=4 JOB_S=${JOB_S:-330} \
    bash bench/device_synth_job.sh >"$out/scale.txt" 2>&1
echo "STAGE|jobs done|$(($(date +%s) - t0)) s"
wait
cat "$out/tests.txt"
grep -E 'ms/step|^bf16 |profiled' -A1 "$out/benches.txt" | grep -v '^--' | head -20
grep -E '^RESULT|FP pass|calibration:' "$out/scale.txt"
exit 0
