/* test_adamw.c — AdamW against hand-computed steps (ALGORITHM §4.1), the cosine schedule's
 * end points and warm-up, determinism, and refusal of non-finite gradients. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "error.h"
#include "worker/adamw.h"

static void test_two_steps_by_hand(void **state)
{
    (void)state;
    float p1[1] = {1.0f}, g1[1] = {0.5f}, m1[1] = {0}, v1[1] = {0};
    float p2[1] = {-2.0f}, g2[1] = {-1.0f}, m2[1] = {0}, v2[1] = {0};
    adamw_group groups[2] = {{p1, g1, m1, v1, 1, 0.1f, "a"}, {p2, g2, m2, v2, 1, 0.01f, "b"}};
    adamw_config cfg = adamw_defaults();
    float lr[2] = {0.1f, 0.01f};
    assert_int_equal(adamw_step(groups, 2, &cfg, 1, lr), 0);
    /* Step 1, by hand. Group a: θ = 1·(1 − 0.1·0.01) = 0.999; m = 0.05; v = 0.00025;
     * m/(1−0.9) = 0.5; √v/√(1−0.999) = 0.5; θ = 0.999 − 0.1·0.5/(0.5 + 1e-8) = 0.899000002.
     * Group b: θ = −2·(1 − 1e-4) = −1.9998; m̂ = −1, √v̂ = 1: θ = −1.9998 + 0.01 = −1.9898. */
    assert_true(fabs(p1[0] - 0.899000002) < 1e-6);
    assert_true(fabs(p2[0] - -1.9898) < 1e-6);
    assert_true(fabs(m1[0] - 0.05) < 1e-8 && fabs(v1[0] - 0.00025) < 1e-10);
    /* Step 2 for group a with g = −0.25, the §4.1 formulas written out in double. */
    g1[0] = -0.25f;
    g2[0] = 0.0f;
    assert_int_equal(adamw_step(groups, 2, &cfg, 2, lr), 0);
    double th = 0.899000002 * (1 - 0.1 * 0.01);
    double m = 0.9 * 0.05 + 0.1 * -0.25, v = 0.999 * 0.00025 + 0.001 * 0.0625;
    th -= (0.1 / (1 - 0.81)) * m / (sqrt(v) / sqrt(1 - 0.998001) + 1e-8);
    assert_true(fabs(p1[0] - th) < 1e-6);
    /* A zero gradient still decays the parameter and moves it by the momentum. */
    assert_true(p2[0] > -1.9898f);
}

static void test_deterministic(void **state)
{
    (void)state;
    float a[64], b[64], g[64], ma[64] = {0}, va[64] = {0}, mb[64] = {0}, vb[64] = {0};
    for (int i = 0; i < 64; i++) {
        a[i] = b[i] = sinf((float)i);
        g[i] = cosf(3.0f * (float)i);
    }
    adamw_group ga = {a, g, ma, va, 64, 5e-3f, "x"}, gb = {b, g, mb, vb, 64, 5e-3f, "x"};
    adamw_config cfg = adamw_defaults();
    for (long k = 1; k <= 20; k++) {
        float lr = lr_cosine(5e-3f, 5e-6f, k - 1, 20, 0, 0);
        assert_int_equal(adamw_step(&ga, 1, &cfg, k, &lr), 0);
        assert_int_equal(adamw_step(&gb, 1, &cfg, k, &lr), 0);
    }
    assert_memory_equal(a, b, sizeof a);
}

static void test_cosine_schedule(void **state)
{
    (void)state;
    const float lr0 = 5e-3f, lmin = 5e-6f;
    assert_true(fabsf(lr_cosine(lr0, lmin, 0, 480, 0, 0) - lr0) < 1e-9f);
    assert_true(fabsf(lr_cosine(lr0, lmin, 480, 480, 0, 0) - lmin) < 1e-10f);
    assert_true(fabsf(lr_cosine(lr0, lmin, 240, 480, 0, 0) - (lr0 + lmin) / 2) < 1e-9f);
    assert_true(fabsf(lr_cosine(lr0, lmin, 9999, 480, 0, 0) - lmin) < 1e-10f); /* clamped */
    /* warm-up: 1% at t = 0, the plain cosine from t = 16 on */
    assert_true(fabsf(lr_cosine(lr0, lmin, 0, 480, 16, 0.01f) - 0.01f * lr0) < 1e-10f);
    double c16 = 5e-6 + (5e-3 - 5e-6) * (1 + cos(3.14159265358979 * 16 / 480)) / 2;
    assert_true(fabs(lr_cosine(lr0, lmin, 16, 480, 16, 0.01f) - c16) < 1e-9);
    double c8 = 5e-6 + (5e-3 - 5e-6) * (1 + cos(3.14159265358979 * 8 / 480)) / 2;
    assert_true(fabs(lr_cosine(lr0, lmin, 8, 480, 16, 0.01f) - c8 * (0.01 + 0.99 * 0.5)) < 1e-9);
}

static void test_refuses_nonfinite(void **state)
{
    (void)state;
    float p[3] = {1, 2, 3}, g[3] = {0.1f, NAN, 0.3f}, m[3] = {0}, v[3] = {0};
    adamw_group grp = {p, g, m, v, 3, 0.1f, "lwc_q"};
    adamw_config cfg = adamw_defaults();
    float lr = 0.1f;
    assert_int_equal(adamw_step(&grp, 1, &cfg, 1, &lr), -1);
    assert_non_null(strstr(fq_errmsg(), "lwc_q element 1"));
    assert_true(p[0] == 1 && p[2] == 3 && m[0] == 0); /* nothing touched */
    g[1] = 0;
    assert_int_equal(adamw_step(&grp, 1, &cfg, 0, &lr), -1);
    assert_non_null(strstr(fq_errmsg(), "step 0"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_steps_by_hand),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_cosine_schedule),
        cmocka_unit_test(test_refuses_nonfinite),
    };
    return cmocka_run_group_tests_name("adamw", tests, NULL, NULL);
}
