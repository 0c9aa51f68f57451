/* bench_layer_step_cuda.c — one FlatQuant calibration step on the GPU, per layer shape and
 * GEMM math mode: flatq-llama-16m (d 384, h 6, g 2, f 1024), LLaMA-3-8B (d 4096, h 32, g 8,
 * f 14336) and LLaMA-3-70B (d 8192, h 64, g 8, f 28672) shaped layers, W4A4KV4, batch
 * 4 × 2048 tokens, random weights and inputs with four 50× outlier input channels.
 *
 * For each shape: (1) one fwd + loss + bwd per math mode on the same parameters, the loss
 * and gradient groups compared with the fp32 mode (the accuracy cost of tensor cores on a
 * realistic shape); (2) a profiled step per mode, time by op group (each group boundary
 * synchronises, so the groups sum to a bit more than a plain step); (3) the real loop,
 * calibrate_layer_cuda with 2 epochs of --steps steps (host AdamW and factor math
 * included), timed between the two epoch logs: ms per step, the 480-step layer time, the
 * achieved TFLOP/s of the linears (6·params·tokens per step) and the peak device memory.
 *
 * Each epoch's mean loss is printed (the outlier-divergence watch); --epochs E runs E
 * epochs of --steps steps (480 steps = --steps 32 --epochs 15), --loop-only skips (1)+(2),
 * --split-transforms runs the transforms' GEMMs as split TF32 in the tensor-core modes
 * (measured slower; default: SGEMM). bf16 = the linears on bf16 codes.
 *
 *   build/bench/bench_layer_step_cuda [--shapes 16m,8b,70b] [--math fp32,tf32,bf16]
 *                                     [--steps N] [--seq S] [--epochs E] [--loop-only]
 *                                     [--split-transforms]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "fq_layer.h"

#ifdef FLATQ_HAVE_CUDA
#include "kernels/fq_layer_cuda.h"
#include "worker/calibrate_layer_cuda.h"

typedef struct {
    const char *name;
    int d, h, g, dh, f;
} shape;

static const shape shapes[] = {
    {"16m", 384, 6, 2, 64, 1024},
    {"8b", 4096, 32, 8, 128, 14336},
    {"70b", 8192, 64, 8, 128, 28672},
};
static const char *math_names[3] = {"fp32", "tf32", "bf16"};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Uniform with standard deviation sd from a xorshift generator: fast enough for the 0.86 G
 * weights of a 70B layer. */
static void fill(float *p, size_t n, uint64_t *s, double sd)
{
    const double a = sd * 1.7320508075688772 / 9007199254740992.0;
    for (size_t i = 0; i < n; i++) {
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        double u = (double)((*s * 2685821657736338717ull) >> 11);
        p[i] = (float)(a * (2.0 * u - 9007199254740992.0));
    }
}

static float *hbuf(size_t n)
{
    float *p = malloc(n * sizeof(float));
    if (!p) {
        fprintf(stderr, "bench: out of host memory (%zu floats)\n", n);
        exit(1);
    }
    return p;
}

typedef struct {
    double t[64];
    int n, steps;
    const char *math;
} epoch_times;

/* Epoch end: the time, and the epoch's mean loss (the outlier-divergence watch). */
static void on_epoch(void *ctx, const calib_epoch_log *lg)
{
    epoch_times *et = ctx;
    if (et->n < 64)
        et->t[et->n++] = now();
    printf("  %s epoch %2d: mean MSE %.6e, lr %.3e, t %.2f s\n", et->math, lg->epoch,
           lg->mse_sum / et->steps, lg->lr_transform, et->n > 1 ? et->t[et->n - 1] - et->t[0] : 0.0);
    fflush(stdout);
}

static double rel(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

#define PROF_REPS 3

#define DIE(what)                                                                                \
    do {                                                                                         \
        fprintf(stderr, "bench: %s: %s\n", what, fq_errmsg());                                   \
        exit(1);                                                                                 \
    } while (0)

static void bench_shape(fq_cuda_ctx *ctx, const shape *sh, const int *maths, int nmath,
                        int steps, int seq, int epochs, int loop_only)
{
    llama_config c;
    memset(&c, 0, sizeof c);
    c.hidden = sh->d;
    c.intermediate = sh->f;
    c.n_layers = 1;
    c.n_heads = sh->h;
    c.n_kv_heads = sh->g;
    c.head_dim = sh->dh;
    c.vocab = 32;
    c.max_pos = seq;
    c.rms_eps = 1e-5;
    c.rope_theta = 500000;
    c.bos_id = c.eos_id = -1;
    const int B = 4, N = B * seq, d = sh->d;
    uint64_t s = 0x9E3779B97F4A7C15ull;
    llama_layer l;
    float *store[9];
    long sizes[9] = {d, d, (long)sh->h * sh->dh * d, (long)sh->g * sh->dh * d,
                     (long)sh->g * sh->dh * d, (long)d * sh->h * sh->dh, (long)sh->f * d,
                     (long)sh->f * d, (long)d * sh->f};
    float **dst[9] = {&l.attn_norm, &l.mlp_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.wgate, &l.wup,
                      &l.wdown};
    double params = 0;
    for (int i = 0; i < 9; i++) {
        store[i] = hbuf((size_t)sizes[i]);
        if (i < 2) {
            for (long j = 0; j < sizes[i]; j++)
                store[i][j] = 1.0f;
        } else {
            fill(store[i], (size_t)sizes[i], &s, 1.0 / sqrt((double)(i == 5 ? sh->h * sh->dh : i == 8 ? sh->f : d)));
            params += (double)sizes[i];
        }
        *dst[i] = store[i];
    }
    const int nsamples = B * steps;
    const size_t per = (size_t)seq * d, nx = (size_t)nsamples * per;
    float *x = hbuf(nx), *y = hbuf(nx);
    fill(x, nx, &s, 1.0);
    fill(y, nx, &s, 0.1);
    for (size_t i = 0; i < nx; i++)
        y[i] += x[i];
    for (size_t t = 0; t < (size_t)nsamples * seq; t++)
        for (int o = 0; o < 4; o++)
            x[t * d + (o * (d / 4) + 3)] *= 50.0f;
    fq_recipe r = fq_recipe_defaults();
    r.scale_init = FQ_SCALE_ONE;
    r.batch = B;
    r.epochs = epochs;
    const double flops = 6.0 * params * N;
    printf("\n== %s layer: d %d, heads %d/%d x %d, f %d; %.3f G linear params; batch %d x %d "
           "tokens; %.1f TFLOP of linears per step\n", sh->name, d, sh->h, sh->g, sh->dh, sh->f,
           params / 1e9, B, seq, flops / 1e12);

    /* (1) + (2): direct steps on one tape */
    if (!loop_only) {
        fq_params P;
        rope_table rope;
        fq_tape_cuda *tp;
        float *dx, *dy, *dout, *dg;
        if (fq_params_init(&P, &c, &r, &l, NULL) || rope_table_init(&rope, &c, seq) ||
            fq_tape_cuda_create(&tp, ctx, &P, &l, &rope, B, seq) ||
            fq_cuda_alloc(&dx, (size_t)N * d, "x") || fq_cuda_alloc(&dy, (size_t)N * d, "y") ||
            fq_cuda_alloc(&dout, (size_t)N * d, "out") || fq_cuda_alloc(&dg, (size_t)N * d, "g") ||
            fq_cuda_upload(ctx, dx, x, (size_t)N * d) || fq_cuda_upload(ctx, dy, y, (size_t)N * d))
            DIE("setup");
        printf("tape: %.2f GiB on the device\n", fq_tape_cuda_bytes(tp) / 1073741824.0);
        float *g_ref = hbuf(P.n);
        double mse_ref = 0;
        printf("%-5s %12s %11s", "math", "loss", "rel(loss)");
        for (int gi = 0; gi < FQ_NGROUPS; gi++)
            printf(" %16.16s", fq_group_names[gi]);
        printf("\n");
        for (int mi = 0; mi < nmath; mi++) {
            double mse;
            if (fq_cuda_set_math(ctx, maths[mi]) || fq_layer_fwd_cuda(tp, &P, dx, dout) ||
                fq_layer_loss_cuda(tp, dout, dy, dg, &mse) || fq_layer_bwd_cuda(tp, &P, dg))
                DIE("step");
            if (mi == 0) {
                memcpy(g_ref, P.g, sizeof(float) * P.n);
                mse_ref = mse;
            }
            printf("%-5s %12.6e %11.3e", math_names[maths[mi]], mse,
                   fabs(mse - mse_ref) / mse_ref);
            for (int gi = 0; gi < FQ_NGROUPS; gi++) {
                size_t lo = P.group_off[gi];
                printf(" %16.3e", rel(P.g + lo, g_ref + lo, P.group_off[gi + 1] - lo));
            }
            printf("   (vs %s)\n", math_names[maths[0]]);
        }
        printf("%-5s", "math");
        for (int gi = 0; gi < FQ_PROF_NGROUPS; gi++)
            printf(" %14.14s", fq_prof_names[gi]);
        printf("  (ms per profiled step)\n");
        for (int mi = 0; mi < nmath; mi++) {
            double secs[FQ_PROF_NGROUPS], mse;
            if (fq_cuda_set_math(ctx, maths[mi]))
                DIE("math");
            /* PROF_REPS steps in one profile: the mean per step (one step alone moved by
             * a few ms between runs) */
            fq_tape_cuda_profile(tp, 1);
            for (int rep = 0; rep < PROF_REPS; rep++)
                if (fq_layer_fwd_cuda(tp, &P, dx, dout) ||
                    fq_layer_loss_cuda(tp, dout, dy, dg, &mse) ||
                    fq_layer_bwd_cuda(tp, &P, dg) || fq_cuda_sync(ctx))
                    DIE("profiled step");
            fq_tape_cuda_profile_read(tp, secs);
            fq_tape_cuda_profile(tp, 0);
            printf("%-5s", math_names[maths[mi]]);
            double sum = 0;
            for (int gi = 0; gi < FQ_PROF_NGROUPS; gi++) {
                printf(" %14.2f", secs[gi] * 1e3 / PROF_REPS);
                sum += secs[gi];
            }
            printf("  sum %.2f", sum * 1e3 / PROF_REPS);
            printf("\n");
        }
        fq_cuda_set_math(ctx, FQ_MATH_FP32);
        fq_cuda_free(dx);
        fq_cuda_free(dy);
        fq_cuda_free(dout);
        fq_cuda_free(dg);
        fq_tape_cuda_free(tp);
        rope_table_free(&rope);
        fq_params_free(&P);
        free(g_ref);
    }

    /* (3): the real loop */
    printf("%-5s %10s %12s %10s %12s %12s %12s\n", "math", "ms/step", "s/layer(480)",
           "TFLOP/s", "peak GiB", "loss before", "loss after");
    for (int mi = 0; mi < nmath; mi++) {
        epoch_times et;
        memset(&et, 0, sizeof et);
        et.steps = steps;
        et.math = math_names[maths[mi]];
        calib_data data = {nsamples, seq, x, y, NULL, NULL, on_epoch, &et, 0};
        fq_params P;
        calib_result res;
        if (fq_cuda_set_math(ctx, maths[mi]))
            DIE("math");
        if (calibrate_layer_cuda(ctx, &P, &l, &c, &r, NULL, &data, 0, &res)) {
            printf("%-5s failed: %s\n", math_names[maths[mi]], fq_errmsg());
            continue;
        }
        /* epochs after the first (warm-up, allocation) */
        double step = (et.t[et.n - 1] - et.t[0]) / ((double)(et.n - 1) * steps);
        printf("%-5s %10.2f %12.2f %10.1f %12.2f %12.5e %12.5e\n", math_names[maths[mi]],
               step * 1e3, step * 480, flops / step / 1e12,
               res.peak_device_bytes / 1073741824.0, res.loss_before, res.loss_after);
        fflush(stdout);
        fq_params_free(&P);
    }
    fq_cuda_set_math(ctx, FQ_MATH_FP32);
    for (int i = 0; i < 9; i++)
        free(store[i]);
    free(x);
    free(y);
}

int main(int argc, char **argv)
{
    const char *shape_list = "16m,8b,70b", *math_list = "fp32,tf32,bf16";
    int steps = 3, seq = 2048, epochs = 2, loop_only = 0, split = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--shapes") && i + 1 < argc)
            shape_list = argv[++i];
        else if (!strcmp(argv[i], "--math") && i + 1 < argc)
            math_list = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seq") && i + 1 < argc)
            seq = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--epochs") && i + 1 < argc)
            epochs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--loop-only"))
            loop_only = 1;
        else if (!strcmp(argv[i], "--split-transforms"))
            split = 1;
        else {
            fprintf(stderr, "usage: %s [--shapes 16m,8b,70b] [--math fp32,tf32,bf16] "
                            "[--steps N] [--seq S] [--epochs E] [--loop-only] [--split-transforms]\n", argv[0]);
            return 2;
        }
    }
    if (steps < 1 || seq < 2 || epochs < 2 || epochs > 64) {
        fprintf(stderr, "bench: --steps %d --seq %d --epochs %d (expected >= 1, >= 2 and "
                        "2..64)\n", steps, seq, epochs);
        return 2;
    }
    int maths[3], nmath = 0;
    for (int m = 0; m < 3; m++)
        if (strstr(math_list, math_names[m]))
            maths[nmath++] = m;
    int count = 0;
    if (fq_cuda_device_count(&count) || count == 0) {
        fprintf(stderr, "bench_layer_step_cuda: NOT RUN: no CUDA device visible\n");
        return 77;
    }
    fq_cuda_ctx ctx;
    char name[256];
    if (fq_cuda_init(&ctx, 0) || fq_cuda_device_name(&ctx, name, sizeof name))
        DIE("fq_cuda_init");
    ctx.split_transforms = split;
    printf("device: %s; transforms' GEMMs in tensor-core modes: %s\n", name,
           split ? "split TF32 (--split-transforms)" : "SGEMM");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (strstr(shape_list, shapes[i].name))
            bench_shape(&ctx, &shapes[i], maths, nmath, steps, seq, epochs, loop_only);
    fq_cuda_free_ctx(&ctx);
    return 0;
}

#else

int main(void)
{
    fprintf(stderr, "bench_layer_step_cuda: NOT RUN: flatq was built without the CUDA backend "
                    "(nvcc not found)\n");
    return 77;
}

#endif
