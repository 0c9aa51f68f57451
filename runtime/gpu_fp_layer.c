/* gpu_fp_layer.c — one decoder layer of the FP (bf16) model on the GPU, Megatron-sharded.
 *
 * The same order as core/llama_model.c's forward: RMSNorm → q/k/v (this rank's heads) →
 * RoPE → KV cache write → causal attention over the cache (the KV4 runtime's kernel on bf16
 * K/V: one attention design in both) → o_proj (this rank's input
 * rows) → all-reduce → RMSNorm → gate/up (this rank's f slice) → SwiGLU → down_proj (its
 * rows) → all-reduce. The residual add rides on the row-parallel GEMM: rank 0 accumulates
 * into the hidden state, the others overwrite it with their partial product, and the sum
 * over ranks is then residual + Σ partials with no extra kernel.
 */
#include "runtime/gpu_model.h"
#include "error.h"
#include "runtime/rt_ops.h"
#include "kernels/w4a4.h"

#ifdef FLATQ_HAVE_CUDA

/* x ← x + Σ_ranks (in · W_rankᵀ) */
int gpu_row_parallel_linear(gpu_model *m, const uint16_t *in, const uint16_t *w, int N, int k)
{
    int d = m->cfg.hidden;
    if (rt_linear_bf16(m->ctx, m->x, in, w, N, k, d, m->plan.rank == 0) != FQ_OK ||
        rt_prof_mark(m->prof, RTP_GEMM) != FQ_OK ||
        tp_allreduce_bf16(m->comm, m->ctx, m->x, (size_t)N * d) != FQ_OK)
        return FQ_ERR;
    return rt_prof_mark(m->prof, RTP_ALLREDUCE);
}

int gpu_fp_layer_fwd(gpu_model *m, int layer, int B, int n, const int *pos0)
{
    /* positions were uploaded to pos0_d by the model forward; the attention takes each
     * sequence's length on the host */
    int len[4096];
    for (int b = 0; b < B; b++)
        len[b] = pos0[b] + n;
    const llama_config *c = &m->cfg;
    const tp_plan *p = &m->plan;
    const gpu_fp_layer *l = &m->fp[layer];
    fq_cuda_ctx *ctx = m->ctx;
    int N = B * n, d = c->hidden, dh = c->head_dim, hl = p->heads * dh, gl = p->kv_heads * dh;
    float eps = (float)c->rms_eps;
    rt_profile *pf = m->prof;
    if (rt_rmsnorm_bf16(ctx, m->a, m->x, l->attn_norm, N, d, eps) != FQ_OK ||
        rt_prof_mark(pf, RTP_NORM) != FQ_OK ||
        rt_linear_bf16(ctx, m->qb, m->a, l->wq, N, d, hl, 0) != FQ_OK ||
        rt_linear_bf16(ctx, m->kb, m->a, l->wk, N, d, gl, 0) != FQ_OK ||
        rt_linear_bf16(ctx, m->vb, m->a, l->wv, N, d, gl, 0) != FQ_OK ||
        rt_prof_mark(pf, RTP_GEMM) != FQ_OK ||
        rt_rope_bf16(ctx, m->qb, B, n, p->heads, dh, m->pos0_d, m->rope_cos, m->rope_sin) != FQ_OK ||
        rt_rope_bf16(ctx, m->kb, B, n, p->kv_heads, dh, m->pos0_d, m->rope_cos, m->rope_sin) !=
            FQ_OK ||
        rt_prof_mark(pf, RTP_ROPE) != FQ_OK ||
        rt_kv_write_bf16(ctx, l->kc, l->vc, m->kb, m->vb, B, n, p->kv_heads, dh, m->max_ctx,
                         m->pos0_d) != FQ_OK ||
        rt_prof_mark(pf, RTP_KV) != FQ_OK ||
        fq_attention_bf16kv_cuda(ctx, m->att, m->qb, l->kc, l->vc, B, p->kv_heads, m->max_ctx,
                                 dh, n, len, p->heads) != FQ_OK ||
        rt_prof_mark(pf, RTP_ATTN) != FQ_OK ||
        gpu_row_parallel_linear(m, m->att, l->wo, N, hl) != FQ_OK)
        return FQ_ERR;
    size_t nf = (size_t)N * p->ffn;
    if (rt_rmsnorm_bf16(ctx, m->a, m->x, l->mlp_norm, N, d, eps) != FQ_OK ||
        rt_prof_mark(pf, RTP_NORM) != FQ_OK ||
        rt_linear_bf16(ctx, m->gate, m->a, l->wgate, N, d, p->ffn, 0) != FQ_OK ||
        rt_linear_bf16(ctx, m->up, m->a, l->wup, N, d, p->ffn, 0) != FQ_OK ||
        rt_prof_mark(pf, RTP_GEMM) != FQ_OK ||
        rt_swiglu_bf16(ctx, m->gate, m->gate, m->up, nf) != FQ_OK ||
        rt_prof_mark(pf, RTP_SWIGLU) != FQ_OK ||
        gpu_row_parallel_linear(m, m->gate, l->wdown, N, p->ffn) != FQ_OK)
        return FQ_ERR;
    return FQ_OK;
}

#endif
