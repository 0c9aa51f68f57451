/* llama_layer_cuda.h — the full-precision LLaMA decoder layer on the GPU: the twin of
 * llama_layer_fwd (core/llama_model.h) and of fq_stats_layer_fwd (core/fq_layer.h), for
 * the calibration's FP pass (coordinator/fp_pass_cuda.h).
 *
 * The idea: compose the existing fp32 ops of flatq_cuda.h in exactly the order of
 * core/llama_capture.c (RMSNorm, q/k/v GEMMs, RoPE, attention, o_proj GEMM accumulating
 * into the residual, RMSNorm, gate/up GEMMs, SwiGLU, down_proj GEMM accumulating into the
 * residual), so the GPU result equals the CPU one to fp32 rounding. The per-channel maxima
 * that the sq_style scale init needs (fq_stats) are folded on the GPU from the buffers the
 * forward already holds: no capture copies, no host traffic beyond 2·d + f floats.
 *
 * Trade-off: attention keeps the softmax rows P [b, h, s, s] (attention_fwd_cuda wants
 * them); the FP pass therefore runs few sequences per call (llama_scratch_dev_init's b).
 *
 * Everything here is plain C with device pointers; no CUDA header is needed to call it.
 */
#ifndef FQ_LLAMA_LAYER_CUDA_H
#define FQ_LLAMA_LAYER_CUDA_H

#include "kernels/flatq_cuda.h"
#include "llama_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A layer's weights on the device, fp32, the shapes of llama_layer. */
typedef struct {
    float *attn_norm, *wq, *wk, *wv, *wo, *mlp_norm, *wgate, *wup, *wdown;
} llama_layer_dev;

/* Scratch of one forward over up to b·s tokens. */
typedef struct {
    int b, s;
    float *a, *q, *k, *v, *att, *gate, *up, *probs;
} llama_scratch_dev;

/* Per-channel maxima of |input| of the q/k/v, gate/up and down projections (device). */
typedef struct {
    int d, f;
    float *attn_in, *mlp_in, *down_in; /* [d], [d], [f], start at 0 */
} fq_stats_dev;

/* FQ_OK when c is a layer shape the GPU layers take (positive sizes, heads a multiple of
 * the KV heads); else an error that starts with `where`. */
int llama_layer_shape_check(const llama_config *c, const char *where);

/* host[9]: attn_norm, wq, wk, wv, wo, mlp_norm, wgate, wup, wdown (llama_layer order). */
int llama_layer_dev_upload(fq_cuda_ctx *ctx, llama_layer_dev *dl, const llama_config *c,
                           const float *const host[9]);
void llama_layer_dev_free(llama_layer_dev *dl);
int llama_scratch_dev_init(llama_scratch_dev *w, const llama_config *c, int b, int s);
void llama_scratch_dev_free(llama_scratch_dev *w);
int fq_stats_dev_init(fq_cuda_ctx *ctx, fq_stats_dev *st, const llama_config *c);
void fq_stats_dev_free(fq_stats_dev *st);
/* Copy the maxima to host arrays [d], [d], [f] (synchronises). */
int fq_stats_dev_download(fq_cuda_ctx *ctx, const fq_stats_dev *st, float *attn_in,
                          float *mlp_in, float *down_in);

/* mx[j] = max(mx[j], max over rows |x[r, j]|), x [rows, n] on the device. */
int colmax_abs_cuda(fq_cuda_ctx *ctx, float *mx, const float *x, long rows, int n);

/* x [b, s, d] (device) ← layer(x) in place; rope_cos/rope_sin: the rope_table arrays
 * [≥ s, dh/2] on the device; st (may be NULL) receives this batch's maxima. */
int llama_layer_fwd_cuda(fq_cuda_ctx *ctx, float *x, const llama_layer_dev *l,
                         const llama_config *c, const float *rope_cos, const float *rope_sin,
                         int b, int s, llama_scratch_dev *w, fq_stats_dev *st);

#ifdef __cplusplus
}
#endif

#endif
