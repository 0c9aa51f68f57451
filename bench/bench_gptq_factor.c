/* bench_gptq_factor.c — the GPTQ pass's float64 factorisations of one linear's damped
 * Hessian (Cholesky, its inverse, the Cholesky of that: core/gptq.c), on the host's LAPACK
 * against the GPU's cuSOLVER (kernels/gptq_cuda.h), for input sizes n of LLaMA-3-70B's
 * linears (8192: q/k/v/o/gate/up; 28672: down). Session 10 measured 163 s of host
 * factorisations for one 70B layer on 16 threads; this table says where that goes and
 * what the GPU makes of it.
 *
 * Floor: potrf n³/3 + potri 2n³/3 + potrf n³/3 = 4n³/3 float64 flops: 0.73 TFLOP at 8192,
 * 31 TFLOP at 28672, ≈ 1 s at the H100/H200's ~60 TFLOP/s of FP64 tensor cores.
 *
 *   build/bench/bench_gptq_factor [--host-max N] n...   (default n: 4096 8192 28672; the
 *   host runs only n ≤ --host-max, default 8192: 28672 takes minutes there)
 * The matrix: a random symmetric diagonally dominant one (the time depends on n only).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "gptq.h"

#ifdef FLATQ_HAVE_CUDA
#include "kernels/gptq_cuda.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* H [n, n] float: 1 + |r|/n off the diagonal's scale, n on it */
static float *spd(int n, unsigned seed)
{
    float *h = malloc(sizeof(float) * (size_t)n * n);
    if (!h)
        return NULL;
    srand(seed);
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) {
            float v = i == j ? (float)n : (float)rand() / (float)RAND_MAX - 0.5f;
            h[(size_t)i * n + j] = h[(size_t)j * n + i] = v;
        }
    return h;
}

int main(int argc, char **argv)
{
    int host_max = 8192, ns[16], nn = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--host-max") && i + 1 < argc)
            host_max = atoi(argv[++i]);
        else if (nn < 16)
            ns[nn++] = atoi(argv[i]);
    }
    if (!nn) {
        ns[0] = 4096, ns[1] = 8192, ns[2] = 28672;
        nn = 3;
    }
    fq_cuda_ctx ctx;
    char why[256];
    if (fq_cuda_init(&ctx, 0) != FQ_OK || !gptq_cuda_have_solver(why)) {
        fprintf(stderr, "bench_gptq_factor: %s\n", gptq_cuda_have_solver(why) ? fq_errmsg() : why);
        return 1;
    }
    printf("solver: %s\n", why);
    printf("%8s | %12s | %12s | %8s | %s\n", "n", "host s", "GPU s", "speedup", "GPU TFLOP/s (4n^3/3)");
    for (int k = 0; k < nn; k++) {
        int n = ns[k];
        float *H = spd(n, 1 + (unsigned)k), w[2] = {0.5f, -0.25f}, *wrow = calloc((size_t)n, sizeof(float));
        float *dU = NULL;
        if (!H || !wrow || fq_cuda_alloc(&dU, (size_t)n * n, "factor")) {
            fprintf(stderr, "bench_gptq_factor: n %d: %s\n", n, fq_errmsg());
            return 1;
        }
        wrow[0] = w[0], wrow[n - 1] = w[1];
        gptq_opts o = {0.01, 128, 0, 0};
        double th = -1;
        if (n <= host_max) {
            gptq_plan p;
            double t0 = now();
            if (gptq_plan_make(&p, wrow, 1, n, H, 4, &o) != FQ_OK) {
                fprintf(stderr, "%s\n", fq_errmsg());
                return 1;
            }
            th = now() - t0;
            gptq_plan_free(&p);
        }
        gptq_plan p;
        double t0 = now();
        if (gptq_plan_make_ex(&p, wrow, 1, n, H, 4, &o, 0) != FQ_OK) {
            fprintf(stderr, "%s\n", fq_errmsg());
            return 1;
        }
        double t1 = now();
        if (gptq_inverse_factor_cuda(&ctx, p.Hd, n, p.damp, dU) != FQ_OK) {
            fprintf(stderr, "%s\n", fq_errmsg());
            return 1;
        }
        double tg = now() - t1, tprep = t1 - t0;
        gptq_plan_free(&p);
        char hs[32] = "(not run)", sp[32] = "-";
        if (th >= 0) {
            snprintf(hs, sizeof hs, "%.2f", th);
            snprintf(sp, sizeof sp, "%.0fx", th / (tg + tprep));
        }
        printf("%8d | %12s | %8.2f (+%.2f host prep) | %8s | %.1f\n", n, hs, tg, tprep, sp,
               4.0 / 3.0 * n * (double)n * n / tg / 1e12);
        fflush(stdout);
        fq_cuda_free(dU);
        free(H);
        free(wrow);
    }
    fq_cuda_free_ctx(&ctx);
    return 0;
}
#else
int main(void)
{
    fprintf(stderr, "bench_gptq_factor: built without the CUDA backend\n");
    return 1;
}
#endif
