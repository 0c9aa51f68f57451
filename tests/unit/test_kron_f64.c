/* test_kron_f64.c — Kronecker, per-channel scale and single transforms in float64:
 * forwards against explicit dense products written here, backwards against central
 * finite differences (tolerance rel 1e-7; the ops are linear in each argument, so the
 * differences are exact up to rounding). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "cayley.h"
#include "error.h"
#include "kron.h"
#include "unit/fd_util.h"

#define FD_H 1e-5
#define FD_TOL 1e-7

/* ---- Kronecker ---- */

typedef struct {
    int rows, n1, n2;
    real *x, *L, *R, *G, *y, *work;
} kron_ctx;

static double kron_loss(void *p)
{
    kron_ctx *c = p;
    assert_int_equal(kron_fwd(c->y, c->x, c->rows, c->n1, c->n2, c->L, c->R, c->work), 0);
    return dot(c->G, c->y, (long)c->rows * c->n1 * c->n2);
}

static void kron_dense_ref(real *y, const real *x, int rows, int n1, int n2, const real *L,
                           const real *R)
{
    int n = n1 * n2;
    for (int r = 0; r < rows; r++)
        for (int p = 0; p < n1; p++)
            for (int q = 0; q < n2; q++) {
                double s = 0;
                for (int i = 0; i < n1; i++)
                    for (int j = 0; j < n2; j++)
                        s += (double)x[r * n + i * n2 + j] * L[i * n1 + p] * R[j * n2 + q];
                y[r * n + p * n2 + q] = (real)s;
            }
}

static void check_kron_shape(int rows, int n1, int n2, uint64_t seed)
{
    rng_state rng;
    rng_seed(&rng, seed);
    int n = n1 * n2;
    kron_ctx c = {rows, n1, n2, alloc_real((long)rows * n), alloc_real(n1 * n1),
                  alloc_real(n2 * n2), alloc_real((long)rows * n), alloc_real((long)rows * n),
                  alloc_real(kron_bwd_work(rows, n))};
    fill_normal(c.x, (long)rows * n, &rng, 1);
    fill_normal(c.L, n1 * n1, &rng, 1);
    fill_normal(c.R, n2 * n2, &rng, 1);
    fill_normal(c.G, (long)rows * n, &rng, 1);
    real *ref = alloc_real((long)rows * n);
    kron_dense_ref(ref, c.x, rows, n1, n2, c.L, c.R);
    kron_loss(&c);
    assert_true(max_abs_diff(ref, c.y, (long)rows * n) < 1e-12);

    real *gx = alloc_real((long)rows * n), *gL = alloc_real(n1 * n1), *gR = alloc_real(n2 * n2);
    for (int i = 0; i < n1 * n1; i++)
        gL[i] = 0.5; /* accumulation: the bwd must add to what is there */
    assert_int_equal(kron_bwd(gx, gL, gR, c.G, c.x, rows, n1, n2, c.L, c.R, c.work), 0);
    for (int i = 0; i < n1 * n1; i++)
        gL[i] -= 0.5;
    assert_int_equal(fd_check("kron g_x", kron_loss, &c, c.x, gx, (long)rows * n, FD_H, FD_TOL), 0);
    assert_int_equal(fd_check("kron g_L", kron_loss, &c, c.L, gL, n1 * n1, FD_H, FD_TOL), 0);
    assert_int_equal(fd_check("kron g_R", kron_loss, &c, c.R, gR, n2 * n2, FD_H, FD_TOL), 0);
    /* NULL outputs are skipped; g_x alone still right. */
    real *gx2 = alloc_real((long)rows * n);
    assert_int_equal(kron_bwd(gx2, NULL, NULL, c.G, c.x, rows, n1, n2, c.L, c.R, c.work), 0);
    assert_true(max_abs_diff(gx, gx2, (long)rows * n) == 0);
    /* the weight-side entry points are the same op */
    real *gw = alloc_real((long)rows * n), *gLi = alloc_real(n1 * n1), *gRi = alloc_real(n2 * n2);
    assert_int_equal(kron_weight_bwd(gw, gLi, gRi, c.G, c.x, rows, n1, n2, c.L, c.R, c.work), 0);
    assert_true(max_abs_diff(gw, gx, (long)rows * n) == 0);
    assert_true(max_abs_diff(gLi, gL, n1 * n1) < 1e-12 && max_abs_diff(gRi, gR, n2 * n2) == 0);
    free(gw), free(gLi), free(gRi);
    free(gx2);
    free(gx), free(gL), free(gR), free(ref);
    free(c.x), free(c.L), free(c.R), free(c.G), free(c.y), free(c.work);
}

static void test_kron_fwd_bwd(void **state)
{
    (void)state;
    check_kron_shape(3, 3, 4, 1);
    check_kron_shape(5, 2, 6, 2);
    check_kron_shape(2, 1, 7, 3);
    check_kron_shape(1, 4, 4, 4);
}

/* (x ∘ c)(L ⊗ R) · ((w ⊘ c)(L^{-T} ⊗ R^{-T}))ᵀ = x · wᵀ. */
static void test_kron_weight_side_preserves_product(void **state)
{
    (void)state;
    rng_state rng;
    rng_seed(&rng, 7);
    const int n1 = 2, n2 = 6, n = 12, tok = 4, out = 5;
    real *x = alloc_real(tok * n), *w = alloc_real(out * n), *c = alloc_real(n);
    real *L = alloc_real(n1 * n1), *R = alloc_real(n2 * n2), *Li = alloc_real(n1 * n1),
         *Ri = alloc_real(n2 * n2);
    fill_normal(x, tok * n, &rng, 1);
    fill_normal(w, out * n, &rng, 1);
    for (int j = 0; j < n; j++)
        c[j] = (real)(0.5 + rng_uniform(&rng));
    fill_normal(L, n1 * n1, &rng, 1);
    fill_normal(R, n2 * n2, &rng, 1);
    for (int i = 0; i < n1; i++)
        L[i * n1 + i] += 3; /* keep the factors comfortably invertible */
    for (int i = 0; i < n2; i++)
        R[i * n2 + i] += 3;
    double dwork[2 * 36];
    assert_int_equal(direct_inv_fwd(Li, L, n1, dwork), 0);
    assert_int_equal(direct_inv_fwd(Ri, R, n2, dwork), 0);
    real *x1 = alloc_real(tok * n), *x2 = alloc_real(tok * n), *w1 = alloc_real(out * n),
         *w2 = alloc_real(out * n), *work = alloc_real(out * n);
    assert_int_equal(chscale_act_fwd(x1, x, c, tok, n), 0);
    assert_int_equal(kron_fwd(x2, x1, tok, n1, n2, L, R, work), 0);
    assert_int_equal(chscale_weight_fwd(w1, w, c, out, n), 0);
    assert_int_equal(kron_weight_fwd(w2, w1, out, n1, n2, Li, Ri, work), 0);
    for (int t = 0; t < tok; t++)
        for (int o = 0; o < out; o++) {
            double a = 0, b = 0;
            for (int j = 0; j < n; j++) {
                a += (double)x[t * n + j] * w[o * n + j];
                b += (double)x2[t * n + j] * w2[o * n + j];
            }
            assert_true(fabs(a - b) < 1e-11 * (1 + fabs(a)));
        }
    free(x), free(w), free(c), free(L), free(R), free(Li), free(Ri);
    free(x1), free(x2), free(w1), free(w2), free(work);
}

/* ---- per-channel scales ---- */

typedef struct {
    int rows, n, weight;
    real *x, *c, *G, *y;
} scale_ctx;

static double scale_loss(void *p)
{
    scale_ctx *s = p;
    if (s->weight)
        assert_int_equal(chscale_weight_fwd(s->y, s->x, s->c, s->rows, s->n), 0);
    else
        assert_int_equal(chscale_act_fwd(s->y, s->x, s->c, s->rows, s->n), 0);
    return dot(s->G, s->y, (long)s->rows * s->n);
}

static void test_chscale_fwd_bwd(void **state)
{
    (void)state;
    rng_state rng;
    rng_seed(&rng, 11);
    for (int weight = 0; weight < 2; weight++) {
        scale_ctx s = {4, 6, weight, alloc_real(24), alloc_real(6), alloc_real(24), alloc_real(24)};
        fill_normal(s.x, 24, &rng, 1);
        fill_normal(s.G, 24, &rng, 1);
        for (int j = 0; j < 6; j++)
            s.c[j] = (real)(0.3 + rng_uniform(&rng));
        scale_loss(&s);
        for (int r = 0; r < 4; r++)
            for (int j = 0; j < 6; j++) {
                double want = weight ? s.x[r * 6 + j] / s.c[j] : s.x[r * 6 + j] * s.c[j];
                assert_true(fabs(s.y[r * 6 + j] - want) < 1e-15);
            }
        real gx[24], gc[6] = {0};
        if (weight)
            assert_int_equal(chscale_weight_bwd(gx, gc, s.G, s.x, s.c, 4, 6), 0);
        else
            assert_int_equal(chscale_act_bwd(gx, gc, s.G, s.x, s.c, 4, 6), 0);
        assert_int_equal(fd_check("chscale g_x", scale_loss, &s, s.x, gx, 24, FD_H, FD_TOL), 0);
        assert_int_equal(fd_check("chscale g_c", scale_loss, &s, s.c, gc, 6, 1e-6, 1e-6), 0);
        free(s.x), free(s.c), free(s.G), free(s.y);
    }
    real one = 1, zero = 0, out;
    assert_int_equal(chscale_weight_fwd(&out, &one, &zero, 1, 1), -1);
    assert_non_null(strstr(fq_errmsg(), "channel scale 0"));
}

/* ---- single transforms ---- */

typedef struct {
    int nvec, k, head, h, dh;
    real *x, *M, *G, *y, *work;
} vec_ctx;

static double vec_loss(void *p)
{
    vec_ctx *v = p;
    if (v->head)
        assert_int_equal(head_transform_fwd(v->y, v->x, v->nvec, v->h, v->dh, v->M, v->work), 0);
    else
        assert_int_equal(vec_transform_fwd(v->y, v->x, v->nvec, v->k, v->M), 0);
    return dot(v->G, v->y, (long)v->nvec * v->k);
}

static void test_vec_and_head_transform(void **state)
{
    (void)state;
    rng_state rng;
    rng_seed(&rng, 13);
    /* y = x·M per vector of length 4 */
    vec_ctx v = {5, 4, 0, 0, 0, alloc_real(20), alloc_real(16), alloc_real(20), alloc_real(20),
                 alloc_real(40)};
    fill_normal(v.x, 20, &rng, 1);
    fill_normal(v.M, 16, &rng, 1);
    fill_normal(v.G, 20, &rng, 1);
    vec_loss(&v);
    for (int t = 0; t < 5; t++)
        for (int e = 0; e < 4; e++) {
            double s = 0;
            for (int j = 0; j < 4; j++)
                s += (double)v.x[t * 4 + j] * v.M[j * 4 + e];
            assert_true(fabs(s - v.y[t * 4 + e]) < 1e-13);
        }
    real gx[20], gM[16] = {0};
    assert_int_equal(vec_transform_bwd(gx, gM, v.G, v.x, 5, 4, v.M), 0);
    assert_int_equal(fd_check("vec g_x", vec_loss, &v, v.x, gx, 20, FD_H, FD_TOL), 0);
    assert_int_equal(fd_check("vec g_M", vec_loss, &v, v.M, gM, 16, FD_H, FD_TOL), 0);

    /* O1 = M_oᵀ·O on [h = 3, dh = 4] views of 5 tokens (k = h·dh = 12) */
    vec_ctx hv = {5, 12, 1, 3, 4, alloc_real(60), alloc_real(9), alloc_real(60), alloc_real(60),
                  alloc_real(120)};
    fill_normal(hv.x, 60, &rng, 1);
    fill_normal(hv.M, 9, &rng, 1);
    fill_normal(hv.G, 60, &rng, 1);
    vec_loss(&hv);
    for (int t = 0; t < 5; t++)
        for (int p = 0; p < 3; p++)
            for (int e = 0; e < 4; e++) {
                double s = 0;
                for (int j = 0; j < 3; j++)
                    s += (double)hv.M[j * 3 + p] * hv.x[t * 12 + j * 4 + e];
                assert_true(fabs(s - hv.y[t * 12 + p * 4 + e]) < 1e-13);
            }
    real ho[60], hM[9] = {0};
    assert_int_equal(head_transform_bwd(ho, hM, hv.G, hv.x, 5, 3, 4, hv.M, hv.work), 0);
    assert_int_equal(fd_check("head g_O", vec_loss, &hv, hv.x, ho, 60, FD_H, FD_TOL), 0);
    assert_int_equal(fd_check("head g_Mo", vec_loss, &hv, hv.M, hM, 9, FD_H, FD_TOL), 0);
    free(v.x), free(v.M), free(v.G), free(v.y), free(v.work);
    free(hv.x), free(hv.M), free(hv.G), free(hv.y), free(hv.work);
}

static void test_kron_rejects_bad_input(void **state)
{
    (void)state;
    real a[4] = {0}, b[4] = {0}, w[8];
    assert_int_equal(kron_fwd(a, a, 1, 2, 2, b, b, w), -1);
    assert_non_null(strstr(fq_errmsg(), "alias"));
    assert_int_equal(kron_fwd(a, b, 0, 2, 2, b, b, w), -1);
    assert_non_null(strstr(fq_errmsg(), "kron_fwd"));
    assert_int_equal(kron_fwd(a, b, 1, 2, 2, NULL, b, w), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kron_fwd_bwd),
        cmocka_unit_test(test_kron_weight_side_preserves_product),
        cmocka_unit_test(test_chscale_fwd_bwd),
        cmocka_unit_test(test_vec_and_head_transform),
        cmocka_unit_test(test_kron_rejects_bad_input),
    };
    return cmocka_run_group_tests_name("kron_f64", tests, NULL, NULL);
}
