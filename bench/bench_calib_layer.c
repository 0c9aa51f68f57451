/* bench_calib_layer.c — CPU throughput of one FlatQuant calibration step.
 *
 * A flatq-llama-16m-shaped layer (d 384, h 6, g 2, dh 64, f 1024) with random weights and
 * inputs, W4A4KV4, batch 4 × 512 tokens: the time of the fake-quantized training forward,
 * of the backward, and of the whole step, against an sgemm rate measured in the same run
 * on a GEMM of the layer's own largest shape (the CPU "peak" this code can hope for).
 * FLOPs are counted from the GEMM shapes the step runs (linears, Kronecker transforms on
 * both sides, attention with its full S×S products); elementwise work (quantizers, norms,
 * RoPE, softmax) is not counted, so GFLOP/s below the sgemm rate measures both BLAS
 * efficiency on smaller shapes and the share of time outside BLAS.
 *
 *   build/bench/bench_calib_layer [--steps N] [--batch B] [--seq S]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "fq_layer.h"
#include "rng.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static real *rnd(long n, rng_state *rng, double scale)
{
    real *p = malloc(sizeof(real) * (size_t)n);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (long i = 0; i < n; i++)
        p[i] = (real)(scale * rng_normal(rng));
    return p;
}

/* sgemm C[m,n] = A[m,k]·B[n,k]ᵀ rate in GFLOP/s (best of reps). */
static double sgemm_rate(int m, int n, int k, int reps)
{
    rng_state rng;
    rng_seed(&rng, 1);
    real *a = rnd((long)m * k, &rng, 1), *b = rnd((long)n * k, &rng, 1),
         *c = rnd((long)m * n, &rng, 1);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        real_gemm(0, 1, m, n, k, 1, a, k, b, k, 0, c, n);
        double t = now() - t0;
        best = t < best ? t : best;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * m * n * k / best / 1e9;
}

int main(int argc, char **argv)
{
    int steps = 3, B = 4, S = 512;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--steps"))
            steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch"))
            B = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seq"))
            S = atoi(argv[i + 1]);
    }
    llama_config c;
    memset(&c, 0, sizeof c);
    c.hidden = 384;
    c.intermediate = 1024;
    c.n_layers = 1;
    c.n_heads = 6;
    c.n_kv_heads = 2;
    c.head_dim = 64;
    c.vocab = 32000;
    c.max_pos = 2048;
    c.rms_eps = 1e-5;
    c.rope_theta = 10000;
    const long d = c.hidden, f = c.intermediate, h = c.n_heads, dh = c.head_dim,
               qd = h * dh, kd = (long)c.n_kv_heads * dh, N = (long)B * S;
    rng_state rng;
    rng_seed(&rng, 0);
    llama_layer l;
    l.attn_norm = rnd(d, &rng, 0.1);
    l.mlp_norm = rnd(d, &rng, 0.1);
    for (long j = 0; j < d; j++) {
        l.attn_norm[j] += 1;
        l.mlp_norm[j] += 1;
    }
    l.wq = rnd(qd * d, &rng, 0.05);
    l.wk = rnd(kd * d, &rng, 0.05);
    l.wv = rnd(kd * d, &rng, 0.05);
    l.wo = rnd(d * qd, &rng, 0.05);
    l.wgate = rnd(f * d, &rng, 0.05);
    l.wup = rnd(f * d, &rng, 0.05);
    l.wdown = rnd(d * f, &rng, 0.03);
    real *x = rnd(N * d, &rng, 1), *y = rnd(N * d, &rng, 1), *gy = rnd(N * d, &rng, 1e-3);

    fq_recipe r = fq_recipe_defaults();
    r.scale_init = FQ_SCALE_ONE;
    fq_params P;
    fq_tape *tp;
    rope_table rope;
    if (fq_params_init(&P, &c, &r, &l, NULL) || fq_tape_create(&tp, &P, B, S, NULL) ||
        rope_table_init(&rope, &c, S)) {
        fprintf(stderr, "flatq: %s\n", fq_errmsg());
        return 1;
    }
    /* FLOPs per step, from the shapes (multiply-add = 2). */
    double lin = 2.0 * N * (d * (qd + 2 * kd) + qd * d + 2 * d * f + f * d);
    double att = 2.0 * 2 * B * h * (double)S * S * dh; /* QKᵀ and PV, full S×S */
    double act_tr = 2.0 * N * (2 * d * (P.na1 + P.na2) + f * (P.nd1 + P.nd2) + qd * P.hb);
    double w_tr = 2.0 * ((qd + 2 * kd + 2 * f) * d * (P.na1 + P.na2) + d * f * (P.nd1 + P.nd2) +
                         d * qd * (P.hb + dh) + kd * d * dh);
    double fwd_flop = lin + att + act_tr + w_tr;
    /* backward: two GEMMs per forward GEMM for linears and transforms; attention recomputes
     * QKᵀ and runs four more products (dV, dP, dQ, dK) */
    double bwd_flop = 2 * (lin + act_tr + w_tr) + 2.5 * att;

    double t_f = 1e30, t_b = 1e30;
    for (int s = 0; s <= steps; s++) { /* step 0 warms up */
        double t0 = now();
        if (fq_layer_fwd(tp, &P, &l, &rope, x, y)) {
            fprintf(stderr, "flatq: %s\n", fq_errmsg());
            return 1;
        }
        double t1 = now();
        if (fq_layer_bwd(tp, &P, &l, &rope, gy)) {
            fprintf(stderr, "flatq: %s\n", fq_errmsg());
            return 1;
        }
        double t2 = now();
        if (s > 0) {
            t_f = t1 - t0 < t_f ? t1 - t0 : t_f;
            t_b = t2 - t1 < t_b ? t2 - t1 : t_b;
        }
    }
    double peak = sgemm_rate((int)N, (int)f, (int)d, 5);
    double peak_sq = sgemm_rate(1024, 1024, 1024, 3);
    printf("FlatQuant calibration step, CPU (" REAL_NAME "), layer d %ld h %ld g %d dh %ld f %ld, "
           "batch %d x %d tokens, W4A4KV4\n", d, h, c.n_kv_heads, dh, f, B, S);
    printf("sgemm rate measured now: %.1f GFLOP/s on [%ld x %ld]·[%ld x %ld]ᵀ (up_proj shape), "
           "%.1f GFLOP/s on 1024³\n\n", peak, N, d, f, d, peak_sq);
    printf("| part | best ms | GFLOP | GFLOP/s | %% of sgemm rate |\n");
    printf("| --- | ---: | ---: | ---: | ---: |\n");
    const char *name[3] = {"forward", "backward", "step (fwd+bwd)"};
    double t[3] = {t_f, t_b, t_f + t_b}, fl[3] = {fwd_flop, bwd_flop, fwd_flop + bwd_flop};
    for (int i = 0; i < 3; i++)
        printf("| %s | %.1f | %.2f | %.1f | %.0f%% |\n", name[i], 1e3 * t[i], fl[i] / 1e9,
               fl[i] / t[i] / 1e9, 100 * fl[i] / t[i] / 1e9 / peak);
    printf("\nFLOP shares of the forward: linears %.0f%%, attention %.0f%%, activation "
           "transforms %.0f%%, weight-side transforms %.0f%%\n", 100 * lin / fwd_flop,
           100 * att / fwd_flop, 100 * act_tr / fwd_flop, 100 * w_tr / fwd_flop);
    printf("480 steps (the §4.1 recipe) of this layer: %.0f s\n", 480 * (t_f + t_b));
    fq_tape_free(tp);
    fq_params_free(&P);
    rope_table_free(&rope);
    real *all[] = {l.attn_norm, l.mlp_norm, l.wq, l.wk, l.wv, l.wo, l.wgate, l.wup, l.wdown,
                   x, y, gy};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
    return 0;
}
