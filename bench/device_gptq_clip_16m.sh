#!/usr/bin/env bash
# device_gptq_clip_16m.sh — issue 10: `quantization.gptq_clip_search` on flatq-llama-16m,
# paired with plain GPTQ on the same starts (SEEDS, default 0–7), full recipe, device: cuda,
# GPTQ from 32 windows, `flatq eval --device cuda` over all 190 windows at 2048. One stream
# per seed (both arms, in alternating order so a deadline costs both arms alike), streams
# spread over the GPUs (STREAM_GPUS, default "0 1"). Carried: bin, .dev/lib, .dev/data.
set -u
streams=""
i=0
for s in ${SEEDS:-0 1 2 3 4 5 6 7}; do
    b="gptq+quantization.gptq_nsamples=32+seed=$s"
    c="$b+quantization.gptq_clip_search=true"
    if [ $((i % 2)) = 0 ]; then st="$b $c"; else st="$c $b"; fi
    streams="$streams${streams:+;}$st"
    i=$((i + 1))
done
SKIP_GPU_TESTS=1 SANITIZE=0 KEEP_LAYERS=0 BLAS_THREADS=${BLAS_THREADS:-2} \
    STREAM_S=${STREAM_S:-520} DEADLINE_S=${DEADLINE_S:-545} STREAM_GPUS="${STREAM_GPUS:-0 1}" \
    STREAMS="$streams" bash bench/device_round.sh
