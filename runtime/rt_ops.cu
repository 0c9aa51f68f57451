/* rt_ops.cu — the small bf16 kernels of the inference runtime (see rt_ops.h).
 *
 * These are memory-bound elementwise and per-row ops around the GEMMs, written plainly:
 * one thread block per row where a row reduction is needed (RMSNorm, argmax), a grid-stride
 * loop otherwise. The FP model's attention reads a bf16 KV cache with one block per
 * (sequence, query, head): four warps split the keys, lanes split the head dimension, each
 * warp keeps an online softmax and the warps merge at the end — simple, exact in fp32,
 * and good enough next to the GEMMs at the model sizes flatq serves (kernels/ holds the
 * tuned W4A4 and KV4 attention).
 */
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>

#include "kernels/cuda_common.cuh"
#include "runtime/rt_ops.h"

#define F "runtime/rt_ops.cu"

__device__ __forceinline__ float bf(uint16_t u)
{
    return __uint_as_float((uint32_t)u << 16);
}

__device__ __forceinline__ uint16_t to_bf(float f)
{
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

#define ARGCHECK(cond, fn, ...)                                                              \
    do {                                                                                     \
        if (!(cond))                                                                         \
            return fq_error(F ":" fn ": " __VA_ARGS__);                                       \
    } while (0)

/* ---- memory ---- */

int rt_alloc(void **dptr, size_t bytes, const char *what)
{
    ARGCHECK(dptr, "rt_alloc", "NULL pointer for %s (expected an address)", what);
    *dptr = NULL;
    cudaError_t e = cudaMalloc(dptr, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        *dptr = NULL;
        size_t fr = 0, tot = 0;
        (void)cudaGetLastError();
        cudaMemGetInfo(&fr, &tot);
        return fq_error(F ":rt_alloc: cannot allocate %.1f MiB of GPU memory for %s: %s "
                        "(%.1f of %.1f GiB free; expected a smaller model, batch or context, "
                        "or more tensor-parallel ranks)", bytes / 1048576.0, what,
                        cudaGetErrorString(e), fr / 1073741824.0, tot / 1073741824.0);
    }
    return FQ_OK;
}

int rt_upload(fq_cuda_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    CU_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, CTX_STREAM(ctx)), F,
             "rt_upload", "cudaMemcpyAsync");
    CU_CHECK(cudaStreamSynchronize(CTX_STREAM(ctx)), F, "rt_upload", "cudaStreamSynchronize");
    return FQ_OK;
}

int rt_download(fq_cuda_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    CU_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, CTX_STREAM(ctx)), F,
             "rt_download", "cudaMemcpyAsync");
    CU_CHECK(cudaStreamSynchronize(CTX_STREAM(ctx)), F, "rt_download",
             "cudaStreamSynchronize");
    return FQ_OK;
}

int rt_memset0(fq_cuda_ctx *ctx, void *dst, size_t bytes)
{
    CU_CHECK(cudaMemsetAsync(dst, 0, bytes, CTX_STREAM(ctx)), F, "rt_memset0",
             "cudaMemsetAsync");
    return FQ_OK;
}

int rt_mem_info(size_t *free_bytes, size_t *total_bytes)
{
    CU_CHECK(cudaMemGetInfo(free_bytes, total_bytes), F, "rt_mem_info", "cudaMemGetInfo");
    return FQ_OK;
}

/* ---- elementwise and per-row ops ---- */

__global__ void embed_kernel(uint16_t *x, const uint16_t *embed, const int32_t *ids, int n,
                             int d)
{
    size_t total = (size_t)n * d;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / d, c = i % d;
        x[i] = embed[(size_t)ids[t] * d + c];
    }
}

int rt_embed_bf16(fq_cuda_ctx *ctx, uint16_t *x, const uint16_t *embed, const int32_t *ids,
                  int n, int d)
{
    ARGCHECK(n > 0 && d > 0, "rt_embed_bf16", "n=%d d=%d (expected positive)", n, d);
    embed_kernel<<<fq_grid((size_t)n * d, FQ_BLOCK), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(
        x, embed, ids, n, d);
    LAUNCH_CHECK(F, "rt_embed_bf16", "embed_kernel");
    return FQ_OK;
}

__global__ void rmsnorm_kernel(uint16_t *out, const uint16_t *x, const float *gamma, int d,
                               float eps)
{
    __shared__ float sh[32];
    pdl_wait();
    pdl_launch_dependents();
    const uint16_t *row = x + (size_t)blockIdx.x * d;
    float ss = 0;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float v = bf(row[c]);
        ss += v * v;
    }
    ss = block_sum(ss, sh);
    float r = rsqrtf(ss / d + eps);
    uint16_t *o = out + (size_t)blockIdx.x * d;
    for (int c = threadIdx.x; c < d; c += blockDim.x)
        o[c] = to_bf(gamma[c] * (bf(row[c]) * r));
}

/* d % 8 == 0: 16-byte loads and stores of 8 values. A decode step normalises one row per
 * sequence, so one CTA's latency is the op's time: 2-byte loads in a 32-deep loop cost
 * ~20 µs per row at d = 8192, this ~4× fewer, independent, wider accesses. The sum of
 * squares is taken in another order than rmsnorm_kernel's (same fp32 math otherwise). */
__global__ void rmsnorm8_kernel(uint16_t *out, const uint16_t *x, const float *gamma, int d,
                                float eps)
{
    __shared__ float sh[32];
    pdl_wait();
    pdl_launch_dependents();
    const uint4 *row = reinterpret_cast<const uint4 *>(x + (size_t)blockIdx.x * d);
    const int nv = d / 8;
    float ss = 0;
    for (int i = threadIdx.x; i < nv; i += blockDim.x) {
        uint4 v = row[i];
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float lo = bf16_lo(w[e]), hi = bf16_hi(w[e]);
            ss += lo * lo + hi * hi;
        }
    }
    ss = block_sum(ss, sh);
    const float r = rsqrtf(ss / d + eps);
    uint4 *o = reinterpret_cast<uint4 *>(out + (size_t)blockIdx.x * d);
    const float4 *g = reinterpret_cast<const float4 *>(gamma);
    for (int i = threadIdx.x; i < nv; i += blockDim.x) {
        uint4 v = row[i];
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
        const float4 g0 = g[2 * i], g1 = g[2 * i + 1];
        const float gg[8] = {g0.x, g0.y, g0.z, g0.w, g1.x, g1.y, g1.z, g1.w};
        uint32_t ow[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float lo = bf16_lo(w[e]), hi = bf16_hi(w[e]);
            ow[e] = (uint32_t)to_bf(gg[2 * e] * (lo * r)) |
                    ((uint32_t)to_bf(gg[2 * e + 1] * (hi * r)) << 16);
        }
        o[i] = make_uint4(ow[0], ow[1], ow[2], ow[3]);
    }
}

int rt_rmsnorm_bf16(fq_cuda_ctx *ctx, uint16_t *out, const uint16_t *x, const float *gamma,
                    int n, int d, float eps)
{
    ARGCHECK(n > 0 && d > 0, "rt_rmsnorm_bf16", "n=%d d=%d (expected positive)", n, d);
    const bool wide = d % 8 == 0 && (uintptr_t)out % 16 == 0 && (uintptr_t)x % 16 == 0 &&
                      (uintptr_t)gamma % 16 == 0;
    /* a decode step normalises a few rows, each on one CTA whose latency is the op's time:
     * one 16-byte load per thread there (up to 1024 threads), FQ_BLOCK for prefill */
    const int nv = d / 8, few = (nv + 31) / 32 * 32;
    const int threads = n <= 16 && few > FQ_BLOCK ? (few < 1024 ? few : 1024) : FQ_BLOCK;
    if (wide)
        CU_CHECK(fq_launch(ctx, rmsnorm8_kernel, dim3(n), dim3(threads), 0, out, x, gamma, d, eps),
                 F, "rt_rmsnorm_bf16", "rmsnorm8_kernel");
    else
        CU_CHECK(fq_launch(ctx, rmsnorm_kernel, dim3(n), dim3(FQ_BLOCK), 0, out, x, gamma, d, eps),
                 F, "rt_rmsnorm_bf16", "rmsnorm_kernel");
    return FQ_OK;
}

/* The position of vector `vec` of a [B, n, heads, ·] activation: its sequence's first
 * position plus its token index in this forward. */
__device__ __forceinline__ int rope_position(size_t vec, int heads, int n, const int32_t *pos0)
{
    size_t tok = vec / heads;
    return pos0[tok / n] + (int)(tok % n);
}

/* The pair (u1, u2) = (x[i], x[i + dh/2]) rotated by the angle whose cos/sin are c, s;
 * one expression for both RoPE kernels, so they round alike. */
__device__ __forceinline__ float2 rope_rotate(float u1, float u2, float c, float s)
{
    return make_float2(u1 * c - u2 * s, u2 * c + u1 * s);
}

/* out[j] = Σ_i xs[i] M[i, j], i ascending (xs staged in shared memory), rounded to bf16.
 * The loads of M come 16 at a time ahead of their FMAs: as one dependent load per FMA the
 * 128-long sum took one L2 latency per term (rope_mk_kernel 26 µs per decode step at dh
 * 128, Nsight Compute, session 7). Same FMAs in the same order, so the same bits. */
__device__ __forceinline__ void vec_times_matrix(uint16_t *out, const float *xs, int dh,
                                                 const float *__restrict__ M)
{
    constexpr int U = 16;
    for (int j = threadIdx.x; j < dh; j += blockDim.x) {
        float acc = 0;
        int i = 0;
        for (; i + U <= dh; i += U) {
            float m[U];
#pragma unroll
            for (int e = 0; e < U; e++)
                m[e] = __ldg(M + (size_t)(i + e) * dh + j);
#pragma unroll
            for (int e = 0; e < U; e++)
                acc = fmaf(xs[i + e], m[e], acc);
        }
        for (; i < dh; i++)
            acc = fmaf(xs[i], __ldg(M + (size_t)i * dh + j), acc);
        out[j] = to_bf(acc);
    }
}

/* threads of a one-CTA-per-vector kernel over vectors of dh */
static int vec_threads(int dh) { return dh < 128 ? 32 * ((dh + 31) / 32) : 128; }

/* one thread per (token, head, i < dh/2): rotates the pair (i, i + dh/2) */
__global__ void rope_kernel(uint16_t *x, int B, int n, int heads, int dh, const int32_t *pos0,
                            const float *cs, const float *sn)
{
    int half = dh / 2;
    size_t total = (size_t)B * n * heads * half;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total;
         t += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(t % half);
        size_t vec = t / half; /* (b, token, head) */
        int p = rope_position(vec, heads, n, pos0);
        uint16_t *u = x + vec * dh;
        float2 r = rope_rotate(bf(u[i]), bf(u[i + half]), cs[(size_t)p * half + i],
                               sn[(size_t)p * half + i]);
        u[i] = to_bf(r.x);
        u[i + half] = to_bf(r.y);
    }
}

int rt_rope_bf16(fq_cuda_ctx *ctx, uint16_t *x, int B, int n, int heads, int dh,
                 const int32_t *pos0, const float *cos, const float *sin)
{
    ARGCHECK(B > 0 && n > 0 && heads > 0 && dh > 0 && dh % 2 == 0, "rt_rope_bf16",
             "B=%d n=%d heads=%d dh=%d (expected positive sizes, dh even)", B, n, heads, dh);
    size_t total = (size_t)B * n * heads * (dh / 2);
    rope_kernel<<<fq_grid(total, FQ_BLOCK), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(x, B, n, heads, dh,
                                                                             pos0, cos, sin);
    LAUNCH_CHECK(F, "rt_rope_bf16", "rope_kernel");
    return FQ_OK;
}

/* one block per vector: stage it in shared memory, then y[j] = Σ_i x[i] M[i, j] */
__global__ void vec_transform_kernel(uint16_t *x, int dh, const float *M)
{
    extern __shared__ float xs[];
    uint16_t *v = x + (size_t)blockIdx.x * dh;
    for (int i = threadIdx.x; i < dh; i += blockDim.x)
        xs[i] = bf(v[i]);
    __syncthreads();
    vec_times_matrix(v, xs, dh, M);
}

int rt_vec_transform_bf16(fq_cuda_ctx *ctx, uint16_t *x, int nvec, int dh, const float *M)
{
    ARGCHECK(nvec > 0 && dh > 0 && dh <= 4096, "rt_vec_transform_bf16",
             "nvec=%d dh=%d (expected positive, dh <= 4096)", nvec, dh);
    vec_transform_kernel<<<nvec, vec_threads(dh), sizeof(float) * dh, CTX_STREAM(ctx)>>>(x, dh, M);
    LAUNCH_CHECK(F, "rt_vec_transform_bf16", "vec_transform_kernel");
    return FQ_OK;
}

/* Which input the rope/M kernels' index idx falls in (q's first, then k's, then v's, with
 * bq and bk indices for q and k) and its index within that input. */
struct mk_kind {
    uint16_t *base;
    const float *M;
    int heads, rope, is_q, idx;
};
__device__ __forceinline__ mk_kind mk_pick(int idx, int bq, int bk, uint16_t *q, uint16_t *k,
                                           uint16_t *v, int hq, int hk, const float *Mq,
                                           const float *Mk, const float *Mv)
{
    if (idx >= bq + bk)
        return {v, Mv, hk, 0, 0, idx - bq - bk};
    if (idx >= bq)
        return {k, Mk, hk, 1, 0, idx - bq};
    return {q, Mq, hq, 1, 1, idx};
}

/* Elements i and i + dh/2 of vector vec (u) into x as the product reads them: rotated and
 * rounded to bf16 when rope, else as stored. */
__device__ __forceinline__ void mk_stage_pair(float *x, const uint16_t *u, int i, int half, int rope,
                                              size_t vec, int heads, int n, const int32_t *pos0,
                                              const float *cs, const float *sn)
{
    if (rope) {
        const int p = rope_position(vec, heads, n, pos0);
        float2 r = rope_rotate(bf(u[i]), bf(u[i + half]), cs[(size_t)p * half + i],
                               sn[(size_t)p * half + i]);
        x[i] = bf(to_bf(r.x));
        x[i + half] = bf(to_bf(r.y));
    } else {
        x[i] = bf(u[i]);
        x[i + half] = bf(u[i + half]);
    }
}

/* The decode step's five small launches (RoPE on q and k, then q·M_k^{−T}, k·M_k, v·M_v)
 * as one: a CTA per vector of q, then of k, then of v. The rotated values are rounded to
 * bf16 before the product, and the product sums in the same order, so the bits are those
 * of rt_rope_bf16 followed by rt_vec_transform_bf16 (tests/gpu/test_gpu_runtime.c). */
__global__ void rope_mk_kernel(uint16_t *q, uint16_t *k, uint16_t *v, int nq, int nk, int hq,
                               int hk, int n, int dh, const int32_t *pos0, const float *cs,
                               const float *sn, const float *Mq, const float *Mk,
                               const float *Mv)
{
    extern __shared__ float xs[];
    pdl_wait();
    pdl_launch_dependents();
    const mk_kind kd = mk_pick(blockIdx.x, nq, nk, q, k, v, hq, hk, Mq, Mk, Mv);
    uint16_t *u = kd.base + (size_t)kd.idx * dh;
    const int half = dh / 2;
    for (int i = threadIdx.x; i < half; i += blockDim.x)
        mk_stage_pair(xs, u, i, half, kd.rope, (size_t)kd.idx, kd.heads, n, pos0, cs, sn);
    __syncthreads();
    vec_times_matrix(u, xs, dh, kd.M);
}

/* The same at prefill sizes: a CTA takes MK_VECS vectors of one kind (q, k or v) and its
 * matrix, both staged in shared memory, and each thread sums MK_RV vectors × 4 columns,
 * i ascending with one fmaf per term as vec_times_matrix, so the same bits (test_gpu_runtime
 * compares the two). The one-CTA-per-vector kernel read M through L1 once per vector:
 * 4.1 ms of a 70B layer's 54 ms prefill of 8 × 2048 tokens on an H200 (session 12), for
 * 43 GFLOP (q·M_q is 64 heads × 128 × 128 per token). */
constexpr int MK_RV = 8, MK_THREADS = 256, MK_MAX_DH = 128;
__global__ void __launch_bounds__(MK_THREADS)
    rope_mk_tiled_kernel(uint16_t *q, uint16_t *k, uint16_t *v, int nq, int nk, int hq, int hk,
                         int n, int dh, const int32_t *pos0, const float *cs, const float *sn,
                         const float *Mq, const float *Mk, const float *Mv)
{
    extern __shared__ float mk_smem[];
    const int jt = dh / 4, vgroups = MK_THREADS / jt, nvec = vgroups * MK_RV;
    float *Ms = mk_smem, *xs = mk_smem + (size_t)dh * dh; /* M [dh, dh], vectors [nvec, dh] */
    /* which kind this CTA holds: q's CTAs, then k's, then v's */
    const mk_kind kd = mk_pick(blockIdx.x, (nq + nvec - 1) / nvec, (nk + nvec - 1) / nvec, q, k,
                               v, hq, hk, Mq, Mk, Mv);
    uint16_t *const base = kd.base;
    for (int i = threadIdx.x; i < dh * dh / 4; i += MK_THREADS)
        reinterpret_cast<float4 *>(Ms)[i] = __ldg(reinterpret_cast<const float4 *>(kd.M) + i);
    pdl_wait();
    pdl_launch_dependents();
    const int v0 = kd.idx * nvec, nv = min(nvec, (kd.is_q ? nq : nk) - v0), half = dh / 2;
    for (int e = threadIdx.x; e < nv * half; e += MK_THREADS) {
        const int vl = e / half, i = e - vl * half;
        const size_t vec = (size_t)v0 + vl;
        mk_stage_pair(xs + (size_t)vl * dh, base + vec * dh, i, half, kd.rope, vec, kd.heads, n,
                      pos0, cs, sn);
    }
    __syncthreads();
    const int j0 = 4 * (threadIdx.x % jt), vg = threadIdx.x / jt;
    if (vg >= vgroups)
        return;
    float acc[MK_RV][4];
#pragma unroll
    for (int r = 0; r < MK_RV; r++)
#pragma unroll
        for (int c = 0; c < 4; c++)
            acc[r][c] = 0.f;
    for (int i = 0; i < dh; i++) {
        const float4 m = *reinterpret_cast<const float4 *>(Ms + (size_t)i * dh + j0);
#pragma unroll
        for (int r = 0; r < MK_RV; r++) {
            const float xv = xs[(size_t)(vg + r * vgroups) * dh + i];
            acc[r][0] = fmaf(xv, m.x, acc[r][0]);
            acc[r][1] = fmaf(xv, m.y, acc[r][1]);
            acc[r][2] = fmaf(xv, m.z, acc[r][2]);
            acc[r][3] = fmaf(xv, m.w, acc[r][3]);
        }
    }
#pragma unroll
    for (int r = 0; r < MK_RV; r++) {
        const int vl = vg + r * vgroups;
        if (vl >= nv)
            continue;
        uint16_t *u = base + ((size_t)v0 + vl) * dh + j0;
#pragma unroll
        for (int c = 0; c < 4; c++)
            u[c] = to_bf(acc[r][c]);
    }
}

/* the tiled kernel's shared memory: M and the CTA's vectors */
static size_t mk_tiled_smem(int dh)
{
    const int nvec = MK_THREADS / (dh / 4) * MK_RV;
    return sizeof(float) * ((size_t)dh * dh + (size_t)nvec * dh);
}

int rt_rope_mk_bf16(fq_cuda_ctx *ctx, uint16_t *q, uint16_t *k, uint16_t *v, int B, int n,
                    int hq, int hk, int dh, const int32_t *pos0, const float *cos,
                    const float *sin, const float *Mq, const float *Mk, const float *Mv)
{
    ARGCHECK(B > 0 && n > 0 && hq > 0 && hk > 0 && dh > 0 && dh % 2 == 0 && dh <= 4096 && q &&
                 k && Mq && Mk && (!Mv || v),
             "rt_rope_mk_bf16", "B=%d n=%d heads=%d/%d dh=%d (expected positive sizes, dh even "
             "and <= 4096, q, k, M_q, M_k, and v when M_v is given)", B, n, hq, hk, dh);
    int nq = B * n * hq, nk = B * n * hk, nv = Mv ? nk : 0;
    /* prefill sizes (a CTA per vector would leave the matrix in L1): the tiled kernel */
    if (n >= 16 && dh % 4 == 0 && dh <= MK_MAX_DH && MK_THREADS % (dh / 4) == 0) {
        const int nvec = MK_THREADS / (dh / 4) * MK_RV;
        const int ctas = (nq + nvec - 1) / nvec + (nk + nvec - 1) / nvec + (nv + nvec - 1) / nvec;
        const size_t smem = mk_tiled_smem(dh);
        CU_CHECK(fq_smem_optin((const void *)rope_mk_tiled_kernel, ctx->device, (int)smem), F,
                 "rt_rope_mk_bf16", "cudaFuncSetAttribute");
        CU_CHECK(fq_launch(ctx, rope_mk_tiled_kernel, dim3(ctas), dim3(MK_THREADS), smem, q, k, v,
                           nq, nk, hq, hk, n, dh, pos0, cos, sin, Mq, Mk, Mv),
                 F, "rt_rope_mk_bf16", "rope_mk_tiled_kernel");
        return FQ_OK;
    }
    CU_CHECK(fq_launch(ctx, rope_mk_kernel, dim3(nq + nk + nv), dim3(vec_threads(dh)),
                       sizeof(float) * dh, q, k, v, nq, nk, hq, hk, n, dh, pos0, cos, sin, Mq,
                       Mk, Mv),
             F, "rt_rope_mk_bf16", "rope_mk_kernel");
    return FQ_OK;
}

__global__ void swiglu_kernel(uint16_t *out, const uint16_t *gate, const uint16_t *up, size_t n)
{
    pdl_wait();
    pdl_launch_dependents();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        out[i] = to_bf(fq_silu_mul(bf(gate[i]), bf(up[i])));
    }
}

int rt_swiglu_bf16(fq_cuda_ctx *ctx, uint16_t *out, const uint16_t *gate, const uint16_t *up,
                   size_t n)
{
    ARGCHECK(n > 0, "rt_swiglu_bf16", "n=0 (expected elements)");
    CU_CHECK(fq_launch(ctx, swiglu_kernel, dim3(fq_grid(n, FQ_BLOCK)), dim3(FQ_BLOCK), 0, out,
                       gate, up, n),
             F, "rt_swiglu_bf16", "swiglu_kernel");
    return FQ_OK;
}

__global__ void kv_write_kernel(uint16_t *kc, uint16_t *vc, const uint16_t *k,
                                const uint16_t *v, int B, int n, int g, int dh, int max_ctx,
                                const int32_t *pos0)
{
    size_t total = (size_t)B * n * g * dh;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int e = (int)(i % dh);
        size_t r = i / dh;
        int hh = (int)(r % g);
        size_t tok = r / g;
        int b = (int)(tok / n), p = pos0[b] + (int)(tok % n);
        size_t dst = (((size_t)b * g + hh) * max_ctx + p) * dh + e;
        kc[dst] = k[i];
        vc[dst] = v[i];
    }
}

int rt_kv_write_bf16(fq_cuda_ctx *ctx, uint16_t *kc, uint16_t *vc, const uint16_t *k,
                     const uint16_t *v, int B, int n, int g, int dh, int max_ctx,
                     const int32_t *pos0)
{
    ARGCHECK(B > 0 && n > 0 && g > 0 && dh > 0 && n <= max_ctx, "rt_kv_write_bf16",
             "B=%d n=%d g=%d dh=%d max_ctx=%d (expected positive sizes, n <= max_ctx)", B, n,
             g, dh, max_ctx);
    size_t total = (size_t)B * n * g * dh;
    kv_write_kernel<<<fq_grid(total, FQ_BLOCK), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(
        kc, vc, k, v, B, n, g, dh, max_ctx, pos0);
    LAUNCH_CHECK(F, "rt_kv_write_bf16", "kv_write_kernel");
    return FQ_OK;
}

/* ---- GEMMs (cuBLAS, row-major through the transposed view, see cuda_common.cuh) ---- */

static int gemm_ex(fq_cuda_ctx *ctx, void *y, cudaDataType_t yt, const uint16_t *x,
                   const uint16_t *w, int n, int in, int o, float beta, const char *where)
{
    ARGCHECK(n > 0 && in > 0 && o > 0, "rt_linear", "%s: n=%d in=%d o=%d (expected positive)",
             where, n, in, o);
    float alpha = 1.0f;
    cublasStatus_t s = cublasGemmEx(CTX_CUBLAS(ctx), CUBLAS_OP_T, CUBLAS_OP_N, o, n, in, &alpha,
                                    w, CUDA_R_16BF, in, x, CUDA_R_16BF, in, &beta, y, yt, o,
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS)
        return fq_error(F ":%s: cublasGemmEx failed with status %d for n=%d in=%d o=%d "
                        "(expected success)", where, (int)s, n, in, o);
    return FQ_OK;
}

int rt_linear_bf16(fq_cuda_ctx *ctx, uint16_t *y, const uint16_t *x, const uint16_t *w, int n,
                   int in, int o, int accumulate)
{
    return gemm_ex(ctx, y, CUDA_R_16BF, x, w, n, in, o, accumulate ? 1.0f : 0.0f,
                   "rt_linear_bf16");
}

int rt_linear_bf16_f32(fq_cuda_ctx *ctx, float *y, const uint16_t *x, const uint16_t *w, int n,
                       int in, int o)
{
    return gemm_ex(ctx, y, CUDA_R_32F, x, w, n, in, o, 0.0f, "rt_linear_bf16_f32");
}

/* ---- logits ---- */

__global__ void gather_vocab_kernel(float *out, const float *parts, int T, int n, int Vs, int V)
{
    size_t total = (size_t)n * V;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / V;
        int v = (int)(i % V), r = v / Vs, c = v % Vs;
        out[i] = parts[((size_t)r * n + t) * Vs + c];
    }
    (void)T;
}

int rt_gather_vocab(fq_cuda_ctx *ctx, float *out, const float *parts, int T, int n, int Vs,
                    int V)
{
    ARGCHECK(T > 0 && n > 0 && Vs > 0 && V > 0 && (long long)T * Vs >= V, "rt_gather_vocab",
             "T=%d n=%d Vs=%d V=%d (expected T·Vs >= V)", T, n, Vs, V);
    gather_vocab_kernel<<<fq_grid((size_t)n * V, FQ_BLOCK), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(
        out, parts, T, n, Vs, V);
    LAUNCH_CHECK(F, "rt_gather_vocab", "gather_vocab_kernel");
    return FQ_OK;
}

/* One CTA of ARGMAX_THREADS per row, 16-byte loads four deep when the row allows it: the
 * first version (256 threads, one dependent scalar load per step) took 189 µs per decode
 * step on a 128256-word vocabulary (session 7). Ties go to the lowest index. */
constexpr int ARGMAX_THREADS = 1024;
__device__ __forceinline__ void argmax_take(float v, int i, float &best, int &bi)
{
    if (v > best || (v == best && i < bi)) {
        best = v;
        bi = i;
    }
}

__global__ void __launch_bounds__(ARGMAX_THREADS) argmax_kernel(int32_t *ids,
                                                                const float *__restrict__ logits,
                                                                int V)
{
    __shared__ float sv[ARGMAX_THREADS];
    __shared__ int si[ARGMAX_THREADS];
    const float *row = logits + (size_t)blockIdx.x * V;
    float best = -INFINITY;
    int bi = 0x7fffffff;
    int v0 = 0;
    if (V % 4 == 0 && (uintptr_t)row % 16 == 0) {
        const float4 *r4 = reinterpret_cast<const float4 *>(row);
        const int n4 = V / 4;
        constexpr int D = 4;
        for (int base = threadIdx.x; base < n4; base += D * blockDim.x) {
            float4 f[D];
#pragma unroll
            for (int u = 0; u < D; u++) {
                const int i = base + u * blockDim.x;
                f[u] = i < n4 ? __ldg(r4 + i) : make_float4(-INFINITY, -INFINITY, -INFINITY,
                                                             -INFINITY);
            }
#pragma unroll
            for (int u = 0; u < D; u++) {
                if (base + u * (int)blockDim.x >= n4)
                    break; /* past the row: no index beyond V may win, even for a row of −∞ */
                const int i = 4 * (base + u * blockDim.x);
                argmax_take(f[u].x, i, best, bi);
                argmax_take(f[u].y, i + 1, best, bi);
                argmax_take(f[u].z, i + 2, best, bi);
                argmax_take(f[u].w, i + 3, best, bi);
            }
        }
        v0 = V;
    }
    for (int v = v0 + threadIdx.x; v < V; v += blockDim.x)
        argmax_take(row[v], v, best, bi);
    sv[threadIdx.x] = best;
    si[threadIdx.x] = bi;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            argmax_take(sv[threadIdx.x + s], si[threadIdx.x + s], sv[threadIdx.x],
                        si[threadIdx.x]);
        __syncthreads();
    }
    if (threadIdx.x == 0)
        ids[blockIdx.x] = si[0] == 0x7fffffff ? 0 : si[0];
}

int rt_argmax(fq_cuda_ctx *ctx, int32_t *ids, const float *logits, int n, int V)
{
    ARGCHECK(n > 0 && V > 0, "rt_argmax", "n=%d V=%d (expected positive)", n, V);
    argmax_kernel<<<n, ARGMAX_THREADS, 0, CTX_STREAM(ctx)>>>(ids, logits, V);
    LAUNCH_CHECK(F, "rt_argmax", "argmax_kernel");
    return FQ_OK;
}

/* one block per predicted row: the row maximum, then Σ exp(x − max) in double */
__global__ void window_nll_kernel(double *nll, const float *logits, const int32_t *ids, int V)
{
    __shared__ float sm[FQ_BLOCK];
    __shared__ double sd[FQ_BLOCK];
    const float *row = logits + (size_t)blockIdx.x * V;
    float mx = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x)
        mx = fmaxf(mx, row[v]);
    sm[threadIdx.x] = mx;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            sm[threadIdx.x] = fmaxf(sm[threadIdx.x], sm[threadIdx.x + s]);
        __syncthreads();
    }
    const double m = (double)sm[0];
    double sum = 0;
    for (int v = threadIdx.x; v < V; v += blockDim.x)
        sum += exp((double)row[v] - m);
    sd[threadIdx.x] = sum;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            sd[threadIdx.x] += sd[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        nll[blockIdx.x] = m + log(sd[0]) - (double)row[ids[blockIdx.x + 1]];
}

int rt_window_nll(fq_cuda_ctx *ctx, double *nll, const float *logits, const int32_t *ids, int s,
                  int V)
{
    ARGCHECK(s >= 2 && V > 0, "rt_window_nll", "s=%d V=%d (expected a window of >= 2 tokens)",
             s, V);
    window_nll_kernel<<<s - 1, FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(nll, logits, ids, V);
    LAUNCH_CHECK(F, "rt_window_nll", "window_nll_kernel");
    return FQ_OK;
}

__global__ void bf16_from_f32_kernel(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = to_bf(src[i]);
}

__global__ void f32_from_bf16_kernel(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = bf(src[i]);
}

int rt_bf16_from_f32(fq_cuda_ctx *ctx, uint16_t *dst, const float *src, size_t n)
{
    ARGCHECK(n > 0, "rt_bf16_from_f32", "n=0 (expected elements)");
    bf16_from_f32_kernel<<<fq_grid(n, FQ_BLOCK), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(dst, src, n);
    LAUNCH_CHECK(F, "rt_bf16_from_f32", "bf16_from_f32_kernel");
    return FQ_OK;
}

int rt_f32_from_bf16(fq_cuda_ctx *ctx, float *dst, const uint16_t *src, size_t n)
{
    ARGCHECK(n > 0, "rt_f32_from_bf16", "n=0 (expected elements)");
    f32_from_bf16_kernel<<<fq_grid(n, FQ_BLOCK), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(dst, src, n);
    LAUNCH_CHECK(F, "rt_f32_from_bf16", "f32_from_bf16_kernel");
    return FQ_OK;
}

