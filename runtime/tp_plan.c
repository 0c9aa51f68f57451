/* tp_plan.c — the tensor-parallel slice of one rank (see tp_plan.h). */
#include "runtime/tp_plan.h"
#include "error.h"

#include <string.h>

#define F "runtime/tp_plan.c"

static int divides(int tp, int rank, int n, const char *what)
{
    if (n % tp != 0)
        return fq_error(F ":tp_plan_make: rank %d: tensor-parallel degree %d does not divide "
                        "the %d %s (expected a divisor of %d)", rank, tp, n, what, n);
    return FQ_OK;
}

int tp_plan_make(tp_plan *p, const llama_config *c, int tp_blocks, int tp, int rank)
{
    if (!p || !c)
        return fq_error(F ":tp_plan_make: NULL plan or config (expected both)");
    memset(p, 0, sizeof *p);
    if (tp < 1 || rank < 0 || rank >= tp)
        return fq_error(F ":tp_plan_make: rank %d of %d ranks (expected 0 <= rank < ranks, "
                        "ranks >= 1)", rank, tp);
    if (c->n_heads < 1 || c->n_kv_heads < 1 || c->intermediate < 1 || c->vocab < 1 ||
        c->n_heads % c->n_kv_heads != 0)
        return fq_error(F ":tp_plan_make: rank %d: model shape h=%d g=%d f=%d V=%d (expected "
                        "positive sizes with g dividing h)", rank, c->n_heads, c->n_kv_heads,
                        c->intermediate, c->vocab);
    if (tp_blocks < 0)
        return fq_error(F ":tp_plan_make: rank %d: tp_blocks %d (expected 0 for an FP model "
                        "or the checkpoint's positive block count)", rank, tp_blocks);
    if (divides(tp, rank, c->n_heads, "attention heads") != FQ_OK ||
        divides(tp, rank, c->n_kv_heads, "KV heads") != FQ_OK ||
        divides(tp, rank, c->intermediate, "intermediate channels") != FQ_OK)
        return FQ_ERR;
    if (tp_blocks > 0 && tp_blocks % tp != 0)
        return fq_error(F ":tp_plan_make: rank %d: tensor-parallel degree %d does not divide "
                        "the checkpoint's tp_blocks %d (expected a divisor of %d: a rank must "
                        "hold whole transform blocks)", rank, tp, tp_blocks, tp_blocks);
    p->tp = tp;
    p->rank = rank;
    p->heads = c->n_heads / tp;
    p->head0 = rank * p->heads;
    p->kv_heads = c->n_kv_heads / tp;
    p->kv_head0 = rank * p->kv_heads;
    p->ffn = c->intermediate / tp;
    p->ffn0 = rank * p->ffn;
    p->blocks = tp_blocks / tp;
    p->block0 = rank * p->blocks;
    p->vocab_shard = (c->vocab + tp - 1) / tp;
    p->vocab0 = rank * p->vocab_shard;
    int left = c->vocab - p->vocab0;
    p->vocab_real = left < 0 ? 0 : left < p->vocab_shard ? left : p->vocab_shard;
    return FQ_OK;
}
