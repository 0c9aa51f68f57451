#!/usr/bin/env bash
# device_tp4_check.sh — for a 4-GPU machine (nvidia-h100-x4 / nvidia-h200-x4), one call:
#  1. one quantized checkpoint at TP = 1, 2, 4: a synthetic LLaMA-3-70B-shaped W4A4KV4
#     model (2 layers, identity transforms in 8 TP blocks, `flatq synth --tp-blocks 8`)
#     and its BF16 twin, ppl of the first TP_WINDOWS (64) windows of wiki.test.paper at
#     TP 1/2/4 — the same function within 1e-3 (the synthetic model's ppl is that of random
#     weights; what is checked is that the sharding changes nothing). Enough windows: a
#     4-bit model's per-window ppl moves by 1e-3…2e-2 under any change of summation order,
#     which averages out (bench/NOTES.md, session 4);
#  2. bench/bench_70b.sh at TP 4, 2, 1 (BF16 and W4A4KV4 side by side, per-op profile).
# Carried: bin/flatq, .dev/lib, .dev/data/text/wikitext-2-raw. Logs under $OUT.
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH="$PWD/.dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
out=${OUT:-/tmp/out}
mkdir -p "$out" lib && cp .dev/lib/* lib/ 2>/dev/null
t_start=$(date +%s)
text=.dev/data/text/wikitext-2-raw/wiki.test.paper.txt
dir=/tmp/synth70b
nvidia-smi -L
ngpu=$(nvidia-smi -L | wc -l)
bin/flatq synth "$dir" --shape llama-3-70b --layers 2 --quantized --tp-blocks 8 || exit 1
MPI="mpirun --allow-run-as-root --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE"
ppl_of() { tr -d '\n' | grep -o '"ppl": *[0-9.e+]*' | head -1 | sed 's/.*: *//'; }
echo "== 1. the same checkpoint at TP 1, 2, 4"
for m in "$dir" "$dir/quantized"; do
    ref=""
    for tp in 1 2 4; do
        [ "$tp" -gt "$ngpu" ] && continue
        v=$(timeout 120 $MPI -np $tp bin/flatq eval --model "$m" --text "$text" --seqlen 512 \
            --max-windows "${TP_WINDOWS:-64}" --device cuda --json 2>>"$out/tp.err" | ppl_of)
        [ -z "$ref" ] && ref=$v
        awk -v m="$m" -v t="$tp" -v a="$ref" -v b="$v" 'BEGIN { if (a == "" || b == "") { print "RESULT|" m "|tp" t "|FAIL (no ppl)"; exit }
            r = b / a - 1; if (r < 0) r = -r
            printf "RESULT|%s|tp%s|ppl %.6g|rel to tp1 %.2e|%s\n", m, t, b, r, r <= 1e-3 ? "PASS" : "FAIL" }'
    done
done
tail -3 "$out/tp.err" 2>/dev/null
echo "== 2. throughput (elapsed $(($(date +%s) - t_start)) s)"
SYNTH_DIR=$dir W4A4=1 LAYERS=2 GEN=16 PROFILE=1 TPS="${TPS:-4 2 1}" BATCHES=${BATCHES:-1,8,64} \
    timeout $((${CALL_S:-560} - $(date +%s) + t_start)) bash bench/bench_70b.sh 2>&1 | tee "$out/bench70b.log"
echo "== done at $(($(date +%s) - t_start)) s"
