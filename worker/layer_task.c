/* layer_task.c — see layer_task.h. */
#include "worker/layer_task.h"
#include "coordinator/gptq_pass.h"
#include "coordinator/layer_cache.h"
#include "coordinator/progress.h"
#include "atomic_file.h"
#include "error.h"
#include "qformat.h"
#include "qlayer_fwd.h"
#include "worker/baseline_quarot.h"
#include "worker/baseline_rtn.h"
#include "worker/baseline_smoothrot.h"
#include "worker/calibrate_layer.h"
#include "worker/calibrate_layer_cuda.h"
#include "worker/layer_fwd_cuda.h"
#include "worker/layer_reparam.h"
#include "fq_layer.h"

#include <jansson.h>
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

/* The job's quantization section as the FlatQuant layer trainer wants it. */
static fq_recipe recipe_from_job(const job *j)
{
    fq_recipe r = fq_recipe_defaults();
    const struct job_quantization *q = &j->quantization;
    r.w_bits = q->w_bits;
    r.a_bits = q->a_bits;
    r.kv_bits = q->kv_bits;
    r.epochs = q->epochs;
    r.batch = j->calibration.batch;
    r.lr = q->lr;
    r.clip_lr = q->clip_lr;
    r.lr_min = q->lr_min;
    r.weight_decay = q->weight_decay;
    r.warmup_steps = q->warmup_steps;
    r.alpha = q->alpha;
    r.clip_init = q->clip_init;
    r.scale_init = q->scale_init == JOB_SCALE_ONE_STYLE ? FQ_SCALE_ONE : FQ_SCALE_SQ;
    r.init = q->init == JOB_INIT_IDENTITY   ? FQ_INIT_IDENTITY
             : q->init == JOB_INIT_HADAMARD ? FQ_INIT_HADAMARD
             : q->init == JOB_INIT_SMOOTHROT ? FQ_INIT_SMOOTHROT
                                             : FQ_INIT_RANDOM;
    r.smooth_alpha = q->smooth_alpha;
    r.direct_inv = q->direct_inv;
    r.separate_vtrans = q->separate_vtrans;
    r.share_act_clip = q->share_act_clip;
    r.tp_blocks = j->tp > 0 ? j->tp : 1;
    r.seed = q->seed;
    return r;
}

/* The §3.4 per-channel maxima over every calibration token: one FP pass over x (on the
 * rank's GPU when it has one). */
static int layer_stats(fq_stats *st, const llama_layer *l, const llama_config *c, const float *x,
                       int n, int s, int b, fq_cuda_ctx *cuda, int tf32)
{
    if (cuda) {
        if (fq_stats_init(st, c) != FQ_OK)
            return FQ_ERR;
        /* write_back = 0: x is only read */
        return llama_layer_fwd_batches_cuda(cuda, l, c, (float *)(uintptr_t)x, n, s, b, 0, st,
                                            tf32, NULL);
    }
    size_t d = (size_t)c->hidden;
    rope_table rope;
    llama_scratch w;
    if (b > n)
        b = n;
    float *buf = fq_malloc(sizeof(float) * (size_t)b * s * d, "stats batch");
    if (!buf || fq_stats_init(st, c) != FQ_OK) {
        free(buf);
        return FQ_ERR;
    }
    int rc = rope_table_init(&rope, c, s);
    if (rc == FQ_OK && (rc = llama_scratch_init(&w, c, b, s)) != FQ_OK)
        rope_table_free(&rope);
    for (int s0 = 0; rc == FQ_OK && s0 < n; s0 += b) {
        int nb = s0 + b <= n ? b : n - s0;
        memcpy(buf, x + (size_t)s0 * s * d, sizeof(float) * (size_t)nb * s * d);
        rc = fq_stats_layer_fwd(st, buf, l, c, &rope, nb, s, &w);
    }
    if (rc == FQ_OK) {
        llama_scratch_free(&w);
        rope_table_free(&rope);
    }
    free(buf);
    return rc;
}

/* Per-epoch log: the loss curve for the report, and the heartbeat of the worker loop. */
typedef struct {
    layer_task *t;
    json_t *epochs;
    int steps_per_epoch;
} epoch_log_ctx;

static void on_epoch(void *ctx, const calib_epoch_log *log)
{
    epoch_log_ctx *e = ctx;
    json_array_append_new(e->epochs, json_real(log->mse_sum));
    e->t->report(e->t, (log->epoch + 1) * e->steps_per_epoch, log->epochs * e->steps_per_epoch,
                 log->mse_sum / (e->steps_per_epoch > 0 ? e->steps_per_epoch : 1));
}

/* One training of the layer's parameters on the CPU or the rank's GPU
 * (calibrate_layer[_cuda] initialise P themselves and free it on error). */
static int train_layer(const layer_task_ctx *lc, layer_task *t, const llama_layer *fp,
                       const fq_recipe *r, const fq_stats *st, const calib_data *data,
                       fq_params *P, calib_result *res)
{
    const llama_config *c = lc->cfg;
    int rc;
    if (lc->cuda) {
        /* quantization.gpu_math: TF32 tensor cores (default), fp32, or bf16 (the linears'
         * forward on the exact integer codes in bf16, backward gradients in bf16) for the
         * linears and attention; the transforms stay fp32 in every mode. Measured against
         * fp32 (bench/NOTES.md, "GPU layer step"): TF32 loss ≤ 1e-5, bf16 ≤ 7e-5 relative;
         * bf16 is the fastest on 8B/70B shapes, TF32 on small ones. Statistics: fp32. */
#ifdef FLATQ_HAVE_CUDA
        static const int math_of[] = {[JOB_GPU_MATH_TF32] = FQ_MATH_TF32,
                                      [JOB_GPU_MATH_FP32] = FQ_MATH_FP32,
                                      [JOB_GPU_MATH_BF16] = FQ_MATH_BF16};
        rc = fq_cuda_set_math(lc->cuda, math_of[lc->j->quantization.gpu_math % 3]);
        if (rc == FQ_OK)
            rc = calibrate_layer_cuda(lc->cuda, P, fp, c, r, st, data, t->layer, res);
        fq_cuda_set_math(lc->cuda, FQ_MATH_FP32);
#else
        rc = calibrate_layer_cuda(lc->cuda, P, fp, c, r, st, data, t->layer, res);
#endif
    } else {
        rc = calibrate_layer(P, fp, c, r, st, data, t->layer, res);
    }
    return rc;
}

/* FlatQuant: learn the layer's parameters, then merge and quantize them (§4.3, §5). */
static int flatquant_layer(layer_task *t, const layer_task_ctx *lc, const llama_layer *fp,
                           const float *x, const float *y, int n, int s, qlayer *q,
                           double *loss_before, double *loss_after, json_t *epochs)
{
    const llama_config *c = lc->cfg;
    fq_recipe r = recipe_from_job(lc->j);
    fq_stats st = {0};
    fq_params P = {0};
    double t0 = progress_monotonic_seconds(), t_train = 0;
    /* The statistics set the channel scales' starting point only, so on a GPU they take
     * TF32 tensor cores unless the recipe asks for fp32 (gpu_math): TF32 moves each maximum
     * by ~1e-3 relative. */
    int stats_tf32 = lc->j->quantization.gpu_math != JOB_GPU_MATH_FP32;
    if (fq_recipe_check(&r, c) != FQ_OK ||
        layer_stats(&st, fp, c, x, n, s, r.batch, lc->cuda, stats_tf32) != FQ_OK) {
        fq_stats_free(&st);
        return FQ_ERR;
    }
    /* quantization.restarts: train R times from seeds seed, seed+1, … and keep the
     * parameters with the lowest final training loss (and that run's loss curve) */
    int R = lc->j->quantization.restarts > 0 ? lc->j->quantization.restarts : 1, rc = FQ_OK;
    calib_result res = {0};
    json_t *best_curve = NULL;
    double t_stats = progress_monotonic_seconds() - t0, loop_s = 0, passes_s = 0;
    for (int k = 0; k < R && rc == FQ_OK; k++) {
        fq_recipe rk = r;
        rk.seed = r.seed + (uint64_t)k;
        json_t *curve = json_array();
        epoch_log_ctx ectx = {t, curve, (n + r.batch - 1) / r.batch};
        calib_data data = {.nsamples = n, .seqlen = s, .x = x, .y = y, .on_epoch = on_epoch,
                           .log_ctx = &ectx};
        fq_params Pk = {0};
        calib_result rs;
        double tk = progress_monotonic_seconds();
        rc = curve ? train_layer(lc, t, fp, &rk, &st, &data, &Pk, &rs) : FQ_ERR;
        t_train += progress_monotonic_seconds() - tk;
        if (rc == FQ_OK)
            loop_s += rs.loop_s, passes_s += rs.passes_s;
        if (rc == FQ_OK && (k == 0 || rs.loss_after < res.loss_after)) {
            if (k > 0)
                fq_params_free(&P);
            P = Pk;
            res = rs;
            json_decref(best_curve);
            best_curve = curve;
        } else {
            if (rc == FQ_OK)
                fq_params_free(&Pk);
            json_decref(curve);
        }
        if (rc == FQ_OK && R > 1)
            printf("flatq: layer %d restart %d/%d (seed %llu): loss %.6g%s\n", t->layer, k + 1,
                   R, (unsigned long long)rk.seed, rs.loss_after,
                   res.loss_after == rs.loss_after ? " (best so far)" : "");
    }
    if (rc == FQ_OK)
        json_array_extend(epochs, best_curve);
    json_decref(best_curve);
    double tm = progress_monotonic_seconds();
    /* the weights' merge on the rank's GPU (fp32, the training weight side), else in
     * float64 on the CPU: 35.7 s of a 70B layer on the GPU machine's CPU (issue 6) */
    float *wm[QL_NLINEAR] = {0};
    if (rc == FQ_OK && lc->cuda)
        rc = merged_weights_cuda(lc->cuda, &P, fp, wm);
    float **wmp = lc->cuda ? wm : NULL;
    if (rc == FQ_OK && lc->j->quantization.weight_quantizer == JOB_WQ_GPTQ) {
        /* RTN codes now (the layer's result and loss); W' for the GPTQ pass, written
         * before the result so a finished result always has its W' */
        float *merged[QL_NLINEAR];
        rc = layer_reparam_from(q, &P, fp, wmp, merged);
        if (rc == FQ_OK) {
            rc = gptq_merged_write(lc->cache_dir, t->layer, c, merged);
            for (int i = 0; i < QL_NLINEAR; i++)
                free(merged[i]);
        }
    } else if (rc == FQ_OK) {
        rc = layer_reparam_from(q, &P, fp, wmp, NULL);
    }
    for (int i = 0; i < QL_NLINEAR; i++)
        free(wm[i]); /* set on the error paths only: layer_reparam_from takes them over */
    if (rc == FQ_OK) {
        /* where a layer's time goes besides the steps (issue 6: 70B layers spend a minute
         * outside them on the GPU machine) */
        printf("flatq: layer %d phases: statistics %.1f s, training setup %.1f s, loss passes "
               "%.1f s, steps %.1f s, merge and quantization %.1f s\n", t->layer, t_stats,
               t_train - loop_s - passes_s, passes_s, loop_s, progress_monotonic_seconds() - tm);
        fflush(stdout);
        *loss_before = res.loss_before;
        /* On a GPU the trained fake-quant forward's MSE stands for the merged layer's: the
         * CPU re-run that checks the merge costs hours for a 70B layer (the merge itself is
         * tested against it in tests/unit). */
        if (lc->cuda)
            *loss_after = res.loss_after;
    }
    fq_params_free(&P);
    fq_stats_free(&st);
    return rc;
}

/* QuaRot-RTN, or smoothrot (SmoothQuant scales of the down_proj input from this layer's
 * calibration activations, then QuaRot). The rotations are a function of the seed, so
 * every worker builds the same ones and the coordinator rotates the head to match. */
static int quarot_layer(const layer_task_ctx *lc, const llama_layer *fp, const float *x, int n,
                        int s, int smooth, qlayer *q)
{
    const llama_config *c = lc->cfg;
    quarot_opts o = quarot_opts_from_job(lc->j);
    quarot_rotations rot;
    float *scales = NULL;
    fq_stats st = {0};
    if (quarot_rotations_init(&rot, c, &lc->qc, o.seed) != FQ_OK)
        return FQ_ERR;
    int rc = FQ_OK;
    if (smooth) {
        scales = fq_malloc(sizeof(float) * (size_t)c->intermediate, "smoothing scales");
        rc = scales ? layer_stats(&st, fp, c, x, n, s, lc->j->calibration.batch, lc->cuda, 0)
                    : FQ_ERR;
        if (rc == FQ_OK)
            rc = smooth_down_scales_layer(fp, c->hidden, c->intermediate, st.down_in,
                                          lc->j->quantization.smooth_alpha, scales);
    }
    if (rc == FQ_OK)
        rc = baseline_quarot_layer(fp, c, &lc->qc, &rot, &o, scales, q);
    fq_stats_free(&st);
    free(scales);
    quarot_rotations_free(&rot);
    return rc;
}

/* PATH.stats.json beside the result: rank, host, seconds, cache read seconds. */
static int layer_stats_write(const char *result_path, int rank, const char *host, double seconds,
                             double cache_s)
{
    char path[4200];
    snprintf(path, sizeof path, "%s.stats.json", result_path);
    json_t *o = json_pack("{s:i, s:s, s:f, s:f}", "rank", rank, "host", host, "seconds", seconds,
                          "cache_read_s", cache_s);
    char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!txt)
        return fq_error("%s: out of memory", path);
    int rc = atomic_file_put(path, txt, strlen(txt));
    free(txt);
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
    json_t *epochs = NULL;
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
    epochs = json_array();
    switch (j->quantization.method) {
    case JOB_METHOD_RTN:
        if (baseline_rtn_layer(&fp, c, &lc->qc, &q) != FQ_OK)
            goto fail;
        break;
    case JOB_METHOD_QUAROT:
    case JOB_METHOD_SMOOTHROT:
        if (quarot_layer(lc, &fp, x, n, s, j->quantization.method == JOB_METHOD_SMOOTHROT, &q) !=
            FQ_OK)
            goto fail;
        break;
    case JOB_METHOD_FLATQUANT:
        if (flatquant_layer(t, lc, &fp, x, y, n, s, &q, &before, &after, epochs) != FQ_OK)
            goto fail;
        break;
    default:
        fq_error("quantization.method %s is not available in this build (expected rtn or "
                 "flatquant)", job_method_name(j->quantization.method));
        goto fail;
    }
    if (isnan(after) && qlayer_mse(&q, c, &lc->qc, x, y, n, s, batch, &after) != FQ_OK)
        goto fail;
    if (!isfinite(after)) {
        fq_error("layer %d: the quantized layer's loss is not finite (%g)", t->layer, after);
        goto fail;
    }
    if (isnan(before))
        before = after;
    t->report(t, 1, 1, after);
    t->loss = after;
    /* The result file holds only what is a function of the job (so the checkpoint's bytes
     * do not depend on ranks or timing); where and how long it ran goes to a stats file. */
    char sb[32], sa[32];
    char *ep = json_dumps(epochs, JSON_COMPACT | JSON_REAL_PRECISION(9));
    snprintf(sb, sizeof sb, "%.9g", before);
    snprintf(sa, sizeof sa, "%.9g", after);
    const char *keys[] = {"format", "loss_before", "loss_after", "epoch_loss"};
    const char *vals[] = {"flatq", sb, sa, ep ? ep : "[]"};
    double tw = progress_monotonic_seconds();
    int wrc = write_result(t->result_path, t->layer, &q, keys, vals, 4);
    free(ep);
    if (wrc != FQ_OK)
        goto fail;
    printf("flatq: layer %d io: weights load %.1f s, cache read %.1f s, result write %.1f s, "
           "layer total %.1f s\n", t->layer, tr - t0, t->cache_read_s,
           progress_monotonic_seconds() - tw, progress_monotonic_seconds() - t0);
    fflush(stdout);
    if (layer_stats_write(t->result_path, lc->rank, lc->host,
                          progress_monotonic_seconds() - t0, t->cache_read_s) != FQ_OK)
        goto fail;
    rc = FQ_OK;
    goto done;
fail:
    fq_error_wrap("layer %d", t->layer);
done:
    json_decref(epochs);
    qlayer_free(&q);
    free(x);
    free(y);
    llama_layer_free(&fp);
    return rc;
}
