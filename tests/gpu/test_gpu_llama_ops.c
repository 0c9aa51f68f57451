/* test_gpu_llama_ops.c — kernels/llama_ops.cu against core/llama_ops.c: RMSNorm, RoPE,
 * SwiGLU, linear and causal GQA attention, forward and backward (fp32, tolerance 1e-5).
 * Backward gradients start from random values on both sides, so the "accumulate (+=)"
 * contract is checked too. Shapes are small but not multiples of the block size.
 */
#include "gpu_check.h"
#include "llama_ops.h"

#define TOL 1e-5

static void test_rmsnorm(gpu_suite *t)
{
    const int n = 67, d = 777;
    const float eps = 1e-5f;
    size_t nd = (size_t)n * d;
    float *x = gpu_host(nd), *gamma = gpu_host(d), *dy = gpu_host(nd), *dx = gpu_host(nd);
    gpu_fill_normal(t, x, nd, 1.0);
    gpu_fill_normal(t, gamma, d, 1.0);
    gpu_fill_normal(t, dy, nd, 1.0);
    gpu_fill_normal(t, dx, nd, 1.0);
    float *out = gpu_host(nd), *rstd = gpu_host(n), *dx_ref = gpu_host_copy(dx, nd);
    rmsnorm_fwd(out, rstd, x, gamma, n, d, eps);
    rmsnorm_bwd(dx_ref, dy, x, gamma, rstd, n, d);

    float *d_x = gpu_dev_copy(t, x, nd), *d_g = gpu_dev_copy(t, gamma, d);
    float *d_out = gpu_dev_poison(t, nd), *d_rstd = gpu_dev_poison(t, n);
    float *d_dy = gpu_dev_copy(t, dy, nd), *d_dx = gpu_dev_copy(t, dx, nd);
    gpu_call(t, rmsnorm_fwd_cuda(&t->ctx, d_out, d_rstd, d_x, d_g, n, d, eps), "rmsnorm_fwd_cuda");
    gpu_call(t, rmsnorm_bwd_cuda(&t->ctx, d_dx, d_dy, d_x, d_g, d_rstd, n, d), "rmsnorm_bwd_cuda");
    float *g_out = gpu_fetch(t, d_out, nd), *g_rstd = gpu_fetch(t, d_rstd, n);
    float *g_dx = gpu_fetch(t, d_dx, nd);
    gpu_check_rel(t, "rmsnorm_fwd out", g_out, out, nd, TOL);
    gpu_check_rel(t, "rmsnorm_fwd rstd", g_rstd, rstd, n, TOL);
    gpu_check_rel(t, "rmsnorm_bwd dx (+=)", g_dx, dx_ref, nd, TOL);
    free(x), free(gamma), free(dy), free(dx), free(out), free(rstd), free(dx_ref);
    free(g_out), free(g_rstd), free(g_dx);
}

static void test_rope(gpu_suite *t)
{
    const int b = 2, s = 45, heads = 6, dh = 64, half = dh / 2;
    size_t n = (size_t)b * s * heads * dh, nt = (size_t)s * half;
    float *cs = gpu_host(nt), *sn = gpu_host(nt), *x = gpu_host(n), *gx = gpu_host(n);
    for (int p = 0; p < s; p++)
        for (int i = 0; i < half; i++) {
            double ang = p * pow(10000.0, -2.0 * i / dh);
            cs[(size_t)p * half + i] = (float)cos(ang);
            sn[(size_t)p * half + i] = (float)sin(ang);
        }
    gpu_fill_normal(t, x, n, 1.0);
    gpu_fill_normal(t, gx, n, 1.0);
    rope_table tab = {s, dh, cs, sn};
    float *d_cs = gpu_dev_copy(t, cs, nt), *d_sn = gpu_dev_copy(t, sn, nt);
    float *d_x = gpu_dev_copy(t, x, n), *d_gx = gpu_dev_copy(t, gx, n);
    rope_fwd(x, b, s, heads, dh, &tab);
    rope_bwd(gx, b, s, heads, dh, &tab);
    gpu_call(t, rope_fwd_cuda(&t->ctx, d_x, b, s, heads, dh, d_cs, d_sn), "rope_fwd_cuda");
    gpu_call(t, rope_bwd_cuda(&t->ctx, d_gx, b, s, heads, dh, d_cs, d_sn), "rope_bwd_cuda");
    float *g_x = gpu_fetch(t, d_x, n), *g_gx = gpu_fetch(t, d_gx, n);
    gpu_check_rel(t, "rope_fwd", g_x, x, n, TOL);
    gpu_check_rel(t, "rope_bwd", g_gx, gx, n, TOL);
    free(cs), free(sn), free(x), free(gx), free(g_x), free(g_gx);
}

static void test_swiglu(gpu_suite *t)
{
    const size_t n = 100003;
    float *gate = gpu_host(n), *up = gpu_host(n), *dout = gpu_host(n);
    float *dg = gpu_host(n), *du = gpu_host(n), *out = gpu_host(n);
    gpu_fill_normal(t, gate, n, 3.0);
    gpu_fill_normal(t, up, n, 1.0);
    gpu_fill_normal(t, dout, n, 1.0);
    gpu_fill_normal(t, dg, n, 1.0);
    gpu_fill_normal(t, du, n, 1.0);
    float *d_gate = gpu_dev_copy(t, gate, n), *d_up = gpu_dev_copy(t, up, n);
    float *d_dout = gpu_dev_copy(t, dout, n), *d_dg = gpu_dev_copy(t, dg, n);
    float *d_du = gpu_dev_copy(t, du, n), *d_out = gpu_dev_poison(t, n);
    swiglu_fwd(out, gate, up, n);
    swiglu_bwd(dg, du, dout, gate, up, n);
    gpu_call(t, swiglu_fwd_cuda(&t->ctx, d_out, d_gate, d_up, n), "swiglu_fwd_cuda");
    gpu_call(t, swiglu_bwd_cuda(&t->ctx, d_dg, d_du, d_dout, d_gate, d_up, n), "swiglu_bwd_cuda");
    float *g_out = gpu_fetch(t, d_out, n), *g_dg = gpu_fetch(t, d_dg, n), *g_du = gpu_fetch(t, d_du, n);
    gpu_check_rel(t, "swiglu_fwd", g_out, out, n, TOL);
    gpu_check_rel(t, "swiglu_bwd dgate (+=)", g_dg, dg, n, TOL);
    gpu_check_rel(t, "swiglu_bwd dup (+=)", g_du, du, n, TOL);
    free(gate), free(up), free(dout), free(dg), free(du), free(out), free(g_out), free(g_dg),
        free(g_du);
}

static void test_linear(gpu_suite *t)
{
    const int n = 130, in = 300, o = 190;
    size_t nx = (size_t)n * in, nw = (size_t)o * in, ny = (size_t)n * o;
    float *x = gpu_host(nx), *w = gpu_host(nw), *dout = gpu_host(ny);
    float *dx = gpu_host(nx), *dw = gpu_host(nw), *out = gpu_host(ny);
    gpu_fill_normal(t, x, nx, 1.0);
    gpu_fill_normal(t, w, nw, 0.05);
    gpu_fill_normal(t, dout, ny, 1.0);
    gpu_fill_normal(t, dx, nx, 1.0);
    gpu_fill_normal(t, dw, nw, 1.0);
    float *d_x = gpu_dev_copy(t, x, nx), *d_w = gpu_dev_copy(t, w, nw);
    float *d_dout = gpu_dev_copy(t, dout, ny), *d_dx = gpu_dev_copy(t, dx, nx);
    float *d_dw = gpu_dev_copy(t, dw, nw), *d_out = gpu_dev_poison(t, ny);
    linear_fwd(out, x, w, n, in, o);
    linear_bwd(dx, dw, dout, x, w, n, in, o);
    gpu_call(t, linear_fwd_cuda(&t->ctx, d_out, d_x, d_w, n, in, o), "linear_fwd_cuda");
    gpu_call(t, linear_bwd_cuda(&t->ctx, d_dx, d_dw, d_dout, d_x, d_w, n, in, o), "linear_bwd_cuda");
    float *g_out = gpu_fetch(t, d_out, ny), *g_dx = gpu_fetch(t, d_dx, nx), *g_dw = gpu_fetch(t, d_dw, nw);
    gpu_check_rel(t, "linear_fwd", g_out, out, ny, TOL);
    gpu_check_rel(t, "linear_bwd dx (+=)", g_dx, dx, nx, TOL);
    gpu_check_rel(t, "linear_bwd dw (+=)", g_dw, dw, nw, TOL);
    free(x), free(w), free(dout), free(dx), free(dw), free(out), free(g_out), free(g_dx),
        free(g_dw);
}

static void test_attention(gpu_suite *t, int b, int s, int h, int g, int dh)
{
    size_t nq = (size_t)b * s * h * dh, nk = (size_t)b * s * g * dh;
    size_t np = (size_t)b * h * s * s;
    float *q = gpu_host(nq), *k = gpu_host(nk), *v = gpu_host(nk), *dout = gpu_host(nq);
    float *dq = gpu_host(nq), *dk = gpu_host(nk), *dv = gpu_host(nk);
    float *out = gpu_host(nq), *probs = gpu_host(np), *scratch = gpu_host((size_t)2 * s * s);
    gpu_fill_normal(t, q, nq, 1.0);
    gpu_fill_normal(t, k, nk, 1.0);
    gpu_fill_normal(t, v, nk, 1.0);
    gpu_fill_normal(t, dout, nq, 1.0);
    gpu_fill_normal(t, dq, nq, 1.0);
    gpu_fill_normal(t, dk, nk, 1.0);
    gpu_fill_normal(t, dv, nk, 1.0);
    float *d_q = gpu_dev_copy(t, q, nq), *d_k = gpu_dev_copy(t, k, nk), *d_v = gpu_dev_copy(t, v, nk);
    float *d_dout = gpu_dev_copy(t, dout, nq), *d_dq = gpu_dev_copy(t, dq, nq);
    float *d_dk = gpu_dev_copy(t, dk, nk), *d_dv = gpu_dev_copy(t, dv, nk);
    float *d_out = gpu_dev_poison(t, nq), *d_p = gpu_dev_poison(t, np);
    float *d_scr = gpu_dev_poison(t, (size_t)b * s * s);
    attention_fwd(out, probs, q, k, v, b, s, h, g, dh, scratch);
    attention_bwd(dq, dk, dv, dout, q, k, v, b, s, h, g, dh, scratch);
    gpu_call(t, attention_fwd_cuda(&t->ctx, d_out, d_p, d_q, d_k, d_v, b, s, h, g, dh),
             "attention_fwd_cuda");
    gpu_call(t, attention_bwd_cuda(&t->ctx, d_dq, d_dk, d_dv, d_dout, d_q, d_k, d_v, d_p, b, s, h,
                                   g, dh, d_scr), "attention_bwd_cuda");
    float *g_out = gpu_fetch(t, d_out, nq), *g_p = gpu_fetch(t, d_p, np);
    float *g_dq = gpu_fetch(t, d_dq, nq), *g_dk = gpu_fetch(t, d_dk, nk), *g_dv = gpu_fetch(t, d_dv, nk);
    char name[96];
    snprintf(name, sizeof name, "attention_fwd out s%d h%d g%d", s, h, g);
    gpu_check_rel(t, name, g_out, out, nq, TOL);
    snprintf(name, sizeof name, "attention_fwd probs s%d h%d g%d", s, h, g);
    gpu_check_rel(t, name, g_p, probs, np, TOL);
    snprintf(name, sizeof name, "attention_bwd dq (+=) s%d", s);
    gpu_check_rel(t, name, g_dq, dq, nq, TOL);
    snprintf(name, sizeof name, "attention_bwd dk (+=) s%d", s);
    gpu_check_rel(t, name, g_dk, dk, nk, TOL);
    snprintf(name, sizeof name, "attention_bwd dv (+=) s%d", s);
    gpu_check_rel(t, name, g_dv, dv, nk, TOL);
    free(q), free(k), free(v), free(dout), free(dq), free(dk), free(dv), free(out), free(probs),
        free(scratch), free(g_out), free(g_p), free(g_dq), free(g_dk), free(g_dv);
}

int main(void)
{
    gpu_suite t;
    gpu_suite_begin(&t, "llama_ops", 6);
    test_rmsnorm(&t);
    test_rope(&t);
    test_swiglu(&t);
    test_linear(&t);
    test_attention(&t, 2, 37, 8, 2, 32);   /* GQA r = 4, s not a block multiple */
    test_attention(&t, 1, 300, 4, 4, 64);  /* MHA, s past the CPU's 128-row blocks */
    return gpu_suite_end(&t);
}
