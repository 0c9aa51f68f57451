/* fp_pass_cuda.c — see fp_pass_cuda.h. */
#include "coordinator/fp_pass_cuda.h"
#include "coordinator/progress.h"
#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F "coordinator/fp_pass_cuda.c"

#ifdef FLATQ_HAVE_CUDA

#include "worker/layer_fwd_cuda.h"

typedef struct {
    fq_cuda_ctx ctx;
    void *pinned; /* p->x once page-locked */
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
    /* x goes up and comes back once per layer (8.6 GB each way for a 70B boundary):
     * pinned, the copies run at the link's speed instead of ~4-6 GB/s (issue 6) */
    size_t bytes = sizeof(float) * (size_t)p->nsamples * p->seqlen * p->cfg->hidden;
    if (fq_cuda_host_register(p->x, bytes) == FQ_OK)
        s->pinned = p->x;
    else
        fprintf(stderr, "flatq: note: the FP pass's %.1f GB buffer stays pageable (%s)\n",
                bytes / 1e9, fq_errmsg());
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
    fq_cuda_host_unregister(s->pinned);
    fq_cuda_free_ctx(&s->ctx);
    free(s);
    g->gpu = NULL;
}

static int run_layer(fp_pass_cuda *g, int layer)
{
    fp_pass *p = g->p;
    gpu_state *s = g->gpu;
    llama_layer l;
    if (llama_layer_load(p->ck, p->cfg, layer, &l) != FQ_OK)
        return fq_error_wrap("GPU %d, layer %d", g->device, layer);
    layer_fwd_times tm = {0, 0, 0};
    int rc = llama_layer_fwd_batches_cuda(&s->ctx, &l, p->cfg, p->x, p->nsamples, p->seqlen,
                                          p->batch, 1, g->stats, g->tf32, &tm);
    llama_layer_free(&l);
    if (rc != FQ_OK)
        return fq_error_wrap("GPU %d, layer %d", g->device, layer);
    g->upload_s += tm.upload_s;
    g->compute_s += tm.compute_s;
    g->download_s += tm.download_s;
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
    /* the scheduler calls this from its FP pass thread (coordinator/scheduler.c) */
    if (fq_cuda_bind(&((gpu_state *)g->gpu)->ctx) != FQ_OK ||
        fp_pass_load_input(p, boundary) != FQ_OK)
        return fq_error_wrap("FP pass, boundary %d", boundary);
    double t0 = progress_monotonic_seconds();
    if (run_layer(g, boundary - 1) != FQ_OK)
        return fq_error_wrap("FP pass, boundary %d", boundary);
    p->seconds += progress_monotonic_seconds() - t0;
    if (fp_pass_commit_boundary(p, boundary) != FQ_OK)
        return fq_error_wrap("FP pass, boundary %d", boundary);
    return FQ_OK;
}

int fp_pass_flush_cuda(void *ctx)
{
    fp_pass_cuda *g = ctx;
    return g && g->p ? fp_pass_flush(g->p) : FQ_OK;
}

#else /* built without the CUDA backend */

int fp_pass_flush_cuda(void *ctx)
{
    (void)ctx;
    return FQ_OK;
}

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
