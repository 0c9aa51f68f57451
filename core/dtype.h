/* dtype.h — element types of checkpoint tensors and conversions to fp32.
 *
 * flatq computes in fp32 (float64 in tests); checkpoints arrive as bf16/fp16/fp32 and
 * leave with packed int4 (U8), fp32 scales and bf16/fp16 copies. Conversions round to
 * nearest-even, as PyTorch does, so bf16 written by flatq equals torch's .bfloat16().
 */
#ifndef FQ_DTYPE_H
#define FQ_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    FQ_DTYPE_INVALID = 0,
    FQ_F64, FQ_F32, FQ_F16, FQ_BF16,
    FQ_I64, FQ_I32, FQ_I16, FQ_I8, FQ_U8, FQ_BOOL,
} fq_dtype;

/* Bytes per element; 0 for FQ_DTYPE_INVALID. */
size_t fq_dtype_size(fq_dtype t);
/* Safetensors spelling ("F32", "BF16", ...). */
const char *fq_dtype_name(fq_dtype t);
/* Parse a safetensors dtype string; FQ_DTYPE_INVALID if unknown. */
fq_dtype fq_dtype_parse(const char *s);

float fq_bf16_to_f32(uint16_t h);
uint16_t fq_f32_to_bf16(float f);
float fq_f16_to_f32(uint16_t h);
uint16_t fq_f32_to_f16(float f);

/* Widen n elements of a floating type (F64/F32/F16/BF16) to fp32. Unaligned source ok. */
int fq_convert_to_f32(const void *src, fq_dtype t, size_t n, float *dst);
/* Narrow n fp32 values to F32/F16/BF16 (round to nearest even). */
int fq_convert_from_f32(const float *src, size_t n, fq_dtype t, void *dst);

#endif
