/* gptq_cuda.cu — GPTQ's Hessian sum, column sweep and output error on the GPU
 * (gptq_cuda.h).
 *
 * The sweep, one block of columns [i1, i2) at a time, as core/gptq.c:
 *   1. gptq_block_kernel: one warp per weight row, the row's nb ≤ 128 block columns in
 *      registers (lane l holds columns l, l+32, …), the block of U in shared memory (read
 *      by every warp of the CTA). Column i: its owner lane broadcasts w_i, every lane
 *      computes the same code c and error e = (w_i − s·c)/U_ii, the lanes update their
 *      columns j > i by w_j −= e·U_ij, the owner stores the code and e into E.
 *   2. one SGEMM: W[:, i2:] −= E · U[i1:i2, i2:] (the lazy batch).
 * The per-column arithmetic uses the _rn intrinsics so nvcc cannot contract a·b − c into
 * an FMA: the CPU reference rounds the product first.
 */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

extern "C" {
#include "gptq.h"
}
#include "kernels/cuda_common.cuh"
#include "kernels/gptq_cuda.h"

#define F "kernels/gptq_cuda.cu"
#define SWEEP_WARPS 8

/* C = alpha·op(A)·op(B) + beta·C at fp32 accuracy whatever ctx->math says */
static int fp32_gemm(fq_cuda_ctx *ctx, int ta, int tb, int m, int n, int k, float alpha,
                     const float *a, int lda, const float *b, int ldb, float beta, float *c,
                     int ldc, const char *where)
{
    return fq_gemm_strided_exact_cuda(ctx, ta, tb, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta,
                                      c, ldc, 0, 1, where);
}

int gptq_hessian_add_cuda(fq_cuda_ctx *ctx, float *sum, const float *x, int rows, int n)
{
    if (!ctx || !sum || !x || rows < 0 || n < 1)
        return fq_error(F ":gptq_hessian_add_cuda: bad arguments (expected a context, device "
                        "sum and input, rows >= 0 and n >= 1, got [%d, %d])", rows, n);
    if (rows == 0)
        return FQ_OK;
    return fp32_gemm(ctx, 1, 0, n, n, rows, 1.0f, x, n, x, n, 1.0f, sum, n,
                     F ":gptq_hessian_add_cuda");
}

/* KR = columns per lane (nb ≤ 32·KR). */
template <int KR>
static __global__ void gptq_block_kernel(float *W, const float *U, const float *scales,
                                         int8_t *codes, float *E, int out, int in, int i1,
                                         int nb, float qmax)
{
    extern __shared__ float us[]; /* U[i1 + a, i1 + b] at us[a·nb + b] */
    for (int t = threadIdx.x; t < nb * nb; t += blockDim.x)
        us[t] = U[(size_t)(i1 + t / nb) * in + i1 + t % nb];
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int r = blockIdx.x * SWEEP_WARPS + (threadIdx.x >> 5);
    if (r >= out)
        return;
    float *wr = W + (size_t)r * in + i1;
    float w[KR];
#pragma unroll
    for (int k = 0; k < KR; k++) {
        int j = lane + 32 * k;
        w[k] = j < nb ? wr[j] : 0.0f;
    }
    const float s = scales[r];
#pragma unroll
    for (int k = 0; k < KR; k++) {
        for (int t = 0; t < 32; t++) {
            const int i = 32 * k + t;
            if (i >= nb) /* the same for the whole warp */
                break;
            const float wi = __shfl_sync(0xffffffffu, w[k], t);
            float c = rintf(__fdiv_rn(wi, s));
            c = fminf(fmaxf(c, -qmax - 1.0f), qmax);
            const float *ui = us + (size_t)i * nb;
            const float e = __fdiv_rn(__fsub_rn(wi, __fmul_rn(s, c)), ui[i]);
#pragma unroll
            for (int kk = k; kk < KR; kk++) {
                const int j = lane + 32 * kk;
                if (j > i && j < nb)
                    w[kk] = __fsub_rn(w[kk], __fmul_rn(e, ui[j]));
            }
            if (lane == t) {
                codes[(size_t)r * in + i1 + i] = (int8_t)c;
                E[(size_t)r * nb + i] = e;
            }
        }
    }
}

template <int KR>
static int launch_block(fq_cuda_ctx *ctx, float *W, const float *U, const float *scales,
                        int8_t *codes, float *E, int out, int in, int i1, int nb, float qmax)
{
    size_t smem = sizeof(float) * (size_t)nb * nb;
    CU_CHECK(cudaFuncSetAttribute(gptq_block_kernel<KR>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
             F, "gptq_sweep_cuda", "cudaFuncSetAttribute");
    unsigned ctas = (unsigned)((out + SWEEP_WARPS - 1) / SWEEP_WARPS);
    gptq_block_kernel<KR><<<ctas, SWEEP_WARPS * 32, smem, CTX_STREAM(ctx)>>>(
        W, U, scales, codes, E, out, in, i1, nb, qmax);
    LAUNCH_CHECK(F, "gptq_sweep_cuda", "gptq_block_kernel");
    return FQ_OK;
}

static int sweep_block(fq_cuda_ctx *ctx, float *W, const float *U, const float *scales,
                       int8_t *codes, float *E, int out, int in, int i1, int nb, float qmax)
{
    switch ((nb + 31) / 32) {
    case 1: return launch_block<1>(ctx, W, U, scales, codes, E, out, in, i1, nb, qmax);
    case 2: return launch_block<2>(ctx, W, U, scales, codes, E, out, in, i1, nb, qmax);
    case 3: return launch_block<3>(ctx, W, U, scales, codes, E, out, in, i1, nb, qmax);
    default: return launch_block<4>(ctx, W, U, scales, codes, E, out, in, i1, nb, qmax);
    }
}

int gptq_sweep_cuda(fq_cuda_ctx *ctx, float *W, const float *U, const float *scales,
                    int8_t *codes, float *E, int out, int in, int block, float qmax)
{
    if (!ctx || !W || !U || !scales || !codes || !E)
        return fq_error(F ":gptq_sweep_cuda: NULL argument (expected a context and device W, "
                        "U, scales, codes and E)");
    if (out < 1 || in < 1 || block < 1 || block > GPTQ_CUDA_MAX_BLOCK || !(qmax >= 1.0f) ||
        !(qmax <= 127.0f))
        return fq_error(F ":gptq_sweep_cuda: shape [%d, %d], block %d, qmax %g (expected "
                        "positive sizes, block 1..%d on the GPU (quantization.gptq_block), "
                        "qmax 1..127)", out, in, block, (double)qmax, GPTQ_CUDA_MAX_BLOCK);
    int rc = FQ_OK;
    for (int i1 = 0; rc == FQ_OK && i1 < in; i1 += block) {
        int i2 = i1 + block < in ? i1 + block : in, nb = i2 - i1;
        rc = sweep_block(ctx, W, U, scales, codes, E, out, in, i1, nb, qmax);
        if (rc == FQ_OK && i2 < in)
            rc = fp32_gemm(ctx, 0, 0, out, in - i2, nb, -1.0f, E, nb, U + (size_t)i1 * in + i2,
                           in, 1.0f, W + i2, in, F ":gptq_sweep_cuda");
    }
    return rc == FQ_OK ? FQ_OK : fq_error_wrap(F ":gptq_sweep_cuda ([%d, %d])", out, in);
}

int gptq_plan_sweep_cuda(fq_cuda_ctx *ctx, gptq_plan *p, const float *U, qlinear *l)
{
    if (!ctx || !p || !p->W || !p->scales || !U || !l)
        return fq_error(F ":gptq_plan_sweep_cuda: bad arguments (expected a context, a plan "
                        "with its weight and scales, a device factor and a linear)");
    static_assert(sizeof(real) == sizeof(float), "the GPU path reads real as float");
    const int out = p->out, in = p->in;
    const size_t nw = (size_t)out * in;
    float *dW = NULL, *dS = NULL, *dE = NULL;
    int8_t *dcodes = NULL;
    int8_t *codes = (int8_t *)malloc(nw);
    int rc = codes && !fq_cuda_alloc(&dW, nw, "GPTQ working weight") &&
                     !fq_cuda_alloc(&dS, (size_t)out, "weight scales") &&
                     !fq_cuda_alloc(&dE, (size_t)out * (p->block < in ? p->block : in),
                                    "GPTQ block errors") &&
                     !fq_cuda_alloc_bytes((void **)&dcodes, nw, "weight codes") &&
                     !fq_cuda_upload(ctx, dW, p->W, nw) &&
                     !fq_cuda_upload(ctx, dS, p->scales, (size_t)out) &&
                     !gptq_sweep_cuda(ctx, dW, U, dS, dcodes, dE, out, in, p->block, p->qmax) &&
                     !fq_cuda_download_bytes(ctx, codes, dcodes, nw)
                 ? FQ_OK
                 : FQ_ERR;
    if (!codes)
        fq_error(F ":gptq_plan_sweep_cuda: out of host memory (%zu codes)", nw);
    fq_cuda_free(dW);
    fq_cuda_free(dS);
    fq_cuda_free(dE);
    fq_cuda_free(dcodes);
    if (rc != FQ_OK) {
        free(codes);
        return FQ_ERR;
    }
    return gptq_plan_finish(p, codes, l); /* takes the codes over */
}

/* rowsum[r] = Σ_j a[r, j]·b[r, j] in double, one CTA per row */
static __global__ void row_dot_kernel(double *rowsum, const float *a, const float *b, int n)
{
    __shared__ double part[FQ_BLOCK];
    const float *ar = a + (size_t)blockIdx.x * n, *br = b + (size_t)blockIdx.x * n;
    double s = 0;
    for (int j = threadIdx.x; j < n; j += blockDim.x)
        s += (double)ar[j] * (double)br[j];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h /= 2) {
        if ((int)threadIdx.x < h)
            part[threadIdx.x] += part[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        rowsum[blockIdx.x] = part[0];
}

int gptq_output_error_cuda(fq_cuda_ctx *ctx, const float *delta, const float *H, int out,
                           int in, float *work, double *err)
{
    if (!ctx || !delta || !H || !work || !err || out < 1 || in < 1)
        return fq_error(F ":gptq_output_error_cuda: bad arguments (expected a context, device "
                        "delta, H, work, an output and a positive shape)");
    if (fp32_gemm(ctx, 0, 0, out, in, in, 1.0f, delta, in, H, in, 0.0f, work, in,
                  F ":gptq_output_error_cuda"))
        return FQ_ERR;
    double *rows_d = NULL;
    double *rows_h = (double *)malloc(sizeof(double) * (size_t)out);
    if (!rows_h)
        return fq_error(F ":gptq_output_error_cuda: out of host memory (%d row sums)", out);
    cudaError_t e = cudaMalloc((void **)&rows_d, sizeof(double) * (size_t)out);
    if (e == cudaSuccess) {
        row_dot_kernel<<<(unsigned)out, FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(rows_d, work, delta, in);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(rows_h, rows_d, sizeof(double) * (size_t)out,
                            cudaMemcpyDeviceToHost, CTX_STREAM(ctx));
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(CTX_STREAM(ctx));
    cudaFree(rows_d);
    if (e != cudaSuccess) {
        free(rows_h);
        return fq_error(F ":gptq_output_error_cuda: CUDA error in row_dot_kernel: %s (expected "
                        "success)", cudaGetErrorString(e));
    }
    double s = 0;
    for (int r = 0; r < out; r++)
        s += rows_h[r];
    free(rows_h);
    *err = s;
    return FQ_OK;
}

/* ---- the factorisations: cuSOLVER opened at run time ----
 * Declared here instead of through cusolverDn.h: a build machine without the solver's
 * headers still compiles, and a run without the library falls back to LAPACK. The status
 * and fill-mode enums are ints in the C ABI; 0 is CUSOLVER_STATUS_SUCCESS and
 * CUBLAS_FILL_MODE_LOWER. */
typedef int (*solv_create_fn)(void **);
typedef int (*solv_stream_fn)(void *, cudaStream_t);
typedef int (*solv_bufsize_fn)(void *, int, int, double *, int, int *);
typedef int (*solv_run_fn)(void *, int, int, double *, int, double *, int, int *);

static struct {
    int tried, ok;
    void *handle;
    solv_stream_fn set_stream;
    solv_bufsize_fn potrf_size, potri_size;
    solv_run_fn potrf, potri;
    char why[256];
} g_solv;

static void solver_open(void)
{
    if (g_solv.tried)
        return;
    g_solv.tried = 1;
    const char *names[] = {"libcusolver.so.12", "libcusolver.so",
                           "/usr/local/cuda/lib64/libcusolver.so.12"};
    void *lib = NULL;
    for (size_t i = 0; !lib && i < sizeof names / sizeof names[0]; i++)
        if ((lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL)))
            snprintf(g_solv.why, sizeof g_solv.why, "cuSOLVER (%s)", names[i]);
    if (!lib) {
        snprintf(g_solv.why, sizeof g_solv.why, "no cuSOLVER library (%s)", dlerror());
        return;
    }
    solv_create_fn create = (solv_create_fn)dlsym(lib, "cusolverDnCreate");
    g_solv.set_stream = (solv_stream_fn)dlsym(lib, "cusolverDnSetStream");
    g_solv.potrf_size = (solv_bufsize_fn)dlsym(lib, "cusolverDnDpotrf_bufferSize");
    g_solv.potri_size = (solv_bufsize_fn)dlsym(lib, "cusolverDnDpotri_bufferSize");
    g_solv.potrf = (solv_run_fn)dlsym(lib, "cusolverDnDpotrf");
    g_solv.potri = (solv_run_fn)dlsym(lib, "cusolverDnDpotri");
    if (!create || !g_solv.set_stream || !g_solv.potrf_size || !g_solv.potri_size ||
        !g_solv.potrf || !g_solv.potri) {
        snprintf(g_solv.why, sizeof g_solv.why, "cuSOLVER without the potrf/potri entry points");
        return;
    }
    if (create(&g_solv.handle) != 0) {
        snprintf(g_solv.why, sizeof g_solv.why, "cusolverDnCreate failed");
        return;
    }
    g_solv.ok = 1; /* the library stays loaded for the process */
}

int gptq_cuda_have_solver(char *why)
{
    solver_open();
    if (why)
        snprintf(why, 256, "%s", g_solv.why);
    return g_solv.ok;
}

/* row-major: zero below the diagonal and round to float */
static __global__ void upper_to_float_kernel(float *U, const double *a, int n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)n * n)
        return;
    int r = (int)(i / n), c = (int)(i % n);
    U[i] = c < r ? 0.0f : (float)a[i];
}

int gptq_inverse_factor_cuda(fq_cuda_ctx *ctx, const double *hd, int n, double damp, float *U)
{
    if (!ctx || !hd || !U || n < 1)
        return fq_error(F ":gptq_inverse_factor_cuda: bad arguments (expected a context, the "
                        "host Hessian, a device factor and n >= 1)");
    if (!gptq_cuda_have_solver(NULL))
        return fq_error(F ":gptq_inverse_factor_cuda: %s (expected the CUDA toolkit's "
                        "cuSOLVER; the host's LAPACK can factorise instead)", g_solv.why);
    size_t nn = (size_t)n * n;
    double *a = NULL, *work = NULL;
    int *info_d = NULL, info = 0, lw1 = 0, lw2 = 0, st = 0;
    const char *step = "cudaMalloc";
    cudaError_t e = cudaMalloc((void **)&a, sizeof(double) * nn);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&info_d, sizeof(int));
    if (e == cudaSuccess) {
        step = "cudaMemcpyAsync";
        e = cudaMemcpyAsync(a, hd, sizeof(double) * nn, cudaMemcpyHostToDevice, CTX_STREAM(ctx));
    }
    if (e == cudaSuccess) {
        step = "cuSOLVER set-up";
        st = g_solv.set_stream(g_solv.handle, CTX_STREAM(ctx));
        if (!st)
            st = g_solv.potrf_size(g_solv.handle, 0, n, a, n, &lw1);
        if (!st)
            st = g_solv.potri_size(g_solv.handle, 0, n, a, n, &lw2);
        if (!st) {
            step = "cudaMalloc";
            e = cudaMalloc((void **)&work, sizeof(double) * (size_t)(lw1 > lw2 ? lw1 : lw2 > 0 ? lw2 : 1));
        }
    }
    /* the host's sequence: Cholesky of the damped H, its inverse, the Cholesky of that; lower
     * in the column-major view = upper in row-major, as core/gptq.c explains */
    const char *calls[3] = {"potrf of the damped Hessian", "potri", "potrf of the inverse"};
    for (int c = 0; c < 3 && e == cudaSuccess && !st && !info; c++) {
        step = calls[c];
        st = c == 1 ? g_solv.potri(g_solv.handle, 0, n, a, n, work, lw2, info_d)
                    : g_solv.potrf(g_solv.handle, 0, n, a, n, work, lw1, info_d);
        if (!st)
            e = cudaMemcpyAsync(&info, info_d, sizeof(int), cudaMemcpyDeviceToHost, CTX_STREAM(ctx));
        if (e == cudaSuccess && !st)
            e = cudaStreamSynchronize(CTX_STREAM(ctx));
        if (c == 0 && info > 0 && e == cudaSuccess && !st) {
            cudaFree(a), cudaFree(work), cudaFree(info_d);
            return fq_error(F ":gptq_quantize: the damped Hessian is not positive definite "
                            "(leading minor %d; expected a larger gptq_damp than %g)", info, damp);
        }
    }
    if (e == cudaSuccess && !st && !info) {
        step = "upper_to_float_kernel";
        upper_to_float_kernel<<<(unsigned)((nn + FQ_BLOCK - 1) / FQ_BLOCK), FQ_BLOCK, 0,
                                CTX_STREAM(ctx)>>>(U, a, n);
        e = cudaGetLastError();
        if (e == cudaSuccess)
            e = cudaStreamSynchronize(CTX_STREAM(ctx));
    }
    cudaFree(a);
    cudaFree(work);
    cudaFree(info_d);
    if (e != cudaSuccess)
        return fq_error(F ":gptq_inverse_factor_cuda: CUDA error in %s: %s (expected success; "
                        "%d x %d doubles)", step, cudaGetErrorString(e), n, n);
    if (st || info)
        return fq_error(F ":gptq_inverse_factor_cuda: cuSOLVER %s failed (status %d, info %d; "
                        "expected a well-conditioned damped Hessian)", step, st, info);
    return FQ_OK;
}
