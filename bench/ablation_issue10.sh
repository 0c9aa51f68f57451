#!/usr/bin/env bash
# ablation_issue10.sh — issue 10's ablation on stories260K (bench/ACCURACY.md, "Issue 10
# ablation"): FlatQuant with each transform init and each weight quantizer, calibrated on
# WikiText-2 validation windows as jobs/stories260K-accuracy.yaml does and evaluated on
# the papers' WikiText-2 test text at seqlen 512. One rank (the coordinator calibrates),
# OpenBLAS on one thread, so the calibration times compare on a shared machine.
# Usage: bench/ablation_issue10.sh [OPTION ...] [-- --set key=value ...]
#   OPTION: default gptq identity hadamard smoothrot or NAME=set1,set2 (quantization keys)
# Writes out/ablation-issue10/NAME/ and prints one line per option: ppl, calibration s.
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS=1 FLATQ_PROGRESS=plain
opts=("$@")
extra=()
for i in "${!opts[@]}"; do
    if [[ ${opts[$i]} == -- ]]; then
        extra=("${opts[@]:$((i + 1))}")
        opts=("${opts[@]:0:$i}")
        break
    fi
done
[[ ${#opts[@]} -gt 0 ]] || opts=(default gptq identity hadamard smoothrot)
root=out/ablation-issue10
mkdir -p "$root"
for o in "${opts[@]}"; do
    name=${o%%=*}
    sets=()
    case $o in
    default) ;;
    gptq) sets=(--set quantization.weight_quantizer=gptq) ;;
    identity | hadamard | smoothrot) sets=(--set quantization.init=$o) ;;
    *=*) IFS=, read -ra kv <<<"${o#*=}"
         for x in "${kv[@]}"; do sets+=(--set "quantization.$x"); done ;;
    *) echo "ablation_issue10.sh: unknown option '$o'" >&2; exit 2 ;;
    esac
    t0=$(date +%s.%N)
    bin/flatq calibrate jobs/stories260K-accuracy.yaml --set output=$root/$name \
        --set "eval.text=[data/text/wiki.test.paper.txt]" --set "eval.methods=[flatquant]" \
        "${sets[@]}" "${extra[@]}" >"$root/$name.log" 2>&1
    t1=$(date +%s.%N)
    ppl=$(awk '$1 == "flatquant" && $2 ~ /wiki/ {print $4}' "$root/$name.log" | tail -1)
    busy=$(grep -Eo 'busy [0-9.]+ s' "$root/$name.log" | head -1 | awk '{print $2}')
    printf '%-12s ppl %-10s layer calibration %s s, whole job %.0f s\n' "$name" "${ppl:-?}" \
        "${busy:-?}" "$(echo "$t1 - $t0" | bc)"
done
