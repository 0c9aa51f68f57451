/* gpu_model.h — a LLaMA model on the GPU for inference: the FP (bf16) model or flatq's
 * W4A4KV4 checkpoint, one tensor-parallel shard per rank, with its KV cache.
 *
 * Loading reads the checkpoint on the host one tensor at a time (a layer's fp32 copy at
 * most, never the whole model), cuts this rank's slice (runtime/tp_plan.h) and uploads it:
 * bf16 weights for the FP model; for a quantized one the packed nibbles and per-row
 * scales as the checkpoint stores them, the online transforms in fp32 and the clip ratios
 * on the host. Embeddings, final norm and lm_head stay bf16 in both.
 *
 * The forward takes B sequences of n new tokens each, at positions pos0[b] .. pos0[b]+n−1,
 * writes their K/V into the cache and returns fp32 logits on the device, for every token
 * (evaluation) or only each sequence's last (generation). Prefill and decode are the same
 * call with different n. Activations are bf16 between ops, reductions fp32; the residual
 * stream is bf16, as in transformers' bf16 inference.
 */
#ifndef FQ_GPU_MODEL_H
#define FQ_GPU_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "llama_config.h"
#include "qlayer.h"
#include "runtime/rt_profile.h"
#include "runtime/tp_comm.h"
#include "runtime/tp_plan.h"

typedef struct {
    float *attn_norm, *mlp_norm;                 /* fp32 [d] */
    uint16_t *wq, *wk, *wv, *wo, *wgate, *wup, *wdown; /* bf16, this rank's slices */
    uint16_t *kc, *vc;                           /* bf16 [B, g_l, max_ctx, dh] */
} gpu_fp_layer;

typedef struct {
    int n1, n2, blocks; /* this rank's blocks */
    float *L, *R;       /* device fp32 [blocks, n1, n1], [blocks, n2, n2] (R may be NULL) */
} gpu_kron;

typedef struct {
    float *attn_norm, *mlp_norm;     /* γ1', γ2' fp32 [d] */
    gpu_kron attn_in, mlp_in, down_in, o_in;
    float *Mk, *Mk_inv_t, *Mv;       /* fp32 [dh, dh]; Mv NULL unless separate_vtrans */
    uint8_t *qw[QL_NLINEAR];         /* packed nibbles, this rank's slices */
    float *sw[QL_NLINEAR];           /* per-row scales */
    float act_clip[QL_NLINEAR][2], kv_clip[2][2];
    void *kv4;                       /* fq_kv4_cache (kernels/w4a4.h) */
} gpu_q_layer;

typedef struct {
    llama_config cfg;
    qconfig qc;
    int quantized;
    tp_plan plan;
    fq_cuda_ctx *ctx;
    tp_comm *comm;
    int max_batch, max_ctx, max_tokens; /* B, positions per sequence, B·n per forward */
    uint16_t *embed;      /* bf16 [V, d], replicated */
    float *final_norm;    /* fp32 [d] */
    uint16_t *lm_head;    /* bf16 [vocab_shard, d] (padding rows zero) */
    gpu_fp_layer *fp;     /* n_layers, FP model */
    gpu_q_layer *q;       /* n_layers, quantized model */
    float *rope_cos, *rope_sin; /* [max_ctx, dh/2] */
    /* scratch for max_tokens tokens */
    uint16_t *x, *a, *qb, *kb, *vb, *att, *gate, *up;
    uint8_t *codes[3];
    float *ascale[3];
    int max_logit_rows;          /* rows of logits one forward may return */
    float *logits_part;          /* [max_logit_rows, vocab_shard] this rank's vocab slice */
    float *gathered;             /* [tp, max_logit_rows, vocab_shard] (tp > 1) */
    float *logits;               /* [max_logit_rows, V] */
    int32_t *ids_d, *pos0_d;
    double *nll_d;               /* [max_logit_rows] per-token NLL of a scored window */
    size_t weight_bytes, kv_bytes, scratch_bytes; /* this rank's GPU memory */
    rt_profile *prof;            /* NULL, or per-op timing (runtime/rt_profile.h) */
} gpu_model;

/* Load dir (FP or quantized checkpoint) as this rank's shard. ctx and comm stay owned by
 * the caller and must outlive the model. Collective: every rank calls it. */
int gpu_model_load(gpu_model *m, const char *dir, fq_cuda_ctx *ctx, tp_comm *comm,
                   int max_batch, int max_ctx, int max_tokens, int max_logit_rows);
void gpu_model_free(gpu_model *m);

/* ids [B, n] and pos0 [B] on the host. *logits (device, owned by the model) receives fp32
 * [B·n, V] when all_logits, else [B, V] (the last token of each sequence). Collective.
 * Does not wait for the GPU: tp_comm_wait (or a download) does. */
int gpu_model_forward(gpu_model *m, const int32_t *ids, int B, int n, const int *pos0,
                      int all_logits, const float **logits);

/* The layer forwards (runtime/gpu_fp_layer.c, runtime/gpu_q_layer.c): x [B·n, d] in place. */
int gpu_fp_layer_fwd(gpu_model *m, int layer, int B, int n, const int *pos0);
int gpu_q_layer_fwd(gpu_model *m, int layer, int B, int n, const int *pos0);
/* x ← x + Σ_ranks in·W_rankᵀ (bf16, k input channels of this rank): the row-parallel
 * GEMM with the residual on rank 0 and one all-reduce. */
int gpu_row_parallel_linear(gpu_model *m, const uint16_t *in, const uint16_t *w, int N, int k);
/* Upload one quantized layer's shard with its KV4 cache (runtime/gpu_q_layer.c); ck is
 * the open st_checkpoint. */
int gpu_q_layer_load(gpu_model *m, const void *ck, int layer);
void gpu_q_layer_free(gpu_q_layer *l);
/* Device memory that counts toward the model's footprint (weights or KV cache). */
int gpu_model_alloc(gpu_model *m, void **p, size_t bytes, int is_kv, const char *what);
/* fp32 host array → new device array, counted as weights. */
int gpu_model_upload_f32(gpu_model *m, float **dst, const float *src, size_t n,
                         const char *what);

#endif
