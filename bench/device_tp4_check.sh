#!/usr/bin/env bash
# device_tp4_check.sh — for a 4-GPU machine (nvidia-h100-x4 / nvidia-h200-x4), one call:
#  1. one quantized checkpoint at TP = 1, 2, 4: a synthetic LLaMA-3-70B-shaped W4A4KV4
#     model (2 layers, identity transforms in 8 TP blocks, `flatq synth --tp-blocks 8`)
#     and its BF16 twin, ppl of the first TP_WINDOWS (64) windows of wiki.test.paper at
#     TP 1/2/4 — the same function within 1e-3 (the synthetic model's ppl is that of random
#     weights; what is checked is that the sharding changes nothing). Enough windows: a
#     4-bit model's per-window ppl moves by 1e-3…2e-2 under any change of summation order,
#     which averages out (bench/tp_equality.sh);
#  2. bench/bench_70b.sh at TP 4, 2, 1 (BF16 and W4A4KV4 side by side, per-op profile).
# Carried: bin/flatq, .dev/lib, .dev/data/text/wikitext-2-raw. Logs under $OUT.
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH="$PWD/.dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
out=${OUT:-/tmp/out}
mkdir -p "$out" lib && cp .dev/lib/* lib/ 2>/dev/null
t_start=$(date +%s)
dir=/tmp/synth70b
nvidia-smi -L
bin/flatq synth "$dir" --shape llama-3-70b --layers 2 --quantized --tp-blocks 8 || exit 1
echo "== 1. the same checkpoint at TP 1, 2, 4"
OUT=$out TP_TIMEOUT_S=120 bash bench/tp_equality.sh "$dir" "$dir/quantized"
tail -3 "$out/tp.err" 2>/dev/null
echo "== 2. throughput (elapsed $(($(date +%s) - t_start)) s)"
SYNTH_DIR=$dir W4A4=1 LAYERS=2 GEN=16 PROFILE=1 TPS="${TPS:-4 2 1}" BATCHES=${BATCHES:-1,8,64} \
    timeout $((${CALL_S:-560} - $(date +%s) + t_start)) bash bench/bench_70b.sh 2>&1 | tee "$out/bench70b.log"
echo "== done at $(($(date +%s) - t_start)) s"
