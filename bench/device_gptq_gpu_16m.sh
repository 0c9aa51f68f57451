#!/usr/bin/env bash
# device_gptq_gpu_16m.sh — issue 10, session 10: the GPTQ pass on the GPU (coordinator/
# gptq_pass_cuda.h), checked and then used. One call:
#   - test_gpu_gptq alone on GPU 0 first (its rows in seconds), then the whole GPU test
#     suite beside the streams, and compute-sanitizer memcheck on test_gpu_gptq;
#   - one stream per seed of SEEDS (default 0–7): flatq-llama-16m, full recipe, device:
#     cuda (so the GPTQ pass runs on the GPU), `flatq eval --device cuda` over all 190
#     windows at 2048, one run per arm of ARMS, the arms rotated by seed so that a deadline
#     costs every arm alike. Arms: n32 (the shipped recipe: Hessians from 32 windows),
#     n32clip (+ gptq_clip_search), n128 (all 128 windows), n128clip.
#   Streams go round-robin over STREAM_GPUS (default "0 1 2 3"). Carried: bin,
#   build/gpu-tests, .dev/lib, .dev/data.
set -u
read -r -a arms <<<"${ARMS:-n32 n32clip n128 n128clip}"
spec() {
    case $1 in
    n32) echo "gptq+quantization.gptq_nsamples=32" ;;
    n32clip) echo "gptq+quantization.gptq_nsamples=32+quantization.gptq_clip_search=true" ;;
    n128) echo "gptq+quantization.gptq_nsamples=128" ;;
    n128clip) echo "gptq+quantization.gptq_nsamples=128+quantization.gptq_clip_search=true" ;;
    *) echo "$1" ;;
    esac
}
streams="" i=0 n=${#arms[@]}
for s in ${SEEDS:-0 1 2 3 4 5 6 7}; do
    st=""
    for k in $(seq 0 $((n - 1))); do
        st="$st${st:+ }$(spec "${arms[$(((k + i) % n))]}")+seed=$s"
    done
    streams="$streams${streams:+;}$st"
    i=$((i + 1))
done
mkdir -p "${OUT:-/tmp/out}"
export LD_LIBRARY_PATH="$PWD/.dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
CUDA_VISIBLE_DEVICES=0 timeout 120 build/gpu-tests/test_gpu_gptq >"${OUT:-/tmp/out}/test_gpu_gptq.txt" 2>&1
echo "RESULT|test_gpu_gptq first|rc=$?" >>"${OUT:-/tmp/out}/test_gpu_gptq.txt"
cat "${OUT:-/tmp/out}/test_gpu_gptq.txt"
STOP_ON_FAIL=1 SKIP_GPU_TESTS=${SKIP_GPU_TESTS:-0} SANITIZE=1 SANITIZE_BIN=test_gpu_gptq \
    KEEP_LAYERS=0 BLAS_THREADS=${BLAS_THREADS:-2} STREAM_S=${STREAM_S:-500} \
    DEADLINE_S=${DEADLINE_S:-510} STREAM_GPUS="${STREAM_GPUS:-0 1 2 3}" STREAMS="$streams" \
    bash bench/device_round.sh
