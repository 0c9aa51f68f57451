/* llama_model.h — a LLaMA model in memory (fp32 `real` weights) and its FP forward.
 *
 * Weights are widened from bf16/fp16/fp32 on load. Layers can be loaded one at a time
 * (llama_layer_load) so the calibration's FP pass never needs the whole model in memory;
 * llama_model_load loads everything for evaluation.
 */
#ifndef FQ_LLAMA_MODEL_H
#define FQ_LLAMA_MODEL_H

#include "llama_config.h"
#include "llama_ops.h"
#include "real.h"
#include "safetensors.h"

#include <stdint.h>

typedef struct {
    real *attn_norm;            /* γ1 [d] */
    real *wq, *wk, *wv, *wo;    /* [h·dh, d], [g·dh, d], [g·dh, d], [d, h·dh] */
    real *mlp_norm;             /* γ2 [d] */
    real *wgate, *wup, *wdown;  /* [f, d], [f, d], [d, f] */
} llama_layer;

typedef struct {
    llama_config cfg;
    st_checkpoint ck;
    real *embed;      /* [V, d] */
    llama_layer *layers;
    real *final_norm; /* [d] */
    real *lm_head;    /* [V, d]; == embed when tied */
} llama_model;

/* Read one tensor `name` as real, checking its shape equals shape[0..ndim). */
int llama_tensor_load(const st_checkpoint *ck, const char *name, int ndim,
                      const int64_t *shape, real **out);
int llama_layer_load(const st_checkpoint *ck, const llama_config *c, int i, llama_layer *l);
void llama_layer_free(llama_layer *l);

/* Open dir (config.json + safetensors) and load every weight. */
int llama_model_load(const char *dir, llama_model *m);
void llama_model_free(llama_model *m);

/* Scratch for one forward over b·s tokens. */
typedef struct {
    int b, s;
    real *a, *q, *k, *v, *att, *gate, *up, *scores;
} llama_scratch;
int llama_scratch_init(llama_scratch *w, const llama_config *c, int b, int s);
void llama_scratch_free(llama_scratch *w);

/* x [b, s, d] ← layer(x), in place. */
void llama_layer_fwd(real *x, const llama_layer *l, const llama_config *c, const rope_table *rope,
                     int b, int s, llama_scratch *w);

/* x [n, d] ← embed[ids] (embed [V, d]). Ids must be checked in range (llama_check_ids). */
void llama_embed_fwd(real *x, const real *embed, int d, const int32_t *ids, int n);
int llama_check_ids(const llama_config *c, const int32_t *ids, size_t n);
/* logits [n, V] = lm_head(RMSNorm(x; final_norm)); x is overwritten. */
void llama_head_fwd(real *logits, real *x, const real *final_norm, const real *lm_head,
                    const llama_config *c, int n);

/* Everything one window's FP forward needs; its logits function fits perplexity_eval. */
typedef struct {
    const llama_model *m;
    rope_table rope;
    llama_scratch w;
    real *x;
} llama_runner;
int llama_runner_init(llama_runner *r, const llama_model *m, int seqlen);
void llama_runner_free(llama_runner *r);
/* window_logits_fn: ctx is a llama_runner; logits [s, V]. */
int llama_window_logits(void *ctx, const int32_t *ids, int s, real *logits);

#endif
