#!/usr/bin/env bash
# device_gptq_70b.sh — the GPTQ pass on LLaMA-3-70B-shaped layers, end to end on one GPU
# (issue 10's pass at 70B scale; session 10 projected ≈ 50 s per layer with the cuSOLVER
# factorisations), and `stress_wgmma` on every GPU of the machine beside it (the 2-buffer
# wgmma form's intermittent wrong answer of session 10, call 3).
#   LAYERS (1): synthetic layers; EPOCHS (2): calibration epochs (the pass does not depend
#   on them); GPTQ_BLAS (16): rank 0's BLAS threads (the LAPACK fallback); STRESS_RUNS
#   (1000). Carried: bin, build/bench/stress_wgmma, .dev/lib, .dev/data/text/wikitext-2-tokens.
# Prints the pass's per-layer line (forwards with Hessians, scales and factorisations,
# sweeps), the factorisation it used, and one stress table per GPU; logs under $OUT.
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export LD_LIBRARY_PATH="$PWD/.dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FLATQ_DATA="$PWD/.dev/data" FLATQ_PROGRESS=plain
out=${OUT:-/tmp/out}
mkdir -p "$out"
ngpu=$(nvidia-smi -L | wc -l)
for g in $(seq 0 $((ngpu - 1))); do
    CUDA_VISIBLE_DEVICES=$g timeout 200 build/bench/stress_wgmma "${STRESS_RUNS:-1000}" \
        >"$out/stress_gpu$g.txt" 2>&1 &
done
bin/flatq synth /tmp/s70 --shape llama-3-70b --layers "${LAYERS:-1}" >"$out/synth.txt" 2>&1 || exit 1
s=$(date +%s)
SYNTH_DIR=/tmp/s70 SYNTH_OUT=/tmp/s70-out OPENBLAS_NUM_THREADS=${GPTQ_BLAS:-16} CUDA_VISIBLE_DEVICES=0 \
    timeout "${JOB_S:-400}" mpirun --allow-run-as-root --bind-to none -np 2 \
    -x LD_LIBRARY_PATH -x FLATQ_DATA -x SYNTH_DIR -x SYNTH_OUT -x FLATQ_PROGRESS \
    -x OPENBLAS_NUM_THREADS -x CUDA_VISIBLE_DEVICES \
    bin/flatq calibrate jobs/synth-70b.yaml --set calibration.nsamples=32 \
    --set quantization.epochs="${EPOCHS:-2}" --set quantization.weight_quantizer=gptq \
    --set quantization.gptq_nsamples=32 --set quantization.gptq_clip_search=true \
    >"$out/gptq70b.txt" 2>&1
echo "RESULT|70B calibrate + GPU GPTQ, ${LAYERS:-1} layer(s)|rc=$?|wall $(($(date +%s) - s)) s"
grep -E "gptq:|layer [0-9]+ done|calibration:" "$out/gptq70b.txt"
wait
for g in $(seq 0 $((ngpu - 1))); do echo "== GPU $g"; cat "$out/stress_gpu$g.txt"; done
