/* w4a4_layer_ref.c — the runtime's W4A4KV4 layer from the kernel references (see
 * w4a4_layer_ref.h). The steps and their order are those of runtime/gpu_q_layer.c; the
 * elementwise steps the runtime does in rt_ops.cu (RMSNorm, RoPE, the M_k/M_v products,
 * SwiGLU) compute in fp32/fp64 from bf16 inputs and round their outputs to bf16 as those
 * kernels do. */
#include "w4a4_layer_ref.h"
#include "dtype.h"
#include "error.h"
#include "qformat.h"
#include "safetensors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define WHERE "core/w4a4_layer_ref.c"

void w4a4_layer_ws_free(w4a4_layer_ws *w)
{
    if (!w)
        return;
    for (int i = 0; i < 3; i++)
        free(w->codes[i]), free(w->scales[i]);
    void *p[] = {w->a, w->qb, w->kb, w->vb, w->att, w->gate, w->up,
                 w->kv.k_codes, w->kv.v_codes, w->kv.k_sz, w->kv.v_sz};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        free(p[i]);
    memset(w, 0, sizeof *w);
}

int w4a4_layer_ws_init(w4a4_layer_ws *w, const llama_config *c, int s)
{
    if (!w || !c || s < 1)
        return fq_error(WHERE ":w4a4_layer_ws_init: NULL argument or %d tokens (expected >= 1)", s);
    memset(w, 0, sizeof *w);
    size_t S = (size_t)s, d = (size_t)c->hidden, f = (size_t)c->intermediate,
           hl = (size_t)c->n_heads * c->head_dim, gl = (size_t)c->n_kv_heads * c->head_dim;
    size_t wide = f > d ? f : d;
    wide = wide > hl ? wide : hl;
    size_t kp = (size_t)fq_w4a4_padded_k((int)wide);
    w->s = s;
    w->tp = 1;
    for (int i = 0; i < 3; i++) {
        w->codes[i] = fq_calloc(S * kp / 2, 1, "activation codes");
        /* kblocks <= heads (the TP blocks divide the heads) */
        w->scales[i] = fq_calloc(S * (size_t)c->n_heads, sizeof(float), "activation scales");
    }
    w->a = fq_malloc(sizeof(uint16_t) * S * wide, "bf16 activations");
    w->qb = fq_malloc(sizeof(uint16_t) * S * hl, "bf16 q");
    w->kb = fq_malloc(sizeof(uint16_t) * S * gl, "bf16 k");
    w->vb = fq_malloc(sizeof(uint16_t) * S * gl, "bf16 v");
    w->att = fq_malloc(sizeof(uint16_t) * S * hl, "bf16 attention");
    w->gate = fq_malloc(sizeof(uint16_t) * S * f, "bf16 gate");
    w->up = fq_malloc(sizeof(uint16_t) * S * f, "bf16 up");
    w->kv = (fq_kv4_cache){.batch = 1, .kv_heads = c->n_kv_heads, .max_ctx = s,
                           .dh = c->head_dim};
    w->kv.k_codes = fq_calloc(S * gl / 2, 1, "K4 cache");
    w->kv.v_codes = fq_calloc(S * gl / 2, 1, "V4 cache");
    w->kv.k_sz = fq_calloc(S * (size_t)c->n_kv_heads * 2, sizeof(uint16_t), "K4 scales");
    w->kv.v_sz = fq_calloc(S * (size_t)c->n_kv_heads * 2, sizeof(uint16_t), "V4 scales");
    int ok = w->a && w->qb && w->kb && w->vb && w->att && w->gate && w->up && w->kv.k_codes &&
             w->kv.v_codes && w->kv.k_sz && w->kv.v_sz;
    for (int i = 0; i < 3; i++)
        ok = ok && w->codes[i] && w->scales[i];
    if (!ok) {
        w4a4_layer_ws_free(w);
        return FQ_ERR;
    }
    return FQ_OK;
}

static void rmsnorm_bf16(uint16_t *out, const uint16_t *x, const float *g, int n, int d, float eps)
{
    for (int t = 0; t < n; t++) {
        const uint16_t *xr = x + (size_t)t * d;
        double ss = 0;
        for (int j = 0; j < d; j++) {
            double v = fq_bf16_to_f32(xr[j]);
            ss += v * v;
        }
        float r = (float)(1 / sqrt(ss / d + eps));
        for (int j = 0; j < d; j++)
            out[(size_t)t * d + j] = fq_f32_to_bf16(fq_bf16_to_f32(xr[j]) * r * g[j]);
    }
}

/* x ← x·M on nvec vectors of dh */
static int vec_transform_bf16(uint16_t *x, int nvec, int dh, const float *M)
{
    float *v = fq_malloc(sizeof *v * (size_t)dh, "vector");
    if (!v)
        return FQ_ERR;
    for (int i = 0; i < nvec; i++) {
        uint16_t *xr = x + (size_t)i * dh;
        for (int j = 0; j < dh; j++) {
            double s = 0;
            for (int k = 0; k < dh; k++)
                s += (double)fq_bf16_to_f32(xr[k]) * M[(size_t)k * dh + j];
            v[j] = (float)s;
        }
        for (int j = 0; j < dh; j++)
            xr[j] = fq_f32_to_bf16(v[j]);
    }
    free(v);
    return FQ_OK;
}

static int rope_bf16(uint16_t *x, int s, int heads, int dh, const rope_table *rope)
{
    size_t n = (size_t)s * heads * dh;
    real *r = fq_malloc(sizeof *r * n, "rope values");
    if (!r)
        return FQ_ERR;
    for (size_t i = 0; i < n; i++)
        r[i] = fq_bf16_to_f32(x[i]);
    rope_fwd(r, 1, s, heads, dh, rope);
    for (size_t i = 0; i < n; i++)
        x[i] = fq_f32_to_bf16((float)r[i]);
    free(r);
    return FQ_OK;
}

/* y = W4A4 GEMM of slot `slot` with linear l: the weight rows padded to Kp as the runtime
 * uploads them; a row-parallel linear (rowpar) sums its partials as w->tp ranks would */
static int gemm(uint16_t *y, const w4a4_layer_ws *w, int slot, int kblocks, const qlinear *l,
                int s, const uint16_t *residual, int rowpar)
{
    int kp = fq_w4a4_padded_k(l->in);
    uint8_t *qw = fq_calloc((size_t)l->out * kp / 2, 1, "padded weight");
    if (!qw)
        return FQ_ERR;
    for (int r = 0; r < l->out; r++)
        memcpy(qw + (size_t)r * kp / 2, l->codes + (size_t)r * l->in / 2, (size_t)l->in / 2);
    int rc = fq_w4a4_gemm_rowpar(y, w->codes[slot], w->scales[slot], kblocks, qw, l->scales, s,
                                 l->out, kp, residual, rowpar && w->tp > 1 ? w->tp : 1,
                                 rowpar && w->reduce_bf16);
    free(qw);
    return rc;
}

static fq_quant_dst dst_of(const w4a4_layer_ws *w, const qlayer *q, int slot, int lin)
{
    fq_quant_dst d = {q->act_clip[lin][0], q->act_clip[lin][1], w->codes[slot], w->scales[slot]};
    return d;
}

/* RMSNorm(x; γ) into w->a, then one transform shared by ndst consumers' quantizations
 * (q/k/v, or gate/up), as the runtime's fused transform + quantize */
static int norm_transform_quant(w4a4_layer_ws *w, const uint16_t *x, const float *gamma,
                                const qkron *k, const fq_quant_dst *dst, int ndst, int s, int d,
                                float eps)
{
    rmsnorm_bf16(w->a, x, gamma, s, d, eps);
    return fq_transform_quant(dst, ndst, w->a, s, d, 1, k->n1, k->n2, k->L, k->R, 1, 4);
}

/* Hand slot `slot`'s dequantized codes (K real columns, kblocks scales) to the observer:
 * FQ_OK to go on, 1 to stop, FQ_ERR. */
static int observe(qlayer_input_fn on, void *ctx, int lin, const w4a4_layer_ws *w, int slot,
                   int s, int K, int kblocks)
{
    if (!on)
        return FQ_OK;
    int kp = fq_w4a4_padded_k(K), blen = K / kblocks;
    real *xh = fq_malloc(sizeof *xh * (size_t)s * K, "observed input");
    int8_t *q = fq_malloc((size_t)kp, "observed codes");
    if (!xh || !q) {
        free(xh), free(q);
        return FQ_ERR;
    }
    for (int t = 0; t < s; t++) {
        int4_unpack(w->codes[slot] + (size_t)t * kp / 2, (size_t)kp, q);
        for (int j = 0; j < K; j++)
            xh[(size_t)t * K + j] =
                (real)(q[j] * w->scales[slot][(size_t)t * kblocks + j / blen]);
    }
    int rc = on(ctx, lin, xh, s, K);
    free(xh), free(q);
    return rc < 0 ? FQ_ERR : rc;
}

#define OBSERVE(lin, slot, K, kb)                                                          \
    do {                                                                                   \
        int orc_ = observe(on, octx, (lin), w, (slot), s, (K), (kb));                      \
        if (orc_ != FQ_OK)                                                                 \
            return orc_ > 0 ? FQ_OK : FQ_ERR;                                              \
    } while (0)

int w4a4_layer_ref(uint16_t *x, const qlayer *q, const llama_config *c, const qconfig *qc,
                   const rope_table *rope, int s, w4a4_layer_ws *w)
{
    return w4a4_layer_ref_observed(x, q, c, qc, rope, s, w, NULL, NULL);
}

int w4a4_layer_ref_observed(uint16_t *x, const qlayer *q, const llama_config *c,
                            const qconfig *qc, const rope_table *rope, int s, w4a4_layer_ws *w,
                            qlayer_input_fn on, void *octx)
{
    if (!x || !q || !c || !qc || !rope || !w)
        return fq_error(WHERE ":w4a4_layer_ref: NULL argument");
    if (s < 1 || s > w->s || s > rope->seqlen)
        return fq_error(WHERE ":w4a4_layer_ref: %d tokens (expected 1..%d, the buffers' and "
                        "rope table's length)", s, w->s < rope->seqlen ? w->s : rope->seqlen);
    for (int i = 0; i < QL_NLINEAR; i++)
        if (q->lin[i].bits != 4 || !q->lin[i].codes)
            return fq_error(WHERE ":w4a4_layer_ref: %s has %d-bit weights (expected packed 4-bit "
                            "codes)", qlinear_names[i], q->lin[i].bits);
    if (qc->a_bits != 4 || qc->kv_bits != 4)
        return fq_error(WHERE ":w4a4_layer_ref: a_bits %d, kv_bits %d (expected the W4A4KV4 "
                        "runtime's 4 and 4)", qc->a_bits, qc->kv_bits);
    int d = c->hidden, dh = c->head_dim, h = c->n_heads, g = c->n_kv_heads,
        f = c->intermediate, ob = q->o_blocks, nb = q->down_in.blocks;
    float eps = (float)c->rms_eps;
    int pos = 0, len = s;
    fq_quant_dst qkv[3] = {dst_of(w, q, 0, QL_Q), dst_of(w, q, 1, QL_K), dst_of(w, q, 2, QL_V)};
    if (norm_transform_quant(w, x, q->attn_norm, &q->attn_in, qkv, 3, s, d, eps) != FQ_OK)
        return fq_error_wrap("w4a4_layer_ref: attention input");
    OBSERVE(QL_Q, 0, d, 1);
    OBSERVE(QL_K, 1, d, 1);
    OBSERVE(QL_V, 2, d, 1);
    if (gemm(w->qb, w, 0, 1, &q->lin[QL_Q], s, NULL, 0) != FQ_OK ||
        gemm(w->kb, w, 1, 1, &q->lin[QL_K], s, NULL, 0) != FQ_OK ||
        gemm(w->vb, w, 2, 1, &q->lin[QL_V], s, NULL, 0) != FQ_OK ||
        rope_bf16(w->qb, s, h, dh, rope) != FQ_OK || rope_bf16(w->kb, s, g, dh, rope) != FQ_OK ||
        vec_transform_bf16(w->qb, s * h, dh, q->Mk_inv_t) != FQ_OK ||
        vec_transform_bf16(w->kb, s * g, dh, q->Mk) != FQ_OK ||
        (q->Mv && vec_transform_bf16(w->vb, s * g, dh, q->Mv) != FQ_OK))
        return fq_error_wrap("w4a4_layer_ref: attention inputs");
    w->kv.max_ctx = s;
    fq_quant_dst o = dst_of(w, q, 0, QL_O);
    if (fq_kv4_write(&w->kv, w->kb, w->vb, s, &pos, q->kv_clip[0][0], q->kv_clip[0][1],
                     q->kv_clip[1][0], q->kv_clip[1][1], 4) != FQ_OK ||
        fq_attention_kv4(w->att, w->qb, &w->kv, s, &len, h) != FQ_OK ||
        fq_transform_quant(&o, 1, w->att, s, h * dh, ob, h / ob, dh, q->Mo, NULL, ob, 4) !=
            FQ_OK)
        return fq_error_wrap("w4a4_layer_ref: attention");
    OBSERVE(QL_O, 0, h * dh, ob);
    if (gemm(x, w, 0, ob, &q->lin[QL_O], s, x, 1) != FQ_OK)
        return fq_error_wrap("w4a4_layer_ref: o_proj");
    fq_quant_dst gu[2] = {dst_of(w, q, 0, QL_GATE), dst_of(w, q, 1, QL_UP)};
    if (norm_transform_quant(w, x, q->mlp_norm, &q->mlp_in, gu, 2, s, d, eps) != FQ_OK)
        return fq_error_wrap("w4a4_layer_ref: MLP input");
    OBSERVE(QL_UP, 1, d, 1);
    OBSERVE(QL_GATE, 0, d, 1);
    if (gemm(w->gate, w, 0, 1, &q->lin[QL_GATE], s, NULL, 0) != FQ_OK ||
        gemm(w->up, w, 1, 1, &q->lin[QL_UP], s, NULL, 0) != FQ_OK)
        return fq_error_wrap("w4a4_layer_ref: MLP inputs");
    for (size_t i = 0; i < (size_t)s * f; i++) {
        float gv = fq_bf16_to_f32(w->gate[i]);
        w->gate[i] = fq_f32_to_bf16(gv / (1 + expf(-gv)) * fq_bf16_to_f32(w->up[i]));
    }
    fq_quant_dst dn = dst_of(w, q, 0, QL_DOWN);
    if (fq_transform_quant(&dn, 1, w->gate, s, f, nb, q->down_in.n1, q->down_in.n2,
                           q->down_in.L, q->down_in.R, nb, 4) != FQ_OK)
        return fq_error_wrap("w4a4_layer_ref: down_proj input");
    OBSERVE(QL_DOWN, 0, f, nb);
    if (gemm(x, w, 0, nb, &q->lin[QL_DOWN], s, x, 1) != FQ_OK)
        return fq_error_wrap("w4a4_layer_ref: down_proj");
    return FQ_OK;
}

void w4a4_ref_model_free(w4a4_ref_model *m)
{
    if (!m)
        return;
    if (m->layers)
        for (int i = 0; i < m->q.cfg.n_layers; i++)
            qlayer_free(&m->layers[i]);
    free(m->layers);
    rope_table_free(&m->rope);
    w4a4_layer_ws_free(&m->ws);
    free(m->x);
    free(m->xb);
    qmodel_free(&m->q);
    memset(m, 0, sizeof *m);
}

int w4a4_ref_model_load(w4a4_ref_model *m, const char *dir, int seqlen)
{
    if (!m || !dir || seqlen < 1)
        return fq_error(WHERE ":w4a4_ref_model_load: NULL argument or seqlen %d", seqlen);
    memset(m, 0, sizeof *m);
    if (qmodel_load(dir, &m->q) != FQ_OK)
        return FQ_ERR;
    const llama_config *c = &m->q.cfg;
    st_checkpoint ck = {0};
    int rc = st_checkpoint_open(dir, &ck);
    m->layers = rc == FQ_OK ? fq_calloc((size_t)c->n_layers, sizeof *m->layers, "layers") : NULL;
    if (!m->layers)
        rc = FQ_ERR;
    for (int i = 0; rc == FQ_OK && i < c->n_layers; i++)
        rc = qlayer_read(&ck, c, &m->q.qc, i, &m->layers[i]);
    st_checkpoint_close(&ck);
    size_t nx = (size_t)seqlen * c->hidden;
    if (rc == FQ_OK)
        rc = rope_table_init(&m->rope, c, seqlen);
    if (rc == FQ_OK)
        rc = w4a4_layer_ws_init(&m->ws, c, seqlen);
    if (rc == FQ_OK) {
        m->x = fq_malloc(sizeof *m->x * nx, "residual");
        m->xb = fq_malloc(sizeof *m->xb * nx, "bf16 residual");
        rc = m->x && m->xb ? FQ_OK : FQ_ERR;
    }
    if (rc != FQ_OK) {
        w4a4_ref_model_free(m);
        return fq_error_wrap("%s: W4A4 reference model", dir);
    }
    return FQ_OK;
}

int w4a4_ref_window_logits(void *ctx, const int32_t *ids, int s, real *logits)
{
    w4a4_ref_model *m = ctx;
    const llama_config *c = &m->q.cfg;
    if (s > m->ws.s)
        return fq_error(WHERE ": window of %d tokens exceeds the model's %d", s, m->ws.s);
    if (llama_check_ids(c, ids, (size_t)s) != FQ_OK)
        return FQ_ERR;
    size_t nx = (size_t)s * c->hidden;
    llama_embed_fwd(m->x, m->q.embed, c->hidden, ids, s);
    for (size_t i = 0; i < nx; i++)
        m->xb[i] = fq_f32_to_bf16((float)m->x[i]);
    for (int i = 0; i < c->n_layers; i++)
        if (w4a4_layer_ref(m->xb, &m->layers[i], c, &m->q.qc, &m->rope, s, &m->ws) != FQ_OK)
            return fq_error_wrap("layer %d", i);
    for (size_t i = 0; i < nx; i++)
        m->x[i] = fq_bf16_to_f32(m->xb[i]);
    llama_head_fwd(logits, m->x, m->q.final_norm, m->q.lm_head, c, s);
    return FQ_OK;
}
