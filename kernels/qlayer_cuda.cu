/* qlayer_cuda.cu — the quantized layer's fake-quant forward on the GPU (qlayer_cuda.h).
 * The op order is core/qlayer_fwd.c's, line for line, so a reader checks the two side by
 * side. Where the CPU works in place (K transform, o and down input quantization) this
 * file writes to another buffer and copies back or swaps roles, since the CUDA ops refuse
 * aliasing. Block-diagonal (tensor-parallel) transforms gather each block's columns into
 * a contiguous buffer with a 2-D copy, transform it, and scatter it back, as the CPU does.
 */
#include <string.h>

extern "C" {
#include "fq_layer.h"
#include "qlayer_fwd.h"
}
#include "kernels/cuda_common.cuh"
#include "kernels/llama_layer_cuda.h"
#include "kernels/qlayer_cuda.h"

#define F "kernels/qlayer_cuda.cu"

static int upload_new(fq_cuda_ctx *ctx, float **dst, const float *src, size_t n,
                      const char *what)
{
    return fq_cuda_alloc(dst, n, what) || fq_cuda_upload(ctx, *dst, src, n) ? FQ_ERR : FQ_OK;
}

static int qkron_dev_upload(fq_cuda_ctx *ctx, qkron_dev *k, const qkron_rt *r)
{
    k->n1 = r->n1;
    k->n2 = r->n2;
    k->blocks = r->blocks;
    if (r->n1 < 1 || r->n2 < 1 || r->blocks < 1 || !r->L || !r->R)
        return fq_error(F ":qlayer_dev_upload: transform %d blocks of %d x %d (expected "
                        "positive sizes and both factors)", r->blocks, r->n1, r->n2);
    return upload_new(ctx, &k->L, r->L, (size_t)r->blocks * r->n1 * r->n1, "transform L") ||
                   upload_new(ctx, &k->R, r->R, (size_t)r->blocks * r->n2 * r->n2,
                              "transform R")
               ? FQ_ERR
               : FQ_OK;
}

static void qkron_dev_free(qkron_dev *k)
{
    fq_cuda_free(k->L);
    fq_cuda_free(k->R);
    memset(k, 0, sizeof *k);
}

void qlayer_dev_free(qlayer_dev *d)
{
    if (!d)
        return;
    fq_cuda_free(d->attn_norm);
    fq_cuda_free(d->mlp_norm);
    qkron_dev_free(&d->attn_in);
    qkron_dev_free(&d->mlp_in);
    qkron_dev_free(&d->down_in);
    qkron_dev_free(&d->o_in);
    fq_cuda_free(d->Mk);
    fq_cuda_free(d->Mk_inv_t);
    fq_cuda_free(d->Mv);
    for (int i = 0; i < QL_NLINEAR; i++)
        fq_cuda_free(d->w[i]);
    memset(d, 0, sizeof *d);
}

int qlayer_dev_upload(fq_cuda_ctx *ctx, qlayer_dev *d, const qlayer_rt *rt,
                      const llama_config *c)
{
    if (!ctx || !d || !rt || llama_layer_shape_check(c, F ":qlayer_dev_upload"))
        return fq_error(F ":qlayer_dev_upload: bad arguments (expected a context, a layer and a "
                        "model shape)");
    static_assert(sizeof(real) == sizeof(float), "the GPU path reads real as float");
    memset(d, 0, sizeof *d);
    size_t dd = (size_t)c->hidden, dh = (size_t)c->head_dim;
    int rc = upload_new(ctx, &d->attn_norm, rt->attn_norm, dd, "γ1") ||
             upload_new(ctx, &d->mlp_norm, rt->mlp_norm, dd, "γ2") ||
             qkron_dev_upload(ctx, &d->attn_in, &rt->attn_in) ||
             qkron_dev_upload(ctx, &d->mlp_in, &rt->mlp_in) ||
             qkron_dev_upload(ctx, &d->down_in, &rt->down_in) ||
             qkron_dev_upload(ctx, &d->o_in, &rt->o_in) ||
             upload_new(ctx, &d->Mk, rt->Mk, dh * dh, "M_k") ||
             upload_new(ctx, &d->Mk_inv_t, rt->Mk_inv_t, dh * dh, "M_k^-T") ||
             (rt->Mv && upload_new(ctx, &d->Mv, rt->Mv, dh * dh, "M_v"));
    for (int i = 0; !rc && i < QL_NLINEAR; i++) {
        rc = upload_new(ctx, &d->w[i], rt->w[i], (size_t)fq_linear_out(c, i) * fq_linear_in(c, i), "layer weight");
        d->act_clip[i][0] = rt->act_clip[i][0];
        d->act_clip[i][1] = rt->act_clip[i][1];
    }
    for (int i = 0; i < 2; i++) {
        d->kv_clip[i][0] = rt->kv_clip[i][0];
        d->kv_clip[i][1] = rt->kv_clip[i][1];
    }
    if (rc) {
        qlayer_dev_free(d);
        return fq_error_wrap(F ":qlayer_dev_upload");
    }
    return FQ_OK;
}

int qlayer_dev_set_weight(fq_cuda_ctx *ctx, qlayer_dev *d, int lin, const float *host,
                          const llama_config *c)
{
    if (!ctx || !d || !host || lin < 0 || lin >= QL_NLINEAR || !d->w[lin] ||
        llama_layer_shape_check(c, F ":qlayer_dev_set_weight"))
        return fq_error(F ":qlayer_dev_set_weight: bad arguments (expected an uploaded layer, "
                        "linear 0..%d and a host weight)", QL_NLINEAR - 1);
    return fq_cuda_upload(ctx, d->w[lin], host, (size_t)fq_linear_out(c, lin) * fq_linear_in(c, lin));
}

/* the widest activation row, as the CPU scratch sizes it */
static size_t wide_of(const llama_config *c)
{
    size_t d = (size_t)c->hidden, f = (size_t)c->intermediate,
           qd = (size_t)c->n_heads * c->head_dim;
    size_t wide = f > qd ? f : qd;
    return wide > d ? wide : d;
}

/* element counts of the scratch buffers, in qlayer_scratch_dev order */
enum { NSCRATCH = 12 };
static void scratch_sizes(const llama_config *c, int b, int s, size_t sz[NSCRATCH])
{
    size_t n = (size_t)b * s, f = (size_t)c->intermediate, wide = wide_of(c),
           qd = (size_t)c->n_heads * c->head_dim, kd = (size_t)c->n_kv_heads * c->head_dim;
    /* work: a gathered block, its transform and kron_fwd_cuda's own 2·rows·n */
    const size_t z[NSCRATCH] = {n * wide, n * wide, n * qd, n * kd, n * kd, n * qd, n * f, n * f,
                                (size_t)b * c->n_heads * s * s,
                                n * (size_t)(c->n_heads + c->n_kv_heads + 8),
                                n * (size_t)c->n_kv_heads, 4 * n * wide};
    memcpy(sz, z, sizeof z);
}

static float **scratch_slot(qlayer_scratch_dev *w, int i)
{
    float **p[NSCRATCH] = {&w->a, &w->t, &w->q, &w->k, &w->v, &w->att, &w->gate, &w->up,
                           &w->probs, &w->scale, &w->zero, &w->work};
    return p[i];
}

size_t qlayer_scratch_dev_bytes(const llama_config *c, int b, int s)
{
    if (llama_layer_shape_check(c, F ":qlayer_scratch_dev_bytes") || b < 1 || s < 1)
        return 0;
    size_t sz[NSCRATCH], t = 0;
    scratch_sizes(c, b, s, sz);
    for (int i = 0; i < NSCRATCH; i++)
        t += sz[i] * sizeof(float);
    return t;
}

void qlayer_scratch_dev_free(qlayer_scratch_dev *w)
{
    if (!w)
        return;
    for (int i = 0; i < NSCRATCH; i++)
        fq_cuda_free(*scratch_slot(w, i));
    memset(w, 0, sizeof *w);
}

int qlayer_scratch_dev_init(qlayer_scratch_dev *w, const llama_config *c, int b, int s)
{
    if (!w || llama_layer_shape_check(c, F ":qlayer_scratch_dev_init") || b < 1 || s < 1)
        return fq_error(F ":qlayer_scratch_dev_init: bad arguments (expected a model shape and "
                        "b, s > 0, got %d x %d)", b, s);
    memset(w, 0, sizeof *w);
    size_t sz[NSCRATCH];
    scratch_sizes(c, b, s, sz);
    for (int i = 0; i < NSCRATCH; i++)
        if (fq_cuda_alloc(scratch_slot(w, i), sz[i], "quantized layer scratch")) {
            qlayer_scratch_dev_free(w);
            return FQ_ERR;
        }
    w->b = b;
    w->s = s;
    w->wide = wide_of(c);
    return FQ_OK;
}

/* rows × bn columns at column offset off of rows of length len, to or from a dense buffer */
static int block_copy(fq_cuda_ctx *ctx, float *dst, size_t dpitch, const float *src,
                      size_t spitch, int rows, int bn)
{
    CU_CHECK(cudaMemcpy2DAsync(dst, dpitch * sizeof(float), src, spitch * sizeof(float),
                               (size_t)bn * sizeof(float), (size_t)rows, cudaMemcpyDeviceToDevice,
                               CTX_STREAM(ctx)), F, "qlayer_fwd_cuda", "cudaMemcpy2DAsync");
    return FQ_OK;
}

/* y = x (L ⊗ R) per block of each row (core/qlayer_fwd.c qkron_apply); work: 4·rows·len. */
static int qkron_apply_cuda(fq_cuda_ctx *ctx, float *y, const float *x, int rows,
                            const qkron_dev *k, float *work)
{
    int bn = k->n1 * k->n2;
    size_t len = (size_t)bn * k->blocks;
    if (k->blocks == 1)
        return kron_fwd_cuda(ctx, y, x, rows, k->n1, k->n2, k->L, k->R, work);
    float *in = work, *out = work + (size_t)rows * bn, *kw = out + (size_t)rows * bn;
    for (int b = 0; b < k->blocks; b++)
        if (block_copy(ctx, in, bn, x + (size_t)b * bn, len, rows, bn) ||
            kron_fwd_cuda(ctx, out, in, rows, k->n1, k->n2, k->L + (size_t)b * k->n1 * k->n1,
                          k->R + (size_t)b * k->n2 * k->n2, kw) ||
            block_copy(ctx, y + (size_t)b * bn, len, out, bn, rows, bn))
            return FQ_ERR;
    return FQ_OK;
}

/* out ← the linear's quantized input, or a copy of x when activations stay 16-bit */
static int act_quant_cuda(fq_cuda_ctx *ctx, float *out, const float *x, int rows, int k,
                          int blocks, const qconfig *qc, const float clip[2], float *scale)
{
    if (qc->a_bits >= 16)
        return fq_cuda_copy(ctx, out, x, (size_t)rows * k);
    return quant_act_sym_ratio_cuda(ctx, out, scale, x, rows, k, blocks, qc->a_bits, clip[0],
                                    clip[1]);
}

/* Hand a linear's input to the observer: go on, or return (stop: FQ_OK, error: FQ_ERR). */
#define OBSERVE(lin, xh, k)                                                                \
    do {                                                                                   \
        if (on) {                                                                          \
            int orc_ = on(octx, (lin), (xh), n, (k));                                      \
            if (orc_ != 0)                                                                 \
                return orc_ > 0 ? FQ_OK : FQ_ERR;                                          \
        }                                                                                  \
    } while (0)

static int fwd(fq_cuda_ctx *ctx, float *x, const qlayer_dev *l, const llama_config *c,
               const qconfig *qc, const float *rope_cos, const float *rope_sin, int b, int s,
               qlayer_scratch_dev *w, qlayer_input_dev_fn on, void *octx)
{
    int n = b * s, d = c->hidden, f = c->intermediate, h = c->n_heads, g = c->n_kv_heads,
        dh = c->head_dim, tb = qc->tp_blocks > 0 ? qc->tp_blocks : 1;
    float eps = (float)c->rms_eps;
    /* attention block */
    if (rmsnorm_fwd_cuda(ctx, w->a, NULL, x, l->attn_norm, n, d, eps) ||
        qkron_apply_cuda(ctx, w->t, w->a, n, &l->attn_in, w->work))
        return FQ_ERR;
    float *outs[3] = {w->q, w->k, w->v};
    int widths[3] = {h * dh, g * dh, g * dh};
    for (int p = QL_Q; p <= QL_V; p++) {
        if (act_quant_cuda(ctx, w->a, w->t, n, d, 1, qc, l->act_clip[p], w->scale))
            return FQ_ERR;
        OBSERVE(p, w->a, d);
        if (linear_fwd_cuda(ctx, outs[p], w->a, l->w[p], n, d, widths[p]))
            return FQ_ERR;
    }
    if (rope_fwd_cuda(ctx, w->q, b, s, h, dh, rope_cos, rope_sin) ||
        rope_fwd_cuda(ctx, w->k, b, s, g, dh, rope_cos, rope_sin))
        return FQ_ERR;
    /* K transform after RoPE: q ← q·M_k^{−T}, k ← k·M_k (cancels in q·kᵀ) */
    if (vec_transform_fwd_cuda(ctx, w->att, w->q, n * h, dh, l->Mk_inv_t) ||
        fq_cuda_copy(ctx, w->q, w->att, (size_t)n * h * dh) ||
        vec_transform_fwd_cuda(ctx, w->att, w->k, n * g, dh, l->Mk) ||
        fq_cuda_copy(ctx, w->k, w->att, (size_t)n * g * dh))
        return FQ_ERR;
    if (l->Mv && (vec_transform_fwd_cuda(ctx, w->att, w->v, n * g, dh, l->Mv) ||
                  fq_cuda_copy(ctx, w->v, w->att, (size_t)n * g * dh)))
        return FQ_ERR;
    if (qc->kv_bits < 16) {
        /* quantize into att, copy back (the CUDA quantizer does not work in place) */
        if (quant_kv_asym_ratio_cuda(ctx, w->att, w->scale, w->zero, w->k, n * g, dh, qc->kv_bits,
                                     l->kv_clip[0][0], l->kv_clip[0][1]) ||
            fq_cuda_copy(ctx, w->k, w->att, (size_t)n * g * dh) ||
            quant_kv_asym_ratio_cuda(ctx, w->att, w->scale, w->zero, w->v, n * g, dh, qc->kv_bits,
                                     l->kv_clip[1][0], l->kv_clip[1][1]) ||
            fq_cuda_copy(ctx, w->v, w->att, (size_t)n * g * dh))
            return FQ_ERR;
    }
    if (attention_fwd_cuda(ctx, w->att, w->probs, w->q, w->k, w->v, b, s, h, g, dh) ||
        qkron_apply_cuda(ctx, w->t, w->att, n, &l->o_in, w->work) ||
        act_quant_cuda(ctx, w->a, w->t, n, h * dh, tb, qc, l->act_clip[QL_O], w->scale))
        return FQ_ERR;
    OBSERVE(QL_O, w->a, h * dh);
    if (fq_gemm_cuda(ctx, 0, 1, n, d, h * dh, 1.0f, w->a, h * dh, l->w[QL_O], h * dh, 1.0f, x, d))
        return FQ_ERR;
    /* MLP block */
    if (rmsnorm_fwd_cuda(ctx, w->a, NULL, x, l->mlp_norm, n, d, eps) ||
        qkron_apply_cuda(ctx, w->t, w->a, n, &l->mlp_in, w->work) ||
        act_quant_cuda(ctx, w->a, w->t, n, d, 1, qc, l->act_clip[QL_UP], w->scale))
        return FQ_ERR;
    OBSERVE(QL_UP, w->a, d);
    if (linear_fwd_cuda(ctx, w->up, w->a, l->w[QL_UP], n, d, f) ||
        act_quant_cuda(ctx, w->a, w->t, n, d, 1, qc, l->act_clip[QL_GATE], w->scale))
        return FQ_ERR;
    OBSERVE(QL_GATE, w->a, d);
    if (linear_fwd_cuda(ctx, w->gate, w->a, l->w[QL_GATE], n, d, f) ||
        swiglu_fwd_cuda(ctx, w->gate, w->gate, w->up, (size_t)n * f) ||
        qkron_apply_cuda(ctx, w->t, w->gate, n, &l->down_in, w->work) ||
        act_quant_cuda(ctx, w->a, w->t, n, f, tb, qc, l->act_clip[QL_DOWN], w->scale))
        return FQ_ERR;
    OBSERVE(QL_DOWN, w->a, f);
    return fq_gemm_cuda(ctx, 0, 1, n, d, f, 1.0f, w->a, f, l->w[QL_DOWN], f, 1.0f, x, d);
}

int qlayer_fwd_cuda(fq_cuda_ctx *ctx, float *x, const qlayer_dev *l, const llama_config *c,
                    const qconfig *qc, const float *rope_cos, const float *rope_sin, int b,
                    int s, qlayer_scratch_dev *w, qlayer_input_dev_fn on, void *octx)
{
    if (llama_layer_shape_check(c, F ":qlayer_fwd_cuda"))
        return FQ_ERR;
    if (!ctx || !x || !l || !l->w[QL_Q] || !qc || !rope_cos || !rope_sin || !w || !w->a ||
        b < 1 || s < 1 || b > w->b || s > w->s)
        return fq_error(F ":qlayer_fwd_cuda: bad arguments (expected device x, an uploaded "
                        "layer, rope tables and a scratch for %d x %d tokens)", b, s);
    if (fwd(ctx, x, l, c, qc, rope_cos, rope_sin, b, s, w, on, octx))
        return fq_error_wrap(F ":qlayer_fwd_cuda (%d x %d tokens)", b, s);
    return FQ_OK;
}
