#!/usr/bin/env bash
# device_final.sh — one GPU-machine call that checks a merged tree end to end: the GPU op and
# runtime tests (tests/gpu/run.sh, prebuilt), the issue-10 ablation runs named in ABL (with
# their checkpoints scored by the GPU runtime and, on the first windows, by the fake-quant
# CPU eval for the GPU-vs-CPU agreement of a real FlatQuant W4A4KV4 checkpoint).
# Expects bin/flatq, build/gpu-tests/, .dev/lib and .dev/data carried along.
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH="$PWD/.dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FLATQ_DATA="$PWD/.dev/data"
out=${OUT:-/tmp/out}
mkdir -p "$out"
nvidia-smi -L
echo "== tests/gpu"
GPU_TESTS_PREBUILT=1 GPU_TESTS_LOG_DIR="$out/gputests" timeout "${GPU_TESTS_S:-150}" \
    bash tests/gpu/run.sh 2>&1 | tail -n "${GPU_TESTS_TAIL:-60}"
echo "RESULT|gpu-tests|rc=${PIPESTATUS[0]}"
echo "== ablation"
# shellcheck disable=SC2086
[ -n "${ABL:-}" ] && timeout "${ABL_S:-200}" bash bench/device_ablation_16m.sh $ABL
text=$FLATQ_DATA/text/wikitext-2-raw/wiki.test.paper.txt
for d in /tmp/abl-*; do
    [ -f "$d/config.json" ] || continue
    cpu=$(OPENBLAS_NUM_THREADS=16 timeout 120 bin/flatq eval --model "$d" --text "$text" \
        --seqlen 2048 --max-windows 8 --json 2>>"$out/eval.err" | grep -o '"ppl": *[0-9.]*')
    gpu=$(timeout 60 bin/flatq eval --model "$d" --text "$text" --seqlen 2048 --max-windows 8 \
        --device cuda --json 2>>"$out/eval.err" | grep -o '"ppl": *[0-9.]*')
    echo "RESULT|$(basename "$d")|8 windows|cpu $cpu|gpu $gpu"
done
tail -5 "$out/eval.err" 2>/dev/null
