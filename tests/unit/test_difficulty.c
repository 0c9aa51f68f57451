/* test_difficulty.c — the difficulty metric and its companions against values worked out
 * by hand (in the comments) and against float64 references written here independently of
 * core/difficulty.c; the transforms must keep X·Wᵀ and must do what the papers claim on a
 * matrix with an outlier channel (rotation spreads it, smoothing moves it into W). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "difficulty.h"
#include "error.h"
#include "rng.h"

static void assert_close(double got, double want, double rel, const char *what)
{
    if (!(fabs(got - want) <= rel * fabs(want) + 1e-12))
        fail_msg("%s: got %.10g, expected %.10g", what, got, want);
}

static void test_stats_hand_values(void **state)
{
    (void)state;
    /* X = [[3,0,4],[4,0,3]]: m = (5, 0, 5), mean 10/3, Σdev² = 150/9, D = √(75/9).
     * c = (4, 0, 4): median 4, max 4 → 1. Values {3,0,4,4,0,3}: m2 = 26/9, m4 = 1014/81,
     * β₂ = 1014/676 = 1.5. */
    real x[6] = {3, 0, 4, 4, 0, 3};
    difficulty_stats s;
    assert_int_equal(difficulty_stats_compute(x, 2, 3, &s), FQ_OK);
    assert_close(s.d, sqrt(75.0 / 9), 1e-12, "D");
    assert_close(s.max_median, 1, 1e-12, "max/median");
    assert_close(s.kurtosis, 1.5, 1e-12, "kurtosis");
    double m[3];
    assert_int_equal(difficulty_channel_norms(x, 2, 3, m), FQ_OK);
    assert_close(m[0], 5, 1e-12, "m0");
    assert_true(m[1] == 0);
}

static void test_stats_one_loud_column(void **state)
{
    (void)state;
    /* 4 × 5 of ones, column 0 = 10: m = (20, 2, 2, 2, 2), mean 5.6,
     * Σdev² = 14.4² + 4·3.6² = 259.2 → D = √64.8; c = (10, 1, 1, 1, 1) → ratio 10;
     * values: four 10s and sixteen 1s, mean 2.8, m2 = 12.96, m4 = 545.8752 → β₂ = 3.25. */
    real x[20];
    for (int i = 0; i < 20; i++)
        x[i] = i % 5 == 0 ? 10 : 1;
    difficulty_stats s;
    assert_int_equal(difficulty_stats_compute(x, 4, 5, &s), FQ_OK);
    assert_close(s.d, sqrt(64.8), 1e-12, "D");
    assert_close(s.max_median, 10, 1e-12, "max/median");
    assert_close(s.kurtosis, 3.25, 1e-9, "kurtosis");
    /* an even channel count takes the mean of the middle two: c = (8, 1, 2, 4) → 8/3 */
    real y[4] = {8, -1, 2, -4};
    assert_int_equal(difficulty_stats_compute(y, 1, 4, &s), FQ_OK);
    assert_close(s.max_median, 8.0 / 3, 1e-12, "even median");
}

static void test_stats_undefined_are_nan(void **state)
{
    (void)state;
    real z[6] = {0};
    difficulty_stats s;
    assert_int_equal(difficulty_stats_compute(z, 2, 3, &s), FQ_OK);
    assert_true(s.d == 0);
    assert_true(isnan(s.max_median));
    assert_true(isnan(s.kurtosis));
}

static void test_layer_error_hand_value(void **state)
{
    (void)state;
    /* X = [1, 0.5], W = [1, 1], 4 bits: X's step is 1/7 and 0.5/(1/7) = 3.5 rounds to the
     * even 4 → Q(X) = (1, 4/7); W is exact. XWᵀ = 1.5, Q(X)Q(W)ᵀ = 11/7, err = (1/14)².
     * Estimate: ‖W‖² = 2, Δ_t = 0.5/15; ‖X‖² = 1.25, Δ_o = 0 → 2·(1/30)²/12 = 1/5400. */
    real x[2] = {1, 0.5f}, w[2] = {1, 1};
    double err, est;
    assert_int_equal(difficulty_layer_error(x, 1, 2, w, 1, 4, &err, &est), FQ_OK);
    assert_close(err, 1.0 / 196, 1e-6, "error");
    assert_close(est, 1.0 / 5400, 1e-6, "estimate");
}

/* ---- float64 references, written without looking at the library's loops ---- */

static void ref_rtn(double *q, const double *x, int rows, int cols, int bits)
{
    double qmax = pow(2, bits - 1) - 1;
    for (int i = 0; i < rows; i++) {
        double amax = 0;
        for (int j = 0; j < cols; j++)
            amax = fmax(amax, fabs(x[i * cols + j]));
        for (int j = 0; j < cols; j++)
            q[i * cols + j] = amax > 0 ? nearbyint(x[i * cols + j] * qmax / amax) * amax / qmax : 0;
    }
}

static double ref_error(const double *x, const double *w, int rows, int n, int out, int bits)
{
    double *qx = malloc(sizeof(double) * rows * n), *qw = malloc(sizeof(double) * out * n);
    ref_rtn(qx, x, rows, n, bits);
    ref_rtn(qw, w, out, n, bits);
    double e = 0;
    for (int t = 0; t < rows; t++)
        for (int o = 0; o < out; o++) {
            double a = 0, b = 0;
            for (int j = 0; j < n; j++) {
                a += x[t * n + j] * w[o * n + j];
                b += qx[t * n + j] * qw[o * n + j];
            }
            e += (a - b) * (a - b);
        }
    free(qx);
    free(qw);
    return e;
}

static double ref_d(const double *x, int rows, int cols)
{
    double *m = calloc(cols, sizeof(double)), mean = 0, ss = 0;
    for (int j = 0; j < cols; j++) {
        for (int i = 0; i < rows; i++)
            m[j] += x[i * cols + j] * x[i * cols + j];
        m[j] = sqrt(m[j]);
        mean += m[j] / cols;
    }
    for (int j = 0; j < cols; j++)
        ss += (m[j] - mean) * (m[j] - mean);
    free(m);
    return sqrt(ss / (cols - 1));
}

/* Gaussian x [rows, n] with channel `loud` scaled by `gain` (as real and as double). */
static void outlier_matrix(real *x, double *xd, int rows, int n, int loud, double gain,
                           uint64_t seed)
{
    rng_state g;
    rng_seed(&g, seed);
    for (int i = 0; i < rows * n; i++) {
        double v = rng_normal(&g) * (i % n == loud ? gain : 1);
        x[i] = (real)v;
        xd[i] = x[i];
    }
}

static void test_layer_error_matches_f64_reference(void **state)
{
    (void)state;
    enum { R = 48, N = 24, O = 20 };
    real x[R * N], w[O * N];
    double xd[R * N], wd[O * N];
    outlier_matrix(x, xd, R, N, 7, 12, 11);
    outlier_matrix(w, wd, O, N, -1, 1, 12);
    for (int bits = 3; bits <= 8; bits += 5) {
        double err, est;
        assert_int_equal(difficulty_layer_error(x, R, N, w, O, bits, &err, &est), FQ_OK);
        assert_close(err, ref_error(xd, wd, R, N, O, bits), 1e-4, "error vs f64");
        assert_true(est > 0);
    }
}

static void test_rotation_is_orthogonal_and_spreads_outlier(void **state)
{
    (void)state;
    enum { R = 128, N = 64, O = 32 };
    static real x[R * N], w[O * N], rx[R * N], rw[O * N];
    static double xd[R * N], wd[O * N], rxd[R * N];
    outlier_matrix(x, xd, R, N, 5, 20, 1);
    outlier_matrix(w, wd, O, N, -1, 1, 2);
    random_hadamard q;
    assert_int_equal(random_hadamard_init(&q, N, 7), FQ_OK);
    assert_int_equal(q.is_random, 0);
    memcpy(rx, x, sizeof x);
    memcpy(rw, w, sizeof w);
    assert_int_equal(random_hadamard_apply(&q, rx, R), FQ_OK);
    assert_int_equal(random_hadamard_apply(&q, rw, O), FQ_OK);
    random_hadamard_free(&q);
    for (int i = 0; i < R * N; i++)
        rxd[i] = rx[i];
    /* X·Wᵀ is unchanged: check every product against the float64 one */
    for (int t = 0; t < R; t++)
        for (int o = 0; o < O; o++) {
            double a = 0, b = 0;
            for (int j = 0; j < N; j++) {
                a += xd[t * N + j] * wd[o * N + j];
                b += (double)rx[t * N + j] * rw[o * N + j];
            }
            if (fabs(a - b) > 1e-4 * (1 + fabs(a)))
                fail_msg("X·Wᵀ changed at (%d,%d): %g vs %g", t, o, a, b);
        }
    double before = ref_d(xd, R, N), after = ref_d(rxd, R, N);
    if (!(after < before / 5))
        fail_msg("rotation should flatten the outlier channel: D %g → %g", before, after);
}

static void test_analyze_variants(void **state)
{
    (void)state;
    enum { R = 96, N = 32, O = 40 };
    static real x[R * N], w[O * N];
    static double xd[R * N], wd[O * N];
    outlier_matrix(x, xd, R, N, 3, 25, 5);
    outlier_matrix(w, wd, O, N, -1, 1, 6);
    difficulty_report r;
    assert_int_equal(difficulty_analyze(x, R, N, w, O, 0.5, 4, 3, &r), FQ_OK);
    assert_close(r.act[DIFF_BEFORE].d, ref_d(xd, R, N), 1e-5, "D before");
    assert_close(r.weight[DIFF_BEFORE].d, ref_d(wd, O, N), 1e-5, "D(W) before");
    assert_close(r.error[DIFF_BEFORE], ref_error(xd, wd, R, N, O, 4), 1e-4, "error before");
    /* every transform lowers the activation difficulty and the 4-bit layer error here */
    for (int v = DIFF_SMOOTH; v < DIFF_VARIANTS; v++) {
        if (!(r.act[v].d < r.act[DIFF_BEFORE].d))
            fail_msg("%s did not lower D: %g vs %g", difficulty_variant_names[v], r.act[v].d,
                     r.act[DIFF_BEFORE].d);
        if (!(r.error[v] < r.error[DIFF_BEFORE]))
            fail_msg("%s did not lower the error: %g vs %g", difficulty_variant_names[v],
                     r.error[v], r.error[DIFF_BEFORE]);
    }
    /* smoothing moves the outlier into W: W's difficulty goes up */
    assert_true(r.weight[DIFF_SMOOTH].d > r.weight[DIFF_BEFORE].d);
    /* the estimate is the right order of magnitude for Gaussian-ish data */
    for (int v = 0; v < DIFF_VARIANTS; v++)
        if (!(r.estimate[v] > r.error[v] / 10 && r.estimate[v] < r.error[v] * 10))
            fail_msg("%s: estimate %g vs error %g", difficulty_variant_names[v], r.estimate[v],
                     r.error[v]);
    /* a size without a Hadamard matrix (6) is reported as a random rotation */
    assert_int_equal(difficulty_analyze(x, R, 6, w, O, 0.5, 4, 3, &r), FQ_OK);
    assert_int_equal(r.rotation_is_random, 1);
}

static void test_smooth_scales_hand_values(void **state)
{
    (void)state;
    /* max|X| per column (4, 1), max|W| per column (1, 4), α = 0.5: s = (2, 0.5) */
    real x[4] = {4, -1, -2, 0.5f}, w[4] = {1, 4, -0.5f, 2}, s[2];
    assert_int_equal(smooth_scales(s, x, 2, 2, w, 2, 0.5), FQ_OK);
    assert_close(s[0], 2, 1e-6, "s0");
    assert_close(s[1], 0.5, 1e-6, "s1");
    assert_int_equal(smooth_apply(x, 2, 2, w, 2, s), FQ_OK);
    assert_close(x[0], 2, 1e-6, "x/s");
    assert_close(w[1], 2, 1e-6, "w·s");
    /* a silent channel does not divide by zero */
    real z[4] = {0, 1, 0, 1};
    assert_int_equal(smooth_scales(s, z, 2, 2, z, 2, 0.5), FQ_OK);
    assert_true(isfinite(s[0]) && s[0] > 0);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    real x[4] = {1, 2, 3, 4}, s[2];
    difficulty_stats st;
    double e, t;
    assert_int_equal(difficulty_stats_compute(NULL, 2, 2, &st), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "difficulty:stats"));
    assert_int_equal(difficulty_stats_compute(x, 4, 1, &st), FQ_ERR);
    assert_int_equal(difficulty_layer_error(x, 2, 2, x, 2, 1, &e, &t), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "bits"));
    assert_int_equal(smooth_scales(s, x, 2, 2, x, 2, 1.5), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "alpha"));
    random_hadamard q;
    assert_int_equal(random_hadamard_init(&q, 0, 1), FQ_ERR);
    assert_int_equal(random_hadamard_apply(&q, x, 1), FQ_ERR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats_hand_values),
        cmocka_unit_test(test_stats_one_loud_column),
        cmocka_unit_test(test_stats_undefined_are_nan),
        cmocka_unit_test(test_layer_error_hand_value),
        cmocka_unit_test(test_layer_error_matches_f64_reference),
        cmocka_unit_test(test_rotation_is_orthogonal_and_spreads_outlier),
        cmocka_unit_test(test_analyze_variants),
        cmocka_unit_test(test_smooth_scales_hand_values),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
