/* w4a4_gemm.cu — the W4A4 GEMM on Hopper: packed int4 activations × packed int4 weights on
 * int8 tensor cores (mma.sync m16n8k32 s8), int32 accumulation, both scales in the epilogue.
 *
 * The idea. Hopper has no int4 MMA, so nibbles become int8 on the way from shared memory to
 * the tensor core. Two tricks keep that nearly free:
 *  - No sign extension: a nibble placed in the HIGH half of a byte is an int8 equal to 16·q,
 *    so (w << 4) & 0xF0F0F0F0 gives the even elements of a 32-bit word and w & 0xF0F0F0F0 the
 *    odd ones, two logic ops per 8 values. The products are 256× too large; the int32
 *    accumulator stays exact while 64·K·256 < 2^31 (K <= 131072, checked), and an arithmetic
 *    shift by 8 recovers the exact sum.
 *  - A dot product does not care about the order of k as long as A and B use the same one:
 *    the even elements of a thread's word go to the MMA's first 16 k slots and the odd ones to
 *    the last 16, for A and B alike, so each thread feeds its fragments straight from the
 *    words it loaded, without shuffling bytes.
 *
 * Prefill (M > 16): 128×128 tiles, 8 warps of 64×32, K in steps of 128 through a 4-stage
 * cp.async ring; each 64-element half of a step stays within one K-block, so the per-block
 * activation scales (TP, ALGORITHM §7) are applied by flushing the int32 accumulators into
 * fp32 at block ends. Shared memory rows are 64 bytes with the 16-byte chunks XOR-swizzled
 * by (row & 2), which makes the 8-byte fragment loads conflict-free.
 * Decode (M <= 16): a bandwidth kernel; each CTA owns 16 weight rows, its 8 warps stream
 * disjoint K ranges of them with 16-byte loads (8-byte when a K-block is an odd multiple of
 * 64) straight from global memory (every weight
 * byte read once), the activation rows come from L1/L2; partial sums meet in shared memory
 * per K-block with integer atomics (exact, order-free), then one thread per output applies
 * the epilogue.
 * Epilogue (both kernels, identical to core/w4a4_ref.c bit for bit): v = Σ_b acc_b·sx[t,b]
 * in block order, v·sw[o], + residual, round to bf16, with explicit _rn ops (no FMA).
 */
#include <cuda_bf16.h>
#include <stdint.h>
#include <type_traits>

#include "kernels/cuda_common.cuh"
extern "C" {
#include "w4a4_ref.h"
}

#define FILE_ "kernels/w4a4_gemm.cu"

namespace {

constexpr int BM = 128, BN = 128, BKB = 64 /* bytes per row per stage = 128 k */, STAGES = 4;
constexpr int PF_THREADS = 256;
constexpr int STAGE_BYTES = (BM + BN) * BKB;
constexpr int DEC_ROWS = 16, DEC_WARPS = 8, DEC_MAX_KBLOCKS = 64;

__device__ __forceinline__ void mma_s8(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                       uint32_t a3, uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t nib_even(uint32_t w) { return (w << 4) & 0xF0F0F0F0u; }
__device__ __forceinline__ uint32_t nib_odd(uint32_t w) { return w & 0xF0F0F0F0u; }

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

/* The epilogue of one output element (see the file comment). */
__device__ __forceinline__ uint16_t epilogue_bf16(float v, float sw, const uint16_t *res, size_t at)
{
    v = __fmul_rn(v, sw);
    if (res)
        v = __fadd_rn(v, __bfloat162float(__ushort_as_bfloat16(res[at])));
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

/* Byte offset of logical 16-byte chunk c of row r in a stage's A or B tile. */
__device__ __forceinline__ int swz(int r, int c) { return r * BKB + ((c ^ (r & 2)) << 4); }

/* MODE 0: bf16 out, one K-block; 1: bf16 out, kblocks > 1; 2: int32 accumulators out. */
template <int MODE>
__global__ void __launch_bounds__(PF_THREADS)
    w4a4_gemm_prefill(uint16_t *__restrict__ y, int32_t *__restrict__ acc_out,
                      const uint8_t *__restrict__ qx, const float *__restrict__ sx, int kblocks,
                      const uint8_t *__restrict__ qw, const float *__restrict__ sw, int M, int N,
                      int K, const uint16_t *residual)
{
    extern __shared__ __align__(128) uint8_t smem[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, tig = lane & 3;
    const int wm = warp >> 2, wn = warp & 3;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int KB = K / 2, ntiles = (K + 127) / 128, blen = K / kblocks;

    int acc[4][4][4];
    float facc[MODE == 1 ? 4 : 1][MODE == 1 ? 4 : 1][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                acc[i][j][e] = 0;
    if (MODE == 1)
#pragma unroll
        for (int i = 0; i < (MODE == 1 ? 4 : 1); i++)
#pragma unroll
            for (int j = 0; j < (MODE == 1 ? 4 : 1); j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    facc[i][j][e] = 0.f;

    auto load_stage = [&](int kt, int stage) {
        uint8_t *sa = smem + stage * STAGE_BYTES, *sb = sa + BM * BKB;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            int chunk = tid + i * PF_THREADS, r = chunk >> 2, c = chunk & 3;
            int kbyte = kt * BKB + c * 16;
            bool kin = kbyte < KB;
            bool va = kin && m0 + r < M, vb = kin && n0 + r < N;
            const uint8_t *ga = va ? qx + (size_t)(m0 + r) * KB + kbyte : qx;
            const uint8_t *gb = vb ? qw + (size_t)(n0 + r) * KB + kbyte : qw;
            cp_async16(sa + swz(r, c), ga, va);
            cp_async16(sb + swz(r, c), gb, vb);
        }
    };

    /* Flush the int32 accumulators of K-block b into fp32 (MODE 1). */
    auto flush = [&](int b) {
#pragma unroll
        for (int mt = 0; mt < 4; mt++) {
            int r0 = m0 + wm * 64 + mt * 16 + g, r1 = r0 + 8;
            float s0 = sx[(size_t)min(r0, M - 1) * kblocks + b];
            float s1 = sx[(size_t)min(r1, M - 1) * kblocks + b];
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float s = e < 2 ? s0 : s1;
                    facc[MODE == 1 ? mt : 0][MODE == 1 ? nt : 0][e] =
                        __fadd_rn(facc[MODE == 1 ? mt : 0][MODE == 1 ? nt : 0][e],
                                  __fmul_rn((float)(acc[mt][nt][e] >> 8), s));
                    acc[mt][nt][e] = 0;
                }
            }
        }
    };

#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < ntiles)
            load_stage(s, s);
        cp_async_commit();
    }

    for (int kt = 0; kt < ntiles; kt++) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        int nk = kt + STAGES - 1;
        if (nk < ntiles)
            load_stage(nk, nk % STAGES);
        cp_async_commit();

        const uint8_t *sa = smem + (kt % STAGES) * STAGE_BYTES, *sb = sa + BM * BKB;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int c = 2 * h + (tig >> 1), off = (tig & 1) * 8;
            uint2 bw[4];
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                int r = wn * 32 + nt * 8 + g;
                bw[nt] = *reinterpret_cast<const uint2 *>(sb + swz(r, c) + off);
            }
#pragma unroll
            for (int mt = 0; mt < 4; mt++) {
                int r = wm * 64 + mt * 16 + g;
                uint2 a_lo = *reinterpret_cast<const uint2 *>(sa + swz(r, c) + off);
                uint2 a_hi = *reinterpret_cast<const uint2 *>(sa + swz(r + 8, c) + off);
#pragma unroll
                for (int s = 0; s < 2; s++) {
                    uint32_t w0 = s ? a_lo.y : a_lo.x, w1 = s ? a_hi.y : a_hi.x;
                    uint32_t a0 = nib_even(w0), a1 = nib_even(w1), a2 = nib_odd(w0),
                             a3 = nib_odd(w1);
#pragma unroll
                    for (int nt = 0; nt < 4; nt++) {
                        uint32_t wb = s ? bw[nt].y : bw[nt].x;
                        mma_s8(acc[mt][nt], a0, a1, a2, a3, nib_even(wb), nib_odd(wb));
                    }
                }
            }
            if (MODE == 1) {
                int kend = kt * 128 + 64 * (h + 1);
                if (kend <= K && kend % blen == 0)
                    flush(kend / blen - 1);
            }
        }
    }
    cp_async_wait<0>();

#pragma unroll
    for (int mt = 0; mt < 4; mt++) {
#pragma unroll
        for (int half = 0; half < 2; half++) {
            int row = m0 + wm * 64 + mt * 16 + g + half * 8;
            if (row >= M)
                continue;
            float sxr = MODE == 0 ? sx[row] : 0.f;
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                int col = n0 + wn * 32 + nt * 8 + tig * 2;
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    if (col + e >= N)
                        continue;
                    size_t at = (size_t)row * N + col + e;
                    int a = acc[mt][nt][half * 2 + e];
                    if (MODE == 2) {
                        acc_out[at] = a >> 8;
                    } else {
                        float v = MODE == 0 ? __fmul_rn((float)(a >> 8), sxr)
                                            : facc[MODE == 1 ? mt : 0][MODE == 1 ? nt : 0][half * 2 + e];
                        y[at] = epilogue_bf16(v, sw[col + e], residual, at);
                    }
                }
            }
        }
    }
}

/* Decode: MODE 0 bf16 out (any kblocks <= DEC_MAX_KBLOCKS), MODE 2 int32 out. WIDE: chunks
 * of 128 k read as 16-byte loads (needs K-blocks of a multiple of 128), else 64 k, 8 bytes. */
template <int MODE, bool WIDE>
__global__ void __launch_bounds__(DEC_WARPS * 32)
    w4a4_gemm_decode(uint16_t *__restrict__ y, int32_t *__restrict__ acc_out,
                     const uint8_t *__restrict__ qx, const float *__restrict__ sx, int kblocks,
                     const uint8_t *__restrict__ qw, const float *__restrict__ sw, int M, int N,
                     int K, const uint16_t *residual)
{
    extern __shared__ int sacc[]; /* [kblocks][16][16] */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, tig = lane & 3;
    const int n0 = blockIdx.x * DEC_ROWS;
    constexpr int CK = WIDE ? 128 : 64; /* k per chunk */
    constexpr int NW = CK / 32;          /* 32-bit words per thread per row and chunk */
    using vec = typename std::conditional<WIDE, uint4, uint2>::type;
    const int KB = K / 2, nchunks = K / CK, blen = K / kblocks;
    for (int i = tid; i < kblocks * 256; i += blockDim.x)
        sacc[i] = 0;
    __syncthreads();

    const int per = (nchunks + DEC_WARPS - 1) / DEC_WARPS;
    const int c0 = warp * per, c1 = min(nchunks, c0 + per);
    const bool ra = g < M, rb = g + 8 < M;
    const bool w0ok = n0 + g < N, w1ok = n0 + 8 + g < N;
    const uint8_t *xa = qx + (size_t)(ra ? g : 0) * KB + tig * (NW * 4);
    const uint8_t *xb = qx + (size_t)(rb ? g + 8 : 0) * KB + tig * (NW * 4);
    const uint8_t *wa = qw + (size_t)(w0ok ? n0 + g : 0) * KB + tig * (NW * 4);
    const uint8_t *wb = qw + (size_t)(w1ok ? n0 + 8 + g : 0) * KB + tig * (NW * 4);

    int acc[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
    int cur_b = c0 * CK / blen;
    auto flush = [&](int b) {
        int *s = sacc + b * 256;
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int m = g + (e >> 1) * 8, n = nt * 8 + tig * 2 + (e & 1);
                if (acc[nt][e])
                    atomicAdd(&s[m * 16 + n], acc[nt][e]);
                acc[nt][e] = 0;
            }
    };
    auto words = [](const vec &v, uint32_t (&w)[NW]) {
        const uint32_t *p = reinterpret_cast<const uint32_t *>(&v);
#pragma unroll
        for (int i = 0; i < NW; i++)
            w[i] = p[i];
    };

    constexpr int U = WIDE ? 2 : 4;
    vec zero;
    memset(&zero, 0, sizeof zero);
    for (int c = c0; c < c1; c += U) {
        vec W0[U], W1[U], A0[U], A1[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            int cc = c + u;
            bool ok = cc < c1;
            size_t off = (size_t)cc * (CK / 2);
            W0[u] = ok && w0ok ? __ldcs(reinterpret_cast<const vec *>(wa + off)) : zero;
            W1[u] = ok && w1ok ? __ldcs(reinterpret_cast<const vec *>(wb + off)) : zero;
            A0[u] = ok && ra ? __ldg(reinterpret_cast<const vec *>(xa + off)) : zero;
            A1[u] = ok && rb ? __ldg(reinterpret_cast<const vec *>(xb + off)) : zero;
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            int cc = c + u;
            if (cc >= c1)
                break;
            int b = cc * CK / blen;
            if (b != cur_b) {
                flush(cur_b);
                cur_b = b;
            }
            uint32_t x0w[NW], x1w[NW], q0w[NW], q1w[NW];
            words(A0[u], x0w), words(A1[u], x1w), words(W0[u], q0w), words(W1[u], q1w);
#pragma unroll
            for (int s = 0; s < NW; s++) {
                uint32_t a0 = nib_even(x0w[s]), a1 = nib_even(x1w[s]), a2 = nib_odd(x0w[s]),
                         a3 = nib_odd(x1w[s]);
                mma_s8(acc[0], a0, a1, a2, a3, nib_even(q0w[s]), nib_odd(q0w[s]));
                mma_s8(acc[1], a0, a1, a2, a3, nib_even(q1w[s]), nib_odd(q1w[s]));
            }
        }
    }
    if (c0 < c1)
        flush(cur_b);
    __syncthreads();

    const int m = tid >> 4, n = tid & 15;
    if (m < M && n0 + n < N) {
        size_t at = (size_t)m * N + n0 + n;
        if (MODE == 2) {
            int s = 0;
            for (int b = 0; b < kblocks; b++)
                s += sacc[b * 256 + m * 16 + n];
            acc_out[at] = s >> 8;
        } else {
            float v = 0.f;
            for (int b = 0; b < kblocks; b++)
                v = __fadd_rn(v, __fmul_rn((float)(sacc[b * 256 + m * 16 + n] >> 8),
                                           sx[(size_t)m * kblocks + b]));
            y[at] = epilogue_bf16(v, sw[n0 + n], residual, at);
        }
    }
}

int check_aligned(const char *where, const void *p, const char *what)
{
    if ((uintptr_t)p % 16)
        return fq_error("%s: %s is not 16-byte aligned (expected a cudaMalloc'd buffer or an "
                        "offset that is a multiple of 16 bytes)", where, what);
    return FQ_OK;
}

template <int MODE>
int launch_prefill(fq_cuda_ctx *ctx, const char *where, uint16_t *y, int32_t *acc,
                   const uint8_t *qx, const float *sx, int kblocks, const uint8_t *qw,
                   const float *sw, int M, int N, int K, const uint16_t *residual)
{
    const int smem = STAGES * STAGE_BYTES;
    CU_CHECK(fq_smem_optin((const void *)w4a4_gemm_prefill<MODE>, ctx->device, smem), FILE_,
             where, "cudaFuncSetAttribute");
    dim3 grid((N + BN - 1) / BN, (M + BM - 1) / BM);
    w4a4_gemm_prefill<MODE><<<grid, PF_THREADS, smem, CTX_STREAM(ctx)>>>(
        y, acc, qx, sx, kblocks, qw, sw, M, N, K, residual);
    LAUNCH_CHECK(FILE_, where, "w4a4_gemm_prefill");
    return FQ_OK;
}

template <int MODE, bool WIDE>
int launch_decode_v(fq_cuda_ctx *ctx, const char *where, uint16_t *y, int32_t *acc,
                    const uint8_t *qx, const float *sx, int kblocks, const uint8_t *qw,
                    const float *sw, int M, int N, int K, const uint16_t *residual)
{
    const int smem = kblocks * 256 * (int)sizeof(int);
    if (smem > 48 * 1024)
        CU_CHECK(fq_smem_optin((const void *)w4a4_gemm_decode<MODE, WIDE>, ctx->device, smem),
                 FILE_, where, "cudaFuncSetAttribute");
    w4a4_gemm_decode<MODE, WIDE><<<(N + DEC_ROWS - 1) / DEC_ROWS, DEC_WARPS * 32, smem,
                                   CTX_STREAM(ctx)>>>(y, acc, qx, sx, kblocks, qw, sw, M, N, K,
                                                      residual);
    LAUNCH_CHECK(FILE_, where, "w4a4_gemm_decode");
    return FQ_OK;
}

/* The 16-byte variant whenever every K-block is a whole number of 128-k chunks. */
template <int MODE>
int launch_decode(fq_cuda_ctx *ctx, const char *where, uint16_t *y, int32_t *acc,
                  const uint8_t *qx, const float *sx, int kblocks, const uint8_t *qw,
                  const float *sw, int M, int N, int K, const uint16_t *residual)
{
    if ((K / kblocks) % 128 == 0)
        return launch_decode_v<MODE, true>(ctx, where, y, acc, qx, sx, kblocks, qw, sw, M, N, K,
                                           residual);
    return launch_decode_v<MODE, false>(ctx, where, y, acc, qx, sx, kblocks, qw, sw, M, N, K,
                                        residual);
}

int pick_path(const char *where, int path, int M, int kblocks)
{
    if (path == FQ_W4A4_AUTO)
        path = M <= 16 ? FQ_W4A4_DECODE : FQ_W4A4_PREFILL;
    if (path != FQ_W4A4_PREFILL && path != FQ_W4A4_DECODE)
        return fq_error("%s: path = %d (expected FQ_W4A4_AUTO, _PREFILL or _DECODE)", where, path),
               -1;
    if (path == FQ_W4A4_DECODE && M > 16)
        return fq_error("%s: M = %d on the decode path (expected at most 16)", where, M), -1;
    if (path == FQ_W4A4_DECODE && kblocks > DEC_MAX_KBLOCKS)
        return fq_error("%s: kblocks = %d on the decode path (expected at most %d)", where,
                        kblocks, DEC_MAX_KBLOCKS),
               -1;
    return path;
}

} // namespace

extern "C" int fq_w4a4_gemm_path_cuda(fq_cuda_ctx *ctx, uint16_t *y, const uint8_t *qx,
                                      const float *sx, int kblocks, const uint8_t *qw,
                                      const float *sw, int M, int N, int K,
                                      const uint16_t *residual, int path)
{
    const char *where = FILE_ ":fq_w4a4_gemm_cuda";
    if (!ctx)
        return fq_error("%s: NULL context (expected an initialised fq_cuda_ctx)", where);
    if (w4a4_check_gemm(where, y, qx, sx, kblocks, qw, sw, M, N, K) ||
        check_aligned(where, qx, "qx") || check_aligned(where, qw, "qw"))
        return FQ_ERR;
    path = pick_path(where, path, M, kblocks);
    if (path < 0)
        return FQ_ERR;
    if (path == FQ_W4A4_DECODE)
        return launch_decode<0>(ctx, where, y, nullptr, qx, sx, kblocks, qw, sw, M, N, K, residual);
    if (kblocks == 1)
        return launch_prefill<0>(ctx, where, y, nullptr, qx, sx, 1, qw, sw, M, N, K, residual);
    return launch_prefill<1>(ctx, where, y, nullptr, qx, sx, kblocks, qw, sw, M, N, K, residual);
}

extern "C" int fq_w4a4_gemm_cuda(fq_cuda_ctx *ctx, uint16_t *y, const uint8_t *qx,
                                 const float *sx, int kblocks, const uint8_t *qw,
                                 const float *sw, int M, int N, int K, const uint16_t *residual)
{
    return fq_w4a4_gemm_path_cuda(ctx, y, qx, sx, kblocks, qw, sw, M, N, K, residual,
                                  FQ_W4A4_AUTO);
}

extern "C" int fq_w4a4_gemm_i32_cuda(fq_cuda_ctx *ctx, int32_t *acc, const uint8_t *qx,
                                     const uint8_t *qw, int M, int N, int K, int path)
{
    const char *where = FILE_ ":fq_w4a4_gemm_i32_cuda";
    float one = 1.f;
    if (!ctx)
        return fq_error("%s: NULL context (expected an initialised fq_cuda_ctx)", where);
    if (w4a4_check_gemm(where, acc, qx, &one, 1, qw, &one, M, N, K) ||
        check_aligned(where, qx, "qx") || check_aligned(where, qw, "qw"))
        return FQ_ERR;
    path = pick_path(where, path, M, 1);
    if (path < 0)
        return FQ_ERR;
    if (path == FQ_W4A4_DECODE)
        return launch_decode<2>(ctx, where, nullptr, acc, qx, nullptr, 1, qw, nullptr, M, N, K,
                                nullptr);
    return launch_prefill<2>(ctx, where, nullptr, acc, qx, nullptr, 1, qw, nullptr, M, N, K,
                             nullptr);
}
