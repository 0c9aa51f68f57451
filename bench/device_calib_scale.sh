#!/usr/bin/env bash
# device_calib_scale.sh — one call on a 2-GPU machine for issue 6: the whole `flatq
# calibrate` job on a synthetic 70B-shaped checkpoint of LAYERS (4) layers, one layer on
# one GPU, then all layers on both GPUs (SCALE_EPOCHS (3) epochs each: the worker's
# phases/setup/io lines, the FP pass's split, the layer-phase and whole-job efficiency).
# Logs return as results.tgz.NN plus summary.txt, also when WALL_S (530) stops it.
#   phase 1: the checkpoint on the CPU (GPU_TESTS=1: the GPU tests on GPU 1 beside it);
#   phase 2, side by side: GPU 0 one layer with SCALE_EPOCHS epochs (the 1-GPU rate);
#     GPU 1 SIDE: "full" one layer with the full recipe (the per-layer time), "16m" one
#     flatq-llama-16m job with its ppl (the end-to-end check), "none";
#   phase 3: all LAYERS on SCALE_GPUS (default "2"; e.g. "4 2" on a 4-GPU machine), one
#     device_synth_job.sh run per count so each prints its efficiency as soon as it ends.
# Session 6 ran it as bench/device_x2_s6b.sh (GPU_TESTS=1 SIDE=full LAYERS=4) and
# bench/device_x2_s6c.sh (SIDE=16m LAYERS=6), merged into this one since.
# Carried: bin, .dev/lib, .dev/data (GPU_TESTS=1: also build/gpu-tests).
set -u
. bench/device_common.sh
device_begin calibscale
L=${LAYERS:-4}
E=${SCALE_EPOCHS:-3}
SIDE=${SIDE:-full}
stages() {
    tests=""
    if [ "${GPU_TESTS:-0}" = 1 ]; then
        CUDA_VISIBLE_DEVICES=1 GPU_TEST_TIMEOUT_S=120 gpu_tests "$w" 200 "$w/results.txt" &
        tests=$!
    fi
    { bin/flatq synth /tmp/synthjob --shape llama-3-70b --layers "$L" &&
      bash bench/one_layer_view.sh /tmp/synthjob /tmp/synthjob-1; } >"$w/synth.txt" 2>&1
    stamp "synthetic checkpoint written"
    [ -n "$tests" ] && wait $tests && stamp "gpu tests done"
    (OUT=$w REUSE_SYNTH=1 TAG=e$E ONE_GPU=0 GPUS=" " LAYERS=$L \
        EXTRA="--set quantization.epochs=$E" JOB_S=200 bash bench/device_synth_job.sh \
        >"$w/one_e$E.txt" 2>&1) &
    a=$!
    case $SIDE in
    full) (OUT=$w REUSE_SYNTH=1 TAG=full ONE_GPU=1 GPUS=" " LAYERS=$L EXTRA="" \
              JOB_S=${FULL_JOB_S:-250} bash bench/device_synth_job.sh >"$w/one_full.txt" 2>&1) & ;;
    16m) (CUDA_VISIBLE_DEVICES=1 OUT=$w KEEP_LAYERS=0 timeout 170 \
              bash bench/device_ablation_16m.sh default >"$w/16m.txt" 2>&1) & ;;
    *) true & ;;
    esac
    b=$!
    wait $a
    stamp "one layer, $E epochs, done"
    wait $b
    stamp "side run ($SIDE) done"
    for g in ${SCALE_GPUS:-2}; do
        OUT=$w REUSE_SYNTH=1 TAG=e$E SKIP_ONE=1 GPUS=$g LAYERS=$L \
            EXTRA="--set quantization.epochs=$E" JOB_S=${SCALE_JOB_S:-260} \
            bash bench/device_synth_job.sh >"$w/scale${g}_e$E.txt" 2>&1
        stamp "scaling on $g GPUs done"
    done
}
timeout -k 5 "${WALL_S:-530}" bash -c "$(declare -f stages stamp gpu_tests); w=$w; t0=$t0; L=$L; E=$E; SIDE=$SIDE; stages"
echo "== stages rc $? at $(($(date +%s) - t0)) s" >>"$w/results.txt"
{
    cat "$w/device.txt" "$w/results.txt"
    grep -h "^SUMMARY\|FAIL" "$w"/gputests/*.out 2>/dev/null | head -20
    echo "== 16m"; grep -h "ABL\|calibration:\|FP pass" "$w/16m.txt" "$w"/abl-*.calibrate.log 2>/dev/null
    for f in one_e$E one_full $(for g in ${SCALE_GPUS:-2}; do echo scale${g}_e$E; done); do echo "== $f"; grep -v "^GPU [0-9]" "$w/$f.txt" 2>/dev/null; done
} >"$final/summary.txt"
cat "$final/summary.txt"
tar -C /tmp -czf /tmp/calibscale.tgz calibscale && split -b 15m -d /tmp/calibscale.tgz "$final/results.tgz."
ls -la "$final"
