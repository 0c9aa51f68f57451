/* w4a4_layer_ref.h — the GPU runtime's W4A4KV4 decoder layer (runtime/gpu_q_layer.c)
 * composed on the CPU from the references of its kernels (core/w4a4_ref.h), with the same
 * bf16 activations between the steps: the plain-C twin the real-kernel model is checked
 * against. One sequence, all heads (tensor parallelism's per-block scales come from the
 * checkpoint's tp_blocks, so a TP=1 run of this reference is what every TP degree equals).
 *
 * Why a separate reference from core/qlayer_fwd.c: a 4-bit quantized layer is chaotic at
 * rounding scale — rounding its input to bf16 moves a RTN W4A4 layer's output by ~10 %
 * (tests/unit/test_w4a4_layer_ref.c measures it), so the fp32 fake-quant forward and the
 * bf16 runtime legitimately differ by more than any tight tolerance, while this reference
 * follows the runtime's roundings.
 */
#ifndef FQ_W4A4_LAYER_REF_H
#define FQ_W4A4_LAYER_REF_H

#include "llama_ops.h"
#include "qlayer_fwd.h"
#include "qmodel.h"
#include "qlayer.h"
#include "w4a4_ref.h"

typedef struct {
    int s;                       /* tokens the buffers hold */
    uint8_t *codes[3];           /* per consumer: [s, Kp/2] activation codes */
    float *scales[3];            /* [s, kblocks] */
    uint16_t *a, *qb, *kb, *vb, *att, *gate, *up;
    fq_kv4_cache kv;
    /* o_proj and down_proj summed as tp ranks would (fq_w4a4_gemm_rowpar): 1 (set by
     * w4a4_layer_ws_init) is the TP = 1 runtime; reduce_bf16 = 1 rounds the partials as
     * the runtime's bf16 all-reduce does, 0 sums them in fp32 */
    int tp, reduce_bf16;
} w4a4_layer_ws;

int w4a4_layer_ws_init(w4a4_layer_ws *w, const llama_config *c, int s);
void w4a4_layer_ws_free(w4a4_layer_ws *w);

/* x [s, d] bf16 ← the W4A4KV4 layer q applied to the s tokens at positions 0..s−1. */
int w4a4_layer_ref(uint16_t *x, const qlayer *q, const llama_config *c, const qconfig *qc,
                   const rope_table *rope, int s, w4a4_layer_ws *w);
/* The same, handing each linear's dequantized input (codes × scales, the real K columns)
 * to `on` as qlayer_fwd_observed does (core/qlayer_fwd.h; a non-zero return stops). */
int w4a4_layer_ref_observed(uint16_t *x, const qlayer *q, const llama_config *c,
                            const qconfig *qc, const rope_table *rope, int s, w4a4_layer_ws *w,
                            qlayer_input_fn on, void *ctx);

/* A whole checkpoint through w4a4_layer_ref: the head (embedding, final norm, lm_head) in
 * fp32 from the bf16 residual, as the runtime's fp32 logits. */
typedef struct {
    qmodel q;          /* config, quantization_config and the head tensors */
    qlayer *layers;    /* the packed layers */
    rope_table rope;
    w4a4_layer_ws ws;
    real *x;
    uint16_t *xb;
} w4a4_ref_model;

int w4a4_ref_model_load(w4a4_ref_model *m, const char *dir, int seqlen);
void w4a4_ref_model_free(w4a4_ref_model *m);
/* window_logits_fn (core/perplexity.h) over a w4a4_ref_model. */
int w4a4_ref_window_logits(void *ctx, const int32_t *ids, int s, real *logits);

#endif
