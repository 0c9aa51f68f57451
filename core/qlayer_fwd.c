/* qlayer_fwd.c — CPU forward of a quantized layer (see qlayer_fwd.h).
 *
 * Order of operations follows ALGORITHM §6 (and the training forward of §4.4 after the
 * §5 merges): RMSNorm(γ1') → Kron(L_a, R_a) → three input quantizations (q, k, v) →
 * GEMMs → RoPE → q·M_k^{−T}, k·M_k → K/V quantization → attention → M_oᵀ·O → quantize →
 * o_proj + residual → RMSNorm(γ2') → Kron(L_ug, R_ug) → quantize (up, gate) → SwiGLU →
 * Kron(L_d, R_d) → quantize → down_proj + residual. Block-diagonal (tensor-parallel)
 * transforms are applied block by block through a gather/scatter copy. An optional
 * observer sees each linear's quantized input (the GPTQ pass's Hessians) at no cost when
 * absent.
 */
#include "qlayer_fwd.h"
#include "error.h"
#include "kron.h"
#include "quantizer.h"

#include <stdlib.h>
#include <string.h>

static real *real_copy(const float *src, size_t n, const char *what)
{
    real *r = fq_malloc(sizeof(real) * (n ? n : 1), what);
    if (r && src)
        for (size_t i = 0; i < n; i++)
            r[i] = (real)src[i];
    return r;
}

static int qkron_rt_init(qkron_rt *k, const qkron *q)
{
    k->n1 = q->n1;
    k->n2 = q->n2;
    k->blocks = q->blocks;
    k->L = real_copy(q->L, (size_t)q->blocks * q->n1 * q->n1, "transform L");
    k->R = real_copy(q->R, (size_t)q->blocks * q->n2 * q->n2, "transform R");
    return k->L && k->R ? FQ_OK : FQ_ERR;
}

static void qkron_rt_free(qkron_rt *k)
{
    free(k->L);
    free(k->R);
    memset(k, 0, sizeof *k);
}

int qlayer_rt_init(qlayer_rt *rt, const qlayer *q, const llama_config *c)
{
    memset(rt, 0, sizeof *rt);
    int d = c->hidden, dh = c->head_dim;
    rt->attn_norm = real_copy(q->attn_norm, (size_t)d, "γ1");
    rt->mlp_norm = real_copy(q->mlp_norm, (size_t)d, "γ2");
    if (!rt->attn_norm || !rt->mlp_norm || qkron_rt_init(&rt->attn_in, &q->attn_in) ||
        qkron_rt_init(&rt->mlp_in, &q->mlp_in) || qkron_rt_init(&rt->down_in, &q->down_in))
        goto fail;
    /* M_o blocks act as the left factor of a Kronecker transform with R = I_dh. */
    int hb = c->n_heads / q->o_blocks;
    rt->o_in.n1 = hb;
    rt->o_in.n2 = dh;
    rt->o_in.blocks = q->o_blocks;
    rt->o_in.L = real_copy(q->Mo, (size_t)q->o_blocks * hb * hb, "M_o");
    rt->o_in.R = real_copy(NULL, (size_t)q->o_blocks * dh * dh, "identity");
    if (!rt->o_in.L || !rt->o_in.R)
        goto fail;
    for (int b = 0; b < q->o_blocks; b++)
        for (int i = 0; i < dh; i++)
            for (int j = 0; j < dh; j++)
                rt->o_in.R[((size_t)b * dh + i) * dh + j] = i == j;
    rt->Mk = real_copy(q->Mk, (size_t)dh * dh, "M_k");
    rt->Mk_inv_t = real_copy(q->Mk_inv_t, (size_t)dh * dh, "M_k^-T");
    if (!rt->Mk || !rt->Mk_inv_t)
        goto fail;
    if (q->Mv && !(rt->Mv = real_copy(q->Mv, (size_t)dh * dh, "M_v")))
        goto fail;
    for (int i = 0; i < QL_NLINEAR; i++) {
        const qlinear *l = &q->lin[i];
        size_t n = (size_t)l->out * l->in;
        float *tmp = fq_malloc(sizeof(float) * n, "dequantized weight");
        if (!tmp || qlinear_dequantize(l, tmp) != FQ_OK) {
            free(tmp);
            goto fail;
        }
        rt->w[i] = real_copy(tmp, n, "weight");
        free(tmp);
        if (!rt->w[i])
            goto fail;
        rt->act_clip[i][0] = q->act_clip[i][0];
        rt->act_clip[i][1] = q->act_clip[i][1];
    }
    for (int i = 0; i < 2; i++) {
        rt->kv_clip[i][0] = q->kv_clip[i][0];
        rt->kv_clip[i][1] = q->kv_clip[i][1];
    }
    return FQ_OK;
fail:
    qlayer_rt_free(rt);
    return FQ_ERR;
}

void qlayer_rt_free(qlayer_rt *rt)
{
    free(rt->attn_norm);
    free(rt->mlp_norm);
    qkron_rt_free(&rt->attn_in);
    qkron_rt_free(&rt->mlp_in);
    qkron_rt_free(&rt->down_in);
    qkron_rt_free(&rt->o_in);
    free(rt->Mk);
    free(rt->Mk_inv_t);
    free(rt->Mv);
    for (int i = 0; i < QL_NLINEAR; i++)
        free(rt->w[i]);
    memset(rt, 0, sizeof *rt);
}

int qlayer_scratch_init(qlayer_scratch *w, const llama_config *c, int b, int s)
{
    memset(w, 0, sizeof *w);
    size_t n = (size_t)b * s, d = (size_t)c->hidden, f = (size_t)c->intermediate;
    size_t qd = (size_t)c->n_heads * c->head_dim, kd = (size_t)c->n_kv_heads * c->head_dim;
    size_t wide = f > qd ? f : qd;
    wide = wide > d ? wide : d;
    w->n = (int)n;
    w->a = fq_malloc(sizeof(real) * n * wide, "scratch");
    w->t = fq_malloc(sizeof(real) * n * wide, "scratch");
    w->q = fq_malloc(sizeof(real) * n * qd, "scratch q");
    w->k = fq_malloc(sizeof(real) * n * kd, "scratch k");
    w->v = fq_malloc(sizeof(real) * n * kd, "scratch v");
    w->att = fq_malloc(sizeof(real) * n * qd, "scratch attention");
    w->gate = fq_malloc(sizeof(real) * n * f, "scratch gate");
    w->up = fq_malloc(sizeof(real) * n * f, "scratch up");
    w->scores = fq_malloc(sizeof(real) * (size_t)s * s, "scratch scores");
    w->scale = fq_malloc(sizeof(real) * n * (size_t)(c->n_heads + c->n_kv_heads + 8), "scales");
    w->zero = fq_malloc(sizeof(real) * n * (size_t)c->n_kv_heads, "zero points");
    w->work = fq_malloc(sizeof(real) * 2 * n * wide, "transform work");
    if (!w->a || !w->t || !w->q || !w->k || !w->v || !w->att || !w->gate || !w->up ||
        !w->scores || !w->scale || !w->zero || !w->work) {
        qlayer_scratch_free(w);
        return FQ_ERR;
    }
    return FQ_OK;
}

void qlayer_scratch_free(qlayer_scratch *w)
{
    real *p[] = {w->a, w->t, w->q, w->k, w->v, w->att, w->gate, w->up, w->scores, w->scale,
                 w->zero, w->work};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        free(p[i]);
    memset(w, 0, sizeof *w);
}

/* y = x (L ⊗ R) per block of each row; rows of length blocks·n1·n2. work: 2·rows·len. */
static int qkron_apply(real *y, const real *x, int rows, const qkron_rt *k, real *work)
{
    int bn = k->n1 * k->n2, len = bn * k->blocks;
    if (k->blocks == 1)
        return kron_fwd(y, x, rows, k->n1, k->n2, k->L, k->R, work);
    /* work holds the gathered block, its transform, and kron_fwd's own work */
    real *in = work, *out = work + (size_t)rows * bn;
    for (int b = 0; b < k->blocks; b++) {
        for (int r = 0; r < rows; r++)
            memcpy(in + (size_t)r * bn, x + (size_t)r * len + (size_t)b * bn, sizeof(real) * bn);
        if (kron_fwd(out, in, rows, k->n1, k->n2, k->L + (size_t)b * k->n1 * k->n1,
                     k->R + (size_t)b * k->n2 * k->n2, out + (size_t)rows * bn) != FQ_OK)
            return FQ_ERR;
        for (int r = 0; r < rows; r++)
            memcpy(y + (size_t)r * len + (size_t)b * bn, out + (size_t)r * bn, sizeof(real) * bn);
    }
    return FQ_OK;
}

/* Quantize-dequantize a linear's input (copy x → out) unless activations are 16-bit. */
static int act_quant(real *out, const real *x, int rows, int k, int blocks, const qconfig *qc,
                     const real clip[2], real *scale)
{
    if (qc->a_bits >= 16) {
        if (out != x)
            memcpy(out, x, sizeof(real) * (size_t)rows * k);
        return FQ_OK;
    }
    return quant_act_sym_ratio(out, scale, x, rows, k, blocks, qc->a_bits, clip[0], clip[1]);
}

int qlayer_fwd(real *x, const qlayer_rt *l, const llama_config *c, const qconfig *qc,
               const rope_table *rope, int b, int s, qlayer_scratch *w)
{
    return qlayer_fwd_observed(x, l, c, qc, rope, b, s, w, NULL, NULL);
}

/* Hand a linear's input to the observer: FQ_OK to continue, 1 to stop, FQ_ERR. */
#define OBSERVE(lin, xh, k)                                                                \
    do {                                                                                   \
        if (on) {                                                                          \
            int orc_ = on(ctx, (lin), (xh), n, (k));                                       \
            if (orc_ != 0)                                                                 \
                return orc_ > 0 ? FQ_OK : FQ_ERR;                                          \
        }                                                                                  \
    } while (0)

int qlayer_fwd_observed(real *x, const qlayer_rt *l, const llama_config *c, const qconfig *qc,
                        const rope_table *rope, int b, int s, qlayer_scratch *w,
                        qlayer_input_fn on, void *ctx)
{
    int n = b * s, d = c->hidden, f = c->intermediate, h = c->n_heads, g = c->n_kv_heads,
        dh = c->head_dim, tb = qc->tp_blocks > 0 ? qc->tp_blocks : 1;
    if (n > w->n)
        return fq_error("qlayer_fwd: %d tokens exceed the scratch's %d", n, w->n);
    /* attention block */
    rmsnorm_fwd(w->a, NULL, x, l->attn_norm, n, d, (real)c->rms_eps);
    if (qkron_apply(w->t, w->a, n, &l->attn_in, w->work) != FQ_OK)
        return FQ_ERR;
    real *outs[3] = {w->q, w->k, w->v};
    int widths[3] = {h * dh, g * dh, g * dh};
    for (int p = QL_Q; p <= QL_V; p++) {
        if (act_quant(w->a, w->t, n, d, 1, qc, l->act_clip[p], w->scale) != FQ_OK)
            return FQ_ERR;
        OBSERVE(p, w->a, d);
        linear_fwd(outs[p], w->a, l->w[p], n, d, widths[p]);
    }
    rope_fwd(w->q, b, s, h, dh, rope);
    rope_fwd(w->k, b, s, g, dh, rope);
    /* K transform after RoPE: q ← q·M_k^{−T}, k ← k·M_k (cancels in q·kᵀ) */
    if (vec_transform_fwd(w->att, w->q, n * h, dh, l->Mk_inv_t) != FQ_OK)
        return FQ_ERR;
    memcpy(w->q, w->att, sizeof(real) * (size_t)n * h * dh);
    if (vec_transform_fwd(w->att, w->k, n * g, dh, l->Mk) != FQ_OK)
        return FQ_ERR;
    memcpy(w->k, w->att, sizeof(real) * (size_t)n * g * dh);
    if (l->Mv) {
        if (vec_transform_fwd(w->att, w->v, n * g, dh, l->Mv) != FQ_OK)
            return FQ_ERR;
        memcpy(w->v, w->att, sizeof(real) * (size_t)n * g * dh);
    }
    if (qc->kv_bits < 16) {
        if (quant_kv_asym_ratio(w->k, w->scale, w->zero, w->k, n * g, dh, qc->kv_bits,
                                l->kv_clip[0][0], l->kv_clip[0][1]) != FQ_OK ||
            quant_kv_asym_ratio(w->v, w->scale, w->zero, w->v, n * g, dh, qc->kv_bits,
                                l->kv_clip[1][0], l->kv_clip[1][1]) != FQ_OK)
            return FQ_ERR;
    }
    attention_fwd(w->att, NULL, w->q, w->k, w->v, b, s, h, g, dh, w->scores);
    if (qkron_apply(w->t, w->att, n, &l->o_in, w->work) != FQ_OK ||
        act_quant(w->t, w->t, n, h * dh, tb, qc, l->act_clip[QL_O], w->scale) != FQ_OK)
        return FQ_ERR;
    OBSERVE(QL_O, w->t, h * dh);
    real_gemm(0, 1, n, d, h * dh, 1, w->t, h * dh, l->w[QL_O], h * dh, 1, x, d);
    /* MLP block */
    rmsnorm_fwd(w->a, NULL, x, l->mlp_norm, n, d, (real)c->rms_eps);
    if (qkron_apply(w->t, w->a, n, &l->mlp_in, w->work) != FQ_OK ||
        act_quant(w->a, w->t, n, d, 1, qc, l->act_clip[QL_UP], w->scale) != FQ_OK)
        return FQ_ERR;
    OBSERVE(QL_UP, w->a, d);
    linear_fwd(w->up, w->a, l->w[QL_UP], n, d, f);
    if (act_quant(w->a, w->t, n, d, 1, qc, l->act_clip[QL_GATE], w->scale) != FQ_OK)
        return FQ_ERR;
    OBSERVE(QL_GATE, w->a, d);
    linear_fwd(w->gate, w->a, l->w[QL_GATE], n, d, f);
    swiglu_fwd(w->gate, w->gate, w->up, (size_t)n * f);
    if (qkron_apply(w->t, w->gate, n, &l->down_in, w->work) != FQ_OK ||
        act_quant(w->t, w->t, n, f, tb, qc, l->act_clip[QL_DOWN], w->scale) != FQ_OK)
        return FQ_ERR;
    OBSERVE(QL_DOWN, w->t, f);
    real_gemm(0, 1, n, d, f, 1, w->t, f, l->w[QL_DOWN], f, 1, x, d);
    return FQ_OK;
}
