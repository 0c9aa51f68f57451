/* baseline_rtn.c — RTN quantization of one layer into the common qlayer form: identity
 * transforms and clip ratios 1, so the quantized forward reduces to plain RTN. */
#include "baseline_rtn.h"
#include "error.h"
#include "qformat.h"

#include <stdio.h>

#include <string.h>

int baseline_rtn_layer(const llama_layer *l, const llama_config *c, const qconfig *qc,
                       qlayer *out)
{
    if (qlayer_alloc(out, c, qc) != FQ_OK)
        return FQ_ERR;
    int d = c->hidden, f = c->intermediate, qd = c->n_heads * c->head_dim,
        kd = c->n_kv_heads * c->head_dim;
    memcpy(out->attn_norm, l->attn_norm, sizeof(float) * d);
    memcpy(out->mlp_norm, l->mlp_norm, sizeof(float) * d);
    const real *w[QL_NLINEAR] = {l->wq, l->wk, l->wv, l->wo, l->wgate, l->wup, l->wdown};
    int shape[QL_NLINEAR][2] = {{qd, d}, {kd, d}, {kd, d}, {d, qd}, {f, d}, {f, d}, {d, f}};
    for (int i = 0; i < QL_NLINEAR; i++)
        if (qlinear_quantize_rtn(&out->lin[i], w[i], shape[i][0], shape[i][1], qc->w_bits) !=
            FQ_OK) {
            qlayer_free(out);
            return fq_error_wrap("rtn: %s", qlinear_names[i]);
        }
    return FQ_OK;
}

int baseline_rtn_checkpoint(const llama_model *fp, const char *src_dir, const qconfig *qc,
                            const char *out_dir)
{
    if (!fp || !src_dir || !qc || !out_dir)
        return fq_error("worker/baseline_rtn.c:baseline_rtn_checkpoint: NULL argument");
    for (int i = 0; i < fp->cfg.n_layers; i++) {
        qlayer q = {0};
        char path[4096];
        if (snprintf(path, sizeof path, "%s/layer_%03d.safetensors", out_dir, i) >=
            (int)sizeof path)
            return fq_error("%s: directory name too long", out_dir);
        int rc = baseline_rtn_layer(&fp->layers[i], &fp->cfg, qc, &q);
        if (rc == FQ_OK)
            rc = qlayer_write_file(path, i, &q);
        qlayer_free(&q);
        if (rc != FQ_OK)
            return fq_error_wrap("%s: RTN layer %d", out_dir, i);
    }
    if (qcheckpoint_write_head(out_dir, &fp->cfg, fp->embed, fp->final_norm,
                               fp->lm_head == fp->embed ? NULL : fp->lm_head) != FQ_OK)
        return FQ_ERR;
    return qcheckpoint_finish(out_dir, src_dir, &fp->cfg, qc);
}
