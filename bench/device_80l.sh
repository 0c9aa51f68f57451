#!/usr/bin/env bash
# device_80l.sh — one call on a 4-GPU machine (issue 8's benchmark as written): a synthetic
# LLaMA-3-70B-shaped checkpoint of all 80 layers, BF16 and W4A4KV4 (tp-blocks 8), on this
# machine's disk (~180 GB: needs the 235 GB of an x4 kind), then `flatq run --bench` at
# TP 4 and TP 2 for both (batch 1, 8, 64; 2048-token prompts; 64 decode steps): prefill
# and decode tokens/s, the all-reduce share, weights and KV cache per rank. BF16 at TP 2
# needs ~70 GB of weights per rank plus its KV cache: it fits an H200, not an H100 (the
# run is attempted and its error recorded either way). Logs: summary.txt, also when
# WALL_S (580) stops it. Carried: bin, .dev/lib.
set -u
. bench/device_common.sh
device_begin b80
stages() {
    MPI="mpirun --allow-run-as-root --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE -x CUDA_VISIBLE_DEVICES"
    bin/flatq synth /tmp/s80 --shape llama-3-70b --layers 80 --quantized --tp-blocks 8 \
        >"$w/synth.txt" 2>&1
    stamp "80-layer checkpoints written ($(du -sh /tmp/s80 | cut -f1))"
    for tp in ${TPS:-4 2}; do
        for m in /tmp/s80/quantized /tmp/s80; do
            echo "== $m tp=$tp"
            CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((tp - 1))) timeout 200 $MPI -np "$tp" bin/flatq run \
                "$m" --device cuda --bench --batch 1,8,64 --prompt-len 2048 --gen-len 64 2>&1 |
                grep --line-buffered -v '^$'
            stamp "tp$tp $(basename "$m") done"
        done >>"$w/bench.txt" 2>&1
    done
}
timeout -k 5 "${WALL_S:-580}" bash -c "$(declare -f stages stamp); w=$w; t0=$t0; stages"
echo "== stages rc $? at $(($(date +%s) - t0)) s" >>"$w/results.txt"
{ cat "$w/device.txt" "$w/results.txt"; tail -3 "$w/synth.txt"; grep -hE "^BENCH|^==|rror|memory" "$w/bench.txt"; } \
    >"$final/summary.txt"
cp "$w/bench.txt" "$w/synth.txt" "$final/" 2>/dev/null
cat "$final/summary.txt"
