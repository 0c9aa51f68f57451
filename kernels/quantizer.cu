/* quantizer.cu — the fake quantizers of core/quantizer.c on the GPU (forward with the
 * same rounding, backward with the same straight-through rules, ALGORITHM §2).
 *
 * One thread block per quantization row (a token's input vector or one block of it, a
 * token × KV-head vector, a weight output channel): block reductions give the row's
 * extrema and how many elements tie for them, then every thread handles the elements it
 * scanned. The forward must give the CPU's codes bit for bit, so it repeats the CPU's
 * float operations in the same order (u/s with IEEE division, rintf = half to even, s·q);
 * clip ratios of the shared activation/KV logits come from the CPU's own quant_sigmoid,
 * and the per-row weight logits use exp in double rounded to float, which equals glibc's
 * correctly rounded expf. Backward sums (the scale gradient) run in a different order than
 * the CPU's loop, so they agree to rounding, not bitwise. The shared clip-logit gradients
 * are accumulated with one atomicAdd per row: order-dependent in the last bits; the
 * *_rows_cuda variants instead write one value per row for a fixed-order reduction.
 * One block per row wastes threads on short rows (dh = 64..128 KV vectors); a warp-per-row
 * variant for those is a later speed step.
 */
#include <math.h>

#include "kernels/cuda_common.cuh"

#define F "kernels/quantizer.cu"
#define WEIGHT_RANGE_FLOOR 1e-5f

extern "C" float quant_sigmoid(float x); /* core/quantizer.c (real = float in libflatq) */

/* Row extrema and tie counts, for every thread of the block. */
struct row_ext {
    float umax, umin, nmax, nmin;
};

__device__ inline row_ext row_ext_scan(const float *u, int n, float *sh, bool counts)
{
    float mx = -INFINITY, mn = INFINITY;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        mx = fmaxf(mx, u[j]);
        mn = fminf(mn, u[j]);
    }
    row_ext e;
    e.umax = block_max(mx, sh);
    e.umin = block_min(mn, sh);
    e.nmax = e.nmin = 0.0f;
    if (counts) {
        float cx = 0.0f, cn = 0.0f;
        for (int j = threadIdx.x; j < n; j += blockDim.x) {
            cx += u[j] == e.umax ? 1.0f : 0.0f;
            cn += u[j] == e.umin ? 1.0f : 0.0f;
        }
        e.nmax = block_sum(cx, sh);
        e.nmin = block_sum(cn, sh);
    }
    return e;
}

/* The symmetric range decision of quantizer.c's sym_range_of. */
struct sym_rng {
    float s, w_m, w_l;
    bool no_grad;
};

__device__ inline sym_rng sym_range(float m, float l, int maxq, bool weight)
{
    sym_rng r = {0.0f, 0.0f, 0.0f, false};
    float t = -l > m ? -l : m;
    if (-l > m)
        r.w_l = 1.0f;
    else if (m > -l)
        r.w_m = 1.0f;
    else
        r.w_m = r.w_l = 0.5f;
    if (weight) {
        if (t < WEIGHT_RANGE_FLOOR) {
            t = WEIGHT_RANGE_FLOOR;
            r.no_grad = true;
        }
    } else if (t == 0.0f) {
        r.s = 1.0f;
        r.no_grad = true;
        return r;
    }
    r.s = t / (float)maxq;
    return r;
}

__device__ inline float clampf(float q, float lo, float hi)
{
    return q < lo ? lo : (q > hi ? hi : q);
}

/* Route (G_m, G_l) to the clip logits (atomically: shared by all rows) and to the extreme
 * elements, as quantizer.c's range_bwd. Called by all threads of the block. */
__device__ inline void clip_grad_add(float *g, float v, bool per_row)
{
    if (per_row)
        g[blockIdx.x] = v;
    else
        atomicAdd(g, v);
}

__device__ inline void range_bwd_block(float *gu, float *g_cmax, float *g_cmin, const float *u,
                                       int n, const row_ext &e, float g_m, float g_l,
                                       float kmax, float kmin, bool per_row)
{
    if (g_m != 0.0f) {
        float pos = e.umax > 0.0f ? e.umax : 0.0f;
        if (threadIdx.x == 0)
            clip_grad_add(g_cmax, g_m * pos * kmax * (1.0f - kmax), per_row);
        if (e.umax > 0.0f) {
            float share = g_m * kmax / e.nmax;
            for (int j = threadIdx.x; j < n; j += blockDim.x)
                if (u[j] == e.umax)
                    gu[j] += share;
        }
    }
    if (g_l != 0.0f) {
        float neg = e.umin < 0.0f ? e.umin : 0.0f;
        if (threadIdx.x == 0)
            clip_grad_add(g_cmin, g_l * neg * kmin * (1.0f - kmin), per_row);
        if (e.umin < 0.0f) {
            float share = g_l * kmin / e.nmin;
            for (int j = threadIdx.x; j < n; j += blockDim.x)
                if (u[j] == e.umin)
                    gu[j] += share;
        }
    }
}

/* ---------------- symmetric activations ---------------- */

static __global__ void quant_act_sym_fwd_kernel(float *out, float *scale, const float *in,
                                                int len, int bits, float kmax, float kmin)
{
    __shared__ float sh[32];
    const int maxq = (1 << (bits - 1)) - 1, minq = -(1 << (bits - 1));
    const float *u = in + (size_t)blockIdx.x * len;
    float *o = out + (size_t)blockIdx.x * len;
    row_ext e = row_ext_scan(u, len, sh, false);
    float m = (e.umax > 0.0f ? e.umax : 0.0f) * kmax, l = (e.umin < 0.0f ? e.umin : 0.0f) * kmin;
    float s = sym_range(m, l, maxq, false).s;
    if (threadIdx.x == 0)
        scale[blockIdx.x] = s;
    for (int j = threadIdx.x; j < len; j += blockDim.x)
        o[j] = s * clampf(rintf(u[j] / s), (float)minq, (float)maxq);
}

static __global__ void quant_act_sym_bwd_kernel(float *g_in, float *g_cmax, float *g_cmin,
                                                const float *g_out, const float *in,
                                                const float *scale, int len, int bits,
                                                float kmax, float kmin, bool per_row)
{
    __shared__ float sh[32];
    const int maxq = (1 << (bits - 1)) - 1, minq = -(1 << (bits - 1));
    const size_t off = (size_t)blockIdx.x * len;
    const float *u = in + off, *g = g_out + off;
    float *gu = g_in + off;
    const float s = scale[blockIdx.x];
    row_ext e = row_ext_scan(u, len, sh, true);
    float m = (e.umax > 0.0f ? e.umax : 0.0f) * kmax, l = (e.umin < 0.0f ? e.umin : 0.0f) * kmin;
    sym_rng rg = sym_range(m, l, maxq, false);
    float g_s = 0.0f;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        float x = u[j] / s, q = rintf(x);
        bool inside = q >= (float)minq && q <= (float)maxq;
        float qc = clampf(q, (float)minq, (float)maxq);
        gu[j] = inside ? g[j] : 0.0f;
        g_s += g[j] * (inside ? qc - x : qc);
    }
    g_s = block_sum(g_s, sh);
    if (rg.no_grad)
        return;
    float g_t = g_s / (float)maxq;
    range_bwd_block(gu, g_cmax, g_cmin, u, len, e, g_t * rg.w_m, -g_t * rg.w_l, kmax, kmin,
                    per_row);
}

static int check_q(const fq_cuda_ctx *ctx, const char *where, int rows, int k, int blocks,
                   int bits, float cmax, float cmin)
{
    if (!ctx || !ctx->stream)
        return fq_error(F ":%s: context not initialised (expected fq_cuda_init)", where);
    if (bits < 2 || bits > 8)
        return fq_error(F ":%s: bits = %d (expected 2..8)", where, bits);
    if (rows <= 0 || k <= 0 || blocks <= 0 || k % blocks)
        return fq_error(F ":%s: shape [%d, %d] in %d blocks (expected positive sizes, blocks "
                        "dividing the row length)", where, rows, k, blocks);
    if ((long long)rows * blocks > 0x7fffffffLL)
        return fq_error(F ":%s: %d rows x %d blocks (expected fewer than 2^31 scale rows)",
                        where, rows, blocks);
    if (!isfinite(cmax) || !isfinite(cmin))
        return fq_error(F ":%s: clip values (%g, %g) (expected finite logits or ratios)",
                        where, (double)cmax, (double)cmin);
    return FQ_OK;
}

/* the forward given clip ratios κ (the logit forms pass σ(logit)) */
static int act_sym_fwd(fq_cuda_ctx *ctx, float *out, float *scale, const float *in, int rows,
                       int k, int blocks, int bits, float kmax, float kmin, const char *where)
{
    if (check_q(ctx, where, rows, k, blocks, bits, kmax, kmin))
        return FQ_ERR;
    if (!out || !scale || !in || out == in)
        return fq_error(F ":%s: bad buffers (expected out, scale, in, out not aliasing in)",
                        where);
    unsigned nrows = (unsigned)rows * (unsigned)blocks;
    quant_act_sym_fwd_kernel<<<nrows, FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(out, scale, in, k / blocks,
                                                                      bits, kmax, kmin);
    LAUNCH_CHECK(F, where, "quant_act_sym_fwd_kernel");
    return FQ_OK;
}

int quant_act_sym_fwd_cuda(fq_cuda_ctx *ctx, float *out, float *scale, const float *in,
                           int rows, int k, int blocks, int bits, float cmax, float cmin)
{
    if (!isfinite(cmax) || !isfinite(cmin))
        return fq_error(F ":quant_act_sym_fwd_cuda: clip logits (%g, %g) (expected finite "
                        "values)", (double)cmax, (double)cmin);
    return act_sym_fwd(ctx, out, scale, in, rows, k, blocks, bits, quant_sigmoid(cmax),
                       quant_sigmoid(cmin), "quant_act_sym_fwd_cuda");
}

int quant_act_sym_ratio_cuda(fq_cuda_ctx *ctx, float *out, float *scale, const float *in,
                             int rows, int k, int blocks, int bits, float kmax, float kmin)
{
    return act_sym_fwd(ctx, out, scale, in, rows, k, blocks, bits, kmax, kmin,
                       "quant_act_sym_ratio_cuda");
}

static int act_sym_bwd(fq_cuda_ctx *ctx, float *g_in, float *g_cmax, float *g_cmin,
                       const float *g_out, const float *in, const float *scale, int rows, int k,
                       int blocks, int bits, float cmax, float cmin, bool per_row,
                       const char *where)
{
    if (check_q(ctx, where, rows, k, blocks, bits, cmax, cmin))
        return FQ_ERR;
    if (!g_in || !g_cmax || !g_cmin || !g_out || !in || !scale)
        return fq_error(F ":%s: NULL buffer (expected g_in, g_cmax, g_cmin, g_out, in and "
                        "scale)", where);
    unsigned nrows = (unsigned)rows * (unsigned)blocks;
    if (per_row) {
        CU_CHECK(cudaMemsetAsync(g_cmax, 0, sizeof(float) * nrows, CTX_STREAM(ctx)), F, where,
                 "cudaMemsetAsync");
        CU_CHECK(cudaMemsetAsync(g_cmin, 0, sizeof(float) * nrows, CTX_STREAM(ctx)), F, where,
                 "cudaMemsetAsync");
    }
    quant_act_sym_bwd_kernel<<<nrows, FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(
        g_in, g_cmax, g_cmin, g_out, in, scale, k / blocks, bits, quant_sigmoid(cmax),
        quant_sigmoid(cmin), per_row);
    LAUNCH_CHECK(F, where, "quant_act_sym_bwd_kernel");
    return FQ_OK;
}

int quant_act_sym_bwd_cuda(fq_cuda_ctx *ctx, float *g_in, float *g_cmax, float *g_cmin,
                           const float *g_out, const float *in, const float *scale, int rows,
                           int k, int blocks, int bits, float cmax, float cmin)
{
    return act_sym_bwd(ctx, g_in, g_cmax, g_cmin, g_out, in, scale, rows, k, blocks, bits, cmax,
                       cmin, false, "quant_act_sym_bwd_cuda");
}

int quant_act_sym_bwd_rows_cuda(fq_cuda_ctx *ctx, float *g_in, float *g_cmax_rows,
                                float *g_cmin_rows, const float *g_out, const float *in,
                                const float *scale, int rows, int k, int blocks, int bits,
                                float cmax, float cmin)
{
    return act_sym_bwd(ctx, g_in, g_cmax_rows, g_cmin_rows, g_out, in, scale, rows, k, blocks,
                       bits, cmax, cmin, true, "quant_act_sym_bwd_rows_cuda");
}

/* ---------------- asymmetric K/V ---------------- */

__device__ inline bool asym_range(float m, float l, int qmax, float *s, float *z)
{
    bool no_grad = false;
    if (m == 0.0f && l == 0.0f) {
        l = -1.0f;
        m = 1.0f;
        no_grad = true;
    }
    *s = (m - l) / (float)qmax;
    *z = rintf(-l / *s);
    return no_grad;
}

static __global__ void quant_kv_asym_fwd_kernel(float *out, float *scale, float *zero,
                                                const float *in, int len, int bits, float kmax,
                                                float kmin)
{
    __shared__ float sh[32];
    const int qmax = (1 << bits) - 1;
    const float *u = in + (size_t)blockIdx.x * len;
    float *o = out + (size_t)blockIdx.x * len;
    row_ext e = row_ext_scan(u, len, sh, false);
    float m = (e.umax > 0.0f ? e.umax : 0.0f) * kmax, l = (e.umin < 0.0f ? e.umin : 0.0f) * kmin;
    float s, z;
    asym_range(m, l, qmax, &s, &z);
    if (threadIdx.x == 0) {
        scale[blockIdx.x] = s;
        zero[blockIdx.x] = z;
    }
    for (int j = threadIdx.x; j < len; j += blockDim.x)
        o[j] = s * (clampf(rintf(u[j] / s) + z, 0.0f, (float)qmax) - z);
}

static __global__ void quant_kv_asym_bwd_kernel(float *g_in, float *g_cmax, float *g_cmin,
                                                const float *g_out, const float *in,
                                                const float *scale, const float *zero, int len,
                                                int bits, float kmax, float kmin, bool per_row)
{
    __shared__ float sh[32];
    const int qmax = (1 << bits) - 1;
    const size_t off = (size_t)blockIdx.x * len;
    const float *u = in + off, *g = g_out + off;
    float *gu = g_in + off;
    const float s = scale[blockIdx.x], z = zero[blockIdx.x];
    row_ext e = row_ext_scan(u, len, sh, true);
    float m = (e.umax > 0.0f ? e.umax : 0.0f) * kmax, l = (e.umin < 0.0f ? e.umin : 0.0f) * kmin;
    float s_chk, z_chk;
    bool no_grad = asym_range(m, l, qmax, &s_chk, &z_chk);
    float g_s = 0.0f;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        float x = u[j] / s, q = rintf(x) + z;
        bool inside = q >= 0.0f && q <= (float)qmax;
        float qc = clampf(q, 0.0f, (float)qmax);
        gu[j] = inside ? g[j] : 0.0f;
        g_s += g[j] * (inside ? (qc - z) - x : qc - z);
    }
    g_s = block_sum(g_s, sh);
    if (no_grad)
        return;
    float g_m = g_s / (float)qmax;
    range_bwd_block(gu, g_cmax, g_cmin, u, len, e, g_m, -g_m, kmax, kmin, per_row);
}

static int kv_asym_fwd(fq_cuda_ctx *ctx, float *out, float *scale, float *zero,
                       const float *in, int rows, int len, int bits, float kmax, float kmin,
                       const char *where)
{
    if (check_q(ctx, where, rows, len, 1, bits, kmax, kmin))
        return FQ_ERR;
    if (!out || !scale || !zero || !in || out == in)
        return fq_error(F ":%s: bad buffers (expected out, scale, zero, in, out not aliasing "
                        "in)", where);
    quant_kv_asym_fwd_kernel<<<(unsigned)rows, FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(
        out, scale, zero, in, len, bits, kmax, kmin);
    LAUNCH_CHECK(F, where, "quant_kv_asym_fwd_kernel");
    return FQ_OK;
}

int quant_kv_asym_fwd_cuda(fq_cuda_ctx *ctx, float *out, float *scale, float *zero,
                           const float *in, int rows, int len, int bits, float cmax,
                           float cmin)
{
    if (!isfinite(cmax) || !isfinite(cmin))
        return fq_error(F ":quant_kv_asym_fwd_cuda: clip logits (%g, %g) (expected finite "
                        "values)", (double)cmax, (double)cmin);
    return kv_asym_fwd(ctx, out, scale, zero, in, rows, len, bits, quant_sigmoid(cmax),
                       quant_sigmoid(cmin), "quant_kv_asym_fwd_cuda");
}

int quant_kv_asym_ratio_cuda(fq_cuda_ctx *ctx, float *out, float *scale, float *zero,
                             const float *in, int rows, int len, int bits, float kmax,
                             float kmin)
{
    return kv_asym_fwd(ctx, out, scale, zero, in, rows, len, bits, kmax, kmin,
                       "quant_kv_asym_ratio_cuda");
}

static int kv_asym_bwd(fq_cuda_ctx *ctx, float *g_in, float *g_cmax, float *g_cmin,
                       const float *g_out, const float *in, const float *scale,
                       const float *zero, int rows, int len, int bits, float cmax, float cmin,
                       bool per_row, const char *where)
{
    if (check_q(ctx, where, rows, len, 1, bits, cmax, cmin))
        return FQ_ERR;
    if (!g_in || !g_cmax || !g_cmin || !g_out || !in || !scale || !zero)
        return fq_error(F ":%s: NULL buffer (expected g_in, g_cmax, g_cmin, g_out, in, scale "
                        "and zero)", where);
    if (per_row) {
        CU_CHECK(cudaMemsetAsync(g_cmax, 0, sizeof(float) * (size_t)rows, CTX_STREAM(ctx)), F,
                 where, "cudaMemsetAsync");
        CU_CHECK(cudaMemsetAsync(g_cmin, 0, sizeof(float) * (size_t)rows, CTX_STREAM(ctx)), F,
                 where, "cudaMemsetAsync");
    }
    quant_kv_asym_bwd_kernel<<<(unsigned)rows, FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(
        g_in, g_cmax, g_cmin, g_out, in, scale, zero, len, bits, quant_sigmoid(cmax),
        quant_sigmoid(cmin), per_row);
    LAUNCH_CHECK(F, where, "quant_kv_asym_bwd_kernel");
    return FQ_OK;
}

int quant_kv_asym_bwd_cuda(fq_cuda_ctx *ctx, float *g_in, float *g_cmax, float *g_cmin,
                           const float *g_out, const float *in, const float *scale,
                           const float *zero, int rows, int len, int bits, float cmax,
                           float cmin)
{
    return kv_asym_bwd(ctx, g_in, g_cmax, g_cmin, g_out, in, scale, zero, rows, len, bits, cmax,
                       cmin, false, "quant_kv_asym_bwd_cuda");
}

int quant_kv_asym_bwd_rows_cuda(fq_cuda_ctx *ctx, float *g_in, float *g_cmax_rows,
                                float *g_cmin_rows, const float *g_out, const float *in,
                                const float *scale, const float *zero, int rows, int len,
                                int bits, float cmax, float cmin)
{
    return kv_asym_bwd(ctx, g_in, g_cmax_rows, g_cmin_rows, g_out, in, scale, zero, rows, len,
                       bits, cmax, cmin, true, "quant_kv_asym_bwd_rows_cuda");
}

/* ---------------- weights with LWC ---------------- */

enum { FROM_W = 0, FROM_WMIN = 1, FROM_WMAX = 2 };

__device__ inline float lwc_clamp(float w, float wmin, float wmax, int *from)
{
    float p = w;
    *from = FROM_W;
    if (w < wmin) {
        p = wmin;
        *from = FROM_WMIN;
    }
    if (p > wmax) {
        p = wmax;
        *from = FROM_WMAX;
    }
    return p;
}

/* Extrema (and tie counts) of the clamped row, without materialising it. */
__device__ inline row_ext clamped_ext(const float *wr, int cols, float wmin, float wmax,
                                      float *sh)
{
    int from;
    float mx = -INFINITY, mn = INFINITY;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float c = lwc_clamp(wr[j], wmin, wmax, &from);
        mx = fmaxf(mx, c);
        mn = fminf(mn, c);
    }
    row_ext e;
    e.umax = block_max(mx, sh);
    e.umin = block_min(mn, sh);
    float cx = 0.0f, cn = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float c = lwc_clamp(wr[j], wmin, wmax, &from);
        cx += c == e.umax ? 1.0f : 0.0f;
        cn += c == e.umin ? 1.0f : 0.0f;
    }
    e.nmax = block_sum(cx, sh);
    e.nmin = block_sum(cn, sh);
    return e;
}

/* Stage n floats of a row into shared memory (16-byte loads when both ends allow it). The
 * LWC kernels below read their row five to seven times (extrema, tie counts, clamped
 * extrema and ties, the codes or the gradient passes): from shared memory each row costs
 * one read of DRAM instead of every pass going through L2. */
__device__ inline void stage_row(float *__restrict__ dst, const float *__restrict__ src, int n)
{
    if ((((uintptr_t)src | (uintptr_t)dst) & 15) == 0 && n % 4 == 0) {
        const float4 *__restrict__ s4 = (const float4 *)src;
        float4 *__restrict__ d4 = (float4 *)dst;
#pragma unroll 4
        for (int j = threadIdx.x; j < n / 4; j += blockDim.x)
            d4[j] = s4[j];
    } else {
        for (int j = threadIdx.x; j < n; j += blockDim.x)
            dst[j] = src[j];
    }
    __syncthreads();
}

/* STAGE: the row comes from dynamic shared memory (cols floats) instead of global memory;
 * the arithmetic and every reduction are the same either way, so both give the same bits. */
template <bool STAGE>
static __global__ void quant_weight_lwc_fwd_kernel(float *out, float *scale, const float *w,
                                                   int cols, int bits, const float *a,
                                                   const float *b)
{
    __shared__ float sh[32];
    extern __shared__ float srow[];
    const int maxq = (1 << (bits - 1)) - 1, minq = -(1 << (bits - 1));
    const int r = blockIdx.x;
    const float *wr = w + (size_t)r * cols;
    float *o = out + (size_t)r * cols;
    if (STAGE) {
        stage_row(srow, wr, cols);
        wr = srow;
    }
    row_ext e = row_ext_scan(wr, cols, sh, false);
    float wmax = e.umax * sigmoid_like_cpu(a[r]), wmin = e.umin * sigmoid_like_cpu(b[r]);
    row_ext ec = clamped_ext(wr, cols, wmin, wmax, sh);
    float m = ec.umax > 0.0f ? ec.umax : 0.0f, l = ec.umin < 0.0f ? ec.umin : 0.0f;
    float s = sym_range(m, l, maxq, true).s;
    if (threadIdx.x == 0)
        scale[r] = s;
    int from;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float c = lwc_clamp(wr[j], wmin, wmax, &from);
        o[j] = s * clampf(rintf(c / s), (float)minq, (float)maxq);
    }
}

/* STAGE 2: w and g_out staged in dynamic shared memory (2·cols floats), the second buffer
 * then holding each element's clamp-path gradient between the two passes, so g_w is
 * written once; 1: w alone (rows too long for both); 0: nothing staged. */
template <int STAGE>
static __global__ void quant_weight_lwc_bwd_kernel(float *g_w, float *g_a, float *g_b,
                                                   const float *g_out, const float *w,
                                                   const float *scale, int cols, int bits,
                                                   const float *a, const float *b)
{
    __shared__ float sh[32];
    extern __shared__ float srow[];
    const int maxq = (1 << (bits - 1)) - 1, minq = -(1 << (bits - 1));
    const int r = blockIdx.x;
    const float *wr = w + (size_t)r * cols, *g = g_out + (size_t)r * cols;
    float *gw = g_w ? g_w + (size_t)r * cols : NULL;
    float *gcs = NULL;
    if (STAGE >= 1) {
        stage_row(srow, wr, cols);
        wr = srow;
    }
    if (STAGE == 2) {
        stage_row(srow + cols, g, cols);
        g = gcs = srow + cols;
    }
    const float s = scale[r];
    const float sa = sigmoid_like_cpu(a[r]), sb = sigmoid_like_cpu(b[r]);
    row_ext e = row_ext_scan(wr, cols, sh, true);
    float wmax = e.umax * sa, wmin = e.umin * sb;
    row_ext ec = clamped_ext(wr, cols, wmin, wmax, sh);
    float m = ec.umax > 0.0f ? ec.umax : 0.0f, l = ec.umin < 0.0f ? ec.umin : 0.0f;
    sym_rng rg = sym_range(m, l, maxq, true);
    int from;
    float g_s = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float c = lwc_clamp(wr[j], wmin, wmax, &from);
        float x = c / s, q = rintf(x);
        bool inside = q >= (float)minq && q <= (float)maxq;
        float qc = clampf(q, (float)minq, (float)maxq);
        g_s += g[j] * (inside ? qc - x : qc);
    }
    g_s = block_sum(g_s, sh);
    float g_t = rg.no_grad ? 0.0f : g_s / (float)maxq;
    float g_m = g_t * rg.w_m, g_l = -g_t * rg.w_l;
    float g_wmax = 0.0f, g_wmin = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float c = lwc_clamp(wr[j], wmin, wmax, &from);
        float q = rintf(c / s);
        float gc = (q >= (float)minq && q <= (float)maxq) ? g[j] : 0.0f;
        if (ec.umax > 0.0f && c == ec.umax)
            gc += g_m / ec.nmax;
        if (ec.umin < 0.0f && c == ec.umin)
            gc += g_l / ec.nmin;
        if (from == FROM_WMAX)
            g_wmax += gc;
        else if (from == FROM_WMIN)
            g_wmin += gc;
        if (STAGE == 2)
            gcs[j] = from == FROM_W ? gc : 0.0f; /* this thread's own element: no race */
        else if (gw)
            gw[j] = from == FROM_W ? gc : 0.0f;
    }
    g_wmax = block_sum(g_wmax, sh);
    g_wmin = block_sum(g_wmin, sh);
    if (threadIdx.x == 0) {
        if (g_a)
            g_a[r] += g_wmax * e.umax * sa * (1.0f - sa);
        if (g_b)
            g_b[r] += g_wmin * e.umin * sb * (1.0f - sb);
    }
    if (gw && STAGE == 2) {
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            float v = gcs[j];
            if (wr[j] == e.umax)
                v += g_wmax * sa / e.nmax;
            if (wr[j] == e.umin)
                v += g_wmin * sb / e.nmin;
            gw[j] = v;
        }
    } else if (gw) { /* only the tied extrema change: read-modify-write just those */
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            if (wr[j] == e.umax)
                gw[j] += g_wmax * sa / e.nmax;
            if (wr[j] == e.umin)
                gw[j] += g_wmin * sb / e.nmin;
        }
    }
}

/* Dynamic shared memory for `bytes` of staged rows, if two blocks still fit on a
 * multiprocessor (one block of 256 threads per SM streams its row too slowly to pay off;
 * a 70B down_proj's backward, 2 × 112 KB, stages w alone), raising the kernel's limit
 * above the default 48 KB when needed; 0: run the unstaged form. */
static size_t lwc_stage_bytes(const fq_cuda_ctx *ctx, const void *kernel, size_t bytes)
{
    int optin = 0, per_sm = 0;
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, ctx->device) !=
            cudaSuccess ||
        cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor,
                               ctx->device) != cudaSuccess ||
        bytes + 32 * sizeof(float) > (size_t)optin ||
        2 * (bytes + 1024 + 32 * sizeof(float)) > (size_t)per_sm)
        return 0;
    if (bytes > 48 * 1024 &&
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes) !=
            cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return bytes;
}

int quant_weight_lwc_fwd_cuda(fq_cuda_ctx *ctx, float *out, float *scale, const float *w,
                              int rows, int cols, int bits, const float *a, const float *b)
{
    const char *where = "quant_weight_lwc_fwd_cuda";
    if (check_q(ctx, where, rows, cols, 1, bits, 0.0f, 0.0f))
        return FQ_ERR;
    if (!out || !scale || !w || !a || !b || out == w)
        return fq_error(F ":%s: bad buffers (expected out, scale, w, a, b, out not aliasing w)",
                        where);
    size_t sm = lwc_stage_bytes(ctx, (const void *)quant_weight_lwc_fwd_kernel<true>,
                                sizeof(float) * (size_t)cols);
    if (sm)
        quant_weight_lwc_fwd_kernel<true><<<(unsigned)rows, FQ_BLOCK, sm, CTX_STREAM(ctx)>>>(
            out, scale, w, cols, bits, a, b);
    else
        quant_weight_lwc_fwd_kernel<false><<<(unsigned)rows, FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(
            out, scale, w, cols, bits, a, b);
    LAUNCH_CHECK(F, where, "quant_weight_lwc_fwd_kernel");
    return FQ_OK;
}

int quant_weight_lwc_bwd_cuda(fq_cuda_ctx *ctx, float *g_w, float *g_a, float *g_b,
                              const float *g_out, const float *w, const float *scale,
                              int rows, int cols, int bits, const float *a, const float *b)
{
    const char *where = "quant_weight_lwc_bwd_cuda";
    if (check_q(ctx, where, rows, cols, 1, bits, 0.0f, 0.0f))
        return FQ_ERR;
    if (!g_out || !w || !scale || !a || !b)
        return fq_error(F ":%s: NULL buffer (expected g_out, w, scale, a and b)", where);
    const size_t row = sizeof(float) * (size_t)cols;
    size_t sm;
    if ((sm = lwc_stage_bytes(ctx, (const void *)quant_weight_lwc_bwd_kernel<2>, 2 * row)))
        quant_weight_lwc_bwd_kernel<2><<<(unsigned)rows, FQ_BLOCK, sm, CTX_STREAM(ctx)>>>(
            g_w, g_a, g_b, g_out, w, scale, cols, bits, a, b);
    else if ((sm = lwc_stage_bytes(ctx, (const void *)quant_weight_lwc_bwd_kernel<1>, row)))
        quant_weight_lwc_bwd_kernel<1><<<(unsigned)rows, FQ_BLOCK, sm, CTX_STREAM(ctx)>>>(
            g_w, g_a, g_b, g_out, w, scale, cols, bits, a, b);
    else
        quant_weight_lwc_bwd_kernel<0><<<(unsigned)rows, FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(
            g_w, g_a, g_b, g_out, w, scale, cols, bits, a, b);
    LAUNCH_CHECK(F, where, "quant_weight_lwc_bwd_kernel");
    return FQ_OK;
}
