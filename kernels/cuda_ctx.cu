/* cuda_ctx.cu — the CUDA context (device, stream, cuBLAS handle), device memory helpers
 * and the row-major GEMM wrappers that every op builds on.
 *
 * One context per worker rank and GPU. cuBLAS is pinned to the context's stream and, by
 * default, to pure fp32 math (no TF32) so GEMM results match the CPU reference to
 * rounding. ctx->math = FQ_MATH_TF32 / FQ_MATH_BF16 routes every GEMM through
 * cublasGemmEx with the FAST_TF32 / FAST_16BF compute types: fp32 operands in memory,
 * tensor-core products on rounded inputs, fp32 accumulation (no conversion kernels).
 */
#include <stdio.h>

#include "kernels/cuda_common.cuh"

static const char *cublas_status_name(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUBLAS_STATUS_MAPPING_ERROR: return "mapping error";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "unknown status";
    }
}

#define F "kernels/cuda_ctx.cu"

int fq_cuda_device_count(int *count)
{
    if (!count)
        return fq_error(F ":fq_cuda_device_count: NULL count (expected a pointer)");
    *count = 0;
    cudaError_t e = cudaGetDeviceCount(count);
    if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) {
        *count = 0;
        (void)cudaGetLastError();
        return FQ_OK;
    }
    CU_CHECK(e, F, "fq_cuda_device_count", "cudaGetDeviceCount");
    return FQ_OK;
}

int fq_cuda_init(fq_cuda_ctx *ctx, int device)
{
    if (!ctx)
        return fq_error(F ":fq_cuda_init: NULL context (expected a pointer)");
    ctx->device = device;
    ctx->sm_count = 1;
    ctx->math = FQ_MATH_FP32;
    ctx->split_transforms = 0;
    ctx->tallk_split = 1;
    ctx->pdl = 0;
    ctx->grid_barrier = 1;
    ctx->attn_tc = 1;
    ctx->gemm_wgmma = 1;
    ctx->transform_gemm = 1;
    ctx->transform_tf32 = 0;
    ctx->transform_tc = 0;
    ctx->barrier_arrivals = 0;
    for (int i = 0; i < FQ_SCRATCH_SLOTS; i++) {
        ctx->scratch[i] = NULL;
        ctx->scratch_cap[i] = 0;
    }
    ctx->cublas = NULL;
    ctx->stream = NULL;
    int count = 0;
    if (fq_cuda_device_count(&count))
        return FQ_ERR;
    if (device < 0 || device >= count)
        return fq_error(F ":fq_cuda_init: device %d requested but %d CUDA device(s) are "
                        "visible (expected 0..%d)", device, count, count - 1);
    CU_CHECK(cudaSetDevice(device), F, "fq_cuda_init", "cudaSetDevice");
    CU_CHECK(cudaDeviceGetAttribute(&ctx->sm_count, cudaDevAttrMultiProcessorCount, device), F,
             "fq_cuda_init", "cudaDeviceGetAttribute");
    cudaStream_t st;
    CU_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), F, "fq_cuda_init",
             "cudaStreamCreate");
    cublasHandle_t h;
    cublasStatus_t s = cublasCreate(&h);
    if (s != CUBLAS_STATUS_SUCCESS) {
        cudaStreamDestroy(st);
        return fq_error(F ":fq_cuda_init: cublasCreate failed: %s (expected a cuBLAS handle)",
                        cublas_status_name(s));
    }
    ctx->stream = st;
    ctx->cublas = h;
    s = cublasSetStream(h, st);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
    if (s != CUBLAS_STATUS_SUCCESS) {
        fq_cuda_free_ctx(ctx);
        return fq_error(F ":fq_cuda_init: cuBLAS stream/math setup failed: %s (expected "
                        "success)", cublas_status_name(s));
    }
    return FQ_OK;
}

void fq_cuda_free_ctx(fq_cuda_ctx *ctx)
{
    if (!ctx)
        return;
    if (ctx->cublas)
        cublasDestroy(CTX_CUBLAS(ctx));
    if (ctx->stream)
        cudaStreamDestroy(CTX_STREAM(ctx));
    ctx->cublas = NULL;
    ctx->stream = NULL;
    for (int i = 0; i < FQ_SCRATCH_SLOTS; i++) {
        cudaFree(ctx->scratch[i]);
        ctx->scratch[i] = NULL;
        ctx->scratch_cap[i] = 0;
    }
}

int fq_cuda_device_name(const fq_cuda_ctx *ctx, char *buf, size_t cap)
{
    if (!ctx || !buf || cap == 0)
        return fq_error(F ":fq_cuda_device_name: NULL argument (expected context and buffer)");
    cudaDeviceProp p;
    CU_CHECK(cudaGetDeviceProperties(&p, ctx->device), F, "fq_cuda_device_name",
             "cudaGetDeviceProperties");
    snprintf(buf, cap, "%s (sm_%d%d, %.0f GiB)", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return FQ_OK;
}

int fq_cuda_bind(fq_cuda_ctx *ctx)
{
    if (!ctx)
        return fq_error(F ":fq_cuda_bind: NULL context (expected an initialised fq_cuda_ctx)");
    CU_CHECK(cudaSetDevice(ctx->device), F, "fq_cuda_bind", "cudaSetDevice");
    return FQ_OK;
}

int fq_cuda_host_register(void *p, size_t bytes)
{
    if (!p || !bytes)
        return fq_error(F ":fq_cuda_host_register: NULL or empty buffer (expected a host "
                        "allocation)");
    CU_CHECK(cudaHostRegister(p, bytes, cudaHostRegisterDefault), F, "fq_cuda_host_register",
             "cudaHostRegister");
    return FQ_OK;
}

void fq_cuda_host_unregister(void *p)
{
    if (p)
        cudaHostUnregister(p);
}

int fq_cuda_sync(fq_cuda_ctx *ctx)
{
    if (!ctx || !ctx->stream)
        return fq_error(F ":fq_cuda_sync: context not initialised (expected fq_cuda_init)");
    CU_CHECK(cudaStreamSynchronize(CTX_STREAM(ctx)), F, "fq_cuda_sync",
             "a kernel launched before this synchronisation");
    return FQ_OK;
}

int fq_cuda_alloc(float **dptr, size_t count, const char *what)
{
    if (!dptr)
        return fq_error(F ":fq_cuda_alloc: NULL pointer (expected where to store the buffer)");
    *dptr = NULL;
    if (count == 0)
        return fq_error(F ":fq_cuda_alloc: %s has 0 elements (expected a positive size)",
                        what ? what : "buffer");
    cudaError_t e = cudaMalloc((void **)dptr, count * sizeof(float));
    if (e != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        (void)cudaGetLastError();
        cudaMemGetInfo(&free_b, &total_b);
        *dptr = NULL;
        return fq_error(F ":fq_cuda_alloc: cannot allocate %s: %.3f GiB needed, %.3f GiB free "
                        "of %.3f GiB (%s)", what ? what : "buffer",
                        (double)(count * sizeof(float)) / (1 << 30), (double)free_b / (1 << 30),
                        (double)total_b / (1 << 30), cudaGetErrorString(e));
    }
    return FQ_OK;
}

int fq_cuda_scratch(fq_cuda_ctx *ctx, int slot, size_t bytes, void **out)
{
    if (!ctx || !out || slot < 0 || slot >= FQ_SCRATCH_SLOTS || bytes == 0)
        return fq_error(F ":fq_cuda_scratch: context %p, slot %d, %zu bytes (expected a "
                        "context, a slot below %d and a positive size)", (void *)ctx, slot,
                        bytes, FQ_SCRATCH_SLOTS);
    if (bytes > ctx->scratch_cap[slot]) {
        cudaFree(ctx->scratch[slot]); /* waits for the work that may still read it */
        ctx->scratch[slot] = NULL;
        ctx->scratch_cap[slot] = 0;
        float *p = NULL;
        if (fq_cuda_alloc(&p, (bytes + sizeof(float) - 1) / sizeof(float), "context scratch"))
            return FQ_ERR;
        ctx->scratch[slot] = p;
        ctx->scratch_cap[slot] = bytes;
    }
    *out = ctx->scratch[slot];
    return FQ_OK;
}

int fq_cuda_grid_barrier(fq_cuda_ctx *ctx, unsigned ctas, unsigned long long **counter,
                         unsigned long long *target)
{
    if (!ctx || !counter || !target || ctas == 0)
        return fq_error(F ":fq_cuda_grid_barrier: context %p, %u CTAs (expected a context and "
                        "CTAs)", (void *)ctx, ctas);
    if (!ctx->scratch[FQ_SCRATCH_BARRIER]) {
        void *p = NULL;
        if (fq_cuda_scratch(ctx, FQ_SCRATCH_BARRIER, sizeof(unsigned long long), &p) != FQ_OK)
            return FQ_ERR;
        CU_CHECK(cudaMemsetAsync(p, 0, sizeof(unsigned long long), CTX_STREAM(ctx)), F,
                 "fq_cuda_grid_barrier", "cudaMemsetAsync");
        ctx->barrier_arrivals = 0;
    }
    ctx->barrier_arrivals += ctas;
    *counter = (unsigned long long *)ctx->scratch[FQ_SCRATCH_BARRIER];
    *target = ctx->barrier_arrivals;
    return FQ_OK;
}

void fq_cuda_free(void *dptr)
{
    if (dptr)
        cudaFree(dptr);
}

/* One copy on the context's stream; sync: wait for it (host buffers are then free). */
static int copy_bytes(fq_cuda_ctx *ctx, void *dst, const void *src, size_t bytes,
                      cudaMemcpyKind kind, int sync, const char *where, const char *buffers)
{
    if (!ctx || !dst || !src)
        return fq_error(F ":%s: NULL argument (expected context, %s)", where, buffers);
    CU_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, CTX_STREAM(ctx)), F, where, "cudaMemcpyAsync");
    return sync ? fq_cuda_sync(ctx) : FQ_OK;
}

int fq_cuda_upload(fq_cuda_ctx *ctx, float *dst, const float *src, size_t count)
{
    return copy_bytes(ctx, dst, src, count * sizeof(float), cudaMemcpyHostToDevice, 1,
                      "fq_cuda_upload", "device and host buffers");
}

int fq_cuda_copy(fq_cuda_ctx *ctx, float *dst, const float *src, size_t count)
{
    return copy_bytes(ctx, dst, src, count * sizeof(float), cudaMemcpyDeviceToDevice, 0,
                      "fq_cuda_copy", "two device buffers");
}

int fq_cuda_download(fq_cuda_ctx *ctx, float *dst, const float *src, size_t count)
{
    return copy_bytes(ctx, dst, src, count * sizeof(float), cudaMemcpyDeviceToHost, 1,
                      "fq_cuda_download", "host and device buffers");
}

int fq_cuda_alloc_bytes(void **dptr, size_t bytes, const char *what)
{
    return fq_cuda_alloc((float **)dptr, (bytes + sizeof(float) - 1) / sizeof(float), what);
}

int fq_cuda_upload_bytes(fq_cuda_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    return copy_bytes(ctx, dst, src, bytes, cudaMemcpyHostToDevice, 1, "fq_cuda_upload_bytes",
                      "device and host buffers");
}

int fq_cuda_download_bytes(fq_cuda_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    return copy_bytes(ctx, dst, src, bytes, cudaMemcpyDeviceToHost, 1, "fq_cuda_download_bytes",
                      "host and device buffers");
}

static __global__ void fill_kernel(float *dst, float value, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = value;
}

int fq_cuda_fill(fq_cuda_ctx *ctx, float *dst, float value, size_t count)
{
    if (!ctx || !dst)
        return fq_error(F ":fq_cuda_fill: NULL argument (expected context and buffer)");
    if (count == 0)
        return FQ_OK;
    fill_kernel<<<fq_grid(count, FQ_BLOCK), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(dst, value, count);
    LAUNCH_CHECK(F, "fq_cuda_fill", "fill_kernel");
    return FQ_OK;
}

static int gemm_strided_math(fq_cuda_ctx *ctx, int math, int trans_a, int trans_b, int m,
                             int n, int k, float alpha, const float *a, int lda,
                             long long stride_a, const float *b, int ldb, long long stride_b,
                             float beta, float *c, int ldc, long long stride_c, int batch,
                             const char *where)
{
    if (m <= 0 || n <= 0 || k <= 0 || batch <= 0)
        return fq_error(F ":%s: GEMM shape %d x %d x %d, batch %d (expected positive sizes)",
                        where, m, n, k, batch);
    cublasOperation_t oa = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t ob = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasStatus_t s;
    if (math != FQ_MATH_FP32) {
        cublasComputeType_t ct = math == FQ_MATH_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                           : CUBLAS_COMPUTE_32F_FAST_16BF;
        if (batch == 1)
            s = cublasGemmEx(CTX_CUBLAS(ctx), ob, oa, n, m, k, &alpha, b, CUDA_R_32F, ldb, a,
                             CUDA_R_32F, lda, &beta, c, CUDA_R_32F, ldc, ct,
                             CUBLAS_GEMM_DEFAULT);
        else
            s = cublasGemmStridedBatchedEx(CTX_CUBLAS(ctx), ob, oa, n, m, k, &alpha, b,
                                           CUDA_R_32F, ldb, stride_b, a, CUDA_R_32F, lda,
                                           stride_a, &beta, c, CUDA_R_32F, ldc, stride_c, batch,
                                           ct, CUBLAS_GEMM_DEFAULT);
    } else if (batch == 1)
        s = cublasSgemm(CTX_CUBLAS(ctx), ob, oa, n, m, k, &alpha, b, ldb, a, lda, &beta, c, ldc);
    else
        s = cublasSgemmStridedBatched(CTX_CUBLAS(ctx), ob, oa, n, m, k, &alpha, b, ldb, stride_b,
                                      a, lda, stride_a, &beta, c, ldc, stride_c, batch);
    if (s != CUBLAS_STATUS_SUCCESS)
        return fq_error(F ":%s: cuBLAS SGEMM %d x %d x %d (batch %d) failed: %s (expected "
                        "success)", where, m, n, k, batch, cublas_status_name(s));
    return FQ_OK;
}

int fq_gemm_strided_cuda(fq_cuda_ctx *ctx, int trans_a, int trans_b, int m, int n, int k,
                         float alpha, const float *a, int lda, long long stride_a,
                         const float *b, int ldb, long long stride_b, float beta, float *c,
                         int ldc, long long stride_c, int batch, const char *where)
{
    return gemm_strided_math(ctx, ctx->math, trans_a, trans_b, m, n, k, alpha, a, lda, stride_a,
                             b, ldb, stride_b, beta, c, ldc, stride_c, batch, where);
}

/* hi = x rounded to TF32's 10 mantissa bits (to nearest, so |lo| ≤ 2^-11·|x|),
 * lo = x − hi (exact in fp32). */
static __global__ void split_tf32_kernel(float *hi, float *lo, const float *x, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = x[i];
        float h = isfinite(v) ? __uint_as_float((__float_as_uint(v) + 0x1000u) & 0xffffe000u) : v;
        if (isinf(h) && isfinite(v)) /* rounding up overflowed: cut instead */
            h = __uint_as_float(__float_as_uint(v) & 0xffffe000u);
        hi[i] = h;
        lo[i] = v - h;
    }
}

/* Elements a strided operand spans: (batch − 1)·stride + (rows − 1)·ld + cols. */
static size_t operand_extent(int rows, int cols, int ld, long long stride, int batch)
{
    return (size_t)(batch - 1) * (size_t)stride + (size_t)(rows - 1) * (size_t)ld + (size_t)cols;
}

/* C = α·A·B + β·C at about fp32 accuracy on tensor cores: A = A_hi + A_lo, B likewise,
 * C = α(A_lo·B_hi + A_hi·B_lo + A_hi·B_hi) + β·C (the small terms first; A_lo·B_lo,
 * ~2^-22 relative, is dropped). The split copies live in the context's FQ_SCRATCH_SPLIT buffer; the operands are
 * re-read from there with the caller's strides. Trade-off: two extra passes over each
 * operand and 3 GEMMs, against SIMT fp32 SGEMM at a fraction of tensor-core speed. Measured
 * on H200 (bench/NOTES.md "GPU layer step", v3): the transforms' GEMMs have small inner
 * sizes (k = 64..224) and are bound by memory traffic, not FLOPs, so the extra passes cost
 * more than the tensor cores save (70B weight side 105 → 143 ms): kept opt-in, off. */
static int gemm_split_tf32(fq_cuda_ctx *ctx, int trans_a, int trans_b, int m, int n, int k,
                           float alpha, const float *a, int lda, long long stride_a,
                           const float *b, int ldb, long long stride_b, float beta, float *c,
                           int ldc, long long stride_c, int batch, const char *where)
{
    if (m <= 0 || n <= 0 || k <= 0 || batch <= 0)
        return fq_error(F ":%s: GEMM shape %d x %d x %d, batch %d (expected positive sizes)",
                        where, m, n, k, batch);
    const size_t ea = operand_extent(trans_a ? k : m, trans_a ? m : k, lda, stride_a, batch);
    const size_t eb = operand_extent(trans_b ? n : k, trans_b ? k : n, ldb, stride_b, batch);
    float *ah = NULL;
    if (fq_cuda_scratch(ctx, FQ_SCRATCH_SPLIT, sizeof(float) * 2 * (ea + eb), (void **)&ah))
        return fq_error_wrap(F ":%s: split-TF32 GEMM scratch", where);
    float *al = ah + ea, *bh = al + ea, *bl = bh + eb;
    split_tf32_kernel<<<fq_grid(ea, FQ_BLOCK), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(ah, al, a, ea);
    LAUNCH_CHECK(F, where, "split_tf32_kernel");
    split_tf32_kernel<<<fq_grid(eb, FQ_BLOCK), FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(bh, bl, b, eb);
    LAUNCH_CHECK(F, where, "split_tf32_kernel");
    if (gemm_strided_math(ctx, FQ_MATH_TF32, trans_a, trans_b, m, n, k, alpha, al, lda,
                          stride_a, bh, ldb, stride_b, beta, c, ldc, stride_c, batch, where) ||
        gemm_strided_math(ctx, FQ_MATH_TF32, trans_a, trans_b, m, n, k, alpha, ah, lda,
                          stride_a, bl, ldb, stride_b, 1.0f, c, ldc, stride_c, batch, where) ||
        gemm_strided_math(ctx, FQ_MATH_TF32, trans_a, trans_b, m, n, k, alpha, ah, lda,
                          stride_a, bh, ldb, stride_b, 1.0f, c, ldc, stride_c, batch, where))
        return FQ_ERR;
    return FQ_OK;
}

/* Tall-K products: a small output (the transforms' factor gradients, k × k) summed over
 * every row of a weight or every token, K up to millions. One SGEMM gives cuBLAS a grid
 * of a few output tiles that each walk all of K (measured 20-27 TFLOP/s in the 70B weight
 * side's backward); cut K into TALLK_CHUNK-long pieces instead, one strided-batched SGEMM
 * writes every piece's product, and a fixed-order sum folds them: the same result on every
 * run and any GPU. */
#define TALLK_MIN_K 65536
#define TALLK_MAX_OUT 65536
#define TALLK_CHUNK 8192

static __global__ void tallk_fold_kernel(float *c, int ldc, const float *part, int m, int n,
                                         int parts, float beta)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= m * n)
        return;
    const size_t mn = (size_t)m * n;
    float acc = 0.0f;
    for (int p = 0; p < parts; p++)
        acc += part[p * mn + i];
    float *cp = c + (size_t)(i / n) * ldc + i % n;
    *cp = beta == 0.0f ? acc : beta * *cp + acc;
}

static bool tallk(int m, int n, int k, int batch)
{
    return batch == 1 && k >= TALLK_MIN_K && (long long)m * n <= TALLK_MAX_OUT;
}

static int gemm_tallk(fq_cuda_ctx *ctx, int trans_a, int trans_b, int m, int n, int k,
                      float alpha, const float *a, int lda, const float *b, int ldb, float beta,
                      float *c, int ldc, const char *where)
{
    const int full = k / TALLK_CHUNK, rest = k % TALLK_CHUNK, parts = full + (rest > 0);
    const size_t mn = (size_t)m * n;
    float *part = NULL;
    if (fq_cuda_scratch(ctx, FQ_SCRATCH_KSPLIT, sizeof(float) * mn * parts, (void **)&part))
        return fq_error_wrap(F ":%s: split-K scratch", where);
    /* where chunk j of K starts in each operand (row-major, as the wrappers take them) */
    const long long sa = trans_a ? (long long)TALLK_CHUNK * lda : TALLK_CHUNK;
    const long long sb = trans_b ? TALLK_CHUNK : (long long)TALLK_CHUNK * ldb;
    if (full > 0 && gemm_strided_math(ctx, FQ_MATH_FP32, trans_a, trans_b, m, n, TALLK_CHUNK,
                                      alpha, a, lda, sa, b, ldb, sb, 0.0f, part, n,
                                      (long long)mn, full, where))
        return FQ_ERR;
    if (rest > 0 && gemm_strided_math(ctx, FQ_MATH_FP32, trans_a, trans_b, m, n, rest, alpha,
                                      a + full * sa, lda, 0, b + full * sb, ldb, 0, 0.0f,
                                      part + full * mn, n, 0, 1, where))
        return FQ_ERR;
    tallk_fold_kernel<<<(unsigned)((mn + 255) / 256), 256, 0, CTX_STREAM(ctx)>>>(
        c, ldc, part, m, n, parts, beta);
    LAUNCH_CHECK(F, where, "tallk_fold_kernel");
    return FQ_OK;
}

int fq_gemm_strided_exact_cuda(fq_cuda_ctx *ctx, int trans_a, int trans_b, int m, int n, int k,
                               float alpha, const float *a, int lda, long long stride_a,
                               const float *b, int ldb, long long stride_b, float beta,
                               float *c, int ldc, long long stride_c, int batch,
                               const char *where)
{
    if (tallk(m, n, k, batch) && ctx->tallk_split)
        return gemm_tallk(ctx, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                          where);
    if (ctx->math != FQ_MATH_FP32 && ctx->split_transforms)
        return gemm_split_tf32(ctx, trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb,
                               stride_b, beta, c, ldc, stride_c, batch, where);
    return gemm_strided_math(ctx, FQ_MATH_FP32, trans_a, trans_b, m, n, k, alpha, a, lda,
                             stride_a, b, ldb, stride_b, beta, c, ldc, stride_c, batch, where);
}

int fq_gemm_strided_math_cuda(fq_cuda_ctx *ctx, int math, int trans_a, int trans_b, int m, int n,
                              int k, float alpha, const float *a, int lda, long long stride_a,
                              const float *b, int ldb, long long stride_b, float beta, float *c,
                              int ldc, long long stride_c, int batch, const char *where)
{
    if (!ctx || !ctx->cublas || !a || !b || !c || !where)
        return fq_error(F ":fq_gemm_strided_math_cuda: NULL argument (expected an initialised "
                        "context, three device matrices and a caller name)");
    if (math != FQ_MATH_FP32 && math != FQ_MATH_TF32 && math != FQ_MATH_BF16)
        return fq_error(F ":%s: math mode %d (expected FQ_MATH_FP32, _TF32 or _BF16)", where, math);
    return gemm_strided_math(ctx, math, trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb,
                             stride_b, beta, c, ldc, stride_c, batch, where);
}

int fq_gemm_cuda(fq_cuda_ctx *ctx, int trans_a, int trans_b, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    if (!ctx || !ctx->cublas || !a || !b || !c)
        return fq_error(F ":fq_gemm_cuda: NULL argument (expected an initialised context and "
                        "three device matrices)");
    return fq_gemm_strided_cuda(ctx, trans_a, trans_b, m, n, k, alpha, a, lda, 0, b, ldb, 0,
                                beta, c, ldc, 0, 1, "fq_gemm_cuda");
}

int fq_cuda_set_math(fq_cuda_ctx *ctx, int math)
{
    if (!ctx)
        return fq_error(F ":fq_cuda_set_math: NULL context (expected a pointer)");
    if (math != FQ_MATH_FP32 && math != FQ_MATH_TF32 && math != FQ_MATH_BF16)
        return fq_error(F ":fq_cuda_set_math: math mode %d (expected FQ_MATH_FP32, "
                        "FQ_MATH_TF32 or FQ_MATH_BF16)", math);
    ctx->math = math;
    return FQ_OK;
}

int fq_cuda_mem_info(size_t *free_bytes, size_t *total_bytes)
{
    if (!free_bytes || !total_bytes)
        return fq_error(F ":fq_cuda_mem_info: NULL argument (expected two pointers)");
    CU_CHECK(cudaMemGetInfo(free_bytes, total_bytes), F, "fq_cuda_mem_info", "cudaMemGetInfo");
    return FQ_OK;
}

/* One block: thread t sums src[t], src[t + B], … in order, then a fixed shuffle tree. */
static __global__ void sum_into_kernel(float *dst, const float *src, size_t n)
{
    __shared__ float sh[32];
    float acc = 0.0f;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x)
        acc += src[i];
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0)
        dst[0] += acc;
}

int fq_cuda_sum_into(fq_cuda_ctx *ctx, float *dst, const float *src, size_t n)
{
    if (!ctx || !dst || !src)
        return fq_error(F ":fq_cuda_sum_into: NULL argument (expected context, destination "
                        "and source)");
    if (n == 0)
        return FQ_OK;
    sum_into_kernel<<<1, 1024, 0, CTX_STREAM(ctx)>>>(dst, src, n);
    LAUNCH_CHECK(F, "fq_cuda_sum_into", "sum_into_kernel");
    return FQ_OK;
}
