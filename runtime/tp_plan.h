/* tp_plan.h — which slice of a LLaMA model one tensor-parallel rank holds (Megatron split).
 *
 * q/k/v and gate/up are split by output columns (whole heads, contiguous f ranges), o_proj
 * and down_proj by input rows, so each rank computes its heads and its part of the MLP on
 * its own and one all-reduce after each row-parallel GEMM restores the replicated hidden
 * state. A checkpoint calibrated with tp_blocks = T holds T independent blocks of the
 * down-input transform T_d and of M_o, each with its own activation scale (ALGORITHM §7);
 * a rank of a T'-way run holds T/T' consecutive blocks, so T' must divide T.
 *
 * lm_head is vocab-parallel: each rank holds ceil(V/T') rows (the last rank's tail is zero
 * padding) and the logits are all-gathered. The embedding is replicated: gathering a row is
 * free and keeps the first layer's input free of communication.
 *
 * Pure C with no CUDA, so the plan and its refusals are unit-tested on any machine.
 */
#ifndef FQ_TP_PLAN_H
#define FQ_TP_PLAN_H

#include "llama_config.h"

typedef struct {
    int tp, rank;
    int heads, head0;       /* local query heads and the first one's global index */
    int kv_heads, kv_head0; /* local KV heads */
    int ffn, ffn0;          /* local intermediate channels */
    int blocks, block0;     /* local T_d / M_o blocks of the checkpoint (0 for an FP model) */
    int vocab_shard;        /* lm_head rows per rank, ceil(V / tp) */
    int vocab0, vocab_real; /* first row held and how many are real (rest is padding) */
} tp_plan;

/* Plan for `rank` of `tp` ranks. tp_blocks: the checkpoint's (0 for an FP model: no block
 * constraint). Refuses, naming the rank and the cause, a tp that does not divide the heads,
 * the KV heads, the intermediate size or tp_blocks. */
int tp_plan_make(tp_plan *p, const llama_config *c, int tp_blocks, int tp, int rank);

#endif
