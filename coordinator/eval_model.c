/* eval_model.c — see eval_model.h. */
#include "coordinator/eval_model.h"
#include "coordinator/calib_data.h"
#include "worker/baseline_quarot.h"
#include "worker/baseline_rtn.h"
#include "worker/baseline_smoothrot.h"
#include "tokenizer.h"
#include "error.h"
#include "qformat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void qconfig_from_job(const job *j, job_method method, qconfig *qc)
{
    memset(qc, 0, sizeof *qc);
    qc->w_bits = j->quantization.w_bits;
    qc->a_bits = j->quantization.a_bits;
    qc->kv_bits = j->quantization.kv_bits;
    qc->kv_sym = j->quantization.kv_sym;
    qc->tp_blocks = j->tp > 0 ? j->tp : 1;
    qc->separate_vtrans = j->quantization.separate_vtrans;
    snprintf(qc->method, sizeof qc->method, "%s", job_method_name(method));
}

/* smoothrot's statistics: the FP model over the job's calibration windows. */
static int smooth_stats_from_job(const llama_model *fp, const char *dir, const job *j,
                                 float **down_max)
{
    if (!j || !j->calibrate || j->calibration.n_text == 0)
        return fq_error("eval: smoothrot needs calibration text for its statistics (expected a "
                        "job with a calibration section)");
    tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t ntok;
    int rc = tokenizer_load(dir, &tok);
    if (rc == FQ_OK)
        rc = calib_windows_sample(tok, j->calibration.text, j->calibration.n_text,
                                  j->calibration.nsamples, j->calibration.seqlen,
                                  j->calibration.seed, &ids, &ntok);
    if (rc == FQ_OK)
        rc = smooth_stats_collect(fp, ids, (size_t)j->calibration.nsamples,
                                  j->calibration.seqlen, down_max);
    free(ids);
    tokenizer_free(tok);
    return rc;
}

/* In-memory baselines from the FP weights (no calibration needed). */
static int build_baseline(eval_model *e, const char *dir, job_method method, const qconfig *qc,
                          const job *j)
{
    const llama_config *c = &e->fp.cfg;
    if (method == JOB_METHOD_QUAROT || method == JOB_METHOD_SMOOTHROT) {
        quarot_opts o = j ? quarot_opts_from_job(j) : quarot_opts_default();
        quarot_model qm;
        float *down_max = NULL;
        int rc = FQ_OK;
        if (method == JOB_METHOD_SMOOTHROT)
            rc = smooth_stats_from_job(&e->fp, dir, j, &down_max);
        if (rc == FQ_OK)
            rc = method == JOB_METHOD_QUAROT
                     ? baseline_quarot(&e->fp, qc, &o, NULL, &qm)
                     : baseline_smoothrot(&e->fp, qc, &o, down_max, j->quantization.smooth_alpha,
                                          &qm);
        free(down_max);
        if (rc != FQ_OK)
            return FQ_ERR;
        return quarot_model_to_qmodel(&qm, c, qc, &e->qm);
    }
    if (method != JOB_METHOD_RTN)
        return fq_error("eval: method '%s' needs a calibrated checkpoint (run flatq calibrate "
                        "first; expected fp, rtn, quarot or smoothrot here)",
                        job_method_name(method));
    qlayer *layers = fq_calloc((size_t)c->n_layers, sizeof *layers, "quantized layers");
    if (!layers)
        return FQ_ERR;
    int rc = FQ_OK;
    for (int i = 0; i < c->n_layers && rc == FQ_OK; i++)
        if ((rc = baseline_rtn_layer(&e->fp.layers[i], c, qc, &layers[i])) != FQ_OK)
            fq_error_wrap("layer %d", i);
    if (rc == FQ_OK)
        rc = qmodel_from_qlayers(&e->qm, &e->fp, qc, layers);
    for (int i = 0; i < c->n_layers; i++)
        qlayer_free(&layers[i]);
    free(layers);
    return rc;
}

int eval_model_open(eval_model *e, const char *dir, job_method method, const qconfig *qc,
                    const job *j, int seqlen)
{
    memset(e, 0, sizeof *e);
    qconfig saved;
    int has = qconfig_load(dir, &saved);
    if (has < 0)
        return FQ_ERR;
    if (has) {
        e->quantized = 1;
        if (qmodel_load(dir, &e->qm) != FQ_OK)
            return FQ_ERR;
    } else {
        if (llama_model_load(dir, &e->fp) != FQ_OK)
            return FQ_ERR;
        if (method == JOB_METHOD_FP || method == JOB_METHOD_COUNT) {
            e->vocab = e->fp.cfg.vocab;
            return llama_runner_init(&e->fr, &e->fp, seqlen);
        }
        e->quantized = 1;
        int rc = build_baseline(e, dir, method, qc, j);
        llama_model_free(&e->fp);
        if (rc != FQ_OK)
            return FQ_ERR;
    }
    e->vocab = e->qm.cfg.vocab;
    return qmodel_runner_init(&e->qr, &e->qm, seqlen);
}

int eval_model_ppl(eval_model *e, const int32_t *ids, size_t n, int seqlen, size_t max_windows,
                   ppl_result *out)
{
    if (e->quantized)
        return perplexity_eval(ids, n, seqlen, e->vocab, max_windows, qmodel_window_logits,
                               &e->qr, out);
    return perplexity_eval(ids, n, seqlen, e->vocab, max_windows, llama_window_logits, &e->fr, out);
}

void eval_model_close(eval_model *e)
{
    llama_runner_free(&e->fr);
    llama_model_free(&e->fp);
    qmodel_runner_free(&e->qr);
    qmodel_free(&e->qm);
    memset(e, 0, sizeof *e);
}
