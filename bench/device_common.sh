# device_common.sh — sourced by the bench/device_*.sh scripts on the GPU machine: its environment
# (MPI as root, NVLink multicast off, the carried libraries and data), the 70B-shaped
# checkpoints the inference benchmarks time, and the GPU test stage.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH="$PWD/.dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FLATQ_DATA="$PWD/.dev/data"

# synth_70b DIR LAYERS LOG: W4A4 (DIR/quantized) and BF16 (DIR) checkpoints of LAYERS
# LLaMA-3-70B-shaped layers on this machine's disk, and their 1-layer views (DIR-1,
# DIR/quantized-1: per layer = all layers − 1 layer on the same shards)
synth_70b() {
    bin/flatq synth "$1" --shape llama-3-70b --layers "$2" --quantized --tp-blocks 8 >"$3" 2>&1 &&
        bash bench/one_layer_view.sh "$1" "$1-1" &&
        bash bench/one_layer_view.sh "$1/quantized" "$1/quantized-1"
}

# gpu_tests WORKDIR TIMEOUT_S RESULTS: tests/gpu/run.sh on the carried binaries (logs under
# WORKDIR/gputests), one RESULT line appended to RESULTS
gpu_tests() {
    GPU_TESTS_PREBUILT=1 GPU_TESTS_LOG_DIR="$1/gputests" timeout "$2" bash tests/gpu/run.sh \
        >"$1/gpu-tests.txt" 2>&1
    echo "RESULT|gpu-tests|rc=$?|$(grep -o 'gpu-tests: .*' "$1/gpu-tests.txt" | head -1)" >>"$3"
}

# device_out: out ($OUT, else /tmp/out; created), t0 (the start) and $out/device.txt naming
# the GPUs, with plain progress lines from flatq
device_out() {
    export FLATQ_PROGRESS=plain
    out=${OUT:-/tmp/out}
    mkdir -p "$out"
    t0=$(date +%s)
    nvidia-smi -L >"$out/device.txt"
}

# device_begin NAME: final (where the call's files go: $OUT), w (/tmp/NAME, fresh, with
# gputests/ and device.txt naming the GPUs), t0 (the start, for stage stamps)
device_begin() {
    final=${OUT:-/tmp/out}
    w=/tmp/$1
    rm -rf "$w" && mkdir -p "$w/gputests" "$final"
    t0=$(date +%s)
    nvidia-smi -L >"$w/device.txt"
}

# stamp WHAT: a "STAGE|WHAT|seconds since t0" line in $w/results.txt
stamp() { echo "STAGE|$1|$(($(date +%s) - t0)) s" >>"$w/results.txt"; }

# gptq_70b LOG: LAYERS (1) synthetic LLaMA-3-70B-shaped layers at /tmp/s70, calibrated on
# CUDA_VISIBLE_DEVICES with 32 windows and EPOCHS (2) epochs, then the GPTQ pass (32
# windows, clip search) with GPTQ_BLAS (16) BLAS threads on rank 0; the job's log in LOG,
# the model removed after. Returns the job's status (124: G70_S seconds passed).
gptq_70b() {
    bin/flatq synth /tmp/s70 --shape llama-3-70b --layers "${LAYERS:-1}" >"$1.synth" 2>&1 || return 1
    SYNTH_DIR=/tmp/s70 SYNTH_OUT=/tmp/s70-out OPENBLAS_NUM_THREADS=${GPTQ_BLAS:-16} \
        timeout "${G70_S:-400}" mpirun --allow-run-as-root --bind-to none -np 2 \
        -x LD_LIBRARY_PATH -x FLATQ_DATA -x SYNTH_DIR -x SYNTH_OUT -x FLATQ_PROGRESS \
        -x OPENBLAS_NUM_THREADS -x CUDA_VISIBLE_DEVICES \
        bin/flatq calibrate jobs/synth-70b.yaml --set calibration.nsamples=32 \
        --set quantization.epochs="${EPOCHS:-2}" --set quantization.weight_quantizer=gptq \
        --set quantization.gptq_nsamples=32 --set quantization.gptq_clip_search=true \
        >"$1" 2>&1
    local rc=$?
    rm -rf /tmp/s70 /tmp/s70-out
    return $rc
}

# ncu_bench_launch NAME REGEX SKIP NCU_ARGS…: Nsight Compute on one launch of bench_w4a4's
# prefill rows, the (SKIP + 1)th of the kernels whose demangled name matches REGEX, into
# $out/ncu_NAME.txt; a RESULT line and the headline metrics on stdout
ncu_bench_launch() {
    local name=$1 re=$2 skip=$3
    shift 3
    timeout -k 5 150 ncu --clock-control none --kill on "$@" --kernel-name-base demangled \
        --kernel-name "regex:$re" --launch-skip "$skip" --launch-count 1 \
        build/bench/bench_w4a4 /dev/null prefill >"$out/ncu_$name.txt" 2>&1
    echo "RESULT|ncu $name rc=$?"
    grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|One or More Eligible|Issued Warp|Registers Per|Est. Speedup" \
        "$out/ncu_$name.txt" | head -14
}
