#!/usr/bin/env bash
# bench_70b.sh — prefill/decode throughput of a LLaMA-3-70B-shaped model, BF16 vs W4A4KV4,
# at TP = 1 and 2 (when two GPUs are visible), batch 1, 8, 64, 2048-token prompts.
#
# The full 80-layer BF16 model (140 GB of weights) fits neither one H100 nor two (2 x 80 GB
# minus caches), so the checkpoint has LAYERS (default 3) decoder layers, and every run is
# repeated with 1 layer (the same shards, config.json saying 1 layer): the difference gives
# the time of one decoder layer, and 80 layers are extrapolated as head + 80 x layer
# (bench/NOTES.md). flatq synth writes the checkpoint (and with W4A4=1 its quantized twin,
# with TP_BLOCKS (default 8) transform blocks so that TP = 1, 2, 4 and 8 can all load it).
# PROFILE=1 adds each run's per-op time table (flatq run --profile).
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH="$PWD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ldd bin/flatq | grep -q 'libnccl.so.2 => not found'; then
    nccl=$(find / -name 'libnccl.so.2' -not -path '*/proc/*' 2>/dev/null | head -1)
    [ -n "$nccl" ] && export LD_LIBRARY_PATH="$(dirname "$nccl"):$LD_LIBRARY_PATH"
fi
L=${LAYERS:-3}
P=${PROMPT:-2048}
G=${GEN:-32}
BATCHES=${BATCHES:-1,8,64}
TPS=${TPS:-1 2}
ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
dir=${SYNTH_DIR:-/tmp/synth70b}
q=""
[ "${W4A4:-0}" = 1 ] && q="--quantized --tp-blocks ${TP_BLOCKS:-8}"
t0=$(date +%s)
[ -f "$dir/config.json" ] || bin/flatq synth "$dir" --shape llama-3-70b --layers "$L" $q || exit 1
echo "synth: $(( $(date +%s) - t0 )) s, $(du -sh "$dir" | cut -f1)"
# the 1-layer view of the same checkpoint(s)
one() { bash bench/one_layer_view.sh "$1" "$2"; }
one "$dir" "$dir-1"
models="$dir $dir-1"
if [ -n "$q" ]; then one "$dir/quantized" "$dir/quantized-1"; models="$models $dir/quantized $dir/quantized-1"; fi
for tp in $TPS; do
    [ "$tp" -gt "$ngpu" ] && continue
    for m in $models; do
        echo "== $m tp=$tp"
        timeout 200 mpirun --allow-run-as-root -np "$tp" --bind-to none -x LD_LIBRARY_PATH \
            -x NCCL_NVLS_ENABLE bin/flatq run "$m" --device cuda --bench --batch "$BATCHES" \
            --prompt-len "$P" --gen-len "$G" ${PROFILE:+--profile} 2>&1 | grep -v '^$'
    done
done
