#!/usr/bin/env bash
# device_eval_tc.sh — one call (session 8, issue 8): `flatq eval` of a calibrated W4A4KV4
# flatq-llama-16m checkpoint (CK, default .dev/ck16m: a copy of a `flatq calibrate` output)
# on the CPU (fp32 fake-quant), on the GPU with the tensor-core attention and with the
# CUDA-core one (FLATQ_ATTN_TC=0), and at TP 2 when two GPUs are visible; W windows (64)
# of 2048 tokens of wiki.test.paper.txt. RESULT lines in $OUT/summary.txt.
# Carried: bin, .dev/lib, .dev/ck16m, .dev/data/text/wikitext-2-raw.
set -u
. bench/device_common.sh
device_begin evaltc
CK=${CK:-.dev/ck16m}
TEXT=.dev/data/text/wikitext-2-raw/wiki.test.paper.txt
W=${W:-64}
ngpu=$(nvidia-smi -L | wc -l)
ev() { # name device VAR=value...
    local name=$1 dev=$2
    shift 2
    local t=$(date +%s) p
    p=$(env "$@" bin/flatq eval --model "$CK" --text "$TEXT" --seqlen 2048 --max-windows "$W" \
        --device "$dev" --json 2>>"$w/err.log" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])')
    echo "RESULT|$name|ppl ${p:-none}|$(($(date +%s) - t)) s" >>"$w/results.txt"
}
ev cpu cpu OPENBLAS_NUM_THREADS=16 &
cpu=$!
ev gpu-tc cuda CUDA_VISIBLE_DEVICES=0
ev gpu-cc cuda CUDA_VISIBLE_DEVICES=0 FLATQ_ATTN_TC=0
if [ "$ngpu" -ge 2 ]; then
    t=$(date +%s)
    p=$(timeout 200 mpirun --allow-run-as-root -np 2 --bind-to none -x LD_LIBRARY_PATH \
        -x NCCL_NVLS_ENABLE bin/flatq eval --model "$CK" --text "$TEXT" --seqlen 2048 \
        --max-windows "$W" --device cuda --json 2>>"$w/err.log" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])')
    echo "RESULT|gpu-tc tp2|ppl ${p:-none}|$(($(date +%s) - t)) s" >>"$w/results.txt"
fi
wait $cpu
{ cat "$w/device.txt" "$w/results.txt"; tail -5 "$w/err.log"; } >"$final/summary.txt"
cat "$final/summary.txt"
