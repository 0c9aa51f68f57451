/* w4a4_quant.cuh — what the transform + quantize files share (kernels/w4a4_quant.cu: the
 * CUDA-core kernels, the cuBLAS prefill path and the dispatch; kernels/w4a4_quant_tc.cu: the
 * prefill path fused on TF32 tensor cores): the consumers' destinations, the scale and code
 * rules of core/quantizer.c to the bit, and the fused kernel's entry points. */
#ifndef FQ_W4A4_QUANT_CUH
#define FQ_W4A4_QUANT_CUH

#include <stddef.h>
#include <stdint.h>

#include "kernels/flatq_cuda.h"

/* up to three consumers of one transformed input (q/k/v, up/gate), each with its own clip
 * ratios, codes and scales */
struct quant_dsts {
    float kmax[3], kmin[3];
    uint8_t *codes[3];
    float *scales[3];
};

/* The C rule of core/quantizer.c, to the bit. */
static __device__ __forceinline__ float sym_scale(float mx, float mn, float kmax, float kmin,
                                                  int qmax)
{
    float m = __fmul_rn(mx > 0.f ? mx : 0.f, kmax);
    float l = __fmul_rn(mn < 0.f ? mn : 0.f, kmin);
    float tt = -l > m ? -l : m;
    return tt == 0.f ? 1.f : __fdiv_rn(tt, (float)qmax);
}

/* The 4-bit two's-complement code of an integer-valued q: clamp(q, −qmax−1, qmax). */
static __device__ __forceinline__ uint32_t code4_of(float q, int qmax)
{
    q = fminf(fmaxf(q, (float)(-qmax - 1)), (float)qmax);
    return (uint32_t)(int)q & 0xFu;
}

/* The 4-bit two's-complement code of y at scale s: clamp(rint(y/s), −qmax−1, qmax), IEEE
 * division, as core/quantizer.c rounds. */
static __device__ __forceinline__ uint32_t code4(float y, float s, int qmax)
{
    return code4_of(rintf(__fdiv_rn(y, s)), qmax);
}

/* code4 through inv = 1/s (IEEE, finite), in full-rate float adds: the product y·inv is
 * within 1.5·2^-23 relative of y/s, so for |y/s| <= 40 both round to the same integer unless
 * the product lies within 1e-5 of a half-integer, and beyond the clamp both clamp (the
 * bounds are integers: clamping before rounding gives the same code). Such a product sets
 * tie: then only code4 is sure (a few elements in 10^5). Adding 1.5·2^23 rounds the clamped
 * product to the nearest integer, ties to even as rintf, and leaves it in the low mantissa
 * bits: the returned word's low nibble is the 4-bit two's-complement code (the rest is not).
 * Why not rintf and a float-to-int conversion: those run at a quarter of the add rate on
 * sm_90, two per element. Checked against code4 on 2·10^8 values, half of them at or next to
 * ties: the rintf form in session 13, this one in session 14 (0 mismatches), and by
 * tests/gpu's identity-factor rows (codes bit-exact). */
static __device__ __forceinline__ uint32_t code4_recip(float y, float inv, float lo, float hi, bool &tie)
{
    const float big = 12582912.f; /* 1.5·2^23 */
    const float r = fminf(fmaxf(__fmul_rn(y, inv), lo), hi);
    const float t = __fadd_rn(r, big);
    tie |= fabsf(__fsub_rn(r, __fsub_rn(t, big))) > 0.5f - 1e-5f;
    return __float_as_uint(t);
}

/* the fused kernel on inputs fq_transform_quant_cuda has checked and
 * fq_transform_quant_tc_takes accepted; where names the caller in errors */
int w4a4_quant_tc_launch(fq_cuda_ctx *ctx, const char *where, const quant_dsts &d, int nc,
                         const uint16_t *x, int M, int K, int blocks, int n1, int n2,
                         const float *L, const float *R, int qmax);

#endif
