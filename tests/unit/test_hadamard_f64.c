/* test_hadamard_f64.c — Hadamard matrices in float64: H Hᵀ = n·I for the ±1 matrix
 * (i.e. the normalised one is orthogonal with entries ±1/√n) for every size flatq claims,
 * the K·2^m split of the LLaMA shapes, the random-orthogonal fallback and its flag, and the
 * fast row application against a dense multiply. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "hadamard.h"
#include "unit/fd_util.h"

/* max |H Hᵀ − I| with plain loops; *pm1 = 1 when every entry is ±1/√n. */
static double orth_check(const real *H, int n, int *pm1)
{
    double worst = 0, e = 1 / sqrt((double)n);
    *pm1 = 1;
    for (long i = 0; i < (long)n * n; i++)
        if (fabs(fabs((double)H[i]) - e) > 1e-14)
            *pm1 = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int r = 0; r < n; r++)
                s += (double)H[(long)i * n + r] * H[(long)j * n + r];
            worst = fmax(worst, fabs(s - (i == j)));
        }
    return worst;
}

static void test_claimed_sizes_are_hadamard(void **state)
{
    (void)state;
    /* Sylvester, Paley I (12, 20, 24, 44, 48, 60, 68, 72, 84, 108), Paley II (28, 36, 76),
     * and K·2^m products used by LLaMA shapes: 40 = 20·2, 384 = 12·32, 640 = 20·32,
     * 448 = 28·16, 864 = 108·8. */
    const int sizes[] = {1, 2, 4, 8, 64, 128, 12, 20, 24, 28, 36, 40, 44, 48, 60, 68,
                         72, 76, 84, 108, 384, 448, 640, 864};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int n = sizes[i], is_random = -1, pm1;
        real *H = alloc_real((long)n * n);
        assert_int_equal(hadamard_matrix(n, H, 0, &is_random), 0);
        assert_int_equal(is_random, 0);
        double err = orth_check(H, n, &pm1);
        if (err > 1e-12 || !pm1)
            fail_msg("n = %d: |HHᵀ − I| = %g, entries ±1/√n: %d", n, err, pm1);
        free(H);
    }
}

static void test_split_of_llama_shapes(void **state)
{
    (void)state;
    static const int table[][4] = {
        /* n, K, 2^m, random */
        {64, 1, 64, 0},      {4096, 1, 4096, 0}, {5120, 20, 256, 0},  {8192, 1, 8192, 0},
        {384, 12, 32, 0},    {1024, 1, 1024, 0}, {13824, 108, 128, 0}, {14336, 28, 512, 0},
        {28672, 28, 1024, 0}, {40, 20, 2, 0},    {172, 172, 1, 1},    {11008, 172, 64, 1},
        {6, 6, 1, 1},        {3, 3, 1, 1},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        int k, p, r;
        assert_int_equal(hadamard_split(table[i][0], &k, &p, &r), 0);
        if (k != table[i][1] || p != table[i][2] || r != table[i][3])
            fail_msg("split(%d) = (%d, %d, random %d)", table[i][0], k, p, r);
    }
}

static void test_fallback_is_seeded_orthogonal(void **state)
{
    (void)state;
    const int sizes[] = {6, 172};
    for (int s = 0; s < 2; s++) {
        int n = sizes[s], r1 = 0, r2 = 0, pm1;
        real *a = alloc_real(n * n), *b = alloc_real(n * n);
        assert_int_equal(hadamard_matrix(n, a, 9, &r1), 0);
        assert_int_equal(hadamard_matrix(n, b, 9, &r2), 0);
        assert_int_equal(r1, 1);
        assert_true(orth_check(a, n, &pm1) < 1e-12);
        assert_int_equal(pm1, 0);
        assert_true(max_abs_diff(a, b, n * n) == 0);
        assert_int_equal(hadamard_matrix(n, b, 10, &r2), 0);
        assert_true(max_abs_diff(a, b, n * n) > 0.01);
        free(a), free(b);
    }
}

static void test_fast_apply_matches_dense(void **state)
{
    (void)state;
    const int sizes[] = {1, 16, 12, 40, 384, 172, 344, 448};
    rng_state rng;
    rng_seed(&rng, 3);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int n = sizes[i], rows = 3, k, p, r, r2;
        assert_int_equal(hadamard_split(n, &k, &p, &r), 0);
        real *H = alloc_real((long)n * n), *hk = alloc_real(k * k);
        real *x = alloc_real(rows * n), *y = alloc_real(rows * n);
        real *work = alloc_real(hadamard_apply_work(rows, n));
        assert_int_equal(hadamard_matrix(n, H, 4, &r2), 0);
        assert_int_equal(hadamard_k_matrix(hk, k, 4, &r2), 0);
        assert_int_equal(r2, r);
        fill_normal(x, rows * n, &rng, 1);
        for (int t = 0; t < rows; t++)
            for (int c = 0; c < n; c++) {
                double s = 0;
                for (int j = 0; j < n; j++)
                    s += (double)x[t * n + j] * H[(long)j * n + c];
                y[t * n + c] = (real)s;
            }
        assert_int_equal(hadamard_apply_rows(x, rows, n, k, hk, work), 0);
        if (max_abs_diff(x, y, rows * n) > 1e-12)
            fail_msg("n = %d: fast apply differs from dense by %g", n,
                     max_abs_diff(x, y, rows * n));
        free(H), free(hk), free(x), free(y), free(work);
    }
    real x[6], hk[1] = {1}, w[18];
    assert_int_equal(hadamard_apply_rows(x, 1, 6, 1, hk, w), -1); /* 6/1 not a power of 2 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_claimed_sizes_are_hadamard),
        cmocka_unit_test(test_split_of_llama_shapes),
        cmocka_unit_test(test_fallback_is_seeded_orthogonal),
        cmocka_unit_test(test_fast_apply_matches_dense),
    };
    return cmocka_run_group_tests_name("hadamard_f64", tests, NULL, NULL);
}
