#!/usr/bin/env bash
# sched_corrupt.sh — a corrupted layer result and a corrupted cache boundary are found
# by checksum on rerun and redone; nothing else is recomputed; output unchanged.
set -u
. "$(dirname "$0")/sched_common.bash"
job 3 c || { show c; fail "first job failed"; }
cp "$SCRATCH/c.out/final.bin" "$SCRATCH/first.bin"
printf 'X' | dd of="$SCRATCH/c.out/layer_002.safetensors" bs=1 seek=30 conv=notrunc status=none
printf 'X' | dd of="$SCRATCH/c.cache/boundary_001.fqa" bs=1 seek=400 conv=notrunc status=none
: >"$SCRATCH/c.log"
job 3 c || { show c; fail "rerun failed"; }
[ "$(grep -c '^run layer' "$SCRATCH/c.log")" = 1 ] || { cat "$SCRATCH/c.log"; fail "expected exactly one layer redone"; }
grep -q '^run layer 2 ' "$SCRATCH/c.log" || fail "corrupted layer 2 not redone"
grep -q '^build boundary 1$' "$SCRATCH/c.log" || fail "corrupted boundary 1 not rebuilt"
grep -q '^reuse boundary 2$' "$SCRATCH/c.log" || fail "valid boundary 2 not reused"
! grep -q 'boundary [4-6]' "$SCRATCH/c.log" || fail "boundaries past the last pending layer were produced"
cmp "$SCRATCH/first.bin" "$SCRATCH/c.out/final.bin" || fail "output changed after redo"
echo "sched_corrupt: damaged result and cache redone, output identical"
