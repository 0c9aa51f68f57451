#!/usr/bin/env bash
# official_seeds.sh — the official FlatQuant code (shared/anchors/official-flatquant: the
# upstream commit with its offline patch, unpacked into .dev/official and carried) on
# flatq-llama-16m, W4A4KV4, the §4.1 recipe, for each seed in SEEDS, side by side on one
# GPU. The anchor's 144.207 is its seed 0; this measures how far other seeds of the same
# code land, the spread flatq's own seeds are compared with (bench/ACCURACY.md).
# Carried: .dev/official, .dev/data. Logs under $OUT; RESULT lines on stdout.
set -u
out=${OUT:-/tmp/out}
mkdir -p "$out" /tmp/termcolor-shim
printf 'def colored(s, *a, **k):\n    return s\n' >/tmp/termcolor-shim/termcolor.py
export PYTHONPATH=/tmp/termcolor-shim FQ_WIKI_TEST_RAW=$PWD/.dev/data/text/wikitext-2-raw/wiki.test.raw
export FQ_WIKI_TRAIN_TXT=$PWD/.dev/data/text/wikitext-2-tokens/valid.txt
model=$PWD/.dev/data/models/flatq-llama-16m
py=$PWD/bench/official/run_official.py
pids=()
for s in ${SEEDS:-1 2}; do
    (timeout "${SEED_S:-540}" python3 "$py" "$PWD/.dev/official" --model "$model" \
        --w_bits 4 --a_bits 4 --k_bits 4 --k_asym --k_groupsize 128 --v_bits 4 --v_asym \
        --v_groupsize 128 --cali_bsz 4 --epoch 15 --flat_lr 5e-3 --lwc --lac --cali_trans \
        --add_diag --output_dir /tmp/official --exp_name "seed$s" --seed "$s" \
        >"$out/official-seed$s.log" 2>&1
     # rc 1 is expected: after WikiText-2 the script evaluates C4, which is not on the machine
     echo "RESULT|official seed $s|rc $?|wikitext2 ppl $(awk '/INFO wikitext2$/ { w = 1; next }
         w && /INFO [0-9.]+$/ { print $NF; exit }' "$out/official-seed$s.log")") &
    pids+=($!)
done
wait "${pids[@]}"
for s in ${SEEDS:-1 2}; do
    echo "== seed $s"; grep -iE "layer .*loss|mse|wikitext2|Error|error" "$out/official-seed$s.log" | tail -12
done
