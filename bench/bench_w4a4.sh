#!/bin/bash
# bench/bench_w4a4.sh — build (where nvcc and the -dev headers are) or run the W4A4 kernel
# benchmark (bench/bench_w4a4.cu). The Makefile's bench rule builds C files only, so this
# script compiles the CUDA benchmark against build/libflatq.a with the Makefile's flags.
#   bench/bench_w4a4.sh build            -> build/bench/bench_w4a4
#   bench/bench_w4a4.sh run LOG [what [layer [tp [M]]]] -> runs it (what: all | linear |
#       prefill | decode | attn; layer (or all), tp (0: all), M: only those linear rows),
#       table to LOG; env BENCH_WARM_MS, BENCH_TURNS: bench/bench_w4a4.cu
set -eu
cd "$(dirname "$0")/.."
case "${1:-build}" in
build)
    make --no-print-directory -j2 build/libflatq.a >/dev/null
    mkdir -p build/bench
    NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
    "$NVCC" -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xcompiler -Wall,-Wextra \
        -Icore -I. bench/bench_w4a4.cu build/libflatq.a \
        $(pkg-config --libs jansson libpcre2-8 yaml-0.1 openblas) \
        -lcublasLt -lcublas -lnccl -lcudart -o build/bench/bench_w4a4
    echo "built build/bench/bench_w4a4" ;;
run)
    shift
    exec build/bench/bench_w4a4 "${1:-/dev/null}" "${2:-all}" "${@:3}" ;;
*)
    echo "usage: $0 build | run LOG [all|linear|prefill|decode|attn [layer [tp [M]]]]" >&2; exit 2 ;;
esac
