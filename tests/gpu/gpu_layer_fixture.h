/* gpu_layer_fixture.h — a random LLaMA decoder layer for the GPU layer tests and the bench:
 * a config of any shape, weights N(0, σ²), norms near 1, and inputs X with a few channels
 * k× larger than the rest (the outlier channels of real LLaMA residual streams).
 * Header-only (static functions):
 * each tests/gpu/test_*.c and bench program is its own binary.
 */
#ifndef FQ_GPU_LAYER_FIXTURE_H
#define FQ_GPU_LAYER_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fq_layer.h"
#include "llama_model.h"
#include "rng.h"

typedef struct {
    llama_config c;
    llama_layer l;
    real *store[9];
} gpu_layer;

static inline void gpu_layer_config(llama_config *c, int d, int h, int g, int dh, int f)
{
    memset(c, 0, sizeof *c);
    c->hidden = d;
    c->intermediate = f;
    c->n_layers = 1;
    c->n_heads = h;
    c->n_kv_heads = g;
    c->head_dim = dh;
    c->vocab = 32;
    c->max_pos = 4096;
    c->rms_eps = 1e-5;
    c->rope_theta = 10000;
    c->rope_type = ROPE_DEFAULT;
    c->bos_id = c->eos_id = -1;
}

static inline real *gpu_layer_alloc(size_t n)
{
    real *p = malloc(n * sizeof(real));
    if (!p) {
        fprintf(stderr, "out of host memory (%zu reals)\n", n);
        exit(1);
    }
    return p;
}

/* Norms 1 + N(0, 0.1²), weights N(0, sd²); deterministic in seed. */
static inline void gpu_layer_init(gpu_layer *L, const llama_config *c, uint64_t seed, double sd)
{
    memset(L, 0, sizeof *L);
    L->c = *c;
    rng_state rng;
    rng_seed(&rng, seed);
    const long d = c->hidden, f = c->intermediate, qd = (long)c->n_heads * c->head_dim,
               kd = (long)c->n_kv_heads * c->head_dim;
    long n[9] = {d, d, qd * d, kd * d, kd * d, d * qd, f * d, f * d, d * f};
    real **dst[9] = {&L->l.attn_norm, &L->l.mlp_norm, &L->l.wq, &L->l.wk, &L->l.wv,
                     &L->l.wo, &L->l.wgate, &L->l.wup, &L->l.wdown};
    for (int i = 0; i < 9; i++) {
        real *p = gpu_layer_alloc((size_t)n[i]);
        for (long j = 0; j < n[i]; j++)
            p[j] = (real)(i < 2 ? 1 + 0.1 * rng_normal(&rng) : sd * rng_normal(&rng));
        *dst[i] = p;
        L->store[i] = p;
    }
}

static inline void gpu_layer_free(gpu_layer *L)
{
    for (int i = 0; i < 9; i++)
        free(L->store[i]);
}

/* x [tokens, d] ~ N(0, 1), channels j·(d/n_outl) + 1 (j < n_outl) scaled by k. */
static inline void gpu_layer_inputs(float *x, long tokens, int d, uint64_t seed, int n_outl,
                                    double k)
{
    rng_state rng;
    rng_seed(&rng, seed);
    for (long t = 0; t < tokens; t++)
        for (int j = 0; j < d; j++)
            x[t * d + j] = (float)rng_normal(&rng);
    for (int o = 0; o < n_outl; o++) {
        int j = (o * (d / n_outl) + 1) % d;
        for (long t = 0; t < tokens; t++)
            x[t * d + j] *= (float)k;
    }
}

#endif
