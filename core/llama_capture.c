/* llama_capture.c — llama_layer_fwd with the linear layers' inputs copied out (see
 * llama_capture.h). llama_layer_fwd is this function with no capture, so the two can
 * never drift apart. */
#include "llama_capture.h"

#include <string.h>

static void copy_out(real *dst, const real *src, size_t n)
{
    if (dst)
        memcpy(dst, src, sizeof(real) * n);
}

void llama_layer_fwd_capture(real *x, const llama_layer *l, const llama_config *c,
                             const rope_table *rope, int b, int s, llama_scratch *w,
                             const llama_layer_inputs *cap)
{
    int n = b * s, d = c->hidden, f = c->intermediate, h = c->n_heads, g = c->n_kv_heads,
        dh = c->head_dim;
    rmsnorm_fwd(w->a, NULL, x, l->attn_norm, n, d, (real)c->rms_eps);
    copy_out(cap ? cap->attn_in : NULL, w->a, (size_t)n * d);
    linear_fwd(w->q, w->a, l->wq, n, d, h * dh);
    linear_fwd(w->k, w->a, l->wk, n, d, g * dh);
    linear_fwd(w->v, w->a, l->wv, n, d, g * dh);
    rope_fwd(w->q, b, s, h, dh, rope);
    rope_fwd(w->k, b, s, g, dh, rope);
    attention_fwd(w->att, NULL, w->q, w->k, w->v, b, s, h, g, dh, w->scores);
    copy_out(cap ? cap->o_in : NULL, w->att, (size_t)n * h * dh);
    real_gemm(0, 1, n, d, h * dh, 1, w->att, h * dh, l->wo, h * dh, 1, x, d);
    rmsnorm_fwd(w->a, NULL, x, l->mlp_norm, n, d, (real)c->rms_eps);
    copy_out(cap ? cap->mlp_in : NULL, w->a, (size_t)n * d);
    linear_fwd(w->gate, w->a, l->wgate, n, d, f);
    linear_fwd(w->up, w->a, l->wup, n, d, f);
    swiglu_fwd(w->gate, w->gate, w->up, (size_t)n * f);
    copy_out(cap ? cap->down_in : NULL, w->gate, (size_t)n * f);
    real_gemm(0, 1, n, d, f, 1, w->gate, f, l->wdown, f, 1, x, d);
}
