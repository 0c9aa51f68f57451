#!/usr/bin/env bash
# device_ablation_16m.sh — issue 10's ablation on flatq-llama-16m with the CUDA backend: each
# named job of jobs/ablation/ (full 128 × 2048 recipe, one option changed) is calibrated
# with device: cuda; its layer shards come back under $OUT for the fake-quant CPU evaluation
# off the device (CPU_EVAL=1 runs it here too), and when the binary has the GPU runtime the
# checkpoint is also scored with `flatq eval --device cuda` (wiki.test.paper.txt, 2048).
# KEEP_LAYERS=0: no layer shards under $OUT (many runs in one call); BLAS_THREADS: OpenBLAS
# threads of each rank (default 4; the GPTQ pass's factorisations run on rank 0's CPU);
# STOP_ON_FAIL=1: a failed calibration ends the stream.
# Usage: bash bench/device_ablation_16m.sh default gptq smoothrot+quantization.epochs=30 ...
#        [-- extra --set args for every run]
set -uo pipefail
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export LD_LIBRARY_PATH="$PWD/.dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FLATQ_DATA="$PWD/.dev/data" FLATQ_PROGRESS=plain
out="${OUT:-/tmp/out}"
np="${NP:-4}"
text=$FLATQ_DATA/text/wikitext-2-raw/wiki.test.paper.txt
names=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do names+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
for spec in "${names[@]}"; do
    # NAME[+key=value...]: jobs/ablation/16m-NAME.yaml (or the base 16m job) with overrides
    base=${spec%%+*}
    sets=()
    if [ "$base" != "$spec" ]; then
        IFS=+ read -r -a kv <<<"${spec#*+}"
        for x in "${kv[@]}"; do sets+=(--set "$x"); done
    fi
    n=$(echo "$spec" | tr -c 'A-Za-z0-9_\n-' _)
    job=jobs/ablation/16m-$base.yaml
    [ -f "$job" ] || job=jobs/flatq-llama-16m.yaml
    seqlen=2048
    [ "$base" = stories260k ] && job=jobs/stories260K-accuracy.yaml && seqlen=512
    t0=$(date +%s.%N)
    OPENBLAS_NUM_THREADS=${BLAS_THREADS:-4} mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$np" \
        bin/flatq calibrate "$job" --set device=cuda --set output=/tmp/abl-$n --set eval.methods=[flatquant] --set eval.max_windows=1 \
        ${sets[@]+"${sets[@]}"} "$@" >"$out/abl-$n.calibrate.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    grep -E "layer [0-9]+ done|calibration:|gptq:|rank [0-9]+ \(" "$out/abl-$n.calibrate.log" | tail -12
    if [ $rc -ne 0 ]; then
        echo "$n: calibrate failed ($rc)"; tail -5 "$out/abl-$n.calibrate.log"
        [ "${STOP_ON_FAIL:-0}" = 1 ] && break # the stream's later runs would fail alike
        continue
    fi
    printf 'ABL|%s|calib_s %s\n' "$n" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
    # the layer shards and config travel back (the head shard is the FP model's, the same
    # for every option): the fake-quant CPU eval then runs off the device
    [ "${KEEP_LAYERS:-1}" = 1 ] && tar -C /tmp/abl-$n -czf "$out/abl-$n.layers.tgz" config.json model.safetensors.index.json \
        $(cd /tmp/abl-$n && ls layer_*.safetensors layer_*.sha256 2>/dev/null)
    if bin/flatq eval --help 2>&1 | grep -q -- --device; then
        bin/flatq eval --model /tmp/abl-$n --text "$text" --seqlen $seqlen --device cuda --json \
            >"$out/abl-$n.eval_gpu.json" 2>&1
        printf 'ABL|%s|gpu eval|%s\n' "$n" "$(tr -d '\n' <"$out/abl-$n.eval_gpu.json" | grep -o '"ppl": *[0-9.]*' | head -1)"
    fi
    # the fake-quant CPU eval of the same checkpoint (CPU_EVAL=1), on its first
    # CPU_EVAL_WINDOWS windows (0: all) beside the GPU eval of the same windows
    if [ "${CPU_EVAL:-0}" = 1 ]; then
        w=${CPU_EVAL_WINDOWS:-0}
        [ "$base" = stories260k ] && w=0
        OPENBLAS_NUM_THREADS=${CPU_EVAL_THREADS:-$(nproc)} bin/flatq eval --model /tmp/abl-$n \
            --text "$text" --seqlen $seqlen --max-windows "$w" --json >"$out/abl-$n.eval_cpu.json" 2>&1
        bin/flatq eval --model /tmp/abl-$n --text "$text" --seqlen $seqlen --max-windows "$w" \
            --device cuda --json >"$out/abl-$n.eval_gpu_w.json" 2>&1
        printf 'ABL|%s|%s windows|cpu %s|gpu %s\n' "$n" "$w" \
            "$(tr -d '\n' <"$out/abl-$n.eval_cpu.json" | grep -o '"ppl": *[0-9.]*' | head -1)" \
            "$(tr -d '\n' <"$out/abl-$n.eval_gpu_w.json" | grep -o '"ppl": *[0-9.]*' | head -1)"
    fi
done
