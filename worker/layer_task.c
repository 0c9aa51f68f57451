/* layer_task.c — see layer_task.h. */
#include "worker/layer_task.h"
#include "coordinator/layer_cache.h"
#include "coordinator/progress.h"
#include "error.h"
#include "qformat.h"
#include "qlayer_fwd.h"
#include "worker/baseline_rtn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int qlayer_mse(const qlayer *q, const llama_config *c, const qconfig *qc, const float *x,
               const float *y, int n, int s, int b, double *mse)
{
    qlayer_rt rt;
    rope_table rope;
    qlayer_scratch w;
    size_t d = (size_t)c->hidden;
    if (b > n)
        b = n;
    float *buf = fq_malloc(sizeof(float) * (size_t)b * s * d, "layer output");
    if (!buf)
        return FQ_ERR;
    if (qlayer_rt_init(&rt, q, c) != FQ_OK) {
        free(buf);
        return FQ_ERR;
    }
    int rc = rope_table_init(&rope, c, s);
    if (rc == FQ_OK && (rc = qlayer_scratch_init(&w, c, b, s)) != FQ_OK)
        rope_table_free(&rope);
    double sum = 0;
    for (int s0 = 0; rc == FQ_OK && s0 < n; s0 += b) {
        int nb = s0 + b <= n ? b : n - s0;
        size_t off = (size_t)s0 * s * d, cnt = (size_t)nb * s * d;
        memcpy(buf, x + off, sizeof(float) * cnt);
        rc = qlayer_fwd(buf, &rt, c, qc, &rope, nb, s, &w);
        for (size_t i = 0; rc == FQ_OK && i < cnt; i++) {
            double e = (double)buf[i] - (double)y[off + i];
            sum += e * e;
        }
    }
    if (rc == FQ_OK) {
        qlayer_scratch_free(&w);
        rope_table_free(&rope);
    }
    qlayer_rt_free(&rt);
    free(buf);
    *mse = sum / ((double)n * s * d);
    return rc;
}

/* Metadata of the result file: what the report and the coordinator need to know. */
static int write_result(const char *path, int layer, const qlayer *q, const char *const *keys,
                        const char *const *vals, int nkv)
{
    st_writer *w = st_writer_new();
    if (!w)
        return FQ_ERR;
    int rc = qlayer_add_tensors(w, layer, q);
    for (int i = 0; rc == FQ_OK && i < nkv; i++)
        rc = st_writer_set_meta(w, keys[i], vals[i]);
    if (rc == FQ_OK)
        rc = st_writer_commit(w, path);
    st_writer_free(w);
    return rc;
}

int layer_task_run(void *ctx, layer_task *t)
{
    layer_task_ctx *lc = ctx;
    const llama_config *c = lc->cfg;
    const job *j = lc->j;
    double t0 = progress_monotonic_seconds();
    llama_layer fp;
    qlayer q = {0};
    float *x = NULL, *y = NULL;
    layer_cache_header hx, hy;
    int rc = FQ_ERR;
    t->loss = NAN;
    if (llama_layer_load(lc->ck, c, t->layer, &fp) != FQ_OK)
        return fq_error_wrap("layer %d", t->layer);
    double tr = progress_monotonic_seconds();
    if (layer_cache_read(lc->cache_dir, t->layer, lc->fingerprint, &x, &hx) != FQ_OK ||
        layer_cache_read(lc->cache_dir, t->layer + 1, lc->fingerprint, &y, &hy) != FQ_OK) {
        fq_error_wrap("layer %d", t->layer);
        goto done;
    }
    t->cache_read_s = progress_monotonic_seconds() - tr;
    int n = (int)hx.nsamples, s = (int)hx.seqlen, batch = j->calibration.batch;
    double before = NAN, after = NAN;
    switch (j->quantization.method) {
    case JOB_METHOD_RTN:
        if (baseline_rtn_layer(&fp, c, &lc->qc, &q) != FQ_OK)
            goto fail;
        break;
    default:
        fq_error("quantization.method %s is not available in this build (expected rtn or "
                 "flatquant)", job_method_name(j->quantization.method));
        goto fail;
    }
    if (qlayer_mse(&q, c, &lc->qc, x, y, n, s, batch, &after) != FQ_OK)
        goto fail;
    if (!isfinite(after)) {
        fq_error("layer %d: the quantized layer's loss is not finite (%g)", t->layer, after);
        goto fail;
    }
    if (isnan(before))
        before = after;
    t->report(t, 1, 1, after);
    t->loss = after;
    char sb[32], sa[32], st[32], sr[16];
    snprintf(sb, sizeof sb, "%.9g", before);
    snprintf(sa, sizeof sa, "%.9g", after);
    snprintf(st, sizeof st, "%.3f", progress_monotonic_seconds() - t0);
    snprintf(sr, sizeof sr, "%d", lc->rank);
    const char *keys[] = {"format", "loss_before", "loss_after", "seconds", "rank", "host"};
    const char *vals[] = {"flatq", sb, sa, st, sr, lc->host};
    if (write_result(t->result_path, t->layer, &q, keys, vals, 6) != FQ_OK)
        goto fail;
    rc = FQ_OK;
    goto done;
fail:
    fq_error_wrap("layer %d", t->layer);
done:
    qlayer_free(&q);
    free(x);
    free(y);
    llama_layer_free(&fp);
    return rc;
}
