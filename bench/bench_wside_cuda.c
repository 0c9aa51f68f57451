/* bench_wside_cuda.c — the weight side of a FlatQuant calibration step, op by op, on the
 * GPU: for the 70B-shaped linears (gate/up [28672, 8192] with factors 64 × 128, down
 * [8192, 28672] with 224 × 128, q/o [8192, 8192] with 64 × 128) each op that
 * kernels/fq_layer_cuda.cu runs on a weight every step, timed alone with CUDA events
 * (median of --reps runs after one warm-up, no synchronisation between the ops' kernels):
 * ⊘ c, the Kronecker forward, the LWC quantizer forward and backward, the Kronecker
 * backward (factor and input gradients; once more with each factor gradient as one SGEMM
 * instead of split over K, ctx->tallk_split = 0, the A/B row not summed), the
 * channel-scale backward. Each row
 * gives the bytes a single pass would move (read + write, fp32) and the FLOPs of the
 * GEMMs, so the time can be read against HBM bandwidth and the SGEMM rate.
 *
 *   build/bench/bench_wside_cuda [--reps N]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "error.h"
#include "kernels/flatq_cuda.h"
#include "kron.h"

#define DIE(what)                                                                                \
    do {                                                                                         \
        fprintf(stderr, "bench_wside_cuda: %s: %s\n", what, fq_errmsg());                       \
        exit(1);                                                                                 \
    } while (0)

typedef struct {
    const char *name;
    int rows, n1, n2;
} wshape;

static float *dev_random(fq_cuda_ctx *ctx, size_t n, float scale, uint64_t seed)
{
    float *h = malloc(n * sizeof(float)), *d = NULL;
    if (!h) {
        fprintf(stderr, "bench_wside_cuda: out of host memory\n");
        exit(1);
    }
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        h[i] = scale * (float)((double)((s * 2685821657736338717ull) >> 11) / 9007199254740992.0 - 0.5);
    }
    if (fq_cuda_alloc(&d, n, "bench buffer") || fq_cuda_upload(ctx, d, h, n))
        DIE("upload");
    free(h);
    return d;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

enum { OP_CHSCALE_FWD, OP_KRON_FWD, OP_LWC_FWD, OP_LWC_BWD, OP_KRON_BWD_ONE_GEMM,
       OP_KRON_BWD_ALL, OP_CHSCALE_BWD, OP_STEP_END, /* the parts of kron, not summed: */
       OP_R_PRODUCT = OP_STEP_END, OP_L_BATCHED, OP_L_MID, OP_GR_TALLK, OP_N };
static const char *const op_names[OP_N] = {
    "chscale fwd (w / c)", "kron fwd", "LWC quant fwd", "LWC quant bwd",
    "kron bwd, factor g 1 SGEMM", "kron bwd (g_L, g_R, g_x)", "chscale bwd (g_w, g_c)",
    "  part: X R, one SGEMM", "  part: L^T Z, batched", "  part: L^T Z_mid, one GEMM",
    "  part: g_R = X^T G, tall K"};

typedef struct {
    fq_cuda_ctx *ctx;
    const wshape *sh;
    float *w, *w1, *wp, *wh, *wsc, *g0, *g1, *g2, *c, *gc, *L, *R, *gL, *gR, *a, *b, *ga, *gb,
        *work;
} wside;

static int run_op(wside *s, int op)
{
    const int rows = s->sh->rows, n1 = s->sh->n1, n2 = s->sh->n2, n = n1 * n2;
    switch (op) {
    case OP_CHSCALE_FWD:
        return chscale_weight_fwd_cuda(s->ctx, s->w1, s->w, s->c, rows, n);
    case OP_KRON_FWD:
        return kron_fwd_cuda(s->ctx, s->wp, s->w1, rows, n1, n2, s->L, s->R, s->work);
    case OP_LWC_FWD:
        return quant_weight_lwc_fwd_cuda(s->ctx, s->wh, s->wsc, s->wp, rows, n, 4, s->a, s->b);
    case OP_LWC_BWD:
        return quant_weight_lwc_bwd_cuda(s->ctx, s->g1, s->ga, s->gb, s->g0, s->wp, s->wsc, rows,
                                         n, 4, s->a, s->b);
    case OP_KRON_BWD_ONE_GEMM: { /* the same op with the factor gradients as one SGEMM each */
        s->ctx->tallk_split = 0;
        int rc = kron_bwd_cuda(s->ctx, s->g2, s->gL, s->gR, s->g1, s->w1, rows, n1, n2, s->L,
                               s->R, s->work);
        s->ctx->tallk_split = 1;
        return rc;
    }
    case OP_KRON_BWD_ALL:
        return kron_bwd_cuda(s->ctx, s->g2, s->gL, s->gR, s->g1, s->w1, rows, n1, n2, s->L,
                             s->R, s->work);
    case OP_CHSCALE_BWD:
        return chscale_weight_bwd_cuda(s->ctx, s->g0, s->gc, s->g2, s->w, s->c, rows, n);
    case OP_R_PRODUCT:
        return fq_gemm_strided_exact_cuda(s->ctx, 0, 0, rows * n1, n2, n2, 1.0f, s->w1, n2, 0,
                                          s->R, n2, 0, 0.0f, s->g1, n2, 0, 1, op_names[op]);
    case OP_L_BATCHED:
        return fq_gemm_strided_exact_cuda(s->ctx, 1, 0, n1, n2, n1, 1.0f, s->L, n1, 0, s->g1, n2,
                                          (long long)n, 0.0f, s->g2, n2, (long long)n, rows,
                                          op_names[op]);
    case OP_L_MID: /* the same product if Z were stored [n1, rows·n2] */
        return fq_gemm_strided_exact_cuda(s->ctx, 1, 0, n1, rows * n2, n1, 1.0f, s->L, n1, 0,
                                          s->g1, rows * n2, 0, 0.0f, s->g2, rows * n2, 0, 1,
                                          op_names[op]);
    default:
        return fq_gemm_strided_exact_cuda(s->ctx, 1, 0, n2, n2, rows * n1, 1.0f, s->w1, n2, 0,
                                          s->g1, n2, 0, 1.0f, s->gR, n2, 0, 1, op_names[op]);
    }
}

static void bench_shape(fq_cuda_ctx *ctx, const wshape *sh, int reps)
{
    const size_t n = (size_t)sh->n1 * sh->n2, nw = (size_t)sh->rows * n;
    wside s;
    memset(&s, 0, sizeof s);
    s.ctx = ctx;
    s.sh = sh;
    s.w = dev_random(ctx, nw, 0.02f, 1);
    s.g0 = dev_random(ctx, nw, 1e-3f, 2);
    s.c = dev_random(ctx, n, 0.5f, 3);
    s.L = dev_random(ctx, (size_t)sh->n1 * sh->n1, 0.2f, 4);
    s.R = dev_random(ctx, (size_t)sh->n2 * sh->n2, 0.2f, 5);
    s.a = dev_random(ctx, (size_t)sh->rows, 1.0f, 6);
    s.b = dev_random(ctx, (size_t)sh->rows, 1.0f, 7);
    if (fq_cuda_alloc(&s.w1, nw, "w1") || fq_cuda_alloc(&s.wp, nw, "wp") ||
        fq_cuda_alloc(&s.wh, nw, "wh") || fq_cuda_alloc(&s.g1, nw, "g1") ||
        fq_cuda_alloc(&s.g2, nw, "g2") || fq_cuda_alloc(&s.wsc, (size_t)sh->rows, "wsc") ||
        fq_cuda_alloc(&s.gc, n, "gc") || fq_cuda_alloc(&s.ga, (size_t)sh->rows, "ga") ||
        fq_cuda_alloc(&s.gb, (size_t)sh->rows, "gb") ||
        fq_cuda_alloc(&s.gL, (size_t)sh->n1 * sh->n1, "gL") ||
        fq_cuda_alloc(&s.gR, (size_t)sh->n2 * sh->n2, "gR") ||
        fq_cuda_alloc(&s.work, (size_t)kron_bwd_work(sh->rows, (int)n) + 1, "work"))
        DIE("alloc");
    /* c away from 0 so ⊘ c stays finite */
    if (fq_cuda_fill(ctx, s.c, 1.25f, n) || fq_cuda_fill(ctx, s.gc, 0, n) ||
        fq_cuda_fill(ctx, s.gL, 0, (size_t)sh->n1 * sh->n1) ||
        fq_cuda_fill(ctx, s.gR, 0, (size_t)sh->n2 * sh->n2) ||
        fq_cuda_fill(ctx, s.ga, 0, (size_t)sh->rows) || fq_cuda_fill(ctx, s.gb, 0, (size_t)sh->rows))
        DIE("fill");
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    float *t = malloc(sizeof(float) * (size_t)reps);
    const double gb = (double)nw * 4 / 1e9;
    /* GEMM FLOPs per op: the R product 2·rows·n·n2, the batched L product 2·rows·n·n1 */
    const double fr = 2.0 * (double)nw * sh->n2, fl = 2.0 * (double)nw * sh->n1;
    const double flops[OP_N] = {0, fr + fl, 0, 0, fr + fl + fl + fr + fr, fr + fl + fl + fr + fr,
                                0, fr, fl, fl, fr};
    const double passes[OP_N] = {2, 4, 2, 3, 10, 10, 4, 2, 2, 2, 2};
    printf("\n== %s: [%d, %d] = %d x %d factors, %.2f GB per fp32 pass\n", sh->name, sh->rows,
           (int)n, sh->n1, sh->n2, gb);
    printf("%-26s %9s %12s %10s %10s\n", "op", "ms", "passes(GB)", "GB/s", "TFLOP/s");
    double total = 0;
    for (int op = 0; op < OP_N; op++) {
        if (run_op(&s, op) || fq_cuda_sync(ctx))
            DIE(op_names[op]);
        for (int r = 0; r < reps; r++) {
            cudaEventRecord(e0, (cudaStream_t)ctx->stream);
            if (run_op(&s, op))
                DIE(op_names[op]);
            cudaEventRecord(e1, (cudaStream_t)ctx->stream);
            cudaEventSynchronize(e1);
            cudaEventElapsedTime(&t[r], e0, e1);
        }
        qsort(t, (size_t)reps, sizeof(float), cmp_float);
        double ms = t[reps / 2];
        if (op != OP_KRON_BWD_ONE_GEMM && op < OP_STEP_END) /* A/B and part rows: not summed */
            total += ms;
        printf("%-26s %9.3f %12.2f %10.0f %10.1f\n", op_names[op], ms, passes[op] * gb,
               passes[op] * gb / (ms * 1e-3), flops[op] / (ms * 1e-3) / 1e12);
    }
    printf("%-26s %9.3f  (rows above the parts)\n", "sum (the step's weight side)", total);
    free(t);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    float *bufs[] = {s.w, s.w1, s.wp, s.wh, s.wsc, s.g0, s.g1, s.g2, s.c, s.gc, s.L, s.R,
                     s.gL, s.gR, s.a, s.b, s.ga, s.gb, s.work};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        fq_cuda_free(bufs[i]);
}

int main(int argc, char **argv)
{
    int reps = 9;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--reps N]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1 || reps > 1000) {
        fprintf(stderr, "bench_wside_cuda: --reps %d (expected 1..1000)\n", reps);
        return 2;
    }
    int count = 0;
    if (fq_cuda_device_count(&count) || count == 0) {
        fprintf(stderr, "bench_wside_cuda: NOT RUN: no CUDA device visible\n");
        return 77;
    }
    fq_cuda_ctx ctx;
    if (fq_cuda_init(&ctx, 0))
        DIE("fq_cuda_init");
    static const wshape shapes[] = {{"70B gate/up", 28672, 64, 128},
                                    {"70B down", 8192, 224, 128},
                                    {"70B q/o", 8192, 64, 128}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        bench_shape(&ctx, &shapes[i], reps);
    fq_cuda_free_ctx(&ctx);
    return 0;
}
