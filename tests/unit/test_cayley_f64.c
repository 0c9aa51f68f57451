/* test_cayley_f64.c — Cayley map and SVD-form factors in float64: orthogonality of U,
 * M·(M^{-T})ᵀ = I, gradients of Θ_U, Θ_V, λ against central differences (rel 1e-7),
 * the direct form's inverse and gradient, Haar init, min|λ| and non-finite inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "cayley.h"
#include "error.h"
#include "unit/fd_util.h"

/* max |AᵀA − I| (transpose_first) or |A Aᵀ − I|, computed with plain loops. */
static double orth_err(const real *A, int k, int transpose_first)
{
    double worst = 0;
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) {
            double s = 0;
            for (int r = 0; r < k; r++)
                s += transpose_first ? (double)A[r * k + i] * A[r * k + j]
                                     : (double)A[i * k + r] * A[j * k + r];
            worst = fmax(worst, fabs(s - (i == j)));
        }
    return worst;
}

static void test_cayley_orthogonal(void **state)
{
    (void)state;
    rng_state rng;
    rng_seed(&rng, 21);
    const int sizes[] = {1, 2, 5, 16, 64};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int k = sizes[s];
        real *th = alloc_real(k * k), *U = alloc_real(k * k), *w = alloc_real(k * k);
        fill_normal(th, k * k, &rng, 1);
        assert_int_equal(cayley_fwd(U, th, k, w), 0);
        assert_true(orth_err(U, k, 1) < 1e-12);
        assert_true(orth_err(U, k, 0) < 1e-12);
        /* Θ's diagonal and upper triangle are unused. */
        for (int i = 0; i < k; i++)
            for (int j = i; j < k; j++)
                th[i * k + j] = 100;
        real *U2 = alloc_real(k * k);
        assert_int_equal(cayley_fwd(U2, th, k, w), 0);
        assert_true(max_abs_diff(U, U2, k * k) == 0);
        free(th), free(U), free(w), free(U2);
    }
    /* Zero parameters give the identity. */
    real th[9] = {0}, U[9], w[9];
    assert_int_equal(cayley_fwd(U, th, 3, w), 0);
    for (int i = 0; i < 9; i++)
        assert_true(U[i] == (i % 4 == 0));
}

typedef struct {
    int k, direct;
    real *thu, *thv, *lam, *M, *Mi, *U, *V, *G1, *G2, *work;
    double *dwork;
} svd_ctx;

static double svd_loss(void *p)
{
    svd_ctx *c = p;
    int kk = c->k * c->k;
    if (c->direct) {
        /* direct form: M = Θ (thu), M^{-T} from the float64 inverse */
        assert_int_equal(direct_inv_fwd(c->Mi, c->thu, c->k, c->dwork), 0);
        return dot(c->G1, c->thu, kk) + dot(c->G2, c->Mi, kk);
    }
    assert_int_equal(svd_factor_fwd(c->M, c->Mi, c->U, c->V, c->thu, c->thv, c->lam, c->k,
                                    c->work), 0);
    return dot(c->G1, c->M, kk) + dot(c->G2, c->Mi, kk);
}

static void test_svd_factor_fwd_bwd(void **state)
{
    (void)state;
    rng_state rng;
    rng_seed(&rng, 22);
    for (int k = 1; k <= 6; k += 5) {
        int kk = k * k;
        svd_ctx c = {k, 0, alloc_real(kk), alloc_real(kk), alloc_real(k), alloc_real(kk),
                     alloc_real(kk), alloc_real(kk), alloc_real(kk), alloc_real(kk),
                     alloc_real(kk), alloc_real(svd_factor_bwd_work(k)), NULL};
        fill_normal(c.thu, kk, &rng, 1);
        fill_normal(c.thv, kk, &rng, 1);
        for (int i = 0; i < k; i++)
            c.lam[i] = (real)((i % 2 ? -1 : 1) * (0.5 + rng_uniform(&rng)));
        fill_normal(c.G1, kk, &rng, 1);
        fill_normal(c.G2, kk, &rng, 1);
        svd_loss(&c);
        /* M · (M^{-T})ᵀ = I */
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) {
                double s = 0;
                for (int r = 0; r < k; r++)
                    s += (double)c.M[i * k + r] * c.Mi[j * k + r];
                assert_true(fabs(s - (i == j)) < 1e-12);
            }
        real *gu = alloc_real(kk), *gv = alloc_real(kk), *gl = alloc_real(k);
        assert_int_equal(svd_factor_bwd(gu, gv, gl, c.G1, c.G2, c.U, c.V, c.lam, k, c.work), 0);
        assert_int_equal(fd_check("svd g_theta_u", svd_loss, &c, c.thu, gu, kk, 1e-6, 1e-7), 0);
        assert_int_equal(fd_check("svd g_theta_v", svd_loss, &c, c.thv, gv, kk, 1e-6, 1e-7), 0);
        assert_int_equal(fd_check("svd g_lambda", svd_loss, &c, c.lam, gl, k, 1e-6, 1e-7), 0);
        /* only g_M given: the G2 part drops out */
        memset(gl, 0, sizeof(real) * k);
        memset(gu, 0, sizeof(real) * kk);
        memset(gv, 0, sizeof(real) * kk);
        memset(c.G2, 0, sizeof(real) * kk);
        assert_int_equal(svd_factor_bwd(gu, gv, gl, c.G1, NULL, c.U, c.V, c.lam, k, c.work), 0);
        assert_int_equal(fd_check("svd g_lambda (G_M only)", svd_loss, &c, c.lam, gl, k, 1e-6, 1e-7), 0);

        /* direct form: G_M += −M^{-T} G_{M^{-T}}ᵀ M^{-T}, plus the direct G1 term */
        c.direct = 1;
        c.dwork = calloc(2 * (size_t)kk, sizeof(double));
        fill_normal(c.G2, kk, &rng, 1);
        for (int i = 0; i < k; i++)
            c.thu[i * k + i] += 3;
        svd_loss(&c);
        real *gm = alloc_real(kk);
        memcpy(gm, c.G1, sizeof(real) * kk);
        assert_int_equal(direct_inv_bwd(gm, c.G2, c.Mi, k, c.work), 0);
        assert_int_equal(fd_check("direct g_M", svd_loss, &c, c.thu, gm, kk, 1e-6, 1e-7), 0);
        /* the inverse is an inverse (recomputed: the FD left the last perturbed one) */
        svd_loss(&c);
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) {
                double s = 0;
                for (int r = 0; r < k; r++)
                    s += (double)c.thu[i * k + r] * c.Mi[j * k + r];
                assert_true(fabs(s - (i == j)) < 1e-12);
            }
        free(gm), free(c.dwork);
        free(gu), free(gv), free(gl);
        free(c.thu), free(c.thv), free(c.lam), free(c.M), free(c.Mi), free(c.U), free(c.V);
        free(c.G1), free(c.G2), free(c.work);
    }
}

static void test_haar_init(void **state)
{
    (void)state;
    rng_state a, b;
    rng_seed(&a, 5);
    rng_seed(&b, 5);
    const int k = 48;
    real *q1 = alloc_real(k * k), *q2 = alloc_real(k * k);
    assert_int_equal(factor_init_haar(q1, k, &a), 0);
    assert_int_equal(factor_init_haar(q2, k, &b), 0);
    assert_true(max_abs_diff(q1, q2, k * k) == 0); /* seeded: same matrix */
    assert_true(orth_err(q1, k, 1) < 1e-12);
    /* Not the identity, and a different seed gives a different matrix. */
    rng_seed(&b, 6);
    assert_int_equal(factor_init_haar(q2, k, &b), 0);
    assert_true(max_abs_diff(q1, q2, k * k) > 0.1);
    double diag = 0;
    for (int i = 0; i < k; i++)
        diag += fabs(q1[i * k + i]);
    assert_true(diag / k < 0.5);
    free(q1), free(q2);
}

static void test_nonfinite_and_min_lambda(void **state)
{
    (void)state;
    real lam[3] = {2, -0.25, 1};
    assert_true(factor_lambda_min_abs(lam, 3) == 0.25);
    real th[9] = {0}, U[9], V[9], M[9], Mi[9], w[18];
    assert_int_equal(svd_factor_fwd(M, Mi, U, V, th, th, lam, 3, w), 0);
    lam[1] = 0;
    assert_int_equal(svd_factor_fwd(M, Mi, U, V, th, th, lam, 3, w), -1);
    assert_non_null(strstr(fq_errmsg(), "lambda[1]"));
    lam[1] = 1;
    th[3] = NAN;
    assert_int_equal(svd_factor_fwd(M, Mi, U, V, th, th, lam, 3, w), -1);
    assert_non_null(strstr(fq_errmsg(), "NaN"));
    double dw[18];
    real sing[4] = {1, 2, 2, 4};
    assert_int_equal(direct_inv_fwd(Mi, sing, 2, dw), -1);
    assert_non_null(strstr(fq_errmsg(), "singular"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cayley_orthogonal),
        cmocka_unit_test(test_svd_factor_fwd_bwd),
        cmocka_unit_test(test_haar_init),
        cmocka_unit_test(test_nonfinite_and_min_lambda),
    };
    return cmocka_run_group_tests_name("cayley_f64", tests, NULL, NULL);
}
