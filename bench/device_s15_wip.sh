#!/usr/bin/env bash
# device_s15_wip.sh — the first call of session 15 (one GPU): the two branches prepared in
# session 14 and never run on a GPU, each from its own archive of binaries built from it
# (.dev/wip-rope.tar.xz: wip/rope-tc; .dev/wip-kb.tar.xz: wip/kb-overlap), unpacked into
# /tmp/<name> and run from this tree's root (models/, .dev/data):
#   rope: test_gpu_runtime (the tensor-core RoPE/M rows), then `flatq run --bench` at TP 1
#         on the 2- and 1-layer 70B checkpoints with FLATQ_ROPE_TC=1 and 0, b1/b8;
#   kb:   test_gpu_w4a4 (MODE 4 rows), stress_wgmma 200, bench_w4a4's prefill rows at M 16384
#         (the "8 K-blocks" column against "drained").
# Carried: .dev/wip-rope.tar.xz, .dev/wip-kb.tar.xz, .dev/lib, .dev/data/models/flatq-llama-16m,
# .dev/data/text.
set -u
. bench/device_common.sh
device_out
res() { echo "RESULT|$1|t $(($(date +%s) - t0)) s"; }
for w in rope kb; do
    mkdir -p /tmp/$w && tar -xJf .dev/wip-$w.tar.xz -C /tmp/$w
done
R=/tmp/rope K=/tmp/kb
if [ "${ROPE:-1}" = 1 ]; then
    timeout -k 5 200 $R/build/gpu-tests/test_gpu_runtime >"$out/rope_runtime.txt" 2>&1
    res "rope test_gpu_runtime rc=$? rows $(grep -c '^ROW|' "$out/rope_runtime.txt"), failed $(grep -c '|FAIL$' "$out/rope_runtime.txt")"
    grep -E '\|FAIL$|rope_mk.*tensor' "$out/rope_runtime.txt" | head -12
    mkdir -p bin && ln -sf $R/bin/flatq bin/flatq # synth_70b runs bin/flatq
    synth_70b /tmp/synth70b 2 "$out/synth.txt"
    for m in /tmp/synth70b/quantized /tmp/synth70b/quantized-1; do
        for sw in 1 0; do
            FLATQ_ROPE_TC=$sw timeout 120 $R/bin/flatq run "$m" --device cuda --bench --batch 1,8 \
                --prompt-len 2048 --gen-len 32 2>&1 | grep '^BENCH' | sed "s/^BENCH|/BENCH|rope_tc=$sw|/"
        done
    done >"$out/rope_bench.txt" 2>&1
    res "rope runtime bench"
    cat "$out/rope_bench.txt"
    FLATQ_ROPE_TC=1 timeout 100 $R/bin/flatq run /tmp/synth70b/quantized --device cuda --bench --batch 8 \
        --prompt-len 2048 --gen-len 16 --profile 2>&1 | grep -E "rope|linears|sum of ops" >"$out/rope_profile.txt"
    cat "$out/rope_profile.txt"
fi
if [ "${KBO:-1}" = 1 ]; then
    timeout -k 5 180 $K/build/gpu-tests/test_gpu_w4a4 >"$out/kb_w4a4.txt" 2>&1
    res "kb test_gpu_w4a4 rc=$? rows $(grep -c '^ROW|' "$out/kb_w4a4.txt"), failed $(grep -c '|FAIL$' "$out/kb_w4a4.txt")"
    grep '|FAIL$' "$out/kb_w4a4.txt" | head -8
    timeout -k 5 120 $K/build/bench/stress_wgmma 200 >"$out/kb_stress.txt" 2>&1
    res "kb stress_wgmma rc=$?"
    cat "$out/kb_stress.txt"
    timeout -k 5 150 $K/build/bench/bench_w4a4 "$out/kb_prefill.txt" prefill all 0 16384 >/dev/null 2>&1
    res "kb bench_w4a4 rc=$?"
    grep -o "^[a-z_]* *tp[0-9] *[0-9]*\|8 K-blocks *[0-9.]*\|drained *[0-9.]*" "$out/kb_prefill.txt" | paste - - - 2>/dev/null | head -12
fi
exit 0
