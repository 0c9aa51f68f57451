#!/usr/bin/env bash
# device_tp_check.sh — issue 8's tensor-parallel checks on a two-GPU machine, one call:
#  1. the same W4A4KV4 checkpoint (calibrated with tp: 2, so its T_d / M_o blocks are
#     shard-local) evaluated at TP=1 and TP=2 on the whole of wiki.test.paper (≤ 0.1 %);
#  2. a peer that stops answering (SIGSTOP on rank 1 mid-run): rank 0 must stop with a
#     one-line error naming itself and the cause within FLATQ_NCCL_TIMEOUT_S, not hang;
#  3. LLaMA-3-70B-shaped throughput, BF16 vs W4A4KV4, TP=1 and TP=2 (bench/bench_70b.sh),
#     as long as the call's time allows (DEADLINE_S).
# Carried: bin/flatq, .dev/lib (libyaml), .dev/ckpt/<name> (quantized checkpoints with their
# tokenizer), .dev/data/text/wikitext-2-raw/wiki.test.paper.txt.
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH="$PWD/.dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
out=${OUT:-/tmp/out}
mkdir -p "$out"
t_start=$(date +%s)
elapsed() { echo $(($(date +%s) - t_start)); }
text=.dev/data/text/wikitext-2-raw/wiki.test.paper.txt
nvidia-smi -L
MPI="mpirun --allow-run-as-root --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE"
ppl_of() { tr -d '\n' | grep -o '"ppl": *[0-9.]*' | head -1 | grep -o '[0-9.]*$'; }

echo "== 1. TP=1 vs TP=2, same checkpoint"
for ck in .dev/ckpt/*/; do
    ck=${ck%/}
    name=$(basename "$ck")
    a=$(timeout 120 bin/flatq eval --model "$ck" --text "$text" --seqlen 2048 --device cuda \
        --json 2>>"$out/tp.err" | ppl_of)
    b=$(timeout 120 $MPI -np 2 bin/flatq eval --model "$ck" --text "$text" --seqlen 2048 \
        --device cuda --json 2>>"$out/tp.err" | ppl_of)
    awk -v n="$name" -v a="$a" -v b="$b" 'BEGIN { if (a == "" || b == "") { print "RESULT|" n "|tp1 " a "|tp2 " b "|FAIL (missing)"; exit }
        r = b / a - 1; if (r < 0) r = -r
        printf "RESULT|%s|tp1 %.4f|tp2 %.4f|rel %.2e|%s\n", n, a, b, r, r <= 1e-3 ? "PASS" : "FAIL" }'
    for tp in 1 2; do
        timeout 60 $MPI -np $tp bin/flatq run "$ck" --device cuda --bench --batch 1,8,64 \
            --prompt-len 512 --gen-len 32 2>&1 | grep -v '^$' | sed "s/^/$name tp$tp| /"
    done
done
tail -3 "$out/tp.err" 2>/dev/null

echo "== 2. a peer stops answering (rank 1 SIGSTOP), FLATQ_NCCL_TIMEOUT_S=15"
ck=$(ls -d .dev/ckpt/*/ | head -1)
export FLATQ_NCCL_TIMEOUT_S=15
t0=$(date +%s)
timeout 150 mpirun --allow-run-as-root --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE \
    -x FLATQ_NCCL_TIMEOUT_S -np 2 bin/flatq eval --model "$ck" --text "$text" --seqlen 2048 \
    --device cuda >"$out/stop.log" 2>&1 &
mp=$!
sleep 10
victim=$(pgrep -f 'bin/flatq eval' | while read -r p; do
    grep -qz '^OMPI_COMM_WORLD_RANK=1$' /proc/$p/environ 2>/dev/null && echo $p; done | head -1)
echo "rank 1 pid: ${victim:-none}"
[ -n "$victim" ] && kill -STOP "$victim"
wait $mp
rc=$?
echo "RESULT|peer stopped|mpirun rc=$rc after $(($(date +%s) - t0)) s (10 s before the stop)"
grep -m3 'flatq' "$out/stop.log"
[ -n "$victim" ] && kill -9 "$victim" 2>/dev/null
unset FLATQ_NCCL_TIMEOUT_S

echo "== 3. 70B-shaped BF16 vs W4A4KV4 (elapsed $(elapsed) s)"
if [ "$(elapsed)" -lt "${DEADLINE_S:-200}" ]; then
    mkdir -p lib && cp .dev/lib/* lib/ 2>/dev/null
    W4A4=1 LAYERS=2 GEN=16 TPS="${TPS70:-2 1}" BATCHES=${BATCHES70:-1,8,64} timeout $((560 - $(elapsed))) \
        bash bench/bench_70b.sh 2>&1 | tee "$out/bench70b.log"
fi
echo "== done at $(elapsed) s"
