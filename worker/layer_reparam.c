/* layer_reparam.c — trained FlatQuant parameters → qlayer (layer_reparam.h).
 *
 * The merge itself is core/fq_merge.c (float64); here only casts to the fp32 storage of
 * the qlayer and the RTN quantization of the seven merged weights.
 */
#include "layer_reparam.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fq_merge.h"

#define WHERE "worker/layer_reparam.c"

qconfig layer_reparam_qconfig(const fq_params *P)
{
    qconfig qc;
    memset(&qc, 0, sizeof qc);
    qc.w_bits = P->w_bits;
    qc.a_bits = P->a_bits;
    qc.kv_bits = P->kv_bits;
    qc.kv_sym = 0;
    qc.tp_blocks = P->T;
    qc.separate_vtrans = P->separate_vtrans;
    strcpy(qc.method, "flatquant");
    return qc;
}

static void copy_f32(float *dst, const real *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (float)src[i];
}

int layer_reparam(qlayer *q, const fq_params *P, const llama_layer *l)
{
    return layer_reparam_keep(q, P, l, NULL);
}

int layer_reparam_keep(qlayer *q, const fq_params *P, const llama_layer *l,
                       float *merged[QL_NLINEAR])
{
    return layer_reparam_from(q, P, l, NULL, merged);
}

static void drop_weights(float *wm[QL_NLINEAR])
{
    for (int i = 0; wm && i < QL_NLINEAR; i++) {
        free(wm[i]);
        wm[i] = NULL;
    }
}

int layer_reparam_from(qlayer *q, const fq_params *P, const llama_layer *l,
                       float *wm[QL_NLINEAR], float *merged[QL_NLINEAR])
{
    if (!q || !P || !P->p || !l) {
        drop_weights(wm);
        return fq_error(WHERE ":layer_reparam: NULL argument (expected qlayer, params, layer)");
    }
    memset(q, 0, sizeof *q);
    if (merged)
        memset(merged, 0, sizeof(float *) * QL_NLINEAR);
    for (int i = 0; wm && i < QL_NLINEAR; i++)
        if (!wm[i]) {
            drop_weights(wm);
            return fq_error(WHERE ":layer_reparam: merged weight %s missing", qlinear_names[i]);
        }
    const llama_config *c = &P->cfg;
    const int d = c->hidden, dh = c->head_dim, T = P->T;
    qconfig qc = layer_reparam_qconfig(P);
    fq_merged m;
    if (fq_merge_parts(&m, P, l, wm == NULL)) {
        drop_weights(wm);
        return fq_error_wrap(WHERE ":layer_reparam");
    }
    if (qlayer_alloc(q, c, &qc))
        goto fail;
    if (q->attn_in.n1 != P->na1 || q->attn_in.n2 != P->na2 || q->down_in.n1 != P->nd1 ||
        q->down_in.n2 != P->nd2 || q->down_in.blocks != T || q->o_blocks != T) {
        fq_error(WHERE ":layer_reparam: qlayer factor shapes (%d x %d, %d x %d in %d blocks) "
                 "differ from the trained ones (%d x %d, %d x %d in %d blocks)", q->attn_in.n1,
                 q->attn_in.n2, q->down_in.n1, q->down_in.n2, q->down_in.blocks, P->na1,
                 P->na2, P->nd1, P->nd2, T);
        goto fail;
    }
    size_t na1 = (size_t)P->na1 * P->na1, na2 = (size_t)P->na2 * P->na2;
    size_t nd1 = (size_t)P->nd1 * P->nd1, nd2 = (size_t)P->nd2 * P->nd2;
    copy_f32(q->attn_norm, m.attn_norm, (size_t)d);
    copy_f32(q->mlp_norm, m.mlp_norm, (size_t)d);
    copy_f32(q->attn_in.L, m.La, na1);
    copy_f32(q->attn_in.R, m.Ra, na2);
    copy_f32(q->mlp_in.L, m.Lug, na1);
    copy_f32(q->mlp_in.R, m.Rug, na2);
    copy_f32(q->down_in.L, m.Ld, T * nd1);
    copy_f32(q->down_in.R, m.Rd, T * nd2);
    copy_f32(q->Mo, m.Mo, (size_t)T * P->hb * P->hb);
    copy_f32(q->Mk, m.Mk, (size_t)dh * dh);
    copy_f32(q->Mk_inv_t, m.Mk_inv_t, (size_t)dh * dh);
    if (P->separate_vtrans)
        copy_f32(q->Mv, m.Mv, (size_t)dh * dh);
    for (int i = 0; i < QL_NLINEAR; i++) {
        q->act_clip[i][0] = (float)m.act_clip[i][0];
        q->act_clip[i][1] = (float)m.act_clip[i][1];
    }
    for (int i = 0; i < 2; i++) {
        q->kv_clip[i][0] = (float)m.kv_clip[i][0];
        q->kv_clip[i][1] = (float)m.kv_clip[i][1];
    }
    for (int i = 0; i < QL_NLINEAR; i++) {
        int out = fq_linear_out(c, i), in = fq_linear_in(c, i);
        size_t n = (size_t)out * in;
        float *w = wm ? wm[i] : fq_malloc(sizeof(float) * n, "merged weight");
        if (wm)
            wm[i] = NULL;
        if (!w)
            goto fail;
        if (!wm)
            copy_f32(w, m.w[i], n);
        int rc = qlinear_quantize_rtn(&q->lin[i], w, out, in, P->w_bits);
        if (merged)
            merged[i] = w;
        else
            free(w);
        if (rc) {
            fq_error_wrap("weight %s", qlinear_names[i]);
            goto fail;
        }
    }
    fq_merged_free(&m);
    return FQ_OK;
fail:
    drop_weights(wm);
    fq_merged_free(&m);
    qlayer_free(q);
    for (int i = 0; merged && i < QL_NLINEAR; i++) {
        free(merged[i]);
        merged[i] = NULL;
    }
    return fq_error_wrap(WHERE ":layer_reparam");
}
