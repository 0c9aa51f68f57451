/* fp_pass.c — see fp_pass.h. */
#include "coordinator/fp_pass.h"
#include "coordinator/progress.h"
#include "error.h"
#include "parallel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fp_pass_init(fp_pass *p)
{
    size_t n = (size_t)p->nsamples * p->seqlen * p->cfg->hidden;
    p->x = fq_malloc(sizeof(float) * n, "FP pass activations");
    p->x_boundary = -1;
    p->seconds = 0;
    p->commit_s = 0;
    p->produced = p->reused = 0;
    return p->x ? FQ_OK : FQ_ERR;
}

void fp_pass_free(fp_pass *p)
{
    free(p->x);
    p->x = NULL;
}

/* x ← x rounded to the cache's dtype, in chunks on the I/O threads: 2 G values of a 70B
 * boundary took seconds on one core, every boundary, on the FP pass's critical path */
static int round_range(void *ctx, size_t a, size_t b, int t)
{
    (void)t;
    const fp_pass *p = ctx;
    if (p->dtype == LAYER_CACHE_BF16)
        for (size_t k = a; k < b; k++)
            p->x[k] = fq_bf16_to_f32(fq_f32_to_bf16(p->x[k]));
    else
        for (size_t k = a; k < b; k++)
            p->x[k] = fq_f16_to_f32(fq_f32_to_f16(p->x[k]));
    return FQ_OK;
}

int fp_pass_commit_boundary(fp_pass *p, int boundary)
{
    double t0 = progress_monotonic_seconds();
    if (layer_cache_write(p->cache_dir, boundary, p->fingerprint, p->dtype, p->x,
                          (size_t)p->nsamples, (size_t)p->seqlen, (size_t)p->cfg->hidden) != FQ_OK) {
        if (p->dtype != LAYER_CACHE_F16)
            return FQ_ERR;
        /* fp16 overflows on some LLaMA residual channels: keep going in bf16 */
        fprintf(stderr, "flatq: note: boundary %d does not fit fp16 (%s); the cache continues "
                        "in bf16\n", boundary, fq_errmsg());
        p->dtype = LAYER_CACHE_BF16;
        if (layer_cache_write(p->cache_dir, boundary, p->fingerprint, p->dtype, p->x,
                              (size_t)p->nsamples, (size_t)p->seqlen,
                              (size_t)p->cfg->hidden) != FQ_OK)
            return FQ_ERR;
    }
    size_t n = (size_t)p->nsamples * p->seqlen * p->cfg->hidden;
    if ((p->dtype == LAYER_CACHE_BF16 || p->dtype == LAYER_CACHE_F16) &&
        fq_parallel_ranges(n, (size_t)1 << 22, 0, round_range, p) != FQ_OK)
        return FQ_ERR;
    p->commit_s += progress_monotonic_seconds() - t0;
    p->x_boundary = boundary;
    p->produced++;
    return FQ_OK;
}

static int load_boundary(fp_pass *p, int boundary)
{
    float *x;
    layer_cache_header h;
    if (layer_cache_read(p->cache_dir, boundary, p->fingerprint, &x, &h) != FQ_OK)
        return FQ_ERR;
    memcpy(p->x, x, sizeof(float) * (size_t)p->nsamples * p->seqlen * p->cfg->hidden);
    free(x);
    p->x_boundary = boundary;
    return FQ_OK;
}

int fp_pass_load_input(fp_pass *p, int boundary)
{
    if (boundary < 1 || p->x_boundary == boundary - 1)
        return FQ_OK;
    return load_boundary(p, boundary - 1);
}

static int compute_boundary(fp_pass *p, int boundary)
{
    const llama_config *c = p->cfg;
    size_t d = (size_t)c->hidden;
    double t0 = progress_monotonic_seconds();
    if (boundary == 0) {
        real *embed;
        int64_t shape[2] = {c->vocab, c->hidden};
        if (llama_check_ids(c, p->ids, (size_t)p->nsamples * p->seqlen) != FQ_OK ||
            llama_tensor_load(p->ck, "model.embed_tokens.weight", 2, shape, &embed) != FQ_OK)
            return FQ_ERR;
        llama_embed_fwd(p->x, embed, c->hidden, p->ids, p->nsamples * p->seqlen);
        free(embed);
    } else {
        if (fp_pass_load_input(p, boundary) != FQ_OK)
            return FQ_ERR;
        llama_layer layer;
        rope_table rope;
        llama_scratch w;
        int b = p->batch < p->nsamples ? p->batch : p->nsamples;
        if (llama_layer_load(p->ck, c, boundary - 1, &layer) != FQ_OK)
            return FQ_ERR;
        if (rope_table_init(&rope, c, p->seqlen) != FQ_OK) {
            llama_layer_free(&layer);
            return FQ_ERR;
        }
        if (llama_scratch_init(&w, c, b, p->seqlen) != FQ_OK) {
            rope_table_free(&rope);
            llama_layer_free(&layer);
            return FQ_ERR;
        }
        for (int s0 = 0; s0 < p->nsamples; s0 += b) {
            int nb = s0 + b <= p->nsamples ? b : p->nsamples - s0;
            llama_layer_fwd(p->x + (size_t)s0 * p->seqlen * d, &layer, c, &rope, nb, p->seqlen, &w);
        }
        llama_scratch_free(&w);
        rope_table_free(&rope);
        llama_layer_free(&layer);
    }
    p->seconds += progress_monotonic_seconds() - t0;
    if (fp_pass_commit_boundary(p, boundary) != FQ_OK)
        return fq_error_wrap("FP pass, boundary %d", boundary);
    return FQ_OK;
}

int fp_pass_produce(void *ctx, int boundary)
{
    fp_pass *p = ctx;
    if (layer_cache_valid(p->cache_dir, boundary, p->fingerprint) == 1) {
        p->reused++;
        return FQ_OK; /* loaded lazily only if the next boundary must be computed */
    }
    return compute_boundary(p, boundary);
}
