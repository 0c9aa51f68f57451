#!/usr/bin/env bash
# demo.sh — `make demo`: calibrate the bundled stories260K with FlatQuant W4A4KV4 on the
# CPU as a 3-rank MPI job (1 coordinator + 2 workers), then print the perplexity table
# FP / RTN / QuaRot / FlatQuant and where the report is.
set -euo pipefail
FLATQ="${FLATQ:-bin/flatq}"
root=(); [ "$(id -u)" = 0 ] && root=(--allow-run-as-root)
np="${FLATQ_DEMO_RANKS:-3}"
echo "demo: mpirun -np $np $FLATQ calibrate jobs/demo-tiny.yaml"
exec mpirun "${root[@]}" --oversubscribe -np "$np" "$FLATQ" calibrate jobs/demo-tiny.yaml "$@"
