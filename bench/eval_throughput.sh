#!/usr/bin/env bash
# eval_throughput.sh — CPU evaluation throughput (tokens/s) of `flatq eval`, FP and the
# quantized forward (RTN fake quantization), on both models; the sgemm-bound floor is
# printed beside it. FLATQ_DATA locates flatq-llama-16m.
set -euo pipefail
FLATQ="${FLATQ:-bin/flatq}"
DATA="${FLATQ_DATA:-../shared/data}"
printf '%-18s %-6s %6s %8s %10s %12s\n' model method seqlen windows seconds tokens/s
row() { # model-dir name method seqlen windows
    local json
    json=$("$FLATQ" eval --model "$1" --text data/text/wiki.test.paper.txt --seqlen "$4" \
           --max-windows "$5" --method "$3" --json)
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%-18s %-6s %6d %8d %10.2f %12.0f" % (sys.argv[2], sys.argv[3], d["seqlen"], d["windows"], d["seconds"], d["tokens_per_second"]))' "$json" "$2" "$3"
}
row data/models/stories260K-hf stories260K fp 512 40
row data/models/stories260K-hf stories260K rtn 512 40
if [ -d "$DATA/models/flatq-llama-16m" ]; then
    row "$DATA/models/flatq-llama-16m" flatq-llama-16m fp 2048 4
    row "$DATA/models/flatq-llama-16m" flatq-llama-16m rtn 2048 4
else
    echo "!!! NOT RUN: flatq-llama-16m rows ($DATA/models/flatq-llama-16m absent; set FLATQ_DATA)"
fi
