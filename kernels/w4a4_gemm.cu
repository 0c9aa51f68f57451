/* w4a4_gemm.cu — the W4A4 GEMM on Hopper: packed int4 activations × packed int4 weights on
 * int8 tensor cores (mma.sync m16n8k32 s8), int32 accumulation, both scales in the epilogue.
 *
 * The idea. Hopper has no int4 MMA, so nibbles become int8 on the way from shared memory to
 * the tensor core, as 16·q bytes with the even elements of a word first (the trick of
 * kernels/w4a4_gemm.cuh): each thread feeds its mma.sync fragments straight from the words
 * it loaded, A and B in the same permuted k order, without shuffling bytes.
 *
 * Prefill on mma.sync (FQ_W4A4_PREFILL; the wgmma kernel of kernels/w4a4_gemm_sm90.cu takes
 * these sizes by default): 128×128 tiles, 8 warps of 64×32, K in steps of 128 through a 4-stage
 * cp.async ring; each 64-element half of a step stays within one K-block, so the per-block
 * activation scales (TP, ALGORITHM §7) are applied by flushing the int32 accumulators into
 * fp32 at block ends. Shared memory rows are 64 bytes with the 16-byte chunks XOR-swizzled
 * by (row & 2), which makes the 8-byte fragment loads conflict-free.
 * Decode (M <= 64, when its shared accumulators fit): a bandwidth kernel; each CTA owns 16
 * weight rows, its 8 or 16 warps stream disjoint K ranges of them with 16-byte loads (8-byte
 * when a K-block is an odd multiple of 64) straight from global memory (every weight byte
 * read once, 32 bytes per row and thread in flight), against 1, 2 or 4 tiles of 16 tokens
 * whose rows come from L1/L2; partial sums meet in shared memory per K-block with integer
 * atomics (exact, order-free), then the CTA's threads apply the epilogue. The 128-row prefill
 * tiles would leave most SMs idle at M = 64 on a TP slice (N / 128 CTAs).
 * Epilogue (both kernels, identical to core/w4a4_ref.c bit for bit): v = Σ_b acc_b·sx[t,b]
 * in block order, v·sw[o], + residual, round to bf16, with explicit _rn ops (no FMA).
 */
#include <cuda_bf16.h>
#include <stdint.h>
#include <type_traits>

#include "kernels/cuda_common.cuh"
#include "kernels/w4a4_gemm.cuh"
extern "C" {
#include "w4a4_ref.h"
}

#define FILE_ "kernels/w4a4_gemm.cu"

namespace {

constexpr int BM = 128, BN = 128, BKB = 64 /* bytes per row per stage = 128 k */, STAGES = 4;
constexpr int PF_THREADS = 256;
constexpr int STAGE_BYTES = (BM + BN) * BKB;
constexpr int DEC_ROWS = 16, DEC_MAX_M = 64, DEC_MAX_KB_TILES = 64;

__device__ __forceinline__ void mma_s8(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                       uint32_t a3, uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
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

/* One GEMM of a decode launch (up to three share one: q/k/v, gate/up): CTAs cta0 .. on. */
struct dec_problem {
    uint16_t *y;
    int32_t *acc;
    const uint8_t *qx, *qw;
    const float *sx, *sw;
    const uint16_t *res;
    int N, cta0;
};
constexpr int DEC_MAX_PROBLEMS = 3;
struct dec_batch {
    dec_problem p[DEC_MAX_PROBLEMS];
    int np, M, K, kblocks;
};

/* Decode: MODE 0 bf16 out (any kblocks with kblocks·MT <= DEC_MAX_KB_TILES), MODE 2 int32
 * out. WIDE: chunks of 128 k read as 16-byte loads (needs K-blocks of a multiple of 128),
 * else 64 k, 8 bytes. MT: 16-row tiles of activations (M <= 16·MT) against the CTA's 16
 * weight rows, so weights are read once for up to 64 tokens. U: chunks whose weight loads a
 * thread issues before it computes (bytes in flight); WARPS: warps splitting K in a CTA
 * (more for small N, where the grid alone cannot keep enough loads in flight). */
template <int MODE, bool WIDE, int MT, int U, int WARPS>
__global__ void __launch_bounds__(WARPS * 32) w4a4_gemm_decode(dec_batch B)
{
    extern __shared__ int sacc[]; /* [kblocks][16·MT][16] */
    constexpr int TILE = 256 * MT;
    /* this CTA's problem: the last whose first CTA is not after it */
    const int pi = B.np > 2 && (int)blockIdx.x >= B.p[2].cta0   ? 2
                   : B.np > 1 && (int)blockIdx.x >= B.p[1].cta0 ? 1
                                                                 : 0;
    const dec_problem P = pi == 2 ? B.p[2] : pi == 1 ? B.p[1] : B.p[0];
    uint16_t *__restrict__ y = P.y;
    int32_t *__restrict__ acc_out = P.acc;
    const uint8_t *__restrict__ qx = P.qx, *__restrict__ qw = P.qw;
    const float *__restrict__ sx = P.sx, *__restrict__ sw = P.sw;
    const uint16_t *residual = P.res;
    const int M = B.M, N = P.N, K = B.K, kblocks = B.kblocks;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, tig = lane & 3;
    const int n0 = ((int)blockIdx.x - P.cta0) * DEC_ROWS;
    constexpr int CK = WIDE ? 128 : 64; /* k per chunk */
    constexpr int NW = CK / 32;          /* 32-bit words per thread per row and chunk */
    using vec = typename std::conditional<WIDE, uint4, uint2>::type;
    const int KB = K / 2, nchunks = K / CK, blen = K / kblocks;
    for (int i = tid; i < kblocks * TILE; i += blockDim.x)
        sacc[i] = 0;
    __syncthreads();

    const int per = (nchunks + WARPS - 1) / WARPS;
    const int c0 = warp * per, c1 = min(nchunks, c0 + per);
    const bool w0ok = n0 + g < N, w1ok = n0 + 8 + g < N;
    const uint8_t *wa = qw + (size_t)(w0ok ? n0 + g : 0) * KB + tig * (NW * 4);
    const uint8_t *wb = qw + (size_t)(w1ok ? n0 + 8 + g : 0) * KB + tig * (NW * 4);
    bool rok[MT][2];
    const uint8_t *xr[MT][2];
#pragma unroll
    for (int t = 0; t < MT; t++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int r = t * 16 + h * 8 + g;
            rok[t][h] = r < M;
            xr[t][h] = qx + (size_t)(r < M ? r : 0) * KB + tig * (NW * 4);
        }

    int acc[MT][2][4];
#pragma unroll
    for (int t = 0; t < MT; t++)
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                acc[t][nt][e] = 0;
    int cur_b = c0 * CK / blen;
    auto flush = [&](int b) {
        int *s = sacc + b * TILE;
#pragma unroll
        for (int t = 0; t < MT; t++)
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int m = t * 16 + g + (e >> 1) * 8, n = nt * 8 + tig * 2 + (e & 1);
                    if (acc[t][nt][e])
                        atomicAdd(&s[m * 16 + n], acc[t][nt][e]);
                    acc[t][nt][e] = 0;
                }
    };
    auto words = [](const vec &v, uint32_t (&w)[NW]) {
        const uint32_t *p = reinterpret_cast<const uint32_t *>(&v);
#pragma unroll
        for (int i = 0; i < NW; i++)
            w[i] = p[i];
    };

    vec zero;
    memset(&zero, 0, sizeof zero);
    /* PDL: the first weight loads (weights: no kernel writes them) are issued before
     * waiting for the kernel that wrote the activations, so they overlap its tail */
    bool waited = false;
    for (int c = c0; c < c1; c += U) {
        /* the weight stream (HBM, read once: evict-first) is issued U chunks ahead */
        vec W0[U], W1[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            int cc = c + u;
            bool ok = cc < c1;
            size_t off = (size_t)cc * (CK / 2);
            W0[u] = ok && w0ok ? __ldcs(reinterpret_cast<const vec *>(wa + off)) : zero;
            W1[u] = ok && w1ok ? __ldcs(reinterpret_cast<const vec *>(wb + off)) : zero;
        }
        if (!waited) {
            pdl_wait();
            pdl_launch_dependents();
            waited = true;
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
            size_t off = (size_t)cc * (CK / 2);
            uint32_t q0w[NW], q1w[NW];
            words(W0[u], q0w), words(W1[u], q1w);
#pragma unroll
            for (int t = 0; t < MT; t++) {
                /* a tile without real rows ends the loop (rows ascend); the test is the
                 * same on every lane: mma.sync must be issued by the whole warp */
                if (t * 16 >= M)
                    break;
                vec A0 = rok[t][0] ? __ldg(reinterpret_cast<const vec *>(xr[t][0] + off)) : zero;
                vec A1 = rok[t][1] ? __ldg(reinterpret_cast<const vec *>(xr[t][1] + off)) : zero;
                uint32_t x0w[NW], x1w[NW];
                words(A0, x0w), words(A1, x1w);
#pragma unroll
                for (int s = 0; s < NW; s++) {
                    uint32_t a0 = nib_even(x0w[s]), a1 = nib_even(x1w[s]), a2 = nib_odd(x0w[s]),
                             a3 = nib_odd(x1w[s]);
                    mma_s8(acc[t][0], a0, a1, a2, a3, nib_even(q0w[s]), nib_odd(q0w[s]));
                    mma_s8(acc[t][1], a0, a1, a2, a3, nib_even(q1w[s]), nib_odd(q1w[s]));
                }
            }
        }
    }
    if (!waited) { /* a warp without chunks still reads sx and the residual below */
        pdl_wait();
        pdl_launch_dependents();
    }
    if (c0 < c1)
        flush(cur_b);
    __syncthreads();

    for (int i = tid; i < TILE; i += WARPS * 32) {
        const int m = i >> 4, n = i & 15;
        if (m >= M || n0 + n >= N)
            continue;
        size_t at = (size_t)m * N + n0 + n;
        if (MODE == 2) {
            int s = 0;
            for (int b = 0; b < kblocks; b++)
                s += sacc[b * TILE + m * 16 + n];
            acc_out[at] = s >> 8;
        } else {
            float v = 0.f;
            for (int b = 0; b < kblocks; b++)
                v = __fadd_rn(v, __fmul_rn((float)(sacc[b * TILE + m * 16 + n] >> 8),
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

template <int MODE, bool WIDE, int MT, int U, int WARPS>
int launch_decode_v(fq_cuda_ctx *ctx, const char *where, const dec_batch &B, int ctas)
{
    auto kern = w4a4_gemm_decode<MODE, WIDE, MT, U, WARPS>;
    const int smem = B.kblocks * 256 * MT * (int)sizeof(int);
    if (smem > 48 * 1024)
        CU_CHECK(fq_smem_optin((const void *)kern, ctx->device, smem), FILE_, where,
                 "cudaFuncSetAttribute");
    CU_CHECK(fq_launch(ctx, kern, dim3(ctas), dim3(WARPS * 32), smem, B), FILE_, where,
             "w4a4_gemm_decode");
    return FQ_OK;
}

/* fq_w4a4_decode_config's override of the one-tile decode kernel's shape (0: automatic) */
int g_dec_loads, g_dec_warps;

template <int MODE, bool WIDE, int MT, int U>
int launch_decode_u(fq_cuda_ctx *ctx, const char *where, const dec_batch &B, int ctas, int warps)
{
    return warps == 16 ? launch_decode_v<MODE, WIDE, MT, U, 16>(ctx, where, B, ctas)
                       : launch_decode_v<MODE, WIDE, MT, U, 8>(ctx, where, B, ctas);
}

/* Fills the problems' first CTAs and launches the kernel shape for M: 16 warps per CTA when
 * the grid has fewer than 4 CTAs per SM (a TP slice, a narrow layer), else 8; two 16-byte
 * weight loads per row in flight. Measured on an H200 over the 70B shapes' TP 1/2/4 slices
 * at M = 1…16 (bench/NOTES.md, session 5): 4 loads were slower on every row (registers),
 * 16 warps faster where the grid has ≤ 512 CTAs (o, down: up to 1.3×) and slower on the
 * big grids (gate_up), as this rule picks. */
template <int MODE, bool WIDE>
int launch_decode_w(fq_cuda_ctx *ctx, const char *where, dec_batch &B)
{
    int ctas = 0;
    for (int i = 0; i < B.np; i++) {
        B.p[i].cta0 = ctas;
        ctas += (B.p[i].N + DEC_ROWS - 1) / DEC_ROWS;
    }
    int warps = ctas < 4 * ctx->sm_count ? 16 : 8;
    constexpr int U1 = WIDE ? 4 : 8, U2 = WIDE ? 2 : 4; /* the same bytes per chunk row */
    if (B.M > 32)
        return launch_decode_u<MODE, WIDE, 4, U2>(ctx, where, B, ctas, warps);
    if (B.M > 16)
        return launch_decode_u<MODE, WIDE, 2, U2>(ctx, where, B, ctas, warps);
    if (g_dec_loads)
        warps = g_dec_warps;
    if (g_dec_loads == 4)
        return launch_decode_u<MODE, WIDE, 1, U1>(ctx, where, B, ctas, warps);
    return launch_decode_u<MODE, WIDE, 1, U2>(ctx, where, B, ctas, warps);
}

/* The 16-byte variant whenever every K-block is a whole number of 128-k chunks. */
template <int MODE>
int launch_decode(fq_cuda_ctx *ctx, const char *where, dec_batch &B)
{
    if ((B.K / B.kblocks) % 128 == 0)
        return launch_decode_w<MODE, true>(ctx, where, B);
    return launch_decode_w<MODE, false>(ctx, where, B);
}

dec_batch one_problem(uint16_t *y, int32_t *acc, const uint8_t *qx, const float *sx,
                      int kblocks, const uint8_t *qw, const float *sw, int M, int N, int K,
                      const uint16_t *residual)
{
    dec_batch B = {};
    B.p[0] = {y, acc, qx, qw, sx, sw, residual, N, 0};
    B.np = 1, B.M = M, B.K = K, B.kblocks = kblocks;
    return B;
}

/* The decode kernel's 16-row tiles (1, 2 or 4): its shared accumulators are kblocks·tiles KiB */
int decode_tiles(int M) { return M <= 16 ? 1 : M <= 32 ? 2 : 4; }
int decode_fits(int M, int kblocks)
{
    return M <= DEC_MAX_M && kblocks * decode_tiles(M) <= DEC_MAX_KB_TILES;
}
/* FQ_W4A4_AUTO's choice. With four tiles (M > 32) the decode kernel turns compute-bound on
 * wide outputs: measured slower than the prefill tiles at M = 64 for N ≥ 14336 (gate_up),
 * faster for the rest (bench/NOTES.md, session 5). */
constexpr int DEC_MT4_MAX_N = 10240;
int decode_auto(int M, int N, int kblocks)
{
    return decode_fits(M, kblocks) && (M <= 32 || N <= DEC_MT4_MAX_N);
}

int pick_path(const fq_cuda_ctx *ctx, const char *where, int path, int M, int N, int kblocks)
{
    if (path == FQ_W4A4_AUTO)
        path = decode_auto(M, N, kblocks) ? FQ_W4A4_DECODE
               : ctx->gemm_wgmma          ? FQ_W4A4_WGMMA
                                          : FQ_W4A4_PREFILL;
    if (path != FQ_W4A4_PREFILL && path != FQ_W4A4_DECODE && path != FQ_W4A4_WGMMA)
        return fq_error("%s: path = %d (expected FQ_W4A4_AUTO, _PREFILL, _DECODE or _WGMMA)",
                        where, path),
               -1;
    if (path == FQ_W4A4_DECODE && M > DEC_MAX_M)
        return fq_error("%s: M = %d on the decode path (expected at most %d)", where, M, DEC_MAX_M), -1;
    if (path == FQ_W4A4_DECODE && !decode_fits(M, kblocks))
        return fq_error("%s: kblocks = %d on the decode path with M = %d (expected kblocks · "
                        "%d tiles at most %d)", where, kblocks, M, decode_tiles(M), DEC_MAX_KB_TILES),
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
    path = pick_path(ctx, where, path, M, N, kblocks);
    if (path < 0)
        return FQ_ERR;
    if (path == FQ_W4A4_DECODE) {
        dec_batch B = one_problem(y, nullptr, qx, sx, kblocks, qw, sw, M, N, K, residual);
        return launch_decode<0>(ctx, where, B);
    }
    if (path == FQ_W4A4_WGMMA)
        return w4a4_gemm_wgmma_launch(ctx, where, y, nullptr, qx, sx, kblocks, qw, sw, M, N, K,
                                      residual);
    if (kblocks == 1)
        return launch_prefill<0>(ctx, where, y, nullptr, qx, sx, 1, qw, sw, M, N, K, residual);
    return launch_prefill<1>(ctx, where, y, nullptr, qx, sx, kblocks, qw, sw, M, N, K, residual);
}

extern "C" int fq_w4a4_decode_config(int loads, int warps)
{
    if (!((loads == 0 && warps == 0) || ((loads == 2 || loads == 4) && (warps == 8 || warps == 16))))
        return fq_error(FILE_ ":fq_w4a4_decode_config: loads %d, warps %d (expected 0, 0 for "
                        "automatic, or loads 2 or 4 with warps 8 or 16)", loads, warps);
    g_dec_loads = loads;
    g_dec_warps = warps;
    return FQ_OK;
}

extern "C" int fq_w4a4_gemm_multi_cuda(fq_cuda_ctx *ctx, int np, const fq_w4a4_problem *pr,
                                       int kblocks, int M, int K)
{
    const char *where = FILE_ ":fq_w4a4_gemm_multi_cuda";
    if (!ctx || !pr || np < 1 || np > DEC_MAX_PROBLEMS)
        return fq_error("%s: context %p, %d problems at %p (expected a context and 1..%d "
                        "problems)", where, (void *)ctx, np, (const void *)pr, DEC_MAX_PROBLEMS);
    for (int i = 0; i < np; i++)
        if (w4a4_check_gemm(where, pr[i].y, pr[i].qx, pr[i].sx, kblocks, pr[i].qw, pr[i].sw, M,
                            pr[i].N, K) ||
            check_aligned(where, pr[i].qx, "qx") || check_aligned(where, pr[i].qw, "qw"))
            return fq_error_wrap("problem %d", i);
    int all_decode = 1;
    for (int i = 0; i < np; i++)
        all_decode &= decode_auto(M, pr[i].N, kblocks);
    if (!all_decode) { /* prefill sizes: one launch each, nothing to share */
        for (int i = 0; i < np; i++)
            if (fq_w4a4_gemm_cuda(ctx, pr[i].y, pr[i].qx, pr[i].sx, kblocks, pr[i].qw, pr[i].sw,
                                  M, pr[i].N, K, pr[i].residual))
                return FQ_ERR;
        return FQ_OK;
    }
    dec_batch B = {};
    for (int i = 0; i < np; i++)
        B.p[i] = {pr[i].y, nullptr, pr[i].qx, pr[i].qw, pr[i].sx, pr[i].sw, pr[i].residual, pr[i].N, 0};
    B.np = np, B.M = M, B.K = K, B.kblocks = kblocks;
    return launch_decode<0>(ctx, where, B);
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
    path = pick_path(ctx, where, path, M, N, 1);
    if (path < 0)
        return FQ_ERR;
    if (path == FQ_W4A4_DECODE) {
        dec_batch B = one_problem(nullptr, acc, qx, nullptr, 1, qw, nullptr, M, N, K, nullptr);
        return launch_decode<2>(ctx, where, B);
    }
    if (path == FQ_W4A4_WGMMA)
        return w4a4_gemm_wgmma_launch(ctx, where, nullptr, acc, qx, nullptr, 1, qw, nullptr, M, N,
                                      K, nullptr);
    return launch_prefill<2>(ctx, where, nullptr, acc, qx, nullptr, 1, qw, nullptr, M, N, K,
                             nullptr);
}
