/* qmodel.h — a whole quantized model for CPU evaluation: embeddings, final norm and
 * lm_head in full precision, every decoder layer as a qlayer_rt (fake quantization).
 * Built from a quantized checkpoint or from in-memory qlayers (baselines, tests). */
#ifndef FQ_QMODEL_H
#define FQ_QMODEL_H

#include "llama_model.h"
#include "qlayer_fwd.h"

typedef struct {
    llama_config cfg;
    qconfig qc;
    real *embed, *final_norm, *lm_head; /* lm_head may equal embed */
    qlayer_rt *layers;
} qmodel;

/* Expand the c->n_layers qlayers and take ownership of embed [V, d], final_norm [d] and
 * lm_head [V, d] (lm_head may equal embed), even on failure: the caller must not free them.
 * Used by methods that change the model-level tensors too (QuaRot rotates them). */
int qmodel_from_parts(qmodel *m, const llama_config *c, const qconfig *qc, const qlayer *layers,
                      real *embed, real *final_norm, real *lm_head);
/* Take copies of the FP model's embeddings/norm/head and expand the n_layers qlayers. */
int qmodel_from_qlayers(qmodel *m, const llama_model *fp, const qconfig *qc, const qlayer *layers);
void qmodel_free(qmodel *m);
/* Load a quantized checkpoint directory written by flatq (config.json with
 * quantization_config, head shard, one shard per layer). */
int qmodel_load(const char *dir, qmodel *m);

typedef struct {
    const qmodel *m;
    rope_table rope;
    qlayer_scratch w;
    real *x;
} qmodel_runner;
int qmodel_runner_init(qmodel_runner *r, const qmodel *m, int seqlen);
void qmodel_runner_free(qmodel_runner *r);
/* window_logits_fn over a qmodel_runner. */
int qmodel_window_logits(void *ctx, const int32_t *ids, int s, real *logits);

#endif
