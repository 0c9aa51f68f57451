/* fp_pass.c — see fp_pass.h. */
#include "coordinator/fp_pass.h"
#include "coordinator/progress.h"
#include "error.h"
#include "parallel.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The cache write of one boundary on a thread of its own (async_commit). */
typedef struct {
    fp_pass *p;
    void *payload; /* the boundary in the cache's dtype: what the thread writes */
    size_t cap;
    layer_cache_dtype dtype;
    int boundary, running, rc;
    pthread_t th;
    char err[1024];
} fp_writer;

int fp_pass_init(fp_pass *p)
{
    size_t n = (size_t)p->nsamples * p->seqlen * p->cfg->hidden;
    p->x = fq_malloc(sizeof(float) * n, "FP pass activations");
    fp_writer *w = fq_calloc(1, sizeof(fp_writer), "FP pass writer");
    if (w)
        w->p = p;
    p->writer = w;
    p->x_boundary = -1;
    p->seconds = 0;
    p->commit_s = p->write_s = 0;
    p->produced = p->reused = 0;
    if (!p->x || !p->writer) {
        fp_pass_free(p);
        return FQ_ERR;
    }
    return FQ_OK;
}

void fp_pass_free(fp_pass *p)
{
    fp_writer *w = p->writer;
    if (w) {
        (void)fp_pass_flush(p); /* never free what a running write reads */
        free(w->payload);
        free(w);
    }
    p->writer = NULL;
    free(p->x);
    p->x = NULL;
}

/* Encoding x into the cache's dtype, sample by sample on the I/O threads (2 G values of a
 * 70B boundary took seconds on one core, on the FP pass's critical path); then x ← the
 * values as the cache stores them, so the chain continues from them (a second pass: x
 * stays intact until every sample has encoded, for the fp16 → bf16 fallback). */
typedef struct {
    fp_pass *p;
    uint8_t *dst;
    layer_cache_dtype dtype;
    int boundary;
} encode_job;

static int encode_sample_x(void *ctx, size_t i, int t)
{
    (void)t;
    const encode_job *e = ctx;
    const size_t per = (size_t)e->p->seqlen * e->p->cfg->hidden;
    return layer_cache_encode(e->p->x + i * per, per, e->dtype,
                              e->dst + i * per * layer_cache_dtype_bytes(e->dtype), e->boundary, i);
}

static int round_sample_x(void *ctx, size_t i, int t)
{
    (void)t;
    const encode_job *e = ctx;
    const size_t per = (size_t)e->p->seqlen * e->p->cfg->hidden;
    float *x = e->p->x + i * per;
    const uint16_t *h = (const uint16_t *)(e->dst + i * per * 2);
    if (e->dtype == LAYER_CACHE_BF16)
        for (size_t k = 0; k < per; k++)
            x[k] = fq_bf16_to_f32(h[k]);
    else
        for (size_t k = 0; k < per; k++)
            x[k] = fq_f16_to_f32(h[k]);
    return FQ_OK;
}

static int encode_x(fp_pass *p, fp_writer *w, int boundary)
{
    size_t n = (size_t)p->nsamples * p->seqlen * p->cfg->hidden;
    size_t need = n * layer_cache_dtype_bytes(p->dtype); /* fp16 → bf16 keeps the size */
    if (w->cap < need) {
        free(w->payload);
        w->payload = fq_malloc(need, "FP pass cache payload");
        w->cap = w->payload ? need : 0;
        if (!w->payload)
            return FQ_ERR;
    }
    encode_job e = {.p = p, .dst = w->payload, .dtype = p->dtype, .boundary = boundary};
    const size_t ns = (size_t)p->nsamples;
    const int nt = fq_io_threads(ns);
    if (fq_parallel_for(ns, nt, encode_sample_x, &e) != FQ_OK) {
        if (p->dtype != LAYER_CACHE_F16)
            return FQ_ERR;
        /* fp16 overflows on some LLaMA residual channels: keep going in bf16 */
        fprintf(stderr, "flatq: note: boundary %d does not fit fp16 (%s); the cache "
                        "continues in bf16\n", boundary, fq_errmsg());
        p->dtype = e.dtype = LAYER_CACHE_BF16;
        if (fq_parallel_for(ns, nt, encode_sample_x, &e) != FQ_OK)
            return FQ_ERR;
    }
    return p->dtype == LAYER_CACHE_F32 ? FQ_OK : fq_parallel_for(ns, nt, round_sample_x, &e);
}

static void *writer_main(void *arg)
{
    fp_writer *w = arg;
    fp_pass *p = w->p;
    double t0 = progress_monotonic_seconds();
    w->rc = layer_cache_write_encoded(p->cache_dir, w->boundary, p->fingerprint, w->dtype,
                                      w->payload, (size_t)p->nsamples, (size_t)p->seqlen,
                                      (size_t)p->cfg->hidden);
    if (w->rc != FQ_OK)
        snprintf(w->err, sizeof w->err, "%s", fq_errmsg());
    p->write_s += progress_monotonic_seconds() - t0; /* read only after the join */
    return NULL;
}

int fp_pass_flush(void *ctx)
{
    fp_pass *p = ctx;
    fp_writer *w = p ? p->writer : NULL;
    if (!w || !w->running)
        return FQ_OK;
    pthread_join(w->th, NULL);
    w->running = 0;
    if (w->rc != FQ_OK)
        return fq_error("FP pass, boundary %d: %s", w->boundary, w->err);
    return FQ_OK;
}

int fp_pass_commit_boundary(fp_pass *p, int boundary)
{
    fp_writer *w = p->writer;
    double t0 = progress_monotonic_seconds();
    /* the previous boundary's write reads the payload buffer: finish it first */
    if (fp_pass_flush(p) != FQ_OK || encode_x(p, w, boundary) != FQ_OK)
        return FQ_ERR;
    w->boundary = boundary;
    w->dtype = p->dtype;
    w->rc = FQ_OK;
    int started = p->async_commit && pthread_create(&w->th, NULL, writer_main, w) == 0;
    if (started) {
        w->running = 1;
    } else {
        writer_main(w); /* synchronous (or no thread to be had) */
        if (w->rc != FQ_OK)
            return fq_error("%s", w->err);
    }
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
