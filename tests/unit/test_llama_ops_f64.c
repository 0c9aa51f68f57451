/* test_llama_ops_f64.c — every LLaMA op's backward against central finite differences,
 * in float64, on small random shapes (GQA with r = 2, odd sizes where allowed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "fd_util.h"
#include "llama_ops.h"

#define TOL 1e-7
#define H 1e-5

enum { B = 2, S = 5, NH = 4, G = 2, DH = 6, D = 7, F = 9 };

typedef struct {
    int op;
    double *x, *gamma, *q, *k, *v, *up, *w, *gout, *out;
    rope_table rope;
    double *scratch;
} fd_ctx;

static double loss_rmsnorm(void *p)
{
    fd_ctx *c = p;
    rmsnorm_fwd(c->out, NULL, c->x, c->gamma, B * S, D, 1e-5);
    return dot(c->out, c->gout, (size_t)B * S * D);
}

static void test_rmsnorm_bwd(void **state)
{
    (void)state;
    rng_state rng; rng_seed(&rng, 1);
    long n = (long)B * S * D;
    fd_ctx c = {0};
    double x[B * S * D], gamma[D], gout[B * S * D], out[B * S * D], rstd[B * S];
    double dx[B * S * D] = {0};
    fill_normal(x, n, &rng, 2);
    fill_normal(gamma, D, &rng, 1);
    fill_normal(gout, n, &rng, 1);
    c.x = x; c.gamma = gamma; c.gout = gout; c.out = out;
    rmsnorm_fwd(out, rstd, x, gamma, B * S, D, 1e-5);
    rmsnorm_bwd(dx, gout, x, gamma, rstd, B * S, D);
    assert_int_equal(fd_check("dx", loss_rmsnorm, &c, x, dx, n, H, TOL), 0);
}

static double loss_rope(void *p)
{
    fd_ctx *c = p;
    size_t n = (size_t)B * S * NH * DH;
    memcpy(c->out, c->x, n * sizeof(double));
    rope_fwd(c->out, B, S, NH, DH, &c->rope);
    return dot(c->out, c->gout, n);
}

static void test_rope_bwd(void **state)
{
    (void)state;
    rng_state rng; rng_seed(&rng, 2);
    enum { N = B * S * NH * DH };
    double x[N], gout[N], out[N], dx[N];
    llama_config cfg = {0};
    cfg.head_dim = DH;
    cfg.rope_theta = 10000;
    fd_ctx c = {0};
    assert_int_equal(rope_table_init(&c.rope, &cfg, S), 0);
    fill_normal(x, N, &rng, 1);
    fill_normal(gout, N, &rng, 1);
    c.x = x; c.gout = gout; c.out = out;
    memcpy(dx, gout, sizeof dx);
    rope_bwd(dx, B, S, NH, DH, &c.rope);
    assert_int_equal(fd_check("dx", loss_rope, &c, x, dx, N, H, TOL), 0);
    /* position 0 is the identity rotation */
    memcpy(out, x, sizeof out);
    rope_fwd(out, B, S, NH, DH, &c.rope);
    for (int e = 0; e < NH * DH; e++)
        assert_true(out[e] == x[e]);
    rope_table_free(&c.rope);
}

static double loss_attention(void *p)
{
    fd_ctx *c = p;
    attention_fwd(c->out, NULL, c->q, c->k, c->v, B, S, NH, G, DH, c->scratch);
    return dot(c->out, c->gout, (size_t)B * S * NH * DH);
}

static void test_attention_bwd(void **state)
{
    (void)state;
    rng_state rng; rng_seed(&rng, 3);
    enum { NQ = B * S * NH * DH, NK = B * S * G * DH };
    double q[NQ], k[NK], v[NK], gout[NQ], out[NQ], scratch[2 * S * S];
    double dq[NQ] = {0}, dk[NK] = {0}, dv[NK] = {0};
    fill_normal(q, NQ, &rng, 1.5);
    fill_normal(k, NK, &rng, 1.5);
    fill_normal(v, NK, &rng, 1);
    fill_normal(gout, NQ, &rng, 1);
    fd_ctx c = {.q = q, .k = k, .v = v, .gout = gout, .out = out, .scratch = scratch};
    attention_bwd(dq, dk, dv, gout, q, k, v, B, S, NH, G, DH, scratch);
    assert_int_equal(fd_check("dq", loss_attention, &c, q, dq, NQ, H, TOL), 0);
    assert_int_equal(fd_check("dk", loss_attention, &c, k, dk, NK, H, TOL), 0);
    assert_int_equal(fd_check("dv", loss_attention, &c, v, dv, NK, H, TOL), 0);
}

static void test_attention_causal_and_gqa(void **state)
{
    (void)state;
    /* The first position attends only to itself: its output is its own v row. And query
     * heads 0 and 1 share KV head 0 (r = 2). */
    rng_state rng; rng_seed(&rng, 4);
    enum { NQ = 1 * S * NH * DH, NK = 1 * S * G * DH };
    double q[NQ], k[NK], v[NK], out[NQ], scratch[S * S];
    fill_normal(q, NQ, &rng, 1);
    fill_normal(k, NK, &rng, 1);
    fill_normal(v, NK, &rng, 1);
    attention_fwd(out, NULL, q, k, v, 1, S, NH, G, DH, scratch);
    for (int j = 0; j < NH; j++)
        for (int e = 0; e < DH; e++)
            assert_true(fabs(out[j * DH + e] - v[(j / 2) * DH + e]) < 1e-15);
}

static double loss_swiglu(void *p)
{
    fd_ctx *c = p;
    swiglu_fwd(c->out, c->x, c->up, F);
    return dot(c->out, c->gout, F);
}

static void test_swiglu_bwd(void **state)
{
    (void)state;
    rng_state rng; rng_seed(&rng, 5);
    double gate[F], up[F], gout[F], out[F], dg[F] = {0}, du[F] = {0};
    fill_normal(gate, F, &rng, 3);
    fill_normal(up, F, &rng, 1);
    fill_normal(gout, F, &rng, 1);
    fd_ctx c = {.x = gate, .up = up, .gout = gout, .out = out};
    swiglu_bwd(dg, du, gout, gate, up, F);
    assert_int_equal(fd_check("dg", loss_swiglu, &c, gate, dg, F, H, TOL), 0);
    assert_int_equal(fd_check("du", loss_swiglu, &c, up, du, F, H, TOL), 0);
}

static double loss_linear(void *p)
{
    fd_ctx *c = p;
    linear_fwd(c->out, c->x, c->w, S, D, F);
    return dot(c->out, c->gout, (size_t)S * F);
}

static void test_linear_bwd(void **state)
{
    (void)state;
    rng_state rng; rng_seed(&rng, 6);
    double x[S * D], w[F * D], gout[S * F], out[S * F], dx[S * D] = {0}, dw[F * D] = {0};
    fill_normal(x, S * D, &rng, 1);
    fill_normal(w, F * D, &rng, 1);
    fill_normal(gout, S * F, &rng, 1);
    fd_ctx c = {.x = x, .w = w, .gout = gout, .out = out};
    linear_bwd(dx, dw, gout, x, w, S, D, F);
    assert_int_equal(fd_check("dx", loss_linear, &c, x, dx, S * D, H, TOL), 0);
    assert_int_equal(fd_check("dw", loss_linear, &c, w, dw, F * D, H, TOL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm_bwd),
        cmocka_unit_test(test_rope_bwd),
        cmocka_unit_test(test_attention_bwd),
        cmocka_unit_test(test_attention_causal_and_gqa),
        cmocka_unit_test(test_swiglu_bwd),
        cmocka_unit_test(test_linear_bwd),
    };
    return cmocka_run_group_tests_name("llama_ops_f64", tests, NULL, NULL);
}
