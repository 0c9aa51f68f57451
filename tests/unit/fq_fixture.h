/* fq_fixture.h — the tiny random LLaMA layer (d 16, f 24, 4 heads, 2 KV heads, dh 4,
 * 2 × 5 tokens) that the float64 FlatQuant layer and merge tests share. Header-only
 * (static functions) because each tests/unit/test_*.c is its own binary. */
#ifndef FQ_TEST_FQ_FIXTURE_H
#define FQ_TEST_FQ_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fd_util.h"
#include "llama_model.h"
#include "rng.h"

enum { B = 2, S = 5 };

/* assert_int_equal(call, 0) that prints the library's error line first */
#define assert_ok(call)                                                                          \
    do {                                                                                         \
        int rc_ = (call);                                                                        \
        if (rc_)                                                                                 \
            fprintf(stderr, "%s\n", fq_errmsg());                                                 \
        assert_int_equal(rc_, 0);                                                                \
    } while (0)

typedef struct {
    llama_config c;
    llama_layer l;
    rope_table rope;
    real *x, *target, *y;
    int N;
} fixture;

static void fixture_init(fixture *fx, uint64_t seed)
{
    memset(fx, 0, sizeof *fx);
    llama_config *c = &fx->c;
    c->hidden = 16;
    c->intermediate = 24;
    c->n_layers = 1;
    c->n_heads = 4;
    c->n_kv_heads = 2;
    c->head_dim = 4;
    c->vocab = 32;
    c->max_pos = 64;
    c->rms_eps = 1e-5;
    c->rope_theta = 10000;
    c->rope_type = ROPE_DEFAULT;
    rng_state rng;
    rng_seed(&rng, seed);
    int d = 16, f = 24, qd = 16, kd = 8;
    fx->N = B * S;
    fx->l.attn_norm = alloc_real(d);
    fx->l.mlp_norm = alloc_real(d);
    for (int j = 0; j < d; j++) {
        fx->l.attn_norm[j] = (real)(1 + 0.2 * rng_normal(&rng));
        fx->l.mlp_norm[j] = (real)(1 + 0.2 * rng_normal(&rng));
    }
    real **w[7] = {&fx->l.wq, &fx->l.wk, &fx->l.wv, &fx->l.wo, &fx->l.wgate, &fx->l.wup,
                   &fx->l.wdown};
    long n[7] = {qd * d, kd * d, kd * d, d * qd, f * d, f * d, d * f};
    for (int i = 0; i < 7; i++) {
        *w[i] = alloc_real(n[i]);
        fill_normal(*w[i], n[i], &rng, 0.35);
    }
    fx->x = alloc_real((long)fx->N * d);
    fx->target = alloc_real((long)fx->N * d);
    fx->y = alloc_real((long)fx->N * d);
    fill_normal(fx->x, (long)fx->N * d, &rng, 1.0);
    fx->x[3] = 3; /* a mild outlier; a large one zeroes most 4-bit codes of its token, and
                   * exact ties of zero products make the STE surrogate kink (FD invalid) */
    fill_normal(fx->target, (long)fx->N * d, &rng, 1.0);
    assert_int_equal(rope_table_init(&fx->rope, c, S), 0);
}

static void fixture_free(fixture *fx)
{
    real *w[] = {fx->l.attn_norm, fx->l.mlp_norm, fx->l.wq, fx->l.wk, fx->l.wv, fx->l.wo,
                 fx->l.wgate, fx->l.wup, fx->l.wdown, fx->x, fx->target, fx->y};
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
        free(w[i]);
    rope_table_free(&fx->rope);
}

#endif
