/* test_real_f64.c — the float64 build really computes in double (the FD tests rely on it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "real.h"

static void test_real_is_double(void **state)
{
    (void)state;
    assert_int_equal(sizeof(real), sizeof(double));
    /* 1 + 2^-40 survives a double GEMM, not a float one. */
    real a[1] = {1.0 + 0x1p-40}, b[1] = {1.0}, c[1] = {0};
    real_gemm(0, 0, 1, 1, 1, 1.0, a, 1, b, 1, 0.0, c, 1);
    assert_true(c[0] - 1.0 > 0.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_real_is_double)};
    return cmocka_run_group_tests_name("real_f64", tests, NULL, NULL);
}
