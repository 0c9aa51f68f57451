/* test_kron.c — the factor split rule of ALGORITHM §3.2: the table values, the
 * n ≡ 2 (mod 4) fallback, and an independent brute-force restatement of the rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "error.h"
#include "kron.h"

static void test_split_table(void **state)
{
    (void)state;
    static const int table[][3] = {
        {64, 8, 8},       {172, 2, 86},     {384, 16, 24},    {1024, 32, 32},
        {4096, 64, 64},   {5120, 64, 80},   {8192, 64, 128},  {11008, 86, 128},
        {13824, 108, 128}, {14336, 112, 128}, {28672, 128, 224}, {12, 2, 6},
        {7, 1, 7},        {6, 2, 3},        {2752, 32, 86},   {3584, 56, 64},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        int n1 = -1, n2 = -1, fb = -1;
        assert_int_equal(kron_split(table[i][0], &n1, &n2, &fb), 0);
        if (n1 != table[i][1] || n2 != table[i][2])
            fail_msg("split(%d) = (%d, %d), expected (%d, %d)", table[i][0], n1, n2,
                     table[i][1], table[i][2]);
        assert_int_equal(fb, table[i][0] % 4 == 2);
    }
}

/* For every n up to 3000: n1·n2 = n; if n ≢ 2 (mod 4), (n1, n2) = (a − b, a + b) with the
 * smallest a ≥ ⌈√n⌉ whose a² − n is a square (found here by a plain search over a); else
 * n1 is the largest divisor ≤ √n. */
static void test_split_rule_brute_force(void **state)
{
    (void)state;
    for (int n = 1; n <= 3000; n++) {
        int n1, n2, fb;
        assert_int_equal(kron_split(n, &n1, &n2, &fb), 0);
        assert_int_equal(n1 * n2, n);
        assert_true(n1 <= n2);
        if (n % 4 == 2) {
            int best = 1;
            for (int d = 1; d * d <= n; d++)
                if (n % d == 0)
                    best = d;
            assert_int_equal(n1, best);
            assert_int_equal(fb, 1);
            continue;
        }
        assert_int_equal(fb, 0);
        int a0 = 0;
        while (a0 * a0 < n)
            a0++;
        for (int a = a0;; a++) {
            int d = a * a - n, b = 0;
            while ((b + 1) * (b + 1) <= d)
                b++;
            if (b * b == d) {
                assert_int_equal(n1, a - b);
                assert_int_equal(n2, a + b);
                break;
            }
        }
    }
}

static void test_split_rejects_bad_size(void **state)
{
    (void)state;
    int n1, n2;
    assert_int_equal(kron_split(0, &n1, &n2, NULL), -1);
    assert_non_null(strstr(fq_errmsg(), "kron_split: size 0"));
    assert_int_equal(kron_split(10, &n1, &n2, NULL), 0); /* fallback flag is optional */
    assert_int_equal(n1, 2);
    assert_int_equal(n2, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_table),
        cmocka_unit_test(test_split_rule_brute_force),
        cmocka_unit_test(test_split_rejects_bad_size),
    };
    return cmocka_run_group_tests_name("kron", tests, NULL, NULL);
}
