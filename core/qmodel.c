/* qmodel.c — whole-model fake-quant forward (see qmodel.h). */
#include "qmodel.h"
#include "error.h"
#include "qformat.h"

#include <stdlib.h>
#include <string.h>

static real *dup_real(const real *src, size_t n, const char *what)
{
    real *p = fq_malloc(sizeof(real) * n, what);
    if (p)
        memcpy(p, src, sizeof(real) * n);
    return p;
}

int qmodel_from_parts(qmodel *m, const llama_config *c, const qconfig *qc, const qlayer *layers,
                      real *embed, real *final_norm, real *lm_head)
{
    memset(m, 0, sizeof *m);
    /* Own the arrays first, so that every failure below frees them through qmodel_free. */
    m->embed = embed;
    m->final_norm = final_norm;
    m->lm_head = lm_head;
    if (!c || !qc || !layers || !embed || !final_norm || !lm_head) {
        qmodel_free(m);
        return fq_error("core/qmodel.c:qmodel_from_parts: NULL config, layers or model "
                        "tensor (expected all of config, qconfig, layers, embed, final_norm, "
                        "lm_head)");
    }
    m->cfg = *c;
    m->qc = *qc;
    if (c->n_layers <= 0) {
        qmodel_free(m);
        return fq_error("core/qmodel.c:qmodel_from_parts: %d layers (expected at least 1)",
                        c->n_layers);
    }
    m->layers = fq_calloc((size_t)c->n_layers, sizeof *m->layers, "quantized layers");
    if (!m->layers)
        goto fail;
    for (int i = 0; i < c->n_layers; i++)
        if (qlayer_rt_init(&m->layers[i], &layers[i], &m->cfg) != FQ_OK)
            goto fail;
    return FQ_OK;
fail:
    qmodel_free(m);
    return FQ_ERR;
}

int qmodel_from_qlayers(qmodel *m, const llama_model *fp, const qconfig *qc, const qlayer *layers)
{
    memset(m, 0, sizeof *m);
    size_t vd = (size_t)fp->cfg.vocab * fp->cfg.hidden;
    real *embed = dup_real(fp->embed, vd, "embeddings");
    real *final_norm = dup_real(fp->final_norm, (size_t)fp->cfg.hidden, "final norm");
    real *lm_head = fp->lm_head == fp->embed ? embed : dup_real(fp->lm_head, vd, "lm_head");
    if (!embed || !final_norm || !lm_head) {
        if (lm_head != embed)
            free(lm_head);
        free(embed);
        free(final_norm);
        return FQ_ERR;
    }
    return qmodel_from_parts(m, &fp->cfg, qc, layers, embed, final_norm, lm_head);
}

void qmodel_free(qmodel *m)
{
    if (m->layers)
        for (int i = 0; i < m->cfg.n_layers; i++)
            qlayer_rt_free(&m->layers[i]);
    free(m->layers);
    if (m->lm_head != m->embed)
        free(m->lm_head);
    free(m->embed);
    free(m->final_norm);
    memset(m, 0, sizeof *m);
}

int qmodel_runner_init(qmodel_runner *r, const qmodel *m, int seqlen)
{
    memset(r, 0, sizeof *r);
    r->m = m;
    if (rope_table_init(&r->rope, &m->cfg, seqlen) != FQ_OK ||
        qlayer_scratch_init(&r->w, &m->cfg, 1, seqlen) != FQ_OK ||
        !(r->x = fq_malloc(sizeof(real) * (size_t)seqlen * m->cfg.hidden, "activations"))) {
        qmodel_runner_free(r);
        return FQ_ERR;
    }
    return FQ_OK;
}

void qmodel_runner_free(qmodel_runner *r)
{
    rope_table_free(&r->rope);
    qlayer_scratch_free(&r->w);
    free(r->x);
    memset(r, 0, sizeof *r);
}

int qmodel_window_logits(void *ctx, const int32_t *ids, int s, real *logits)
{
    qmodel_runner *r = ctx;
    const qmodel *m = r->m;
    if (s > r->rope.seqlen)
        return fq_error("window of %d tokens exceeds the runner's %d", s, r->rope.seqlen);
    if (llama_check_ids(&m->cfg, ids, (size_t)s) != FQ_OK)
        return FQ_ERR;
    llama_embed_fwd(r->x, m->embed, m->cfg.hidden, ids, s);
    for (int i = 0; i < m->cfg.n_layers; i++)
        if (qlayer_fwd(r->x, &m->layers[i], &m->cfg, &m->qc, &r->rope, 1, s, &r->w) != FQ_OK)
            return fq_error_wrap("layer %d", i);
    llama_head_fwd(logits, r->x, m->final_norm, m->lm_head, &m->cfg, s);
    return FQ_OK;
}

int qmodel_load(const char *dir, qmodel *m)
{
    memset(m, 0, sizeof *m);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    st_checkpoint ck = {0};
    qlayer q = {0};
    int has = qconfig_load(dir, &m->qc);
    if (has < 0)
        return FQ_ERR;
    if (has == 0)
        return fq_error("%s: no quantization_config (expected a checkpoint written by flatq "
                        "calibrate; use it as an FP model instead)", path);
    if (llama_config_load(path, &m->cfg) != FQ_OK || st_checkpoint_open(dir, &ck) != FQ_OK)
        return FQ_ERR;
    const llama_config *c = &m->cfg;
    int64_t se[2] = {c->vocab, c->hidden}, sn[1] = {c->hidden};
    if (llama_tensor_load(&ck, "model.embed_tokens.weight", 2, se, &m->embed) != FQ_OK ||
        llama_tensor_load(&ck, "model.norm.weight", 1, sn, &m->final_norm) != FQ_OK)
        goto fail;
    if (st_checkpoint_find(&ck, "lm_head.weight")) {
        if (llama_tensor_load(&ck, "lm_head.weight", 2, se, &m->lm_head) != FQ_OK)
            goto fail;
    } else if (c->tie_embeddings) {
        m->lm_head = m->embed;
    } else {
        fq_error("%s: tensor 'lm_head.weight' is missing (expected: the config does not tie "
                 "embeddings)", dir);
        goto fail;
    }
    m->layers = fq_calloc((size_t)c->n_layers, sizeof *m->layers, "quantized layers");
    if (!m->layers)
        goto fail;
    for (int i = 0; i < c->n_layers; i++) {
        if (qlayer_read(&ck, c, &m->qc, i, &q) != FQ_OK ||
            qlayer_rt_init(&m->layers[i], &q, c) != FQ_OK)
            goto fail;
        qlayer_free(&q);
    }
    st_checkpoint_close(&ck);
    return FQ_OK;
fail:
    qlayer_free(&q);
    if (ck.files)
        st_checkpoint_close(&ck);
    qmodel_free(m);
    return FQ_ERR;
}
