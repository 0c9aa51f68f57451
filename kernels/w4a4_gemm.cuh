/* w4a4_gemm.cuh — what the two W4A4 GEMM files share (kernels/w4a4_gemm.cu: the mma.sync
 * prefill and the decode kernels, and the dispatch; kernels/w4a4_gemm_sm90.cu: the wgmma
 * prefill kernel): the nibble-to-int8 trick, cp.async, the bit-exact epilogue, and the
 * wgmma kernel's launcher.
 *
 * Nibbles become int8 without sign extension: a nibble in the HIGH half of a byte is the
 * int8 16·q, so (w << 4) & 0xF0F0F0F0 gives the even elements of a 32-bit word and
 * w & 0xF0F0F0F0 the odd ones. Products come out 256× too large and an arithmetic shift by
 * 8 of the int32 sum recovers it exactly (64·K·256 < 2^31 for K <= W4A4_MAX_K). Both GEMM
 * operands go through the same permutation of k (even elements first), which a dot product
 * does not see.
 */
#ifndef FQ_W4A4_GEMM_CUH
#define FQ_W4A4_GEMM_CUH

#include <cuda_bf16.h>
#include <stdint.h>

#include "kernels/flatq_cuda.h"

__device__ __forceinline__ uint32_t nib_even(uint32_t w) { return (w << 4) & 0xF0F0F0F0u; }
__device__ __forceinline__ uint32_t nib_odd(uint32_t w) { return w & 0xF0F0F0F0u; }

/* 16 bytes global → shared, zero-filled when !valid (an M, N or K tail) */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool valid)
{
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/* The epilogue of one output element, identical to core/w4a4_ref.c bit for bit: v (the
 * accumulator times the activation scale(s)) · sw, + residual, rounded to bf16, with
 * explicit _rn ops so that no FMA contracts them. */
__device__ __forceinline__ uint16_t epilogue_bf16(float v, float sw, const uint16_t *res, size_t at)
{
    v = __fmul_rn(v, sw);
    if (res)
        v = __fadd_rn(v, __bfloat162float(__ushort_as_bfloat16(res[at])));
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

/* The wgmma prefill GEMM (kernels/w4a4_gemm_sm90.cu) with the arguments of
 * fq_w4a4_gemm_path_cuda, already checked by it: y (bf16 out) or acc (int32 out, the
 * accumulators >> 8) — exactly one non-NULL. The packed activations are first unpacked to
 * int8 in the context's FQ_SCRATCH_X8 buffer (M·K bytes). */
int w4a4_gemm_wgmma_launch(fq_cuda_ctx *ctx, const char *where, uint16_t *y, int32_t *acc,
                           const uint8_t *qx, const float *sx, int kblocks, const uint8_t *qw,
                           const float *sw, int M, int N, int K, const uint16_t *residual);
#endif
