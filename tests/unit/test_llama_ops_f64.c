/* test_llama_ops_f64.c — every LLaMA op's backward against central finite differences,
 * in float64, on small random shapes (GQA with r = 2, odd sizes where allowed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "fd_check.h"
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
    return fd_dot(c->out, c->gout, (size_t)B * S * D);
}

static void test_rmsnorm_bwd(void **state)
{
    (void)state;
    uint64_t rng = 1;
    size_t n = (size_t)B * S * D;
    fd_ctx c = {0};
    double x[B * S * D], gamma[D], gout[B * S * D], out[B * S * D], rstd[B * S];
    double dx[B * S * D] = {0}, num[B * S * D];
    fd_fill(x, n, 2, &rng);
    fd_fill(gamma, D, 1, &rng);
    fd_fill(gout, n, 1, &rng);
    c.x = x; c.gamma = gamma; c.gout = gout; c.out = out;
    rmsnorm_fwd(out, rstd, x, gamma, B * S, D, 1e-5);
    rmsnorm_bwd(dx, gout, x, gamma, rstd, B * S, D);
    fd_grad(x, n, H, loss_rmsnorm, &c, num);
    assert_true(fd_rel_err(dx, num, n) < TOL);
}

static double loss_rope(void *p)
{
    fd_ctx *c = p;
    size_t n = (size_t)B * S * NH * DH;
    memcpy(c->out, c->x, n * sizeof(double));
    rope_fwd(c->out, B, S, NH, DH, &c->rope);
    return fd_dot(c->out, c->gout, n);
}

static void test_rope_bwd(void **state)
{
    (void)state;
    uint64_t rng = 2;
    enum { N = B * S * NH * DH };
    double x[N], gout[N], out[N], dx[N], num[N];
    llama_config cfg = {0};
    cfg.head_dim = DH;
    cfg.rope_theta = 10000;
    fd_ctx c = {0};
    assert_int_equal(rope_table_init(&c.rope, &cfg, S), 0);
    fd_fill(x, N, 1, &rng);
    fd_fill(gout, N, 1, &rng);
    c.x = x; c.gout = gout; c.out = out;
    memcpy(dx, gout, sizeof dx);
    rope_bwd(dx, B, S, NH, DH, &c.rope);
    fd_grad(x, N, H, loss_rope, &c, num);
    assert_true(fd_rel_err(dx, num, N) < TOL);
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
    return fd_dot(c->out, c->gout, (size_t)B * S * NH * DH);
}

static void test_attention_bwd(void **state)
{
    (void)state;
    uint64_t rng = 3;
    enum { NQ = B * S * NH * DH, NK = B * S * G * DH };
    double q[NQ], k[NK], v[NK], gout[NQ], out[NQ], scratch[2 * S * S];
    double dq[NQ] = {0}, dk[NK] = {0}, dv[NK] = {0}, num[NQ];
    fd_fill(q, NQ, 1.5, &rng);
    fd_fill(k, NK, 1.5, &rng);
    fd_fill(v, NK, 1, &rng);
    fd_fill(gout, NQ, 1, &rng);
    fd_ctx c = {.q = q, .k = k, .v = v, .gout = gout, .out = out, .scratch = scratch};
    attention_bwd(dq, dk, dv, gout, q, k, v, B, S, NH, G, DH, scratch);
    fd_grad(q, NQ, H, loss_attention, &c, num);
    assert_true(fd_rel_err(dq, num, NQ) < TOL);
    fd_grad(k, NK, H, loss_attention, &c, num);
    assert_true(fd_rel_err(dk, num, NK) < TOL);
    fd_grad(v, NK, H, loss_attention, &c, num);
    assert_true(fd_rel_err(dv, num, NK) < TOL);
}

static void test_attention_causal_and_gqa(void **state)
{
    (void)state;
    /* The first position attends only to itself: its output is its own v row. And query
     * heads 0 and 1 share KV head 0 (r = 2). */
    uint64_t rng = 4;
    enum { NQ = 1 * S * NH * DH, NK = 1 * S * G * DH };
    double q[NQ], k[NK], v[NK], out[NQ], scratch[S * S];
    fd_fill(q, NQ, 1, &rng);
    fd_fill(k, NK, 1, &rng);
    fd_fill(v, NK, 1, &rng);
    attention_fwd(out, NULL, q, k, v, 1, S, NH, G, DH, scratch);
    for (int j = 0; j < NH; j++)
        for (int e = 0; e < DH; e++)
            assert_true(fabs(out[j * DH + e] - v[(j / 2) * DH + e]) < 1e-15);
}

static double loss_swiglu(void *p)
{
    fd_ctx *c = p;
    swiglu_fwd(c->out, c->x, c->up, F);
    return fd_dot(c->out, c->gout, F);
}

static void test_swiglu_bwd(void **state)
{
    (void)state;
    uint64_t rng = 5;
    double gate[F], up[F], gout[F], out[F], dg[F] = {0}, du[F] = {0}, num[F];
    fd_fill(gate, F, 3, &rng);
    fd_fill(up, F, 1, &rng);
    fd_fill(gout, F, 1, &rng);
    fd_ctx c = {.x = gate, .up = up, .gout = gout, .out = out};
    swiglu_bwd(dg, du, gout, gate, up, F);
    fd_grad(gate, F, H, loss_swiglu, &c, num);
    assert_true(fd_rel_err(dg, num, F) < TOL);
    fd_grad(up, F, H, loss_swiglu, &c, num);
    assert_true(fd_rel_err(du, num, F) < TOL);
}

static double loss_linear(void *p)
{
    fd_ctx *c = p;
    linear_fwd(c->out, c->x, c->w, S, D, F);
    return fd_dot(c->out, c->gout, (size_t)S * F);
}

static void test_linear_bwd(void **state)
{
    (void)state;
    uint64_t rng = 6;
    double x[S * D], w[F * D], gout[S * F], out[S * F], dx[S * D] = {0}, dw[F * D] = {0};
    double num[F * D];
    fd_fill(x, S * D, 1, &rng);
    fd_fill(w, F * D, 1, &rng);
    fd_fill(gout, S * F, 1, &rng);
    fd_ctx c = {.x = x, .w = w, .gout = gout, .out = out};
    linear_bwd(dx, dw, gout, x, w, S, D, F);
    fd_grad(x, S * D, H, loss_linear, &c, num);
    assert_true(fd_rel_err(dx, num, S * D) < TOL);
    fd_grad(w, F * D, H, loss_linear, &c, num);
    assert_true(fd_rel_err(dw, num, F * D) < TOL);
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
