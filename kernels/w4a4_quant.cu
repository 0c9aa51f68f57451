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
#include <algorithm>
#include <cuda_bf16.h>
#include <stdint.h>
#include <type_traits>

#include "kernels/cuda_common.cuh"
#include "kernels/w4a4_quant.cuh"
extern "C" {
#include "w4a4_ref.h"
}

#define FILE_ "kernels/w4a4_quant.cu"

namespace {

constexpr int MAX_BLOCK_VALUES = 28672;
constexpr int COL_THREADS = 128, COL_THREADS_MAX = 256, SPLIT_MAX_M = 64;
constexpr int QC_WORDS = FQ_BLOCK; /* 8-code words per CTA of the decode quantize step */
/* the decode kernel's shared memory (X, Z and Y columns, R columns, L) must fit the
 * opt-in limit of Hopper (227 KiB); larger blocks take the one-CTA-per-token kernel */
constexpr size_t COL_MAX_SMEM = 227 * 1024;

/* bf16 → fp32 into shared memory, 8 values per 16-byte load (n is a multiple of 64). */
__device__ __forceinline__ void load_x_block(float *X, const uint16_t *src16, int n)
{
    const uint4 *src = reinterpret_cast<const uint4 *>(src16);
    for (int i = threadIdx.x; i < n / 8; i += blockDim.x) {
        const uint4 v = src[i];
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
        float f[8];
        bf16_unpack(w, f);
#pragma unroll
        for (int e = 0; e < 8; e++)
            X[i * 8 + e] = f[e];
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

/* max and min over the n (max, min) pairs of a K-block's row extrema, written by other
 * CTAs or an earlier kernel (read past L1), reduced over the CTA */
__device__ __forceinline__ void kblock_extrema(const float *part, int n, float *red, float &mx,
                                               float &mn)
{
    const float2 *pp = reinterpret_cast<const float2 *>(part);
    mx = -INFINITY, mn = INFINITY;
#pragma unroll 4
    for (int e = threadIdx.x; e < n; e += blockDim.x) {
        const float2 v = __ldcg(pp + e);
        mx = fmaxf(mx, v.x);
        mn = fminf(mn, v.y);
    }
    mx = block_max(mx, red);
    mn = block_min(mn, red);
}

/* Quantize y[0..len) with scale s into nibbles at out (len a multiple of 8). */
__device__ __forceinline__ void quant_pack(uint8_t *out8, const float *y, int len, float s, int qmax)
{
    uint32_t *out = reinterpret_cast<uint32_t *>(out8);
    for (int i = threadIdx.x; i < len / 8; i += blockDim.x) {
        uint32_t word = 0;
#pragma unroll
        for (int e = 0; e < 8; e++)
            word |= code4(y[i * 8 + e], s, qmax) << (4 * e);
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
            word |= code4(y[j], s, qmax) << (4 * e);
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

/* The op before the transform, fused into the decode kernel's input load (each of its CTAs
 * reads the token's whole row anyway): none (x is the activation), RMSNorm (x is the
 * residual; the row becomes bf16(γ·(x·r)), r = 1/sqrt(mean x² + eps), as rt_rmsnorm_bf16
 * writes it, the sum of squares in this CTA's order), SwiGLU (x is gate; the row becomes
 * bf16(g/(1 + e^−g)·u), as rt_swiglu_bf16 writes it). Each saves a launch and a round trip
 * of the row through memory per decode step. */
enum { PRO_NONE = 0, PRO_RMSNORM = 1, PRO_SWIGLU = 2 };
struct prologue {
    int kind;
    const float *gamma; /* RMSNorm: [K] */
    float eps;
    const uint16_t *up; /* SwiGLU: [M, K] beside gate */
};

__device__ __forceinline__ float round_bf16(float f)
{
    return __uint_as_float((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(f)) << 16);
}

/* X ← transform block b of token t's input row (n values; RMSNorm needs blocks = 1) */
__device__ void load_input(float *X, float *red, const uint16_t *x, const prologue &p, int t,
                           int K, int b, int n)
{
    const size_t off = (size_t)t * K + (size_t)b * n;
    load_x_block(X, x + off, n);
    if (p.kind == PRO_NONE)
        return;
    if (p.kind == PRO_SWIGLU) {
        const uint4 *u4 = reinterpret_cast<const uint4 *>(p.up + off);
        for (int i = threadIdx.x; i < n / 8; i += blockDim.x) {
            const uint4 v = u4[i];
            const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float u0 = bf16_lo(w[e]), u1 = bf16_hi(w[e]);
                const float g0 = X[i * 8 + 2 * e], g1 = X[i * 8 + 2 * e + 1];
                X[i * 8 + 2 * e] = round_bf16(fq_silu_mul(g0, u0));
                X[i * 8 + 2 * e + 1] = round_bf16(fq_silu_mul(g1, u1));
            }
        }
        __syncthreads();
        return;
    }
    float ss = 0.f; /* each thread squares the values it loaded itself */
    for (int i = threadIdx.x; i < n / 8; i += blockDim.x)
#pragma unroll
        for (int e = 0; e < 8; e++)
            ss += X[i * 8 + e] * X[i * 8 + e];
    ss = block_sum(ss, red);
    const float r = rsqrtf(ss / K + p.eps);
    /* γ in 16-byte loads, four in flight: one scalar L2 load per value made this loop most of
     * the fused kernel's 26 µs at K = 8192 (session 7) */
    const float4 *g4 = reinterpret_cast<const float4 *>(p.gamma);
    float4 *X4 = reinterpret_cast<float4 *>(X);
#pragma unroll 4
    for (int i = threadIdx.x; i < n / 4; i += blockDim.x) {
        const float4 g = __ldg(g4 + i);
        float4 v = X4[i];
        v.x = round_bf16(g.x * (v.x * r));
        v.y = round_bf16(g.y * (v.y * r));
        v.z = round_bf16(g.z * (v.z * r));
        v.w = round_bf16(g.w * (v.w * r));
        X4[i] = v;
    }
    __syncthreads();
}

/* Step 2 inside step 1 (FQ, transform_cols_kernel below): when the whole grid fits on the GPU at once, the CTAs meet at
 * a grid barrier after writing their row extrema, and each then quantizes its own columns
 * of Y from shared memory — no y_ws round trip, no second launch. */
struct fused_quant {
    quant_dsts d;
    int nc, kblocks, qmax;
    unsigned long long *barrier, target;
};

/* Decode, step 1: many CTAs per token. CTA (column block, transform block, token) computes
 * Y[:, jb] = Lᵀ·(X̃·R[:, jb]) — columns of Y need only the same columns of Z, so column
 * blocks are independent — writes them to the fp32 workspace y_ws [M, K] and each row's
 * max/min over its columns to part [M, blocks, n1, ncb, 2]. With one token a CTA has too
 * few warps to hide L2 latency behind a chain of dependent factor loads (measured 43 µs
 * per call on a 70B shape), so the CTA first stages what it reads — R[:, jb] and all of L —
 * in shared memory with independent coalesced loads, then runs the products from there
 * (same summation order as before, so the same bits). JB columns per CTA: 16 when the
 * grid is large anyway, 4 when it is not — with 16, one token of the 70B attention input
 * ran on 8 CTAs and took 20 µs (Nsight Compute, session 7); every output still sums
 * k = 0, 1, … in one thread, so the column split changes no bit. */
template <int RB, int JB, bool FQ>
__global__ void __launch_bounds__(COL_THREADS_MAX)
    transform_cols_kernel(float *__restrict__ y_ws, float *__restrict__ part,
                          const uint16_t *__restrict__ x, prologue pro, int K, int blocks,
                          int n1, int n2, const float *__restrict__ L,
                          const float *__restrict__ R, fused_quant fq)
{
    extern __shared__ __align__(16) float sm[];
    __shared__ float red[32];
    const int n = n1 * n2, cb = blockIdx.x, b = blockIdx.y, t = blockIdx.z;
    const int ncb = gridDim.x, j0 = cb * JB, jn = min(JB, n2 - j0);
    float *X = sm, *Zs = X + n, *Ys = Zs + n1 * JB, *Rs = Ys + n1 * JB;
    float *Ls = Rs + n2 * JB;
    if (R) {
        const float *Rb = R + (size_t)b * n2 * n2 + j0;
        for (int e = threadIdx.x; e < n2 * JB; e += blockDim.x) {
            const int k = e / JB, jj = e % JB;
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
    /* the factors above are weights: staged while the kernel before may still run */
    pdl_wait();
    pdl_launch_dependents();
    load_input(X, red, x, pro, t, K, b, n);
    __syncthreads();
    const float *cur = nullptr;
    int cstride = 0, cc0 = 0;
    if (R) {
        xr_product<RB, true>(Zs, JB, 0, X, n1, n2, Rs, JB, 0, jn);
        cur = Zs, cstride = JB, cc0 = 0;
    } else {
        cur = X, cstride = n2, cc0 = j0;
    }
    __syncthreads();
    if (L) {
        lz_product<RB, true>(Ys, JB, 0, cur, cstride, cc0, n1, Ls, jn);
        __syncthreads();
        cur = Ys, cstride = JB, cc0 = 0;
    }
    if constexpr (!FQ) {
        float *yt = y_ws + (size_t)t * K + (size_t)b * n;
        for (int e = threadIdx.x; e < n1 * jn; e += blockDim.x) {
            int i = e / jn, jj = e % jn;
            yt[(size_t)i * n2 + j0 + jj] = cur[i * cstride + cc0 + jj];
        }
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
    if constexpr (FQ) {
        /* JB == 4 and jn == 4 (the host checks): a row's 4 codes are one 16-bit store */
        grid_arrive_wait(fq.barrier, fq.target);
        const int sub = fq.kblocks / blocks, rows = n1 / sub;
        for (int s = 0; s < sub; s++) {
            const int kb = b * sub + s;
            float mx, mn;
            kblock_extrema(part + (((size_t)t * blocks + b) * n1 + (size_t)s * rows) * ncb * 2,
                           rows * ncb, red, mx, mn);
            for (int p = 0; p < fq.nc; p++) {
                const float sc = sym_scale(mx, mn, fq.d.kmax[p], fq.d.kmin[p], fq.qmax);
                if (cb == 0 && threadIdx.x == 0)
                    fq.d.scales[p][(size_t)t * fq.kblocks + kb] = sc;
                for (int i = threadIdx.x; i < rows; i += blockDim.x) {
                    const int row = s * rows + i;
                    uint32_t h = 0;
#pragma unroll
                    for (int jj = 0; jj < 4; jj++)
                        h |= code4(cur[row * cstride + cc0 + jj], sc, fq.qmax) << (4 * jj);
                    const size_t at = (size_t)t * K + (size_t)b * n + (size_t)row * n2 + j0;
                    reinterpret_cast<uint16_t *>(fq.d.codes[p])[at / 4] = (uint16_t)h;
                }
            }
        }
    }
}

/* Decode, step 2: CTA (K-block, chunk of QC_WORDS words, token) reduces the row extrema of
 * its K-block (whole rows of the [n1, n2] view: the caller guarantees it) and writes its
 * chunk of every consumer's codes (one 8-code word per thread and consumer, read as two
 * 16-byte loads); the chunk-0 CTA writes the scale. One CTA per K-block and token, as
 * before, quantized 8192 values × 3 consumers in a 256-thread loop: 11 µs (session 7). */
__global__ void __launch_bounds__(FQ_BLOCK)
    quant_cols_kernel(quant_dsts d, int nc, const float *__restrict__ y_ws,
                      const float *__restrict__ part, int K, int blocks, int n1, int n2,
                      int ncb, int kblocks, int nchunk, int qmax)
{
    __shared__ float red[32];
    pdl_wait();
    pdl_launch_dependents();
    const int kb = blockIdx.x / nchunk, ch = blockIdx.x % nchunk, t = blockIdx.y;
    const int sub = kblocks / blocks, blen = K / kblocks;
    const int b = kb / sub, rows = n1 / sub, i0 = (kb % sub) * rows;
    float mx, mn;
    kblock_extrema(part + (((size_t)t * blocks + b) * n1 + i0) * ncb * 2, rows * ncb, red, mx, mn);
    const int w = ch * QC_WORDS + threadIdx.x;
    const float *yb = y_ws + (size_t)t * K + (size_t)kb * blen;
    float v[8];
    if (w < blen / 8) {
        const float4 a = *reinterpret_cast<const float4 *>(yb + (size_t)w * 8);
        const float4 c = *reinterpret_cast<const float4 *>(yb + (size_t)w * 8 + 4);
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = c.x, v[5] = c.y, v[6] = c.z,
        v[7] = c.w;
    }
    const size_t word0 = ((size_t)t * K + (size_t)kb * blen) / 8;
    for (int p = 0; p < nc; p++) {
        const float s = sym_scale(mx, mn, d.kmax[p], d.kmin[p], qmax);
        if (ch == 0 && threadIdx.x == 0)
            d.scales[p][(size_t)t * kblocks + kb] = s;
        if (w < blen / 8) {
            uint32_t word = 0;
#pragma unroll
            for (int e = 0; e < 8; e++)
                word |= code4(v[e], s, qmax) << (4 * e);
            reinterpret_cast<uint32_t *>(d.codes[p])[word0 + w] = word;
        }
    }
}

/* Prefill through cuBLAS (transform_quant_gemm), step 1: the bf16 rows of T tokens as fp32,
 * each transform block contiguous ([blocks][T][n], n = K / blocks, a multiple of 64), so
 * that every block is one kron_fwd_cuda over T rows. */
__global__ void __launch_bounds__(FQ_BLOCK)
    rows_to_blocks_f32(float *__restrict__ xf, const uint16_t *__restrict__ x, int T, int K,
                       int blocks)
{
    const int n = K / blocks;
    const size_t groups = (size_t)T * K / 8;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < groups;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i * 8 / K;
        const int k = (int)(i * 8 - t * K), b = k / n, j = k - b * n;
        const uint4 v = reinterpret_cast<const uint4 *>(x)[i];
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
        float f[8];
        bf16_unpack(w, f);
        float4 *dst = reinterpret_cast<float4 *>(xf + ((size_t)b * T + t) * n + j);
        dst[0] = make_float4(f[0], f[1], f[2], f[3]);
        dst[1] = make_float4(f[4], f[5], f[6], f[7]);
    }
}

/* Step 3: CTA (K-block, token) quantizes its K-block of the transformed rows y
 * ([blocks][T][n] as step 1 laid them out) for every consumer: extrema, scale, codes of
 * token t0 + t. */
__global__ void __launch_bounds__(FQ_BLOCK)
    quant_blocks_kernel(quant_dsts d, int nc, const float *__restrict__ y, int T, int K,
                        int blocks, int kblocks, int t0, int qmax)
{
    __shared__ float red[32];
    const int kb = blockIdx.x, t = blockIdx.y;
    const int n = K / blocks, sub = kblocks / blocks, blen = K / kblocks;
    const float *yb = y + ((size_t)(kb / sub) * T + t) * n + (size_t)(kb % sub) * blen;
    float mx = -INFINITY, mn = INFINITY;
    for (int i = threadIdx.x; i < blen / 4; i += blockDim.x) {
        const float4 v = reinterpret_cast<const float4 *>(yb)[i];
        mx = fmaxf(mx, fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w)));
        mn = fminf(mn, fminf(fminf(v.x, v.y), fminf(v.z, v.w)));
    }
    mx = block_max(mx, red);
    mn = block_min(mn, red);
    const size_t row = (size_t)t0 + t;
    for (int p = 0; p < nc; p++) {
        const float s = sym_scale(mx, mn, d.kmax[p], d.kmin[p], qmax);
        if (threadIdx.x == 0)
            d.scales[p][row * kblocks + kb] = s;
        quant_pack(d.codes[p] + (row * K + (size_t)kb * blen) / 2, yb, blen, s, qmax);
    }
}

/* The decode kernels' shape for (M, blocks, n1, n2): JB columns per CTA, RB rows per work
 * item, threads per CTA (see transform_cols_kernel). */
struct cols_shape {
    int jb, rb, threads;
};
cols_shape decode_cols_shape(int sm_count, int M, int blocks, int n1, int n2)
{
    cols_shape c;
    const long wide_ctas = (long)M * blocks * ((n2 + 15) / 16);
    if (wide_ctas >= 2L * sm_count) {
        c.jb = 16, c.threads = COL_THREADS, c.rb = n1 % 8 == 0 ? 8 : 1;
        return c;
    }
    /* narrow: 4 columns, and rows per item small enough that every thread has one */
    c.jb = 4, c.threads = COL_THREADS_MAX;
    c.rb = n1 % 8 == 0 && 4 * (n1 / 8) >= c.threads   ? 8
           : n1 % 2 == 0 && 4 * (n1 / 2) >= c.threads ? 2
                                                      : 1;
    return c;
}

/* The column kernel for JB; the quantization rides in it (JB = 4, 4 | n2) when the whole
 * grid can be resident at once, as its grid barrier needs: then fq->barrier is set, else
 * the caller runs quant_cols_kernel. */
template <int JB>
int launch_cols(fq_cuda_ctx *ctx, const cols_shape &c, dim3 grid, size_t smem,
                const prologue &pro, float *y_ws, float *part, const uint16_t *x, int K,
                int blocks, int n1, int n2, const float *L, const float *R, fused_quant *fq)
{
    auto pick = [&](auto fqv) {
        constexpr bool F = decltype(fqv)::value;
        return c.rb == 8 ? transform_cols_kernel<8, JB, F>
               : c.rb == 2 ? transform_cols_kernel<2, JB, F>
                           : transform_cols_kernel<1, JB, F>;
    };
    fq->barrier = nullptr;
    const unsigned ctas = grid.x * grid.y * grid.z;
    if (JB == 4 && ctx->grid_barrier && n2 % 4 == 0) {
        auto kern = pick(std::true_type{});
        if (fq_smem_optin((const void *)kern, ctx->device, (int)smem) != cudaSuccess)
            return -1;
        if ((long)ctas <= (long)fq_max_resident((const void *)kern, ctx->device, c.threads, smem) *
                              ctx->sm_count) {
            if (fq_cuda_grid_barrier(ctx, ctas, &fq->barrier, &fq->target) != FQ_OK)
                return -1;
            return fq_launch(ctx, kern, grid, dim3(c.threads), smem, y_ws, part, x, pro, K,
                             blocks, n1, n2, L, R, *fq) == cudaSuccess
                       ? 0
                       : -1;
        }
    }
    auto kern = pick(std::false_type{});
    if (fq_smem_optin((const void *)kern, ctx->device, (int)smem) != cudaSuccess)
        return -1;
    const fused_quant none = {};
    return fq_launch(ctx, kern, grid, dim3(c.threads), smem, y_ws, part, x, pro, K, blocks, n1,
                     n2, L, R, none) == cudaSuccess
               ? 0
               : -1;
}

} // namespace

/* The decode (column-split) path's shared-memory bytes for these shapes, 0 when the shapes
 * take another kernel: what the fused entry points require. */
static size_t decode_path_smem(const fq_cuda_ctx *ctx, int M, int K, int blocks, int n1, int n2,
                               int kblocks)
{
    if (K % 64 || M > SPLIT_MAX_M || blocks < 1 || kblocks % blocks || n1 % (kblocks / blocks))
        return 0;
    const cols_shape cs = decode_cols_shape(ctx->sm_count, M, blocks, n1, n2);
    const size_t smem = sizeof(float) * ((size_t)n1 * n2 + 2 * (size_t)n1 * cs.jb +
                                         (size_t)n2 * cs.jb + (size_t)n1 * n1);
    return smem <= COL_MAX_SMEM ? smem : 0;
}

/* Many tokens with both factors: the transform as fp32 SGEMMs (kron_fwd_cuda: Z = X̃·R
 * over all T·n1 rows at once, then Y = Lᵀ·Z batched over tokens), between a conversion
 * pass and a quantization pass, in chunks of at most GEMM_CHUNK_VALUES values per buffer.
 * The one-CTA-per-token kernel re-reads R and L from L1/L2 for every token and ran at
 * 7–10 fp32 TFLOP/s (down's T_d = 128 × 224: 6 ms for 2048 tokens); the GEMMs reuse each
 * factor tile across many rows. Same fp32 order (X̃·R, then Lᵀ·Z), so the codes differ from
 * the C reference only near rounding ties, as before (tests/gpu counts them). */
constexpr size_t GEMM_CHUNK_VALUES = (size_t)1 << 25;
static int transform_quant_gemm(fq_cuda_ctx *ctx, const char *where, const quant_dsts &d,
                                int nc, const uint16_t *x, int M, int K, int blocks, int n1,
                                int n2, const float *L, const float *R, int kblocks, int qmax)
{
    const char *fn = where + sizeof(FILE_ ":") - 1;
    const int n = K / blocks;
    /* tokens per chunk: the buffers' bound, and the quantization grid's y limit */
    const int chunk = (int)std::max<size_t>(1, std::min<size_t>({(size_t)M, GEMM_CHUNK_VALUES / K, 65535}));
    float *xf = nullptr;
    if (fq_cuda_scratch(ctx, FQ_SCRATCH_QUANT, 3 * sizeof(float) * (size_t)chunk * K, (void **)&xf))
        return fq_error_wrap("%s: workspace", where);
    float *y = xf + (size_t)chunk * K, *work = y + (size_t)chunk * K;
    for (int t0 = 0; t0 < M; t0 += chunk) {
        const int T = std::min(chunk, M - t0);
        rows_to_blocks_f32<<<fq_grid((size_t)T * K / 8, FQ_BLOCK), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(
            xf, x + (size_t)t0 * K, T, K, blocks);
        LAUNCH_CHECK(FILE_, fn, "rows_to_blocks_f32");
        for (int b = 0; b < blocks; b++)
            if ((ctx->transform_tf32 ? kron_fwd_tf32_cuda : kron_fwd_cuda)(
                    ctx, y + (size_t)b * T * n, xf + (size_t)b * T * n, T, n1, n2,
                    L + (size_t)b * n1 * n1, R + (size_t)b * n2 * n2, work))
                return fq_error_wrap("%s: transform block %d", where, b);
        quant_blocks_kernel<<<dim3(kblocks, T), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(
            d, nc, y, T, K, blocks, kblocks, t0, qmax);
        LAUNCH_CHECK(FILE_, fn, "quant_blocks_kernel");
    }
    return FQ_OK;
}

static int transform_quant_run(fq_cuda_ctx *ctx, const char *where, const fq_quant_dst *dst,
                               int nconsumers, const uint16_t *x, const prologue &pro, int M,
                               int K, int blocks, int n1, int n2, const float *L, const float *R,
                               int kblocks, int bits)
{
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
    const int qmax = (1 << (bits - 1)) - 1;
    cudaStream_t st = CTX_STREAM(ctx);
    const char *fn = where + sizeof(FILE_ ":") - 1; /* the function, after "FILE:" */
    /* rows blocked by 8 when n1 allows it (the factors' loads serve 8 FMAs), else by 1 */
    const bool rb8 = n1 % 8 == 0;
    /* Few tokens: split each token over column blocks (decode); the K-blocks must then be
     * whole rows of the [n1, n2] view. Many tokens: one CTA per token (prefill). */
    const size_t smem_cols = decode_path_smem(ctx, M, K, blocks, n1, n2, kblocks);
    if (pro.kind != PRO_NONE && !smem_cols)
        return fq_error("%s: M = %d, K = %d, blocks %d, n1·n2 = %d·%d: not the decode kernel's "
                        "shapes (expected fq_transform_quant_fuses() to accept them before a "
                        "fused call)", where, M, K, blocks, n1, n2);
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
    if (smem_cols) {
        const cols_shape cs = decode_cols_shape(ctx->sm_count, M, blocks, n1, n2);
        const int ncb = (n2 + cs.jb - 1) / cs.jb;
        const size_t ws = (size_t)M * K + (size_t)M * blocks * n1 * ncb * 2;
        float *y_ws = nullptr;
        if (fq_cuda_scratch(ctx, FQ_SCRATCH_QUANT, ws * sizeof(float), (void **)&y_ws))
            return fq_error_wrap("%s: workspace", where);
        float *part = y_ws + (size_t)M * K;
        const dim3 grid(ncb, blocks, M);
        fused_quant fq = {d, nconsumers, kblocks, qmax, nullptr, 0};
        const int rc = cs.jb == 16 ? launch_cols<16>(ctx, cs, grid, smem_cols, pro, y_ws, part, x,
                                                     K, blocks, n1, n2, L, R, &fq)
                                   : launch_cols<4>(ctx, cs, grid, smem_cols, pro, y_ws, part, x,
                                                    K, blocks, n1, n2, L, R, &fq);
        if (rc)
            return fq_error("%s: CUDA error in transform_cols_kernel (%zu bytes of shared "
                            "memory): %s (expected success)", where, smem_cols,
                            cudaGetErrorString(cudaGetLastError()));
        if (fq.barrier)
            return FQ_OK;
        const int blen = K / kblocks, nchunk = (blen / 8 + QC_WORDS - 1) / QC_WORDS;
        CU_CHECK(fq_launch(ctx, quant_cols_kernel, dim3(kblocks * nchunk, M), dim3(FQ_BLOCK), 0,
                           d, nconsumers, (const float *)y_ws, (const float *)part, K, blocks,
                           n1, n2, ncb, kblocks, nchunk, qmax),
                 FILE_, fn, "quant_cols_kernel");
        return FQ_OK;
    }
    if (pro.kind == PRO_NONE && fq_transform_quant_tc_takes(ctx, M, K, blocks, n1, n2, L != nullptr,
                                                       R != nullptr, kblocks))
        return w4a4_quant_tc_launch(ctx, where, d, nconsumers, x, M, K, blocks, n1, n2, L, R,
                                    qmax);
    if (ctx->transform_gemm && L && R && pro.kind == PRO_NONE)
        return transform_quant_gemm(ctx, where, d, nconsumers, x, M, K, blocks, n1, n2, L, R,
                                    kblocks, qmax);
    const size_t smem = 2 * sizeof(float) * (size_t)n1 * n2;
    auto kern = rb8 ? transform_quant_kernel<8> : transform_quant_kernel<1>;
    CU_CHECK(fq_smem_optin((const void *)kern, ctx->device, (int)smem), FILE_, fn,
             "cudaFuncSetAttribute");
    kern<<<M, FQ_BLOCK, smem, st>>>(d, nconsumers, x, K, blocks, n1, n2, L, R, kblocks, qmax);
    LAUNCH_CHECK(FILE_, fn, "transform_quant_kernel");
    return FQ_OK;
}

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
    const prologue none = {PRO_NONE, nullptr, 0.f, nullptr};
    return transform_quant_run(ctx, where, dst, nconsumers, x, none, M, K, blocks, n1, n2, L, R,
                               kblocks, bits);
}

extern "C" int fq_transform_quant_fuses(const fq_cuda_ctx *ctx, int M, int K, int blocks,
                                        int n1, int n2, int kblocks)
{
    return ctx && n1 > 0 && n2 > 0 && n1 * n2 <= MAX_BLOCK_VALUES &&
           decode_path_smem(ctx, M, K, blocks, n1, n2, kblocks) > 0;
}

extern "C" int fq_norm_transform_quant_cuda(fq_cuda_ctx *ctx, const fq_quant_dst *dst,
                                            int nconsumers, const uint16_t *x,
                                            const float *gamma, float eps, int M, int K, int n1,
                                            int n2, const float *L, const float *R, int bits)
{
    const char *where = FILE_ ":fq_norm_transform_quant_cuda";
    if (!ctx)
        return fq_error("%s: NULL context (expected an initialised fq_cuda_ctx)", where);
    if (w4a4_check_quant(where, dst, nconsumers, x, M, K, 1, n1, n2, 1, bits))
        return FQ_ERR;
    if (!gamma || (uintptr_t)gamma % 16 || !(eps >= 0.f))
        return fq_error("%s: gamma %p, eps %g (expected a 16-byte aligned device vector and "
                        "eps >= 0)", where, (const void *)gamma, (double)eps);
    if (!fq_transform_quant_fuses(ctx, M, K, 1, n1, n2, 1))
        return fq_error("%s: M = %d, K = %d, n1·n2 = %d·%d (expected the decode kernel's "
                        "shapes: fq_transform_quant_fuses)", where, M, K, n1, n2);
    const prologue pro = {PRO_RMSNORM, gamma, eps, nullptr};
    return transform_quant_run(ctx, where, dst, nconsumers, x, pro, M, K, 1, n1, n2, L, R, 1,
                               bits);
}

extern "C" int fq_swiglu_transform_quant_cuda(fq_cuda_ctx *ctx, const fq_quant_dst *dst,
                                              int nconsumers, const uint16_t *gate,
                                              const uint16_t *up, int M, int K, int blocks,
                                              int n1, int n2, const float *L, const float *R,
                                              int kblocks, int bits)
{
    const char *where = FILE_ ":fq_swiglu_transform_quant_cuda";
    if (!ctx)
        return fq_error("%s: NULL context (expected an initialised fq_cuda_ctx)", where);
    if (w4a4_check_quant(where, dst, nconsumers, gate, M, K, blocks, n1, n2, kblocks, bits))
        return FQ_ERR;
    if (!up || (uintptr_t)up % 16)
        return fq_error("%s: up %p (expected a 16-byte aligned device buffer)", where,
                        (const void *)up);
    if (!fq_transform_quant_fuses(ctx, M, K, blocks, n1, n2, kblocks))
        return fq_error("%s: M = %d, K = %d, blocks %d, n1·n2 = %d·%d (expected the decode "
                        "kernel's shapes: fq_transform_quant_fuses)", where, M, K, blocks, n1,
                        n2);
    const prologue pro = {PRO_SWIGLU, nullptr, 0.f, up};
    return transform_quant_run(ctx, where, dst, nconsumers, gate, pro, M, K, blocks, n1, n2, L,
                               R, kblocks, bits);
}
