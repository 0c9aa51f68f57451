/* baseline_rtn.h — the RTN baseline (ALGORITHM §8): no transform, no calibration.
 * Weights per output row, symmetric, s = max|w|/qmax; activations per token with no
 * clipping; K/V asymmetric per (token, head). The layer keeps its norms. */
#ifndef FQ_BASELINE_RTN_H
#define FQ_BASELINE_RTN_H

#include "llama_model.h"
#include "qlayer.h"

int baseline_rtn_layer(const llama_layer *l, const llama_config *c, const qconfig *qc,
                       qlayer *out);

/* A whole RTN checkpoint of fp (read from src_dir) in flatq's format in out_dir (which must
 * exist): one shard per layer, the head shard, config.json with quantization_config. For
 * tests and benchmarks that need a quantized checkpoint without a calibration. */
int baseline_rtn_checkpoint(const llama_model *fp, const char *src_dir, const qconfig *qc,
                            const char *out_dir);

#endif
