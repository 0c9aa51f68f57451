#!/usr/bin/env bash
# device_profile_tp2_s13.sh — where the prefill time goes at TP 2 against TP 1 (an x2 kind):
# `flatq run --bench --profile` on 2-layer LLaMA-3-70B-shaped checkpoints written here, W4A4KV4
# (tp-blocks 8) and BF16, batch 8, 2048-token prompts, at TP 2 and then TP 1. The profile is
# rank 0's. Carried: bin, .dev/lib.
set -u
. bench/device_common.sh
device_out
synth_70b /tmp/s70 2 "$out/synth.txt"
MPI="mpirun --allow-run-as-root --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE -x FLATQ_PROGRESS"
for tp in 2 1; do for m in /tmp/s70/quantized /tmp/s70; do
  echo "== $m tp=$tp"
  timeout 100 $MPI -np $tp bin/flatq run $m --device cuda --bench --batch 8 --prompt-len 2048 --gen-len 16 --profile 2>&1 | grep -v '^PROFILE|' | grep -v '^$'
done; done > $out/prof.txt 2>&1
grep -A14 'profile  ' $out/prof.txt | grep -v BENCH
