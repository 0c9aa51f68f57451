/* calibrate_layer_cuda.h — calibrate_layer (calibrate_layer.h) with the layer's forward and
 * backward on one GPU (kernels/fq_layer_cuda.h). Same arguments plus the CUDA context of
 * the GPU to use, same semantics: same batches in the same order, same loss normalisation,
 * same loss before/after, same epoch log, same errors (non-finite loss or parameter names
 * the layer and step). AdamW and the factor math stay on the host (calib_loop.c).
 *
 * Memory plan: the layer's weights and the tape are allocated first; then, if the inputs
 * and targets of all used samples fit in the free GPU memory (with a margin), they are
 * uploaded once (from the caller's arrays, or fetched batch by batch); otherwise every
 * step copies its batch from the host (caller's arrays or the fetch callback). The device
 * memory the layer used at its peak is returned in res->peak_device_bytes.
 * Deterministic on one GPU: same inputs and seed, same bytes.
 * In a build without the CUDA backend it fails with a message saying so.
 */
#ifndef FQ_CALIBRATE_LAYER_CUDA_H
#define FQ_CALIBRATE_LAYER_CUDA_H

#include "calibrate_layer.h"
#include "kernels/flatq_cuda.h"

int calibrate_layer_cuda(fq_cuda_ctx *ctx, fq_params *P, const llama_layer *l,
                         const llama_config *c, const fq_recipe *r, const fq_stats *st,
                         const calib_data *data, int layer_index, calib_result *res);

/* The seven merged weights of the trained P (kernels/fq_layer_cuda.h,
 * fq_tape_cuda_merged_weights) computed on the GPU of ctx into w[lin], malloc'ed here as
 * [out, in] floats (the caller frees them; all NULL on error). */
int merged_weights_cuda(fq_cuda_ctx *ctx, const fq_params *P, const llama_layer *l,
                        float *w[QL_NLINEAR]);

#endif
