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
 * (n_q > 1) runs one CTA per query position and re-reads K/V through L2 — correct, but
 * not a flash-attention kernel (bench/NOTES.md says what that costs).
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

constexpr int AT_THREADS = 128, AT_TILE = 128, AT_SPLIT_MIN = 256;

constexpr int MAX_BATCH = 256; /* per-sequence lengths travel in the kernel parameters */

struct attn_args {
    const uint16_t *q;
    fq_kv4_cache c;
    int ctx_len[MAX_BATCH];
    int n_q, heads, nsplit, chunk;
    int r, nhc; /* query heads per KV head; CTAs (runs of at most R heads) per KV head */
    float *part_o;  /* [batch, n_q, heads, nsplit, dh] */
    float *part_ml; /* [batch, n_q, heads, nsplit, 2] */
};

template <int R, int DH>
__global__ void __launch_bounds__(AT_THREADS) attn_kv4_partial(attn_args a)
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
                        for (int h = 0; h < R; h++) {
                            const float4 qa = *reinterpret_cast<const float4 *>(&qs[h][w * 8]);
                            const float4 qb = *reinterpret_cast<const float4 *>(&qs[h][w * 8 + 4]);
                            float d0 = dot[h];
                            d0 = fmaf(qa.x, cv[0], d0);
                            d0 = fmaf(qa.y, cv[1], d0);
                            d0 = fmaf(qa.z, cv[2], d0);
                            d0 = fmaf(qa.w, cv[3], d0);
                            d0 = fmaf(qb.x, cv[4], d0);
                            d0 = fmaf(qb.y, cv[5], d0);
                            d0 = fmaf(qb.z, cv[6], d0);
                            d0 = fmaf(qb.w, cv[7], d0);
                            dot[h] = d0;
                        }
                    }
                }
                const float s = __half2float(ksz[(size_t)p * 2]), z = __half2float(ksz[(size_t)p * 2 + 1]);
#pragma unroll
                for (int h = 0; h < R; h++)
                    sc[h] = s * (dot[h] - z * qsum[h]) * sm_scale;
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

/* One warp per (batch, query, head): merge the splits, normalise, write bf16. */
__global__ void attn_combine(uint16_t *__restrict__ out, const float *__restrict__ part_o,
                             const float *__restrict__ part_ml, int rows, int nsplit, int dh)
{
    const int row = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
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
    for (int j = lane; j < dh; j += 32) {
        float acc = 0.f;
        for (int s = 0; s < nsplit; s++)
            if (ml[2 * s + 1] > 0.f)
                acc += part_o[((size_t)row * nsplit + s) * dh + j] * __expf(ml[2 * s] - m);
        out[(size_t)row * dh + j] = __bfloat16_as_ushort(__float2bfloat16_rn(acc / l));
    }
}

template <int R, int DH>
void launch_partial(dim3 grid, cudaStream_t st, const attn_args &a)
{
    attn_kv4_partial<R, DH><<<grid, AT_THREADS, 0, st>>>(a);
}

template <int R>
int dispatch_dh(dim3 grid, cudaStream_t st, const attn_args &a)
{
    switch (a.c.dh) {
    case 8: launch_partial<R, 8>(grid, st, a); return 0;
    case 16: launch_partial<R, 16>(grid, st, a); return 0;
    case 32: launch_partial<R, 32>(grid, st, a); return 0;
    case 64: launch_partial<R, 64>(grid, st, a); return 0;
    case 128: launch_partial<R, 128>(grid, st, a); return 0;
    case 256: launch_partial<R, 256>(grid, st, a); return 0;
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
    cudaStream_t st = CTX_STREAM(ctx);
    const int rows = cache->batch * n_new * cache->kv_heads;
    dim3 grid((rows + 7) / 8, 2);
    kv4_write_kernel<<<grid, 256, 0, st>>>(*cache, k, v, n_new, bp, k_kmax, k_kmin, v_kmax,
                                           v_kmin, (1 << bits) - 1, rows);
    LAUNCH_CHECK(FILE_, "fq_kv4_write_cuda", "kv4_write_kernel");
    return FQ_OK;
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
    /* heads per CTA: the smallest instantiated R >= r, at most 16 */
    const int R = r <= 1 ? 1 : r <= 2 ? 2 : r <= 4 ? 4 : r <= 8 ? 8 : 16;
    const int nhc = (r + R - 1) / R;
    if ((long)cache->batch * cache->kv_heads * nhc > 65535)
        return fq_error("%s: batch·kv_heads = %d·%d (expected at most %d on the GPU: one grid "
                        "row per KV head)", where, cache->batch, cache->kv_heads, 65535 / nhc);
    int maxctx = 0;
    for (int b = 0; b < cache->batch; b++)
        maxctx = ctx_len[b] > maxctx ? ctx_len[b] : maxctx;
    /* Splits: enough CTAs to fill the GPU when there are few (batch·kv_heads·n_q), never
     * chunks shorter than AT_SPLIT_MIN positions. */
    const long groups = (long)cache->batch * cache->kv_heads * nhc * n_q;
    int nsplit = (int)((528 + groups - 1) / groups);
    int maxsplit = (maxctx + AT_SPLIT_MIN - 1) / AT_SPLIT_MIN;
    nsplit = nsplit < 1 ? 1 : (nsplit > maxsplit ? maxsplit : nsplit);
    int chunk = (maxctx + nsplit - 1) / nsplit;
    chunk = (chunk + AT_TILE - 1) / AT_TILE * AT_TILE;
    nsplit = (maxctx + chunk - 1) / chunk;

    cudaStream_t st = CTX_STREAM(ctx);
    const size_t rows = (size_t)cache->batch * n_q * heads;
    float *part = nullptr;
    const size_t part_bytes = rows * nsplit * (dh + 2) * sizeof(float);
    /* the partials live in the context's scratch: no allocation call per decode step */
    if (fq_cuda_scratch(ctx, FQ_SCRATCH_ATTN, part_bytes, (void **)&part))
        return fq_error_wrap("%s: partials", where);
    attn_args a;
    a.q = q;
    a.c = *cache;
    for (int b = 0; b < cache->batch; b++)
        a.ctx_len[b] = ctx_len[b];
    a.n_q = n_q;
    a.heads = heads;
    a.nsplit = nsplit;
    a.chunk = chunk;
    a.r = r;
    a.nhc = nhc;
    a.part_o = part;
    a.part_ml = part + rows * nsplit * dh;
    dim3 grid(nsplit, cache->batch * cache->kv_heads * nhc, n_q);
    int rc;
    switch (R) {
    case 1: rc = dispatch_dh<1>(grid, st, a); break;
    case 2: rc = dispatch_dh<2>(grid, st, a); break;
    case 4: rc = dispatch_dh<4>(grid, st, a); break;
    case 8: rc = dispatch_dh<8>(grid, st, a); break;
    default: rc = dispatch_dh<16>(grid, st, a); break;
    }
    if (rc)
        return fq_error("%s: dh = %d has no kernel instance (expected a power of two in "
                        "8..256)", where, dh);
    LAUNCH_CHECK(FILE_, "fq_attention_kv4_cuda", "attn_kv4_partial");
    attn_combine<<<(unsigned)((rows + 7) / 8), 256, 0, st>>>(out, a.part_o, a.part_ml, (int)rows,
                                                             nsplit, dh);
    LAUNCH_CHECK(FILE_, "fq_attention_kv4_cuda", "attn_combine");
    return FQ_OK;
}
