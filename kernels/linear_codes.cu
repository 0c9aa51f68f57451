/* linear_codes.cu — bf16 and int8 GEMMs on quantization codes for the fake-quantized
 * linears (linear_codes_cuda.h says why this is exact for the forward).
 *
 * Three elementwise kernels (codes out of a dequantized tensor, a scaled bf16 copy of a
 * gradient, the scale epilogue) and one cublasGemmEx call. Trade-off: the epilogue is its
 * own pass over the output instead of a cuBLASLt epilogue (per-row and per-column scales
 * together are not one of its fused epilogues); it reads and writes N·out floats, small
 * next to the GEMM.
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

extern "C" {
#include "error.h"
}
#include "kernels/cuda_common.cuh"
#include "kernels/linear_codes_cuda.h"

#define F "kernels/linear_codes.cu"

/* The codes as bf16 (the backward's operand) and, when q8 is given, as int8 too (the
 * forward's, on the integer tensor cores), from one read of the quantized tensor. */
static __global__ void codes_kernel(__nv_bfloat16 *q, int8_t *q8, const float *xh,
                                    const float *scale, long rows, int cols)
{
    const size_t n = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float s = scale[i / cols];
        const float c = s != 0.0f ? rintf(xh[i] / s) : 0.0f;
        q[i] = __float2bfloat16_rn(c);
        if (q8)
            q8[i] = (int8_t)c;
    }
}

static __global__ void scaled_kernel(__nv_bfloat16 *out, const float *g, const float *rs,
                                     const float *cs, long rows, int cols)
{
    const size_t n = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = g[i];
        if (rs)
            v *= rs[i / cols];
        if (cs)
            v *= cs[i % cols];
        out[i] = __float2bfloat16_rn(v);
    }
}

/* ACC: float (bf16 GEMM) or int (int8 GEMM); the integer sums are exact either way and
 * convert to the same float, so both give the same bits. acc may alias y. */
template <typename ACC>
static __global__ void epilogue_kernel(float *y, const ACC *acc, const float *rs,
                                       const float *cs, long rows, int cols, int accumulate)
{
    const size_t n = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        /* (s_x · s_w) · acc: the order fq_layer.c's fp32 GEMM cannot match anyway; both
         * scalings round once each */
        float v = rs[i / cols] * cs[i % cols] * (float)acc[i];
        y[i] = accumulate ? y[i] + v : v;
    }
}

static unsigned grid_of(size_t n)
{
    size_t g = (n + FQ_BLOCK - 1) / FQ_BLOCK;
    return (unsigned)(g > 65535u * 8 ? 65535u * 8 : (g ? g : 1));
}

static int check(const char *fn, const void *out, const void *in, long rows, int cols)
{
    if (!out || !in)
        return fq_error(F ":%s: NULL buffer (expected device input and output)", fn);
    if (rows <= 0 || cols <= 0)
        return fq_error(F ":%s: shape %ld x %d (expected positive)", fn, rows, cols);
    return FQ_OK;
}

int codes_bf16_cuda(fq_cuda_ctx *ctx, uint16_t *q, int8_t *q8, const float *xh,
                    const float *scale, long rows, int cols)
{
    if (check("codes_bf16_cuda", q, xh, rows, cols))
        return FQ_ERR;
    if (!scale)
        return fq_error(F ":codes_bf16_cuda: NULL scale (expected one per row)");
    const size_t n = (size_t)rows * cols;
    codes_kernel<<<grid_of(n), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>((__nv_bfloat16 *)q, q8, xh,
                                                               scale, rows, cols);
    LAUNCH_CHECK(F, "codes_bf16_cuda", "codes_kernel");
    return FQ_OK;
}

int scaled_bf16_cuda(fq_cuda_ctx *ctx, uint16_t *out, const float *g, const float *rs,
                     const float *cs, long rows, int cols)
{
    if (check("scaled_bf16_cuda", out, g, rows, cols))
        return FQ_ERR;
    const size_t n = (size_t)rows * cols;
    scaled_kernel<<<grid_of(n), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>((__nv_bfloat16 *)out, g, rs,
                                                                cs, rows, cols);
    LAUNCH_CHECK(F, "scaled_bf16_cuda", "scaled_kernel");
    return FQ_OK;
}

template <typename ACC>
static int epilogue(fq_cuda_ctx *ctx, const char *fn, float *y, const ACC *acc, const float *rs,
                    const float *cs, long rows, int cols, int accumulate)
{
    if (check(fn, y, acc, rows, cols))
        return FQ_ERR;
    if (!rs || !cs)
        return fq_error(F ":%s: NULL scales (expected row and column scales)", fn);
    const size_t n = (size_t)rows * cols;
    epilogue_kernel<ACC><<<grid_of(n), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(y, acc, rs, cs, rows,
                                                                       cols, accumulate);
    LAUNCH_CHECK(F, fn, "epilogue_kernel");
    return FQ_OK;
}

int codes_epilogue_cuda(fq_cuda_ctx *ctx, float *y, const float *acc, const float *rs,
                        const float *cs, long rows, int cols, int accumulate)
{
    return epilogue(ctx, "codes_epilogue_cuda", y, acc, rs, cs, rows, cols, accumulate);
}

int codes_epilogue_i32_cuda(fq_cuda_ctx *ctx, float *y, const int32_t *acc, const float *rs,
                            const float *cs, long rows, int cols, int accumulate)
{
    return epilogue(ctx, "codes_epilogue_i32_cuda", y, acc, rs, cs, rows, cols, accumulate);
}

int fq_gemm_i8_cuda(fq_cuda_ctx *ctx, int m, int n, int k, const int8_t *a, int lda,
                    const int8_t *b, int ldb, int32_t *c, int ldc)
{
    if (!ctx || !ctx->cublas || !a || !b || !c)
        return fq_error(F ":fq_gemm_i8_cuda: NULL argument (expected an initialised context "
                        "and three device matrices)");
    if (m <= 0 || n <= 0 || k <= 0 || k % 4 || lda % 4 || ldb % 4)
        return fq_error(F ":fq_gemm_i8_cuda: GEMM shape %d x %d x %d, lda %d, ldb %d (expected "
                        "positive sizes, k and the leading dimensions multiples of 4)", m, n, k,
                        lda, ldb);
    const int32_t one = 1, zero = 0;
    /* row-major C = A·Bᵀ is column-major Cᵀ = Bᵀᵀ·Aᵀ: B transposed, A not (both K-major, the
     * integer tensor cores' layout) */
    cublasStatus_t s = cublasGemmEx(CTX_CUBLAS(ctx), CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one, b,
                                    CUDA_R_8I, ldb, a, CUDA_R_8I, lda, &zero, c, CUDA_R_32I, ldc,
                                    CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS)
        return fq_error(F ":fq_gemm_i8_cuda: cuBLAS int8 GEMM %d x %d x %d failed: status %d "
                        "(expected success)", m, n, k, (int)s);
    return FQ_OK;
}

int fq_gemm_bf16_cuda(fq_cuda_ctx *ctx, int trans_a, int trans_b, int m, int n, int k,
                      const uint16_t *a, int lda, const uint16_t *b, int ldb, float *c,
                      int ldc)
{
    if (!ctx || !ctx->cublas || !a || !b || !c)
        return fq_error(F ":fq_gemm_bf16_cuda: NULL argument (expected an initialised context "
                        "and three device matrices)");
    if (m <= 0 || n <= 0 || k <= 0)
        return fq_error(F ":fq_gemm_bf16_cuda: GEMM shape %d x %d x %d (expected positive)", m,
                        n, k);
    const float one = 1.0f, zero = 0.0f;
    /* row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ */
    cublasStatus_t s = cublasGemmEx(CTX_CUBLAS(ctx), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                    trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &one, b,
                                    CUDA_R_16BF, ldb, a, CUDA_R_16BF, lda, &zero, c, CUDA_R_32F,
                                    ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS)
        return fq_error(F ":fq_gemm_bf16_cuda: cuBLAS bf16 GEMM %d x %d x %d failed: status %d "
                        "(expected success)", m, n, k, (int)s);
    return FQ_OK;
}

int codes_gemm_exact(int a_bits, int w_bits, int k)
{
    if (a_bits < 2 || a_bits > 8 || w_bits < 2 || w_bits > 8 || k <= 0)
        return 0;
    const double bound = (double)(1 << (a_bits - 1)) * (double)(1 << (w_bits - 1)) * k;
    return bound < 16777216.0;
}
