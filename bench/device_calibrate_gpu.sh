#!/usr/bin/env bash
# device_calibrate_gpu.sh — the full-recipe FlatQuant calibrations of issue 4's accuracy
# table with the CUDA backend (device: cuda) on the GPU machine: flatq-llama-16m (128 × 2048
# WikiText-2 valid tokens) and stories260K (128 × 512), each evaluated on wiki.test.paper.
# NP ranks: rank 0 coordinates (FP pass on GPU 0), the others are workers that take the
# node's GPUs in order (several share one GPU when there are fewer GPUs than workers).
# Expects bin/flatq built on the CI-class machine, .dev/lib (libyaml) and .dev/data carried.
# Extra arguments go to both calibrate commands (e.g. --set quantization.epochs=5).
set -uo pipefail
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export LD_LIBRARY_PATH="$PWD/.dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FLATQ_DATA="$PWD/.dev/data" FLATQ_PROGRESS=plain
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-4}"
out="${OUT:-/tmp/out}"
np="${NP:-4}"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
run() { # name job extra...
    local name=$1 job=$2
    shift 2
    /usr/bin/time -f "$name wall %e s, max RSS %M KB" mpirun --allow-run-as-root --oversubscribe \
        --bind-to none -np "$np" bin/flatq calibrate "$job" --set device=cuda \
        --set output=/tmp/$name --set eval.methods=[flatquant] "$@" 2>&1 | tee "$out/$name.log"
    grep -h '"seconds"' /tmp/$name/layer_*.stats.json 2>/dev/null | head -20 >"$out/$name.layer_seconds"
    cp /tmp/$name/report.* "$out/" 2>/dev/null
    tar -C /tmp/$name --exclude=cache -czf /tmp/$name.ckpt.tgz . &&
        split -b 15m -d /tmp/$name.ckpt.tgz "$out/$name.ckpt.tgz."
}
run fq16m jobs/flatq-llama-16m.yaml "$@"
run fq260k jobs/stories260K-accuracy.yaml --set eval.text=[$FLATQ_DATA/text/wikitext-2-raw/wiki.test.paper.txt] "$@"
ls -la "$out"
