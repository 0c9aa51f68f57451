/* w4a4_attn.cu — the 4-bit KV cache on the GPU: quantize-on-write, and causal attention
 * that dequantizes K and V on the fly (ALGORITHM §6 steps 4–5).
 *
 * Write: one warp per (token, KV head) vector; max/min by shuffles, the asymmetric rule of
 * §2.1 in fp32 exactly as core/quantizer.c computes it (so codes and zero points are
 * bit-identical to fq_kv4_write), codes as unsigned nibbles, (scale, zero) as fp16.
 * A scale above the fp16 range is written as inf (the C reference refuses it instead).
 *
 * Attention: split over the context. A CTA owns one (batch, KV head, query, context
 * split) and serves all r = heads/kv_heads query heads of that KV head, so each K/V byte is
 * read once per query position. Tiles of 128 positions: one thread per position computes
 * r scores with the dequantization folded out of the dot product,
 *   q·k = s·(Σ_j q_j·c_j − z·Σ_j q_j),
 * then an online softmax per head (warp per head), then the V pass (a thread owns 8 dims
 * of a row, 4 when r = 16, and a lane of positions) with the same folding,
 *   Σ_p P_p·s_p·(c_pj − z_p) = Σ_p w_p·c_pj − Σ_p w_p·z_p,  w_p = P_p·s_p.
 * Each split writes (max, sum, unnormalised output) in fp32; a second kernel merges the
 * splits and writes bf16. Decode (n_q = 1) uses many splits to fill the GPU; prefill
 * (n_q > 1) runs one CTA per query position and re-reads K/V through L2. This CUDA-core
 * kernel now serves the head sizes the tensor-core one below (attn_tc) does not take, and
 * ctx->attn_tc = 0; attn_tc is 5–6× faster at prefill (bench/NOTES.md, session 8).
 * GQA groups: the kernel is instantiated for R = 1, 2, 4, 8, 16 heads per CTA; a group r
 * that is not one of those runs on the next larger R with the extra head slots masked
 * (zero queries, nothing written: r = 3 → R = 4, r = 6 → R = 8), and r > 16 on R = 16
 * with ceil(r/16) CTAs per KV head, each serving its own run of query heads (r = 32 reads
 * K/V twice). Groups 1, 2, 4, 8, 16 take exactly the code path they always took.
 * Limits (refused): dh a power of two in 8..256 (the V pass loads 2 or 4 code bytes per
 * thread at offsets that must stay aligned); heads/kv_heads in 1..32; batch <= 256
 * (per-sequence positions travel in the kernel parameters, so a call needs no
 * host-to-device copy and never waits for the stream).
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>

#include "kernels/cuda_common.cuh"
extern "C" {
#include "w4a4_ref.h"
}

#define FILE_ "kernels/w4a4_attn.cu"

namespace {

/* ---------- KV4 write ---------- */

struct batch_pos {
    int v[256];
};

__global__ void kv4_write_kernel(fq_kv4_cache c, const uint16_t *__restrict__ k,
                                 const uint16_t *__restrict__ v, int n_new,
                                 const batch_pos pos0, float k_kmax, float k_kmin,
                                 float v_kmax, float v_kmin, int qmax, int rows)
{
    pdl_wait();
    pdl_launch_dependents();
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5);
    if (row >= rows)
        return;
    const bool is_v = blockIdx.y == 1;
    const uint16_t *src = (is_v ? v : k) + (size_t)row * c.dh;
    const float kmax = is_v ? v_kmax : k_kmax, kmin = is_v ? v_kmin : k_kmin;
    float mx = -INFINITY, mn = INFINITY;
    for (int j = lane; j < c.dh; j += 32) {
        float u = __bfloat162float(__ushort_as_bfloat16(src[j]));
        mx = fmaxf(mx, u);
        mn = fminf(mn, u);
    }
    for (int o = 16; o > 0; o >>= 1) {
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        mn = fminf(mn, __shfl_xor_sync(0xffffffffu, mn, o));
    }
    float m = __fmul_rn(mx > 0.f ? mx : 0.f, kmax), l = __fmul_rn(mn < 0.f ? mn : 0.f, kmin);
    if (m == 0.f && l == 0.f)
        l = -1.f, m = 1.f;
    const float s = __fdiv_rn(__fsub_rn(m, l), (float)qmax);
    const float z = rintf(__fdiv_rn(-l, s));
    /* row = (b·n_new + t)·kv_heads + head */
    const int head = row % c.kv_heads, bt = row / c.kv_heads, t = bt % n_new, b = bt / n_new;
    const size_t slot = ((size_t)b * c.kv_heads + head) * c.max_ctx + pos0.v[b] + t;
    uint8_t *dst = (is_v ? c.v_codes : c.k_codes) + slot * (c.dh / 2);
    for (int j2 = lane; j2 < c.dh / 2; j2 += 32) {
        int q[2];
#pragma unroll
        for (int e = 0; e < 2; e++) {
            float u = __bfloat162float(__ushort_as_bfloat16(src[2 * j2 + e]));
            float qq = __fadd_rn(rintf(__fdiv_rn(u, s)), z);
            q[e] = (int)fminf(fmaxf(qq, 0.f), (float)qmax);
        }
        dst[j2] = (uint8_t)(q[0] | (q[1] << 4));
    }
    if (lane == 0) {
        uint16_t *sz = (is_v ? c.v_sz : c.k_sz) + slot * 2;
        sz[0] = __half_as_ushort(__float2half_rn(s));
        sz[1] = __half_as_ushort(__float2half_rn(z));
    }
}

/* ---------- attention ---------- */

constexpr int AT_THREADS = 128, AT_TILE = 128, AT_SPLIT_MIN = 128;

constexpr int MAX_BATCH = 256; /* per-sequence lengths travel in the kernel parameters */

/* What both attention kernels take (attn_args_fill); each adds its own launch shape. */
struct attn_args {
    const uint16_t *q;
    fq_kv4_cache c;             /* shape; the code/scale pointers when KV4 */
    const uint16_t *k16, *v16; /* bf16 K/V [batch, kv_heads, max_ctx, dh] when BF16 KV */
    int ctx_len[MAX_BATCH];
    int n_q, heads, nsplit, chunk;
    int r;          /* query heads per KV head */
    float *part_o;  /* [batch, n_q, heads, nsplit, dh] */
    float *part_ml; /* [batch, n_q, heads, nsplit, 2] */
};

/* the CUDA-core kernel: CTAs (runs of at most R heads) per KV head */
struct cc_args : attn_args {
    int nhc;
};

/* acc + Σ_e q[e]·v[e] over 8 values, in order (q: two 16-byte shared-memory broadcasts) */
__device__ __forceinline__ float dot8(const float *q, const float (&v)[8], float acc)
{
    const float4 qa = *reinterpret_cast<const float4 *>(q);
    const float4 qb = *reinterpret_cast<const float4 *>(q + 4);
    acc = fmaf(qa.x, v[0], acc);
    acc = fmaf(qa.y, v[1], acc);
    acc = fmaf(qa.z, v[2], acc);
    acc = fmaf(qa.w, v[3], acc);
    acc = fmaf(qb.x, v[4], acc);
    acc = fmaf(qb.y, v[5], acc);
    acc = fmaf(qb.z, v[6], acc);
    acc = fmaf(qb.w, v[7], acc);
    return acc;
}


/* BF: the cache holds bf16 K and V (the BF16 baseline runtime's attention): the same tiles,
 * softmax and merge, with plain dot products and V sums instead of the folded codes. */
template <int R, int DH, bool BF>
__global__ void __launch_bounds__(AT_THREADS) attn_kv4_partial(cc_args a)
{
    constexpr int COLS = DH / 2; /* bytes per K/V row */
    /* V pass: each thread owns DPT consecutive dims of a row (one 32- or 16-bit load) and
     * one of PL position lanes, so a weight read from shared memory feeds DPT FMAs */
    constexpr int DPT = R >= 16 ? 4 : 8, TPR = DH / DPT, PL = AT_THREADS / TPR;
    __shared__ __align__(16) float qs[R][DH];
    __shared__ float qsum[R];
    __shared__ float S[R][AT_TILE];
    __shared__ float mrun[R], lrun[R], alpha[R];
    __shared__ float red[PL][DH + 1];
    pdl_wait();
    pdl_launch_dependents();

    const int split = blockIdx.x, bg = blockIdx.y / a.nhc, qi = blockIdx.z;
    const int b = bg / a.c.kv_heads, g = bg % a.c.kv_heads;
    /* this CTA's query heads: hq0 .. hq0 + rn − 1 (rn < R only for a masked group) */
    const int h0 = (blockIdx.y % a.nhc) * R, rn = min(R, a.r - h0), hq0 = g * a.r + h0;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int ctx = a.ctx_len[b], pos = ctx - a.n_q + qi;
    const int p0 = split * a.chunk, p1 = min(pos + 1, p0 + a.chunk);
    const float sm_scale = rsqrtf((float)DH);

    for (int i = tid; i < R * DH; i += AT_THREADS) {
        int h = i / DH, j = i % DH;
        const uint16_t *qv = a.q + (((size_t)b * a.n_q + qi) * a.heads + hq0 + h) * DH;
        qs[h][j] = h < rn ? __bfloat162float(__ushort_as_bfloat16(qv[j])) : 0.f;
    }
    if (tid < R) {
        mrun[tid] = -INFINITY;
        lrun[tid] = 0.f;
    }
    __syncthreads();
    if (tid < R) {
        float s = 0.f;
        for (int j = 0; j < DH; j++)
            s += qs[tid][j];
        qsum[tid] = s;
    }

    const size_t base = ((size_t)b * a.c.kv_heads + g) * a.c.max_ctx;
    const uint8_t *kc = a.c.k_codes + base * COLS, *vc = a.c.v_codes + base * COLS;
    const __half *ksz = reinterpret_cast<const __half *>(a.c.k_sz) + base * 2;
    const __half *vsz = reinterpret_cast<const __half *>(a.c.v_sz) + base * 2;

    const int cw = tid % TPR, pl = tid / TPR;
    float o[R][DPT], wz[R];
#pragma unroll
    for (int h = 0; h < R; h++)
    {
#pragma unroll
        for (int e = 0; e < DPT; e++)
            o[h][e] = 0.f;
        wz[h] = 0.f;
    }

    for (int t0 = p0; t0 < p1; t0 += AT_TILE) {
        __syncthreads();
        /* scores: one position per thread */
        {
            const int p = t0 + tid;
            float sc[R];
            if (p < p1) {
                float dot[R];
#pragma unroll
                for (int h = 0; h < R; h++)
                    dot[h] = 0.f;
                if constexpr (BF) {
                    /* the whole K row (2·DH bytes) in 16-byte loads of 8 values */
                    const uint4 *krow = reinterpret_cast<const uint4 *>(a.k16 + (base + p) * DH);
#pragma unroll 4
                    for (int w = 0; w < DH / 8; w++) {
                        const uint4 u = krow[w];
                        const uint32_t wv[4] = {u.x, u.y, u.z, u.w};
                        float kv[8];
                        bf16_unpack(wv, kv);
#pragma unroll
                        for (int h = 0; h < R; h++)
                            dot[h] = dot8(&qs[h][w * 8], kv, dot[h]);
                    }
#pragma unroll
                    for (int h = 0; h < R; h++)
                        sc[h] = dot[h] * sm_scale;
                } else {
                    /* the whole K row (DH/2 bytes) in 16-byte loads, then 8 codes per word;
                     * code → float by the exponent trick (exact, no int-to-float unit); q comes
                     * as 16-byte broadcast loads, two per word */
                    const uint8_t *krow = kc + (size_t)p * COLS;
#pragma unroll
                    for (int v16 = 0; v16 < (COLS + 15) / 16; v16++) {
                        uint32_t wv[4];
                        if (COLS % 16 == 0) {
                            const uint4 u = *reinterpret_cast<const uint4 *>(krow + v16 * 16);
                            wv[0] = u.x, wv[1] = u.y, wv[2] = u.z, wv[3] = u.w;
                        } else {
#pragma unroll
                            for (int e = 0; e < 4; e++)
                                wv[e] = e < COLS / 4 ? reinterpret_cast<const uint32_t *>(krow)[e] : 0u;
                        }
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            const int w = v16 * 4 + e;
                            if (w >= COLS / 4)
                                break;
                            float cv[8];
#pragma unroll
                            for (int k = 0; k < 8; k++)
                                cv[k] = __uint_as_float(0x4B000000u | ((wv[e] >> (4 * k)) & 0xFu)) - 8388608.f;
#pragma unroll
                            for (int h = 0; h < R; h++)
                                dot[h] = dot8(&qs[h][w * 8], cv, dot[h]);
                        }
                    }
                    const float s = __half2float(ksz[(size_t)p * 2]), z = __half2float(ksz[(size_t)p * 2 + 1]);
#pragma unroll
                    for (int h = 0; h < R; h++)
                        sc[h] = s * (dot[h] - z * qsum[h]) * sm_scale;
                }
            } else {
#pragma unroll
                for (int h = 0; h < R; h++)
                    sc[h] = -INFINITY;
            }
#pragma unroll
            for (int h = 0; h < R; h++)
                S[h][tid] = sc[h];
        }
        __syncthreads();
        /* online softmax: warp w serves heads w, w+4, ... */
        for (int h = warp; h < R; h += AT_THREADS / 32)
            online_softmax_tile_warp<AT_TILE>(S[h], mrun[h], lrun[h], alpha[h], lane);
        __syncthreads();
        /* V: thread = (DPT dims, position lane) */
#pragma unroll
        for (int h = 0; h < R; h++) {
            const float al = alpha[h];
#pragma unroll
            for (int e = 0; e < DPT; e++)
                o[h][e] *= al;
            wz[h] *= al;
        }
        const int tend = min(AT_TILE, p1 - t0);
        if constexpr (BF) {
            /* four positions' loads in flight: one dependent global load per position
             * made this loop the partial kernel's time (session 7) */
#pragma unroll 4
            for (int i = pl; i < tend; i += PL) {
                const uint16_t *vrow = a.v16 + (base + t0 + i) * DH + cw * DPT;
                float vv[DPT];
                uint32_t wv[DPT / 2];
                if constexpr (DPT == 8) {
                    const uint4 u = *reinterpret_cast<const uint4 *>(vrow);
                    wv[0] = u.x, wv[1] = u.y, wv[2] = u.z, wv[3] = u.w;
                } else {
                    const uint2 u = *reinterpret_cast<const uint2 *>(vrow);
                    wv[0] = u.x, wv[1] = u.y;
                }
                bf16_unpack(wv, vv);
#pragma unroll
                for (int h = 0; h < R; h++) {
                    const float w = S[h][i];
#pragma unroll
                    for (int e = 0; e < DPT; e++)
                        o[h][e] = fmaf(w, vv[e], o[h][e]);
                }
            }
        } else {
            /* four positions' loads in flight: one dependent global load per position
             * made this loop the partial kernel's time (session 7) */
#pragma unroll 4
            for (int i = pl; i < tend; i += PL) {
                const int p = t0 + i;
                const uint8_t *vrow = vc + (size_t)p * COLS + cw * (DPT / 2);
                const uint32_t word = DPT == 8 ? *reinterpret_cast<const uint32_t *>(vrow)
                                               : *reinterpret_cast<const uint16_t *>(vrow);
                float cv[DPT];
#pragma unroll
                for (int e = 0; e < DPT; e++)
                    cv[e] = __uint_as_float(0x4B000000u | ((word >> (4 * e)) & 0xFu)) - 8388608.f;
                const float s = __half2float(vsz[(size_t)p * 2]), z = __half2float(vsz[(size_t)p * 2 + 1]);
#pragma unroll
                for (int h = 0; h < R; h++) {
                    const float w = S[h][i] * s;
#pragma unroll
                    for (int e = 0; e < DPT; e++)
                        o[h][e] = fmaf(w, cv[e], o[h][e]);
                    wz[h] = fmaf(w, z, wz[h]);
                }
            }
        }
    }
    /* merge the position lanes head by head, write this split's partial result */
    const size_t row0 = ((size_t)b * a.n_q + qi) * a.heads + hq0;
#pragma unroll
    for (int h = 0; h < R; h++) {
        __syncthreads();
#pragma unroll
        for (int e = 0; e < DPT; e++)
            red[pl][cw * DPT + e] = o[h][e] - wz[h];
        __syncthreads();
        for (int j = tid; j < DH && h < rn; j += AT_THREADS) {
            float sum = 0.f;
            for (int l = 0; l < PL; l++)
                sum += red[l][j];
            a.part_o[((row0 + h) * a.nsplit + split) * DH + j] = sum;
        }
    }
    if (tid < rn) {
        float *ml = a.part_ml + ((row0 + tid) * a.nsplit + split) * 2;
        ml[0] = p0 < p1 ? mrun[tid] : -INFINITY;
        ml[1] = p0 < p1 ? lrun[tid] : 0.f;
    }
}

/* One thread per (row = (batch, query, head), dim j): merge the splits, normalise, write
 * bf16. The split loop's loads are issued COMB_U at a time ahead of their FMAs: as one warp
 * per row with a dependent L2 load per split and dim the merge took 20 µs per decode step
 * (Nsight Compute, session 7). Same terms in the same order as that version. */
constexpr int COMB_THREADS = 256, COMB_U = 4;
__global__ void __launch_bounds__(COMB_THREADS)
    attn_combine(uint16_t *__restrict__ out, const float *__restrict__ part_o,
                 const float *__restrict__ part_ml, int rows, int nsplit, int dh)
{
    pdl_wait();
    pdl_launch_dependents();
    const int rpb = blockDim.x / dh; /* rows per CTA (dh <= 256 divides the CTA) */
    const int row = blockIdx.x * rpb + threadIdx.x / dh, j = threadIdx.x % dh;
    if (row >= rows)
        return;
    const float *ml = part_ml + (size_t)row * nsplit * 2;
    float m = -INFINITY;
    for (int s = 0; s < nsplit; s++)
        m = fmaxf(m, ml[2 * s]);
    float l = 0.f;
    for (int s = 0; s < nsplit; s++)
        if (ml[2 * s + 1] > 0.f)
            l += ml[2 * s + 1] * __expf(ml[2 * s] - m);
    const float *po = part_o + (size_t)row * nsplit * dh + j;
    float acc = 0.f;
    for (int s0 = 0; s0 < nsplit; s0 += COMB_U) {
        float o[COMB_U], mm[COMB_U], ll[COMB_U];
#pragma unroll
        for (int u = 0; u < COMB_U; u++) {
            const int s = s0 + u < nsplit ? s0 + u : nsplit - 1;
            o[u] = po[(size_t)s * dh];
            mm[u] = ml[2 * s];
            ll[u] = ml[2 * s + 1];
        }
#pragma unroll
        for (int u = 0; u < COMB_U; u++)
            if (s0 + u < nsplit && ll[u] > 0.f)
                acc += o[u] * __expf(mm[u] - m);
    }
    out[(size_t)row * dh + j] = __bfloat16_as_ushort(__float2bfloat16_rn(acc / l));
}

/* ---------- tensor-core attention (mma.sync m16n8k16 bf16, fp32 accumulation) ----------
 * Flash-attention style for dh 64 and 128, prefill and decode alike. The rows of one (batch,
 * KV head) are its (query, head-in-group) pairs, row = qi·r + h, so a GQA group of 8 heads
 * fills half an m16 tile at decode and 2 query positions per tile at prefill. A warp owns 16
 * rows and walks the context 16 positions at a time: S = Q·Kᵀ on two n8 tiles, an online
 * softmax in the log2 domain on the accumulator fragments, then O += P·V, where the S
 * fragments are already the A operand of the P·V MMA (FlashAttention-2's register reuse).
 * No shared memory in the loop: each lane loads its own fragments from global memory.
 *
 * Layout freedom makes that cheap. A dot product does not care about the order of its k
 * terms as long as both operands use the same one, and an output column may be any dim as
 * long as the write knows which:
 *  - q·k: lane (g, t) feeds its k slots from dims d0 = t·dh/4 + 4i … d0 + 3 of chunk i,
 *    slots (2t, 2t+1) ↔ dims (d0, d0+2) and (2t+8, 2t+9) ↔ (d0+1, d0+3); so a K row is
 *    read as 4 contiguous pieces (one per t), and a KV4 code byte (dims 2j, 2j+1) gives
 *    one value to each half; Q is permuted once to match.
 *  - P·V: output column c of n-tile N ↔ a dim chosen so that a lane reads dh/16 code bytes
 *    (KV4) or 16 bf16 bytes per position contiguously: see tc_out_dim.
 * KV4 codes become centred 16-bit floats c − 8 (codes_c8), and the zero point is applied
 * after the MMA: q·k = s·(Σ q_j·(c_j − 8) − (z − 8)·Σ q_j) on bf16 (q is bf16), and
 * Σ_p w_p·(c_pj − z_p) = Σ_p w_p·(c_pj − 8) − Σ_p w_p·(z_p − 8), w_p = P_p·s_p, on fp16
 * with w split into hi + lo halves (≈ 22 bits: see the P·V step for why).
 * Warps of a CTA either take different row tiles (prefill: wr = 4) or interleave over one
 * tile's positions (decode: wr = 1, four position lanes), merged through shared memory at
 * the end. One split writes bf16 directly; several write the (max, sum, unnormalised
 * output) partials that attn_combine merges, in the natural-log units it expects. */
constexpr int TC_WARPS = 4, TC_THREADS = 32 * TC_WARPS;

struct tc_args : attn_args {
    int wr; /* row tiles per CTA: 1, 2 or 4 (TC_WARPS / wr warps per tile) */
    uint16_t *out; /* written directly when nsplit is 1 */
};

/* c += A·B on 16-bit operands (F16: fp16, else bf16), fp32 accumulation */
template <bool F16>
__device__ __forceinline__ void mma16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                      uint32_t a3, uint32_t b0, uint32_t b1)
{
#define FQ_MMA16(T)                                                                              \
    asm("mma.sync.aligned.m16n8k16.row.col.f32." T "." T ".f32 {%0,%1,%2,%3}, "                \
        "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"                                              \
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                         \
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1))
    if constexpr (F16)
        FQ_MMA16("f16");
    else
        FQ_MMA16("bf16");
#undef FQ_MMA16
}

/* bf16x2 {lo, hi}, round to nearest */
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ float fast_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* Two codes (the low, or high, nibbles of bytes 0 and 2 of p) as c − 8 in a 16-bit float
 * pair, exactly: 128 + c by the exponent trick (bf16 0x4300 is 128 and a code is its low
 * mantissa bits; fp16 0x5800 is 128 with the code 3 bits up, ulp 1/8 there), minus 136.
 * Centred codes keep the MMA's fp32 sums near the size of the result: with 128 + c the
 * P·V sum over a long context was ~1000× larger than what remained after the zero-point
 * correction, and its roundings showed in the output (1e-3 against the CPU, session 8). */
template <bool F16> __device__ __forceinline__ uint32_t codes_c8(uint32_t p, bool hi)
{
    uint32_t x, r;
    if constexpr (F16) {
        x = (hi ? (p >> 1) & 0x00780078u : (p & 0x000F000Fu) << 3) | 0x58005800u;
        asm("sub.rn.f16x2 %0, %1, %2;\n" : "=r"(r) : "r"(x), "r"(0x58405840u));
    } else {
        x = (hi ? (p >> 4) & 0x000F000Fu : p & 0x000F000Fu) | 0x43004300u;
        asm("sub.rn.bf16x2 %0, %1, %2;\n" : "=r"(r) : "r"(x), "r"(0x43084308u));
    }
    return r;
}

/* the dim of output column c of n-tile N (see the comment above) */
template <int DH, bool BF> __device__ __forceinline__ int tc_out_dim(int N, int c)
{
    if constexpr (BF)
        return 64 * (N / 8) + 8 * c + N % 8;
    else
        return 2 * (c * (DH / 16) + N / 2) + (N & 1);
}

template <int N> __device__ __forceinline__ void load_words(uint32_t (&w)[N], const void *p)
{
    static_assert(N == 1 || N == 2 || N % 4 == 0, "1, 2 or 4k words");
    if constexpr (N == 1) {
        w[0] = *reinterpret_cast<const uint32_t *>(p);
    } else if constexpr (N == 2) {
        const uint2 u = *reinterpret_cast<const uint2 *>(p);
        w[0] = u.x, w[1] = u.y;
    } else {
#pragma unroll
        for (int i = 0; i < N / 4; i++) {
            const uint4 u = reinterpret_cast<const uint4 *>(p)[i];
            w[4 * i] = u.x, w[4 * i + 1] = u.y, w[4 * i + 2] = u.z, w[4 * i + 3] = u.w;
        }
    }
}

/* One warp's 16 positions of K and V as its lanes' MMA fragments want them (positions past
 * pend read the last valid one; the scores mask them). */
template <int DH, bool BF> struct kv_tile {
    static constexpr int KW = BF ? DH / 8 : DH / 32;           /* K words per lane and position */
    static constexpr int VW = BF ? DH / 16 : (DH / 64 > 0 ? DH / 64 : 1); /* V words per position */
    uint32_t kw[2][KW], vw[4][VW];
    __half2 ksz[4], vsz[4]; /* KV4: (scale, zero) of the lane's four positions */

    __device__ __forceinline__ void load(const uint8_t *kc, const uint8_t *vc,
                                         const __half2 *ks, const __half2 *vs,
                                         const uint16_t *k16, const uint16_t *v16, int t0,
                                         int pend, int g8, int t4)
    {
        const int lastp = pend - 1;
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
            const int pk = min(t0 + nt * 8 + g8, lastp);
            if constexpr (BF)
                load_words(kw[nt], k16 + (size_t)pk * DH + t4 * (DH / 4));
            else
                load_words(kw[nt], kc + (size_t)pk * (DH / 2) + t4 * (DH / 8));
        }
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int pc = min(t0 + (e >> 1) * 8 + 2 * t4 + (e & 1), lastp);
            if constexpr (BF) {
                /* dims 8g .. 8g + 7, and 64 + 8g .. when dh = 128 */
#pragma unroll
                for (int hf = 0; hf < VW / 4; hf++) {
                    uint32_t w4[4];
                    load_words(w4, v16 + (size_t)pc * DH + 64 * hf + g8 * 8);
#pragma unroll
                    for (int i = 0; i < 4; i++)
                        vw[e][4 * hf + i] = w4[i];
                }
            } else {
                load_words(vw[e], vc + (size_t)pc * (DH / 2) + g8 * (DH / 16));
                ksz[e] = ks[pc];
                vsz[e] = vs[pc];
            }
        }
    }
};

template <int DH, bool BF>
__global__ void __launch_bounds__(TC_THREADS, 3) attn_tc(tc_args a)
{
    constexpr int NT = DH / 8;  /* output n-tiles */
    constexpr int KC = DH / 16; /* k chunks of q·k */
    constexpr int QW = DH / 8;  /* q words per lane and row (dh/4 dims) */
    static_assert(DH == 64 || DH == 128, "dh 64 or 128");
    __shared__ float ot[TC_WARPS][16][DH + 4];
    __shared__ float mls[TC_WARPS][16][2];
    pdl_wait();
    pdl_launch_dependents();

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g8 = lane >> 2, t4 = lane & 3;
    const int split = blockIdx.x, b = blockIdx.y / a.c.kv_heads, kvh = blockIdx.y % a.c.kv_heads;
    const int ws = TC_WARPS / a.wr, rt = warp % a.wr, pw = warp / a.wr;
    const int zb = gridDim.z - 1 - blockIdx.z; /* the longest causal rows first */
    const int nrows = a.n_q * a.r, ctx = a.ctx_len[b];
    const int row0 = (zb * a.wr + rt) * 16;
    const int rowA = row0 + g8, rowB = rowA + 8;
    const int posA = rowA < nrows ? ctx - a.n_q + rowA / a.r : -1;
    const int posB = rowB < nrows ? ctx - a.n_q + rowB / a.r : -1;
    const int lastrow = min(row0 + 15, nrows - 1);
    const int maxpos = lastrow >= row0 ? ctx - a.n_q + lastrow / a.r : -1;
    const int p0 = split * a.chunk, pend = min(min(ctx, p0 + a.chunk), maxpos + 1);

    /* Q fragments, permuted as the K side reads (a0/a2 of row A, a1/a3 of row B) */
    uint32_t qlo[2][KC], qhi[2][KC];
    float qs[2];
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        const int row = hr ? rowB : rowA;
        uint32_t w[QW];
        if (row < nrows) {
            const int qi = row / a.r, h = row % a.r;
            load_words(w, a.q + (((size_t)b * a.n_q + qi) * a.heads + kvh * a.r + h) * DH +
                              t4 * (DH / 4));
        } else {
#pragma unroll
            for (int i = 0; i < QW; i++)
                w[i] = 0u;
        }
        float sum = 0.f;
#pragma unroll
        for (int i = 0; i < KC; i++) {
            qlo[hr][i] = __byte_perm(w[2 * i], w[2 * i + 1], 0x5410);
            qhi[hr][i] = __byte_perm(w[2 * i], w[2 * i + 1], 0x7632);
            sum += bf16_lo(w[2 * i]) + bf16_hi(w[2 * i]) + bf16_lo(w[2 * i + 1]) +
                   bf16_hi(w[2 * i + 1]);
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        qs[hr] = sum;
    }

    const size_t base = ((size_t)b * a.c.kv_heads + kvh) * a.c.max_ctx;
    const uint8_t *kc = a.c.k_codes + base * (DH / 2), *vc = a.c.v_codes + base * (DH / 2);
    const __half2 *ksz = reinterpret_cast<const __half2 *>(a.c.k_sz) + base;
    const __half2 *vsz = reinterpret_cast<const __half2 *>(a.c.v_sz) + base;
    const uint16_t *k16 = BF ? a.k16 + base * DH : nullptr, *v16 = BF ? a.v16 + base * DH : nullptr;
    const float cs = rsqrtf((float)DH) * 1.4426950408889634f; /* scores in log2 units */

    float o[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m2[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, wz[2] = {0.f, 0.f};

    /* KV4: the next tile's loads are issued before this tile's math (24 registers); bf16
     * K/V tiles are 64 registers, which would halve the CTAs per multiprocessor */
    constexpr bool PREFETCH = !BF;
    const int step = ws * 16;
    kv_tile<DH, BF> cur, nxt;
    int t0 = p0 + pw * 16;
    if (PREFETCH && t0 < pend)
        cur.load(kc, vc, ksz, vsz, k16, v16, t0, pend, g8, t4);
    for (; t0 < pend; t0 += step) {
        if constexpr (PREFETCH) {
            if (t0 + step < pend)
                nxt.load(kc, vc, ksz, vsz, k16, v16, t0 + step, pend, g8, t4);
        } else {
            cur.load(kc, vc, ksz, vsz, k16, v16, t0, pend, g8, t4);
        }
        int pv[4];
#pragma unroll
        for (int e = 0; e < 4; e++)
            pv[e] = t0 + (e >> 1) * 8 + 2 * t4 + (e & 1);
        float ks[4], kz[4], vs[4], vz[4];
        if constexpr (!BF) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float2 kf = __half22float2(cur.ksz[e]), vf = __half22float2(cur.vsz[e]);
                ks[e] = kf.x, kz[e] = kf.y - 8.f, vs[e] = vf.x, vz[e] = vf.y - 8.f;
            }
        }

        /* S = Q·Kᵀ: sc[nt][0..1] row A, [2..3] row B, positions pv[2nt], pv[2nt+1]; even and
         * odd k chunks in two accumulators (half the dependent MMA chain), added at the end */
        float sc[2][4], sc2[2][4];
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++)
                sc[nt][e] = sc2[nt][e] = 0.f;
#pragma unroll
            for (int i = 0; i < KC; i++) {
                uint32_t b0, b1;
                if constexpr (BF) {
                    b0 = __byte_perm(cur.kw[nt][2 * i], cur.kw[nt][2 * i + 1], 0x5410);
                    b1 = __byte_perm(cur.kw[nt][2 * i], cur.kw[nt][2 * i + 1], 0x7632);
                } else {
                    const uint32_t p = __byte_perm(cur.kw[nt][i >> 1], 0u, (i & 1) ? 0x4342 : 0x4140);
                    b0 = codes_c8<false>(p, false);
                    b1 = codes_c8<false>(p, true);
                }
                mma16<false>(i & 1 ? sc2[nt] : sc[nt], qlo[0][i], qlo[1][i], qhi[0][i], qhi[1][i],
                             b0, b1);
            }
#pragma unroll
            for (int e = 0; e < 4; e++)
                sc[nt][e] += sc2[nt][e];
        }
        float tmax[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int hr = e >> 1, pe = 2 * nt + (e & 1), p = pv[pe];
                float v = sc[nt][e];
                if constexpr (BF)
                    v *= cs;
                else
                    v = ks[pe] * (v - kz[pe] * qs[hr]) * cs;
                v = (p <= (hr ? posB : posA) && p < pend) ? v : -INFINITY;
                sc[nt][e] = v;
                tmax[hr] = fmaxf(tmax[hr], v);
            }
        float al[2], mu[2];
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
            tmax[hr] = fmaxf(tmax[hr], __shfl_xor_sync(0xffffffffu, tmax[hr], 1));
            tmax[hr] = fmaxf(tmax[hr], __shfl_xor_sync(0xffffffffu, tmax[hr], 2));
            const float mn = fmaxf(m2[hr], tmax[hr]);
            mu[hr] = mn == -INFINITY ? 0.f : mn;
            al[hr] = fast_exp2(m2[hr] - mu[hr]);
            m2[hr] = mn;
            l[hr] *= al[hr];
            wz[hr] *= al[hr];
        }
        /* the running maximum rarely moves after the first tiles: skip the rescale then */
        if (__any_sync(0xffffffffu, al[0] != 1.f || al[1] != 1.f)) {
#pragma unroll
            for (int n = 0; n < NT; n++) {
                o[n][0] *= al[0], o[n][1] *= al[0];
                o[n][2] *= al[1], o[n][3] *= al[1];
            }
        }
        /* P, then the A operand of P·V. bf16 K/V: bf16(P). KV4: w = P·s_v on fp16 as a
         * hi + lo pair (two MMAs), ~22 bits of w instead of a bf16's 8: the W4A4 runtime
         * feeds the attention output to 4-bit quantizers, where a rounding of P flips
         * codes downstream (a bf16 P moved flatq-llama-16m's logits 33 % away from the
         * CPU composition in the runtime test; fp32 P·V does not) */
        uint32_t pa[4], pl[4];
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int hr = 0; hr < 2; hr++) {
                const int pe = 2 * nt;
                float p0v = fast_exp2(sc[nt][2 * hr] - mu[hr]);
                float p1v = fast_exp2(sc[nt][2 * hr + 1] - mu[hr]);
                l[hr] += p0v + p1v;
                if constexpr (BF) {
                    pa[2 * nt + hr] = pack_bf16(p0v, p1v);
                } else {
                    const float w0 = p0v * vs[pe], w1 = p1v * vs[pe + 1];
                    const __half2 h = __floats2half2_rn(w0, w1);
                    const float2 hf = __half22float2(h);
                    const __half2 lo = __floats2half2_rn(w0 - hf.x, w1 - hf.y);
                    pa[2 * nt + hr] = *reinterpret_cast<const uint32_t *>(&h);
                    pl[2 * nt + hr] = *reinterpret_cast<const uint32_t *>(&lo);
                    wz[hr] += w0 * vz[pe] + w1 * vz[pe + 1];
                }
            }
        /* O += P·V over the n-tiles */
#pragma unroll
        for (int n = 0; n < NT; n++) {
            if constexpr (BF) {
                const int wi = 4 * (n / 8) + (n % 8) / 2;
                const unsigned sel = (n & 1) ? 0x7632 : 0x5410;
                const uint32_t b0 = __byte_perm(cur.vw[0][wi], cur.vw[1][wi], sel);
                const uint32_t b1 = __byte_perm(cur.vw[2][wi], cur.vw[3][wi], sel);
                mma16<false>(o[n], pa[0], pa[1], pa[2], pa[3], b0, b1);
            } else {
                const int m = n / 2, wi = m / 4, j = m % 4;
                const unsigned sel = j | (j << 4) | ((4 + j) << 8) | ((4 + j) << 12);
                const uint32_t x01 = __byte_perm(cur.vw[0][wi], cur.vw[1][wi], sel);
                const uint32_t x23 = __byte_perm(cur.vw[2][wi], cur.vw[3][wi], sel);
                const uint32_t b0 = codes_c8<true>(x01, n & 1);
                const uint32_t b1 = codes_c8<true>(x23, n & 1);
                mma16<true>(o[n], pa[0], pa[1], pa[2], pa[3], b0, b1);
                mma16<true>(o[n], pl[0], pl[1], pl[2], pl[3], b0, b1);
            }
        }
        if constexpr (PREFETCH)
            cur = nxt;
    }

    /* the quad's partial sums, then this warp's rows into shared memory */
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        l[hr] += __shfl_xor_sync(0xffffffffu, l[hr], 1);
        l[hr] += __shfl_xor_sync(0xffffffffu, l[hr], 2);
        wz[hr] += __shfl_xor_sync(0xffffffffu, wz[hr], 1);
        wz[hr] += __shfl_xor_sync(0xffffffffu, wz[hr], 2);
    }
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
        for (int cc = 0; cc < 2; cc++) {
            const int d = tc_out_dim<DH, BF>(n, 2 * t4 + cc);
            ot[warp][g8][d] = o[n][cc] - wz[0];
            ot[warp][g8 + 8][d] = o[n][2 + cc] - wz[1];
        }
    if (t4 == 0) {
        mls[warp][g8][0] = m2[0], mls[warp][g8][1] = l[0];
        mls[warp][g8 + 8][0] = m2[1], mls[warp][g8 + 8][1] = l[1];
    }
    __syncthreads();
    /* merge the position lanes of each row tile; write bf16 (one split) or the partials */
    const int npair = a.wr * 16 * (DH / 2);
    for (int e = threadIdx.x; e < npair; e += TC_THREADS) {
        const int j2 = e % (DH / 2), rr = (e / (DH / 2)) % 16, rt2 = e / (DH / 2) / 16;
        const int row = (zb * a.wr + rt2) * 16 + rr;
        if (row >= nrows)
            continue;
        float M = -INFINITY;
        for (int p = 0; p < ws; p++)
            M = fmaxf(M, mls[rt2 + a.wr * p][rr][0]);
        float L = 0.f, o0 = 0.f, o1 = 0.f;
        for (int p = 0; p < ws; p++) {
            const int w = rt2 + a.wr * p;
            const float mw = mls[w][rr][0];
            const float f = mw == -INFINITY ? 0.f : fast_exp2(mw - M);
            L += f * mls[w][rr][1];
            o0 += f * ot[w][rr][2 * j2];
            o1 += f * ot[w][rr][2 * j2 + 1];
        }
        const size_t orow = ((size_t)b * a.n_q + row / a.r) * a.heads + kvh * a.r + row % a.r;
        if (a.nsplit == 1) {
            reinterpret_cast<uint32_t *>(a.out + orow * DH)[j2] = pack_bf16(o0 / L, o1 / L);
        } else {
            const size_t at = orow * a.nsplit + split;
            a.part_o[at * DH + 2 * j2] = o0;
            a.part_o[at * DH + 2 * j2 + 1] = o1;
            if (j2 == 0) {
                a.part_ml[at * 2] = M == -INFINITY ? -INFINITY : M * 0.6931471805599453f;
                a.part_ml[at * 2 + 1] = L;
            }
        }
    }
}

template <int R, int DH>
cudaError_t launch_partial(dim3 grid, const fq_cuda_ctx *ctx, const cc_args &a, bool bf)
{
    return bf ? fq_launch(ctx, attn_kv4_partial<R, DH, true>, grid, dim3(AT_THREADS), 0, a)
              : fq_launch(ctx, attn_kv4_partial<R, DH, false>, grid, dim3(AT_THREADS), 0, a);
}

/* -1: no instance for dh; else the launch's cudaError_t */
template <int R>
int dispatch_dh(dim3 grid, const fq_cuda_ctx *ctx, const cc_args &a, bool bf)
{
    switch (a.c.dh) {
    case 8: return (int)launch_partial<R, 8>(grid, ctx, a, bf);
    case 16: return (int)launch_partial<R, 16>(grid, ctx, a, bf);
    case 32: return (int)launch_partial<R, 32>(grid, ctx, a, bf);
    case 64: return (int)launch_partial<R, 64>(grid, ctx, a, bf);
    case 128: return (int)launch_partial<R, 128>(grid, ctx, a, bf);
    case 256: return (int)launch_partial<R, 256>(grid, ctx, a, bf);
    default: return -1;
    }
}

} // namespace

extern "C" int fq_kv4_write_cuda(fq_cuda_ctx *ctx, fq_kv4_cache *cache, const uint16_t *k,
                                 const uint16_t *v, int n_new, const int *pos0, float k_kmax,
                                 float k_kmin, float v_kmax, float v_kmin, int bits)
{
    const char *where = FILE_ ":fq_kv4_write_cuda";
    if (!ctx)
        return fq_error("%s: NULL context (expected an initialised fq_cuda_ctx)", where);
    if (w4a4_check_kv4_write(where, cache, k, v, n_new, pos0, k_kmax, k_kmin, v_kmax, v_kmin,
                             bits))
        return FQ_ERR;
    if (cache->batch > 256)
        return fq_error("%s: batch = %d (expected at most 256 on the GPU)", where, cache->batch);
    batch_pos bp;
    for (int b = 0; b < cache->batch; b++)
        bp.v[b] = pos0[b];
    const int rows = cache->batch * n_new * cache->kv_heads;
    dim3 grid((rows + 7) / 8, 2);
    CU_CHECK(fq_launch(ctx, kv4_write_kernel, grid, dim3(256), 0, *cache, k, v, n_new, bp,
                       k_kmax, k_kmin, v_kmax, v_kmin, (1 << bits) - 1, rows),
             FILE_, "fq_kv4_write_cuda", "kv4_write_kernel");
    return FQ_OK;
}

/* (max, sum, output) partials of `rows` rows × nsplit splits in the context's scratch (no
 * allocation call per decode step) */
static int attn_partials(fq_cuda_ctx *ctx, const char *where, size_t rows, int nsplit, int dh,
                         float **po, float **pml)
{
    float *part = nullptr;
    if (fq_cuda_scratch(ctx, FQ_SCRATCH_ATTN, rows * nsplit * (dh + 2) * sizeof(float),
                        (void **)&part))
        return fq_error_wrap("%s: partials", where);
    *po = part;
    *pml = part + rows * nsplit * dh;
    return FQ_OK;
}

static int attn_merge(fq_cuda_ctx *ctx, const char *where, uint16_t *out, const float *po,
                      const float *pml, size_t rows, int nsplit, int dh)
{
    const int rpb = COMB_THREADS / dh;
    CU_CHECK(fq_launch(ctx, attn_combine, dim3((unsigned)((rows + rpb - 1) / rpb)),
                       dim3(rpb * dh), 0, out, po, pml, (int)rows, nsplit, dh),
             FILE_, where, "attn_combine");
    return FQ_OK;
}

/* nsplit context splits for `want` CTAs per (row group), clamped to 1 .. one per
 * AT_SPLIT_MIN positions, chunks rounded up to `align` positions; *chunk set */
static int context_splits(int maxctx, long want, int align, int *chunk)
{
    const int maxsplit = (maxctx + AT_SPLIT_MIN - 1) / AT_SPLIT_MIN;
    const int nsplit = want < 1 ? 1 : (want > maxsplit ? maxsplit : (int)want);
    *chunk = ((maxctx + nsplit - 1) / nsplit + align - 1) / align * align;
    return (maxctx + *chunk - 1) / *chunk;
}

static void attn_args_fill(attn_args &a, const uint16_t *q, const fq_kv4_cache *cache,
                           const uint16_t *k16, const uint16_t *v16, int n_q,
                           const int *ctx_len, int heads, int nsplit, int chunk)
{
    a.q = q;
    a.c = *cache;
    a.k16 = k16;
    a.v16 = v16;
    for (int b = 0; b < cache->batch; b++)
        a.ctx_len[b] = ctx_len[b];
    a.n_q = n_q;
    a.heads = heads;
    a.r = heads / cache->kv_heads;
    a.nsplit = nsplit;
    a.chunk = chunk;
    a.part_o = a.part_ml = nullptr;
}

static void (*tc_kernel(int dh, bool bf))(tc_args)
{
    return dh == 64 ? (bf ? attn_tc<64, true> : attn_tc<64, false>)
                    : (bf ? attn_tc<128, true> : attn_tc<128, false>);
}

static bool tc_applies(const fq_cuda_ctx *ctx, const uint16_t *out, const uint16_t *q,
                       const fq_kv4_cache *c, bool bf)
{
    const auto al = [](const void *p, uintptr_t n) { return (uintptr_t)p % n == 0; };
    return ctx->attn_tc && (c->dh == 64 || c->dh == 128) && al(q, 16) && al(out, 4) &&
           (bf || (al(c->k_codes, 16) && al(c->v_codes, 16) && al(c->k_sz, 4) &&
                   al(c->v_sz, 4)));
}

/* The tensor-core path (attn_tc): row tiles of 16 (query, head) pairs per (batch, KV head),
 * 4 of them per CTA when there are enough rows, else the CTA's warps split the positions;
 * splits over the context until the grid fills the GPU once, chunks of at least 128
 * positions. */
static int attention_tc_run(fq_cuda_ctx *ctx, const char *where, uint16_t *out,
                            const uint16_t *q, const fq_kv4_cache *cache, const uint16_t *k16,
                            const uint16_t *v16, int n_q, const int *ctx_len, int heads,
                            int maxctx)
{
    const bool bf = k16 != nullptr;
    const int r = heads / cache->kv_heads, dh = cache->dh;
    const long nrows = (long)n_q * r;
    const int wr = nrows <= 16 ? 1 : nrows <= 32 ? 2 : 4;
    const long zblocks = (nrows + 16L * wr - 1) / (16L * wr);
    const long bkv = (long)cache->batch * cache->kv_heads;
    if (zblocks > 65535 || bkv > 65535)
        return fq_error("%s: batch·kv_heads = %ld, n_q·heads/kv_heads = %ld (expected at most "
                        "65535 and 4194240 on the GPU)", where, bkv, nrows);
    const long groups = bkv * zblocks;
    /* one wave: as many CTAs as the GPU holds at once (a second, partial wave of splits
     * doubled the decode time at 32k context); chunks of whole 4-warp steps */
    void (*kern)(tc_args) = tc_kernel(dh, bf);
    int per_sm = fq_max_resident((const void *)kern, ctx->device, TC_THREADS, 0);
    per_sm = per_sm > 0 ? per_sm : 2;
    int chunk;
    const int nsplit = context_splits(maxctx, (long)per_sm * ctx->sm_count / groups,
                                      16 * TC_WARPS, &chunk);
    const size_t rows = (size_t)cache->batch * n_q * heads;
    tc_args a;
    attn_args_fill(a, q, cache, k16, v16, n_q, ctx_len, heads, nsplit, chunk);
    a.wr = wr;
    a.out = out;
    if (nsplit > 1 && attn_partials(ctx, where, rows, nsplit, dh, &a.part_o, &a.part_ml))
        return FQ_ERR;
    const dim3 grid(nsplit, (unsigned)bkv, (unsigned)zblocks);
    CU_CHECK(fq_launch(ctx, kern, grid, dim3(TC_THREADS), 0, a), FILE_, where, "attn_tc");
    return nsplit > 1 ? attn_merge(ctx, where, out, a.part_o, a.part_ml, rows, nsplit, dh)
                      : FQ_OK;
}

/* Both attentions after their checks: KV4 when k16 is NULL, else bf16 K/V (k16, v16) in
 * the shape of `cache`. */
static int attention_run(fq_cuda_ctx *ctx, const char *where, uint16_t *out, const uint16_t *q,
                         const fq_kv4_cache *cache, const uint16_t *k16, const uint16_t *v16,
                         int n_q, const int *ctx_len, int heads)
{
    const bool bf = k16 != nullptr;
    const int r = heads / cache->kv_heads, dh = cache->dh;
    if (cache->batch > MAX_BATCH)
        return fq_error("%s: batch = %d (expected at most %d on the GPU)", where, cache->batch,
                        MAX_BATCH);
    if (n_q > 65535)
        return fq_error("%s: n_q = %d (expected at most 65535 on the GPU: one grid row per "
                        "query)", where, n_q);
    if (dh < 8 || dh > 256 || (dh & (dh - 1)))
        return fq_error("%s: dh = %d (expected a power of two in 8..256 on the GPU)", where, dh);
    if (r < 1 || r > 32)
        return fq_error("%s: heads/kv_heads = %d (expected 1..32 on the GPU)", where, r);
    int maxctx = 0;
    for (int b = 0; b < cache->batch; b++)
        maxctx = ctx_len[b] > maxctx ? ctx_len[b] : maxctx;
    if (tc_applies(ctx, out, q, cache, bf))
        return attention_tc_run(ctx, where, out, q, cache, k16, v16, n_q, ctx_len, heads, maxctx);
    /* The CUDA-core kernel. Heads per CTA: the smallest instantiated R >= r, at most 16; halved (down to 2) while
     * even the most splits leave fewer than two CTAs per multiprocessor — one decode
     * sequence of a 70B layer had 8 KV heads × 9 splits = 72 CTAs of 8 heads (28 µs at 2k
     * context, session 7). A head's arithmetic does not depend on R below 16. Splits:
     * enough CTAs to fill the GPU when there are few (batch·kv_heads·n_q), never chunks
     * shorter than AT_SPLIT_MIN positions. */
    const int maxsplit = (maxctx + AT_SPLIT_MIN - 1) / AT_SPLIT_MIN;
    int R = r <= 1 ? 1 : r <= 2 ? 2 : r <= 4 ? 4 : r <= 8 ? 8 : 16;
    while (R > 2 && R < 16 &&
           (long)cache->batch * cache->kv_heads * ((r + R - 1) / R) * n_q * maxsplit <
               2L * ctx->sm_count)
        R /= 2;
    const int nhc = (r + R - 1) / R;
    if ((long)cache->batch * cache->kv_heads * nhc > 65535)
        return fq_error("%s: batch·kv_heads = %d·%d (expected at most %d on the GPU: one grid "
                        "row per KV head)", where, cache->batch, cache->kv_heads, 65535 / nhc);
    const long groups = (long)cache->batch * cache->kv_heads * nhc * n_q;
    int chunk;
    const int nsplit = context_splits(maxctx, (528 + groups - 1) / groups, AT_TILE, &chunk);

    const size_t rows = (size_t)cache->batch * n_q * heads;
    cc_args a;
    attn_args_fill(a, q, cache, k16, v16, n_q, ctx_len, heads, nsplit, chunk);
    a.nhc = nhc;
    if (attn_partials(ctx, where, rows, nsplit, dh, &a.part_o, &a.part_ml))
        return FQ_ERR;
    dim3 grid(nsplit, cache->batch * cache->kv_heads * nhc, n_q);
    int rc;
    switch (R) {
    case 1: rc = dispatch_dh<1>(grid, ctx, a, bf); break;
    case 2: rc = dispatch_dh<2>(grid, ctx, a, bf); break;
    case 4: rc = dispatch_dh<4>(grid, ctx, a, bf); break;
    case 8: rc = dispatch_dh<8>(grid, ctx, a, bf); break;
    default: rc = dispatch_dh<16>(grid, ctx, a, bf); break;
    }
    if (rc < 0)
        return fq_error("%s: dh = %d has no kernel instance (expected a power of two in "
                        "8..256)", where, dh);
    CU_CHECK((cudaError_t)rc, FILE_, where, "attn_kv4_partial");
    return attn_merge(ctx, where, out, a.part_o, a.part_ml, rows, nsplit, dh);
}

extern "C" int fq_attention_kv4_cuda(fq_cuda_ctx *ctx, uint16_t *out, const uint16_t *q,
                                     const fq_kv4_cache *cache, int n_q, const int *ctx_len,
                                     int heads)
{
    const char *where = FILE_ ":fq_attention_kv4_cuda";
    if (!ctx)
        return fq_error("%s: NULL context (expected an initialised fq_cuda_ctx)", where);
    if (w4a4_check_attention(where, out, q, cache, n_q, ctx_len, heads))
        return FQ_ERR;
    return attention_run(ctx, where, out, q, cache, nullptr, nullptr, n_q, ctx_len, heads);
}

extern "C" int fq_attention_bf16kv_cuda(fq_cuda_ctx *ctx, uint16_t *out, const uint16_t *q,
                                        const uint16_t *k, const uint16_t *v, int batch,
                                        int kv_heads, int max_ctx, int dh, int n_q,
                                        const int *ctx_len, int heads)
{
    const char *where = FILE_ ":fq_attention_bf16kv_cuda";
    if (!ctx)
        return fq_error("%s: NULL context (expected an initialised fq_cuda_ctx)", where);
    if ((uintptr_t)k % 16 || (uintptr_t)v % 16)
        return fq_error("%s: k or v is not 16-byte aligned (expected cudaMalloc'd caches)", where);
    /* the KV4 shape checks on a view whose code and scale pointers are the bf16 caches
     * (only their being set is checked; the kernel reads k and v as bf16) */
    const fq_kv4_cache view = {batch, kv_heads, max_ctx, dh, (uint8_t *)k, (uint8_t *)v,
                               (uint16_t *)k, (uint16_t *)v};
    if (w4a4_check_attention(where, out, q, &view, n_q, ctx_len, heads))
        return FQ_ERR;
    return attention_run(ctx, where, out, q, &view, k, v, n_q, ctx_len, heads);
}
