/* layer_fwd_cuda.h — the full-precision decoder layer over many host-resident sequences on
 * one GPU, in batches: what the calibration's FP pass (coordinator/fp_pass_cuda.c) and a
 * CUDA worker's sq_style statistics (worker/layer_task.c) both need.
 *
 * The layer's weights are uploaded once; the sequences stream through (upload a batch,
 * llama_layer_fwd_cuda, download it when the caller wants the outputs), so GPU memory holds
 * one layer plus one batch's scratch whatever the number of samples. The batch is capped so
 * the attention probabilities (b·h·s² floats, which attention_fwd_cuda keeps) stay ≤ 2 GiB.
 */
#ifndef FQ_LAYER_FWD_CUDA_H
#define FQ_LAYER_FWD_CUDA_H

#include "fq_layer.h"
#include "kernels/flatq_cuda.h"
#include "llama_model.h"

typedef struct {
    double upload_s, compute_s, download_s;
} layer_fwd_times;

/* x [n, s, d] on the host. write_back: x ← layer(x); else x is left as it was. stats (may
 * be NULL; fq_stats_init'ed for this model) receives the per-channel maxima over all n·s
 * tokens. times (may be NULL) accumulates where the time went. tf32: the GEMMs of this call
 * on TF32 tensor cores, the context's math restored after — for outputs that need no more
 * (statistics that only seed the channel scales; boundaries the cache keeps in bf16/fp16,
 * 8 or 11 bits against TF32's 10): on a 70B layer 3.5 s instead of 11 s (issue 6). */
int llama_layer_fwd_batches_cuda(fq_cuda_ctx *ctx, const llama_layer *l, const llama_config *c,
                                 float *x, int n, int s, int b, int write_back, fq_stats *stats,
                                 int tf32, layer_fwd_times *times);

#endif
