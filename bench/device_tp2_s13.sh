#!/usr/bin/env bash
# device_tp2_s13.sh — issue 8's prefill/decode comparison at TP 2 (an x2 kind), per layer:
# `flatq run --bench` on 2- and 1-layer LLaMA-3-70B-shaped checkpoints written here (W4A4KV4
# with tp-blocks 8, and BF16; per layer = 2 − 1 layers), batch 1 and 8, 2048-token prompts,
# 32 decode steps, then the same at TP 1 on one of the GPUs. The 80-layer run
# (bench/device_80l.sh) needs the disk of an x4 kind. Carried: bin, .dev/lib.
set -u
. bench/device_common.sh
device_out
res() { echo "RESULT|$1|t $(($(date +%s) - t0)) s"; }
synth_70b /tmp/s70 2 "$out/synth.txt"
res "checkpoints rc=$?"
MPI="mpirun --allow-run-as-root --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE -x FLATQ_PROGRESS"
for tp in ${TPS:-2 1}; do
    for m in /tmp/s70/quantized /tmp/s70/quantized-1 /tmp/s70 /tmp/s70-1; do
        echo "== $m tp=$tp"
        timeout 150 $MPI -np "$tp" bin/flatq run "$m" --device cuda --bench --batch 1,8 \
            --prompt-len 2048 --gen-len 32 2>&1 | grep -v '^$' | sed "s/^BENCH|/BENCH|tp$tp|/"
    done
done >"$out/tp.txt" 2>&1
res "runs"
grep -E "^BENCH|^==|rror" "$out/tp.txt"
exit 0
