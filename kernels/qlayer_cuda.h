/* qlayer_cuda.h — the fake-quant forward of a quantized layer on the GPU: the device twin
 * of core/qlayer_fwd.h, op for op, in fp32, for the GPTQ pass of a `device: cuda` job.
 *
 * Why not the inference runtime (runtime/gpu_q_layer.c): GPTQ runs the layer with some
 * linears already quantized and the rest still holding the merged fp32 weights W', and it
 * needs each linear's actual input x̂ (transformed and fake-quantized) for its Hessian.
 * The runtime's int4 GEMMs can do neither. Why not the calibration tape
 * (fq_layer_cuda.h): it applies the transforms in the training form (channel scales,
 * inverse factors on the weight side), while a finished checkpoint has them merged; the
 * forward here is the checkpoint's own, so it agrees with the CPU pass to fp32 rounding
 * (tests/gpu/test_gpu_gptq.c).
 *
 * Every float* below is DEVICE memory; the clip ratios are host scalars. The GEMMs follow
 * ctx->math (the GPTQ pass keeps FQ_MATH_FP32; the transforms are fp32 in every mode).
 */
#ifndef FQ_QLAYER_CUDA_H
#define FQ_QLAYER_CUDA_H

#include "kernels/flatq_cuda.h"
#include "qlayer_fwd.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int n1, n2, blocks;
    float *L, *R; /* [blocks, n1, n1], [blocks, n2, n2] */
} qkron_dev;

typedef struct {
    float *attn_norm, *mlp_norm;
    qkron_dev attn_in, mlp_in, down_in, o_in;
    float *Mk, *Mk_inv_t, *Mv; /* Mv NULL unless separate_vtrans */
    float *w[QL_NLINEAR];      /* [out, in] */
    float act_clip[QL_NLINEAR][2], kv_clip[2][2]; /* host: clip ratios κ */
} qlayer_dev;

/* Upload rt (its weights included). */
int qlayer_dev_upload(fq_cuda_ctx *ctx, qlayer_dev *d, const qlayer_rt *rt,
                      const llama_config *c);
void qlayer_dev_free(qlayer_dev *d);
/* d->w[lin] ← host weight [out, in] of this model's shape. */
int qlayer_dev_set_weight(fq_cuda_ctx *ctx, qlayer_dev *d, int lin, const float *host,
                          const llama_config *c);

/* Scratch of one forward over up to b·s tokens (the attention keeps b·h·s² softmax rows). */
typedef struct {
    int b, s;
    size_t wide;
    float *a, *t, *q, *k, *v, *att, *gate, *up, *probs, *scale, *zero, *work;
} qlayer_scratch_dev;
int qlayer_scratch_dev_init(qlayer_scratch_dev *w, const llama_config *c, int b, int s);
void qlayer_scratch_dev_free(qlayer_scratch_dev *w);
/* Device bytes a scratch for b·s tokens takes (to pick b). */
size_t qlayer_scratch_dev_bytes(const llama_config *c, int b, int s);

/* The observer of core/qlayer_fwd.h with a DEVICE x̂ [rows, k]: 0 go on, 1 stop, FQ_ERR. */
typedef int (*qlayer_input_dev_fn)(void *ctx, int lin, const float *xhat, int rows, int k);

/* x [b, s, d] (device) ← quantized layer(x), in place; rope_cos/rope_sin: the rope_table
 * arrays [≥ s, dh/2] on the device. on may be NULL; when it stops the forward, x is left
 * half-computed, as on the CPU. */
int qlayer_fwd_cuda(fq_cuda_ctx *ctx, float *x, const qlayer_dev *l, const llama_config *c,
                    const qconfig *qc, const float *rope_cos, const float *rope_sin, int b,
                    int s, qlayer_scratch_dev *w, qlayer_input_dev_fn on, void *octx);

#ifdef __cplusplus
}
#endif

#endif
