#!/usr/bin/env bash
# device_gptq_70b.sh — the GPTQ pass on LLaMA-3-70B-shaped layers, end to end on one GPU
# (issue 10's pass at 70B scale; session 10 projected ≈ 50 s per layer with the cuSOLVER
# factorisations), and `stress_wgmma` on every GPU of the machine beside it (the 2-buffer
# wgmma form's intermittent wrong answer of session 10, call 3).
#   LAYERS (1): synthetic layers; EPOCHS (2): calibration epochs (the pass does not depend
#   on them); GPTQ_BLAS (16): rank 0's BLAS threads (the LAPACK fallback); STRESS_RUNS
#   (1000); JOB_S → G70_S (400): the job's limit. Carried: bin, build/bench/stress_wgmma,
#   .dev/lib, .dev/data/text/wikitext-2-tokens.
# Prints the pass's per-layer line (forwards with Hessians, scales and factorisations,
# sweeps), the factorisation it used, and one stress table per GPU; logs under $OUT.
set -u
. bench/device_common.sh # MPI as root, .dev/lib, FLATQ_DATA, gptq_70b
export FLATQ_PROGRESS=plain
out=${OUT:-/tmp/out}
mkdir -p "$out"
ngpu=$(nvidia-smi -L | wc -l)
for g in $(seq 0 $((ngpu - 1))); do
    CUDA_VISIBLE_DEVICES=$g timeout 200 build/bench/stress_wgmma "${STRESS_RUNS:-1000}" \
        >"$out/stress_gpu$g.txt" 2>&1 &
done
s=$(date +%s)
CUDA_VISIBLE_DEVICES=0 gptq_70b "$out/gptq70b.txt"
echo "RESULT|70B calibrate + GPU GPTQ, ${LAYERS:-1} layer(s)|rc=$?|wall $(($(date +%s) - s)) s"
grep -E "gptq:|layer [0-9]+ done|calibration:" "$out/gptq70b.txt"
wait
for g in $(seq 0 $((ngpu - 1))); do echo "== GPU $g"; cat "$out/stress_gpu$g.txt"; done
