#!/usr/bin/env bash
# cli.sh — the commands as a user types them: greedy generation equals the reference
# stories (llama2.c's for stories260K, transformers' for flatq-llama-16m), tokenize and
# eval print what they promise, and bad input gives exit status != 0 and exactly one line
# "flatq: FILE…: what is wrong (expected …)" on stderr.
set -u
FLATQ="${FLATQ:-bin/flatq}"
DATA="${FLATQ_DATA:-../shared/data}"
[ -x "$FLATQ" ] || { echo "!!! $FLATQ is not built"; exit 77; }
W=$(mktemp -d /tmp/fq_cli.XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
M=data/models/stories260K-hf

# generation
out=$("$FLATQ" run $M --max-new 40) || fail "run failed"
[[ "$out" == "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball."* ]] \
    || fail "greedy story differs from llama2.c's: $out"
if [ -d "$DATA/models/flatq-llama-16m" ]; then
    want=$(python3 -c 'import json,sys; g=json.load(open(sys.argv[1]))["generation"][0]; print(g["prompt"]+g["text"])' "$DATA/models/flatq-llama-16m.reference.json")
    got=$("$FLATQ" run "$DATA/models/flatq-llama-16m" --prompt "The history of the city begins" --max-new 40) || fail "run 16m failed"
    [ "$got" = "$want" ] || fail "flatq-llama-16m greedy text differs from transformers': $got"
else
    echo "!!! NOT RUN: flatq-llama-16m greedy generation ($DATA/models/flatq-llama-16m absent)"
fi
a=$("$FLATQ" run $M --max-new 20 --temperature 0.8 --seed 7); b=$("$FLATQ" run $M --max-new 20 --temperature 0.8 --seed 7)
[ "$a" = "$b" ] || fail "sampling with the same seed is not reproducible"

# tokenize: the SOURCES.md example ids
printf 'Once upon a time, there was a little girl named Lily.' >"$W/t.txt"
ids=$("$FLATQ" tokenize --model $M "$W/t.txt") || fail "tokenize failed"
[ "$ids" = "[1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426]" ] \
    || [ "$(echo "$ids" | tr -d ' ')" = "[1,403,407,261,378,432,383,286,261,376,298,315,421,395,317,426]" ] \
    || fail "tokenize ids: $ids"

# eval --json has the promised fields
j=$("$FLATQ" eval --model $M --text data/text/tinystories_sample.txt --seqlen 512 --json) || fail "eval failed"
for k in ppl nll tokens windows seconds; do echo "$j" | grep -q "\"$k\"" || fail "eval --json lacks $k"; done

# bad input: one line, naming the file
one_line() { # expect_substring cmd...
    local want=$1; shift
    "$@" >"$W/out" 2>"$W/err" && fail "accepted: $*"
    [ "$(wc -l <"$W/err")" = 1 ] || { cat "$W/err"; fail "not one line: $*"; }
    grep -q "^flatq: " "$W/err" || { cat "$W/err"; fail "no 'flatq:' prefix: $*"; }
    grep -q -- "$want" "$W/err" || { cat "$W/err"; fail "message lacks '$want': $*"; }
}
mkdir -p "$W/trunc" && cp $M/config.json $M/tokenizer.json "$W/trunc/"
head -c 100 $M/model.safetensors >"$W/trunc/model.safetensors"
one_line "model.safetensors" "$FLATQ" eval --model "$W/trunc" --text data/text/tinystories_sample.txt --seqlen 64
mkdir -p "$W/nan" && cp $M/* "$W/nan/" && sed -i 's/"rms_norm_eps": [0-9.e-]*/"rms_norm_eps": NaN/' "$W/nan/config.json"
one_line "config.json" "$FLATQ" eval --model "$W/nan" --text data/text/tinystories_sample.txt --seqlen 64
printf 'model: x\noutput: y\nquantization:\n  w_bitz: 4\n' >"$W/typo.yaml"
one_line "typo.yaml:4:3" "$FLATQ" calibrate "$W/typo.yaml"
printf 'model: [unclosed\n' >"$W/broken.yaml"
one_line "broken.yaml" "$FLATQ" eval "$W/broken.yaml"
printf 'abc\xff\xfedef' >"$W/bad.txt"
one_line "bad.txt" "$FLATQ" tokenize --model $M "$W/bad.txt"
one_line "unknown command" "$FLATQ" frobnicate
# an eval job with device: cuda where the GPU runtime cannot run (here: no GPU) scores on
# the CPU with a note naming why, and the numbers equal the CPU job's
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    "$FLATQ" eval jobs/demo-tiny.yaml --set device=cuda --set "eval.methods=[fp]" \
        --set eval.max_windows=1 >"$W/fb.out" 2>"$W/fb.err" || { cat "$W/fb.err"; fail "cuda eval job without a GPU failed"; }
    grep -q "^flatq: note: eval fp on .*(cuda): .*scoring it on the CPU instead" "$W/fb.err" ||
        { cat "$W/fb.err"; fail "no fallback note"; }
    "$FLATQ" eval jobs/demo-tiny.yaml --set "eval.methods=[fp]" --set eval.max_windows=1 \
        >"$W/cpu.out" 2>/dev/null || fail "cpu eval job failed"
    diff <(grep '^fp ' "$W/fb.out") <(grep '^fp ' "$W/cpu.out") || fail "fallback numbers differ from the CPU job's"
    echo "cli: a cuda eval job without a GPU falls back to the CPU, loudly, same numbers"
fi
echo "cli: generation matches the references, tokenize/eval outputs, bad input one-liners"
