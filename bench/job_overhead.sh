#!/usr/bin/env bash
# job_overhead.sh — what the distributed job costs around the calibration itself:
# activation-cache write and read bandwidth against the disk's (dd, same directory),
# the FP pass, and how long workers wait for work with 1, 2 and 3 workers, on
# flatq-llama-16m with a short recipe (16 windows of 1024 tokens, 1 epoch).
set -euo pipefail
FLATQ="${FLATQ:-bin/flatq}"
DATA="${FLATQ_DATA:-../shared/data}"
[ -d "$DATA/models/flatq-llama-16m" ] || { echo "!!! NOT RUN: job_overhead needs $DATA/models/flatq-llama-16m (set FLATQ_DATA)"; exit 0; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 FLATQ_PROGRESS=plain
W=$(mktemp -d "${TMPDIR:-/tmp}/fq_bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
dd if=/dev/zero of="$W/dd" bs=1M count=256 conv=fsync status=none 2>/dev/null
t0=$(date +%s.%N); dd if=/dev/urandom of="$W/dd" bs=1M count=256 conv=fsync status=none; t1=$(date +%s.%N)
echo "disk: dd write 256 MiB + fsync: $(python3 -c "print('%.0f MiB/s' % (256/($t1-$t0)))")"
printf '%-8s %10s %12s %12s %12s %14s\n' workers wall_s fp_pass_s busy_s idle_s cache_read_s
for np in 2 3 4; do
    out="$W/o$np"
    /usr/bin/time -f %e -o "$W/t$np" mpirun --oversubscribe -np $np "$FLATQ" calibrate \
        jobs/flatq-llama-16m.yaml --set output="$out" --set calibration.nsamples=16 \
        --set calibration.seqlen=1024 --set quantization.epochs=1 --set eval.max_windows=1 \
        --set "eval.methods=[flatquant]" --set cache.dtype=bf16 >"$W/log$np" 2>&1
    python3 - "$out/report.json" "$np" "$(cat "$W/t$np")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); np_ = int(sys.argv[2])
w = [x for x in r["ranks"] if x["rank"] > 0] or r["ranks"]
print("%-8d %10.1f %12.1f %12.1f %12.1f %14.2f" % (len(w) if np_ > 1 else 1, float(sys.argv[3]),
      r["fp_pass_seconds"], sum(x["busy_s"] for x in w), sum(x["idle_s"] for x in w),
      sum(x["cache_read_s"] for x in w)))
PY
done
# cache bandwidth from the last run: 7 boundaries of 16×1024×384 bf16
python3 - "$W/o4/cache" <<'PY'
import os, sys
d = sys.argv[1]; sizes = [os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)]
print("cache: %d boundary files, %.1f MiB each" % (len(sizes), sizes[0] / 2**20 if sizes else 0))
PY
