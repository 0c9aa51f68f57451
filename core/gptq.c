/* gptq.c — GPTQ for one linear (gptq.h).
 *
 * Row-major throughout. The upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU) is what the column
 * loop reads: quantizing column i of a row leaves the error e = (w_i − ŵ_i) / U_ii, and
 * the row's later columns j move by −e·U_ij. Rows are independent, so inside a block the
 * loop runs row by row (each row's block stays in cache); after the block, one GEMM
 * applies the block's errors E [out, B] to the rest: W[:, i2:] −= E · U[i1:i2, i2:].
 *
 * LAPACK is column-major; a symmetric matrix is the same in both orders, and dpotrf with
 * uplo 'L' on the column-major view leaves, read row-major, the upper factor U with
 * UᵀU = A in the upper triangle — exactly what the loop needs. dpotri 'L' likewise writes
 * the inverse into the row-major upper triangle that the next dpotrf 'L' reads.
 */
#include "gptq.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "parallel.h"

#define WHERE "core/gptq.c"

/* OpenBLAS's LAPACK (Fortran calling convention, hidden string lengths last). */
void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info,
             size_t uplo_len);
void dpotri_(const char *uplo, const int *n, double *a, const int *lda, int *info,
             size_t uplo_len);

int gptq_hessian_init(gptq_hessian *h, int n)
{
    if (!h)
        return fq_error(WHERE ":gptq_hessian_init: NULL accumulator");
    memset(h, 0, sizeof *h);
    if (n < 1)
        return fq_error(WHERE ":gptq_hessian_init: input size %d (expected >= 1)", n);
    h->n = n;
    h->sum = fq_calloc((size_t)n * n, sizeof(real), "GPTQ Hessian");
    return h->sum ? FQ_OK : FQ_ERR;
}

void gptq_hessian_free(gptq_hessian *h)
{
    if (!h)
        return;
    free(h->sum);
    memset(h, 0, sizeof *h);
}

int gptq_hessian_add(gptq_hessian *h, const real *x, long rows)
{
    if (!h || !h->sum || !x || rows < 0 || rows > INT32_MAX)
        return fq_error(WHERE ":gptq_hessian_add: invalid arguments (expected an initialised "
                        "accumulator and %ld >= 0 input rows)", rows);
    if (rows == 0)
        return FQ_OK;
    real_gemm(1, 0, h->n, h->n, (int)rows, 1, x, h->n, x, h->n, 1, h->sum, h->n);
    h->tokens += rows;
    return FQ_OK;
}

int gptq_hessian_get(const gptq_hessian *h, real *out)
{
    if (!h || !h->sum || !out)
        return fq_error(WHERE ":gptq_hessian_get: NULL argument");
    if (h->tokens < 1)
        return fq_error(WHERE ":gptq_hessian_get: no input rows were added (expected the "
                        "linear's calibration inputs)");
    real k = (real)(2.0 / (double)h->tokens);
    size_t nn = (size_t)h->n * h->n;
    for (size_t i = 0; i < nn; i++)
        out[i] = k * h->sum[i];
    return FQ_OK;
}

/* The recipe's damping, in place on a [n, n]: dead inputs (H_ii = 0, marked in dead[])
 * get H_ii = 1, then every diagonal element gains damp · mean(diag). */
static void damp_diagonal(double *a, int n, double damp, uint8_t *dead)
{
    double mean = 0;
    for (int i = 0; i < n; i++) {
        double *d = &a[(size_t)i * n + i];
        dead[i] = *d == 0;
        if (dead[i])
            *d = 1;
        mean += *d;
    }
    mean /= n;
    for (int i = 0; i < n; i++)
        a[(size_t)i * n + i] += damp * mean;
}

/* U (upper, row-major, H⁻¹ = UᵀU) of the damped Hessian a, in place. */
static int inverse_cholesky_upper(double *a, int n, double damp)
{
    int info = 0;
    dpotrf_("L", &n, a, &n, &info, 1);
    if (info > 0)
        return fq_error(WHERE ":gptq_quantize: the damped Hessian is not positive definite "
                        "(leading minor %d; expected a larger gptq_damp than %g)", info, damp);
    if (info == 0)
        dpotri_("L", &n, a, &n, &info, 1);
    if (info == 0)
        dpotrf_("L", &n, a, &n, &info, 1);
    if (info != 0)
        return fq_error(WHERE ":gptq_quantize: factorising the inverse Hessian failed "
                        "(LAPACK info %d; expected a well-conditioned damped Hessian)", info);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            a[(size_t)i * n + j] = 0;
    return FQ_OK;
}

static int store_codes(qlinear *l, int8_t *codes, int out, int in, int bits)
{
    size_t n = (size_t)out * in;
    if (bits > 4) {
        l->codes = (uint8_t *)codes;
        return FQ_OK;
    }
    l->codes = fq_malloc(n / 2, "packed weight");
    if (l->codes)
        int4_pack(codes, n, l->codes);
    free(codes);
    return l->codes ? FQ_OK : FQ_ERR;
}

/* qsort_r order of input indices: descending diag H, ties by ascending index (so the
 * order is the stable one and does not depend on the sort) */
static int by_energy(const void *a, const void *b, void *diag)
{
    const real *d = diag;
    int i = *(const int *)a, j = *(const int *)b;
    if (d[i] != d[j])
        return d[i] > d[j] ? -1 : 1;
    return (i > j) - (i < j);
}

/* perm = the inputs by descending diag H (dead inputs, H_ii = 0, come last) */
static int act_order_perm(const real *H, int in, int **out)
{
    int *perm = fq_malloc(sizeof(int) * (size_t)in, "GPTQ act-order permutation");
    real *diag = fq_malloc(sizeof(real) * (size_t)in, "GPTQ act-order diagonal");
    if (!perm || !diag) {
        free(perm);
        free(diag);
        return FQ_ERR;
    }
    for (int i = 0; i < in; i++) {
        perm[i] = i;
        diag[i] = H[(size_t)i * in + i];
    }
    qsort_r(perm, (size_t)in, sizeof(int), by_energy, diag);
    free(diag);
    *out = perm;
    return FQ_OK;
}

int gptq_quantize(qlinear *l, const real *w, int out, int in, const real *H, int bits,
                  double damp, int block)
{
    gptq_opts o = {damp, block, 0, 0};
    return gptq_quantize_opts(l, w, out, in, H, bits, &o);
}

/* scale ← the ratio of it (1, 0.98, …, 0.80) with the least Σ_j h_j (w_j − ŵ_j)² for the
 * row w; the first of equal errors wins, so a row the search cannot improve keeps α = 1 */
static float clip_search_row(const real *w, const real *h, int in, float scale, float qmax)
{
    double best = INFINITY;
    float best_s = scale;
    for (int k = 0; k <= 10; k++) {
        float s = scale * (1.0f - 0.02f * (float)k);
        double err = 0;
        for (int j = 0; j < in; j++) {
            double e = (double)w[j] - (double)s * qlinear_rtn_code((float)w[j], s, qmax);
            err += (double)h[j] * e * e;
        }
        if (err < best) {
            best = err;
            best_s = s;
        }
    }
    return best_s;
}

int gptq_plan_factor(gptq_plan *p)
{
    if (!p || !p->Hd || p->in < 1)
        return fq_error(WHERE ":gptq_plan_factor: no damped Hessian to factorise (expected a "
                        "plan from gptq_plan_make_ex with factor = 0)");
    size_t nh = (size_t)p->in * p->in;
    real *U = fq_malloc(sizeof(real) * nh, "GPTQ inverse Hessian factor");
    if (!U)
        return FQ_ERR;
    if (inverse_cholesky_upper(p->Hd, p->in, p->damp) != FQ_OK) {
        free(U);
        return FQ_ERR;
    }
    for (size_t i = 0; i < nh; i++)
        U[i] = (real)p->Hd[i];
    free(p->Hd);
    p->Hd = NULL;
    free(p->U);
    p->U = U;
    return FQ_OK;
}

void gptq_plan_free(gptq_plan *p)
{
    if (!p)
        return;
    free(p->U);
    free(p->Hd);
    free(p->W);
    free(p->scales);
    free(p->perm);
    memset(p, 0, sizeof *p);
}

int gptq_plan_make(gptq_plan *p, const real *w, int out, int in, const real *H, int bits,
                   const gptq_opts *o)
{
    return gptq_plan_make_ex(p, w, out, in, H, bits, o, 1);
}

/* The plan's host loops, row ranges on the I/O threads (fq_parallel_ranges): each row's
 * result depends on that row alone, so the plan is the same bytes on any thread count;
 * for a 70B down_proj the clip search alone is 11 × 235 M weighted errors, half a minute
 * on one core. */
typedef struct {
    gptq_plan *p;
    const real *w, *H;
    const int *perm;
    const real *hdiag; /* clip search weights, or NULL: no search */
} plan_job;

/* hd ← H (permuted), checked finite, rows [a, b) */
static int plan_hessian_rows(void *ctx, size_t a, size_t b, int t)
{
    (void)t;
    const plan_job *j = ctx;
    const int in = j->p->in;
    for (size_t i = a; i < b; i++)
        for (int k = 0; k < in; k++) {
            size_t src = j->perm ? (size_t)j->perm[i] * in + j->perm[k] : i * in + k;
            if (!isfinite(j->H[src]))
                return fq_error(WHERE ":gptq_quantize: Hessian element %zu is %g (expected "
                                "finite inputs)", src, (double)j->H[src]);
            j->p->Hd[i * in + k] = (double)j->H[src];
        }
    return FQ_OK;
}

/* scales (RTN of the row, then the clip search) and the working weight, rows [a, b) */
static int plan_weight_rows(void *ctx, size_t a, size_t b, int t)
{
    (void)t;
    const plan_job *j = ctx;
    gptq_plan *p = j->p;
    const int in = p->in;
    for (size_t r = a; r < b; r++) {
        const real *wr = j->w + r * in;
        /* the RTN scale of the clipped row, in float exactly as qlinear_quantize_rtn */
        float mx = 0;
        for (int k = 0; k < in; k++) {
            float v = (float)wr[k];
            if (!isfinite(v))
                return fq_error(WHERE ":gptq_quantize: weight [%zu, %d] is %g (expected "
                                "finite)", r, k, (double)v);
            mx = fmaxf(mx, fabsf(v));
        }
        p->scales[r] = fmaxf(mx, 1e-5f) / p->qmax;
        if (j->hdiag)
            p->scales[r] = clip_search_row(wr, j->hdiag, in, p->scales[r], p->qmax);
        for (int k = 0; k < in; k++)
            p->W[r * in + k] = wr[j->perm ? j->perm[k] : k];
    }
    return FQ_OK;
}

int gptq_plan_make_ex(gptq_plan *p, const real *w, int out, int in, const real *H, int bits,
                      const gptq_opts *o, int factor)
{
    if (!p || !w || !H || !o)
        return fq_error(WHERE ":gptq_quantize: NULL argument (expected linear, weight, "
                        "Hessian and options)");
    memset(p, 0, sizeof *p);
    const double damp = o->damp;
    const int block = o->block;
    if (out < 1 || in < 1 || bits < 2 || bits > 8 || !(damp >= 0) || !isfinite(damp) ||
        block < 1)
        return fq_error(WHERE ":gptq_quantize: shape [%d, %d], %d bits, damp %g, block %d "
                        "(expected positive sizes, bits 2..8 or 16, damp >= 0, block >= 1)",
                        out, in, bits, damp, block);
    if (bits <= 4 && in % 2)
        return fq_error(WHERE ":gptq_quantize: input size %d is odd (expected even for two "
                        "codes per byte)", in);
    size_t nw = (size_t)out * in, nh = (size_t)in * in;
    p->out = out;
    p->in = in;
    p->bits = bits;
    p->block = block;
    p->qmax = (float)((1 << (bits - 1)) - 1);
    p->Hd = fq_malloc(sizeof(double) * nh, "GPTQ inverse Hessian");
    uint8_t *dead = fq_malloc((size_t)in, "dead inputs");
    p->W = fq_malloc(sizeof(real) * nw, "GPTQ working weight");
    p->scales = fq_malloc(sizeof(float) * (size_t)out, "weight scales");
    p->damp = damp;
    real *hdiag = NULL;
    int rc = FQ_ERR;
    if (!p->Hd || !dead || !p->W || !p->scales)
        goto out;
    if (o->act_order && act_order_perm(H, in, &p->perm) != FQ_OK)
        goto out;
    plan_job job = {p, w, H, p->perm, NULL};
    /* rows in chunks of ~1 M elements: enough items to spread, few enough to be cheap */
    size_t hchunk = (size_t)(1 << 20) / (size_t)in + 1;
    if (fq_parallel_ranges((size_t)in, hchunk, 0, plan_hessian_rows, &job) != FQ_OK)
        goto out;
    damp_diagonal(p->Hd, in, damp, dead);
    if (factor && gptq_plan_factor(p) != FQ_OK)
        goto out;
    if (o->clip_search) {
        hdiag = fq_malloc(sizeof(real) * (size_t)in, "GPTQ clip search weights");
        if (!hdiag)
            goto out;
        for (int j = 0; j < in; j++)
            hdiag[j] = H[(size_t)j * in + j];
        job.hdiag = hdiag;
    }
    if (fq_parallel_ranges((size_t)out, hchunk, 0, plan_weight_rows, &job) != FQ_OK)
        goto out;
    for (int r = 0; r < out; r++)
        for (int j = 0; j < in; j++)
            if (dead[j])
                p->W[(size_t)r * in + j] = 0;
    rc = FQ_OK;
out:
    free(hdiag);
    free(dead);
    if (rc != FQ_OK)
        gptq_plan_free(p);
    return rc;
}

int gptq_sweep(gptq_plan *p, int8_t *codes)
{
    if (!p || !p->U || !p->W || !p->scales || !codes)
        return fq_error(WHERE ":gptq_sweep: NULL argument (expected a plan and a code buffer)");
    const int out = p->out, in = p->in, block = p->block;
    const real qmax = (real)p->qmax, *U = p->U;
    real *W = p->W;
    real *E = fq_malloc(sizeof(real) * (size_t)out * (size_t)(block < in ? block : in),
                        "GPTQ block errors");
    if (!E)
        return FQ_ERR;
    for (int i1 = 0; i1 < in; i1 += block) {
        int i2 = i1 + block < in ? i1 + block : in, nb = i2 - i1;
        for (int r = 0; r < out; r++) {
            real *wr = W + (size_t)r * in;
            real *er = E + (size_t)r * nb;
            const real s = (real)p->scales[r];
            for (int i = i1; i < i2; i++) {
                real c = rint(wr[i] / s);
                c = fmin(fmax(c, -qmax - 1), qmax);
                codes[(size_t)r * in + i] = (int8_t)c;
                const real *ui = U + (size_t)i * in;
                real e = (wr[i] - s * c) / ui[i];
                for (int j = i + 1; j < i2; j++)
                    wr[j] -= e * ui[j];
                er[i - i1] = e;
            }
        }
        if (i2 < in)
            real_gemm(0, 0, out, in - i2, nb, -1, E, nb, U + (size_t)i1 * in + i2, in, 1,
                      W + i2, in);
    }
    free(E);
    return FQ_OK;
}

int gptq_plan_finish(gptq_plan *p, int8_t *codes, qlinear *l)
{
    if (!p || !codes || !l || !p->scales) {
        free(codes);
        return fq_error(WHERE ":gptq_plan_finish: NULL argument");
    }
    memset(l, 0, sizeof *l);
    const int out = p->out, in = p->in;
    if (p->perm) {
        int8_t *row = fq_malloc((size_t)in, "GPTQ code row");
        if (!row) {
            free(codes);
            return FQ_ERR;
        }
        for (int r = 0; r < out; r++) {
            int8_t *cr = codes + (size_t)r * in;
            for (int i = 0; i < in; i++)
                row[p->perm[i]] = cr[i];
            memcpy(cr, row, (size_t)in);
        }
        free(row);
    }
    l->out = out;
    l->in = in;
    l->bits = p->bits;
    l->scales = p->scales;
    p->scales = NULL;
    if (store_codes(l, codes, out, in, p->bits) != FQ_OK) {
        free(l->scales);
        memset(l, 0, sizeof *l);
        return FQ_ERR;
    }
    return FQ_OK;
}

int gptq_quantize_opts(qlinear *l, const real *w, int out, int in, const real *H, int bits,
                       const gptq_opts *o)
{
    if (!l || !w || !H || !o)
        return fq_error(WHERE ":gptq_quantize: NULL argument (expected linear, weight, "
                        "Hessian and options)");
    memset(l, 0, sizeof *l);
    if (bits == 16) {
        if (out < 1 || in < 1)
            return fq_error(WHERE ":gptq_quantize: shape [%d, %d] (expected positive sizes)",
                            out, in);
        size_t nw = (size_t)out * in;
        float *f = fq_malloc(sizeof(float) * nw, "weight copy");
        if (!f)
            return FQ_ERR;
        real_to_f32(w, nw, f);
        int rc = qlinear_quantize_rtn(l, f, out, in, bits);
        free(f);
        return rc;
    }
    gptq_plan p;
    if (gptq_plan_make(&p, w, out, in, H, bits, o) != FQ_OK)
        return FQ_ERR;
    int8_t *codes = fq_malloc((size_t)out * in, "weight codes");
    int rc = codes ? gptq_sweep(&p, codes) : FQ_ERR;
    if (rc == FQ_OK) {
        rc = gptq_plan_finish(&p, codes, l);
        codes = NULL;
    }
    free(codes);
    gptq_plan_free(&p);
    return rc;
}

int gptq_output_error(const qlinear *l, const real *w, const real *H, double *err)
{
    if (!l || !w || !H || !err || l->out < 1 || l->in < 1)
        return fq_error(WHERE ":gptq_output_error: NULL or empty argument");
    size_t n = (size_t)l->out * l->in;
    float *wq = fq_malloc(sizeof(float) * n, "dequantized weight");
    real *delta = fq_malloc(sizeof(real) * n, "weight error");
    real *dh = fq_malloc(sizeof(real) * n, "weight error times Hessian");
    int rc = FQ_ERR;
    if (wq && delta && dh && qlinear_dequantize(l, wq) == FQ_OK) {
        for (size_t i = 0; i < n; i++)
            delta[i] = w[i] - (real)wq[i];
        real_gemm(0, 0, l->out, l->in, l->in, 1, delta, l->in, H, l->in, 0, dh, l->in);
        double s = 0;
        for (size_t i = 0; i < n; i++)
            s += (double)dh[i] * (double)delta[i];
        *err = s;
        rc = FQ_OK;
    }
    free(wq);
    free(delta);
    free(dh);
    return rc;
}
