#!/usr/bin/env bash
# device_synth_job.sh — the whole `flatq calibrate` job with CUDA workers on a synthetic
# LLaMA-3-70B-shaped checkpoint (jobs/synth-70b.yaml, full §4.1 recipe), on every GPU of
# the machine (issues 6 and 9): first one worker on a 1-layer view of the checkpoint (the
# 1-GPU per-layer time, same call), then for each count G in GPUS (default: every GPU) G
# workers, one GPU each, on all LAYERS (default 2 × NGPU). Prints per-layer times, the
# calibration phase's wall time, the FP pass and cache I/O, worker idle time, and the
# efficiency against G × the 1-GPU rate. EXTRA: --set overrides for every run.
# Carried: bin/flatq, .dev/lib, .dev/data/text/wikitext-2-tokens. Logs under $OUT.
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH="$PWD/.dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FLATQ_DATA="$PWD/.dev/data" FLATQ_PROGRESS=plain OPENBLAS_NUM_THREADS=4
out=${OUT:-/tmp/out}
mkdir -p "$out"
ngpu=$(nvidia-smi -L | wc -l)
L=${LAYERS:-$((2 * ngpu))}
# SYNTH_JOB_DIR: where the checkpoint goes (/tmp/synthjob); REUSE_SYNTH=1 takes the one
# already there (two runs side by side on one machine); TAG prefixes the run names
export SYNTH_DIR=${SYNTH_JOB_DIR:-/tmp/synthjob}
nvidia-smi -L
t0=$(date +%s)
if [ "${REUSE_SYNTH:-0}" != 1 ]; then
    bin/flatq synth "$SYNTH_DIR" --shape llama-3-70b --layers "$L" || exit 1
    echo "synth: $L layers in $(($(date +%s) - t0)) s"
    bash bench/one_layer_view.sh "$SYNTH_DIR" "$SYNTH_DIR-1" || exit 1
fi
tag=${TAG:-}
job() { # name np model extra...
    local name=$1 np=$2 model=$3
    shift 3
    local s
    s=$(date +%s)
    # shellcheck disable=SC2086
    SYNTH_DIR=$model SYNTH_OUT=/tmp/$name timeout "${JOB_S:-400}" mpirun --allow-run-as-root \
        --oversubscribe --bind-to none -np "$np" -x LD_LIBRARY_PATH -x FLATQ_DATA -x SYNTH_DIR \
        -x SYNTH_OUT -x FLATQ_PROGRESS -x OPENBLAS_NUM_THREADS -x CUDA_VISIBLE_DEVICES \
        bin/flatq calibrate jobs/synth-70b.yaml $EXTRA "$@" >"$out/$name.log" 2>&1
    echo "RESULT|$name|np $np|rc $?|wall $(($(date +%s) - s)) s"
    grep -E "layer [0-9]+ done|phases:|setup:| io:|calibration:|rank [0-9]+ \(|FP pass|peak" "$out/$name.log" | tail -30
    rm -rf "/tmp/$name"
}
# EXTRA: --set overrides for every run (e.g. fewer epochs to fit a call: the overheads —
# FP pass, cache I/O — stay those of the full recipe, so the efficiency is a lower bound)
EXTRA=${EXTRA:-}
all=$(seq -s, 0 $((ngpu - 1)))
# ONE_GPU: the GPU of the 1-GPU run (default 0); GPUS=" " runs only that one; SKIP_ONE=1
# reuses $out/${TAG}one.log of an earlier call with the same TAG
export CUDA_VISIBLE_DEVICES=${ONE_GPU:-0}
[ "${SKIP_ONE:-0}" = 1 ] || job "${tag}one" 2 "$SYNTH_DIR-1"
runs=""
for g in ${GPUS:-$ngpu}; do
    [ "$g" -gt "$ngpu" ] && continue
    CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((g - 1)))
    export CUDA_VISIBLE_DEVICES
    job "${tag}gpus$g" $((g + 1)) "$SYNTH_DIR"
    runs="$runs $g"
done
export CUDA_VISIBLE_DEVICES=$all
python3 - "$out" "$L" "$tag" $runs <<'PY'
import re, sys
out, L, tag, runs = sys.argv[1], int(sys.argv[2]), sys.argv[3], [int(g) for g in sys.argv[4:]]
def layer_times(p):
    return [float(m.group(1)) for m in re.finditer(r"layer \d+ done on rank \d+ \(.*?\) in ([0-9.]+)s", open(p).read())]
def started(txt):
    return [float(x) for x in re.findall(r"\[flatq\s+([0-9.]+)s\] layer \d+ started", txt)]
one_txt = open(f"{out}/{tag}one.log").read()
one = layer_times(f"{out}/{tag}one.log")
if not one:
    print("RESULT|efficiency|not computed (the 1-GPU run has no layer time)")
    sys.exit(0)
t1 = one[0]
s1 = min(started(one_txt) or [0.0])
print(f"RESULT|1-GPU layer|{t1:.1f} s (calibration of one layer, this recipe); first layer "
      f"started at {s1:.1f} s of the job")
for g in runs:
    txt = open(f"{out}/{tag}gpus{g}.log").read()
    m = re.findall(r"\[flatq\s+([0-9.]+)s\] layer \d+ done", txt)
    many = layer_times(f"{out}/{tag}gpus{g}.log")
    if len(m) < L:
        print(f"RESULT|efficiency|{g} GPUs: {len(m)} of {L} layers done (not computed)")
        continue
    wall = max(float(x) for x in m)
    first = min(started(txt))
    # two measures: the layer phase (first start to last done) against L·t1/g, which is
    # what more GPUs can shorten; and the whole job against the 1-GPU job estimated as
    # its startup (time to its first layer) plus L·t1 (startup and the FP pass's lead
    # included, so it falls with L/g; the FP pass itself runs beside the layers)
    eff_phase = L * t1 / (g * (wall - first))
    wall1 = s1 + L * t1
    eff_job = wall1 / (g * wall)
    print(f"RESULT|efficiency|{L} layers on {g} GPUs: first layer started at {first:.1f} s, last "
          f"done at {wall:.1f} s (job clock)|layer phase {wall - first:.1f} s vs {L * t1 / g:.1f} s "
          f"ideal: efficiency {eff_phase:.3f}|whole job vs 1-GPU estimate {wall1:.1f} s: speedup "
          f"{wall1 / wall:.2f}, efficiency {eff_job:.3f}|per-layer {min(many):.1f}-{max(many):.1f} s")
    for n in (8, 16, 32):
        print(f"RESULT|projection|80 layers on {n} GPUs at the layer-phase efficiency of {g}: "
              f"{(s1 + 80 * t1 / (n * eff_phase)) / 60:.1f} min")
PY
