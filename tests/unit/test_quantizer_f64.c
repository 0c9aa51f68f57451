/* test_quantizer_f64.c — quantizer backwards against an explicitly written STE reference.
 *
 * The STE says: the rounding offset δ = rne(x) − x is a constant and so is the inside /
 * outside-the-grid decision; everything else (extrema, sigmoids, the clamp of LWC, the
 * scale) is differentiated normally. The surrogates below implement exactly that, in
 * float64 and independently of core/quantizer.c, with δ and the mask frozen at the base
 * point; central differences of the surrogates then give the STE gradient (tolerance
 * rel 1e-6, random rows, so no extreme ties). Ties of the range (m = |l|, repeated
 * extremes) are checked against a hand-derived formula instead, since no derivative
 * exists there.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "quantizer.h"
#include "unit/fd_util.h"

#define MAXN 64

static double sig(double x) { return 1 / (1 + exp(-x)); }

typedef struct {
    int kind; /* 0 sym act, 1 asym kv, 2 weight lwc */
    int rows, len, bits;
    real *u, *clip, *G; /* clip: (cmax, cmin) for act/kv; (a[rows], b[rows]) for weights */
    double *delta, *zero;
    int *inside;
    double *qc; /* frozen clamped grid value of outside elements */
    int frozen;
} ste_ctx;

/* Returns Σ G·û of the surrogate; on the first call (frozen = 0) records δ, mask, z. */
static double ste_loss(void *p)
{
    ste_ctx *c = p;
    const int maxq = (1 << (c->bits - 1)) - 1, minq = -(1 << (c->bits - 1));
    const int qmax = (1 << c->bits) - 1;
    double total = 0;
    for (int r = 0; r < c->rows; r++) {
        const real *u = c->u + r * c->len;
        double v[MAXN];
        double umax = -INFINITY, umin = INFINITY;
        for (int j = 0; j < c->len; j++) {
            umax = fmax(umax, u[j]);
            umin = fmin(umin, u[j]);
        }
        double s, z = 0;
        if (c->kind == 2) {
            double wmax = umax * sig(c->clip[r]), wmin = umin * sig(c->clip[c->rows + r]);
            double cmx = -INFINITY, cmn = INFINITY;
            for (int j = 0; j < c->len; j++) {
                v[j] = fmin(fmax(u[j], wmin), wmax);
                cmx = fmax(cmx, v[j]);
                cmn = fmin(cmn, v[j]);
            }
            double t = fmax(-fmin(cmn, 0), fmax(cmx, 0));
            s = fmax(t, 1e-5) / maxq;
        } else {
            for (int j = 0; j < c->len; j++)
                v[j] = u[j];
            double m = fmax(umax, 0) * sig(c->clip[0]), l = fmin(umin, 0) * sig(c->clip[1]);
            if (c->kind == 0) {
                s = fmax(-l, m) / maxq;
            } else {
                s = (m - l) / qmax;
                if (!c->frozen)
                    c->zero[r] = rint(-l / s);
                z = c->zero[r];
            }
        }
        for (int j = 0; j < c->len; j++) {
            int idx = r * c->len + j;
            double x = v[j] / s;
            if (!c->frozen) {
                double q = rint(x) + z;
                double lo = c->kind == 1 ? 0 : minq, hi = c->kind == 1 ? qmax : maxq;
                c->delta[idx] = rint(x) - x;
                c->inside[idx] = q >= lo && q <= hi;
                c->qc[idx] = q < lo ? lo : (q > hi ? hi : q);
            }
            double uh = c->inside[idx] ? s * (x + c->delta[idx]) : s * (c->qc[idx] - z);
            total += (double)c->G[idx] * uh;
        }
    }
    c->frozen = 1;
    return total;
}

static void run_ste_case(int kind, int rows, int len, int bits, uint64_t seed)
{
    rng_state rng;
    rng_seed(&rng, seed);
    int n = rows * len, nclip = kind == 2 ? 2 * rows : 2;
    ste_ctx c = {kind, rows, len, bits, alloc_real(n), alloc_real(nclip), alloc_real(n),
                 calloc(n, sizeof(double)), calloc(rows, sizeof(double)), calloc(n, sizeof(int)),
                 calloc(n, sizeof(double)), 0};
    fill_normal(c.u, n, &rng, 1);
    for (int r = 0; r < rows; r++) /* an outlier per row, sign alternating */
        c.u[r * len + (r * 3) % len] = (real)((r % 2 ? -1 : 1) * (4 + rng_uniform(&rng)));
    if (kind == 2 && rows > 2)     /* an all-positive weight row: only the max side matters */
        for (int j = 0; j < len; j++)
            c.u[2 * len + j] = fabs(c.u[2 * len + j]) + 0.1;
    for (int i = 0; i < nclip; i++)
        c.clip[i] = (real)(-1 + 4 * rng_uniform(&rng)); /* κ from 0.27 to 0.95: clipping */
    fill_normal(c.G, n, &rng, 1);
    ste_loss(&c); /* freeze δ, mask, z at the base point */

    real *out = alloc_real(n), *scale = alloc_real(rows), *zero = alloc_real(rows);
    real *gin = alloc_real(n), *gclip = alloc_real(nclip);
    for (int i = 0; i < nclip; i++)
        gclip[i] = 0.125; /* accumulation check: subtract afterwards */
    if (kind == 0) {
        assert_int_equal(quant_act_sym_fwd(out, scale, c.u, rows, len, 1, bits, c.clip[0], c.clip[1]), 0);
        assert_int_equal(quant_act_sym_bwd(gin, &gclip[0], &gclip[1], c.G, c.u, scale, rows, len, 1, bits, c.clip[0], c.clip[1]), 0);
    } else if (kind == 1) {
        assert_int_equal(quant_kv_asym_fwd(out, scale, zero, c.u, rows, len, bits, c.clip[0], c.clip[1]), 0);
        for (int r = 0; r < rows; r++)
            assert_true(zero[r] == c.zero[r]);
        assert_int_equal(quant_kv_asym_bwd(gin, &gclip[0], &gclip[1], c.G, c.u, scale, zero, rows, len, bits, c.clip[0], c.clip[1]), 0);
    } else {
        assert_int_equal(quant_weight_lwc_fwd(out, scale, c.u, rows, len, bits, c.clip, c.clip + rows), 0);
        assert_int_equal(quant_weight_lwc_bwd(gin, gclip, gclip + rows, c.G, c.u, scale, rows, len, bits, c.clip, c.clip + rows), 0);
    }
    for (int i = 0; i < nclip; i++)
        gclip[i] -= 0.125;
    /* The forward equals the surrogate's value at the base point (δ makes it exact). */
    assert_true(fabs(dot(c.G, out, n) - ste_loss(&c)) < 1e-9);
    assert_int_equal(fd_check("STE g_in", ste_loss, &c, c.u, gin, n, 1e-7, 1e-6), 0);
    assert_int_equal(fd_check("STE g_clip", ste_loss, &c, c.clip, gclip, nclip, 1e-7, 1e-6), 0);
    free(out), free(scale), free(zero), free(gin), free(gclip);
    free(c.u), free(c.clip), free(c.G), free(c.delta), free(c.zero), free(c.inside), free(c.qc);
}

static void test_sym_act_ste(void **state)
{
    (void)state;
    run_ste_case(0, 6, 16, 4, 31);
    run_ste_case(0, 3, 24, 3, 32);
    run_ste_case(0, 4, 8, 8, 33);
}

static void test_kv_asym_ste(void **state)
{
    (void)state;
    run_ste_case(1, 6, 8, 4, 41);
    run_ste_case(1, 3, 16, 2, 42);
}

static void test_weight_lwc_ste(void **state)
{
    (void)state;
    run_ste_case(2, 5, 12, 4, 51);
    run_ste_case(2, 4, 20, 8, 52);
}

/* Ties: u = [2, −2, 0.3, 2, −1.1] with equal logits, so m = |l| (the range gradient splits
 * ½/½) and the max is shared by u0 and u3 (each gets half of the max side). */
static void test_sym_range_ties(void **state)
{
    (void)state;
    real u[5] = {2, -2, 0.3, 2, -1.1}, g[5] = {0.7, -0.3, 1.1, 0.2, -0.9};
    real out[5], s, gin[5], gcmax = 0, gcmin = 0;
    const real c = 1.5;
    assert_int_equal(quant_act_sym_fwd(out, &s, u, 1, 5, 1, 4, c, c), 0);
    assert_int_equal(quant_act_sym_bwd(gin, &gcmax, &gcmin, g, u, &s, 1, 5, 1, 4, c, c), 0);
    double k = sig(c), sc = 2 * k / 7, gs = 0, want_in[5];
    for (int j = 0; j < 5; j++) {
        double x = u[j] / sc, q = rint(x); /* ±2 map to ±8.56 → ±9: both are clamped */
        int inside = q >= -8 && q <= 7;
        double qc = q > 7 ? 7 : (q < -8 ? -8 : q);
        gs += g[j] * (inside ? qc - x : qc);
        want_in[j] = inside ? g[j] : 0;
    }
    double gt = gs / 7, gm = gt / 2, gl = -gt / 2;
    want_in[0] += gm * k / 2;
    want_in[3] += gm * k / 2;
    want_in[1] += gl * k;
    assert_true(fabs(s - sc) < 1e-15);
    for (int j = 0; j < 5; j++)
        assert_true(fabs(gin[j] - want_in[j]) < 1e-12);
    assert_true(fabs(gcmax - gm * 2 * k * (1 - k)) < 1e-12);
    assert_true(fabs(gcmin - gl * -2 * k * (1 - k)) < 1e-12);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sym_act_ste),
        cmocka_unit_test(test_kv_asym_ste),
        cmocka_unit_test(test_weight_lwc_ste),
        cmocka_unit_test(test_sym_range_ties),
    };
    return cmocka_run_group_tests_name("quantizer_f64", tests, NULL, NULL);
}
