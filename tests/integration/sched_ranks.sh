#!/usr/bin/env bash
# sched_ranks.sh — the same job on 1, 2 and 3 ranks gives identical output bytes, and
# with 2+ ranks the work really is spread (every worker ran a layer); also with a
# pipelined FP pass (each boundary written only at the next produce or the flush).
set -u
. "$(dirname "$0")/sched_common.bash"
for np in 1 2 3; do
    job $np np$np || { show np$np; fail "job on $np ranks failed"; }
done
for np in 2 3; do
    cmp "$SCRATCH/np1.out/final.bin" "$SCRATCH/np$np.out/final.bin" ||
        fail "output of $np ranks differs from 1 rank"
    for r in $(seq 1 $((np - 1))); do
        grep -q "rank $r\$" "$SCRATCH/np$np.log" || { show np$np; fail "rank $r of $np ran no layer"; }
    done
done
grep -q "stats rank 1 host .* layers [1-9]" "$SCRATCH/np3.stdout" || { show np3; fail "no worker stats"; }
[ "$(grep -c '^run layer' "$SCRATCH/np3.log")" = 6 ] || fail "expected 6 layer runs on 3 ranks"
for np in 1 3; do
    job $np pipe$np --pipelined || { show pipe$np; fail "pipelined job on $np ranks failed"; }
    cmp "$SCRATCH/np1.out/final.bin" "$SCRATCH/pipe$np.out/final.bin" ||
        fail "pipelined output on $np ranks differs"
    [ "$(grep -c '^build boundary' "$SCRATCH/pipe$np.log")" = 7 ] ||
        { show pipe$np; fail "pipelined job on $np ranks: expected 7 boundaries built"; }
done
echo "sched_ranks: 1, 2, 3 ranks (and pipelined 1, 3) give identical bytes"
