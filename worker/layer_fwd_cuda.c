/* layer_fwd_cuda.c — see layer_fwd_cuda.h. */
#include "worker/layer_fwd_cuda.h"

#include <string.h>

#include "error.h"

#define F "worker/layer_fwd_cuda.c"

#ifdef FLATQ_HAVE_CUDA
#include "coordinator/progress.h"
#include "kernels/llama_layer_cuda.h"

static int batch_cap(const llama_config *c, int n, int s, int b)
{
    if (b > n)
        b = n;
    double per_seq = (double)c->n_heads * s * s * sizeof(float);
    int cap = (int)((2.0 * (1 << 30)) / per_seq);
    if (b > cap)
        b = cap;
    return b < 1 ? 1 : b;
}

int llama_layer_fwd_batches_cuda(fq_cuda_ctx *ctx, const llama_layer *l, const llama_config *c,
                                 float *x, int n, int s, int b, int write_back, fq_stats *stats,
                                 int tf32, layer_fwd_times *times)
{
    if (!ctx || !l || !c || !x || n < 1 || s < 1 || b < 1)
        return fq_error(F ":llama_layer_fwd_batches_cuda: bad arguments (expected a context, "
                        "a layer, x and n, s, b >= 1)");
    if (stats && (stats->d != c->hidden || stats->f != c->intermediate))
        return fq_error(F ":llama_layer_fwd_batches_cuda: stats for [%d, %d] (expected "
                        "fq_stats_init for [%d, %d])", stats->d, stats->f, c->hidden,
                        c->intermediate);
    if (stats && sizeof(real) != sizeof(float))
        return fq_error(F ":llama_layer_fwd_batches_cuda: stats need real = float (expected "
                        "the fp32 build)");
    size_t d = (size_t)c->hidden, seq = (size_t)s;
    b = batch_cap(c, n, s, b);
    int rc = FQ_ERR;
    rope_table rope;
    llama_layer_dev dl;
    llama_scratch_dev w;
    fq_stats_dev st;
    float *dx = NULL, *dcos = NULL, *dsin = NULL;
    memset(&dl, 0, sizeof dl);
    memset(&w, 0, sizeof w);
    memset(&st, 0, sizeof st);
    memset(&rope, 0, sizeof rope);
    layer_fwd_times tm = {0, 0, 0};
    const int math = ctx->math;
    if (tf32 && fq_cuda_set_math(ctx, FQ_MATH_TF32) != FQ_OK)
        return FQ_ERR;
    double t0 = progress_monotonic_seconds();
    size_t half = seq * (size_t)(c->head_dim / 2);
    const float *host[9] = {l->attn_norm, l->wq, l->wk, l->wv, l->wo, l->mlp_norm, l->wgate,
                            l->wup, l->wdown};
    if (rope_table_init(&rope, c, s) != FQ_OK ||
        llama_layer_dev_upload(ctx, &dl, c, host) != FQ_OK ||
        fq_cuda_alloc(&dcos, half, "RoPE cos") || fq_cuda_alloc(&dsin, half, "RoPE sin") ||
        fq_cuda_upload(ctx, dcos, rope.cos, half) || fq_cuda_upload(ctx, dsin, rope.sin, half) ||
        llama_scratch_dev_init(&w, c, b, s) != FQ_OK ||
        fq_cuda_alloc(&dx, (size_t)b * seq * d, "layer forward batch") ||
        (stats && fq_stats_dev_init(ctx, &st, c) != FQ_OK))
        goto done;
    tm.upload_s += progress_monotonic_seconds() - t0;
    for (int s0 = 0; s0 < n; s0 += b) {
        int nb = s0 + b <= n ? b : n - s0;
        float *hx = x + (size_t)s0 * seq * d;
        size_t cnt = (size_t)nb * seq * d;
        double a = progress_monotonic_seconds();
        if (fq_cuda_upload(ctx, dx, hx, cnt) != FQ_OK)
            goto done;
        double m = progress_monotonic_seconds();
        if (llama_layer_fwd_cuda(ctx, dx, &dl, c, dcos, dsin, nb, s, &w, stats ? &st : NULL) !=
                FQ_OK ||
            fq_cuda_sync(ctx) != FQ_OK)
            goto done;
        double e = progress_monotonic_seconds();
        if (write_back && fq_cuda_download(ctx, hx, dx, cnt) != FQ_OK)
            goto done;
        tm.upload_s += m - a;
        tm.compute_s += e - m;
        tm.download_s += progress_monotonic_seconds() - e;
    }
    if (stats) {
        if (fq_stats_dev_download(ctx, &st, (float *)(void *)stats->attn_in,
                                  (float *)(void *)stats->mlp_in,
                                  (float *)(void *)stats->down_in) != FQ_OK)
            goto done;
        stats->tokens = (long)n * s;
    }
    rc = FQ_OK;
done:
    fq_cuda_set_math(ctx, math);
    fq_stats_dev_free(&st);
    fq_cuda_free(dx);
    fq_cuda_free(dcos);
    fq_cuda_free(dsin);
    llama_scratch_dev_free(&w);
    llama_layer_dev_free(&dl);
    rope_table_free(&rope);
    if (rc == FQ_OK && times) {
        times->upload_s += tm.upload_s;
        times->compute_s += tm.compute_s;
        times->download_s += tm.download_s;
    }
    return rc;
}

#else /* built without the CUDA backend */

int llama_layer_fwd_batches_cuda(fq_cuda_ctx *ctx, const llama_layer *l, const llama_config *c,
                                 float *x, int n, int s, int b, int write_back, fq_stats *stats,
                                 int tf32, layer_fwd_times *times)
{
    (void)ctx, (void)l, (void)c, (void)x, (void)n, (void)s, (void)b, (void)write_back;
    (void)stats, (void)tf32, (void)times;
    return fq_error("layer forward on a GPU: this flatq was built without the CUDA backend "
                    "(expected nvcc at build time, or device: cpu)");
}

#endif
