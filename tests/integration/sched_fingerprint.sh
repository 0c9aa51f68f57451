#!/usr/bin/env bash
# sched_fingerprint.sh — rerunning into an output directory made by a different recipe
# is refused with one line saying what changed, before any work, and touches nothing.
set -u
. "$(dirname "$0")/sched_common.bash"
job 2 f || { show f; fail "first job failed"; }
sum_before=$(cat "$SCRATCH/f.out"/*.sha256 | sha256sum)
: >"$SCRATCH/f.log"
job 2 f --recipe bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb && fail "changed recipe was accepted"
grep -q "^flatq: .*job.fingerprint: .*different recipe" "$SCRATCH/f.stderr" || { show f; fail "no refusal naming the recipe"; }
[ ! -s "$SCRATCH/f.log" ] || fail "work was done despite the refusal"
[ "$(cat "$SCRATCH/f.out"/*.sha256 | sha256sum)" = "$sum_before" ] || fail "finished layers were touched"
job 2 f || { show f; fail "same job no longer resumes"; }
grep -q "resuming: 6 of 6" "$SCRATCH/f.stdout" || { show f; fail "expected a full resume"; }
echo "sched_fingerprint: changed recipe refused"
