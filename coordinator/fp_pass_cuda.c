/* fp_pass_cuda.c — see fp_pass_cuda.h. */
#include "coordinator/fp_pass_cuda.h"
#include "coordinator/progress.h"
#include "error.h"

#include <stdlib.h>
#include <string.h>

#define F "coordinator/fp_pass_cuda.c"

#ifdef FLATQ_HAVE_CUDA

#include "kernels/llama_layer_cuda.h"

typedef struct {
    fq_cuda_ctx ctx;
} gpu_state;

int fp_pass_cuda_init(fp_pass_cuda *g, fp_pass *p, int device)
{
    if (!g || !p || !p->cfg || !p->x || device < 0)
        return fq_error(F ":fp_pass_cuda_init: bad arguments (expected an initialised fp_pass "
                        "and a device >= 0)");
    memset(g, 0, sizeof *g);
    int count = 0;
    if (fq_cuda_device_count(&count) != FQ_OK)
        return fq_error_wrap("FP pass on GPU %d", device);
    if (device >= count)
        return fq_error("FP pass: GPU %d requested but %d visible (expected device < count)",
                        device, count);
    gpu_state *s = fq_calloc(1, sizeof *s, "GPU FP pass state");
    if (!s)
        return FQ_ERR;
    if (fq_cuda_init(&s->ctx, device) != FQ_OK) {
        free(s);
        return fq_error_wrap("FP pass on GPU %d", device);
    }
    g->p = p;
    g->device = device;
    g->gpu = s;
    return FQ_OK;
}

void fp_pass_cuda_free(fp_pass_cuda *g)
{
    if (!g || !g->gpu)
        return;
    gpu_state *s = g->gpu;
    fq_cuda_free_ctx(&s->ctx);
    free(s);
    g->gpu = NULL;
}

/* Sequences per GPU batch: the job's, with b·h·s² attention floats ≤ 2 GiB. */
static int gpu_batch(const fp_pass *p)
{
    int b = p->batch < p->nsamples ? p->batch : p->nsamples;
    double per_seq = (double)p->cfg->n_heads * p->seqlen * p->seqlen * sizeof(float);
    int cap = (int)((2.0 * (1 << 30)) / per_seq);
    if (cap < 1)
        cap = 1;
    if (b > cap)
        b = cap;
    return b < 1 ? 1 : b;
}

static int run_layer(fp_pass_cuda *g, int layer)
{
    fp_pass *p = g->p;
    gpu_state *s = g->gpu;
    fq_cuda_ctx *ctx = &s->ctx;
    const llama_config *c = p->cfg;
    size_t d = (size_t)c->hidden, seq = (size_t)p->seqlen;
    int b = gpu_batch(p), rc = FQ_ERR;
    llama_layer l;
    rope_table rope;
    llama_layer_dev dl;
    llama_scratch_dev w;
    fq_stats_dev st;
    float *dx = NULL, *dcos = NULL, *dsin = NULL;
    memset(&dl, 0, sizeof dl);
    memset(&w, 0, sizeof w);
    memset(&st, 0, sizeof st);
    memset(&rope, 0, sizeof rope);
    double t0 = progress_monotonic_seconds();
    if (llama_layer_load(p->ck, c, layer, &l) != FQ_OK)
        return FQ_ERR;
    size_t half = (size_t)p->seqlen * (c->head_dim / 2);
    const float *host[9] = {l.attn_norm, l.wq, l.wk, l.wv, l.wo, l.mlp_norm, l.wgate, l.wup,
                            l.wdown};
    if (rope_table_init(&rope, c, p->seqlen) != FQ_OK ||
        llama_layer_dev_upload(ctx, &dl, c, host) != FQ_OK ||
        fq_cuda_alloc(&dcos, half, "RoPE cos") || fq_cuda_alloc(&dsin, half, "RoPE sin") ||
        fq_cuda_upload(ctx, dcos, rope.cos, half) || fq_cuda_upload(ctx, dsin, rope.sin, half) ||
        llama_scratch_dev_init(&w, c, b, p->seqlen) != FQ_OK ||
        fq_cuda_alloc(&dx, (size_t)b * seq * d, "FP pass batch") ||
        (g->stats && fq_stats_dev_init(ctx, &st, c) != FQ_OK))
        goto done;
    g->upload_s += progress_monotonic_seconds() - t0;
    for (int s0 = 0; s0 < p->nsamples; s0 += b) {
        int nb = s0 + b <= p->nsamples ? b : p->nsamples - s0;
        float *hx = p->x + (size_t)s0 * seq * d;
        size_t cnt = (size_t)nb * seq * d;
        double a = progress_monotonic_seconds();
        if (fq_cuda_upload(ctx, dx, hx, cnt) != FQ_OK)
            goto done;
        double m = progress_monotonic_seconds();
        if (llama_layer_fwd_cuda(ctx, dx, &dl, c, dcos, dsin, nb, p->seqlen, &w,
                                 g->stats ? &st : NULL) != FQ_OK ||
            fq_cuda_sync(ctx) != FQ_OK)
            goto done;
        double e = progress_monotonic_seconds();
        if (fq_cuda_download(ctx, hx, dx, cnt) != FQ_OK)
            goto done;
        g->upload_s += m - a;
        g->compute_s += e - m;
        g->download_s += progress_monotonic_seconds() - e;
    }
    if (g->stats) {
        fq_stats *hs = g->stats;
        if (hs->d != c->hidden || hs->f != c->intermediate) {
            fq_error(F ":run_layer: stats for [%d, %d] (expected fq_stats_init for this model)",
                     hs->d, hs->f);
            goto done;
        }
        if (sizeof(real) != sizeof(float)) {
            fq_error(F ":run_layer: stats need real = float (expected the fp32 build)");
            goto done;
        }
        if (fq_stats_dev_download(ctx, &st, (float *)(void *)hs->attn_in,
                                  (float *)(void *)hs->mlp_in, (float *)(void *)hs->down_in))
            goto done;
        hs->tokens = (long)p->nsamples * p->seqlen;
    }
    rc = FQ_OK;
done:
    fq_stats_dev_free(&st);
    fq_cuda_free(dx);
    fq_cuda_free(dcos);
    fq_cuda_free(dsin);
    llama_scratch_dev_free(&w);
    llama_layer_dev_free(&dl);
    rope_table_free(&rope);
    llama_layer_free(&l);
    if (rc != FQ_OK)
        return fq_error_wrap("GPU %d, layer %d", g->device, layer);
    return FQ_OK;
}

int fp_pass_produce_cuda(void *vctx, int boundary)
{
    fp_pass_cuda *g = vctx;
    if (!g || !g->p || !g->gpu)
        return fq_error(F ":fp_pass_produce_cuda: context not initialised (expected "
                        "fp_pass_cuda_init)");
    fp_pass *p = g->p;
    if (boundary == 0 || layer_cache_valid(p->cache_dir, boundary, p->fingerprint) == 1)
        return fp_pass_produce(p, boundary); /* cache reuse and the embedding gather */
    if (fp_pass_load_input(p, boundary) != FQ_OK)
        return fq_error_wrap("FP pass, boundary %d", boundary);
    double t0 = progress_monotonic_seconds();
    if (run_layer(g, boundary - 1) != FQ_OK)
        return fq_error_wrap("FP pass, boundary %d", boundary);
    p->seconds += progress_monotonic_seconds() - t0;
    if (fp_pass_commit_boundary(p, boundary) != FQ_OK)
        return fq_error_wrap("FP pass, boundary %d", boundary);
    return FQ_OK;
}

#else /* built without the CUDA backend */

int fp_pass_cuda_init(fp_pass_cuda *g, fp_pass *p, int device)
{
    (void)p;
    if (g)
        memset(g, 0, sizeof *g);
    return fq_error("FP pass on GPU %d: this flatq was built without the CUDA backend "
                    "(expected nvcc at build time, or device: cpu)", device);
}

void fp_pass_cuda_free(fp_pass_cuda *g)
{
    (void)g;
}

int fp_pass_produce_cuda(void *ctx, int boundary)
{
    (void)ctx;
    return fq_error("FP pass, boundary %d: this flatq was built without the CUDA backend "
                    "(expected nvcc at build time, or device: cpu)", boundary);
}

#endif
