/* llama_ops.cu — the LLaMA decoder ops of core/llama_ops.c on the GPU, forward and
 * backward, with the same names plus _cuda.
 *
 * RMSNorm: one block per token row, a block reduction for Σx². RoPE and SwiGLU: one
 * thread per element pair / element. Linear layers and attention are cuBLAS SGEMMs.
 * Attention: scores S = Q Kᵀ/√dh for every (batch, head) by strided-batched GEMMs (batch
 * over the b sequences, one call per query head, so GQA's shared K/V need no copies and
 * the K/V gradients of the heads of a group accumulate in separate, ordered calls), then
 * a causal softmax kernel writes P in place (zeros above the diagonal), then O = P V.
 * P [b, h, s, s] is kept for the backward: simple and exact, but O(b·h·s²) memory — the
 * fused flash-style kernel that recomputes P tile by tile is the next step (README).
 */
#include <math.h>

#include "kernels/cuda_common.cuh"

#define F "kernels/llama_ops.cu"

static int check_ctx(const fq_cuda_ctx *ctx, const char *where)
{
    if (!ctx || !ctx->stream || !ctx->cublas)
        return fq_error(F ":%s: context not initialised (expected fq_cuda_init)", where);
    return FQ_OK;
}

/* ---------------- RMSNorm ---------------- */

static __global__ void rmsnorm_fwd_kernel(float *out, float *rstd, const float *x,
                                          const float *gamma, int d, float eps)
{
    __shared__ float sh[32];
    const float *xi = x + (size_t)blockIdx.x * d;
    float *oi = out + (size_t)blockIdx.x * d;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        ss += xi[j] * xi[j];
    ss = block_sum(ss, sh);
    float r = 1.0f / sqrtf(ss / (float)d + eps);
    if (rstd && threadIdx.x == 0)
        rstd[blockIdx.x] = r;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        oi[j] = gamma[j] * (xi[j] * r);
}

int rmsnorm_fwd_cuda(fq_cuda_ctx *ctx, float *out, float *rstd, const float *x,
                     const float *gamma, int n, int d, float eps)
{
    if (check_ctx(ctx, "rmsnorm_fwd_cuda"))
        return FQ_ERR;
    if (!out || !x || !gamma || n <= 0 || d <= 0)
        return fq_error(F ":rmsnorm_fwd_cuda: bad arguments (expected out, x, gamma and a "
                        "positive shape, got [%d, %d])", n, d);
    rmsnorm_fwd_kernel<<<n, FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(out, rstd, x, gamma, d, eps);
    LAUNCH_CHECK(F, "rmsnorm_fwd_cuda", "rmsnorm_fwd_kernel");
    return FQ_OK;
}

static __global__ void rmsnorm_bwd_kernel(float *dx, const float *dy, const float *x,
                                          const float *gamma, const float *rstd, int d)
{
    __shared__ float sh[32];
    size_t off = (size_t)blockIdx.x * d;
    const float r = rstd[blockIdx.x];
    float dot = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        dot += dy[off + j] * gamma[j] * x[off + j] * r;
    dot = block_sum(dot, sh) / (float)d;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        dx[off + j] += r * (dy[off + j] * gamma[j] - x[off + j] * r * dot);
}

int rmsnorm_bwd_cuda(fq_cuda_ctx *ctx, float *dx, const float *dy, const float *x,
                     const float *gamma, const float *rstd, int n, int d)
{
    if (check_ctx(ctx, "rmsnorm_bwd_cuda"))
        return FQ_ERR;
    if (!dx || !dy || !x || !gamma || !rstd || n <= 0 || d <= 0)
        return fq_error(F ":rmsnorm_bwd_cuda: bad arguments (expected dx, dy, x, gamma, rstd "
                        "and a positive shape, got [%d, %d])", n, d);
    rmsnorm_bwd_kernel<<<n, FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(dx, dy, x, gamma, rstd, d);
    LAUNCH_CHECK(F, "rmsnorm_bwd_cuda", "rmsnorm_bwd_kernel");
    return FQ_OK;
}

/* ---------------- RoPE ---------------- */

/* One thread per (token, head, i < dh/2) pair; sign = +1 rotates, −1 is the inverse
 * rotation (the backward). */
static __global__ void rope_kernel(float *x, int s, int heads, int dh, const float *cs,
                                   const float *sn, float sign, size_t npairs)
{
    const int half = dh / 2;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < npairs;
         t += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(t % half);
        size_t vec = t / half;                 /* (token, head) */
        size_t token = vec / heads;
        int p = (int)(token % s);
        float c = cs[(size_t)p * half + i], sv = sign * sn[(size_t)p * half + i];
        float *u = x + vec * dh;
        float u1 = u[i], u2 = u[i + half];
        u[i] = u1 * c - u2 * sv;
        u[i + half] = u2 * c + u1 * sv;
    }
}

static int rope_run(fq_cuda_ctx *ctx, float *x, int b, int s, int heads, int dh,
                    const float *cs, const float *sn, float sign, const char *where)
{
    if (check_ctx(ctx, where))
        return FQ_ERR;
    if (!x || !cs || !sn || b <= 0 || s <= 0 || heads <= 0 || dh <= 0 || dh % 2)
        return fq_error(F ":%s: bad arguments b %d s %d heads %d dh %d (expected buffers and "
                        "positive sizes with an even head_dim)", where, b, s, heads, dh);
    size_t npairs = (size_t)b * s * heads * (dh / 2);
    rope_kernel<<<fq_grid(npairs, FQ_BLOCK), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(x, s, heads, dh, cs,
                                                                           sn, sign, npairs);
    LAUNCH_CHECK(F, where, "rope_kernel");
    return FQ_OK;
}

int rope_fwd_cuda(fq_cuda_ctx *ctx, float *x, int b, int s, int heads, int dh,
                  const float *cos, const float *sin)
{
    return rope_run(ctx, x, b, s, heads, dh, cos, sin, 1.0f, "rope_fwd_cuda");
}

int rope_bwd_cuda(fq_cuda_ctx *ctx, float *dx, int b, int s, int heads, int dh,
                  const float *cos, const float *sin)
{
    return rope_run(ctx, dx, b, s, heads, dh, cos, sin, -1.0f, "rope_bwd_cuda");
}

/* ---------------- SwiGLU ---------------- */

static __global__ void swiglu_fwd_kernel(float *out, const float *gate, const float *up,
                                         size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        out[i] = fq_silu_mul(gate[i], up[i]);
    }
}

static __global__ void swiglu_bwd_kernel(float *dgate, float *dup, const float *dout,
                                         const float *gate, const float *up, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = gate[i], sg = 1.0f / (1.0f + expf(-g));
        dup[i] += dout[i] * g * sg;
        dgate[i] += dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
    }
}

int swiglu_fwd_cuda(fq_cuda_ctx *ctx, float *out, const float *gate, const float *up, size_t n)
{
    if (check_ctx(ctx, "swiglu_fwd_cuda"))
        return FQ_ERR;
    if (!out || !gate || !up || n == 0)
        return fq_error(F ":swiglu_fwd_cuda: bad arguments (expected out, gate, up and n > 0)");
    swiglu_fwd_kernel<<<fq_grid(n, FQ_BLOCK), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(out, gate, up, n);
    LAUNCH_CHECK(F, "swiglu_fwd_cuda", "swiglu_fwd_kernel");
    return FQ_OK;
}

int swiglu_bwd_cuda(fq_cuda_ctx *ctx, float *dgate, float *dup, const float *dout,
                    const float *gate, const float *up, size_t n)
{
    if (check_ctx(ctx, "swiglu_bwd_cuda"))
        return FQ_ERR;
    if (!dgate || !dup || !dout || !gate || !up || n == 0)
        return fq_error(F ":swiglu_bwd_cuda: bad arguments (expected dgate, dup, dout, gate, "
                        "up and n > 0)");
    swiglu_bwd_kernel<<<fq_grid(n, FQ_BLOCK), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(dgate, dup, dout,
                                                                            gate, up, n);
    LAUNCH_CHECK(F, "swiglu_bwd_cuda", "swiglu_bwd_kernel");
    return FQ_OK;
}

/* ---------------- linear ---------------- */

int linear_fwd_cuda(fq_cuda_ctx *ctx, float *out, const float *x, const float *w, int n,
                    int in, int o)
{
    if (check_ctx(ctx, "linear_fwd_cuda"))
        return FQ_ERR;
    if (!out || !x || !w)
        return fq_error(F ":linear_fwd_cuda: NULL buffer (expected out, x and w)");
    return fq_gemm_strided_cuda(ctx, 0, 1, n, o, in, 1.0f, x, in, 0, w, in, 0, 0.0f, out, o, 0,
                                1, "linear_fwd_cuda");
}

int linear_bwd_cuda(fq_cuda_ctx *ctx, float *dx, float *dw, const float *dout, const float *x,
                    const float *w, int n, int in, int o)
{
    if (check_ctx(ctx, "linear_bwd_cuda"))
        return FQ_ERR;
    if (!dout || !x || !w)
        return fq_error(F ":linear_bwd_cuda: NULL buffer (expected dout, x and w)");
    if (dx && fq_gemm_strided_cuda(ctx, 0, 0, n, in, o, 1.0f, dout, o, 0, w, in, 0, 1.0f, dx,
                                   in, 0, 1, "linear_bwd_cuda (dx)"))
        return FQ_ERR;
    if (dw && fq_gemm_strided_cuda(ctx, 1, 0, o, in, n, 1.0f, dout, o, 0, x, in, 0, 1.0f, dw,
                                   in, 0, 1, "linear_bwd_cuda (dw)"))
        return FQ_ERR;
    return FQ_OK;
}

/* ---------------- attention ---------------- */

/* One block per score row (b·h·s rows of length s): causal softmax in place, entries
 * above the diagonal set to 0. Row i of each [s, s] matrix keeps columns 0..i. */
static __global__ void causal_softmax_kernel(float *p, int s)
{
    __shared__ float sh[32];
    const int i = (int)(blockIdx.x % (unsigned)s);
    float *row = p + (size_t)blockIdx.x * s;
    float mx = -INFINITY;
    for (int c = threadIdx.x; c <= i; c += blockDim.x)
        mx = fmaxf(mx, row[c]);
    mx = block_max(mx, sh);
    float sum = 0.0f;
    for (int c = threadIdx.x; c <= i; c += blockDim.x) {
        float e = expf(row[c] - mx);
        row[c] = e;
        sum += e;
    }
    sum = block_sum(sum, sh);
    const float inv = 1.0f / sum;
    for (int c = threadIdx.x; c < s; c += blockDim.x)
        row[c] = c <= i ? row[c] * inv : 0.0f;
}

/* G_S = P ∘ (G_P − rowsum(G_P ∘ P)) in place on gp; masked entries have P = 0. */
static __global__ void softmax_bwd_kernel(float *gp, const float *p, int s)
{
    __shared__ float sh[32];
    const int i = (int)(blockIdx.x % (unsigned)s);
    float *gr = gp + (size_t)blockIdx.x * s;
    const float *pr = p + (size_t)blockIdx.x * s;
    float dot = 0.0f;
    for (int c = threadIdx.x; c <= i; c += blockDim.x)
        dot += gr[c] * pr[c];
    dot = block_sum(dot, sh);
    for (int c = threadIdx.x; c < s; c += blockDim.x)
        gr[c] = c <= i ? pr[c] * (gr[c] - dot) : 0.0f;
}

static int check_attn(const fq_cuda_ctx *ctx, const char *where, int b, int s, int h, int g,
                      int dh)
{
    if (check_ctx(ctx, where))
        return FQ_ERR;
    if (b <= 0 || s <= 0 || h <= 0 || g <= 0 || dh <= 0 || h % g)
        return fq_error(F ":%s: shape b %d s %d heads %d kv_heads %d dh %d (expected positive "
                        "sizes with heads a multiple of kv_heads)", where, b, s, h, g, dh);
    return FQ_OK;
}

int attention_fwd_cuda(fq_cuda_ctx *ctx, float *out, float *probs, const float *q,
                       const float *k, const float *v, int b, int s, int h, int g, int dh)
{
    const char *where = "attention_fwd_cuda";
    if (check_attn(ctx, where, b, s, h, g, dh))
        return FQ_ERR;
    if (!out || !probs || !q || !k || !v)
        return fq_error(F ":attention_fwd_cuda: NULL buffer (expected out, probs [b,h,s,s], "
                        "q, k and v)");
    const int r = h / g, qs = h * dh, ks = g * dh;
    const float scale = 1.0f / sqrtf((float)dh);
    const long long sq = (long long)s * qs, sk = (long long)s * ks, ss = (long long)h * s * s;
    for (int j = 0; j < h; j++) {
        const int kv = j / r;
        float *pj = probs + (size_t)j * s * s;
        if (fq_gemm_strided_cuda(ctx, 0, 1, s, s, dh, scale, q + (size_t)j * dh, qs, sq,
                                 k + (size_t)kv * dh, ks, sk, 0.0f, pj, s, ss, b,
                                 "attention_fwd_cuda (scores)"))
            return FQ_ERR;
    }
    causal_softmax_kernel<<<(unsigned)((size_t)b * h * s), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(probs,
                                                                                         s);
    LAUNCH_CHECK(F, where, "causal_softmax_kernel");
    for (int j = 0; j < h; j++) {
        const int kv = j / r;
        if (fq_gemm_strided_cuda(ctx, 0, 0, s, dh, s, 1.0f, probs + (size_t)j * s * s, s, ss,
                                 v + (size_t)kv * dh, ks, sk, 0.0f, out + (size_t)j * dh, qs, sq,
                                 b, "attention_fwd_cuda (P·V)"))
            return FQ_ERR;
    }
    return FQ_OK;
}

int attention_bwd_cuda(fq_cuda_ctx *ctx, float *dq, float *dk, float *dv, const float *dout,
                       const float *q, const float *k, const float *v, const float *probs,
                       int b, int s, int h, int g, int dh, float *scratch)
{
    const char *where = "attention_bwd_cuda";
    if (check_attn(ctx, where, b, s, h, g, dh))
        return FQ_ERR;
    if (!dq || !dk || !dv || !dout || !q || !k || !v || !probs || !scratch)
        return fq_error(F ":attention_bwd_cuda: NULL buffer (expected dq, dk, dv, dout, q, k, "
                        "v, probs and scratch of b·s·s floats)");
    const int r = h / g, qs = h * dh, ks = g * dh;
    const float scale = 1.0f / sqrtf((float)dh);
    const long long sq = (long long)s * qs, sk = (long long)s * ks, ss = (long long)h * s * s;
    const long long sg = (long long)s * s;
    for (int j = 0; j < h; j++) {
        const int kv = j / r;
        const float *pj = probs + (size_t)j * s * s, *doj = dout + (size_t)j * dh;
        const float *qj = q + (size_t)j * dh, *kg = k + (size_t)kv * dh, *vg = v + (size_t)kv * dh;
        /* dV += Pᵀ dO ; G_P = dO Vᵀ ; G_S ; dQ += G_S K·scale ; dK += G_Sᵀ Q·scale */
        if (fq_gemm_strided_cuda(ctx, 1, 0, s, dh, s, 1.0f, pj, s, ss, doj, qs, sq, 1.0f,
                                 dv + (size_t)kv * dh, ks, sk, b, "attention_bwd_cuda (dV)") ||
            fq_gemm_strided_cuda(ctx, 0, 1, s, s, dh, 1.0f, doj, qs, sq, vg, ks, sk, 0.0f,
                                 scratch, s, sg, b, "attention_bwd_cuda (dP)"))
            return FQ_ERR;
        for (int bi = 0; bi < b; bi++) {
            softmax_bwd_kernel<<<s, FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(
                scratch + (size_t)bi * s * s, pj + (size_t)bi * ss, s);
            LAUNCH_CHECK(F, where, "softmax_bwd_kernel");
        }
        if (fq_gemm_strided_cuda(ctx, 0, 0, s, dh, s, scale, scratch, s, sg, kg, ks, sk, 1.0f,
                                 dq + (size_t)j * dh, qs, sq, b, "attention_bwd_cuda (dQ)") ||
            fq_gemm_strided_cuda(ctx, 1, 0, s, dh, s, scale, scratch, s, sg, qj, qs, sq, 1.0f,
                                 dk + (size_t)kv * dh, ks, sk, b, "attention_bwd_cuda (dK)"))
            return FQ_ERR;
    }
    return FQ_OK;
}
