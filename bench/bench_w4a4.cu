/* bench_w4a4.cu — times the W4A4 kernels (kernels/w4a4_*.cu) on LLaMA-3-70B layer shapes
 * and their TP=2/TP=4 slices against cuBLAS BF16 and cuBLASLt FP8 (e4m3) measured in the
 * same program, and the KV4 decode attention against the same kernel on a bf16 cache
 * (fq_attention_bf16kv_cuda, the BF16 runtime's attention).
 *
 * Method (the nccl-tests habit): CUDA events around each repetition after a warm-up of at
 * least 3 runs and 50 ms (BENCH_WARM_MS) of the same work, median of 20 (time_pair says why;
 * BENCH_TURNS=1 times a row's linear and cuBLAS BF16 in turns); every operand is random (never zeros); when one operand set fits in L2
 * (50 MB on H100), the repetitions rotate over enough copies to exceed 256 MB, so
 * bandwidth numbers are HBM numbers. Each row prints time, achieved TOPS or GB/s, % of
 * the roofline (INT8/FP8 1979 and BF16 989 dense TFLOP/s datasheet, HBM bandwidth as
 * MEASURED here by a 1 GiB device copy) and the speedups. Built by bench/bench_w4a4.sh.
 */
#include <algorithm>
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

extern "C" {
#include "error.h"
#include "kron.h"
}
#include "kernels/cuda_common.cuh"
#include "kernels/w4a4.h"

#define CK(x)                                                                                \
    do {                                                                                     \
        cudaError_t e_ = (x);                                                                \
        if (e_ != cudaSuccess) {                                                             \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)
#define CB(x)                                                                                \
    do {                                                                                     \
        int s_ = (int)(x);                                                                   \
        if (s_ != 0) {                                                                       \
            fprintf(stderr, "%s:%d: %s: status %d\n", __FILE__, __LINE__, #x, s_);           \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)
#define FQ(x)                                                                                \
    do {                                                                                     \
        if ((x) != FQ_OK) {                                                                  \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, fq_errmsg());         \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

static const double PEAK_INT8 = 1979e12, PEAK_BF16 = 989e12;
static double g_bw = 3.0e12; /* replaced by the measured copy bandwidth */
/* BENCH_WARM_MS: the warm-up of each measurement (50 ms); BENCH_TURNS=1: the linear and
 * cuBLAS BF16 of a row timed in turns instead of each in its own steady state */
static float g_warm_ms = 50.f;
static bool g_turns = false;
static fq_cuda_ctx g_ctx;
static cudaStream_t g_st;
static FILE *g_log;

static void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    if (g_log) {
        va_start(ap, fmt);
        vfprintf(g_log, fmt, ap);
        va_end(ap);
        fflush(g_log);
    }
    fflush(stdout);
}

__global__ void fill_bytes(uint8_t *p, size_t n, uint32_t seed, uint8_t mask)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
        p[i] = (uint8_t)h & mask;
    }
}

__global__ void fill_bf16(uint16_t *p, size_t n, uint32_t seed, float scale)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
        float u = ((h & 0xFFFFFF) / 16777216.0f - 0.5f) * 2.f * scale;
        p[i] = __bfloat16_as_ushort(__float2bfloat16_rn(u));
    }
}

__global__ void fill_f32(float *p, size_t n, float lo, float hi)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = lo + (hi - lo) * ((i * 2654435761u) % 1000) / 1000.f;
}

static void *dalloc(size_t bytes)
{
    void *p;
    CK(cudaMalloc(&p, bytes < 16 ? 16 : bytes));
    return p;
}
static uint8_t *rand_bytes(size_t n, uint32_t seed, uint8_t mask = 0xFF)
{
    uint8_t *p = (uint8_t *)dalloc(n);
    fill_bytes<<<1024, 256, 0, g_st>>>(p, n, seed, mask);
    return p;
}
static uint16_t *rand_bf16(size_t n, uint32_t seed, float scale = 1.f)
{
    uint16_t *p = (uint16_t *)dalloc(n * 2);
    fill_bf16<<<1024, 256, 0, g_st>>>(p, n, seed, scale);
    return p;
}
static float *rand_f32(size_t n, float lo, float hi)
{
    float *p = (float *)dalloc(n * 4);
    fill_f32<<<1024, 256, 0, g_st>>>(p, n, lo, hi);
    return p;
}

/* One run of fn(rep) between CUDA events on the benchmark's stream (ms). */
template <class F> static float event_ms(F fn, int rep, cudaEvent_t a, cudaEvent_t b)
{
    CK(cudaEventRecord(a, g_st));
    fn(rep);
    CK(cudaEventRecord(b, g_st));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    return ms;
}

static double median20(std::vector<float> v)
{
    std::sort(v.begin(), v.end());
    return 0.5 * (v[9] + v[10]);
}

/* Medians of 20 timed repetitions of fa and fb, taken in turns (a, b, a, b, …) after a
 * warm-up of both, in turns, of at least 3 runs each and g_warm_ms; fn(rep) picks the
 * operand copy; with_b = false times fa alone. Session 14 measured what the protocol does
 * to the linear / BF16 ratio of the 48 prefill rows (geo-means, H200, bench/NOTES.md):
 * 3 warm-up runs 1.32 (the first measurement of a row, after seconds of host-side set-up,
 * came out up to 35 % slower than the same kernel later in the row); each side alone after
 * 50 ms of itself 1.48 (cuBLAS BF16 ~8 % slower than right after other work: the clocks
 * follow the power drawn); in turns 1.22 (the linear ~12 % slower than alone, BF16 ~7 %
 * faster: each kernel runs at the clocks its predecessor's power left). The default is each
 * side in its own steady state, as a model's prefill runs; BENCH_TURNS=1 takes turns. */
template <class F, class G> static void time_pair(F fa, G fb, bool with_b, double *ta, double *tb)
{
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    float warm = 0.f;
    for (int i = 0; i < 20000 && (i < 3 || warm < g_warm_ms); i++) {
        warm += event_ms(fa, i, a, b);
        if (with_b)
            warm += event_ms(fb, i, a, b);
    }
    std::vector<float> va, vb;
    for (int i = 0; i < 20; i++) {
        va.push_back(event_ms(fa, i, a, b));
        if (with_b)
            vb.push_back(event_ms(fb, i, a, b));
    }
    CK(cudaGetLastError());
    cudaEventDestroy(a), cudaEventDestroy(b);
    *ta = median20(va);
    if (with_b)
        *tb = median20(vb);
}

/* time_pair of fn alone */
template <class F> static double time_ms(F fn)
{
    double t = 0;
    time_pair(fn, fn, false, &t, nullptr);
    return t;
}

static int copies_for(size_t bytes)
{
    size_t c = (256ull << 20) / (bytes ? bytes : 1) + 1;
    return (int)std::min<size_t>(c, 16);
}

/* ---------- cuBLAS BF16 and cuBLASLt FP8 ---------- */

static cublasHandle_t g_blas;
static cublasLtHandle_t g_lt;
static void *g_ltws;
static const size_t LT_WS = 64ull << 20;

static void gemm_bf16(uint16_t *y, const uint16_t *x, const uint16_t *w, int M, int N, int K)
{
    float one = 1.f, zero = 0.f;
    CB(cublasGemmEx(g_blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, CUDA_R_16BF, K, x,
                    CUDA_R_16BF, K, &zero, y, CUDA_R_16BF, N, CUBLAS_COMPUTE_32F,
                    CUBLAS_GEMM_DEFAULT));
}

struct fp8_plan {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
    bool ok;
};

static fp8_plan fp8_make(int M, int N, int K)
{
    fp8_plan p;
    memset(&p, 0, sizeof p);
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CB(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CB(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CB(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    CB(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_8F_E4M3, K, N, K));
    CB(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_8F_E4M3, K, M, K));
    CB(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_16BF, N, M, N));
    cublasLtMatmulPreference_t pref;
    CB(cublasLtMatmulPreferenceCreate(&pref));
    CB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                            &LT_WS, sizeof LT_WS));
    cublasLtMatmulHeuristicResult_t res;
    int n = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(g_lt, p.op, p.a, p.b, p.c, p.c, pref, 1,
                                                      &res, &n);
    p.ok = s == CUBLAS_STATUS_SUCCESS && n > 0;
    if (p.ok)
        p.algo = res.algo;
    cublasLtMatmulPreferenceDestroy(pref);
    return p;
}

static void fp8_run(fp8_plan &p, uint16_t *y, const uint8_t *x, const uint8_t *w)
{
    float one = 1.f, zero = 0.f;
    CB(cublasLtMatmul(g_lt, p.op, &one, w, p.a, x, p.b, &zero, y, p.c, y, p.c, &p.algo, g_ltws,
                      LT_WS, g_st));
}

static void fp8_free(fp8_plan &p)
{
    cublasLtMatrixLayoutDestroy(p.a), cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c), cublasLtMatmulDescDestroy(p.op);
}

/* ---------- linear layers ---------- */

struct shape {
    const char *name;
    int N, K, tp;
};

static void bench_linear(const shape &s, int M)
{
    const int N = s.N, K = s.K;
    int n1, n2, fb;
    FQ(kron_split(K, &n1, &n2, &fb));
    const bool decode = M <= 16;
    const size_t wq = (size_t)N * K / 2, wb = (size_t)N * K * 2, w8 = (size_t)N * K;
    const int cq = copies_for(wq), cb = copies_for(wb), c8 = copies_for(w8);
    std::vector<uint8_t *> Wq(cq), W8(c8);
    std::vector<uint16_t *> Wb(cb);
    for (int i = 0; i < cq; i++)
        Wq[i] = rand_bytes(wq, 11 + i);
    for (int i = 0; i < cb; i++)
        Wb[i] = rand_bf16((size_t)N * K, 101 + i, 0.05f);
    for (int i = 0; i < c8; i++)
        W8[i] = rand_bytes(w8, 201 + i, 0xF7); /* 0xF7: never the e4m3 NaN pattern */
    float *sw = rand_f32(N, 1e-3f, 2e-2f), *sx = rand_f32(M, 1e-2f, 1e-1f);
    uint16_t *x = rand_bf16((size_t)M * K, 7, 2.f), *y = (uint16_t *)dalloc((size_t)M * N * 2);
    uint8_t *qx = rand_bytes((size_t)M * K / 2, 5), *x8 = rand_bytes((size_t)M * K, 9, 0xF7);
    float *L = rand_f32((size_t)n1 * n1, -0.1f, 0.1f), *R = rand_f32((size_t)n2 * n2, -0.1f, 0.1f);
    CK(cudaStreamSynchronize(g_st));

    double t_gemm = time_ms([&](int r) {
        FQ(fq_w4a4_gemm_cuda(&g_ctx, y, qx, sx, 1, Wq[r % cq], sw, M, N, K, NULL));
    });
    /* one K-block at each token tile forced: 128 tokens (5 and 8 stages), 256 */
    double t_t128 = NAN, t_t128s8 = NAN, t_t256 = NAN;
    if (!decode) {
        auto forced = [&](int tile, int stages) {
            FQ(fq_w4a4_tile_config(tile, stages));
            const double t = time_ms([&](int r) {
                FQ(fq_w4a4_gemm_cuda(&g_ctx, y, qx, sx, 1, Wq[r % cq], sw, M, N, K, NULL));
            });
            FQ(fq_w4a4_tile_config(0, 8)); /* the default again */
            return t;
        };
        t_t128 = forced(128, 5), t_t128s8 = forced(128, 8), t_t256 = forced(256, 8);
    }
    /* the same GEMM with 8 K-blocks of activation scales (kblocks > 1: a checkpoint
     * calibrated with tp: 8 has them on o_proj and down_proj, at every TP degree) */
    double t_kb8 = NAN, t_kb8w = NAN, t_kb8k = NAN; /* 128-token tiles (the default), 256, k-step flushes */
    if (!decode && K % (8 * 64) == 0) {
        float *sx8 = rand_f32((size_t)M * 8, 1e-2f, 1e-1f);
        auto kb8 = [&](int tile) {
            FQ(fq_w4a4_kblocks_config(tile));
            const double t = time_ms([&](int r) {
                FQ(fq_w4a4_gemm_cuda(&g_ctx, y, qx, sx8, 8, Wq[r % cq], sw, M, N, K, NULL));
            });
            FQ(fq_w4a4_kblocks_config(128)); /* the default again */
            return t;
        };
        t_kb8 = kb8(128);
        t_kb8w = kb8(256);
        FQ(fq_w4a4_kblocks_aligned_config(0));
        t_kb8k = kb8(128);
        FQ(fq_w4a4_kblocks_aligned_config(1));
        cudaFree(sx8);
    }
    /* opt-in column (BENCH_OLD=1): the per-token transform the cuBLAS one replaced, slow */
    const bool old = getenv("BENCH_OLD") && !strcmp(getenv("BENCH_OLD"), "1");
    /* the mma.sync prefill kernel (FLATQ_GEMM_WGMMA=0), which the wgmma one replaced */
    double t_sync = decode ? NAN : time_ms([&](int r) {
        FQ(fq_w4a4_gemm_path_cuda(&g_ctx, y, qx, sx, 1, Wq[r % cq], sw, M, N, K, NULL, FQ_W4A4_PREFILL));
    });
    fq_quant_dst d = {0.98f, 0.98f, qx, sx};
    double t_quant = time_ms([&](int) {
        FQ(fq_transform_quant_cuda(&g_ctx, &d, 1, x, M, K, 1, n1, n2, L, R, 1, 4));
    });
    /* the cuBLAS transform on TF32 (the runtime's path before session 13) and in fp32 (before
     * session 12) */
    double t_qcub = NAN, t_q32 = NAN, t_qold = NAN;
    if (!decode) {
        g_ctx.transform_tc = 0;
        t_qcub = time_ms([&](int) {
            FQ(fq_transform_quant_cuda(&g_ctx, &d, 1, x, M, K, 1, n1, n2, L, R, 1, 4));
        });
        g_ctx.transform_tf32 = 0;
        t_q32 = time_ms([&](int) {
            FQ(fq_transform_quant_cuda(&g_ctx, &d, 1, x, M, K, 1, n1, n2, L, R, 1, 4));
        });
        g_ctx.transform_tf32 = 1, g_ctx.transform_tc = 1;
    }
    /* the transform the runtime runs on this input for a checkpoint calibrated with tp: 8
     * (o: M_o alone on 8 / tp blocks of [8 heads, 128]; down: T_d on 8 / tp blocks of
     * 56 × 64), which the rows above (one block, both factors) do not show: as the runtime
     * runs it, and on the cuBLAS path */
    double t_qrt = NAN, t_qrt_cub = NAN;
    const bool is_o = !strcmp(s.name, "o"), is_down = !strcmp(s.name, "down");
    if (!decode && (is_o || is_down)) {
        const int nb = 8 / s.tp, r1 = is_o ? 8 : 56, r2 = is_o ? 128 : 64;
        float *Lr = rand_f32((size_t)nb * r1 * r1, -0.1f, 0.1f);
        float *Rr = is_o ? NULL : rand_f32((size_t)nb * r2 * r2, -0.1f, 0.1f);
        float *sxr = rand_f32((size_t)M * nb, 1e-2f, 1e-1f);
        fq_quant_dst dr = {0.98f, 0.98f, qx, sxr};
        t_qrt = time_ms([&](int) {
            FQ(fq_transform_quant_cuda(&g_ctx, &dr, 1, x, M, K, nb, r1, r2, Lr, Rr, nb, 4));
        });
        g_ctx.transform_tc = 0;
        t_qrt_cub = time_ms([&](int) {
            FQ(fq_transform_quant_cuda(&g_ctx, &dr, 1, x, M, K, nb, r1, r2, Lr, Rr, nb, 4));
        });
        g_ctx.transform_tc = 1;
        cudaFree(Lr), cudaFree(Rr), cudaFree(sxr);
    }
    if (!decode && old) {
        g_ctx.transform_gemm = 0;
        t_qold = time_ms([&](int) {
            FQ(fq_transform_quant_cuda(&g_ctx, &d, 1, x, M, K, 1, n1, n2, L, R, 1, 4));
        });
        g_ctx.transform_gemm = 1;
    }
    /* the headline pair: the linear and cuBLAS BF16, each in its own steady state (or in
     * turns: BENCH_TURNS=1) */
    double t_lin = 0, t_bf = 0;
    auto lin = [&](int r) {
        FQ(fq_transform_quant_cuda(&g_ctx, &d, 1, x, M, K, 1, n1, n2, L, R, 1, 4));
        FQ(fq_w4a4_gemm_cuda(&g_ctx, y, qx, sx, 1, Wq[r % cq], sw, M, N, K, NULL));
    };
    auto bf = [&](int r) { gemm_bf16(y, x, Wb[r % cb], M, N, K); };
    if (g_turns) {
        time_pair(lin, bf, true, &t_lin, &t_bf);
    } else {
        t_lin = time_ms(lin);
        t_bf = time_ms(bf);
    }
    fp8_plan p8 = fp8_make(M, N, K);
    double t_f8 = p8.ok ? time_ms([&](int r) { fp8_run(p8, y, x8, W8[r % c8]); }) : NAN;
    fp8_free(p8);

    const double flop = 2.0 * M * N * K;
    if (decode) {
        double bytes = wq + (double)M * K / 2 + (double)M * N * 2 + N * 4.0;
        double floor_ms = bytes / g_bw * 1e3;
        out("%-9s tp%d %6d %6d %6d | %8.4f %7.0f GB/s %5.1f%% | %8.4f | %8.4f | %8.4f %8.4f | %5.2fx %5.2fx | %5.2fx %5.2fx\n",
            s.name, s.tp, M, N, K, t_gemm, bytes / t_gemm / 1e6, 100 * floor_ms / t_gemm,
            t_quant, t_lin, t_bf, t_f8, t_bf / t_gemm, t_f8 / t_gemm, t_bf / t_lin, t_f8 / t_lin);
    } else {
        out("%-9s tp%d %6d %6d %6d | %8.3f %7.0f TOPS %5.1f%% | %8.3f | %8.3f | %8.3f %8.3f | %5.2fx %5.2fx | %5.2fx %5.2fx  (bf16 %4.0f%% of peak) | tiles 128 %8.3f, 128 8-stage %8.3f, 256 %8.3f | mma.sync %8.3f (wgmma %5.2fx of it) | 8 K-blocks %8.3f (%5.2fx of bf16), 256-token tiles %8.3f, k-step flushes %8.3f | quant cuBLAS tf32 %8.3f (fused %5.2fx of it), fp32 %8.3f | runtime's tp-8 transform %8.3f (cuBLAS %8.3f) | quant per-token %8.3f\n",
            s.name, s.tp, M, N, K, t_gemm, flop / t_gemm / 1e9, 100 * flop / t_gemm / 1e9 / (PEAK_INT8 / 1e12),
            t_quant, t_lin, t_bf, t_f8, t_bf / t_gemm, t_f8 / t_gemm, t_bf / t_lin, t_f8 / t_lin,
            100 * flop / t_bf / 1e9 / (PEAK_BF16 / 1e12), t_t128, t_t128s8, t_t256, t_sync, t_sync / t_gemm, t_kb8, t_bf / t_kb8, t_kb8w, t_kb8k, t_qcub,
            t_qcub / t_quant, t_q32, t_qrt, t_qrt_cub, t_qold);
    }
    for (auto p : Wq) cudaFree(p);
    for (auto p : Wb) cudaFree(p);
    for (auto p : W8) cudaFree(p);
    cudaFree(sw), cudaFree(sx), cudaFree(x), cudaFree(y), cudaFree(qx), cudaFree(x8), cudaFree(L), cudaFree(R);
}

/* The decode GEMM's shapes side by side (issue 7): the one-tile kernel with 2 or 4 16-byte
 * loads per row in flight and 8 or 16 warps per CTA (2 loads, 8 warps: the v2 kernel), the
 * automatic choice, and for M > 16 the prefill kernel that took those rows before. */
static void bench_decode_shapes(const shape &s, int M)
{
    const int N = s.N, K = s.K;
    const size_t wq = (size_t)N * K / 2, wb = (size_t)N * K * 2;
    const int cq = copies_for(wq), cb = copies_for(wb);
    std::vector<uint8_t *> Wq(cq);
    std::vector<uint16_t *> Wb(cb);
    for (int i = 0; i < cq; i++)
        Wq[i] = rand_bytes(wq, 11 + i);
    for (int i = 0; i < cb; i++)
        Wb[i] = rand_bf16((size_t)N * K, 101 + i, 0.05f);
    float *sw = rand_f32(N, 1e-3f, 2e-2f), *sx = rand_f32(M, 1e-2f, 1e-1f);
    uint16_t *x = rand_bf16((size_t)M * K, 7, 2.f), *y = (uint16_t *)dalloc((size_t)M * N * 2);
    uint8_t *qx = rand_bytes((size_t)M * K / 2, 5);
    CK(cudaStreamSynchronize(g_st));
    auto gemm = [&](int path) {
        return time_ms([&](int r) {
            FQ(fq_w4a4_gemm_path_cuda(&g_ctx, y, qx, sx, 1, Wq[r % cq], sw, M, N, K, NULL, path));
        });
    };
    double t[5] = {NAN, NAN, NAN, NAN, NAN};
    const int cfg[4][2] = {{2, 8}, {2, 16}, {4, 8}, {4, 16}};
    if (M <= 16)
        for (int c = 0; c < 4; c++) {
            FQ(fq_w4a4_decode_config(cfg[c][0], cfg[c][1]));
            t[c] = gemm(FQ_W4A4_DECODE);
        }
    FQ(fq_w4a4_decode_config(0, 0));
    double t_auto = gemm(FQ_W4A4_AUTO);
    double t_pf = M > 16 ? gemm(FQ_W4A4_PREFILL) : NAN;
    /* the wgmma kernel at these sizes (128-token tiles, half of them padding at M = 64):
     * tensor cores against the decode kernel's CUDA-core unpacking, for batch 32–64 */
    double t_wg = M > 16 ? gemm(FQ_W4A4_WGMMA) : NAN;
    double t_bf = time_ms([&](int r) { gemm_bf16(y, x, Wb[r % cb], M, N, K); });
    double bytes = wq + (double)M * K / 2 + (double)M * N * 2 + N * 4.0;
    double floor_ms = bytes / g_bw * 1e3;
    out("%-8s tp%d %3d %6d %6d | %7.4f %7.4f %7.4f %7.4f | %7.4f %5.1f%% | %7.4f | %7.4f | %7.4f | %5.2fx | wgmma %5.2fx\n",
        s.name, s.tp, M, N, K, t[0], t[1], t[2], t[3], t_auto, 100 * floor_ms / t_auto, t_pf,
        t_wg, t_bf, t_bf / t_auto, t_bf / t_wg);
    for (auto p : Wq) cudaFree(p);
    for (auto p : Wb) cudaFree(p);
    cudaFree(sw), cudaFree(sx), cudaFree(x), cudaFree(y), cudaFree(qx);
}

/* ---------- attention: KV4 against the same kernel on a bf16 cache, tensor-core and
 * CUDA-core kernels (ctx.attn_tc) ---------- */

/* n_q = 1: decode (bytes against HBM); n_q = ctx: a causal prefill of the whole context
 * (FLOPs: 4·heads·dh per query-position pair, half the square) */
static void bench_attention(int batch, int ctx, int n_q)
{
    const int kv = 8, heads = 64, dh = 128;
    const size_t slots = (size_t)batch * kv * ctx;
    const size_t b4 = slots * (dh / 2 + 4) * 2, b16 = slots * dh * 2 * 2;
    const int c4 = copies_for(b4), c16 = copies_for(b16);
    std::vector<fq_kv4_cache> C4(c4);
    std::vector<uint16_t *> K16(c16), V16(c16);
    for (int i = 0; i < c4; i++) {
        C4[i] = {batch, kv, ctx, dh, rand_bytes(slots * dh / 2, 300 + i), rand_bytes(slots * dh / 2, 400 + i),
                 (uint16_t *)dalloc(slots * 4), (uint16_t *)dalloc(slots * 4)};
        /* (scale, zero) pairs: fp16 0.05 and 8 */
        std::vector<uint16_t> sz(slots * 2);
        for (size_t j = 0; j < slots; j++)
            sz[2 * j] = 0x2A66, sz[2 * j + 1] = 0x4800;
        CK(cudaMemcpy(C4[i].k_sz, sz.data(), slots * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(C4[i].v_sz, sz.data(), slots * 4, cudaMemcpyHostToDevice));
    }
    for (int i = 0; i < c16; i++)
        K16[i] = rand_bf16(slots * dh, 500 + i, 0.5f), V16[i] = rand_bf16(slots * dh, 600 + i);
    const size_t nq = (size_t)batch * n_q * heads * dh;
    uint16_t *q = rand_bf16(nq, 77), *o = (uint16_t *)dalloc(nq * 2);
    std::vector<int> lens(batch, ctx);
    CK(cudaStreamSynchronize(g_st));
    double t[2][2]; /* [tensor cores][bf16 kv] */
    for (int tc = 0; tc < 2; tc++) {
        g_ctx.attn_tc = tc;
        t[tc][0] = time_ms([&](int r) {
            FQ(fq_attention_kv4_cuda(&g_ctx, o, q, &C4[r % c4], n_q, lens.data(), heads));
        });
        t[tc][1] = time_ms([&](int r) {
            FQ(fq_attention_bf16kv_cuda(&g_ctx, o, q, K16[r % c16], V16[r % c16], batch, kv, ctx,
                                        dh, n_q, lens.data(), heads));
        });
    }
    g_ctx.attn_tc = 1;
    if (n_q == 1) {
        for (int tc = 1; tc >= 0; tc--)
            out("attn decode %s b%-2d ctx %6d | kv4 %8.4f ms %6.0f GB/s %5.1f%% | bf16-kv %8.4f ms %6.0f GB/s %5.1f%% | %5.2fx\n",
                tc ? "tensor-core" : "cuda-core  ", batch, ctx, t[tc][0], b4 / t[tc][0] / 1e6,
                100 * (b4 / g_bw * 1e3) / t[tc][0], t[tc][1], b16 / t[tc][1] / 1e6,
                100 * (b16 / g_bw * 1e3) / t[tc][1], t[tc][1] / t[tc][0]);
        out("attn decode b%-2d ctx %6d | kv4 tensor-core vs kv4 cuda-core %5.2fx, vs bf16-kv tensor-core %5.2fx, vs bf16-kv cuda-core %5.2fx\n",
            batch, ctx, t[0][0] / t[1][0], t[1][1] / t[1][0], t[0][1] / t[1][0]);
    } else {
        const double flop = 4.0 * heads * dh * batch * ((double)n_q * (n_q + 1) / 2);
        for (int tc = 1; tc >= 0; tc--)
            out("attn prefill %s b%-2d ctx %6d | kv4 %8.3f ms %6.1f TFLOP/s | bf16-kv %8.3f ms %6.1f TFLOP/s | %5.2fx\n",
                tc ? "tensor-core" : "cuda-core  ", batch, ctx, t[tc][0], flop / t[tc][0] / 1e9,
                t[tc][1], flop / t[tc][1] / 1e9, t[tc][1] / t[tc][0]);
        out("attn prefill b%-2d ctx %6d | tensor-core vs cuda-core: kv4 %5.1fx, bf16-kv %5.1fx\n",
            batch, ctx, t[0][0] / t[1][0], t[0][1] / t[1][1]);
    }
    for (auto &c : C4)
        cudaFree(c.k_codes), cudaFree(c.v_codes), cudaFree(c.k_sz), cudaFree(c.v_sz);
    for (int i = 0; i < c16; i++)
        cudaFree(K16[i]), cudaFree(V16[i]);
    cudaFree(q), cudaFree(o);
}

int main(int argc, char **argv)
{
    const char *logpath = argc > 1 ? argv[1] : NULL;
    const char *only = argc > 2 ? argv[2] : "all";
    /* optional row filter of the linear rows: layer name (or all), tp (0: all), M */
    const char *f_name = argc > 3 && strcmp(argv[3], "all") ? argv[3] : NULL;
    if (getenv("BENCH_WARM_MS"))
        g_warm_ms = (float)atof(getenv("BENCH_WARM_MS"));
    g_turns = getenv("BENCH_TURNS") && !strcmp(getenv("BENCH_TURNS"), "1");
    const int f_tp = argc > 4 ? atoi(argv[4]) : 0, f_M = argc > 5 ? atoi(argv[5]) : 0;
    if (logpath)
        g_log = fopen(logpath, "w");
    FQ(fq_cuda_init(&g_ctx, 0));
    g_ctx.transform_tf32 = 1; /* as the inference runtime sets them */
    g_ctx.transform_tc = 1;
    g_st = (cudaStream_t)g_ctx.stream;
    g_blas = (cublasHandle_t)g_ctx.cublas;
    CB(cublasSetStream(g_blas, g_st));
    CB(cublasLtCreate(&g_lt));
    g_ltws = dalloc(LT_WS);
    char name[256];
    FQ(fq_cuda_device_name(&g_ctx, name, sizeof name));
    {
        size_t n = 1ull << 30;
        void *a = dalloc(n), *b = dalloc(n);
        CK(cudaMemsetAsync(a, 1, n, g_st));
        double t = time_ms([&](int) { CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, g_st)); });
        g_bw = 2.0 * n / (t * 1e-3);
        cudaFree(a), cudaFree(b);
    }
    out("device: %s; measured copy bandwidth %.0f GB/s (read+write); rooflines INT8 %.0f, BF16 %.0f TFLOP/s\n",
        name, g_bw / 1e9, PEAK_INT8 / 1e12, PEAK_BF16 / 1e12);
    if (!strcmp(only, "all") || !strcmp(only, "attn")) {
        for (int b : {1, 8})
            for (int ctx : {2048, 8192, 16384, 32768})
                bench_attention(b, ctx, 1);
        for (int ctx : {2048, 8192})
            bench_attention(1, ctx, ctx);
    }
    const shape shapes[] = {
        {"qkv", 10240, 8192, 1}, {"o", 8192, 8192, 1}, {"gate_up", 57344, 8192, 1}, {"down", 8192, 28672, 1},
        {"qkv", 5120, 8192, 2},  {"o", 8192, 4096, 2}, {"gate_up", 28672, 8192, 2}, {"down", 8192, 14336, 2},
        {"qkv", 2560, 8192, 4},  {"o", 8192, 2048, 4}, {"gate_up", 14336, 8192, 4}, {"down", 8192, 7168, 4},
    };
    if (!strcmp(only, "all") || !strcmp(only, "decode")) {
        out("decode GEMM: layer tp M N K | ms with (loads, warps) = (2,8) v2, (2,16), (4,8), (4,16) | auto ms, %% of HBM floor | mma.sync prefill kernel ms | wgmma kernel ms | cublas bf16 ms | auto vs bf16 | wgmma vs bf16\n");
        for (int M : {1, 4, 8, 16, 32, 64})
            for (const shape &s : shapes)
                bench_decode_shapes(s, M);
    }
    const bool prefill_only = !strcmp(only, "prefill"); /* the linear rows of M >= 2048 */
    if (!strcmp(only, "all") || !strcmp(only, "linear") || prefill_only) {
        out("decode rows: layer tp M N K | w4a4 gemm ms, GB/s, %% of HBM floor | quant ms | quant+gemm ms | cublas bf16 ms, cublasLt fp8 ms | gemm speedup vs bf16, fp8 | linear speedup vs bf16, fp8\n");
        out("prefill rows: the same with TOPS and %% of INT8 peak (gemm: the automatic kernel, wgmma, the int8 unpack of the activations included; quant: the transform + quantize as the runtime runs it, fused on TF32 tensor cores where the shape allows), then the same GEMM with its token tile forced (128 tokens, 5 and 8 stages, 256), the mma.sync kernel (ms), the wgmma GEMM with 8 K-blocks of activation scales (ms; 128-token tiles, the default, 256, and flushes at the k-step), the transform on cuBLAS TF32 and fp32 GEMMs (ms), the transform the runtime runs on o's and down's inputs for a tp: 8 checkpoint (ms; M_o alone on [8 heads, 128] blocks, T_d on 56 x 64 blocks; as the runtime runs it, and on cuBLAS), and with BENCH_OLD=1 the per-token transform (ms; nan: not timed)\n");
        const int Ms[] = {1, 4, 16, 2048, 4096, 8192, 16384};
        for (int M : Ms)
            for (const shape &s : shapes)
                if ((!prefill_only || M >= 2048) && (!f_name || !strcmp(f_name, s.name)) &&
                    (!f_tp || f_tp == s.tp) && (!f_M || f_M == M))
                    bench_linear(s, M);
    }
    fq_cuda_free_ctx(&g_ctx);
    return 0;
}
