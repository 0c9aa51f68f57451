#!/usr/bin/env bash
# sched_more_ranks.sh — 4 ranks for 2 layers: idle workers get STOP, the job finishes,
# with cache trimming on, and the output equals a 1-rank run.
set -u
. "$(dirname "$0")/sched_common.bash"
job 1 one --layers 2 || { show one; fail "1-rank job failed"; }
job 4 many --layers 2 --trim || { show many; fail "4 ranks for 2 layers failed"; }
cmp "$SCRATCH/one.out/final.bin" "$SCRATCH/many.out/final.bin" || fail "outputs differ"
[ "$(grep -c '^stats rank' "$SCRATCH/many.stdout")" = 4 ] || { show many; fail "stats of all 4 ranks expected"; }
grep -q 'layers 0 busy' "$SCRATCH/many.stdout" || { show many; fail "expected an idle worker"; }
[ -z "$(ls "$SCRATCH/many.cache")" ] || fail "trimming left boundaries behind: $(ls "$SCRATCH/many.cache")"
echo "sched_more_ranks: idle workers stopped cleanly"
