#!/usr/bin/env bash
# device_x4_final.sh — one short call on a 4-GPU machine, everything overlapped so that it
# fits a small device budget; all logs return as one tarball (results.tgz.NN) plus
# summary.txt, also when WALL_S (default 330) stops the work first.
#   GPUs 2, 3: the official FlatQuant code, seeds 1 and 2 (bench/official_seeds.sh);
#   GPU 0: the GPU tests (prebuilt); then one synthetic 70B-shaped W4A4 checkpoint
#   (tp_blocks 8) and its BF16 twin evaluated at TP 1, 2, 4 (GPUs 0 / 0-1 / 0-3); then the
#   70B-shaped bench at TP 1 on GPU 0 (W4A4 and BF16, per-op profiles).
# Carried: bin, build/gpu-tests, .dev/lib, .dev/data, .dev/official.
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH="$PWD/.dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FLATQ_DATA="$PWD/.dev/data"
final=${OUT:-/tmp/out}
w=/tmp/x4final
rm -rf "$w" && mkdir -p "$w/gputests" "$final"
t0=$(date +%s)
stages() {
    nvidia-smi -L >"$w/device.txt"
    (CUDA_VISIBLE_DEVICES=2 OUT=$w SEEDS=1 bash bench/official_seeds.sh >"$w/official1.txt" 2>&1) &
    (CUDA_VISIBLE_DEVICES=3 OUT=$w SEEDS=2 bash bench/official_seeds.sh >"$w/official2.txt" 2>&1) &
    (bin/flatq synth /tmp/synth70b --shape llama-3-70b --layers 2 --quantized --tp-blocks 8 \
        >"$w/synth.txt" 2>&1) &
    synth=$!
    CUDA_VISIBLE_DEVICES=0 GPU_TESTS_PREBUILT=1 GPU_TESTS_LOG_DIR="$w/gputests" \
        bash tests/gpu/run.sh >"$w/gpu-tests.txt" 2>&1
    echo "RESULT|gpu-tests|rc=$?|$(grep -o 'gpu-tests: .*' "$w/gpu-tests.txt" | head -1)" >>"$w/results.txt"
    wait $synth
    MPI="mpirun --allow-run-as-root --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE -x CUDA_VISIBLE_DEVICES"
    # TP 4 shares GPUs 2 and 3 with the official runs: an equality check, not a timing
    OUT=$w bash bench/tp_equality.sh /tmp/synth70b /tmp/synth70b/quantized >>"$w/results.txt"
    bash bench/one_layer_view.sh /tmp/synth70b /tmp/synth70b-1
    bash bench/one_layer_view.sh /tmp/synth70b/quantized /tmp/synth70b/quantized-1
    for m in /tmp/synth70b /tmp/synth70b-1 /tmp/synth70b/quantized /tmp/synth70b/quantized-1; do
        echo "== $m tp=1"
        CUDA_VISIBLE_DEVICES=0 timeout 100 $MPI -np 1 bin/flatq run "$m" --device cuda --bench --batch 1,8,64 \
            --prompt-len 2048 --gen-len 64 --profile 2>&1 | grep -v '^$'
    done >"$w/bench-tp1.txt" 2>&1
    wait # the official runs
    grep -h "^RESULT" "$w"/official*.txt >>"$w/results.txt"
}
timeout -k 5 "${WALL_S:-330}" bash -c "$(declare -f stages); w=$w; stages"
echo "== stages rc $? at $(($(date +%s) - t0)) s" >>"$w/results.txt"
{
    cat "$w/results.txt"
    grep -E "^BENCH" "$w/bench-tp1.txt" 2>/dev/null
    tail -3 "$w/tp.err" 2>/dev/null
} >"$final/summary.txt"
cat "$final/summary.txt"
tar -C /tmp -czf /tmp/x4final.tgz x4final && split -b 15m -d /tmp/x4final.tgz "$final/results.tgz."
ls -la "$final"
