#!/usr/bin/env bash
# gptq_job.sh — `weight_quantizer: gptq` end to end on the bundled model: the GPTQ pass
# runs after calibration and marks every layer; 1 and 2 ranks give the same bytes; a
# rerun reuses everything; a layer forgotten after the pass is recalibrated and the pass
# redoes only it, ending with the same bytes; a finished RTN-state layer whose merged
# weights vanished (cache removed mid-job) is recalibrated instead of failing; the codes
# differ from the RTN job's while the scales are equal; gptq with a baseline method is
# refused with one line; quantization.gptq_nsamples subsamples the pass's windows.
set -u
FLATQ="${FLATQ:-bin/flatq}"
[ -x "$FLATQ" ] || { echo "!!! $FLATQ is not built"; exit 77; }
command -v mpirun >/dev/null || { echo "!!! mpirun not found (apt-get install openmpi-bin)"; exit 77; }
command -v python3 >/dev/null || { echo "!!! python3 not found (reads safetensors headers)"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 FLATQ_PROGRESS=plain
W=$(mktemp -d /tmp/fq_gptq.XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
QUICK=(--set quantization.epochs=1 --set "eval.methods=[flatquant]" --set eval.max_windows=1)
run() { # run NP NAME [args...]
    local np=$1 name=$2; shift 2
    timeout 300 mpirun --oversubscribe -np "$np" "$FLATQ" calibrate jobs/demo-tiny.yaml \
        --set output="$W/$name" "${QUICK[@]}" "$@" >"$W/$name.log" 2>&1
}
G=(--set quantization.weight_quantizer=gptq)
sums() { (cd "$W/$1" && sha256sum layer_*.safetensors model-head.safetensors config.json); }
meta() { # meta FILE KEY: a metadata value of a safetensors file
    python3 -c 'import json,struct,sys
f=open(sys.argv[1],"rb"); n=struct.unpack("<Q",f.read(8))[0]
print(json.loads(f.read(n)).get("__metadata__",{}).get(sys.argv[2],""))' "$1" "$2"
}

run 1 g1 "${G[@]}" || { cat "$W/g1.log"; fail "gptq job failed"; }
grep -q "^gptq: 5 layers quantized, 0 reused" "$W/g1.log" || { cat "$W/g1.log"; fail "no GPTQ pass over 5 layers"; }
for i in 0 1 2 3 4; do
    [ "$(meta "$W/g1/layer_00$i.safetensors" weight_quantizer)" = gptq ] || fail "layer $i not marked gptq"
    [ ! -e "$W/g1/cache/merged_00$i.safetensors" ] || fail "merged weights of layer $i left behind"
done
grep -Eq "^flatquant .* [0-9.]+ +[0-9.]+ +1$" "$W/g1.log" || { cat "$W/g1.log"; fail "no eval line"; }
sums g1 >"$W/sums"
run 2 g2 "${G[@]}" || { cat "$W/g2.log"; fail "gptq job with 2 ranks failed"; }
(cd "$W/g2" && sha256sum --quiet -c "$W/sums") || fail "2 ranks differ from 1 rank"
echo "gptq_job: pass ran over 5 layers; 1 and 2 ranks identical"

run 1 g1 "${G[@]}" || fail "rerun failed"
grep -q "^gptq: 0 layers quantized, 5 reused" "$W/g1.log" || { cat "$W/g1.log"; fail "rerun redid GPTQ"; }
rm "$W/g1/layer_002.safetensors.sha256"
run 1 g1 "${G[@]}" || { cat "$W/g1.log"; fail "resume after a forgotten layer failed"; }
grep -q "^calibration: 1 layers run, 4 reused" "$W/g1.log" || { cat "$W/g1.log"; fail "not exactly the forgotten layer recalibrated"; }
grep -q "^gptq: 1 layers quantized, 4 reused" "$W/g1.log" || { cat "$W/g1.log"; fail "pass did not redo only that layer"; }
(cd "$W/g1" && sha256sum --quiet -c "$W/sums") || fail "resumed checkpoint differs"
echo "gptq_job: rerun reuses all; a forgotten layer is redone alone, same bytes"

# an RTN-state result (worker done, pass not yet) whose merged weights were removed
cp "$W/g2/layer_003.safetensors" "$W/keep3"
python3 - "$W/g2/layer_003.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]; b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); h["__metadata__"].pop("weight_quantizer")
s = json.dumps(h, separators=(",", ":")).encode(); s += b" " * ((8 - len(s) % 8) % 8)
open(p, "wb").write(struct.pack("<Q", len(s)) + s + b[8 + n:])
PY
(cd "$W/g2" && sha256sum layer_003.safetensors | awk '{print $1"  layer_003.safetensors"}' > layer_003.safetensors.sha256)
run 2 g2 "${G[@]}" || { cat "$W/g2.log"; fail "resume without merged weights failed"; }
grep -q "^resume: 1 finished layers lost their merged weights" "$W/g2.log" || { cat "$W/g2.log"; fail "lost merged weights not noticed"; }
(cd "$W/g2" && sha256sum --quiet -c "$W/sums") || fail "checkpoint after recalibrating the layer differs"
echo "gptq_job: a finished layer without its merged weights is calibrated again"

run 1 r1 || fail "rtn job failed"
python3 - "$W/g1/layer_000.safetensors" "$W/r1/layer_000.safetensors" <<'PY' || fail "GPTQ codes/scales check"
import json, struct, sys
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items() if k != "__metadata__"}
g, r = load(sys.argv[1]), load(sys.argv[2])
q = [k for k in g if k.endswith(".qweight")]
assert len(q) == 7 and all(g[k] != r[k] for k in q), "codes equal RTN's"
assert all(g[k] == r[k] for k in g if k.endswith(".scales")), "scales differ from RTN's"
PY
echo "gptq_job: codes differ from RTN, scales equal"

# gptq_nsamples: the pass's Hessians from the first windows only — a different (still
# GPTQ-marked) result; a negative count is refused before any work
run 1 gn "${G[@]}" --set quantization.gptq_nsamples=2 || { cat "$W/gn.log"; fail "gptq_nsamples job failed"; }
grep -q "^gptq: 5 layers quantized, 0 reused" "$W/gn.log" || { cat "$W/gn.log"; fail "no pass with gptq_nsamples"; }
[ "$(meta "$W/gn/layer_000.safetensors" weight_quantizer)" = gptq ] || fail "gptq_nsamples layer not marked gptq"
cmp -s "$W/gn/layer_000.safetensors" "$W/g1/layer_000.safetensors" && fail "gptq_nsamples 2 gave the bytes of all windows"
run 1 gbad "${G[@]}" --set quantization.gptq_nsamples=-1 && fail "gptq_nsamples -1 accepted"
grep -q "quantization.gptq_nsamples" "$W/gbad.log" || { cat "$W/gbad.log"; fail "no message naming gptq_nsamples"; }
echo "gptq_job: gptq_nsamples subsamples the pass's windows; a bad value is refused"

timeout 60 "$FLATQ" calibrate jobs/demo-tiny.yaml --set output="$W/bad" "${G[@]}" \
    --set quantization.method=rtn >"$W/bad.log" 2>&1 && fail "gptq with rtn accepted"
[ "$(grep -c . "$W/bad.log")" -le 3 ] && grep -q "quantization.weight_quantizer: expected rtn with method rtn" "$W/bad.log" \
    || { cat "$W/bad.log"; fail "bad job message"; }
echo "gptq_job: gptq with a baseline method refused in one line"
exit 0
