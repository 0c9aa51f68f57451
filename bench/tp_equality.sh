#!/usr/bin/env bash
# tp_equality.sh MODEL... — issue 8's check that tensor parallelism changes nothing: each
# checkpoint's ppl on the first TP_WINDOWS (64) windows of wiki.test.paper at 512 tokens,
# at TP 1, 2 and 4 (the degrees that fit the visible GPUs), each against TP 1 within 1e-3.
# A 4-bit model's per-window ppl moves by 1e-3…2e-2 under any change of summation order
# and averages out over windows (bench/NOTES.md, sessions 4 and 5), hence 64 of them.
# Prints one RESULT line per checkpoint and degree; eval stderr goes to $OUT/tp.err.
# TP_TIMEOUT_S (90) bounds each eval. Expects bin/flatq, .dev/lib, .dev/data.
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH="$PWD/.dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
out=${OUT:-/tmp/out}
mkdir -p "$out"
text=.dev/data/text/wikitext-2-raw/wiki.test.paper.txt
ngpu=$(nvidia-smi -L | wc -l)
n=${TP_WINDOWS:-64}
for m in "$@"; do
    ref=""
    for tp in 1 2 4; do
        [ "$tp" -gt "$ngpu" ] && continue
        v=$(CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((tp - 1))) timeout "${TP_TIMEOUT_S:-90}" \
            mpirun --allow-run-as-root --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE \
            -x CUDA_VISIBLE_DEVICES -np "$tp" bin/flatq eval --model "$m" --text "$text" \
            --seqlen 512 --max-windows "$n" --device cuda --json 2>>"$out/tp.err" |
            tr -d '\n' | grep -o '"ppl": *[0-9.e+]*' | head -1 | sed 's/.*: *//')
        [ "$tp" = 1 ] && ref=$v
        awk -v m="$m" -v t="$tp" -v a="$ref" -v b="$v" -v n="$n" 'BEGIN {
            if (a == "" || b == "") { print "RESULT|" m "|tp" t "|FAIL (no ppl)"; exit }
            r = b / a - 1; if (r < 0) r = -r
            printf "RESULT|%s|tp%s|%d windows|ppl %.6g|rel to tp1 %.2e|%s\n", m, t, n, b, r, r <= 1e-3 ? "PASS" : "FAIL" }'
    done
done
