/* gptq_pass.c — the sequential GPTQ pass after calibration (gptq_pass.h).
 *
 * Memory: the windows' activations (nsamples · seqlen · d reals, 400 MB for 128 × 2048 ×
 * 384), one layer's W' and its seven Hessians (in² reals each). The forward runs in
 * batches of calibration.batch windows through one batch buffer, because a forward
 * stopped after a group's inputs leaves its buffer half-computed.
 */
#include "coordinator/gptq_pass.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coordinator/eval_model.h"
#include "coordinator/gptq_pass_cuda.h"
#include "coordinator/layer_result.h"
#include "coordinator/progress.h"
#include "error.h"
#include "fq_layer.h"
#include "gptq.h"
#include "kernels/gptq_cuda.h"
#include "qformat.h"
#include "qlayer_fwd.h"

#define WHERE "coordinator/gptq_pass.c"

static const char *const merged_names[QL_NLINEAR] = {"q", "k", "v", "o", "gate", "up", "down"};

int gptq_merged_path(const char *cache_dir, int layer, char *out, size_t cap)
{
    if (!cache_dir || !out || layer < 0 ||
        snprintf(out, cap, "%s/merged_%03d.safetensors", cache_dir, layer) >= (int)cap)
        return fq_error(WHERE ":gptq_merged_path: bad directory or layer %d", layer);
    return FQ_OK;
}

int gptq_merged_write(const char *cache_dir, int layer, const llama_config *c,
                      float *const w[QL_NLINEAR])
{
    char path[4096];
    if (!c || !w || gptq_merged_path(cache_dir, layer, path, sizeof path) != FQ_OK)
        return fq_error(WHERE ":gptq_merged_write: NULL argument");
    st_writer *sw = st_writer_new();
    if (!sw)
        return FQ_ERR;
    int rc = st_writer_set_meta(sw, "format", "flatq-merged-weights");
    for (int i = 0; rc == FQ_OK && i < QL_NLINEAR; i++) {
        int64_t shape[2] = {fq_linear_out(c, i), fq_linear_in(c, i)};
        rc = w[i] ? st_writer_add(sw, merged_names[i], FQ_F32, 2, shape, w[i])
                  : fq_error("%s: weight %s missing", path, merged_names[i]);
    }
    if (rc == FQ_OK)
        rc = st_writer_commit(sw, path);
    st_writer_free(sw);
    return rc == FQ_OK ? FQ_OK : fq_error_wrap("%s", path);
}

/* W' of one layer as reals (w[i] malloc'ed), every shape checked against c. */
static int merged_read(const char *cache_dir, int layer, const llama_config *c,
                       real *w[QL_NLINEAR])
{
    char path[4096];
    st_file f;
    memset(w, 0, sizeof(real *) * QL_NLINEAR);
    if (gptq_merged_path(cache_dir, layer, path, sizeof path) != FQ_OK ||
        st_file_open(path, &f) != FQ_OK)
        return FQ_ERR;
    int rc = FQ_OK;
    for (int i = 0; rc == FQ_OK && i < QL_NLINEAR; i++) {
        const st_tensor *t = st_file_find(&f, merged_names[i]);
        int64_t out = fq_linear_out(c, i), in = fq_linear_in(c, i);
        if (!t || t->dtype != FQ_F32 || t->ndim != 2 || t->shape[0] != out ||
            t->shape[1] != in) {
            rc = fq_error("%s: tensor '%s' missing or not fp32 [%lld, %lld] (expected the "
                          "merged weight this model's layer has)", path, merged_names[i],
                          (long long)out, (long long)in);
            break;
        }
        float *tmp = fq_malloc(sizeof(float) * t->nelem, "merged weight");
        w[i] = fq_malloc(sizeof(real) * t->nelem, "merged weight");
        if (!tmp || !w[i] || st_tensor_to_f32(t, tmp, t->nelem) != FQ_OK)
            rc = FQ_ERR;
        else
            real_from_f32(tmp, t->nelem, w[i]);
        free(tmp);
    }
    st_file_close(&f);
    if (rc != FQ_OK)
        for (int i = 0; i < QL_NLINEAR; i++) {
            free(w[i]);
            w[i] = NULL;
        }
    return rc;
}

/* 1 when the layer's result says its weights are GPTQ's. */
static int result_is_gptq(const st_file *f)
{
    const char *v = st_file_meta(f, "weight_quantizer");
    return v && strcmp(v, "gptq") == 0;
}

int gptq_pass_prepare(const char *outdir, const char *cache_dir, int nlayers, int *forgotten)
{
    if (!outdir || !cache_dir || !forgotten)
        return fq_error(WHERE ":gptq_pass_prepare: NULL argument");
    *forgotten = 0;
    for (int i = 0; i < nlayers; i++) {
        char path[4096], mpath[4096];
        if (layer_result_verified(outdir, i) != 1)
            continue;
        st_file f;
        if (layer_result_path(outdir, i, path, sizeof path) != FQ_OK ||
            st_file_open(path, &f) != FQ_OK)
            return FQ_ERR;
        int gptq = result_is_gptq(&f);
        st_file_close(&f);
        if (gptq || gptq_merged_path(cache_dir, i, mpath, sizeof mpath) != FQ_OK)
            continue;
        st_file mf;
        if (st_file_open(mpath, &mf) == FQ_OK) {
            st_file_close(&mf);
            continue;
        }
        if (layer_result_forget(outdir, i) != FQ_OK)
            return FQ_ERR;
        (*forgotten)++;
    }
    return FQ_OK;
}

/* ---- the per-layer work ---- */

const int gptq_group_lin[GPTQ_NGROUPS][3] = {
    {QL_Q, QL_K, QL_V}, {QL_O, -1, -1}, {QL_UP, QL_GATE, -1}, {QL_DOWN, -1, -1}};
const int gptq_group_len[GPTQ_NGROUPS] = {3, 1, 2, 1};

typedef struct {
    gptq_hessian h[QL_NLINEAR];
    int active[QL_NLINEAR];
    int stop_lin;
    double seconds; /* in gptq_hessian_add */
} hessian_obs;

static int observe_input(void *ctx, int lin, const real *xhat, int rows, int k)
{
    hessian_obs *o = ctx;
    if (o->active[lin]) {
        if (o->h[lin].n != k)
            return fq_error(WHERE ": linear %s input has %d columns (expected %d)",
                            qlinear_names[lin], k, o->h[lin].n);
        double t0 = progress_monotonic_seconds();
        if (gptq_hessian_add(&o->h[lin], xhat, rows) != FQ_OK)
            return FQ_ERR;
        o->seconds += progress_monotonic_seconds() - t0;
    }
    return lin == o->stop_lin ? 1 : 0;
}

typedef struct {
    const llama_config *c;
    qconfig qc;
    rope_table rope;
    qlayer_scratch w;
    real *x;    /* [nsamples, seqlen, d]: the current layer's input */
    real *buf;  /* one batch */
    int nsamples, seqlen, batch;
    gptq_opts opts;
    gptq_gpu *gpu; /* device: cuda (then x, buf and w stay unallocated) */
    /* this layer's time: forwards (Hessian sums excluded), Hessian sums, quantization */
    double t_forward, t_hessian, t_quant, t_errors, t_update; /* the last two: GPU only */
} pass_state;

/* Forward every batch: in place on x (observer NULL), or on a copy with the observer. */
static int forward_all(pass_state *ps, const qlayer_rt *rt, hessian_obs *obs)
{
    double t0 = progress_monotonic_seconds(), h0 = obs ? obs->seconds : 0;
    int rc = FQ_OK;
    size_t d = (size_t)ps->c->hidden, per = (size_t)ps->seqlen * d;
    for (int s0 = 0; s0 < ps->nsamples; s0 += ps->batch) {
        int nb = s0 + ps->batch <= ps->nsamples ? ps->batch : ps->nsamples - s0;
        real *x = ps->x + (size_t)s0 * per;
        if (obs) {
            memcpy(ps->buf, x, sizeof(real) * nb * per);
            x = ps->buf;
        }
        if (qlayer_fwd_observed(x, rt, ps->c, &ps->qc, &ps->rope, nb, ps->seqlen, &ps->w,
                                obs ? observe_input : NULL, obs) != FQ_OK) {
            rc = FQ_ERR;
            break;
        }
    }
    double h = obs ? obs->seconds - h0 : 0;
    ps->t_hessian += h;
    ps->t_forward += progress_monotonic_seconds() - t0 - h;
    return rc;
}

/* rt->w[lin] ← the dequantized weight of l. */
static int rt_set_weight(qlayer_rt *rt, int lin, const qlinear *l)
{
    size_t n = (size_t)l->out * l->in;
    float *tmp = fq_malloc(sizeof(float) * n, "dequantized weight");
    if (!tmp || qlinear_dequantize(l, tmp) != FQ_OK) {
        free(tmp);
        return FQ_ERR;
    }
    real_from_f32(tmp, n, rt->w[lin]);
    free(tmp);
    return FQ_OK;
}

/* GPTQ the seven weights of q (whose RTN codes are replaced) from W'. err[lin][0/1] =
 * output error of RTN / GPTQ through the Hessian, for the log. */
static int gptq_layer(pass_state *ps, qlayer *q, real *wp[QL_NLINEAR],
                      double err[QL_NLINEAR][2])
{
    const llama_config *c = ps->c;
    qlayer_rt rt;
    hessian_obs obs;
    memset(&obs, 0, sizeof obs);
    if (qlayer_rt_init(&rt, q, c) != FQ_OK)
        return FQ_ERR;
    /* not-yet-quantized linears run with W' itself */
    for (int i = 0; i < QL_NLINEAR; i++)
        memcpy(rt.w[i], wp[i], sizeof(real) * fq_linear_out(c, i) * fq_linear_in(c, i));
    int rc = FQ_OK;
    real *H = NULL;
    for (int g = 0; rc == FQ_OK && g < GPTQ_NGROUPS; g++) {
        memset(obs.active, 0, sizeof obs.active);
        for (int m = 0; rc == FQ_OK && m < gptq_group_len[g]; m++) {
            int lin = gptq_group_lin[g][m];
            obs.active[lin] = 1;
            obs.stop_lin = lin;
            rc = gptq_hessian_init(&obs.h[lin], fq_linear_in(c, lin));
        }
        if (rc == FQ_OK)
            rc = forward_all(ps, &rt, &obs);
        for (int m = 0; rc == FQ_OK && m < gptq_group_len[g]; m++) {
            int lin = gptq_group_lin[g][m], out = fq_linear_out(c, lin), in = fq_linear_in(c, lin);
            qlinear nl;
            free(H);
            H = fq_malloc(sizeof(real) * (size_t)in * in, "Hessian");
            rc = H ? gptq_hessian_get(&obs.h[lin], H) : FQ_ERR;
            double tq = progress_monotonic_seconds();
            if (rc == FQ_OK)
                rc = gptq_quantize_opts(&nl, wp[lin], out, in, H, ps->qc.w_bits, &ps->opts);
            ps->t_quant += progress_monotonic_seconds() - tq;
            if (rc != FQ_OK) {
                fq_error_wrap("weight %s", qlinear_names[lin]);
                break;
            }
            if (gptq_output_error(&q->lin[lin], wp[lin], H, &err[lin][0]) != FQ_OK ||
                gptq_output_error(&nl, wp[lin], H, &err[lin][1]) != FQ_OK) {
                qlinear_free(&nl);
                rc = FQ_ERR;
                break;
            }
            qlinear_free(&q->lin[lin]);
            q->lin[lin] = nl;
            rc = rt_set_weight(&rt, lin, &q->lin[lin]);
        }
        for (int i = 0; i < QL_NLINEAR; i++)
            gptq_hessian_free(&obs.h[i]);
    }
    free(H);
    /* the finished layer: the next layer's input */
    if (rc == FQ_OK)
        rc = forward_all(ps, &rt, NULL);
    qlayer_rt_free(&rt);
    return rc;
}

/* The result file again, with q's tensors, the old metadata and weight_quantizer: gptq. */
static int result_rewrite(const char *outdir, int layer, const qlayer *q, const st_file *old)
{
    char path[4096], hex[65];
    if (layer_result_path(outdir, layer, path, sizeof path) != FQ_OK)
        return FQ_ERR;
    st_writer *w = st_writer_new();
    if (!w)
        return FQ_ERR;
    int rc = qlayer_add_tensors(w, layer, q);
    for (size_t i = 0; rc == FQ_OK && i < old->n_meta; i++)
        if (strcmp(old->meta_keys[i], "weight_quantizer") != 0)
            rc = st_writer_set_meta(w, old->meta_keys[i], old->meta_values[i]);
    if (rc == FQ_OK)
        rc = st_writer_set_meta(w, "weight_quantizer", "gptq");
    if (rc == FQ_OK)
        rc = st_writer_commit(w, path);
    st_writer_free(w);
    if (rc == FQ_OK)
        rc = file_sha256_hex(path, hex);
    if (rc == FQ_OK)
        rc = layer_result_mark_done(outdir, layer, hex);
    return rc;
}

static int pass_layer(pass_state *ps, const job *j, int layer, int *reused)
{
    char path[4096];
    st_file f;
    qlayer q;
    memset(&q, 0, sizeof q);
    real *wp[QL_NLINEAR] = {0};
    if (layer_result_path(j->output, layer, path, sizeof path) != FQ_OK ||
        st_file_open(path, &f) != FQ_OK)
        return FQ_ERR;
    st_checkpoint view = {.dir = NULL, .n_files = 1, .files = &f};
    int rc = qlayer_read(&view, ps->c, &ps->qc, layer, &q);
    *reused = rc == FQ_OK && result_is_gptq(&f);
    if (rc == FQ_OK && *reused) {
        qlayer_rt rt;
        rc = qlayer_rt_init(&rt, &q, ps->c);
        if (rc == FQ_OK) {
            rc = ps->gpu ? gptq_gpu_forward(ps->gpu, &rt) : forward_all(ps, &rt, NULL);
            qlayer_rt_free(&rt);
        }
    } else if (rc == FQ_OK) {
        double t0 = progress_monotonic_seconds();
        double err[QL_NLINEAR][2], secs[GPTQ_NSECS];
        ps->t_forward = ps->t_hessian = ps->t_quant = 0;
        rc = merged_read(j->cache.dir, layer, ps->c, wp);
        if (rc == FQ_OK && ps->gpu) {
            /* on the GPU the Hessian sums run inside the forwards; the second share is
             * gptq_plan_make's scales and the factorisations (GPU or host) */
            rc = gptq_gpu_layer(ps->gpu, &q, wp, &ps->opts, err, secs);
            ps->t_forward = secs[GPTQ_SEC_FORWARD];
            ps->t_hessian = secs[GPTQ_SEC_FACTOR];
            ps->t_quant = secs[GPTQ_SEC_SWEEP];
            ps->t_errors = secs[GPTQ_SEC_ERRORS];
            ps->t_update = secs[GPTQ_SEC_UPDATE];
        } else if (rc == FQ_OK) {
            rc = gptq_layer(ps, &q, wp, err);
        }
        if (rc == FQ_OK)
            rc = result_rewrite(j->output, layer, &q, &f);
        if (rc == FQ_OK) {
            char mpath[4096];
            if (gptq_merged_path(j->cache.dir, layer, mpath, sizeof mpath) == FQ_OK)
                unlink(mpath); /* consumed; a rerun reads the gptq result instead */
            if (ps->gpu)
                printf("gptq: layer %d in %.1f s on the GPU (forwards with Hessians %.1f, scales "
                       "and factorisations %.1f, sweeps %.1f, output errors %.1f, weight "
                       "updates %.1f); output error GPTQ / RTN:",
                       layer, progress_monotonic_seconds() - t0, ps->t_forward, ps->t_hessian,
                       ps->t_quant, ps->t_errors, ps->t_update);
            else
                printf("gptq: layer %d in %.1f s (forwards %.1f, Hessians %.1f, quantization "
                       "%.1f); output error GPTQ / RTN:",
                       layer, progress_monotonic_seconds() - t0, ps->t_forward, ps->t_hessian,
                       ps->t_quant);
            for (int i = 0; i < QL_NLINEAR; i++)
                printf(" %s %.3f", qlinear_names[i], err[i][0] > 0 ? err[i][1] / err[i][0] : 1);
            printf("\n");
            fflush(stdout);
        }
    }
    for (int i = 0; i < QL_NLINEAR; i++)
        free(wp[i]);
    qlayer_free(&q);
    st_file_close(&f);
    return rc == FQ_OK ? FQ_OK : fq_error_wrap("gptq pass, layer %d", layer);
}

int gptq_pass_run(gptq_pass *g)
{
    if (!g || !g->j || !g->cfg || !g->ck || !g->ids || g->nsamples < 1 || g->seqlen < 1)
        return fq_error(WHERE ":gptq_pass_run: invalid arguments (expected job, model, "
                        "calibration tokens)");
    const job *j = g->j;
    const llama_config *c = g->cfg;
    double t0 = progress_monotonic_seconds();
    pass_state ps;
    memset(&ps, 0, sizeof ps);
    ps.c = c;
    qconfig_from_job(j, j->quantization.method, &ps.qc);
    ps.nsamples = g->nsamples;
    ps.seqlen = g->seqlen;
    ps.batch = j->calibration.batch < g->nsamples ? j->calibration.batch : g->nsamples;
    ps.opts = (gptq_opts){j->quantization.gptq_damp, j->quantization.gptq_block,
                          j->quantization.gptq_act_order, j->quantization.gptq_clip_search};
    g->layers_run = g->layers_reused = 0;
    size_t d = (size_t)c->hidden, tokens = (size_t)g->nsamples * g->seqlen;
    real *embed = NULL;
    int64_t se[2] = {c->vocab, c->hidden};
    int rc = FQ_ERR, have_rope = 0, have_scratch = 0;
    if (g->cuda && (ps.opts.block < 1 || ps.opts.block > GPTQ_CUDA_MAX_BLOCK)) {
        fq_error("%s: quantization.gptq_block = %d (expected 1..%d with device: cuda: the GPU "
                 "sweep keeps a block of columns in registers)", j->path, ps.opts.block,
                 GPTQ_CUDA_MAX_BLOCK);
        goto out;
    }
    ps.x = fq_malloc(sizeof(real) * tokens * d, "GPTQ pass activations");
    ps.buf = g->cuda ? NULL
                     : fq_malloc(sizeof(real) * (size_t)ps.batch * g->seqlen * d, "GPTQ pass batch");
    if (!ps.x || (!g->cuda && !ps.buf) ||
        llama_tensor_load(g->ck, "model.embed_tokens.weight", 2, se, &embed) != FQ_OK)
        goto out;
    if (llama_check_ids(c, g->ids, tokens) != FQ_OK)
        goto out;
    llama_embed_fwd(ps.x, embed, c->hidden, g->ids, (int)tokens);
    if (rope_table_init(&ps.rope, c, g->seqlen) != FQ_OK)
        goto out;
    have_rope = 1;
    if (g->cuda) {
        /* the activations live on the GPU from here on */
        if (gptq_gpu_init(&ps.gpu, g->cuda, c, &ps.qc, &ps.rope, ps.x, g->nsamples, g->seqlen,
                          ps.batch) != FQ_OK)
            goto out;
        free(ps.x);
        ps.x = NULL;
    } else {
        if (qlayer_scratch_init(&ps.w, c, ps.batch, g->seqlen) != FQ_OK)
            goto out;
        have_scratch = 1;
    }
    for (int i = 0; i < c->n_layers; i++) {
        int reused;
        if (pass_layer(&ps, j, i, &reused) != FQ_OK)
            goto out;
        if (reused)
            g->layers_reused++;
        else
            g->layers_run++;
    }
    rc = FQ_OK;
out:
    gptq_gpu_free(ps.gpu);
    if (have_scratch)
        qlayer_scratch_free(&ps.w);
    if (have_rope)
        rope_table_free(&ps.rope);
    free(embed);
    free(ps.x);
    free(ps.buf);
    g->seconds = progress_monotonic_seconds() - t0;
    return rc == FQ_OK ? FQ_OK : fq_error_wrap(WHERE);
}
