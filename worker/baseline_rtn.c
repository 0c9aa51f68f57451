/* baseline_rtn.c — RTN quantization of one layer into the common qlayer form: identity
 * transforms and clip ratios 1, so the quantized forward reduces to plain RTN. */
#include "baseline_rtn.h"
#include "error.h"

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
