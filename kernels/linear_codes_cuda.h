/* linear_codes_cuda.h — the fake-quantized linears as bf16 GEMMs on the integer codes
 * (kernels/linear_codes.cu).
 *
 * A quantized operand is a per-row scale times a small integer (|code| ≤ 2^(bits−1)), and
 * bf16 holds such integers exactly. So Y = X̂·Ŵᵀ = diag(s_x)·(Q_x·Q_wᵀ)·diag(s_w) is a bf16
 * tensor-core GEMM on the codes with fp32 accumulation — exact while every partial sum
 * stays below 2^24 — and the scales applied afterwards in fp32: the forward linears come
 * out as accurate as an fp32 GEMM at bf16 speed. The backward's gradient operand is not
 * a code: it is scaled by the other operand's scales and rounded to bf16 (relative 2^-9
 * per element; its measured effect is in bench/NOTES.md "GPU layer step").
 * bf16 buffers are uint16_t here so plain C can hold them.
 */
#ifndef FQ_LINEAR_CODES_CUDA_H
#define FQ_LINEAR_CODES_CUDA_H

#include <stdint.h>

#include "kernels/flatq_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* q[r, j] = bf16(rint(xh[r, j] / scale[r])) (0 where scale[r] is 0): the codes of a tensor
 * that a per-row symmetric quantizer wrote as scale · code; the same codes as int8 in q8
 * too when q8 is not NULL (|code| <= 128 for bits <= 8), from the same pass. */
int codes_bf16_cuda(fq_cuda_ctx *ctx, uint16_t *q, int8_t *q8, const float *xh,
                    const float *scale, long rows, int cols);
/* out[r, j] = bf16(g[r, j] · rs[r] · cs[j]); rs or cs may be NULL (factor 1). */
int scaled_bf16_cuda(fq_cuda_ctx *ctx, uint16_t *out, const float *g, const float *rs,
                     const float *cs, long rows, int cols);
/* y[r, j] = rs[r] · cs[j] · acc[r, j] (+ y[r, j] when accumulate); acc may be y. */
int codes_epilogue_cuda(fq_cuda_ctx *ctx, float *y, const float *acc, const float *rs,
                        const float *cs, long rows, int cols, int accumulate);
/* The same from int32 sums (an int8 GEMM's); acc may alias y. Same bits as the float form
 * for sums below 2^24. */
int codes_epilogue_i32_cuda(fq_cuda_ctx *ctx, float *y, const int32_t *acc, const float *rs,
                            const float *cs, long rows, int cols, int accumulate);
/* Row-major C[M,N] = A·Bᵀ with int8 A [M,K], B [N,K] on the integer tensor cores, exact
 * int32 sums (K and the leading dimensions multiples of 4): the forward linears on codes
 * at twice the bf16 rate. */
int fq_gemm_i8_cuda(fq_cuda_ctx *ctx, int m, int n, int k, const int8_t *a, int lda,
                    const int8_t *b, int ldb, int32_t *c, int ldc);
/* Row-major C[M,N] = op(A)·op(B) with bf16 A, B and fp32 accumulation and C. */
int fq_gemm_bf16_cuda(fq_cuda_ctx *ctx, int trans_a, int trans_b, int m, int n, int k,
                      const uint16_t *a, int lda, const uint16_t *b, int ldb, float *c,
                      int ldc);
/* Whether codes of a_bits × w_bits summed over k terms stay exact in fp32 (< 2^24). */
int codes_gemm_exact(int a_bits, int w_bits, int k);

#ifdef __cplusplus
}
#endif

#endif
