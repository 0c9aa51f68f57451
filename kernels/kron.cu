/* kron.cu — FlatQuant's row transforms of core/kron.c on the GPU: the Kronecker transform
 * (activation side and weight side), per-channel scales, single k×k and head transforms.
 *
 * y = x (L ⊗ R) per row, with X̃ [n1, n2] the row-major view: Z = X̃ R is ONE SGEMM over all
 * rows ([rows·n1, n2]·[n2, n2]); Ỹ = Lᵀ Z is a strided-batched SGEMM with one [n1, n1]·
 * [n1, n2] product per row, so unlike the CPU no permutation is needed in the forward.
 * The factor gradient g_L = Σ_r Z_r G_rᵀ contracts over rows and n2 together; there the
 * data are permuted to [n1, rows·n2] (one cheap kernel) so it is a single SGEMM rather
 * than `rows` small products plus a reduction. Work buffer sizes match the CPU's.
 * All GEMMs keep fp32 accuracy in every ctx->math mode (fq_gemm_strided_exact_cuda: SGEMM,
 * or split TF32 when ctx->split_transforms); small factors (n1, n2 ≤ 128) make the batched
 * products latency-bound, which the fused transform+quantize kernel will address.
 */
#include "kernels/cuda_common.cuh"

#define F "kernels/kron.cu"

/* [rows, n1, n2] → [n1, rows, n2] */
static __global__ void perm_to_mid_kernel(float *dst, const float *src, int rows, int n1,
                                          int n2, size_t n)
{
    /* 32-bit index arithmetic: check_kron bounds rows·n1·n2 below 2^31 */
    const unsigned un = (unsigned)n, u1 = (unsigned)n1, u2 = (unsigned)n2, ur = (unsigned)rows;
    for (unsigned t = blockIdx.x * blockDim.x + threadIdx.x; t < un;
         t += gridDim.x * blockDim.x) {
        unsigned j = t % u2, ri = t / u2;
        unsigned i = ri % u1, r = ri / u1;
        dst[(i * ur + r) * u2 + j] = src[t];
    }
}

static int perm_to_mid(fq_cuda_ctx *ctx, float *dst, const float *src, int rows, int n1,
                       int n2, const char *where)
{
    size_t n = (size_t)rows * n1 * n2;
    perm_to_mid_kernel<<<fq_grid(n, FQ_BLOCK), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(dst, src, rows,
                                                                             n1, n2, n);
    LAUNCH_CHECK(F, where, "perm_to_mid_kernel");
    return FQ_OK;
}

static int check_kron(const fq_cuda_ctx *ctx, const char *where, const void *a, const void *b,
                      const void *L, const void *R, const void *work, int rows, int n1, int n2)
{
    if (!ctx || !ctx->stream || !ctx->cublas)
        return fq_error(F ":%s: context not initialised (expected fq_cuda_init)", where);
    if (!a || !b || !L || !R || !work)
        return fq_error(F ":%s: NULL buffer (expected output, input, both factors and work)",
                        where);
    if (rows <= 0 || n1 <= 0 || n2 <= 0 || (long long)rows * n1 * n2 > 0x7fffffffLL)
        return fq_error(F ":%s: shape rows %d, factors %d x %d (expected positive sizes, "
                        "rows·n < 2^31)", where, rows, n1, n2);
    return FQ_OK;
}

/* A forward product at fp32 accuracy (fq_gemm_strided_exact_cuda), or on TF32 tensor cores
 * for the inference transform (kron_fwd_tf32_cuda). */
static int fwd_gemm(fq_cuda_ctx *ctx, int tf32, int trans_a, int m, int n, int k, const float *a,
                    int lda, long long stride_a, const float *b, int ldb, long long stride_b,
                    float *c, int ldc, long long stride_c, int batch, const char *where)
{
    if (tf32)
        return fq_gemm_strided_math_cuda(ctx, FQ_MATH_TF32, trans_a, 0, m, n, k, 1.0f, a, lda,
                                         stride_a, b, ldb, stride_b, 0.0f, c, ldc, stride_c,
                                         batch, where);
    return fq_gemm_strided_exact_cuda(ctx, trans_a, 0, m, n, k, 1.0f, a, lda, stride_a, b, ldb,
                                      stride_b, 0.0f, c, ldc, stride_c, batch, where);
}

/* y[r] = Lᵀ X̃[r] for every row (batched), y must not alias x. */
static int left_fwd(fq_cuda_ctx *ctx, int tf32, float *y, const float *x, int rows, int n1,
                    int n2, const float *L, const char *where)
{
    const long long st = (long long)n1 * n2;
    return fwd_gemm(ctx, tf32, 1, n1, n2, n1, L, n1, 0, x, n2, st, y, n2, st, rows, where);
}

/* For y[r] = Lᵀ X̃[r]: g_x = L·G per row (may be NULL); g_L += Σ X̃·Gᵀ (may be NULL).
 * work: 2·rows·n. */
static int left_bwd(fq_cuda_ctx *ctx, float *g_x, float *g_L, const float *g_y, const float *x,
                    int rows, int n1, int n2, const float *L, float *work, const char *where)
{
    const long long st = (long long)n1 * n2;
    const size_t n = (size_t)rows * n1 * n2;
    const int cols = rows * n2;
    if (g_L) {
        if (perm_to_mid(ctx, work, x, rows, n1, n2, where) ||
            perm_to_mid(ctx, work + n, g_y, rows, n1, n2, where) ||
            fq_gemm_strided_exact_cuda(ctx, 0, 1, n1, n1, cols, 1.0f, work, cols, 0, work + n, cols, 0,
                                 1.0f, g_L, n1, 0, 1, where))
            return FQ_ERR;
    }
    if (g_x && fq_gemm_strided_exact_cuda(ctx, 0, 0, n1, n2, n1, 1.0f, L, n1, 0, g_y, n2, st, 0.0f,
                                    g_x, n2, st, rows, where))
        return FQ_ERR;
    return FQ_OK;
}

/* Z = X̃·R, then y = Lᵀ·Z per row; where names the caller in errors */
static int kron_fwd_in(fq_cuda_ctx *ctx, int tf32, const char *where, float *y, float *z,
                       const float *x, int rows, int n1, int n2, const float *L, const float *R)
{
    if (check_kron(ctx, where, y, x, L, R, z, rows, n1, n2))
        return FQ_ERR;
    if (y == x || z == x || z == y)
        return fq_error(F ":%s: output, input and Z overlap (expected separate buffers)", where);
    if (fwd_gemm(ctx, tf32, 0, rows * n1, n2, n2, x, n2, 0, R, n2, 0, z, n2, 0, 1, where))
        return FQ_ERR;
    return left_fwd(ctx, tf32, y, z, rows, n1, n2, L, where);
}

int kron_fwd_z_cuda(fq_cuda_ctx *ctx, float *y, float *z, const float *x, int rows, int n1,
                    int n2, const float *L, const float *R)
{
    return kron_fwd_in(ctx, 0, "kron_fwd_cuda", y, z, x, rows, n1, n2, L, R);
}

int kron_fwd_cuda(fq_cuda_ctx *ctx, float *y, const float *x, int rows, int n1, int n2,
                  const float *L, const float *R, float *work)
{
    return kron_fwd_z_cuda(ctx, y, work, x, rows, n1, n2, L, R);
}

int kron_fwd_tf32_cuda(fq_cuda_ctx *ctx, float *y, const float *x, int rows, int n1, int n2,
                       const float *L, const float *R, float *work)
{
    return kron_fwd_in(ctx, 1, "kron_fwd_tf32_cuda", y, work, x, rows, n1, n2, L, R);
}

int kron_bwd_z_cuda(fq_cuda_ctx *ctx, float *g_x, float *g_L, float *g_R, const float *g_y,
                    const float *x, const float *z, int rows, int n1, int n2, const float *L,
                    const float *R, float *work)
{
    const char *where = "kron_bwd_cuda";
    if (check_kron(ctx, where, g_y, x, L, R, work, rows, n1, n2))
        return FQ_ERR;
    const int m = rows * n1, cols = rows * n2;
    const size_t n = (size_t)rows * n1 * n2;
    const long long st = (long long)n1 * n2;
    float *w0 = work, *w1 = work + n;
    if (g_L) {
        /* Z = X̃R (the forward's, or recomputed); g_L += Σ Z·G_Ỹᵀ over the [n1, rows·n2]
         * views */
        if (!z) {
            if (fq_gemm_strided_exact_cuda(ctx, 0, 0, m, n2, n2, 1.0f, x, n2, 0, R, n2, 0, 0.0f,
                                           w1, n2, 0, 1, where))
                return FQ_ERR;
            z = w1;
        }
        if (perm_to_mid(ctx, w0, z, rows, n1, n2, where) ||
            perm_to_mid(ctx, w1, g_y, rows, n1, n2, where) ||
            fq_gemm_strided_exact_cuda(ctx, 0, 1, n1, n1, cols, 1.0f, w0, cols, 0, w1, cols, 0,
                                       1.0f, g_L, n1, 0, 1, where))
            return FQ_ERR;
    }
    if (!g_x && !g_R)
        return FQ_OK;
    /* G_Z = L·G_Ỹ per row; g_x = G_Z Rᵀ; g_R += X̃ᵀ G_Z over all rows. */
    if (fq_gemm_strided_exact_cuda(ctx, 0, 0, n1, n2, n1, 1.0f, L, n1, 0, g_y, n2, st, 0.0f, w0,
                                   n2, st, rows, where))
        return FQ_ERR;
    if (g_x && fq_gemm_strided_exact_cuda(ctx, 0, 1, m, n2, n2, 1.0f, w0, n2, 0, R, n2, 0, 0.0f,
                                          g_x, n2, 0, 1, where))
        return FQ_ERR;
    if (g_R && fq_gemm_strided_exact_cuda(ctx, 1, 0, n2, n2, m, 1.0f, x, n2, 0, w0, n2, 0, 1.0f,
                                          g_R, n2, 0, 1, where))
        return FQ_ERR;
    return FQ_OK;
}

int kron_bwd_cuda(fq_cuda_ctx *ctx, float *g_x, float *g_L, float *g_R, const float *g_y,
                  const float *x, int rows, int n1, int n2, const float *L, const float *R,
                  float *work)
{
    return kron_bwd_z_cuda(ctx, g_x, g_L, g_R, g_y, x, NULL, rows, n1, n2, L, R, work);
}

int kron_weight_fwd_cuda(fq_cuda_ctx *ctx, float *w_out, const float *w, int out_rows, int n1,
                         int n2, const float *L_invT, const float *R_invT, float *work)
{
    if (kron_fwd_cuda(ctx, w_out, w, out_rows, n1, n2, L_invT, R_invT, work))
        return fq_error_wrap(F ":kron_weight_fwd_cuda");
    return FQ_OK;
}

int kron_weight_bwd_cuda(fq_cuda_ctx *ctx, float *g_w, float *g_L_invT, float *g_R_invT,
                         const float *g_w_out, const float *w, int out_rows, int n1, int n2,
                         const float *L_invT, const float *R_invT, float *work)
{
    if (kron_bwd_cuda(ctx, g_w, g_L_invT, g_R_invT, g_w_out, w, out_rows, n1, n2, L_invT,
                      R_invT, work))
        return fq_error_wrap(F ":kron_weight_bwd_cuda");
    return FQ_OK;
}

/* ---------------- per-channel scales ---------------- */

/* mode 0: y = x ∘ c (activation); mode 1: y = x ⊘ c (weight columns). */
static __global__ void chscale_fwd_kernel(float *y, const float *x, const float *c, int n,
                                          size_t total, int divide)
{
    /* 32-bit index arithmetic: check_plain bounds rows·n below 2^31, and a 64-bit
     * modulo per element costs more than the element's memory traffic */
    const unsigned un = (unsigned)n, ut = (unsigned)total;
    for (unsigned t = blockIdx.x * blockDim.x + threadIdx.x; t < ut;
         t += gridDim.x * blockDim.x) {
        float cj = c[t % un];
        y[t] = divide ? x[t] / cj : x[t] * cj;
    }
}

/* Input gradient of either mode, one thread per element. */
static __global__ void chscale_bwd_x_kernel(float *g_x, const float *g_y, const float *c, int n,
                                            size_t total, int divide)
{
    const unsigned un = (unsigned)n, ut = (unsigned)total;
    for (unsigned t = blockIdx.x * blockDim.x + threadIdx.x; t < ut;
         t += gridDim.x * blockDim.x) {
        float cj = c[t % un];
        g_x[t] = divide ? g_y[t] / cj : g_y[t] * cj;
    }
}

/* Channel gradient, act: g_c += Σ_r g·x; weight: g_c −= Σ_r g·w / c². A block owns
 * CSUM_COLS channels; its CSUM_ROWS row lanes each sum a strided subset of the rows
 * (consecutive threads read consecutive channels, so every load is coalesced), then the
 * lanes are added in a fixed order: deterministic, no atomics, and enough threads in
 * flight to stream [rows, n] at memory speed (one thread per channel walking all rows
 * had 8 K threads for a 235 M-element weight, far too few loads in flight). */
#define CSUM_COLS 32
#define CSUM_ROWS 32
static __global__ void chscale_bwd_c_kernel(float *g_c, const float *g_y, const float *x,
                                            const float *c, int rows, int n, int divide)
{
    __shared__ float part[CSUM_ROWS][CSUM_COLS + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int j = blockIdx.x * CSUM_COLS + tx;
    float a0 = 0.0f, a1 = 0.0f;
    if (j < n) {
        const float *gp = g_y + j, *xp = x + j;
        int r = ty;
        /* two independent chains, so each thread keeps two loads of each tensor in flight */
        for (; r + CSUM_ROWS < rows; r += 2 * CSUM_ROWS) {
            a0 += gp[(size_t)r * n] * xp[(size_t)r * n];
            a1 += gp[(size_t)(r + CSUM_ROWS) * n] * xp[(size_t)(r + CSUM_ROWS) * n];
        }
        if (r < rows)
            a0 += gp[(size_t)r * n] * xp[(size_t)r * n];
    }
    part[ty][tx] = a0 + a1;
    __syncthreads();
    if (ty == 0 && j < n) {
        float acc = 0.0f;
        for (int i = 0; i < CSUM_ROWS; i++)
            acc += part[i][tx];
        if (divide)
            g_c[j] -= acc / (c[j] * c[j]);
        else
            g_c[j] += acc;
    }
}

static int check_plain(const fq_cuda_ctx *ctx, const char *where, const void *a, const void *b,
                       const void *c, int rows, int n)
{
    if (!ctx || !ctx->stream || !ctx->cublas)
        return fq_error(F ":%s: context not initialised (expected fq_cuda_init)", where);
    if (!a || !b || !c)
        return fq_error(F ":%s: NULL buffer (expected output, input and parameter)", where);
    if (rows <= 0 || n <= 0 || (long long)rows * n > 0x7fffffffLL)
        return fq_error(F ":%s: shape [%d, %d] (expected positive sizes, rows·n < 2^31)", where,
                        rows, n);
    return FQ_OK;
}

static int chscale_fwd(fq_cuda_ctx *ctx, float *y, const float *x, const float *c, int rows,
                       int n, int divide, const char *where)
{
    if (check_plain(ctx, where, y, x, c, rows, n))
        return FQ_ERR;
    size_t total = (size_t)rows * n;
    chscale_fwd_kernel<<<fq_grid(total, FQ_BLOCK), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(y, x, c, n,
                                                                                 total, divide);
    LAUNCH_CHECK(F, where, "chscale_fwd_kernel");
    return FQ_OK;
}

static int chscale_bwd(fq_cuda_ctx *ctx, float *g_x, float *g_c, const float *g_y,
                       const float *x, const float *c, int rows, int n, int divide,
                       const char *where)
{
    if (check_plain(ctx, where, g_y, x, c, rows, n))
        return FQ_ERR;
    size_t total = (size_t)rows * n;
    if (g_x) {
        chscale_bwd_x_kernel<<<fq_grid(total, FQ_BLOCK), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(
            g_x, g_y, c, n, total, divide);
        LAUNCH_CHECK(F, where, "chscale_bwd_x_kernel");
    }
    if (g_c) {
        dim3 blk(CSUM_COLS, CSUM_ROWS);
        chscale_bwd_c_kernel<<<(unsigned)((n + CSUM_COLS - 1) / CSUM_COLS), blk, 0,
                               CTX_STREAM(ctx)>>>(g_c, g_y, x, c, rows, n, divide);
        LAUNCH_CHECK(F, where, "chscale_bwd_c_kernel");
    }
    return FQ_OK;
}

int chscale_act_fwd_cuda(fq_cuda_ctx *ctx, float *y, const float *x, const float *c, int rows,
                         int n)
{
    return chscale_fwd(ctx, y, x, c, rows, n, 0, "chscale_act_fwd_cuda");
}

int chscale_act_bwd_cuda(fq_cuda_ctx *ctx, float *g_x, float *g_c, const float *g_y,
                         const float *x, const float *c, int rows, int n)
{
    return chscale_bwd(ctx, g_x, g_c, g_y, x, c, rows, n, 0, "chscale_act_bwd_cuda");
}

int chscale_weight_fwd_cuda(fq_cuda_ctx *ctx, float *w1, const float *w, const float *c,
                            int rows, int n)
{
    return chscale_fwd(ctx, w1, w, c, rows, n, 1, "chscale_weight_fwd_cuda");
}

int chscale_weight_bwd_cuda(fq_cuda_ctx *ctx, float *g_w, float *g_c, const float *g_w1,
                            const float *w, const float *c, int rows, int n)
{
    return chscale_bwd(ctx, g_w, g_c, g_w1, w, c, rows, n, 1, "chscale_weight_bwd_cuda");
}

/* ---------------- single transforms ---------------- */

int vec_transform_fwd_cuda(fq_cuda_ctx *ctx, float *y, const float *x, int nvec, int k,
                           const float *M)
{
    const char *where = "vec_transform_fwd_cuda";
    if (check_plain(ctx, where, y, x, M, nvec, k))
        return FQ_ERR;
    if (y == x)
        return fq_error(F ":%s: output aliases input (expected separate buffers)", where);
    return fq_gemm_strided_exact_cuda(ctx, 0, 0, nvec, k, k, 1.0f, x, k, 0, M, k, 0, 0.0f, y, k, 0, 1,
                                where);
}

int vec_transform_bwd_cuda(fq_cuda_ctx *ctx, float *g_x, float *g_M, const float *g_y,
                           const float *x, int nvec, int k, const float *M)
{
    const char *where = "vec_transform_bwd_cuda";
    if (check_plain(ctx, where, g_y, x, M, nvec, k))
        return FQ_ERR;
    if (g_x && fq_gemm_strided_exact_cuda(ctx, 0, 1, nvec, k, k, 1.0f, g_y, k, 0, M, k, 0, 0.0f, g_x,
                                    k, 0, 1, where))
        return FQ_ERR;
    if (g_M && fq_gemm_strided_exact_cuda(ctx, 1, 0, k, k, nvec, 1.0f, x, k, 0, g_y, k, 0, 1.0f, g_M,
                                    k, 0, 1, where))
        return FQ_ERR;
    return FQ_OK;
}

int head_transform_fwd_cuda(fq_cuda_ctx *ctx, float *o1, const float *o, int tokens, int h,
                            int dh, const float *Mo, float *work)
{
    const char *where = "head_transform_fwd_cuda";
    if (check_kron(ctx, where, o1, o, Mo, Mo, work, tokens, h, dh))
        return FQ_ERR;
    if (o1 == o)
        return fq_error(F ":%s: output aliases input (expected separate buffers)", where);
    return left_fwd(ctx, 0, o1, o, tokens, h, dh, Mo, where);
}

int head_transform_bwd_cuda(fq_cuda_ctx *ctx, float *g_o, float *g_Mo, const float *g_o1,
                            const float *o, int tokens, int h, int dh, const float *Mo,
                            float *work)
{
    const char *where = "head_transform_bwd_cuda";
    if (check_kron(ctx, where, g_o1, o, Mo, Mo, work, tokens, h, dh))
        return FQ_ERR;
    return left_bwd(ctx, g_o, g_Mo, g_o1, o, tokens, h, dh, Mo, work, where);
}
