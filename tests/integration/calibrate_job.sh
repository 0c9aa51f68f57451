#!/usr/bin/env bash
# calibrate_job.sh — the real calibration job on the bundled model, end to end:
# identical output bytes for 1, 2 and 3 ranks; a worker killed with SIGKILL after a
# finished layer ends the job fast and a rerun resumes without recomputing finished
# layers, ending with the same bytes; a corrupted layer file is detected and redone; a
# changed recipe is refused; more ranks than layers works; bad inputs give one line;
# quantization.restarts keeps the better of two seeds per layer.
set -u
FLATQ="${FLATQ:-bin/flatq}"
[ -x "$FLATQ" ] || { echo "!!! $FLATQ is not built"; exit 77; }
command -v mpirun >/dev/null || { echo "!!! mpirun not found (apt-get install openmpi-bin)"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 FLATQ_PROGRESS=plain
W=$(mktemp -d /tmp/fq_calib.XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
QUICK=(--set quantization.epochs=1 --set "eval.methods=[fp, flatquant]" --set eval.max_windows=1)
run() { # run NP NAME [args...]
    local np=$1 name=$2; shift 2
    timeout 300 mpirun --oversubscribe -np "$np" "$FLATQ" calibrate jobs/demo-tiny.yaml \
        --set output="$W/$name" "${QUICK[@]}" "$@" >"$W/$name.log" 2>&1
}
sums() { (cd "$W/$1" && sha256sum layer_*.safetensors model-head.safetensors \
          model.safetensors.index.json config.json); }

# 1, 2, 3 ranks: the same bytes
for np in 1 2 3; do
    run $np r$np || { cat "$W/r$np.log"; fail "job with $np ranks failed"; }
    grep -q "^checkpoint: " "$W/r$np.log" || fail "no checkpoint line with $np ranks"
    [ -s "$W/r$np/report.html" ] || fail "no report with $np ranks"
done
sums r1 >"$W/sums"
for np in 2 3; do (cd "$W/r$np" && sha256sum --quiet -c "$W/sums") || fail "$np ranks differ from 1 rank"; done
echo "calibrate_job: 1, 2, 3 ranks give identical checkpoints"

# quantization.restarts: 2 trains every layer from seeds 0 and 1 and keeps the lower
# training loss; layers train on the cached FP inputs, so each kept layer is byte for byte
# the layer of the seed-0 run (r1) or of a seed-1 run, whichever printed the lower loss
run 2 rs --set quantization.restarts=2 || { cat "$W/rs.log"; fail "restarts job failed"; }
run 2 s1 --set quantization.seed=1 || { cat "$W/s1.log"; fail "seed-1 job failed"; }
[ "$(grep -c 'restart [12]/2 (seed [01]): loss' "$W/rs.log")" = 10 ] ||
    { cat "$W/rs.log"; fail "expected two restart lines per layer"; }
for i in 0 1 2 3 4; do
    f=layer_00$i.safetensors
    l0=$(sed -n "s/^flatq: layer $i restart 1\/2 (seed 0): loss \([^ ]*\).*/\1/p" "$W/rs.log")
    l1=$(sed -n "s/^flatq: layer $i restart 2\/2 (seed 1): loss \([^ ]*\).*/\1/p" "$W/rs.log")
    want=r1
    awk -v a="$l0" -v b="$l1" 'BEGIN { exit !(b < a) }' && want=s1
    cmp -s "$W/rs/$f" "$W/$want/$f" || fail "layer $i: restarts kept neither the better seed's layer ($want: losses $l0 / $l1)"
done
echo "calibrate_job: restarts 2 keeps, per layer, the seed with the lower training loss"

# kill -9 a worker once a layer is done, then resume
( run 3 k --set quantization.epochs=6 ) &
bg=$!
for _ in $(seq 600); do
    ls "$W"/k/layer_*.safetensors.sha256 >/dev/null 2>&1 && break
    sleep 0.1
done
ls "$W"/k/layer_*.safetensors.sha256 >/dev/null 2>&1 || fail "no layer finished before the kill"
victim=""
for p in $(pgrep -f "flatq calibrate jobs/demo-tiny.yaml --set output=$W/k"); do
    r=$(tr '\0' '\n' </proc/$p/environ 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
    [ "$r" = 1 ] && victim=$p
done
[ -n "$victim" ] || fail "no worker rank 1 found to kill"
kill -9 "$victim"
t0=$(date +%s)
wait $bg && fail "the job with a killed worker reported success"
[ $(( $(date +%s) - t0 )) -le 30 ] || fail "the job took more than 30 s to end after the kill"
done_before=$(ls "$W"/k/layer_*.safetensors.sha256 | wc -l)
run 3 k --set quantization.epochs=6 || { cat "$W/k.log"; fail "resume failed"; }
grep -q "^resume: $done_before of 5 layers already finished" "$W/k.log" || { cat "$W/k.log"; fail "resume did not reuse the $done_before finished layers"; }
grep -q "^calibration: $((5 - done_before)) layers run, $done_before reused" "$W/k.log" || fail "finished layers were recomputed"
run 1 k_ref --set quantization.epochs=6 || fail "reference run failed"
sums k_ref >"$W/sums_k"
(cd "$W/k" && sha256sum --quiet -c "$W/sums_k") || fail "the resumed checkpoint differs from an uninterrupted one"
echo "calibrate_job: killed worker → fast failure; rerun resumed $done_before finished layers; same bytes"

# a corrupted layer is found by its checksum and redone
printf 'X' | dd of="$W/r1/layer_002.safetensors" bs=1 seek=200 conv=notrunc status=none
run 1 r1 || { cat "$W/r1.log"; fail "rerun after corruption failed"; }
grep -q "^calibration: 1 layers run, 4 reused" "$W/r1.log" || { cat "$W/r1.log"; fail "the corrupted layer was not redone alone"; }
(cd "$W/r1" && sha256sum --quiet -c "$W/sums") || fail "the redone layer differs"
echo "calibrate_job: a corrupted layer file was detected and redone"

# a changed recipe on the same output is refused, naming why
run 1 r1 --set quantization.lr=0.001 && fail "a changed recipe was accepted"
grep -q "different recipe" "$W/r1.log" || { cat "$W/r1.log"; fail "no refusal message"; }

# more ranks than layers
run 7 r7 || { cat "$W/r7.log"; fail "7 ranks for 5 layers failed"; }
(cd "$W/r7" && sha256sum --quiet -c "$W/sums") || fail "7 ranks differ"

# bad inputs: one line, nonzero exit, nothing half-written
touch "$W/afile"
run 1 bad1 --set output="$W/afile/out" && fail "an output below a file was accepted"
grep -q "^flatq: .*afile.*cannot create directory" "$W/bad1.log" || { cat "$W/bad1.log"; fail "bad output dir message"; }
run 1 bad2 --set calibration.nsamples=64 --set calibration.seqlen=512 && fail "too little calibration text was accepted"
grep -q "^flatq: calibration.text .*fewer than nsamples" "$W/bad2.log" || { cat "$W/bad2.log"; fail "short text message"; }
run 1 bad3 --set model="$W/nomodel" && fail "a missing model was accepted"
grep -q "^flatq: .*nomodel" "$W/bad3.log" || { cat "$W/bad3.log"; fail "missing model message"; }
run 1 bad4 --set quantization.w_bits=9 && fail "w_bits 9 was accepted"
grep -q "quantization.w_bits" "$W/bad4.log" || { cat "$W/bad4.log"; fail "w_bits message"; }
echo "calibrate_job: bad inputs refused with one-line errors"
