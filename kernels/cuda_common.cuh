/* cuda_common.cuh — what every kernels/ file shares: error checks that name the
 * kernel, block-wide reductions, and the row-major view of cuBLAS.
 *
 * Checks: CU_CHECK(call, where, what) and LAUNCH_CHECK(where, kernel) turn a CUDA error
 * into fq_error("FILE:where: CUDA error in KERNEL: message (expected …)") and return FQ_ERR,
 * one word at the call site (the llm.c cudaCheck habit, but returning instead of exiting,
 * since only main decides). Reductions are the usual warp-shuffle + shared-memory tree;
 * kernels that use them launch with FQ_BLOCK threads (a multiple of 32, at most 1024).
 */
#ifndef FQ_CUDA_COMMON_CUH
#define FQ_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "error.h"
}
#include "kernels/flatq_cuda.h"

#define FQ_BLOCK 256

#define CU_CHECK(call, file, where, what)                                                    \
    do {                                                                                     \
        cudaError_t fq_e_ = (call);                                                          \
        if (fq_e_ != cudaSuccess)                                                            \
            return fq_error("%s:%s: CUDA error in %s: %s (expected success)", file, where,   \
                            what, cudaGetErrorString(fq_e_));                                \
    } while (0)

#define LAUNCH_CHECK(file, where, kernel) CU_CHECK(cudaGetLastError(), file, where, kernel)

#define CTX_STREAM(ctx) ((cudaStream_t)(ctx)->stream)
#define CTX_CUBLAS(ctx) ((cublasHandle_t)(ctx)->cublas)

/* The two bf16 values of a 32-bit word as fp32, exactly (low half first), and the pairs of
 * NW words into f[0 .. 2·NW): the one unpacking of every kernel that reads bf16 rows. */
__device__ __forceinline__ float bf16_lo(uint32_t x) { return __uint_as_float(x << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t x) { return __uint_as_float(x & 0xFFFF0000u); }
template <int NW>
__device__ __forceinline__ void bf16_unpack(const uint32_t (&w)[NW], float (&f)[2 * NW])
{
#pragma unroll
    for (int e = 0; e < NW; e++) {
        f[2 * e] = bf16_lo(w[e]);
        f[2 * e + 1] = bf16_hi(w[e]);
    }
}

/* silu(g)·u in fp32: the one SwiGLU formula of every GPU path (the calibration op, the
 * runtime's kernel and the decode transform's fused load), so they round alike. */
__device__ __forceinline__ float fq_silu_mul(float g, float u)
{
    return g / (1.0f + expf(-g)) * u;
}

/* Programmatic dependent launch (ctx->pdl, sm_90). A kernel launched by fq_launch with
 * ctx->pdl set may begin before its predecessor in the stream has finished: everything it
 * does before pdl_wait() must touch only data no earlier kernel writes (weights, factors,
 * its own shared memory); pdl_wait() returns when the predecessor (and so, transitively,
 * every earlier kernel) has completed and its writes are visible. pdl_launch_dependents()
 * lets the next kernel start now instead of at this one's end. Both are no-ops in a kernel
 * launched without the attribute, so the kernels call them unconditionally. */
__device__ __forceinline__ void pdl_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* CTAs of fn (threads, dynamic smem bytes) that one multiprocessor holds at once, cached
 * per kernel, device and shape (the query costs host time on every decode step otherwise);
 * 0 when the query fails. Not thread-safe, like fq_smem_optin. */
static inline int fq_max_resident(const void *fn, int device, int threads, size_t smem)
{
    struct entry {
        const void *fn;
        int device, threads;
        size_t smem;
        int n;
    };
    static entry tab[32];
    static int used;
    for (int i = 0; i < used; i++)
        if (tab[i].fn == fn && tab[i].device == device && tab[i].threads == threads &&
            tab[i].smem == smem)
            return tab[i].n;
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, fn, threads, smem) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    if (used < 32)
        tab[used++] = {fn, device, threads, smem, n};
    return n;
}

/* Every CTA of the grid waits here until all have arrived (counter, target from
 * fq_cuda_grid_barrier): the writes each made before are visible after. The grid must fit
 * on the GPU at once (the caller checks the occupancy), or this never returns. */
__device__ __forceinline__ void grid_arrive_wait(unsigned long long *counter,
                                                 unsigned long long target)
{
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        atomicAdd(counter, 1ULL);
        while (*(volatile unsigned long long *)counter < target)
            __nanosleep(64);
        __threadfence();
    }
    __syncthreads();
}

/* kern<<<grid, block, smem, ctx's stream>>>(args…), as a programmatic dependent when ctx->pdl */
template <typename... P, typename... A>
static inline cudaError_t fq_launch(const fq_cuda_ctx *ctx, void (*kern)(P...), dim3 grid,
                                    dim3 block, size_t smem, A... args)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = CTX_STREAM(ctx);
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = ctx->pdl ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kern, args...);
}

/* cudaFuncSetAttribute(fn, MaxDynamicSharedMemorySize, bytes) once per kernel, device and
 * size: the call costs host time on every launch of a decode step otherwise. The table is
 * per translation unit (each file caches its own kernels); when it is full the attribute
 * is simply set on every call. Not thread-safe: one host thread drives a context. */
static inline cudaError_t fq_smem_optin(const void *fn, int device, int bytes)
{
    struct entry {
        const void *fn;
        int device, bytes;
    };
    static entry tab[32];
    static int n;
    int at = -1;
    for (int i = 0; i < n; i++)
        if (tab[i].fn == fn && tab[i].device == device) {
            if (tab[i].bytes >= bytes)
                return cudaSuccess;
            at = i;
        }
    cudaError_t e = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (e != cudaSuccess)
        return e;
    if (at < 0 && n < 32)
        at = n++;
    if (at >= 0)
        tab[at] = entry{fn, device, bytes};
    return cudaSuccess;
}

static inline unsigned fq_grid(size_t n, unsigned block)
{
    size_t g = (n + block - 1) / block;
    return (unsigned)(g > 65535u * 32u ? 65535u * 32u : g);
}

/* The CPU's quant_sigmoid 1/(1 + expf(−x)) bit for bit: exp in double rounded to float
 * equals glibc's correctly rounded expf. */
__device__ inline float sigmoid_like_cpu(float x)
{
    float e = (float)exp(-(double)x);
    return 1.0f / (1.0f + e);
}

/* Reductions over a whole block; every thread gets the result. `sh` holds 32 values. */
__device__ inline float block_sum(float v, float *sh)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ inline float block_max(float v, float *sh)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ inline float block_min(float v, float *sh)
{
    return -block_max(-v, sh);
}

/* One warp folds a tile of NT attention scores (row[lane + 32·i]) into a running softmax
 * (m: max so far, l: sum so far): row ← exp(row − m_new); lane 0 stores the rescale
 * factor alpha = exp(m_old − m_new) for the output accumulator and the new m and l.
 * Shared by the KV4 attention kernels and the BF16-KV baseline of bench/bench_w4a4.cu. */
template <int NT>
__device__ __forceinline__ void online_softmax_tile_warp(float *row, float &m, float &l,
                                                         float &alpha, int lane)
{
    float v[NT / 32], mt = -INFINITY;
#pragma unroll
    for (int i = 0; i < NT / 32; i++) {
        v[i] = row[lane + 32 * i];
        mt = fmaxf(mt, v[i]);
    }
    for (int off = 16; off > 0; off >>= 1)
        mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, off));
    const float mold = m, mnew = fmaxf(mold, mt);
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < NT / 32; i++) {
        float e = __expf(v[i] - mnew);
        row[lane + 32 * i] = e;
        sum += e;
    }
    for (int off = 16; off > 0; off >>= 1)
        sum += __shfl_xor_sync(0xffffffffu, sum, off);
    __syncwarp();
    if (lane == 0) {
        float al = __expf(mold - mnew);
        alpha = al;
        l = l * al + sum;
        m = mnew;
    }
}

/* cuBLAS is column-major: a row-major [M,N] matrix is its column-major transpose, so
 * row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands. */
int fq_gemm_strided_cuda(fq_cuda_ctx *ctx, int trans_a, int trans_b, int m, int n, int k,
                         float alpha, const float *a, int lda, long long stride_a,
                         const float *b, int ldb, long long stride_b, float beta, float *c,
                         int ldc, long long stride_c, int batch, const char *where);
/* fq_gemm_strided_exact_cuda (the transforms' fp32 GEMMs): flatq_cuda.h */

#endif
