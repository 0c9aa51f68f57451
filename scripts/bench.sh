#!/usr/bin/env bash
# bench.sh — `make bench`: the CPU benchmarks, each printing its table (bench/NOTES.md
# records the numbers and the machine). GPU benchmarks run on the GPU machine separately.
set -uo pipefail
BUILD="${BUILD:-build}"
export FLATQ="${FLATQ:-bin/flatq}"
echo "== evaluation throughput"; bash bench/eval_throughput.sh
echo "== calibration step (CPU)"; "$BUILD/bench/bench_calib_layer" --steps 3
echo "== job overhead"; bash bench/job_overhead.sh
echo "== activation cache I/O (threads)"; "$BUILD/bench/bench_layer_cache"
echo "== tokenizer vs Hugging Face tokenizers (npm)"
if [ -d tests/reference/node_modules/tokenizers ]; then
    taskset -c 0 "$BUILD/bench/bench_tokenizer" --repeat 5
else
    echo "!!! NOT RUN: the npm side needs 'cd tests/reference && npm install' (network)"
fi
