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
 * Padded rows (K % 64 != 0, e.g. stories260K's f = 172): a third kernel, one CTA per token
 * with scalar loads (the rows of x are not 16-byte aligned then) and one K-block; it
 * writes the Kp = round_up(K, 64) long code row with zero codes after K. It is kept apart
 * so the kernels of K % 64 == 0 run exactly as before; it is not tuned (small models).
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
constexpr int COL_JB = 16, COL_THREADS = 128, SPLIT_MAX_M = 64;
/* the decode kernel's shared memory (X, Z and Y columns, R columns, L) must fit the
 * opt-in limit of Hopper (227 KiB); larger blocks take the one-CTA-per-token kernel */
constexpr size_t COL_MAX_SMEM = 227 * 1024;

struct quant_dsts {
    float kmax[3], kmin[3];
    uint8_t *codes[3];
    float *scales[3];
};

/* bf16 → fp32 into shared memory, 8 values per 16-byte load (n is a multiple of 64). */
__device__ __forceinline__ void load_x_block(float *X, const uint16_t *src16, int n)
{
    const uint4 *src = reinterpret_cast<const uint4 *>(src16);
    for (int i = threadIdx.x; i < n / 8; i += blockDim.x) {
        uint4 v = src[i];
        uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int e = 0; e < 4; e++) {
            X[i * 8 + 2 * e] = __uint_as_float(w[e] << 16);
            X[i * 8 + 2 * e + 1] = __uint_as_float(w[e] & 0xFFFF0000u);
        }
    }
}

/* Factor loads: through the read-only cache from global memory, or plain loads when the
 * factor was staged in shared memory (SM). */
template <bool SM> __device__ __forceinline__ float ldf(const float *p)
{
    if constexpr (SM)
        return *p;
    else
        return __ldg(p);
}
template <bool SM> __device__ __forceinline__ float4 ldf4(const float *p)
{
    if constexpr (SM)
        return *reinterpret_cast<const float4 *>(p);
    else
        return __ldg(reinterpret_cast<const float4 *>(p));
}

/* Z[i][zc0 + jj] = Σ_k X[i][k]·R[k][j0 + jj] for all rows i and jj < jn (R rows rstride
 * apart). Each work item is
 * one column and RB rows: R[k][j] is loaded once for RB FMAs and X is read 4 k at a time
 * (16-byte broadcast loads), so loads no longer outnumber FMAs. Sums run k = 0, 1, … */
template <int RB, bool SM = false>
__device__ void xr_product(float *Z, int zstride, int zc0, const float *X, int n1, int n2,
                           const float *__restrict__ R, int rstride, int j0, int jn)
{
    const int items = jn * (n1 / RB);
    for (int it = threadIdx.x; it < items; it += blockDim.x) {
        const int jj = it % jn, i0 = (it / jn) * RB, j = j0 + jj;
        float acc[RB];
#pragma unroll
        for (int r = 0; r < RB; r++)
            acc[r] = 0.f;
        int k = 0;
        if ((n2 & 3) == 0) {
            for (; k < n2; k += 4) {
                const float r0 = ldf<SM>(R + (size_t)k * rstride + j);
                const float r1 = ldf<SM>(R + (size_t)(k + 1) * rstride + j);
                const float r2 = ldf<SM>(R + (size_t)(k + 2) * rstride + j);
                const float r3 = ldf<SM>(R + (size_t)(k + 3) * rstride + j);
#pragma unroll
                for (int r = 0; r < RB; r++) {
                    const float4 xv = *reinterpret_cast<const float4 *>(X + (i0 + r) * n2 + k);
                    acc[r] = fmaf(xv.x, r0, acc[r]);
                    acc[r] = fmaf(xv.y, r1, acc[r]);
                    acc[r] = fmaf(xv.z, r2, acc[r]);
                    acc[r] = fmaf(xv.w, r3, acc[r]);
                }
            }
        }
        for (; k < n2; k++) {
            const float rv = ldf<SM>(R + (size_t)k * rstride + j);
#pragma unroll
            for (int r = 0; r < RB; r++)
                acc[r] = fmaf(X[(i0 + r) * n2 + k], rv, acc[r]);
        }
#pragma unroll
        for (int r = 0; r < RB; r++)
            Z[(i0 + r) * zstride + zc0 + jj] = acc[r];
    }
}

/* Y[i][yc0 + jj] = Σ_k L[k][i]·Z[k][zc0 + jj]: the same blocking, L rows read as 16-byte
 * broadcast loads when n1 is a multiple of 4. */
template <int RB, bool SM = false>
__device__ void lz_product(float *Y, int ystride, int yc0, const float *Z, int zstride, int zc0,
                           int n1, const float *__restrict__ L, int jn)
{
    const int items = jn * (n1 / RB);
    for (int it = threadIdx.x; it < items; it += blockDim.x) {
        const int jj = it % jn, i0 = (it / jn) * RB;
        float acc[RB];
#pragma unroll
        for (int r = 0; r < RB; r++)
            acc[r] = 0.f;
        for (int k = 0; k < n1; k++) {
            const float z = Z[k * zstride + zc0 + jj];
            const float *lr = L + (size_t)k * n1 + i0;
            if (RB % 4 == 0 && (n1 & 3) == 0) {
#pragma unroll
                for (int r = 0; r < RB; r += 4) {
                    const float4 lv = ldf4<SM>(lr + r);
                    acc[r] = fmaf(lv.x, z, acc[r]);
                    acc[r + 1 < RB ? r + 1 : 0] = fmaf(lv.y, z, acc[r + 1 < RB ? r + 1 : 0]);
                    acc[r + 2 < RB ? r + 2 : 0] = fmaf(lv.z, z, acc[r + 2 < RB ? r + 2 : 0]);
                    acc[r + 3 < RB ? r + 3 : 0] = fmaf(lv.w, z, acc[r + 3 < RB ? r + 3 : 0]);
                }
            } else {
#pragma unroll
                for (int r = 0; r < RB; r++)
                    acc[r] = fmaf(ldf<SM>(lr + r), z, acc[r]);
            }
        }
#pragma unroll
        for (int r = 0; r < RB; r++)
            Y[(i0 + r) * ystride + yc0 + jj] = acc[r];
    }
}

/* The C rule of core/quantizer.c, to the bit. */
__device__ __forceinline__ float sym_scale(float mx, float mn, float kmax, float kmin, int qmax)
{
    float m = __fmul_rn(mx > 0.f ? mx : 0.f, kmax);
    float l = __fmul_rn(mn < 0.f ? mn : 0.f, kmin);
    float tt = -l > m ? -l : m;
    return tt == 0.f ? 1.f : __fdiv_rn(tt, (float)qmax);
}

/* Quantize y[0..len) with scale s into nibbles at out (len a multiple of 8). */
__device__ __forceinline__ void quant_pack(uint8_t *out8, const float *y, int len, float s, int qmax)
{
    uint32_t *out = reinterpret_cast<uint32_t *>(out8);
    for (int i = threadIdx.x; i < len / 8; i += blockDim.x) {
        uint32_t word = 0;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float q = rintf(__fdiv_rn(y[i * 8 + e], s));
            q = fminf(fmaxf(q, (float)(-qmax - 1)), (float)qmax);
            word |= ((uint32_t)(int)q & 0xFu) << (4 * e);
        }
        out[i] = word;
    }
}

/* The code row of a padded token: words of 8 codes over Kp, zero after the K real values
 * (the same quantization as quant_pack element by element). */
__device__ __forceinline__ void quant_pack_padded(uint8_t *out8, const float *y, int K, int Kp,
                                                  float s, int qmax)
{
    uint32_t *out = reinterpret_cast<uint32_t *>(out8);
    for (int i = threadIdx.x; i < Kp / 8; i += blockDim.x) {
        uint32_t word = 0;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            const int j = i * 8 + e;
            if (j >= K)
                break;
            float q = rintf(__fdiv_rn(y[j], s));
            q = fminf(fmaxf(q, (float)(-qmax - 1)), (float)qmax);
            word |= ((uint32_t)(int)q & 0xFu) << (4 * e);
        }
        out[i] = word;
    }
}

/* Padded rows: one CTA per token, blocks = kblocks = 1, the whole row of K values in shared
 * memory (X, then Z at a 16-byte aligned offset), codes written Kp long. */
template <int RB>
__global__ void __launch_bounds__(FQ_BLOCK)
    transform_quant_padded_kernel(quant_dsts d, int nc, const uint16_t *__restrict__ x, int K,
                                  int Kp, int n1, int n2, const float *__restrict__ L,
                                  const float *__restrict__ R, int qmax)
{
    extern __shared__ __align__(16) float sm[];
    __shared__ float red[32];
    const int t = blockIdx.x, tid = threadIdx.x;
    float *X = sm, *Z = sm + (K + 3) / 4 * 4;
    const uint16_t *xt = x + (size_t)t * K;
    for (int i = tid; i < K; i += blockDim.x)
        X[i] = __uint_as_float((uint32_t)xt[i] << 16);
    __syncthreads();
    float *Y = X;
    if (R) {
        xr_product<RB>(Z, n2, 0, X, n1, n2, R, n2, 0, n2);
        __syncthreads();
        Y = Z;
    }
    if (L) {
        float *dst = Y == X ? Z : X;
        lz_product<RB>(dst, n2, 0, Y, n2, 0, n1, L, n2);
        __syncthreads();
        Y = dst;
    }
    float mx = -INFINITY, mn = INFINITY;
    for (int e = tid; e < K; e += blockDim.x) {
        mx = fmaxf(mx, Y[e]);
        mn = fminf(mn, Y[e]);
    }
    mx = block_max(mx, red);
    mn = block_min(mn, red);
    for (int p = 0; p < nc; p++) {
        const float s = sym_scale(mx, mn, d.kmax[p], d.kmin[p], qmax);
        if (tid == 0)
            d.scales[p][t] = s;
        quant_pack_padded(d.codes[p] + (size_t)t * (Kp / 2), Y, K, Kp, s, qmax);
    }
}

/* Prefill: one CTA per token, the whole transform block in shared memory. */
template <int RB>
__global__ void __launch_bounds__(FQ_BLOCK)
    transform_quant_kernel(quant_dsts d, int nc, const uint16_t *__restrict__ x, int K,
                           int blocks, int n1, int n2, const float *__restrict__ L,
                           const float *__restrict__ R, int kblocks, int qmax)
{
    extern __shared__ __align__(16) float sm[];
    __shared__ float red[32];
    const int n = n1 * n2, t = blockIdx.x, tid = threadIdx.x;
    const int sub = kblocks / blocks, blen = K / kblocks;
    float *X = sm, *Z = sm + n;
    const uint16_t *xt = x + (size_t)t * K;

    for (int b = 0; b < blocks; b++) {
        load_x_block(X, xt + (size_t)b * n, n);
        __syncthreads();
        float *Y = X;
        if (R) {
            xr_product<RB>(Z, n2, 0, X, n1, n2, R + (size_t)b * n2 * n2, n2, 0, n2);
            __syncthreads();
            Y = Z;
        }
        if (L) {
            float *dst = Y == X ? Z : X;
            lz_product<RB>(dst, n2, 0, Y, n2, 0, n1, L + (size_t)b * n1 * n1, n2);
            __syncthreads();
            Y = dst;
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
                const float s = sym_scale(mx, mn, d.kmax[p], d.kmin[p], qmax);
                if (tid == 0)
                    d.scales[p][(size_t)t * kblocks + kb] = s;
                quant_pack(d.codes[p] + byte0, yb, blen, s, qmax);
            }
        }
        __syncthreads(); /* X and Z are reused by the next block */
    }
}

/* Decode, step 1: many CTAs per token. CTA (column block, transform block, token) computes
 * Y[:, jb] = Lᵀ·(X̃·R[:, jb]) — columns of Y need only the same columns of Z, so column
 * blocks are independent — writes them to the fp32 workspace y_ws [M, K] and each row's
 * max/min over its columns to part [M, blocks, n1, ncb, 2]. With one token a CTA has too
 * few warps to hide L2 latency behind a chain of dependent factor loads (measured 43 µs
 * per call on a 70B shape), so the CTA first stages what it reads — R[:, jb] and all of L —
 * in shared memory with independent coalesced loads, then runs the products from there
 * (same summation order as before, so the same bits). */
template <int RB>
__global__ void __launch_bounds__(COL_THREADS)
    transform_cols_kernel(float *__restrict__ y_ws, float *__restrict__ part,
                          const uint16_t *__restrict__ x, int K, int blocks, int n1, int n2,
                          const float *__restrict__ L, const float *__restrict__ R)
{
    extern __shared__ __align__(16) float sm[];
    const int n = n1 * n2, cb = blockIdx.x, b = blockIdx.y, t = blockIdx.z;
    const int ncb = gridDim.x, j0 = cb * COL_JB, jn = min(COL_JB, n2 - j0);
    float *X = sm, *Zs = X + n, *Ys = Zs + n1 * COL_JB, *Rs = Ys + n1 * COL_JB;
    float *Ls = Rs + n2 * COL_JB;
    if (R) {
        const float *Rb = R + (size_t)b * n2 * n2 + j0;
        for (int e = threadIdx.x; e < n2 * COL_JB; e += blockDim.x) {
            const int k = e / COL_JB, jj = e % COL_JB;
            Rs[e] = jj < jn ? __ldg(Rb + (size_t)k * n2 + jj) : 0.f;
        }
    }
    if (L) {
        const float4 *Lb = reinterpret_cast<const float4 *>(L + (size_t)b * n1 * n1);
        float4 *L4 = reinterpret_cast<float4 *>(Ls);
        if ((n1 * n1) % 4 == 0)
            for (int e = threadIdx.x; e < n1 * n1 / 4; e += blockDim.x)
                L4[e] = __ldg(Lb + e);
        else
            for (int e = threadIdx.x; e < n1 * n1; e += blockDim.x)
                Ls[e] = __ldg(L + (size_t)b * n1 * n1 + e);
    }
    load_x_block(X, x + (size_t)t * K + (size_t)b * n, n);
    __syncthreads();
    const float *cur = nullptr;
    int cstride = 0, cc0 = 0;
    if (R) {
        xr_product<RB, true>(Zs, COL_JB, 0, X, n1, n2, Rs, COL_JB, 0, jn);
        cur = Zs, cstride = COL_JB, cc0 = 0;
    } else {
        cur = X, cstride = n2, cc0 = j0;
    }
    __syncthreads();
    if (L) {
        lz_product<RB, true>(Ys, COL_JB, 0, cur, cstride, cc0, n1, Ls, jn);
        __syncthreads();
        cur = Ys, cstride = COL_JB, cc0 = 0;
    }
    float *yt = y_ws + (size_t)t * K + (size_t)b * n;
    for (int e = threadIdx.x; e < n1 * jn; e += blockDim.x) {
        int i = e / jn, jj = e % jn;
        yt[(size_t)i * n2 + j0 + jj] = cur[i * cstride + cc0 + jj];
    }
    for (int i = threadIdx.x; i < n1; i += blockDim.x) {
        float mx = -INFINITY, mn = INFINITY;
        for (int jj = 0; jj < jn; jj++) {
            float v = cur[i * cstride + cc0 + jj];
            mx = fmaxf(mx, v);
            mn = fminf(mn, v);
        }
        float *pp = part + ((((size_t)t * blocks + b) * n1 + i) * ncb + cb) * 2;
        pp[0] = mx;
        pp[1] = mn;
    }
}

/* Decode, step 2: CTA (K-block, token) reduces the row extrema of its block (whole rows of
 * the [n1, n2] view: the caller guarantees it) and writes every consumer's codes and scale. */
__global__ void __launch_bounds__(FQ_BLOCK)
    quant_cols_kernel(quant_dsts d, int nc, const float *__restrict__ y_ws,
                      const float *__restrict__ part, int K, int blocks, int n1, int n2,
                      int ncb, int kblocks, int qmax)
{
    __shared__ float red[32];
    const int kb = blockIdx.x, t = blockIdx.y, sub = kblocks / blocks, blen = K / kblocks;
    const int b = kb / sub, rows = n1 / sub, i0 = (kb % sub) * rows;
    float mx = -INFINITY, mn = INFINITY;
    const float *pp = part + (((size_t)t * blocks + b) * n1 + i0) * ncb * 2;
    for (int e = threadIdx.x; e < rows * ncb; e += blockDim.x) {
        mx = fmaxf(mx, pp[2 * e]);
        mn = fminf(mn, pp[2 * e + 1]);
    }
    mx = block_max(mx, red);
    mn = block_min(mn, red);
    const float *yb = y_ws + (size_t)t * K + (size_t)kb * blen;
    const size_t byte0 = ((size_t)t * K + (size_t)kb * blen) / 2;
    for (int p = 0; p < nc; p++) {
        const float s = sym_scale(mx, mn, d.kmax[p], d.kmin[p], qmax);
        if (threadIdx.x == 0)
            d.scales[p][(size_t)t * kblocks + kb] = s;
        quant_pack(d.codes[p] + byte0, yb, blen, s, qmax);
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
    const int qmax = (1 << (bits - 1)) - 1, sub = kblocks / blocks;
    cudaStream_t st = CTX_STREAM(ctx);
    const char *fn = "fq_transform_quant_cuda";
    /* rows blocked by 8 when n1 allows it (the factors' loads serve 8 FMAs), else by 1 */
    const bool rb8 = n1 % 8 == 0;
    if (K % 64) { /* padded rows; the checks above left blocks = kblocks = 1 */
        const size_t smem = sizeof(float) * (2 * (size_t)((K + 3) / 4 * 4));
        const int Kp = fq_w4a4_padded_k(K);
        auto kern = rb8 ? transform_quant_padded_kernel<8> : transform_quant_padded_kernel<1>;
        CU_CHECK(fq_smem_optin((const void *)kern, ctx->device, (int)smem), FILE_, fn,
                 "cudaFuncSetAttribute");
        kern<<<M, FQ_BLOCK, smem, st>>>(d, nconsumers, x, K, Kp, n1, n2, L, R, qmax);
        LAUNCH_CHECK(FILE_, fn, "transform_quant_padded_kernel");
        return FQ_OK;
    }
    /* Few tokens: split each token over column blocks (decode); the K-blocks must then be
     * whole rows of the [n1, n2] view. Many tokens: one CTA per token (prefill). */
    const size_t smem_cols =
        sizeof(float) * ((size_t)n1 * n2 + 2 * (size_t)n1 * COL_JB + (size_t)n2 * COL_JB +
                         (size_t)n1 * n1);
    if (M <= SPLIT_MAX_M && n1 % sub == 0 && smem_cols <= COL_MAX_SMEM) {
        const int ncb = (n2 + COL_JB - 1) / COL_JB;
        const size_t ws = (size_t)M * K + (size_t)M * blocks * n1 * ncb * 2;
        float *y_ws = nullptr;
        if (fq_cuda_scratch(ctx, FQ_SCRATCH_QUANT, ws * sizeof(float), (void **)&y_ws))
            return fq_error_wrap(FILE_ ":%s: workspace", fn);
        float *part = y_ws + (size_t)M * K;
        auto kern = rb8 ? transform_cols_kernel<8> : transform_cols_kernel<1>;
        CU_CHECK(fq_smem_optin((const void *)kern, ctx->device, (int)smem_cols), FILE_, fn,
                 "cudaFuncSetAttribute");
        kern<<<dim3(ncb, blocks, M), COL_THREADS, smem_cols, st>>>(y_ws, part, x, K, blocks, n1, n2,
                                                              L, R);
        LAUNCH_CHECK(FILE_, fn, "transform_cols_kernel");
        quant_cols_kernel<<<dim3(kblocks, M), FQ_BLOCK, 0, st>>>(d, nconsumers, y_ws, part, K,
                                                                 blocks, n1, n2, ncb, kblocks, qmax);
        LAUNCH_CHECK(FILE_, fn, "quant_cols_kernel");
        return FQ_OK;
    }
    const size_t smem = 2 * sizeof(float) * (size_t)n1 * n2;
    auto kern = rb8 ? transform_quant_kernel<8> : transform_quant_kernel<1>;
    CU_CHECK(fq_smem_optin((const void *)kern, ctx->device, (int)smem), FILE_, fn,
             "cudaFuncSetAttribute");
    kern<<<M, FQ_BLOCK, smem, st>>>(d, nconsumers, x, K, blocks, n1, n2, L, R, kblocks, qmax);
    LAUNCH_CHECK(FILE_, fn, "transform_quant_kernel");
    return FQ_OK;
}
