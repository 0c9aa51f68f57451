/* test_quantizer.c — the fp32 fake quantizers on hand-computed rows, including exact
 * rounding ties (0.5, 1.5, 2.5, −2.5, 4.5 in grid units must go to the even neighbour),
 * clipping, per-block scales, the zero-row branches, LWC and argument checks. Clip logits
 * of 40 give κ = σ(40) = 1 exactly in fp32, and 0 gives κ = 0.5 exactly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "error.h"
#include "quantizer.h"

#define K1 40.0f /* logit with σ = 1 in fp32 */

static void expect_row(const float *got, const float *want, int n)
{
    for (int j = 0; j < n; j++)
        if (got[j] != want[j])
            fail_msg("element %d: got %g, expected %g", j, got[j], want[j]);
}

static void test_sym_ties_round_to_even(void **state)
{
    (void)state;
    /* max 7, min −3.5, κ = 1: t = 7, s = 1; roundf would give 1, 3, −3, 5, −1. */
    float u[8] = {7, 0.5f, 1.5f, 2.5f, -2.5f, -0.5f, -3.5f, 4.5f};
    float want[8] = {7, 0, 2, 2, -2, 0, -4, 4};
    float out[8], s;
    assert_int_equal(quant_act_sym_fwd(out, &s, u, 1, 8, 1, 4, K1, K1), 0);
    assert_true(s == 1.0f);
    expect_row(out, want, 8);
}

static void test_sym_clipping_and_clamp(void **state)
{
    (void)state;
    /* κ = 0.5 both sides: m = 7, l = −4.5, s = 1; 14 → 7 and −9 → −8 by the clamp. */
    float u[5] = {14, 3, -1, -9, 5.5f}, want[5] = {7, 3, -1, -8, 6}, out[5], s;
    assert_int_equal(quant_act_sym_fwd(out, &s, u, 1, 5, 1, 4, 0, 0), 0);
    assert_true(s == 1.0f);
    expect_row(out, want, 5);
    /* 3 bits: grid [−4, 3], maxq 3; max 6, κ = 1 → s = 2: 6 → 3, 5 → 2.5 → 2,
     * −5 → −2.5 → −2, 1 → 0.5 → 0 (ties to even). */
    float u3[4] = {6, 5, -5, 1}, want3[4] = {6, 4, -4, 0}, out3[4];
    assert_int_equal(quant_act_sym_fwd(out3, &s, u3, 1, 4, 1, 3, K1, K1), 0);
    assert_true(s == 2.0f);
    expect_row(out3, want3, 4);
}

static void test_sym_blocks_and_zero_rows(void **state)
{
    (void)state;
    /* two rows of 8, each split into 2 blocks of 4 with their own scale */
    float u[16] = {7, 0.5f, 1.5f, 2.5f, -14, 1, 3, 5, 0, 0, 0, 0, 3.5f, -7, 1, 0};
    float want[16] = {7, 0, 2, 2, -14, 0, 4, 4, 0, 0, 0, 0, 4, -7, 1, 0};
    float out[16], s[4];
    assert_int_equal(quant_act_sym_fwd(out, s, u, 2, 8, 2, 4, K1, K1), 0);
    assert_true(s[0] == 1.0f && s[1] == 2.0f && s[2] == 1.0f && s[3] == 1.0f);
    expect_row(out, want, 16);
    /* a zero block takes the s = 1 branch and gives no gradient to the clip logits */
    float g[16], gin[16], gc[2] = {0.25f, 0.5f};
    for (int j = 0; j < 16; j++)
        g[j] = (float)(j + 1);
    assert_int_equal(quant_act_sym_bwd(gin, &gc[0], &gc[1], g, u + 8, s + 2, 1, 4, 1, 4, K1, K1), 0);
    assert_true(gc[0] == 0.25f && gc[1] == 0.5f);
    expect_row(gin, g, 4);
    /* blocks of a row behave exactly like separate rows, backward included */
    float gb[16], gr[16], cb[2] = {0, 0}, cr[2] = {0, 0}, sr[4], outr[16];
    assert_int_equal(quant_act_sym_fwd(outr, sr, u, 4, 4, 1, 4, 1.0f, 2.0f), 0);
    assert_int_equal(quant_act_sym_fwd(out, s, u, 2, 8, 2, 4, 1.0f, 2.0f), 0);
    assert_memory_equal(out, outr, sizeof out);
    assert_int_equal(quant_act_sym_bwd(gb, &cb[0], &cb[1], g, u, s, 2, 8, 2, 4, 1.0f, 2.0f), 0);
    assert_int_equal(quant_act_sym_bwd(gr, &cr[0], &cr[1], g, u, sr, 4, 4, 1, 4, 1.0f, 2.0f), 0);
    assert_memory_equal(gb, gr, sizeof gb);
    assert_true(cb[0] == cr[0] && cb[1] == cr[1] && cb[0] != 0);
    /* a bad saved scale is refused */
    s[0] = 0;
    assert_int_equal(quant_act_sym_bwd(gb, &cb[0], &cb[1], g, u, s, 2, 8, 2, 4, 1.0f, 2.0f), -1);
    assert_non_null(strstr(fq_errmsg(), "scale[0]"));
}

static void test_kv_asym(void **state)
{
    (void)state;
    /* m = 12.5, l = −2.5: s = 1, z = rne(2.5) = 2; −2.5 → rne(−2.5) + 2 = 0 → −2. */
    float u[5] = {-2.5f, 12.5f, 0.5f, 1.5f, 3.5f}, want[5] = {-2, 12, 0, 2, 4};
    float out[5], s, z;
    assert_int_equal(quant_kv_asym_fwd(out, &s, &z, u, 1, 5, 4, K1, K1), 0);
    assert_true(s == 1.0f && z == 2.0f);
    expect_row(out, want, 5);
    /* all-zero row: l = −1, m = 1, s = 2/15. In fp32 2/15 rounds up, so −l/s is
     * 7.4999996 and z = 7 (the reference computes the same in fp32); output stays 0. */
    float zr[4] = {0, 0, 0, 0}, oz[4];
    assert_int_equal(quant_kv_asym_fwd(oz, &s, &z, zr, 1, 4, 4, K1, K1), 0);
    assert_true(z == 7.0f);
    assert_true(fabsf(s - 2.0f / 15) < 1e-7f);
    expect_row(oz, zr, 4);
    /* clipping κ = 0.5 on the max side: m = 7.5, l = −7.5, s = 1, z = rne(7.5) = 8;
     * 15 → rne(15) + 8 = 23 → 15 → 7 */
    float uc[3] = {15, -7.5f, 0}, wc[3] = {7, -8, 0}, oc[3];
    assert_int_equal(quant_kv_asym_fwd(oc, &s, &z, uc, 1, 3, 4, 0, K1), 0);
    assert_true(s == 1.0f && z == 8.0f);
    expect_row(oc, wc, 3);
}

static void test_weight_lwc(void **state)
{
    (void)state;
    /* row 0: no clipping (σ = 1): s = 1, ties to even; row 1: σ(a) = 0.5 clips 14 and 9
     * to 7; row 2: all zero → range floored at 1e-5, output 0. */
    float w[12] = {7, -3.5f, 2.5f, 0.5f, 14, 2.5f, -3, 9, 0, 0, 0, 0};
    float a[3] = {K1, 0, K1}, b[3] = {K1, K1, K1};
    float want[12] = {7, -4, 2, 0, 7, 2, -3, 7, 0, 0, 0, 0}, out[12], s[3];
    assert_int_equal(quant_weight_lwc_fwd(out, s, w, 3, 4, 4, a, b), 0);
    assert_true(s[0] == 1.0f && s[1] == 1.0f);
    assert_true(fabsf(s[2] - 1e-5f / 7) < 1e-12f);
    expect_row(out, want, 12);
    /* the floored row passes no gradient to its logits */
    float g[12] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, gw[12], ga[3] = {0}, gb[3] = {0};
    assert_int_equal(quant_weight_lwc_bwd(gw, ga, gb, g, w, s, 3, 4, 4, a, b), 0);
    assert_true(ga[2] == 0 && gb[2] == 0);
    assert_int_equal(quant_weight_lwc_bwd(NULL, ga, NULL, g, w, s, 3, 4, 4, a, b), 0);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    float u[4] = {1, 2, 3, 4}, out[4], s[2];
    assert_int_equal(quant_act_sym_fwd(out, s, u, 1, 4, 1, 9, K1, K1), -1);
    assert_non_null(strstr(fq_errmsg(), "bits = 9"));
    assert_int_equal(quant_act_sym_fwd(out, s, u, 1, 4, 1, 1, K1, K1), -1);
    assert_int_equal(quant_act_sym_fwd(out, s, u, 1, 4, 3, 4, K1, K1), -1);
    assert_non_null(strstr(fq_errmsg(), "blocks = 3"));
    assert_int_equal(quant_act_sym_fwd(out, s, u, 1, 4, 1, 4, NAN, K1), -1);
    assert_non_null(strstr(fq_errmsg(), "clip logits"));
    u[2] = INFINITY;
    assert_int_equal(quant_act_sym_fwd(out, s, u, 1, 4, 1, 4, K1, K1), -1);
    assert_non_null(strstr(fq_errmsg(), "non-finite"));
    float a = NAN, b = 0;
    assert_int_equal(quant_weight_lwc_fwd(out, s, u, 1, 4, 4, &a, &b), -1);
    assert_non_null(strstr(fq_errmsg(), "row 0"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sym_ties_round_to_even),
        cmocka_unit_test(test_sym_clipping_and_clamp),
        cmocka_unit_test(test_sym_blocks_and_zero_rows),
        cmocka_unit_test(test_kv_asym),
        cmocka_unit_test(test_weight_lwc),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests_name("quantizer", tests, NULL, NULL);
}
