/* test_gpu_kron.c — kernels/kron.cu against core/kron.c: the Kronecker transform (input
 * and factor gradients), its weight-side twin, per-channel scales, single k×k and head
 * transforms (fp32, tolerance 1e-5; then again with split-TF32 GEMMs, which must meet the
 * same 1e-5; measured ≤ 1.0e-6 on H200). Parameter gradients start random on both sides: they
 * are accumulated (+=). Factor shapes come from the CPU's own split rule.
 */
#include "gpu_check.h"
#include "kron.h"

#define TOL 1e-5

static void test_kron(gpu_suite *t, int rows, int n, int weight_side)
{
    int n1, n2;
    if (kron_split(n, &n1, &n2, NULL))
        gpu_die(t, "kron_split");
    size_t nx = (size_t)rows * n;
    float *x = gpu_host(nx), *gy = gpu_host(nx), *L = gpu_host((size_t)n1 * n1);
    float *R = gpu_host((size_t)n2 * n2), *gL = gpu_host((size_t)n1 * n1);
    float *gR = gpu_host((size_t)n2 * n2), *y = gpu_host(nx), *gx = gpu_host(nx);
    float *work = gpu_host((size_t)kron_bwd_work(rows, n));
    gpu_fill_normal(t, x, nx, 1.0);
    gpu_fill_normal(t, gy, nx, 1.0);
    gpu_fill_normal(t, L, (size_t)n1 * n1, 1.0 / sqrt(n1));
    gpu_fill_normal(t, R, (size_t)n2 * n2, 1.0 / sqrt(n2));
    gpu_fill_normal(t, gL, (size_t)n1 * n1, 1.0);
    gpu_fill_normal(t, gR, (size_t)n2 * n2, 1.0);
    float *d_x = gpu_dev_copy(t, x, nx), *d_gy = gpu_dev_copy(t, gy, nx);
    float *d_L = gpu_dev_copy(t, L, (size_t)n1 * n1), *d_R = gpu_dev_copy(t, R, (size_t)n2 * n2);
    float *d_gL = gpu_dev_copy(t, gL, (size_t)n1 * n1), *d_gR = gpu_dev_copy(t, gR, (size_t)n2 * n2);
    float *d_y = gpu_dev_poison(t, nx), *d_gx = gpu_dev_poison(t, nx);
    float *d_work = gpu_dev_poison(t, (size_t)kron_bwd_work(rows, n));
    if (weight_side) {
        if (kron_weight_fwd(y, x, rows, n1, n2, L, R, work) ||
            kron_weight_bwd(gx, gL, gR, gy, x, rows, n1, n2, L, R, work))
            gpu_die(t, "CPU kron_weight");
        gpu_call(t, kron_weight_fwd_cuda(&t->ctx, d_y, d_x, rows, n1, n2, d_L, d_R, d_work),
                 "kron_weight_fwd_cuda");
        gpu_call(t, kron_weight_bwd_cuda(&t->ctx, d_gx, d_gL, d_gR, d_gy, d_x, rows, n1, n2, d_L,
                                         d_R, d_work), "kron_weight_bwd_cuda");
    } else {
        if (kron_fwd(y, x, rows, n1, n2, L, R, work) ||
            kron_bwd(gx, gL, gR, gy, x, rows, n1, n2, L, R, work))
            gpu_die(t, "CPU kron");
        gpu_call(t, kron_fwd_cuda(&t->ctx, d_y, d_x, rows, n1, n2, d_L, d_R, d_work),
                 "kron_fwd_cuda");
        gpu_call(t, kron_bwd_cuda(&t->ctx, d_gx, d_gL, d_gR, d_gy, d_x, rows, n1, n2, d_L, d_R,
                                  d_work), "kron_bwd_cuda");
    }
    float *g_y = gpu_fetch(t, d_y, nx), *g_gx = gpu_fetch(t, d_gx, nx);
    float *g_gL = gpu_fetch(t, d_gL, (size_t)n1 * n1), *g_gR = gpu_fetch(t, d_gR, (size_t)n2 * n2);
    const char *op = weight_side ? "kron_weight" : "kron";
    char name[96];
    snprintf(name, sizeof name, "%s_fwd n%d=%dx%d", op, n, n1, n2);
    gpu_check_rel(t, name, g_y, y, nx, TOL);
    snprintf(name, sizeof name, "%s_bwd g_x n%d", op, n);
    gpu_check_rel(t, name, g_gx, gx, nx, TOL);
    snprintf(name, sizeof name, "%s_bwd g_L (+=) n%d", op, n);
    gpu_check_rel(t, name, g_gL, gL, (size_t)n1 * n1, TOL);
    snprintf(name, sizeof name, "%s_bwd g_R (+=) n%d", op, n);
    gpu_check_rel(t, name, g_gR, gR, (size_t)n2 * n2, TOL);
    free(x), free(gy), free(L), free(R), free(gL), free(gR), free(y), free(gx), free(work);
    free(g_y), free(g_gx), free(g_gL), free(g_gR);
}

static void test_chscale(gpu_suite *t, int rows, int n, int weight_side)
{
    size_t nx = (size_t)rows * n;
    float *x = gpu_host(nx), *gy = gpu_host(nx), *c = gpu_host(n), *gc = gpu_host(n);
    float *y = gpu_host(nx), *gx = gpu_host(nx);
    gpu_fill_normal(t, x, nx, 1.0);
    gpu_fill_normal(t, gy, nx, 1.0);
    gpu_fill_normal(t, gc, n, 1.0);
    for (int j = 0; j < n; j++)
        c[j] = (float)(0.5 + gpu_uniform(t) * 2.0);
    float *d_x = gpu_dev_copy(t, x, nx), *d_gy = gpu_dev_copy(t, gy, nx), *d_c = gpu_dev_copy(t, c, n);
    float *d_gc = gpu_dev_copy(t, gc, n), *d_y = gpu_dev_poison(t, nx), *d_gx = gpu_dev_poison(t, nx);
    if (weight_side) {
        if (chscale_weight_fwd(y, x, c, rows, n) || chscale_weight_bwd(gx, gc, gy, x, c, rows, n))
            gpu_die(t, "CPU chscale_weight");
        gpu_call(t, chscale_weight_fwd_cuda(&t->ctx, d_y, d_x, d_c, rows, n), "chscale_weight_fwd_cuda");
        gpu_call(t, chscale_weight_bwd_cuda(&t->ctx, d_gx, d_gc, d_gy, d_x, d_c, rows, n),
                 "chscale_weight_bwd_cuda");
    } else {
        if (chscale_act_fwd(y, x, c, rows, n) || chscale_act_bwd(gx, gc, gy, x, c, rows, n))
            gpu_die(t, "CPU chscale_act");
        gpu_call(t, chscale_act_fwd_cuda(&t->ctx, d_y, d_x, d_c, rows, n), "chscale_act_fwd_cuda");
        gpu_call(t, chscale_act_bwd_cuda(&t->ctx, d_gx, d_gc, d_gy, d_x, d_c, rows, n),
                 "chscale_act_bwd_cuda");
    }
    float *g_y = gpu_fetch(t, d_y, nx), *g_gx = gpu_fetch(t, d_gx, nx), *g_gc = gpu_fetch(t, d_gc, n);
    const char *op = weight_side ? "chscale_weight" : "chscale_act";
    char name[96];
    snprintf(name, sizeof name, "%s_fwd", op);
    gpu_check_rel(t, name, g_y, y, nx, TOL);
    snprintf(name, sizeof name, "%s_bwd g_x", op);
    gpu_check_rel(t, name, g_gx, gx, nx, TOL);
    snprintf(name, sizeof name, "%s_bwd g_c (+=)", op);
    gpu_check_rel(t, name, g_gc, gc, n, TOL);
    free(x), free(gy), free(c), free(gc), free(y), free(gx), free(g_y), free(g_gx), free(g_gc);
}

static void test_vec(gpu_suite *t, int nvec, int k)
{
    size_t nx = (size_t)nvec * k, nm = (size_t)k * k;
    float *x = gpu_host(nx), *gy = gpu_host(nx), *M = gpu_host(nm), *gM = gpu_host(nm);
    float *y = gpu_host(nx), *gx = gpu_host(nx);
    gpu_fill_normal(t, x, nx, 1.0);
    gpu_fill_normal(t, gy, nx, 1.0);
    gpu_fill_normal(t, M, nm, 1.0 / sqrt(k));
    gpu_fill_normal(t, gM, nm, 1.0);
    float *d_x = gpu_dev_copy(t, x, nx), *d_gy = gpu_dev_copy(t, gy, nx), *d_M = gpu_dev_copy(t, M, nm);
    float *d_gM = gpu_dev_copy(t, gM, nm), *d_y = gpu_dev_poison(t, nx), *d_gx = gpu_dev_poison(t, nx);
    if (vec_transform_fwd(y, x, nvec, k, M) || vec_transform_bwd(gx, gM, gy, x, nvec, k, M))
        gpu_die(t, "CPU vec_transform");
    gpu_call(t, vec_transform_fwd_cuda(&t->ctx, d_y, d_x, nvec, k, d_M), "vec_transform_fwd_cuda");
    gpu_call(t, vec_transform_bwd_cuda(&t->ctx, d_gx, d_gM, d_gy, d_x, nvec, k, d_M),
             "vec_transform_bwd_cuda");
    float *g_y = gpu_fetch(t, d_y, nx), *g_gx = gpu_fetch(t, d_gx, nx), *g_gM = gpu_fetch(t, d_gM, nm);
    gpu_check_rel(t, "vec_transform_fwd", g_y, y, nx, TOL);
    gpu_check_rel(t, "vec_transform_bwd g_x", g_gx, gx, nx, TOL);
    gpu_check_rel(t, "vec_transform_bwd g_M (+=)", g_gM, gM, nm, TOL);
    free(x), free(gy), free(M), free(gM), free(y), free(gx), free(g_y), free(g_gx), free(g_gM);
}

static void test_head(gpu_suite *t, int tokens, int h, int dh)
{
    size_t nx = (size_t)tokens * h * dh, nm = (size_t)h * h;
    float *o = gpu_host(nx), *g1 = gpu_host(nx), *M = gpu_host(nm), *gM = gpu_host(nm);
    float *o1 = gpu_host(nx), *go = gpu_host(nx), *work = gpu_host(2 * nx);
    gpu_fill_normal(t, o, nx, 1.0);
    gpu_fill_normal(t, g1, nx, 1.0);
    gpu_fill_normal(t, M, nm, 1.0 / sqrt(h));
    gpu_fill_normal(t, gM, nm, 1.0);
    float *d_o = gpu_dev_copy(t, o, nx), *d_g1 = gpu_dev_copy(t, g1, nx), *d_M = gpu_dev_copy(t, M, nm);
    float *d_gM = gpu_dev_copy(t, gM, nm), *d_o1 = gpu_dev_poison(t, nx);
    float *d_go = gpu_dev_poison(t, nx), *d_work = gpu_dev_poison(t, 2 * nx);
    if (head_transform_fwd(o1, o, tokens, h, dh, M, work) ||
        head_transform_bwd(go, gM, g1, o, tokens, h, dh, M, work))
        gpu_die(t, "CPU head_transform");
    gpu_call(t, head_transform_fwd_cuda(&t->ctx, d_o1, d_o, tokens, h, dh, d_M, d_work),
             "head_transform_fwd_cuda");
    gpu_call(t, head_transform_bwd_cuda(&t->ctx, d_go, d_gM, d_g1, d_o, tokens, h, dh, d_M, d_work),
             "head_transform_bwd_cuda");
    float *g_o1 = gpu_fetch(t, d_o1, nx), *g_go = gpu_fetch(t, d_go, nx), *g_gM = gpu_fetch(t, d_gM, nm);
    gpu_check_rel(t, "head_transform_fwd", g_o1, o1, nx, TOL);
    gpu_check_rel(t, "head_transform_bwd g_o", g_go, go, nx, TOL);
    gpu_check_rel(t, "head_transform_bwd g_Mo (+=)", g_gM, gM, nm, TOL);
    free(o), free(g1), free(M), free(gM), free(o1), free(go), free(work), free(g_o1), free(g_go),
        free(g_gM);
}

int main(void)
{
    gpu_suite t;
    gpu_suite_begin(&t, "kron", 8);
    test_kron(&t, 257, 384, 0);  /* 16 x 24 */
    test_kron(&t, 64, 1000, 0);  /* n ≡ 0 mod 4: 25 x 40 */
    test_kron(&t, 96, 4096, 0);  /* 64 x 64 */
    test_kron(&t, 130, 384, 1);  /* weight side */
    test_chscale(&t, 300, 384, 0);
    test_chscale(&t, 300, 384, 1);
    test_vec(&t, 500, 64);
    test_head(&t, 200, 8, 48);
    /* split TF32 (ctx.split_transforms in a tensor-core mode): the same 1e-5 must hold */
    t.group = "kron-3xtf32";
    t.ctx.split_transforms = 1;
    gpu_call(&t, fq_cuda_set_math(&t.ctx, FQ_MATH_TF32), "fq_cuda_set_math");
    test_kron(&t, 257, 384, 0);
    test_kron(&t, 96, 4096, 0);
    test_kron(&t, 130, 384, 1);
    test_vec(&t, 500, 64);
    test_head(&t, 200, 8, 48);
    gpu_call(&t, fq_cuda_set_math(&t.ctx, FQ_MATH_FP32), "fq_cuda_set_math");
    t.ctx.split_transforms = 0;
    /* factor gradients with K = 2048 · 64 = 131072: the exact GEMMs split over K
     * (ctx->tallk_split) and folded in a fixed order */
    t.group = "kron";
    test_kron(&t, 2048, 4096, 1);
    return gpu_suite_end(&t);
}
