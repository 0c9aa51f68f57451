#!/usr/bin/env bash
# ablation_issue10.sh — issue 10's ablation on stories260K (bench/ACCURACY.md, "Issue 10
# ablation"): FlatQuant with each transform init and each weight quantizer, calibrated on
# WikiText-2 validation windows as jobs/stories260K-accuracy.yaml does, evaluated on the
# papers' WikiText-2 test text at seqlen 512 (every window). One rank (the coordinator
# calibrates) and OpenBLAS on one thread; the calibration cost is the CPU time (user +
# sys) of `flatq calibrate` with a 1-window eval, so it compares on a shared machine.
# Usage: bench/ablation_issue10.sh [OPTION ...] [-- --set key=value ...]
#   OPTION: default gptq identity hadamard smoothrot, or NAME=k1=v1,k2=v2 (quantization
#   keys). FLATQ names the binary (default bin/flatq).
# Writes out/ablation-issue10/NAME/ and prints one line per option.
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS=1 FLATQ_PROGRESS=plain
FLATQ="${FLATQ:-bin/flatq}"
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
text=data/text/wiki.test.paper.txt
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
    /usr/bin/time -f "%U %S %e" -o "$root/$name.time" "$FLATQ" calibrate \
        jobs/stories260K-accuracy.yaml --set output=$root/$name --set "eval.text=[$text]" \
        --set "eval.methods=[flatquant]" --set eval.max_windows=1 "${sets[@]}" "${extra[@]}" \
        >"$root/$name.log" 2>&1
    "$FLATQ" eval --model "$root/$name" --text $text --seqlen 512 >"$root/$name.eval" 2>&1
    ppl=$(awk '$1 == "ppl" {print $2}' "$root/$name.eval")
    read -r u s e <"$root/$name.time"
    printf '%-12s ppl %-10s calibration CPU %.0f s (wall %.0f s)\n' "$name" "${ppl:-?}" \
        "$(echo "$u + $s" | bc)" "$e"
done
