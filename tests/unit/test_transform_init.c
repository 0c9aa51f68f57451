/* test_transform_init.c — issue 10's starting points, the parts the float64 layer test
 * (test_fq_layer_f64.c: exactness and "M is the Hadamard matrix") does not cover:
 * 1. factor_init_orthogonal reaches matrices a plain Cayley map cannot (H_2, a reflection,
 *    −I, and the Sylvester H_64 / H_128 that no sign pattern alone reaches), and refuses a
 *    matrix that is not orthogonal, naming it.
 * 2. init smoothrot's per-channel scales are the smoothrot baseline's own: c_d = 1/s with s
 *    from worker/baseline_smoothrot.c (a separate implementation), c_a = c_ug = 1.
 * 3. The recipe refuses smooth_alpha out of [0, 1] and an unknown init. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "cayley.h"
#include "error.h"
#include "fq_layer.h"
#include "hadamard.h"
#include "transform_init.h"
#include "worker/baseline_smoothrot.h"

#include "fq_fixture.h"

/* U diag(λ) Vᵀ of the parameters factor_init_orthogonal produced, against q. */
static double reached_error(const real *q, int k)
{
    real *tu = alloc_real(k * k), *tv = alloc_real(k * k), *lam = alloc_real(k);
    real *m = alloc_real(k * k), *u = alloc_real(k * k), *v = alloc_real(k * k);
    real *work = alloc_real(svd_factor_fwd_work(k));
    rng_state rng;
    rng_seed(&rng, 3);
    assert_ok(factor_init_orthogonal(tu, tv, lam, q, k, &rng));
    assert_ok(svd_factor_fwd(m, NULL, u, v, tu, tv, lam, k, work));
    double err = max_abs_diff(m, q, (long)k * k);
    free(tu);
    free(tv);
    free(lam);
    free(m);
    free(u);
    free(v);
    free(work);
    return err;
}

static void test_orthogonal_targets(void **state)
{
    (void)state;
    const real r2 = (real)(1 / sqrt(2.0));
    const real h2[4] = {r2, r2, r2, -r2};      /* eigenvalues ±1: not a Cayley image */
    const real minus_i[9] = {-1, 0, 0, 0, -1, 0, 0, 0, -1};
    assert_true(reached_error(h2, 2) < 1e-6);
    assert_true(reached_error(minus_i, 3) < 1e-6);
    /* the normalised Sylvester Hadamard matrices of size 64 and 128 (flatq-llama-16m's and
     * LLaMA's M_k): every sign pattern keeps the eigenvalue −1, so the start needs the
     * random right factor */
    for (int n = 64; n <= 128; n *= 2) {
        real *h = alloc_real(n * n);
        int is_random = -1;
        assert_ok(hadamard_matrix(n, h, 0, &is_random));
        assert_int_equal(is_random, 0);
        double e = reached_error(h, n);
        print_message("H_%d reached to %.3g\n", n, e);
        assert_true(e < 1e-5);
        free(h);
    }
    const real skewed[4] = {1, 0.5f, 0, 1};
    real tu[4], tv[4], lam[2];
    rng_state rng;
    rng_seed(&rng, 1);
    assert_int_equal(factor_init_orthogonal(tu, tv, lam, skewed, 2, &rng), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "not orthogonal"));
}

static void test_smoothrot_scales_match_baseline(void **state)
{
    (void)state;
    fixture fx;
    fixture_init(&fx, 7);
    llama_scratch w;
    fq_stats st;
    assert_ok(llama_scratch_init(&w, &fx.c, B, S));
    assert_ok(fq_stats_init(&st, &fx.c));
    assert_ok(fq_stats_layer_fwd(&st, fx.x, &fx.l, &fx.c, &fx.rope, B, S, &w));
    fq_recipe r = fq_recipe_defaults();
    r.init = FQ_INIT_SMOOTHROT;
    r.smooth_alpha = 0.5;
    fq_params P;
    assert_ok(fq_params_init(&P, &fx.c, &r, &fx.l, &st));
    int d = fx.c.hidden, f = fx.c.intermediate;
    float s[24];
    assert_ok(smooth_down_scales_layer(&fx.l, d, f, st.down_in, 0.5, s));
    for (int j = 0; j < f; j++)
        assert_true(fabs((double)P.p[P.c_d + j] * s[j] - 1) < 1e-5);
    for (int j = 0; j < d; j++)
        assert_true(P.p[P.c_a + j] == 1 && P.p[P.c_ug + j] == 1);
    /* the smoothrot start needs the statistics */
    fq_params_free(&P);
    assert_int_equal(fq_params_init(&P, &fx.c, &r, &fx.l, NULL), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "smoothrot"));
    fq_stats_free(&st);
    llama_scratch_free(&w);
    fixture_free(&fx);
}

static void test_recipe_refuses(void **state)
{
    (void)state;
    fixture fx;
    fixture_init(&fx, 7);
    fq_recipe r = fq_recipe_defaults();
    r.smooth_alpha = 1.5;
    assert_int_equal(fq_recipe_check(&r, &fx.c), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "smooth_alpha"));
    r = fq_recipe_defaults();
    r.init = (fq_transform_init)7;
    assert_int_equal(fq_recipe_check(&r, &fx.c), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "'init'"));
    fixture_free(&fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_orthogonal_targets),
        cmocka_unit_test(test_smoothrot_scales_match_baseline),
        cmocka_unit_test(test_recipe_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
