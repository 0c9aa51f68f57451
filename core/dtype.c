/* dtype.c — dtype table and fp32 <-> bf16/fp16 conversions (round to nearest even). */
#include "dtype.h"
#include "error.h"

#include <math.h>
#include <string.h>

static const struct { fq_dtype t; const char *name; size_t size; } fq_dtypes[] = {
    {FQ_F64, "F64", 8}, {FQ_F32, "F32", 4}, {FQ_F16, "F16", 2}, {FQ_BF16, "BF16", 2},
    {FQ_I64, "I64", 8}, {FQ_I32, "I32", 4}, {FQ_I16, "I16", 2}, {FQ_I8, "I8", 1},
    {FQ_U8, "U8", 1},   {FQ_BOOL, "BOOL", 1},
};
#define FQ_NDTYPES (sizeof fq_dtypes / sizeof fq_dtypes[0])

size_t fq_dtype_size(fq_dtype t)
{
    for (size_t i = 0; i < FQ_NDTYPES; i++)
        if (fq_dtypes[i].t == t)
            return fq_dtypes[i].size;
    return 0;
}

const char *fq_dtype_name(fq_dtype t)
{
    for (size_t i = 0; i < FQ_NDTYPES; i++)
        if (fq_dtypes[i].t == t)
            return fq_dtypes[i].name;
    return "INVALID";
}

fq_dtype fq_dtype_parse(const char *s)
{
    for (size_t i = 0; s && i < FQ_NDTYPES; i++)
        if (strcmp(fq_dtypes[i].name, s) == 0)
            return fq_dtypes[i].t;
    return FQ_DTYPE_INVALID;
}

static uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float fq_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t fq_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a quiet NaN */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float fq_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0) {
        /* zero or subnormal: value = man * 2^-24 exactly representable in fp32 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (exp == 31)
        return bits_f32(sign | 0x7f800000u | (man << 13));
    return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t fq_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return sign | 0x7e00u;
    if (a >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return sign | 0x7c00u;
    if (a < 0x38800000u) { /* below 2^-14: subnormal or zero in fp16 */
        float v = bits_f32(a) * 16777216.0f; /* scale by 2^24, exact */
        return sign | (uint16_t)nearbyintf(v);
    }
    uint32_t mant_rounded = a + 0xfffu + ((a >> 13) & 1u);
    return sign | (uint16_t)((mant_rounded - 0x38000000u) >> 13);
}

int fq_convert_to_f32(const void *src, fq_dtype t, size_t n, float *dst)
{
    const unsigned char *p = src;
    switch (t) {
    case FQ_F32: memmove(dst, src, n * 4); return FQ_OK;
    case FQ_F64:
        for (size_t i = 0; i < n; i++) { double d; memcpy(&d, p + 8 * i, 8); dst[i] = (float)d; }
        return FQ_OK;
    case FQ_BF16:
        for (size_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, p + 2 * i, 2); dst[i] = fq_bf16_to_f32(h); }
        return FQ_OK;
    case FQ_F16:
        for (size_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, p + 2 * i, 2); dst[i] = fq_f16_to_f32(h); }
        return FQ_OK;
    default:
        return fq_error("cannot convert dtype %s to F32 (expected F64, F32, F16 or BF16)",
                        fq_dtype_name(t));
    }
}

int fq_convert_from_f32(const float *src, size_t n, fq_dtype t, void *dst)
{
    unsigned char *p = dst;
    switch (t) {
    case FQ_F32: memmove(dst, src, n * 4); return FQ_OK;
    case FQ_BF16:
        for (size_t i = 0; i < n; i++) { uint16_t h = fq_f32_to_bf16(src[i]); memcpy(p + 2 * i, &h, 2); }
        return FQ_OK;
    case FQ_F16:
        for (size_t i = 0; i < n; i++) { uint16_t h = fq_f32_to_f16(src[i]); memcpy(p + 2 * i, &h, 2); }
        return FQ_OK;
    default:
        return fq_error("cannot convert F32 to dtype %s (expected F32, F16 or BF16)",
                        fq_dtype_name(t));
    }
}
