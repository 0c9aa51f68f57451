/* test_gpu_quantizer.c — kernels/quantizer.cu against core/quantizer.c.
 *
 * Forward outputs and scales (and zero points) must be BIT-EXACT: the same inputs must give
 * the same quantization codes as the CPU. Backward: input gradients to 1e-5 (the scale
 * gradient is a row sum in another order), shared clip-logit gradients to 1e-4 (sums over
 * all rows of signed terms, so cancellation magnifies reordering). The inputs include the
 * branches that matter: rows with tied extrema, an all-zero row (t = 0 ⇒ s = 1 / the
 * asymmetric both-zero branch), all-positive and all-negative rows, outlier channels.
 */
#include "gpu_check.h"
#include "quantizer.h"

#define TOL_G 1e-5
#define TOL_CLIP 1e-4

/* Random rows with the special cases planted in the first rows. */
static void fill_rows(gpu_suite *t, float *x, int rows, int len)
{
    gpu_fill_normal(t, x, (size_t)rows * len, 1.0);
    for (int r = 0; r < rows; r++)
        if (r % 7 == 3)
            x[(size_t)r * len + (r * 13) % len] *= 40.0f; /* an outlier */
    memset(x, 0, sizeof(float) * (size_t)len);                   /* row 0: all zero */
    for (int j = 0; j < len; j++) {
        x[(size_t)1 * len + j] = fabsf(x[(size_t)1 * len + j]);  /* row 1: all positive */
        x[(size_t)2 * len + j] = -fabsf(x[(size_t)2 * len + j]); /* row 2: all negative */
    }
    x[(size_t)4 * len + 0] = x[(size_t)4 * len + 5] = 3.5f;      /* row 4: tied max */
    x[(size_t)4 * len + 1] = x[(size_t)4 * len + 6] = -3.5f;     /* and tied min = −max */
    for (int j = 0; j < len; j++)                                /* row 5: small integers */
        x[(size_t)5 * len + j] = (float)((j % 17) - 8) * 0.25f;
}

static void test_act_sym(gpu_suite *t, int rows, int k, int blocks, int bits)
{
    size_t n = (size_t)rows * k, ns = (size_t)rows * blocks;
    const float cmax = 2.1f, cmin = 3.3f;
    float *x = gpu_host(n), *gout = gpu_host(n);
    fill_rows(t, x, rows, k);
    gpu_fill_normal(t, gout, n, 1.0);
    float *out = gpu_host(n), *scale = gpu_host(ns), *gin = gpu_host(n);
    float gc[2] = {0.25f, -0.5f};
    if (quant_act_sym_fwd(out, scale, x, rows, k, blocks, bits, cmax, cmin) ||
        quant_act_sym_bwd(gin, &gc[0], &gc[1], gout, x, scale, rows, k, blocks, bits, cmax, cmin))
        gpu_die(t, "CPU quant_act_sym");
    float *d_x = gpu_dev_copy(t, x, n), *d_gout = gpu_dev_copy(t, gout, n);
    float *d_out = gpu_dev_poison(t, n), *d_scale = gpu_dev_poison(t, ns);
    float *d_gin = gpu_dev_poison(t, n), *d_gc = gpu_dev_copy(t, (float[]){0.25f, -0.5f}, 2);
    gpu_call(t, quant_act_sym_fwd_cuda(&t->ctx, d_out, d_scale, d_x, rows, k, blocks, bits, cmax,
                                       cmin), "quant_act_sym_fwd_cuda");
    gpu_call(t, quant_act_sym_bwd_cuda(&t->ctx, d_gin, d_gc, d_gc + 1, d_gout, d_x, d_scale, rows,
                                       k, blocks, bits, cmax, cmin), "quant_act_sym_bwd_cuda");
    float *g_out = gpu_fetch(t, d_out, n), *g_scale = gpu_fetch(t, d_scale, ns);
    float *g_gin = gpu_fetch(t, d_gin, n), *g_gc = gpu_fetch(t, d_gc, 2);
    char name[96];
    snprintf(name, sizeof name, "act_sym_fwd out %db blocks%d", bits, blocks);
    gpu_check_exact(t, name, g_out, out, n);
    snprintf(name, sizeof name, "act_sym_fwd scale %db blocks%d", bits, blocks);
    gpu_check_exact(t, name, g_scale, scale, ns);
    snprintf(name, sizeof name, "act_sym_bwd g_in %db blocks%d", bits, blocks);
    gpu_check_rel(t, name, g_gin, gin, n, TOL_G);
    snprintf(name, sizeof name, "act_sym_bwd g_clip (+=) %db", bits);
    gpu_check_rel(t, name, g_gc, gc, 2, TOL_CLIP);
    free(x), free(gout), free(out), free(scale), free(gin), free(g_out), free(g_scale),
        free(g_gin), free(g_gc);
}

static void test_kv_asym(gpu_suite *t, int rows, int len, int bits)
{
    size_t n = (size_t)rows * len;
    const float cmax = 4.0f, cmin = 1.5f;
    float *x = gpu_host(n), *gout = gpu_host(n);
    fill_rows(t, x, rows, len);
    gpu_fill_normal(t, gout, n, 1.0);
    float *out = gpu_host(n), *scale = gpu_host(rows), *zero = gpu_host(rows), *gin = gpu_host(n);
    float gc[2] = {1.0f, 2.0f};
    if (quant_kv_asym_fwd(out, scale, zero, x, rows, len, bits, cmax, cmin) ||
        quant_kv_asym_bwd(gin, &gc[0], &gc[1], gout, x, scale, zero, rows, len, bits, cmax, cmin))
        gpu_die(t, "CPU quant_kv_asym");
    float *d_x = gpu_dev_copy(t, x, n), *d_gout = gpu_dev_copy(t, gout, n);
    float *d_out = gpu_dev_poison(t, n), *d_scale = gpu_dev_poison(t, rows);
    float *d_zero = gpu_dev_poison(t, rows), *d_gin = gpu_dev_poison(t, n);
    float *d_gc = gpu_dev_copy(t, (float[]){1.0f, 2.0f}, 2);
    gpu_call(t, quant_kv_asym_fwd_cuda(&t->ctx, d_out, d_scale, d_zero, d_x, rows, len, bits, cmax,
                                       cmin), "quant_kv_asym_fwd_cuda");
    gpu_call(t, quant_kv_asym_bwd_cuda(&t->ctx, d_gin, d_gc, d_gc + 1, d_gout, d_x, d_scale, d_zero,
                                       rows, len, bits, cmax, cmin), "quant_kv_asym_bwd_cuda");
    float *g_out = gpu_fetch(t, d_out, n), *g_scale = gpu_fetch(t, d_scale, rows);
    float *g_zero = gpu_fetch(t, d_zero, rows), *g_gin = gpu_fetch(t, d_gin, n);
    float *g_gc = gpu_fetch(t, d_gc, 2);
    char name[96];
    snprintf(name, sizeof name, "kv_asym_fwd out %db len%d", bits, len);
    gpu_check_exact(t, name, g_out, out, n);
    snprintf(name, sizeof name, "kv_asym_fwd scale %db", bits);
    gpu_check_exact(t, name, g_scale, scale, rows);
    snprintf(name, sizeof name, "kv_asym_fwd zero %db", bits);
    gpu_check_exact(t, name, g_zero, zero, rows);
    snprintf(name, sizeof name, "kv_asym_bwd g_in %db", bits);
    gpu_check_rel(t, name, g_gin, gin, n, TOL_G);
    snprintf(name, sizeof name, "kv_asym_bwd g_clip (+=) %db", bits);
    gpu_check_rel(t, name, g_gc, gc, 2, TOL_CLIP);
    free(x), free(gout), free(out), free(scale), free(zero), free(gin), free(g_out),
        free(g_scale), free(g_zero), free(g_gin), free(g_gc);
}

static void test_weight_lwc(gpu_suite *t, int rows, int cols, int bits)
{
    size_t n = (size_t)rows * cols;
    float *w = gpu_host(n), *gout = gpu_host(n), *a = gpu_host(rows), *b = gpu_host(rows);
    fill_rows(t, w, rows, cols);
    for (size_t i = 0; i < n; i++)
        w[i] *= 0.02f;
    gpu_fill_normal(t, gout, n, 1.0);
    for (int r = 0; r < rows; r++) { /* logits around the init 4.0, some strongly clipping */
        a[r] = (float)(4.0 + 3.0 * (gpu_uniform(t) - 0.7));
        b[r] = (float)(4.0 + 3.0 * (gpu_uniform(t) - 0.7));
    }
    float *ga = gpu_host(rows), *gb = gpu_host(rows);
    gpu_fill_normal(t, ga, rows, 1.0);
    gpu_fill_normal(t, gb, rows, 1.0);
    float *d_ga = gpu_dev_copy(t, ga, rows), *d_gb = gpu_dev_copy(t, gb, rows);
    float *out = gpu_host(n), *scale = gpu_host(rows), *gw = gpu_host(n);
    if (quant_weight_lwc_fwd(out, scale, w, rows, cols, bits, a, b) ||
        quant_weight_lwc_bwd(gw, ga, gb, gout, w, scale, rows, cols, bits, a, b))
        gpu_die(t, "CPU quant_weight_lwc");
    float *d_w = gpu_dev_copy(t, w, n), *d_gout = gpu_dev_copy(t, gout, n);
    float *d_a = gpu_dev_copy(t, a, rows), *d_b = gpu_dev_copy(t, b, rows);
    float *d_out = gpu_dev_poison(t, n), *d_scale = gpu_dev_poison(t, rows);
    float *d_gw = gpu_dev_poison(t, n);
    gpu_call(t, quant_weight_lwc_fwd_cuda(&t->ctx, d_out, d_scale, d_w, rows, cols, bits, d_a, d_b),
             "quant_weight_lwc_fwd_cuda");
    gpu_call(t, quant_weight_lwc_bwd_cuda(&t->ctx, d_gw, d_ga, d_gb, d_gout, d_w, d_scale, rows,
                                          cols, bits, d_a, d_b), "quant_weight_lwc_bwd_cuda");
    float *g_out = gpu_fetch(t, d_out, n), *g_scale = gpu_fetch(t, d_scale, rows);
    float *g_gw = gpu_fetch(t, d_gw, n), *g_ga = gpu_fetch(t, d_ga, rows);
    float *g_gb = gpu_fetch(t, d_gb, rows);
    char name[96];
    snprintf(name, sizeof name, "weight_lwc_fwd out %db", bits);
    gpu_check_exact(t, name, g_out, out, n);
    snprintf(name, sizeof name, "weight_lwc_fwd scale %db", bits);
    gpu_check_exact(t, name, g_scale, scale, rows);
    snprintf(name, sizeof name, "weight_lwc_bwd g_w %db", bits);
    gpu_check_rel(t, name, g_gw, gw, n, TOL_G);
    snprintf(name, sizeof name, "weight_lwc_bwd g_a (+=) %db", bits);
    gpu_check_rel(t, name, g_ga, ga, rows, TOL_G);
    snprintf(name, sizeof name, "weight_lwc_bwd g_b (+=) %db", bits);
    gpu_check_rel(t, name, g_gb, gb, rows, TOL_G);
    free(w), free(gout), free(a), free(b), free(ga), free(gb), free(out), free(scale), free(gw),
        free(g_out), free(g_scale), free(g_gw), free(g_ga), free(g_gb);
}

int main(void)
{
    gpu_suite t;
    gpu_suite_begin(&t, "quantizer", 7);
    test_act_sym(&t, 300, 768, 1, 4);
    test_act_sym(&t, 300, 768, 4, 4);
    test_act_sym(&t, 129, 1000, 1, 8);
    test_kv_asym(&t, 512, 64, 4);
    test_kv_asym(&t, 200, 128, 3);
    test_weight_lwc(&t, 160, 1000, 4);
    test_weight_lwc(&t, 64, 4096, 4);
    /* the LWC kernels' other paths: rows staged by scalar loads (998 is not a multiple of
     * 4), a 70B down_proj row (the backward stages w alone), and a row too long for any
     * staging (60000: 240 KB) */
    test_weight_lwc(&t, 33, 998, 4);
    test_weight_lwc(&t, 24, 28672, 4);
    test_weight_lwc(&t, 6, 60000, 4); /* fill_rows shapes rows 0-5 */
    return gpu_suite_end(&t);
}
