/* difficulty.c — the channel-magnitude difficulty metric and its companions (see
 * difficulty.h for the definitions). Sums are in double; the one big product (the layer
 * error's X·Wᵀ) goes through real_gemm, whose fp32 rounding is ~1e-7 of |XWᵀ| and so far
 * below the 4-bit error it is subtracted from. The rotation is applied in blocks of rows
 * so its scratch stays small for any N.
 */
#include "difficulty.h"

#include "error.h"
#include "hadamard.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const difficulty_variant_names[DIFF_VARIANTS] = {"before", "smooth", "rotate",
                                                             "smoothrot"};

enum { ROT_BLOCK_ROWS = 256 };

static int check_matrix(const char *fn, const char *name, const void *p, int rows, int cols)
{
    if (!p || rows < 1 || cols < 1)
        return fq_error("difficulty:%s: %s must be a non-empty matrix (got %s, %d x %d)", fn,
                        name, p ? "data" : "NULL", rows, cols);
    return FQ_OK;
}

int difficulty_channel_norms(const real *x, int rows, int cols, double *m)
{
    if (check_matrix("channel_norms", "x", x, rows, cols) != FQ_OK)
        return FQ_ERR;
    if (!m)
        return fq_error("difficulty:channel_norms: output is NULL (expected cols doubles)");
    for (int j = 0; j < cols; j++)
        m[j] = 0;
    for (int i = 0; i < rows; i++) {
        const real *r = x + (size_t)i * cols;
        for (int j = 0; j < cols; j++)
            m[j] += (double)r[j] * r[j];
    }
    for (int j = 0; j < cols; j++)
        m[j] = sqrt(m[j]);
    return FQ_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double sample_std(const double *v, int n)
{
    double mean = 0, ss = 0;
    for (int j = 0; j < n; j++)
        mean += v[j];
    mean /= n;
    for (int j = 0; j < n; j++)
        ss += (v[j] - mean) * (v[j] - mean);
    return sqrt(ss / (n - 1));
}

/* max/median of per-channel max|x|; c is scratch of cols doubles. */
static double max_median_ratio(const real *x, int rows, int cols, double *c)
{
    for (int j = 0; j < cols; j++)
        c[j] = 0;
    for (int i = 0; i < rows; i++) {
        const real *r = x + (size_t)i * cols;
        for (int j = 0; j < cols; j++)
            if (fabs((double)r[j]) > c[j])
                c[j] = fabs((double)r[j]);
    }
    qsort(c, (size_t)cols, sizeof *c, cmp_double);
    double med = cols % 2 ? c[cols / 2] : 0.5 * (c[cols / 2 - 1] + c[cols / 2]);
    return med > 0 ? c[cols - 1] / med : NAN;
}

static double pearson_kurtosis(const real *x, size_t n)
{
    double mean = 0, m2 = 0, m4 = 0;
    for (size_t i = 0; i < n; i++)
        mean += x[i];
    mean /= (double)n;
    for (size_t i = 0; i < n; i++) {
        double d = x[i] - mean, d2 = d * d;
        m2 += d2;
        m4 += d2 * d2;
    }
    m2 /= (double)n;
    m4 /= (double)n;
    return m2 > 0 ? m4 / (m2 * m2) : NAN;
}

int difficulty_stats_compute(const real *x, int rows, int cols, difficulty_stats *out)
{
    if (check_matrix("stats", "x", x, rows, cols) != FQ_OK)
        return FQ_ERR;
    if (cols < 2 || !out)
        return fq_error("difficulty:stats: need cols >= 2 (a std over channels) and an output "
                        "(got cols %d)", cols);
    double *m = fq_malloc(sizeof(double) * (size_t)cols, "channel norms");
    if (!m)
        return FQ_ERR;
    difficulty_channel_norms(x, rows, cols, m);
    out->d = sample_std(m, cols);
    out->max_median = max_median_ratio(x, rows, cols, m);
    out->kurtosis = pearson_kurtosis(x, (size_t)rows * cols);
    free(m);
    return FQ_OK;
}

int difficulty_rtn_rows(real *out, const real *x, int rows, int cols, int bits)
{
    if (check_matrix("rtn_rows", "x", x, rows, cols) != FQ_OK)
        return FQ_ERR;
    if (!out || bits < 2 || bits > 16)
        return fq_error("difficulty:rtn_rows: bits must be 2..16 and out non-NULL (got %d)", bits);
    double qmax = ldexp(1.0, bits - 1) - 1;
    for (int i = 0; i < rows; i++) {
        const real *r = x + (size_t)i * cols;
        real *o = out + (size_t)i * cols;
        double amax = 0;
        for (int j = 0; j < cols; j++)
            if (fabs((double)r[j]) > amax)
                amax = fabs((double)r[j]);
        double s = amax / qmax;
        for (int j = 0; j < cols; j++) {
            if (s == 0) {
                o[j] = 0;
                continue;
            }
            double q = rint(r[j] / s);
            q = q > qmax ? qmax : q < -qmax - 1 ? -qmax - 1 : q;
            o[j] = (real)(q * s);
        }
    }
    return FQ_OK;
}

/* Σ over rows of ((max − min)/levels)², and ‖x‖_F². */
static void row_steps(const real *x, int rows, int cols, double levels, double *sum_d2,
                      double *frob2)
{
    *sum_d2 = 0;
    *frob2 = 0;
    for (int i = 0; i < rows; i++) {
        const real *r = x + (size_t)i * cols;
        double lo = r[0], hi = r[0];
        for (int j = 0; j < cols; j++) {
            lo = r[j] < lo ? r[j] : lo;
            hi = r[j] > hi ? r[j] : hi;
            *frob2 += (double)r[j] * r[j];
        }
        double delta = (hi - lo) / levels;
        *sum_d2 += delta * delta;
    }
}

int difficulty_layer_error(const real *x, int rows, int n, const real *w, int out, int bits,
                           double *err, double *est)
{
    if (check_matrix("layer_error", "x", x, rows, n) != FQ_OK ||
        check_matrix("layer_error", "w", w, out, n) != FQ_OK)
        return FQ_ERR;
    if (!err || !est || bits < 2 || bits > 16)
        return fq_error("difficulty:layer_error: bits must be 2..16 and outputs non-NULL "
                        "(got bits %d)", bits);
    size_t nx = (size_t)rows * n, nw = (size_t)out * n, ny = (size_t)rows * out;
    real *qx = fq_malloc(sizeof(real) * nx, "quantized activations");
    real *qw = fq_malloc(sizeof(real) * nw, "quantized weights");
    real *y = fq_malloc(sizeof(real) * ny, "layer error product");
    if (!qx || !qw || !y) {
        free(qx);
        free(qw);
        free(y);
        return FQ_ERR;
    }
    difficulty_rtn_rows(qx, x, rows, n, bits);
    difficulty_rtn_rows(qw, w, out, n, bits);
    real_gemm(0, 1, rows, out, n, 1, qx, n, qw, n, 0, y, out);
    real_gemm(0, 1, rows, out, n, 1, x, n, w, n, -1, y, out); /* y = XWᵀ − Q(X)Q(W)ᵀ */
    double e = 0;
    for (size_t i = 0; i < ny; i++)
        e += (double)y[i] * y[i];
    free(qx);
    free(qw);
    free(y);
    double levels = ldexp(1.0, bits) - 1, dx2, x2, dw2, w2;
    row_steps(x, rows, n, levels, &dx2, &x2);
    row_steps(w, out, n, levels, &dw2, &w2);
    *err = e;
    *est = (w2 * dx2 + x2 * dw2) / 12;
    return FQ_OK;
}

static void col_absmax(const real *x, int rows, int cols, double *c)
{
    for (int j = 0; j < cols; j++)
        c[j] = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            double a = fabs((double)x[(size_t)i * cols + j]);
            c[j] = a > c[j] ? a : c[j];
        }
}

int smooth_scales(real *s, const real *x, int rows, int n, const real *w, int out,
                  double alpha)
{
    if (check_matrix("smooth_scales", "x", x, rows, n) != FQ_OK ||
        check_matrix("smooth_scales", "w", w, out, n) != FQ_OK)
        return FQ_ERR;
    if (!s || !(alpha >= 0 && alpha <= 1))
        return fq_error("difficulty:smooth_scales: alpha must be in [0, 1] and s non-NULL "
                        "(got alpha %g)", alpha);
    double *cx = fq_malloc(sizeof(double) * 2 * (size_t)n, "smoothing maxima");
    if (!cx)
        return FQ_ERR;
    double *cw = cx + n;
    col_absmax(x, rows, n, cx);
    col_absmax(w, out, n, cw);
    for (int j = 0; j < n; j++) {
        double ax = cx[j] > 1e-5 ? cx[j] : 1e-5, aw = cw[j] > 1e-5 ? cw[j] : 1e-5;
        double v = pow(ax, alpha) / pow(aw, 1 - alpha);
        s[j] = (real)(v > 1e-5 ? v : 1e-5);
    }
    free(cx);
    return FQ_OK;
}

int smooth_apply(real *x, int rows, int n, real *w, int out, const real *s)
{
    if (check_matrix("smooth_apply", "x", x, rows, n) != FQ_OK ||
        check_matrix("smooth_apply", "w", w, out, n) != FQ_OK)
        return FQ_ERR;
    if (!s)
        return fq_error("difficulty:smooth_apply: scales are NULL (expected n values)");
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < n; j++)
            x[(size_t)i * n + j] /= s[j];
    for (int i = 0; i < out; i++)
        for (int j = 0; j < n; j++)
            w[(size_t)i * n + j] *= s[j];
    return FQ_OK;
}

int random_hadamard_init(random_hadamard *q, int n, uint64_t seed)
{
    if (!q)
        return fq_error("difficulty:random_hadamard_init: q is NULL");
    memset(q, 0, sizeof *q);
    if (n < 1)
        return fq_error("difficulty:random_hadamard_init: size must be >= 1 (got %d)", n);
    q->n = n;
    if (hadamard_split(n, &q->k, &q->pow2, &q->is_random) != FQ_OK)
        return FQ_ERR;
    q->hk = fq_malloc(sizeof(real) * (size_t)q->k * q->k, "hadamard factor");
    q->signs = fq_malloc(sizeof(real) * (size_t)n, "hadamard signs");
    q->work = fq_malloc(sizeof(real) * (size_t)hadamard_apply_work(ROT_BLOCK_ROWS, n),
                        "hadamard scratch");
    int rnd = 0;
    if (!q->hk || !q->signs || !q->work ||
        hadamard_k_matrix(q->hk, q->k, seed ^ 0x9e3779b97f4a7c15ULL, &rnd) != FQ_OK) {
        random_hadamard_free(q);
        return FQ_ERR;
    }
    q->is_random = q->is_random || rnd;
    rng_state g;
    rng_seed(&g, seed);
    for (int j = 0; j < n; j++)
        q->signs[j] = (rng_next_u64(&g) >> 63) ? -1 : 1;
    return FQ_OK;
}

int random_hadamard_apply(const random_hadamard *q, real *x, int rows)
{
    if (!q || !q->hk)
        return fq_error("difficulty:random_hadamard_apply: rotation not initialised");
    if (check_matrix("random_hadamard_apply", "x", x, rows, q->n) != FQ_OK)
        return FQ_ERR;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < q->n; j++)
            x[(size_t)i * q->n + j] *= q->signs[j];
    for (int r0 = 0; r0 < rows; r0 += ROT_BLOCK_ROWS) {
        int nr = rows - r0 < ROT_BLOCK_ROWS ? rows - r0 : ROT_BLOCK_ROWS;
        if (hadamard_apply_rows(x + (size_t)r0 * q->n, nr, q->n, q->k, q->hk, q->work) != FQ_OK)
            return FQ_ERR;
    }
    return FQ_OK;
}

void random_hadamard_free(random_hadamard *q)
{
    if (!q)
        return;
    free(q->hk);
    free(q->signs);
    free(q->work);
    memset(q, 0, sizeof *q);
}

/* Statistics and error of one transformed pair. */
static int analyze_variant(const real *x, int rows, int n, const real *w, int out, int bits,
                           difficulty_report *r, int v)
{
    if (difficulty_stats_compute(x, rows, n, &r->act[v]) != FQ_OK ||
        difficulty_stats_compute(w, out, n, &r->weight[v]) != FQ_OK ||
        difficulty_layer_error(x, rows, n, w, out, bits, &r->error[v], &r->estimate[v]) != FQ_OK)
        return fq_error_wrap("difficulty:%s", difficulty_variant_names[v]);
    return FQ_OK;
}

int difficulty_analyze(const real *x, int rows, int n, const real *w, int out, double alpha,
                       int bits, uint64_t seed, difficulty_report *r)
{
    if (check_matrix("analyze", "x", x, rows, n) != FQ_OK ||
        check_matrix("analyze", "w", w, out, n) != FQ_OK)
        return FQ_ERR;
    if (!r || n < 2)
        return fq_error("difficulty:analyze: need n >= 2 channels and an output (got n %d)", n);
    memset(r, 0, sizeof *r);
    size_t nx = (size_t)rows * n, nw = (size_t)out * n;
    real *tx = fq_malloc(sizeof(real) * nx, "transformed activations");
    real *tw = fq_malloc(sizeof(real) * nw, "transformed weights");
    real *s = fq_malloc(sizeof(real) * (size_t)n, "smoothing scales");
    random_hadamard q;
    memset(&q, 0, sizeof q);
    int rc = FQ_ERR;
    if (!tx || !tw || !s || random_hadamard_init(&q, n, seed) != FQ_OK ||
        smooth_scales(s, x, rows, n, w, out, alpha) != FQ_OK)
        goto done;
    r->rotation_is_random = q.is_random;
    if (analyze_variant(x, rows, n, w, out, bits, r, DIFF_BEFORE) != FQ_OK)
        goto done;
    /* rotate */
    memcpy(tx, x, sizeof(real) * nx);
    memcpy(tw, w, sizeof(real) * nw);
    if (random_hadamard_apply(&q, tx, rows) != FQ_OK || random_hadamard_apply(&q, tw, out) != FQ_OK ||
        analyze_variant(tx, rows, n, tw, out, bits, r, DIFF_ROTATE) != FQ_OK)
        goto done;
    /* smooth, then smooth-then-rotate on the same smoothed copy */
    memcpy(tx, x, sizeof(real) * nx);
    memcpy(tw, w, sizeof(real) * nw);
    if (smooth_apply(tx, rows, n, tw, out, s) != FQ_OK ||
        analyze_variant(tx, rows, n, tw, out, bits, r, DIFF_SMOOTH) != FQ_OK ||
        random_hadamard_apply(&q, tx, rows) != FQ_OK || random_hadamard_apply(&q, tw, out) != FQ_OK ||
        analyze_variant(tx, rows, n, tw, out, bits, r, DIFF_SMOOTHROT) != FQ_OK)
        goto done;
    rc = FQ_OK;
done:
    random_hadamard_free(&q);
    free(tx);
    free(tw);
    free(s);
    return rc;
}
