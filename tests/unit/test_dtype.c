/* test_dtype.c — bf16/fp16 conversions round to nearest even, as PyTorch does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "dtype.h"

static void test_bf16_round_trip_and_ties(void **state)
{
    (void)state;
    assert_int_equal(fq_f32_to_bf16(1.0f), 0x3f80);
    /* 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (down). */
    assert_int_equal(fq_f32_to_bf16(1.00390625f), 0x3f80);
    /* 1 + 3*2^-8 is halfway between 0x3f81 and 0x3f82: ties to even (up). */
    assert_int_equal(fq_f32_to_bf16(1.01171875f), 0x3f82);
    assert_true(fq_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(isnan(fq_bf16_to_f32(fq_f32_to_bf16(NAN))));
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = fq_bf16_to_f32((uint16_t)h);
        if (isnan(f))
            continue;
        assert_int_equal(fq_f32_to_bf16(f), h);
    }
}

static void test_f16_all_values_round_trip(void **state)
{
    (void)state;
    assert_true(fq_f16_to_f32(0x3c00) == 1.0f);
    assert_true(fq_f16_to_f32(0x0001) == 5.9604644775390625e-8f);
    assert_true(fq_f16_to_f32(0x7bff) == 65504.0f);
    assert_int_equal(fq_f32_to_f16(65520.0f), 0x7c00); /* rounds to inf */
    assert_int_equal(fq_f32_to_f16(65519.0f), 0x7bff);
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = fq_f16_to_f32((uint16_t)h);
        if (isnan(f))
            continue;
        assert_int_equal(fq_f32_to_f16(f), h);
    }
    /* halfway between 1 and 1+2^-10 ties to even (1). */
    assert_int_equal(fq_f32_to_f16(1.0f + 0.00048828125f), 0x3c00);
}

static void test_dtype_names(void **state)
{
    (void)state;
    assert_int_equal(fq_dtype_parse("BF16"), FQ_BF16);
    assert_int_equal(fq_dtype_parse("bf16"), FQ_DTYPE_INVALID);
    assert_int_equal(fq_dtype_size(FQ_F16), 2);
    assert_string_equal(fq_dtype_name(FQ_U8), "U8");
    float out[2];
    uint8_t raw[4] = {0, 0, 0, 0};
    assert_int_equal(fq_convert_to_f32(raw, FQ_I32, 1, out), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_round_trip_and_ties),
        cmocka_unit_test(test_f16_all_values_round_trip),
        cmocka_unit_test(test_dtype_names),
    };
    return cmocka_run_group_tests_name("dtype", tests, NULL, NULL);
}
