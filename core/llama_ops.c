/* llama_ops.c — forward reference ops of a LLaMA decoder (see llama_ops.h).
 *
 * GEMM-shaped work goes to BLAS (real_gemm); the rest is plain loops. Attention is done
 * head by head with two GEMMs and a row softmax over blocks of 128 queries (a block needs
 * only the keys up to its end); the forward runs its (sequence, head) pairs on BLAS's
 * thread count.
 */
#include "llama_ops.h"

#include "error.h"
#include "parallel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void rmsnorm_fwd(real *out, real *rstd, const real *x, const real *gamma, int n, int d,
                 real eps)
{
    for (int i = 0; i < n; i++) {
        const real *xi = x + (size_t)i * d;
        real *oi = out + (size_t)i * d;
        real ss = 0;
        for (int j = 0; j < d; j++)
            ss += xi[j] * xi[j];
        real r = 1 / sqrt(ss / d + eps);
        if (rstd)
            rstd[i] = r;
        for (int j = 0; j < d; j++)
            oi[j] = gamma[j] * (xi[j] * r);
    }
}

/* transformers' inv_freq, in float32 as it computes it, with the llama3 remapping. */
static float rope_inv_freq(const llama_config *c, int i)
{
    float inv = 1.0f / powf((float)c->rope_theta, (float)(2 * i) / (float)c->head_dim);
    if (c->rope_type != ROPE_LLAMA3)
        return inv;
    const float pi = 3.14159265358979323846f;
    float factor = (float)c->rope_factor;
    float lo = (float)c->rope_low_freq_factor, hi = (float)c->rope_high_freq_factor;
    float old_len = (float)c->rope_original_max_pos;
    float low_wavelen = old_len / lo, high_wavelen = old_len / hi;
    float wavelen = 2 * pi / inv;
    float scaled = wavelen > low_wavelen ? inv / factor : inv;
    int medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
    if (medium) {
        float smooth = (old_len / wavelen - lo) / (hi - lo);
        scaled = (1 - smooth) * scaled / factor + smooth * scaled;
    }
    return scaled;
}

int rope_table_init(rope_table *t, const llama_config *c, int seqlen)
{
    memset(t, 0, sizeof *t);
    if (seqlen <= 0 || c->head_dim <= 0 || c->head_dim % 2)
        return fq_error("rope: seqlen %d / head_dim %d invalid (expected positive, even head_dim)",
                        seqlen, c->head_dim);
    int half = c->head_dim / 2;
    t->cos = fq_malloc(sizeof(real) * (size_t)seqlen * half, "rope cos table");
    t->sin = fq_malloc(sizeof(real) * (size_t)seqlen * half, "rope sin table");
    if (!t->cos || !t->sin) {
        rope_table_free(t);
        return FQ_ERR;
    }
    t->seqlen = seqlen;
    t->head_dim = c->head_dim;
    for (int i = 0; i < half; i++) {
        float inv = rope_inv_freq(c, i);
        for (int p = 0; p < seqlen; p++) {
            float ang = (float)p * inv;
            t->cos[(size_t)p * half + i] = cosf(ang);
            t->sin[(size_t)p * half + i] = sinf(ang);
        }
    }
    return FQ_OK;
}

void rope_table_free(rope_table *t)
{
    free(t->cos);
    free(t->sin);
    memset(t, 0, sizeof *t);
}

void rope_fwd(real *x, int b, int s, int heads, int dh, const rope_table *t)
{
    int half = dh / 2;
    for (int bi = 0; bi < b; bi++)
        for (int p = 0; p < s; p++) {
            const real *cs = t->cos + (size_t)p * half, *sn = t->sin + (size_t)p * half;
            real *row = x + ((size_t)bi * s + p) * heads * dh;
            for (int hh = 0; hh < heads; hh++) {
                real *u = row + (size_t)hh * dh;
                for (int i = 0; i < half; i++) {
                    real u1 = u[i], u2 = u[i + half];
                    u[i] = u1 * cs[i] - u2 * sn[i];
                    u[i + half] = u2 * cs[i] + u1 * sn[i];
                }
            }
        }
}

/* Rows are processed in blocks of ATT_BLOCK queries: block [i0, i1) only needs keys
 * [0, i1), so the causal upper triangle is mostly never computed (about half the FLOPs
 * of a full s×s score matrix for long windows). */
#define ATT_BLOCK 128

/* Causal softmax of rows [i0, i1) of a score block p [i1 − i0, ld] whose columns are
 * keys 0..i1−1 (entries beyond the diagonal → 0). */
static void causal_softmax_block(real *p, int i0, int i1, int ld)
{
    for (int i = i0; i < i1; i++) {
        real *row = p + (size_t)(i - i0) * ld;
        real mx = row[0];
        for (int c = 1; c <= i; c++)
            if (row[c] > mx)
                mx = row[c];
        real sum = 0;
        for (int c = 0; c <= i; c++) {
            row[c] = exp(row[c] - mx);
            sum += row[c];
        }
        real inv = 1 / sum;
        for (int c = 0; c <= i; c++)
            row[c] *= inv;
        for (int c = i + 1; c < i1; c++)
            row[c] = 0;
    }
}

/* One (sequence bi, query head j) of attention_fwd; p: ATT_BLOCK·s reals of scratch, or
 * NULL to write the block into the probability rows. */
static void attention_head_fwd(real *out, real *probs, const real *q, const real *k,
                               const real *v, int bi, int j, int s, int h, int g, int dh,
                               real *scratch)
{
    int kv = j / (h / g);
    real scale = 1 / sqrt((real)dh);
    size_t qs = (size_t)h * dh, ks = (size_t)g * dh;
    const real *qb = q + (size_t)bi * s * qs;
    const real *kb = k + (size_t)bi * s * ks;
    const real *vb = v + (size_t)bi * s * ks;
    real *ob = out + (size_t)bi * s * qs;
    for (int i0 = 0; i0 < s; i0 += ATT_BLOCK) {
        int i1 = i0 + ATT_BLOCK < s ? i0 + ATT_BLOCK : s, m = i1 - i0;
        /* with probs, write the block straight into the [s, s] probability rows */
        real *p = probs ? probs + (((size_t)bi * h + j) * s + i0) * s : scratch;
        int ld = probs ? s : i1;
        real_gemm(0, 1, m, i1, dh, scale, qb + (size_t)i0 * qs + (size_t)j * dh, (int)qs,
                  kb + (size_t)kv * dh, (int)ks, 0, p, ld);
        causal_softmax_block(p, i0, i1, ld);
        if (probs)
            for (int i = 0; i < m; i++)
                memset(p + (size_t)i * s + i1, 0, sizeof(real) * (size_t)(s - i1));
        real_gemm(0, 0, m, dh, i1, 1, p, ld, vb + (size_t)kv * dh, (int)ks, 0,
                  ob + (size_t)i0 * qs + (size_t)j * dh, (int)qs);
    }
}

typedef struct {
    real *out, *probs, *scratch;
    const real *q, *k, *v;
    int s, h, g, dh;
} attention_job;

static int attention_item(void *ctx, size_t item, int t)
{
    const attention_job *a = ctx;
    attention_head_fwd(a->out, a->probs, a->q, a->k, a->v, (int)(item / a->h),
                       (int)(item % a->h), a->s, a->h, a->g, a->dh,
                       a->probs ? NULL : a->scratch + (size_t)t * ATT_BLOCK * a->s);
    return FQ_OK;
}

/* fn over items [0, n) on BLAS's configured thread count, at most s / ATT_BLOCK (the
 * callers' scratch is s·s reals per pass: one ATT_BLOCK·s block per thread), with BLAS on
 * one thread meanwhile (restored after); one thread: in order, BLAS untouched. */
static void attention_items(int s, size_t n, fq_item_fn fn, void *ctx)
{
    const int blas = real_blas_threads(), cap = s / ATT_BLOCK > 0 ? s / ATT_BLOCK : 1;
    int nt = blas < cap ? blas : cap;
    nt = (size_t)nt < n ? nt : (int)n;
    if (nt > 1)
        real_blas_set_threads(1);
    (void)fq_parallel_for(n, nt, fn, ctx); /* the attention items cannot fail */
    if (nt > 1)
        real_blas_set_threads(blas);
}

/* The (sequence, head) pairs run on as many threads as BLAS is configured for, each with
 * single-threaded GEMMs: OpenBLAS threading the 128-row blocks itself made the whole call
 * 2.5× SLOWER on two threads than on one (4 × 2048 tokens, 6 heads of 64: 1.09 s against
 * 0.43 s, session 7), and the softmax between the GEMMs ran on one core. Each pair's
 * arithmetic is the same as on one thread. The caller's s·s scratch gives each thread an
 * ATT_BLOCK·s block, so at most s / ATT_BLOCK threads. */
void attention_fwd(real *out, real *probs, const real *q, const real *k, const real *v,
                   int b, int s, int h, int g, int dh, real *scratch)
{
    attention_job a = {out, probs, scratch, q, k, v, s, h, g, dh};
    attention_items(s, (size_t)b * h, attention_item, &a);
}

void swiglu_fwd(real *out, const real *gate, const real *up, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        real gi = gate[i];
        out[i] = gi / (1 + exp(-gi)) * up[i];
    }
}

void linear_fwd(real *out, const real *x, const real *w, int n, int in, int o)
{
    real_gemm(0, 1, n, o, in, 1, x, in, w, in, 0, out, o);
}

void rmsnorm_bwd(real *dx, const real *dy, const real *x, const real *gamma, const real *rstd,
                 int n, int d)
{
    for (int i = 0; i < n; i++) {
        const real *xi = x + (size_t)i * d, *gi = dy + (size_t)i * d;
        real *dxi = dx + (size_t)i * d;
        real r = rstd[i], dot = 0;
        for (int j = 0; j < d; j++)
            dot += gi[j] * gamma[j] * xi[j] * r;
        dot /= d;
        for (int j = 0; j < d; j++)
            dxi[j] += r * (gi[j] * gamma[j] - xi[j] * r * dot);
    }
}

void rope_bwd(real *dx, int b, int s, int heads, int dh, const rope_table *t)
{
    int half = dh / 2;
    for (int bi = 0; bi < b; bi++)
        for (int p = 0; p < s; p++) {
            const real *cs = t->cos + (size_t)p * half, *sn = t->sin + (size_t)p * half;
            real *row = dx + ((size_t)bi * s + p) * heads * dh;
            for (int hh = 0; hh < heads; hh++) {
                real *u = row + (size_t)hh * dh;
                for (int i = 0; i < half; i++) {
                    real g1 = u[i], g2 = u[i + half];
                    u[i] = g1 * cs[i] + g2 * sn[i];
                    u[i + half] = g2 * cs[i] - g1 * sn[i];
                }
            }
        }
}

/* One (sequence bi, query head j) of attention_bwd; scratch: 2·ATT_BLOCK·s reals. */
static void attention_head_bwd(real *dq, real *dk, real *dv, const real *dout, const real *q,
                               const real *k, const real *v, int bi, int j, int s, int h,
                               int g, int dh, real *scratch)
{
    int kv = j / (h / g);
    real scale = 1 / sqrt((real)dh);
    size_t qs = (size_t)h * dh, ks = (size_t)g * dh;
    size_t qo = (size_t)bi * s * qs, ko = (size_t)bi * s * ks;
    const real *qj = q + qo + (size_t)j * dh, *kg = k + ko + (size_t)kv * dh;
    const real *vg = v + ko + (size_t)kv * dh, *doj = dout + qo + (size_t)j * dh;
    for (int i0 = 0; i0 < s; i0 += ATT_BLOCK) {
        int i1 = i0 + ATT_BLOCK < s ? i0 + ATT_BLOCK : s, m = i1 - i0;
        real *p = scratch, *gp = scratch + (size_t)m * i1;
        const real *qi = qj + (size_t)i0 * qs, *doi = doj + (size_t)i0 * qs;
        real_gemm(0, 1, m, i1, dh, scale, qi, (int)qs, kg, (int)ks, 0, p, i1);
        causal_softmax_block(p, i0, i1, i1);
        /* dV[0:i1] += Pᵀ dO ; G_P = dO Vᵀ */
        real_gemm(1, 0, i1, dh, m, 1, p, i1, doi, (int)qs, 1, dv + ko + (size_t)kv * dh,
                  (int)ks);
        real_gemm(0, 1, m, i1, dh, 1, doi, (int)qs, vg, (int)ks, 0, gp, i1);
        /* G_S = P ∘ (G_P − rowsum(G_P ∘ P)), in gp */
        for (int i = 0; i < m; i++) {
            real *pr = p + (size_t)i * i1, *gr = gp + (size_t)i * i1, dot = 0;
            for (int c = 0; c <= i0 + i; c++)
                dot += gr[c] * pr[c];
            for (int c = 0; c < i1; c++)
                gr[c] = c <= i0 + i ? pr[c] * (gr[c] - dot) : 0;
        }
        real_gemm(0, 0, m, dh, i1, scale, gp, i1, kg, (int)ks, 1,
                  dq + qo + (size_t)i0 * qs + (size_t)j * dh, (int)qs);
        real_gemm(1, 0, i1, dh, m, scale, gp, i1, qi, (int)qs, 1, dk + ko + (size_t)kv * dh,
                  (int)ks);
    }
}

typedef struct {
    real *dq, *dk, *dv, *scratch;
    const real *dout, *q, *k, *v;
    int s, h, g, dh;
} attention_bwd_job;

/* item = (sequence, KV head): its r query heads in order, so dk/dv rows have one writer */
static int attention_bwd_item(void *ctx, size_t item, int t)
{
    const attention_bwd_job *a = ctx;
    int bi = (int)(item / a->g), kv = (int)(item % a->g), r = a->h / a->g;
    for (int j = kv * r; j < (kv + 1) * r; j++)
        attention_head_bwd(a->dq, a->dk, a->dv, a->dout, a->q, a->k, a->v, bi, j, a->s, a->h,
                           a->g, a->dh, a->scratch + (size_t)t * 2 * ATT_BLOCK * a->s);
    return FQ_OK;
}

/* (sequence, KV head) items on BLAS's thread count with one-thread GEMMs, as the forward
 * does; each query head's arithmetic and the order in which a KV head's r query heads add
 * into dk/dv are those of the single-threaded loop. */
void attention_bwd(real *dq, real *dk, real *dv, const real *dout, const real *q,
                   const real *k, const real *v, int b, int s, int h, int g, int dh,
                   real *scratch)
{
    attention_bwd_job a = {dq, dk, dv, scratch, dout, q, k, v, s, h, g, dh};
    attention_items(s, (size_t)b * g, attention_bwd_item, &a);
}

void swiglu_bwd(real *dgate, real *dup, const real *dout, const real *gate, const real *up,
                size_t n)
{
    for (size_t i = 0; i < n; i++) {
        real gi = gate[i], sg = 1 / (1 + exp(-gi));
        dup[i] += dout[i] * gi * sg;
        dgate[i] += dout[i] * up[i] * sg * (1 + gi * (1 - sg));
    }
}

void linear_bwd(real *dx, real *dw, const real *dout, const real *x, const real *w, int n,
                int in, int o)
{
    if (dx)
        real_gemm(0, 0, n, in, o, 1, dout, o, w, in, 1, dx, in);
    if (dw)
        real_gemm(1, 0, o, in, n, 1, dout, o, x, in, 1, dw, in);
}
