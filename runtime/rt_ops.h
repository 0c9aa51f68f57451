/* rt_ops.h — the small bf16 kernels of the GPU inference runtime (runtime/rt_ops.cu).
 *
 * Inference keeps activations in bf16 (uint16_t bit patterns in C) and does every
 * reduction, norm and softmax in fp32. Layouts are token-major like core/: a batch of B
 * sequences of n new tokens is [B, n, C]; heads are contiguous inside a row. Positions
 * and context lengths live on the device ([B] int32) so one captured decode step serves
 * any step. The KV cache of the FP model is bf16 [B, kv_heads, max_ctx, dh].
 *
 * Every function takes the CUDA context first, checks its sizes, launches on the
 * context's stream and returns FQ_OK or FQ_ERR with fq_error() naming the kernel.
 */
#ifndef FQ_RT_OPS_H
#define FQ_RT_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/flatq_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- device memory (bytes, any type) ---- */
int rt_alloc(void **dptr, size_t bytes, const char *what);
int rt_upload(fq_cuda_ctx *ctx, void *dst, const void *src, size_t bytes);
int rt_download(fq_cuda_ctx *ctx, void *dst, const void *src, size_t bytes);
int rt_memset0(fq_cuda_ctx *ctx, void *dst, size_t bytes);
/* Free and used device memory of the context's GPU, bytes. */
int rt_mem_info(size_t *free_bytes, size_t *total_bytes);

/* x [n, d] bf16 ← embed [V, d] bf16 rows ids [n] (device int32; checked on the host). */
int rt_embed_bf16(fq_cuda_ctx *ctx, uint16_t *x, const uint16_t *embed, const int32_t *ids,
                  int n, int d);
/* out [n, d] bf16 = γ ∘ x · rsqrt(mean(x²) + eps), fp32 math; gamma fp32 [d]. */
int rt_rmsnorm_bf16(fq_cuda_ctx *ctx, uint16_t *out, const uint16_t *x, const float *gamma,
                    int n, int d, float eps);
/* In place on x [B, n, heads, dh]: token (b, i) rotated by position pos0[b] + i, with the
 * rope_table's cos/sin [max_pos, dh/2] (fp32, device). */
int rt_rope_bf16(fq_cuda_ctx *ctx, uint16_t *x, int B, int n, int heads, int dh,
                 const int32_t *pos0, const float *cos, const float *sin);
/* In place on nvec vectors of dh: x ← x·M (M fp32 [dh, dh]): M_k, M_k^{−T}, M_v. */
int rt_vec_transform_bf16(fq_cuda_ctx *ctx, uint16_t *x, int nvec, int dh, const float *M);
/* One launch for the quantized layer's attention inputs [B, n, heads, dh]: q ← RoPE(q)·Mq,
 * k ← RoPE(k)·Mk, and v ← v·Mv when Mv is not NULL — the same bits as rt_rope_bf16 then
 * rt_vec_transform_bf16 on each. */
int rt_rope_mk_bf16(fq_cuda_ctx *ctx, uint16_t *q, uint16_t *k, uint16_t *v, int B, int n,
                    int hq, int hk, int dh, const int32_t *pos0, const float *cos,
                    const float *sin, const float *Mq, const float *Mk, const float *Mv);
/* out [n] = silu(gate)·up, bf16 (out may alias gate). */
int rt_swiglu_bf16(fq_cuda_ctx *ctx, uint16_t *out, const uint16_t *gate, const uint16_t *up,
                   size_t n);
/* Write k, v [B, n, g, dh] into the caches [B, g, max_ctx, dh] at pos0[b] + i. */
int rt_kv_write_bf16(fq_cuda_ctx *ctx, uint16_t *kc, uint16_t *vc, const uint16_t *k,
                     const uint16_t *v, int B, int n, int g, int dh, int max_ctx,
                     const int32_t *pos0);
/* (the attention over these caches: fq_attention_bf16kv_cuda, kernels/w4a4.h) */
/* y [n, o] = x [n, in] · W [o, in]ᵀ (+ y when accumulate): bf16 in and out, fp32 compute
 * (cuBLAS). */
int rt_linear_bf16(fq_cuda_ctx *ctx, uint16_t *y, const uint16_t *x, const uint16_t *w, int n,
                   int in, int o, int accumulate);
/* logits [n, o] fp32 = x [n, in] · W [o, in]ᵀ, bf16 inputs, fp32 compute and output. */
int rt_linear_bf16_f32(fq_cuda_ctx *ctx, float *y, const uint16_t *x, const uint16_t *w, int n,
                       int in, int o);
/* out [n, V] = the vocab shards parts [T, n, Vs] side by side, dropping the padding rows
 * beyond V. */
int rt_gather_vocab(fq_cuda_ctx *ctx, float *out, const float *parts, int T, int n, int Vs,
                    int V);
/* ids [n] = argmax of each row of logits [n, V] (lowest index on ties, like the CPU). */
int rt_argmax(fq_cuda_ctx *ctx, int32_t *ids, const float *logits, int n, int V);
/* nll[r] = log Σ_v exp(logits[r][v]) − logits[r][ids[r + 1]] for the rows r < s − 1 of a
 * window (ids [s] device: the window's tokens), in double as core/perplexity.c does on the
 * host: the eval downloads s − 1 numbers instead of s × V logits. */
int rt_window_nll(fq_cuda_ctx *ctx, double *nll, const float *logits, const int32_t *ids, int s,
                  int V);
/* Elementwise bf16 ← fp32 (for uploads converted on the GPU) and back. */
int rt_bf16_from_f32(fq_cuda_ctx *ctx, uint16_t *dst, const float *src, size_t n);
int rt_f32_from_bf16(fq_cuda_ctx *ctx, float *dst, const uint16_t *src, size_t n);

#ifdef __cplusplus
}
#endif

#endif
