#!/usr/bin/env bash
# device_calibrate_16m.sh — the full-recipe FlatQuant calibration of flatq-llama-16m with the
# CPU backend on a many-core machine (the GPU machine's 16 cores), one MPI worker per layer.
# Used for issue 4's accuracy table when the 2-core CI machine is too slow for the recipe.
# Expects bin/flatq built on the CI-class machine, .dev/lib (libyaml) and .dev/data (the
# model and texts) carried along. Writes the checkpoint (without its cache) as a tar under
# $OUT in parts below 15 MB, plus the log.
set -euo pipefail
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export LD_LIBRARY_PATH="$PWD/.dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FLATQ_DATA="$PWD/.dev/data" FLATQ_PROGRESS=plain
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-2}"
out="${OUT:-/tmp/out}"
dir=/tmp/flatq-16m
nproc; lscpu | grep -E 'Model name|^CPU\(s\)' || true
/usr/bin/time -v mpirun --allow-run-as-root --oversubscribe --bind-to none -np 7 bin/flatq \
    calibrate jobs/flatq-llama-16m.yaml --set output=$dir "$@" 2>&1 | tee "$out/calibrate.log"
# the full evaluation with every core for BLAS (the job's own eval ran on 1 window only)
OPENBLAS_NUM_THREADS=$(nproc) bin/flatq eval --model $dir --text .dev/data/text/wikitext-2-raw/wiki.test.paper.txt \
    --seqlen 2048 --json 2>&1 | tee "$out/eval_flatquant.json"
tar -C "$dir" --exclude=cache -czf /tmp/ckpt.tgz .
split -b 15m -d /tmp/ckpt.tgz "$out/ckpt.tgz."
ls -la "$out"
