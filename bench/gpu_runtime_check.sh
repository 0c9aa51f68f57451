#!/usr/bin/env bash
# gpu_runtime_check.sh — the GPU runtime's acceptance checks on the GPU machine: the GPU op
# tests of tests/gpu (runtime rows), then perplexity on the GPU vs the CPU eval of the same
# checkpoint (FP stories260K and flatq-llama-16m; quantized checkpoints too when
# QCKPTS="dir:text ..." names them), TP=2 vs TP=1 when two GPUs are visible, one streamed
# generation, and a small --bench. Prints one RESULT| line per comparison.
#
# Run from a folder holding bin/flatq, build/gpu-tests/, tests/gpu/run.sh, data/ (the
# bundled stories260K) and lib/ (libyaml); DATA (default ../data) holds the models/texts
# of .dev/data. Logs under $OUT.
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH="$PWD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ldd bin/flatq | grep -q 'libnccl.so.2 => not found'; then
    nccl=$(find / -name 'libnccl.so.2' -not -path '*/proc/*' 2>/dev/null | head -1)
    [ -n "$nccl" ] && export LD_LIBRARY_PATH="$(dirname "$nccl"):$LD_LIBRARY_PATH"
fi
out=${OUT:-/tmp/out}
DATA=${DATA:-../data}
mkdir -p "$out"
ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
echo "GPUs: $ngpu"; nvidia-smi -L
ldd bin/flatq | grep -E 'nccl|cublas|cudart|mpi' || true

echo "== tests/gpu"
GPU_TESTS_PREBUILT=1 GPU_TESTS_LOG_DIR="$out/gputests" timeout 120 bash tests/gpu/run.sh
echo "RESULT|gpu-tests|rc=$?"

ppl_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])' 2>/dev/null; }
compare() { # name ref got tol
    python3 - "$@" <<'PY'
import sys
name, ref, got, tol = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
rel = abs(got / ref - 1)
print(f"RESULT|{name}|ref {ref:.5f}|got {got:.5f}|rel {rel:.2e}|tol {tol:.0e}|{'PASS' if rel <= tol else 'FAIL'}")
PY
}
evalcase() { # name model text seqlen windows
    local name=$1 model=$2 text=$3 S=$4 W=$5 a b c
    a=$(OPENBLAS_NUM_THREADS=16 timeout 300 bin/flatq eval --model "$model" --text "$text" --seqlen "$S" \
        --max-windows "$W" --json 2>>"$out/err.log" | ppl_of)
    b=$(timeout 120 bin/flatq eval --model "$model" --text "$text" --seqlen "$S" --max-windows "$W" \
        --device cuda --json 2>>"$out/err.log" | ppl_of)
    echo "$name cpu=$a gpu=$b"
    if [ -n "$a" ] && [ -n "$b" ]; then compare "$name gpu vs cpu" "$a" "$b" 5e-3
    else echo "RESULT|$name gpu vs cpu|FAIL: $(tail -n 1 "$out/err.log")"; fi
    if [ "$ngpu" -ge 2 ]; then
        c=$(timeout 120 mpirun --allow-run-as-root -np 2 --bind-to none -x LD_LIBRARY_PATH \
            -x NCCL_NVLS_ENABLE bin/flatq eval --model "$model" --text "$text" --seqlen "$S" \
            --max-windows "$W" --device cuda --json 2>"$out/tp2.err" | ppl_of)
        cat "$out/tp2.err" >>"$out/err.log"
        if [ -n "$c" ] && [ -n "$b" ]; then compare "$name tp2 vs tp1" "$b" "$c" 1e-3
        else echo "RESULT|$name tp2|not run: $(grep -m1 flatq: "$out/tp2.err")"; fi
    fi
}
echo "== perplexity"
evalcase stories260K-fp data/models/stories260K-hf data/text/tinystories_sample.txt 128 8
evalcase flatq-16m-fp "$DATA/models/flatq-llama-16m" "$DATA/text/wikitext-2-raw/wiki.test.paper.txt" 512 16
for qc in ${QCKPTS:-}; do # dir:text:seqlen
    dir=${qc%%:*} rest=${qc#*:}
    evalcase "$(basename "$dir")-w4a4" "$dir" "${rest%%:*}" "${rest#*:}" 8
done
echo "== generation (greedy, CPU then GPU)"
bin/flatq run "$DATA/models/flatq-llama-16m" --prompt "The history of" --max-new 24 2>&1 | tail -2
timeout 60 bin/flatq run "$DATA/models/flatq-llama-16m" --prompt "The history of" --max-new 24 --device cuda 2>&1 | tail -2
if [ "$ngpu" -ge 2 ]; then
    timeout 60 mpirun --allow-run-as-root -np 2 --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE \
        bin/flatq run "$DATA/models/flatq-llama-16m" --prompt "The history of" --max-new 24 --device cuda 2>&1 | tail -2
fi
echo "== bench flatq-llama-16m"
timeout 60 bin/flatq run "$DATA/models/flatq-llama-16m" --device cuda --bench --batch 1,8,64 \
    --prompt-len 256 --gen-len 64
cat "$out/err.log" 2>/dev/null | tail -20
