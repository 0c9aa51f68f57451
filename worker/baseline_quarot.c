/* baseline_quarot.c — QuaRot-RTN: fold norms, rotate with Hadamard matrices, quantize
 * (baseline_quarot.h).
 *
 * Every rotation is applied to weights with the row-vector convention of the forward
 * (x ← x·M), so each offline merge reads as "the same matrix the activation sees":
 *   input side  w ← w·Q (rows of W [out, in]),
 *   output side Qᵀ·W is done as (Wᵀ·Q)ᵀ, i.e. the same row op on the transposed weight.
 * The residual rotation uses hadamard.h's fast K ⊗ 2^m transform (d can be 8192); the small
 * per-head ones (dh, h) and the down transform use dense factors through kron_fwd, exactly
 * the factors the online forward multiplies by, so offline and online halves cancel to
 * rounding. Large weights are processed in row chunks to bound the work memory.
 */
#include "baseline_quarot.h"
#include "error.h"
#include "hadamard.h"
#include "job.h"
#include "kron.h"
#include "rng.h"
#include "weight_clip_mse.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rows per chunk when rotating big matrices (embeddings, lm_head, MLP weights). */
#define QR_CHUNK_ROWS 256

quarot_opts quarot_opts_default(void)
{
    quarot_opts o = {.act_clip = 0.9f, .kv_clip = 0.95f, .mse_clip = 1, .seed = 0};
    return o;
}

quarot_opts quarot_opts_from_job(const struct job *j)
{
    quarot_opts o = quarot_opts_default();
    if (j) {
        o.act_clip = (float)j->quantization.quarot_act_clip;
        o.kv_clip = (float)j->quantization.quarot_kv_clip;
        o.seed = j->quantization.seed;
    }
    return o;
}

/* Normalised Sylvester matrix of order p (a power of two): (−1)^popcount(a&b) / √p. */
static real *sylvester(int p)
{
    real *s = fq_malloc(sizeof(real) * (size_t)p * p, "Sylvester matrix");
    if (!s)
        return NULL;
    real v = 1 / sqrt((real)p);
    for (long a = 0; a < p; a++)
        for (long b = 0; b < p; b++)
            s[a * p + b] = (__builtin_popcountl((unsigned long)(a & b)) & 1) ? -v : v;
    return s;
}

/* A ⊗ B in the convention of kron.h: (A⊗B)[(i,a),(j,b)] = A[i][j]·B[a][b]. */
static real *kron_dense(const real *A, int na, const real *B, int nb)
{
    long n = (long)na * nb;
    real *out = fq_malloc(sizeof(real) * (size_t)(n * n), "Kronecker product");
    if (!out)
        return NULL;
    for (long i = 0; i < na; i++)
        for (long a = 0; a < nb; a++)
            for (long j = 0; j < na; j++)
                for (long b = 0; b < nb; b++)
                    out[(i * nb + a) * n + j * nb + b] = A[i * na + j] * B[a * nb + b];
    return out;
}

static real *hadamard_alloc(int n, uint64_t seed, int *is_random, const char *what)
{
    real *m = fq_malloc(sizeof(real) * (size_t)n * n, what);
    if (m && hadamard_matrix(n, m, seed, is_random) != FQ_OK) {
        free(m);
        fq_error_wrap("%s", what);
        return NULL;
    }
    return m;
}

/* H_n = (H_K ⊗ S_{2^a}) ⊗ S_{p/2^a} with a chosen so that n1 + n2 (the online cost per
 * value) is smallest: 172 → (172, 1), 1024 → (32, 32), 11008 → (172, 64). */
static int down_factors(quarot_rotations *r, int n, uint64_t seed)
{
    int k, p, rnd;
    if (hadamard_split(n, &k, &p, &rnd) != FQ_OK)
        return FQ_ERR;
    real *hk = fq_malloc(sizeof(real) * (size_t)k * k, "down Hadamard factor");
    if (!hk || hadamard_k_matrix(hk, k, seed, &rnd) != FQ_OK) {
        free(hk);
        return fq_error_wrap("down_proj rotation of order %d", n);
    }
    r->is_random[QR_DOWN] = rnd;
    r->order[QR_DOWN] = k;
    int best = 0;
    for (int a = 1; (1 << a) <= p; a++)
        if ((k << a) + (p >> a) < (k << best) + (p >> best))
            best = a;
    r->fn1 = k << best;
    r->fn2 = p >> best;
    real *sa = sylvester(1 << best);
    r->fl = sa ? kron_dense(hk, k, sa, 1 << best) : NULL;
    r->fr = sylvester(r->fn2);
    free(hk);
    free(sa);
    return r->fl && r->fr ? FQ_OK : FQ_ERR;
}

int quarot_rotations_init(quarot_rotations *r, const llama_config *c, const qconfig *qc,
                          uint64_t seed)
{
    if (!r)
        return fq_error("worker/baseline_quarot.c:quarot_rotations_init: NULL output");
    memset(r, 0, sizeof *r);
    if (!c || !qc)
        return fq_error("worker/baseline_quarot.c:quarot_rotations_init: NULL config "
                        "(expected the model config and the qconfig)");
    int blocks = qc->tp_blocks > 0 ? qc->tp_blocks : 1;
    if (c->hidden <= 0 || c->head_dim <= 0 || c->n_heads <= 0 || c->intermediate <= 0)
        return fq_error("worker/baseline_quarot.c: model shape d=%d dh=%d h=%d f=%d "
                        "(expected all positive)", c->hidden, c->head_dim, c->n_heads,
                        c->intermediate);
    if (c->n_heads % blocks || c->intermediate % blocks)
        return fq_error("worker/baseline_quarot.c: tp_blocks %d does not divide h = %d and "
                        "f = %d (expected a common divisor)", blocks, c->n_heads,
                        c->intermediate);
    r->d = c->hidden;
    r->h = c->n_heads;
    r->dh = c->head_dim;
    r->f = c->intermediate;
    r->blocks = blocks;
    /* Q = D·H_d: random signs from the seed; H_d as K ⊗ 2^m for the fast transform. */
    r->sign = fq_malloc(sizeof(real) * (size_t)r->d, "rotation signs");
    if (!r->sign)
        goto fail;
    rng_state g;
    rng_seed(&g, seed);
    for (int i = 0; i < r->d; i++)
        r->sign[i] = (rng_next_u64(&g) >> 63) ? -1 : 1;
    int p, rnd;
    if (hadamard_split(r->d, &r->dk, &p, &rnd) != FQ_OK)
        goto fail;
    r->dhk = fq_malloc(sizeof(real) * (size_t)r->dk * r->dk, "residual Hadamard factor");
    if (!r->dhk || hadamard_k_matrix(r->dhk, r->dk, seed + 1, &rnd) != FQ_OK)
        goto fail;
    r->is_random[QR_RESIDUAL] = rnd;
    r->order[QR_RESIDUAL] = r->dk;
    if (!(r->hdh = hadamard_alloc(r->dh, seed + 2, &r->is_random[QR_HEAD_DIM], "H_dh")))
        goto fail;
    r->order[QR_HEAD_DIM] = r->dh;
    int hb = r->h / blocks;
    if (!(r->hh = hadamard_alloc(hb, seed + 3, &r->is_random[QR_HEADS], "H_h")))
        goto fail;
    r->order[QR_HEADS] = hb;
    if (down_factors(r, r->f / blocks, seed + 4) != FQ_OK)
        goto fail;
    return FQ_OK;
fail:
    quarot_rotations_free(r);
    return fq_error_wrap("worker/baseline_quarot.c:quarot_rotations_init");
}

void quarot_rotations_free(quarot_rotations *r)
{
    if (!r)
        return;
    free(r->sign);
    free(r->dhk);
    free(r->hdh);
    free(r->hh);
    free(r->fl);
    free(r->fr);
    memset(r, 0, sizeof *r);
}

int quarot_random_note(const quarot_rotations *r, char *buf, size_t len)
{
    static const char *const what[QR_NROT] = {"hidden size", "head dim", "attention heads",
                                              "MLP intermediate"};
    if (!buf || !len)
        return 0;
    buf[0] = 0;
    if (!r)
        return 0;
    char list[256] = "";
    size_t used = 0;
    for (int i = 0; i < QR_NROT && used < sizeof list; i++)
        if (r->is_random[i]) {
            int n = snprintf(list + used, sizeof list - used, "%s%d (%s)", used ? ", " : "",
                             r->order[i], what[i]);
            used += n > 0 ? (size_t)n : 0;
        }
    if (!used)
        return 0;
    snprintf(buf, len, "quarot: no Hadamard matrix of order %s can be constructed; using a "
             "seeded random orthogonal matrix there instead", list);
    return 1;
}

/* x ← (x ∘ D)·H_d for each row, in chunks. */
static int residual_rows(real *x, long rows, const quarot_rotations *r)
{
    long chunk = rows < QR_CHUNK_ROWS ? rows : QR_CHUNK_ROWS;
    real *work = fq_malloc(sizeof(real) * (size_t)hadamard_apply_work((int)chunk, r->d),
                           "rotation work");
    if (!work)
        return FQ_ERR;
    for (long r0 = 0; r0 < rows; r0 += chunk) {
        long nr = rows - r0 < chunk ? rows - r0 : chunk;
        real *xs = x + r0 * r->d;
        for (long i = 0; i < nr; i++)
            for (int j = 0; j < r->d; j++)
                xs[i * r->d + j] *= r->sign[j];
        if (hadamard_apply_rows(xs, (int)nr, r->d, r->dk, r->dhk, work) != FQ_OK) {
            free(work);
            return FQ_ERR;
        }
    }
    free(work);
    return FQ_OK;
}

/* W [d, k] ← Qᵀ·W, computed as (Wᵀ·Q)ᵀ. */
static int residual_out_side(real *w, int k, const quarot_rotations *r)
{
    int d = r->d;
    real *t = fq_malloc(sizeof(real) * (size_t)d * k, "transposed weight");
    if (!t)
        return FQ_ERR;
    for (long i = 0; i < d; i++)
        for (long j = 0; j < k; j++)
            t[j * d + i] = w[i * k + j];
    int rc = residual_rows(t, k, r);
    if (rc == FQ_OK)
        for (long i = 0; i < d; i++)
            for (long j = 0; j < k; j++)
                w[i * k + j] = t[j * d + i];
    free(t);
    return rc;
}

/* Each row of x [rows, blocks·n1·n2] ← per block ·(L ⊗ R) (the same L, R in every block). */
static int rows_kron_blocks(real *x, long rows, int blocks, int n1, int n2, const real *L,
                            const real *R)
{
    long bn = (long)n1 * n2, len = bn * blocks;
    long chunk = rows < QR_CHUNK_ROWS ? rows : QR_CHUNK_ROWS;
    real *in = fq_malloc(sizeof(real) * (size_t)(3 * chunk * bn), "rotation work");
    if (!in)
        return FQ_ERR;
    real *out = in + chunk * bn, *work = out + chunk * bn;
    for (long r0 = 0; r0 < rows; r0 += chunk) {
        long nr = rows - r0 < chunk ? rows - r0 : chunk;
        for (int b = 0; b < blocks; b++) {
            for (long i = 0; i < nr; i++)
                memcpy(in + i * bn, x + (r0 + i) * len + b * bn, sizeof(real) * (size_t)bn);
            if (kron_fwd(out, in, (int)nr, n1, n2, L, R, work) != FQ_OK) {
                free(in);
                return FQ_ERR;
            }
            for (long i = 0; i < nr; i++)
                memcpy(x + (r0 + i) * len + b * bn, out + i * bn, sizeof(real) * (size_t)bn);
        }
    }
    free(in);
    return FQ_OK;
}

/* Wv [g·dh, d]: each head block ← H_dhᵀ·block, so v ← v·H_dh per KV head. */
static int value_out_side(real *wv, int g, int dh, int d, const real *hdh)
{
    real *tmp = fq_malloc(sizeof(real) * (size_t)dh * d, "value block");
    if (!tmp)
        return FQ_ERR;
    for (int v = 0; v < g; v++) {
        real *blk = wv + (size_t)v * dh * d;
        real_gemm(1, 0, dh, d, dh, 1, hdh, dh, blk, d, 0, tmp, d);
        memcpy(blk, tmp, sizeof(real) * (size_t)dh * d);
    }
    free(tmp);
    return FQ_OK;
}

static void scale_cols(real *w, long rows, int cols, const real *s)
{
    for (long i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            w[i * cols + j] *= s[j];
}

static real *dup_weight(const real *src, size_t n)
{
    real *p = fq_malloc(sizeof(real) * n, "weight copy");
    if (p)
        memcpy(p, src, sizeof(real) * n);
    return p;
}

static float *blocks_copy(const real *m, int blocks, int n)
{
    size_t nn = (size_t)n * n;
    float *out = fq_malloc(sizeof(float) * nn * (size_t)blocks, "transform factor");
    if (out)
        for (int b = 0; b < blocks; b++)
            real_to_f32(m, nn, out + (size_t)b * nn);
    return out;
}

/* Fill the qlayer's transforms and clips (everything but the linears). */
static int fill_transforms(qlayer *q, const quarot_rotations *rot, const qconfig *qc,
                           const quarot_opts *o)
{
    int d = rot->d, dh = rot->dh, hb = rot->h / rot->blocks;
    for (int i = 0; i < d; i++)
        q->attn_norm[i] = q->mlp_norm[i] = 1;
    free(q->down_in.L);
    free(q->down_in.R);
    q->down_in.n1 = rot->fn1;
    q->down_in.n2 = rot->fn2;
    q->down_in.blocks = rot->blocks;
    q->down_in.L = blocks_copy(rot->fl, rot->blocks, rot->fn1);
    q->down_in.R = blocks_copy(rot->fr, rot->blocks, rot->fn2);
    free(q->Mo);
    q->o_blocks = rot->blocks;
    q->Mo = blocks_copy(rot->hh, rot->blocks, hb);
    if (!q->down_in.L || !q->down_in.R || !q->Mo)
        return FQ_ERR;
    real_to_f32(rot->hdh, (size_t)dh * dh, q->Mk);
    /* H_dh is orthogonal, so M_k^{−T} = M_k. */
    real_to_f32(rot->hdh, (size_t)dh * dh, q->Mk_inv_t);
    if (qc->separate_vtrans)
        real_to_f32(rot->hdh, (size_t)dh * dh, q->Mv);
    for (int i = 0; i < QL_NLINEAR; i++)
        q->act_clip[i][0] = q->act_clip[i][1] = o->act_clip;
    for (int i = 0; i < 2; i++)
        q->kv_clip[i][0] = q->kv_clip[i][1] = o->kv_clip;
    return FQ_OK;
}

static int check_opts(const quarot_opts *o)
{
    if (!(o->act_clip > 0 && o->act_clip <= 1))
        return fq_error("worker/baseline_quarot.c: act_clip %g (expected a ratio in (0, 1])",
                        (double)o->act_clip);
    if (!(o->kv_clip > 0 && o->kv_clip <= 1))
        return fq_error("worker/baseline_quarot.c: kv_clip %g (expected a ratio in (0, 1])",
                        (double)o->kv_clip);
    return FQ_OK;
}

int baseline_quarot_layer(const llama_layer *l, const llama_config *c, const qconfig *qc,
                          const quarot_rotations *rot, const quarot_opts *o,
                          const float *down_smooth, qlayer *out)
{
    if (!out)
        return fq_error("worker/baseline_quarot.c:baseline_quarot_layer: NULL output");
    memset(out, 0, sizeof *out);
    if (!l || !c || !qc || !rot || !o)
        return fq_error("worker/baseline_quarot.c:baseline_quarot_layer: NULL argument "
                        "(expected layer, config, qconfig, rotations and options)");
    if (check_opts(o) != FQ_OK)
        return FQ_ERR;
    int d = c->hidden, f = c->intermediate, h = c->n_heads, g = c->n_kv_heads,
        dh = c->head_dim, qd = h * dh, kd = g * dh;
    int tb = qc->tp_blocks > 0 ? qc->tp_blocks : 1;
    if (rot->d != d || rot->f != f || rot->h != h || rot->dh != dh || rot->blocks != tb)
        return fq_error("worker/baseline_quarot.c:baseline_quarot_layer: rotations built for "
                        "d=%d f=%d h=%d dh=%d blocks=%d (expected d=%d f=%d h=%d dh=%d "
                        "blocks=%d)", rot->d, rot->f, rot->h, rot->dh, rot->blocks, d, f, h,
                        dh, tb);
    if (down_smooth)
        for (int j = 0; j < f; j++)
            if (!(isfinite(down_smooth[j]) && down_smooth[j] > 0))
                return fq_error("worker/baseline_quarot.c: down_proj smoothing scale %d is "
                                "%g (expected finite and positive)", j,
                                (double)down_smooth[j]);
    const real *src[QL_NLINEAR] = {l->wq, l->wk, l->wv, l->wo, l->wgate, l->wup, l->wdown};
    int shape[QL_NLINEAR][2] = {{qd, d}, {kd, d}, {kd, d}, {d, qd}, {f, d}, {f, d}, {d, f}};
    real *w[QL_NLINEAR] = {0};
    float *wf = NULL;
    int rc = FQ_ERR;
    for (int i = 0; i < QL_NLINEAR; i++)
        if (!(w[i] = dup_weight(src[i], (size_t)shape[i][0] * shape[i][1])))
            goto done;
    if (down_smooth) {
        /* z ← z ⊘ s through the up rows; Wdown columns × s keep z·Wdownᵀ unchanged. */
        for (int j = 0; j < f; j++)
            for (int k = 0; k < d; k++)
                w[QL_UP][(size_t)j * d + k] /= (real)down_smooth[j];
        for (int i = 0; i < d; i++)
            for (int j = 0; j < f; j++)
                w[QL_DOWN][(size_t)i * f + j] *= (real)down_smooth[j];
    }
    scale_cols(w[QL_Q], qd, d, l->attn_norm);
    scale_cols(w[QL_K], kd, d, l->attn_norm);
    scale_cols(w[QL_V], kd, d, l->attn_norm);
    scale_cols(w[QL_GATE], f, d, l->mlp_norm);
    scale_cols(w[QL_UP], f, d, l->mlp_norm);
    int in_side[] = {QL_Q, QL_K, QL_V, QL_GATE, QL_UP};
    for (size_t i = 0; i < sizeof in_side / sizeof in_side[0]; i++)
        if (residual_rows(w[in_side[i]], shape[in_side[i]][0], rot) != FQ_OK)
            goto done;
    if (residual_out_side(w[QL_O], qd, rot) != FQ_OK ||
        residual_out_side(w[QL_DOWN], f, rot) != FQ_OK)
        goto done;
    if (!qc->separate_vtrans && value_out_side(w[QL_V], g, dh, d, rot->hdh) != FQ_OK)
        goto done;
    if (rows_kron_blocks(w[QL_O], d, tb, h / tb, dh, rot->hh, rot->hdh) != FQ_OK ||
        rows_kron_blocks(w[QL_DOWN], d, tb, rot->fn1, rot->fn2, rot->fl, rot->fr) != FQ_OK)
        goto done;
    if (qlayer_alloc(out, c, qc) != FQ_OK)
        goto done;
    if (fill_transforms(out, rot, qc, o) != FQ_OK)
        goto done;
    size_t most = (size_t)(f > qd ? f : qd) * d;
    if (!(wf = fq_malloc(sizeof(float) * most, "weight")))
        goto done;
    for (int i = 0; i < QL_NLINEAR; i++) {
        real_to_f32(w[i], (size_t)shape[i][0] * shape[i][1], wf);
        int q = o->mse_clip
                    ? qlinear_quantize_mse(&out->lin[i], wf, shape[i][0], shape[i][1],
                                           qc->w_bits, NULL)
                    : qlinear_quantize_rtn(&out->lin[i], wf, shape[i][0], shape[i][1],
                                           qc->w_bits);
        if (q != FQ_OK) {
            fq_error_wrap("quarot: %s", qlinear_names[i]);
            goto done;
        }
    }
    rc = FQ_OK;
done:
    for (int i = 0; i < QL_NLINEAR; i++)
        free(w[i]);
    free(wf);
    if (rc != FQ_OK)
        qlayer_free(out);
    return rc;
}

int quarot_rotate_head(const llama_model *fp, const quarot_rotations *rot, real **embed,
                       real **final_norm, real **lm_head)
{
    if (!fp || !rot || !embed || !final_norm || !lm_head)
        return fq_error("worker/baseline_quarot.c:quarot_rotate_head: NULL argument "
                        "(expected model, rotations and three outputs)");
    *embed = *final_norm = *lm_head = NULL;
    int d = fp->cfg.hidden;
    if (rot->d != d)
        return fq_error("worker/baseline_quarot.c:quarot_rotate_head: rotations for d = %d "
                        "(expected the model's %d)", rot->d, d);
    size_t vd = (size_t)fp->cfg.vocab * d;
    real *e = dup_weight(fp->embed, vd), *n = fq_malloc(sizeof(real) * (size_t)d, "norm"),
         *hd = dup_weight(fp->lm_head, vd);
    if (!e || !n || !hd)
        goto fail;
    for (int i = 0; i < d; i++)
        n[i] = 1;
    scale_cols(hd, fp->cfg.vocab, d, fp->final_norm);
    if (residual_rows(e, fp->cfg.vocab, rot) != FQ_OK ||
        residual_rows(hd, fp->cfg.vocab, rot) != FQ_OK)
        goto fail;
    *embed = e;
    *final_norm = n;
    *lm_head = hd;
    return FQ_OK;
fail:
    free(e);
    free(n);
    free(hd);
    return fq_error_wrap("worker/baseline_quarot.c:quarot_rotate_head");
}

int baseline_quarot(const llama_model *fp, const qconfig *qc, const quarot_opts *o,
                    const float *down_smooth, quarot_model *out)
{
    if (!out)
        return fq_error("worker/baseline_quarot.c:baseline_quarot: NULL output");
    memset(out, 0, sizeof *out);
    if (!fp || !qc || !o)
        return fq_error("worker/baseline_quarot.c:baseline_quarot: NULL argument (expected "
                        "model, qconfig and options)");
    const llama_config *c = &fp->cfg;
    if (quarot_rotations_init(&out->rot, c, qc, o->seed) != FQ_OK)
        return FQ_ERR;
    out->layers = fq_calloc((size_t)c->n_layers, sizeof *out->layers, "quantized layers");
    if (!out->layers)
        goto fail;
    out->n_layers = c->n_layers;
    for (int i = 0; i < c->n_layers; i++)
        if (baseline_quarot_layer(&fp->layers[i], c, qc, &out->rot, o,
                                  down_smooth ? down_smooth + (size_t)i * c->intermediate : NULL,
                                  &out->layers[i]) != FQ_OK) {
            fq_error_wrap("layer %d", i);
            goto fail;
        }
    if (quarot_rotate_head(fp, &out->rot, &out->embed, &out->final_norm, &out->lm_head) !=
        FQ_OK)
        goto fail;
    return FQ_OK;
fail:
    quarot_model_free(out);
    return FQ_ERR;
}

void quarot_model_free(quarot_model *q)
{
    if (!q)
        return;
    if (q->layers)
        for (int i = 0; i < q->n_layers; i++)
            qlayer_free(&q->layers[i]);
    free(q->layers);
    free(q->embed);
    free(q->final_norm);
    free(q->lm_head);
    quarot_rotations_free(&q->rot);
    memset(q, 0, sizeof *q);
}

int quarot_model_to_qmodel(quarot_model *q, const llama_config *c, const qconfig *qc, qmodel *m)
{
    if (!q || !m)
        return fq_error("worker/baseline_quarot.c:quarot_model_to_qmodel: NULL argument");
    if (c && c->n_layers != q->n_layers)
        return fq_error("worker/baseline_quarot.c:quarot_model_to_qmodel: %d quantized layers "
                        "(expected the config's %d)", q->n_layers, c->n_layers);
    int rc = qmodel_from_parts(m, c, qc, q->layers, q->embed, q->final_norm, q->lm_head);
    q->embed = q->final_norm = q->lm_head = NULL; /* owned by m now, even on failure */
    return rc;
}
