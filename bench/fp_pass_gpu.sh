#!/bin/bash
# bench/fp_pass_gpu.sh — one GPU-machine session for the synth/FP-pass work: the GPU tests
# of the FP layer (tests/gpu/test_gpu_*), the FP pass CPU vs GPU on flatq-llama-16m and on
# a synthetic LLaMA-3-70B-shaped layer (128 × 2048 tokens), and `flatq synth` writing a
# 70B-shaped checkpoint (bf16 shards + the quantized format) to local disk.
#
# Run from the repository root of the GPU machine with prebuilt binaries in $BIN
# (bin/flatq, gpu-tests/, bench/fp_pass_gpu) and libyaml in $BIN/lib:
#   BIN=.dev/synth MODEL16M=.dev/data/models/flatq-llama-16m bash bench/fp_pass_gpu.sh
# Logs go to $OUT (default /tmp/fp_pass_gpu). SYNTH_LAYERS (default 4) sets the 70B depth.
set -u
BIN=${BIN:-build}
OUT=${OUT:-/tmp/fp_pass_gpu}
MODEL16M=${MODEL16M:-.dev/data/models/flatq-llama-16m}
SYNTH_LAYERS=${SYNTH_LAYERS:-4}
SYNTH_DIR=${SYNTH_DIR:-/tmp/synth-70b}
export LD_LIBRARY_PATH=$PWD/$BIN/lib:${LD_LIBRARY_PATH:-}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
nproc | sed 's/^/cpus: /' | tee -a "$OUT/device.txt"

echo "== GPU tests"
for t in "$BIN"/gpu-tests/test_gpu_*; do
    case $t in *.d) continue ;; esac
    n=$(basename "$t")
    timeout 120 "$t" >"$OUT/$n.out" 2>"$OUT/$n.err"
    echo "$n rc=$? $(grep -c '|PASS$' "$OUT/$n.out") pass $(grep -c '|FAIL$' "$OUT/$n.out") fail"
done
grep -h '^ROW|llama_layer\|^INFO' "$OUT"/test_gpu_llama_layer.out
grep -h '|FAIL$' "$OUT"/test_gpu_*.out

echo "== FP pass, flatq-llama-16m, 128 x 2048, CPU vs GPU"
timeout 150 "$BIN/bench/fp_pass_gpu" model "$MODEL16M" 128 2048 2>&1 | tee "$OUT/bench16m.txt"

echo "== FP layer, synthetic llama-3-70b shape, 128 x 2048 (CPU from 1 sequence)"
timeout 150 "$BIN/bench/fp_pass_gpu" synth llama-3-70b 128 2048 1 2>&1 | tee "$OUT/bench70b.txt"

echo "== flatq synth llama-3-70b x $SYNTH_LAYERS layers (+ quantized)"
rm -rf "$SYNTH_DIR"
/usr/bin/time -v timeout 200 "$BIN/bin/flatq" synth "$SYNTH_DIR" --shape llama-3-70b \
    --layers "$SYNTH_LAYERS" --seed 1 --quantized 2>"$OUT/synth70b.time" | tee "$OUT/synth70b.txt"
grep -E "Elapsed|Maximum resident" "$OUT/synth70b.time"
ls -la "$SYNTH_DIR" "$SYNTH_DIR/quantized" | tee -a "$OUT/synth70b.txt"
du -sh "$SYNTH_DIR" | tee -a "$OUT/synth70b.txt"
rm -rf "$SYNTH_DIR"
