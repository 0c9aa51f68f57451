/* gpu_q_layer.c — one W4A4KV4 decoder layer on the GPU through the kernels of
 * kernels/w4a4.h, Megatron-sharded; the real-arithmetic twin of core/qlayer_fwd.c.
 *
 * Per layer (ALGORITHM §6): RMSNorm(γ1') → one fused Kron(attn_in) + three quantizations
 * (q, k, v clips) → three W4A4 GEMMs (this rank's heads) → RoPE → q·M_k^{−T}, k·M_k
 * (and v·M_v) → KV4 cache write → attention over the dequantized cache → M_oᵀ on this
 * rank's blocks + per-block quantization → W4A4 o_proj (this rank's input columns) with
 * the residual on rank 0 → all-reduce → RMSNorm(γ2') → Kron(mlp_in) + two quantizations
 * → gate/up GEMMs → SwiGLU → Kron(down_in) on this rank's blocks + per-block quantization
 * → down_proj → all-reduce. At decode sizes the two RMSNorms and the SwiGLU run inside
 * the transform's launch (fq_norm_transform_quant_cuda, fq_swiglu_transform_quant_cuda).
 *
 * Slicing: column-parallel weights keep whole output rows (contiguous in the file);
 * row-parallel ones keep a byte range of every row, so the shard boundary must fall on a
 * whole byte (even channel index), which the loader checks. Every weight row is uploaded
 * padded to Kp = fq_w4a4_padded_k(K) codes (zero codes after the real K, kernels/w4a4.h),
 * the row length the activation codes have too, so an input width that is not a multiple
 * of 64 (stories260K's f = 172) runs; each GEMM is given Kp. Shapes the kernels still do
 * not take (a padded K with several TP blocks on one rank) are refused by the kernels at
 * the first forward with their own one-line error. T_d and M_o blocks belong to
 * ranks whole (tp_plan guarantees it), each with its own activation scale, so the
 * partial products are exactly the fake-quant ones summed by the all-reduce.
 */
#include "runtime/gpu_model.h"
#include "error.h"
#include "kernels/w4a4.h"
#include "qformat.h"
#include "runtime/rt_ops.h"

#include <stdlib.h>
#include <string.h>

#define F "runtime/gpu_q_layer.c"

#ifdef FLATQ_HAVE_CUDA


static int upload_bytes(gpu_model *m, void **dst, const void *src, size_t bytes, int is_kv,
                        const char *what)
{
    if (gpu_model_alloc(m, dst, bytes, is_kv, what) != FQ_OK)
        return FQ_ERR;
    return src ? rt_upload(m->ctx, *dst, src, bytes) : rt_memset0(m->ctx, *dst, bytes);
}

/* blocks b0 .. b0+nb of a [blocks, n, n] stack */
static int upload_blocks(gpu_model *m, float **dst, const float *src, int b0, int nb, int n,
                         const char *what)
{
    size_t per = (size_t)n * n;
    return gpu_model_upload_f32(m, dst, src + (size_t)b0 * per, (size_t)nb * per, what);
}

/* rows r0 .. r0+nr and input channels c0 .. c0+nc (even) of a packed [out, in/2] weight,
 * each row padded with zero codes to fq_w4a4_padded_k(nc), and the scales of those rows */
static int upload_slice(gpu_model *m, gpu_q_layer *g, const qlayer *q, int i, int r0, int nr,
                        int c0, int nc)
{
    const qlinear *l = &q->lin[i];
    size_t rb = (size_t)l->in / 2, nb = (size_t)nc / 2, pb = (size_t)fq_w4a4_padded_k(nc) / 2;
    uint8_t *h = fq_calloc((size_t)nr * pb, 1, "weight slice");
    if (!h)
        return FQ_ERR;
    for (int r = 0; r < nr; r++)
        memcpy(h + (size_t)r * pb, l->codes + (size_t)(r0 + r) * rb + c0 / 2, nb);
    int rc = upload_bytes(m, (void **)&g->qw[i], h, (size_t)nr * pb, 0, "packed weight");
    free(h);
    if (rc != FQ_OK)
        return FQ_ERR;
    return gpu_model_upload_f32(m, &g->sw[i], l->scales + r0, (size_t)nr, "weight scales");
}

static int kron_upload(gpu_model *m, gpu_kron *k, const qkron *q, int b0, int nb, const char *what)
{
    k->n1 = q->n1;
    k->n2 = q->n2;
    k->blocks = nb;
    if (upload_blocks(m, &k->L, q->L, b0, nb, q->n1, what) != FQ_OK)
        return FQ_ERR;
    return upload_blocks(m, &k->R, q->R, b0, nb, q->n2, what);
}

int gpu_q_layer_load(gpu_model *m, const void *ckp, int layer)
{
    const st_checkpoint *ck = ckp;
    const llama_config *c = &m->cfg;
    const tp_plan *p = &m->plan;
    gpu_q_layer *g = &m->q[layer];
    int dh = c->head_dim, tb = m->qc.tp_blocks > 0 ? m->qc.tp_blocks : 1;
    qlayer q = {0};
    if (qlayer_read(ck, c, &m->qc, layer, &q) != FQ_OK)
        return FQ_ERR;
    int rc = FQ_ERR;
    for (int i = 0; i < QL_NLINEAR; i++)
        if (q.lin[i].bits != 4 || !q.lin[i].codes) {
            fq_error("%s: layer %d: %s has %d-bit weights (expected packed 4-bit codes, as "
                     "quantization_config says)", ck->dir, layer, qlinear_names[i],
                     q.lin[i].bits);
            goto done;
        }
    if (q.down_in.blocks != tb || q.o_blocks != tb || q.attn_in.blocks != 1 ||
        q.mlp_in.blocks != 1) {
        fq_error("%s: layer %d: transform blocks attn_in %d, mlp_in %d, down_in %d, o_in %d "
                 "(expected 1, 1 and tp_blocks = %d from quantization_config)", ck->dir, layer,
                 q.attn_in.blocks, q.mlp_in.blocks, q.down_in.blocks, q.o_blocks, tb);
        goto done;
    }
    if ((p->ffn0 % 2) || (p->ffn % 2) || ((p->head0 * dh) % 2)) {
        fq_error(F ":gpu_q_layer_load: rank %d: shard starts at channel %d of f (expected "
                 "even channel offsets to slice packed nibbles)", p->rank, p->ffn0);
        goto done;
    }
    int hb = c->n_heads / tb;
    if (upload_bytes(m, (void **)&g->attn_norm, q.attn_norm, sizeof(float) * c->hidden, 0,
                     "γ1'") != FQ_OK ||
        upload_bytes(m, (void **)&g->mlp_norm, q.mlp_norm, sizeof(float) * c->hidden, 0,
                     "γ2'") != FQ_OK ||
        kron_upload(m, &g->attn_in, &q.attn_in, 0, 1, "attn_in transform") != FQ_OK ||
        kron_upload(m, &g->mlp_in, &q.mlp_in, 0, 1, "mlp_in transform") != FQ_OK ||
        kron_upload(m, &g->down_in, &q.down_in, p->block0, p->blocks, "down_in transform") !=
            FQ_OK ||
        upload_blocks(m, &g->o_in.L, q.Mo, p->block0, p->blocks, hb, "M_o") != FQ_OK ||
        gpu_model_upload_f32(m, &g->Mk, q.Mk, (size_t)dh * dh, "M_k") != FQ_OK ||
        gpu_model_upload_f32(m, &g->Mk_inv_t, q.Mk_inv_t, (size_t)dh * dh, "M_k^-T") != FQ_OK)
        goto done;
    g->o_in.n1 = hb;
    g->o_in.n2 = dh;
    g->o_in.blocks = p->blocks;
    g->o_in.R = NULL;
    if (q.Mv && gpu_model_upload_f32(m, &g->Mv, q.Mv, (size_t)dh * dh, "M_v") != FQ_OK)
        goto done;
    int d = c->hidden;
    if (upload_slice(m, g, &q, QL_Q, p->head0 * dh, p->heads * dh, 0, d) != FQ_OK ||
        upload_slice(m, g, &q, QL_K, p->kv_head0 * dh, p->kv_heads * dh, 0, d) != FQ_OK ||
        upload_slice(m, g, &q, QL_V, p->kv_head0 * dh, p->kv_heads * dh, 0, d) != FQ_OK ||
        upload_slice(m, g, &q, QL_O, 0, d, p->head0 * dh, p->heads * dh) != FQ_OK ||
        upload_slice(m, g, &q, QL_GATE, p->ffn0, p->ffn, 0, d) != FQ_OK ||
        upload_slice(m, g, &q, QL_UP, p->ffn0, p->ffn, 0, d) != FQ_OK ||
        upload_slice(m, g, &q, QL_DOWN, 0, d, p->ffn0, p->ffn) != FQ_OK)
        goto done;
    memcpy(g->act_clip, q.act_clip, sizeof g->act_clip);
    memcpy(g->kv_clip, q.kv_clip, sizeof g->kv_clip);
    fq_kv4_cache *kv = fq_calloc(1, sizeof *kv, "KV4 cache");
    if (!kv)
        goto done;
    g->kv4 = kv;
    kv->batch = m->max_batch;
    kv->kv_heads = p->kv_heads;
    kv->max_ctx = m->max_ctx;
    kv->dh = dh;
    size_t vecs = (size_t)m->max_batch * p->kv_heads * m->max_ctx;
    if (upload_bytes(m, (void **)&kv->k_codes, NULL, vecs * dh / 2, 1, "K4 cache") != FQ_OK ||
        upload_bytes(m, (void **)&kv->v_codes, NULL, vecs * dh / 2, 1, "V4 cache") != FQ_OK ||
        upload_bytes(m, (void **)&kv->k_sz, NULL, vecs * 4, 1, "K4 scales") != FQ_OK ||
        upload_bytes(m, (void **)&kv->v_sz, NULL, vecs * 4, 1, "V4 scales") != FQ_OK)
        goto done;
    rc = FQ_OK;
done:
    qlayer_free(&q);
    return rc == FQ_OK ? FQ_OK : fq_error_wrap("layer %d", layer);
}

void gpu_q_layer_free(gpu_q_layer *l)
{
    void *p[] = {l->attn_norm, l->mlp_norm, l->attn_in.L, l->attn_in.R, l->mlp_in.L,
                 l->mlp_in.R, l->down_in.L, l->down_in.R, l->o_in.L, l->Mk, l->Mk_inv_t, l->Mv};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        fq_cuda_free(p[i]);
    for (int i = 0; i < QL_NLINEAR; i++) {
        fq_cuda_free(l->qw[i]);
        fq_cuda_free(l->sw[i]);
    }
    fq_kv4_cache *kv = l->kv4;
    if (kv) {
        fq_cuda_free(kv->k_codes);
        fq_cuda_free(kv->v_codes);
        fq_cuda_free(kv->k_sz);
        fq_cuda_free(kv->v_sz);
        free(kv);
    }
    memset(l, 0, sizeof *l);
}

/* y = W4A4 GEMM of consumer `slot`'s codes [N, Kp/2] with linear i (K real inputs) */
static int q_gemm(gpu_model *m, const gpu_q_layer *l, uint16_t *y, int slot, int kblocks, int i,
                  int N, int out, int K, const uint16_t *residual)
{
    return fq_w4a4_gemm_cuda(m->ctx, y, m->codes[slot], m->ascale[slot], kblocks, l->qw[i],
                             l->sw[i], N, out, fq_w4a4_padded_k(K), residual);
}

/* ys[i] = W4A4 GEMM of consumer slot i's codes with linear lin[i] (outs[i] outputs, K real
 * inputs, one K-block): q/k/v or gate/up, one launch at decode sizes */
static int q_gemms(gpu_model *m, const gpu_q_layer *l, int np, uint16_t *const *ys,
                   const int *lin, const int *outs, int N, int K)
{
    fq_w4a4_problem pr[3];
    for (int i = 0; i < np; i++) {
        fq_w4a4_problem one = {ys[i], m->codes[i], l->qw[lin[i]], m->ascale[i], l->sw[lin[i]],
                               outs[i], NULL};
        pr[i] = one;
    }
    return fq_w4a4_gemm_multi_cuda(m->ctx, np, pr, 1, N, fq_w4a4_padded_k(K));
}

static fq_quant_dst dst_of(const gpu_model *m, const gpu_q_layer *l, int slot, int linear)
{
    fq_quant_dst d = {l->act_clip[linear][0], l->act_clip[linear][1], m->codes[slot],
                      m->ascale[slot]};
    return d;
}

/* x ← x + Σ_ranks W4A4(codes, scales) (residual on rank 0 only), then all-reduce */
static int q_row_parallel(gpu_model *m, const gpu_q_layer *l, int linear, int N, int k,
                          int kblocks)
{
    fq_cuda_ctx *ctx = m->ctx;
    int d = m->cfg.hidden;
    if (q_gemm(m, l, m->x, 0, kblocks, linear, N, d, k, m->plan.rank == 0 ? m->x : NULL) !=
            FQ_OK ||
        rt_prof_mark(m->prof, RTP_GEMM) != FQ_OK ||
        tp_allreduce_bf16(m->comm, ctx, m->x, (size_t)N * d) != FQ_OK)
        return FQ_ERR;
    return rt_prof_mark(m->prof, RTP_ALLREDUCE);
}

/* RMSNorm(x)·γ, then Kron(t) + the consumers' quantizations: one launch at decode sizes
 * (fq_norm_transform_quant_cuda), else the norm into m->a and the transform from there. */
static int norm_transform_quant(gpu_model *m, const fq_quant_dst *dst, int nc,
                                const float *gamma, const gpu_kron *t, int N)
{
    fq_cuda_ctx *ctx = m->ctx;
    int d = m->cfg.hidden, bits = m->qc.a_bits;
    float eps = (float)m->cfg.rms_eps;
    if (fq_transform_quant_fuses(ctx, N, d, 1, t->n1, t->n2, 1)) {
        if (fq_norm_transform_quant_cuda(ctx, dst, nc, m->x, gamma, eps, N, d, t->n1, t->n2,
                                         t->L, t->R, bits) != FQ_OK)
            return FQ_ERR;
    } else if (rt_rmsnorm_bf16(ctx, m->a, m->x, gamma, N, d, eps) != FQ_OK ||
               rt_prof_mark(m->prof, RTP_NORM) != FQ_OK ||
               fq_transform_quant_cuda(ctx, dst, nc, m->a, N, d, 1, t->n1, t->n2, t->L, t->R, 1,
                                       bits) != FQ_OK) {
        return FQ_ERR;
    }
    return rt_prof_mark(m->prof, RTP_TQUANT);
}

int gpu_q_layer_fwd(gpu_model *m, int layer, int B, int n, const int *pos0)
{
    const llama_config *c = &m->cfg;
    const tp_plan *p = &m->plan;
    const gpu_q_layer *l = &m->q[layer];
    fq_cuda_ctx *ctx = m->ctx;
    int N = B * n, d = c->hidden, dh = c->head_dim, hl = p->heads * dh, gl = p->kv_heads * dh;
    int bits = m->qc.a_bits, nb = p->blocks;
    int pos[4096], len[4096];
    for (int b = 0; b < B; b++) {
        pos[b] = pos0[b];
        len[b] = pos0[b] + n;
    }
    /* the kernels take the batch size from the cache: this forward's first B sequences
     * (the cache's layout does not depend on how many sequences it holds) */
    fq_kv4_cache kv = *(const fq_kv4_cache *)l->kv4;
    kv.batch = B;
    /* attention */
    fq_quant_dst qkv[3] = {dst_of(m, l, 0, QL_Q), dst_of(m, l, 1, QL_K), dst_of(m, l, 2, QL_V)};
    rt_profile *pf = m->prof;
    if (norm_transform_quant(m, qkv, 3, l->attn_norm, &l->attn_in, N) != FQ_OK ||
        q_gemms(m, l, 3, (uint16_t *[]){m->qb, m->kb, m->vb}, (int[]){QL_Q, QL_K, QL_V},
                (int[]){hl, gl, gl}, N, d) != FQ_OK ||
        rt_prof_mark(pf, RTP_GEMM) != FQ_OK ||
        rt_rope_mk_bf16(ctx, m->qb, m->kb, m->vb, B, n, p->heads, p->kv_heads, dh, m->pos0_d,
                        m->rope_cos, m->rope_sin, l->Mk_inv_t, l->Mk, l->Mv) != FQ_OK ||
        rt_prof_mark(pf, RTP_ROPE) != FQ_OK ||
        fq_kv4_write_cuda(ctx, &kv, m->kb, m->vb, n, pos, l->kv_clip[0][0], l->kv_clip[0][1],
                          l->kv_clip[1][0], l->kv_clip[1][1], m->qc.kv_bits) != FQ_OK ||
        rt_prof_mark(pf, RTP_KV) != FQ_OK ||
        fq_attention_kv4_cuda(ctx, m->att, m->qb, &kv, n, len, p->heads) != FQ_OK ||
        rt_prof_mark(pf, RTP_ATTN) != FQ_OK)
        return FQ_ERR;
    fq_quant_dst o = dst_of(m, l, 0, QL_O);
    if (fq_transform_quant_cuda(ctx, &o, 1, m->att, N, hl, nb, l->o_in.n1, l->o_in.n2,
                                l->o_in.L, NULL, nb, bits) != FQ_OK ||
        rt_prof_mark(pf, RTP_TQUANT) != FQ_OK ||
        q_row_parallel(m, l, QL_O, N, hl, nb) != FQ_OK)
        return FQ_ERR;
    /* MLP */
    fq_quant_dst gu[2] = {dst_of(m, l, 0, QL_GATE), dst_of(m, l, 1, QL_UP)};
    size_t nf = (size_t)N * p->ffn;
    if (norm_transform_quant(m, gu, 2, l->mlp_norm, &l->mlp_in, N) != FQ_OK ||
        q_gemms(m, l, 2, (uint16_t *[]){m->gate, m->up}, (int[]){QL_GATE, QL_UP},
                (int[]){p->ffn, p->ffn}, N, d) != FQ_OK ||
        rt_prof_mark(pf, RTP_GEMM) != FQ_OK)
        return FQ_ERR;
    /* SwiGLU, then Kron(down_in) + quantization: one launch at decode sizes */
    fq_quant_dst dn = dst_of(m, l, 0, QL_DOWN);
    const gpu_kron *kd = &l->down_in;
    if (fq_transform_quant_fuses(ctx, N, p->ffn, nb, kd->n1, kd->n2, nb)) {
        if (fq_swiglu_transform_quant_cuda(ctx, &dn, 1, m->gate, m->up, N, p->ffn, nb, kd->n1,
                                           kd->n2, kd->L, kd->R, nb, bits) != FQ_OK)
            return FQ_ERR;
    } else if (rt_swiglu_bf16(ctx, m->gate, m->gate, m->up, nf) != FQ_OK ||
               rt_prof_mark(pf, RTP_SWIGLU) != FQ_OK ||
               fq_transform_quant_cuda(ctx, &dn, 1, m->gate, N, p->ffn, nb, kd->n1, kd->n2,
                                       kd->L, kd->R, nb, bits) != FQ_OK) {
        return FQ_ERR;
    }
    if (rt_prof_mark(pf, RTP_TQUANT) != FQ_OK ||
        q_row_parallel(m, l, QL_DOWN, N, p->ffn, nb) != FQ_OK)
        return FQ_ERR;
    return FQ_OK;
}

#endif
