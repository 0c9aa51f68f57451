/* w4a4_quant.cu — fused online transform + per-token symmetric 4-bit quantization
 * (ALGORITHM §6 step 2), the producer of the W4A4 GEMM's activations.
 *
 * The idea. One CTA per token: the token's bf16 values of one transform block are read
 * once into shared memory as fp32, Z = X̃·R and Y = Lᵀ·Z are computed there (fp32 FMAs in
 * a fixed order; the factors come through L1/L2, they are shared by every token), then each
 * K-block of Y gets its max/min by a block reduction and every consumer (q/k/v or up/gate)
 * derives its own scale from its clip ratios and writes packed nibbles, 4 bytes per
 * thread-store. Y never leaves the SM: one read of x, one write of codes and scales.
 *
 * Trade-offs. The transform runs on CUDA cores in fp32 — simple and close to the fp32 C
 * reference (which sums through BLAS in another order, so a value within an ulp of a
 * rounding tie can get the neighbouring code; tests/gpu measures how often) — but it costs
 * 2·K·(n1+n2) FLOP per token with little reuse of the factors, which at prefill sizes is a
 * visible fraction of the GEMM time (bench/NOTES.md). Shared memory holds two fp32 copies
 * of one transform block (2·4·n1·n2 bytes: 224 KiB for the f = 28672 down input, the most
 * Hopper allows a CTA), so a single transform block may not exceed 28672 values.
 * The scale rule is the C rule to the bit: m = max(ymax,0)·κmax, l = min(ymin,0)·κmin,
 * t = max(−l, m), s = t/7 (1 when t = 0), q = clamp(rint(y/s), −8, 7) with IEEE division.
 */
#include <cuda_bf16.h>
#include <stdint.h>

#include "kernels/cuda_common.cuh"
extern "C" {
#include "w4a4_ref.h"
}

#define FILE_ "kernels/w4a4_quant.cu"

namespace {

constexpr int MAX_BLOCK_VALUES = 28672;

struct quant_dsts {
    float kmax[3], kmin[3];
    uint8_t *codes[3];
    float *scales[3];
};

__global__ void __launch_bounds__(FQ_BLOCK)
    transform_quant_kernel(quant_dsts d, int nc, const uint16_t *__restrict__ x, int K,
                           int blocks, int n1, int n2, const float *__restrict__ L,
                           const float *__restrict__ R, int kblocks, int qmax)
{
    extern __shared__ float sm[];
    __shared__ float red[32];
    const int n = n1 * n2, t = blockIdx.x, tid = threadIdx.x;
    const int sub = kblocks / blocks, blen = K / kblocks;
    float *X = sm, *Z = sm + n;
    const uint16_t *xt = x + (size_t)t * K;

    for (int b = 0; b < blocks; b++) {
        /* one read of this block of x: 8 bf16 per 16-byte load (n is a multiple of 64) */
        const uint4 *src = reinterpret_cast<const uint4 *>(xt + (size_t)b * n);
        for (int i = tid; i < n / 8; i += blockDim.x) {
            uint4 v = src[i];
            uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                X[i * 8 + 2 * e] = __uint_as_float(w[e] << 16);
                X[i * 8 + 2 * e + 1] = __uint_as_float(w[e] & 0xFFFF0000u);
            }
        }
        __syncthreads();
        float *Y = X;
        if (R) {
            const float *Rb = R + (size_t)b * n2 * n2;
            for (int e = tid; e < n; e += blockDim.x) {
                int i = e / n2, j = e - i * n2;
                const float *xr = X + i * n2;
                float s = 0.f;
                for (int k = 0; k < n2; k++)
                    s = fmaf(xr[k], __ldg(Rb + (size_t)k * n2 + j), s);
                Z[e] = s;
            }
            __syncthreads();
            Y = Z;
        }
        if (L) {
            const float *Lb = L + (size_t)b * n1 * n1;
            float *src2 = Y, *dst2 = Y == X ? Z : X;
            for (int e = tid; e < n; e += blockDim.x) {
                int i = e / n2, j = e - i * n2;
                float s = 0.f;
                for (int k = 0; k < n1; k++)
                    s = fmaf(__ldg(Lb + (size_t)k * n1 + i), src2[k * n2 + j], s);
                dst2[e] = s;
            }
            __syncthreads();
            Y = dst2;
        }
        for (int sb = 0; sb < sub; sb++) {
            const float *yb = Y + sb * blen;
            float mx = -INFINITY, mn = INFINITY;
            for (int e = tid; e < blen; e += blockDim.x) {
                mx = fmaxf(mx, yb[e]);
                mn = fminf(mn, yb[e]);
            }
            mx = block_max(mx, red);
            mn = block_min(mn, red);
            const int kb = b * sub + sb;
            const size_t byte0 = ((size_t)t * K + (size_t)kb * blen) / 2;
            for (int p = 0; p < nc; p++) {
                float m = __fmul_rn(mx > 0.f ? mx : 0.f, d.kmax[p]);
                float l = __fmul_rn(mn < 0.f ? mn : 0.f, d.kmin[p]);
                float tt = -l > m ? -l : m;
                float s = tt == 0.f ? 1.f : __fdiv_rn(tt, (float)qmax);
                if (tid == 0)
                    d.scales[p][(size_t)t * kblocks + kb] = s;
                uint32_t *out = reinterpret_cast<uint32_t *>(d.codes[p] + byte0);
                for (int i = tid; i < blen / 8; i += blockDim.x) {
                    uint32_t word = 0;
#pragma unroll
                    for (int e = 0; e < 8; e++) {
                        float q = rintf(__fdiv_rn(yb[i * 8 + e], s));
                        q = fminf(fmaxf(q, (float)(-qmax - 1)), (float)qmax);
                        word |= ((uint32_t)(int)q & 0xFu) << (4 * e);
                    }
                    out[i] = word;
                }
            }
        }
        __syncthreads(); /* X and Z are reused by the next block */
    }
}

} // namespace

extern "C" int fq_transform_quant_cuda(fq_cuda_ctx *ctx, const fq_quant_dst *dst, int nconsumers,
                                       const uint16_t *x, int M, int K, int blocks, int n1,
                                       int n2, const float *L, const float *R, int kblocks,
                                       int bits)
{
    const char *where = FILE_ ":fq_transform_quant_cuda";
    if (!ctx)
        return fq_error("%s: NULL context (expected an initialised fq_cuda_ctx)", where);
    if (w4a4_check_quant(where, dst, nconsumers, x, M, K, blocks, n1, n2, kblocks, bits))
        return FQ_ERR;
    if (n1 * n2 > MAX_BLOCK_VALUES)
        return fq_error("%s: transform block n1·n2 = %d (expected at most %d on the GPU: two "
                        "fp32 copies must fit in shared memory)", where, n1 * n2,
                        MAX_BLOCK_VALUES);
    if ((uintptr_t)x % 16)
        return fq_error("%s: x is not 16-byte aligned (expected a cudaMalloc'd buffer)", where);
    quant_dsts d;
    for (int p = 0; p < 3; p++) {
        int q = p < nconsumers ? p : 0;
        d.kmax[p] = dst[q].kmax;
        d.kmin[p] = dst[q].kmin;
        d.codes[p] = dst[q].codes;
        d.scales[p] = dst[q].scales;
        if ((uintptr_t)d.codes[p] % 4)
            return fq_error("%s: dst[%d].codes is not 4-byte aligned (expected a cudaMalloc'd "
                            "buffer)", where, q);
    }
    const size_t smem = 2 * sizeof(float) * (size_t)n1 * n2;
    if (smem > 48 * 1024)
        CU_CHECK(cudaFuncSetAttribute(transform_quant_kernel,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                 FILE_, "fq_transform_quant_cuda", "cudaFuncSetAttribute");
    transform_quant_kernel<<<M, FQ_BLOCK, smem, CTX_STREAM(ctx)>>>(
        d, nconsumers, x, K, blocks, n1, n2, L, R, kblocks, (1 << (bits - 1)) - 1);
    LAUNCH_CHECK(FILE_, "fq_transform_quant_cuda", "transform_quant_kernel");
    return FQ_OK;
}
