#!/usr/bin/env bash
# device_synth_job.sh — the whole `flatq calibrate` job with CUDA workers on a synthetic
# LLaMA-3-70B-shaped checkpoint (jobs/synth-70b.yaml, full §4.1 recipe), on every GPU of
# the machine (issues 6 and 9): first one worker on a 1-layer view of the checkpoint (the
# 1-GPU per-layer time, same call), then NGPU workers on all LAYERS (default 2 × NGPU).
# Prints per-layer times, the calibration phase's wall time, the FP pass and cache I/O,
# worker idle time, and the efficiency against NGPU × the 1-GPU rate.
# Carried: bin/flatq, .dev/lib, .dev/data/text/wikitext-2-tokens. Logs under $OUT.
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH="$PWD/.dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FLATQ_DATA="$PWD/.dev/data" FLATQ_PROGRESS=plain OPENBLAS_NUM_THREADS=4
out=${OUT:-/tmp/out}
mkdir -p "$out"
ngpu=$(nvidia-smi -L | wc -l)
L=${LAYERS:-$((2 * ngpu))}
export SYNTH_DIR=/tmp/synth70b
nvidia-smi -L
t0=$(date +%s)
bin/flatq synth "$SYNTH_DIR" --shape llama-3-70b --layers "$L" || exit 1
echo "synth: $L layers in $(($(date +%s) - t0)) s"
bash bench/one_layer_view.sh "$SYNTH_DIR" "$SYNTH_DIR-1" || exit 1
job() { # name np model extra...
    local name=$1 np=$2 model=$3
    shift 3
    local s
    s=$(date +%s)
    SYNTH_DIR=$model SYNTH_OUT=/tmp/$name timeout "${JOB_S:-400}" mpirun --allow-run-as-root \
        --oversubscribe --bind-to none -np "$np" -x LD_LIBRARY_PATH -x FLATQ_DATA -x SYNTH_DIR \
        -x SYNTH_OUT -x FLATQ_PROGRESS -x OPENBLAS_NUM_THREADS bin/flatq calibrate \
        jobs/synth-70b.yaml "$@" >"$out/$name.log" 2>&1
    echo "RESULT|$name|np $np|rc $?|wall $(($(date +%s) - s)) s"
    grep -E "layer [0-9]+ done|calibration:|rank [0-9]+ \(|FP pass|peak" "$out/$name.log" | tail -30
}
job one 2 "$SYNTH_DIR-1"
job all $((ngpu + 1)) "$SYNTH_DIR"
python3 - "$out/one.log" "$out/all.log" "$ngpu" "$L" <<'PY'
import re, sys
def layer_times(p):
    return [float(m.group(1)) for m in re.finditer(r"layer \d+ done on rank \d+ \(.*?\) in ([0-9.]+)s", open(p).read())]
one, many = layer_times(sys.argv[1]), layer_times(sys.argv[2])
ngpu, L = int(sys.argv[3]), int(sys.argv[4])
txt = open(sys.argv[2]).read()
m = re.findall(r"\[flatq\s+([0-9.]+)s\] layer \d+ done", txt)
if one and many and m:
    t1, wall = one[0], max(float(x) for x in m)
    eff = L * t1 / (ngpu * wall)
    print(f"RESULT|efficiency|1-GPU layer {t1:.1f} s|{L} layers on {ngpu} GPUs: last layer done at {wall:.1f} s|"
          f"efficiency {eff:.3f}|per-layer {min(many):.1f}-{max(many):.1f} s")
    for g in (8, 16, 32):
        print(f"RESULT|projection|80 layers on {g} GPUs at this efficiency: {80 * t1 / (g * eff) / 60:.1f} min")
else:
    print("RESULT|efficiency|not computed (missing layer times)")
PY
