/* qformat.h — the quantized checkpoint on disk (core/FORMAT.md is the reference).
 *
 * A quantized model directory is a Hugging Face-style sharded safetensors checkpoint:
 * one shard per decoder layer (layer_NNN.safetensors, exactly the file a worker wrote),
 * one shard for embeddings, final norm and lm_head (model-head.safetensors), the index
 * model.safetensors.index.json, config.json with a `quantization_config` object, and the
 * tokenizer files copied from the source model.
 */
#ifndef FQ_QFORMAT_H
#define FQ_QFORMAT_H

#include "llama_config.h"
#include "qlayer.h"
#include "safetensors.h"

#include <jansson.h>

#define QFORMAT_VERSION 1
#define QFORMAT_HEAD_FILE "model-head.safetensors"

/* Add layer `layer`'s tensors (names model.layers.N.…) to a writer. */
int qlayer_add_tensors(st_writer *w, int layer, const qlayer *q);
/* Read layer `layer` back, checking every shape against c and qc. */
int qlayer_read(const st_checkpoint *ck, const llama_config *c, const qconfig *qc, int layer,
                qlayer *q);
/* Write one layer as its own safetensors file, atomically. */
int qlayer_write_file(const char *path, int layer, const qlayer *q);

/* quantization_config <-> qconfig (plus the factor shapes, for readers of the JSON). */
json_t *qconfig_to_json(const qconfig *qc, const llama_config *c);
int qconfig_from_json(const json_t *qcfg, const char *label, qconfig *qc);
/* *qc from DIR/config.json; returns 1 when it has a quantization_config, 0 when not. */
int qconfig_load(const char *dir, qconfig *qc);

/* Write embeddings (float, [V, d]), final norm [d] and lm_head ([V, d], or NULL when tied
 * and unchanged) to DIR/model-head.safetensors. */
int qcheckpoint_write_head(const char *dir, const llama_config *c, const float *embed,
                           const float *final_norm, const float *lm_head);
/* Finish DIR: index over the head shard and the n_layers layer shards, config.json
 * (source config + quantization_config), tokenizer files copied from src_model_dir. */
int qcheckpoint_finish(const char *dir, const char *src_model_dir, const llama_config *c,
                       const qconfig *qc);

#endif
