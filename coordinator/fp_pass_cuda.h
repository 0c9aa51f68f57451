/* fp_pass_cuda.h — the calibration's FP pass with the decoder layers on a GPU.
 *
 * Same contract as fp_pass_produce (coordinator/fp_pass.h): make boundary b, reusing a
 * valid cache entry, else computing it from boundary b−1 and writing it through the same
 * fp_pass_commit_boundary, so the cache files have the same names, header, dtype and
 * rounding as the CPU pass's; only the fp32 rounding of the layer math differs. Boundary 0
 * (an embedding gather) runs on the CPU path itself.
 *
 * Per layer: the weights are read on the host (llama_layer_load), uploaded once, and the
 * calibration samples stream through in batches (upload, llama_layer_fwd_cuda, download),
 * so GPU memory holds one layer plus one batch's scratch, never the whole boundary.
 * The batch is the job's, capped so the attention probabilities (b·h·s² floats, which
 * attention_fwd_cuda keeps) stay under 2 GiB.
 *
 * How the coordinator uses it (cmd_calibrate.c, job device: cuda):
 *     fp_pass fp = {...as today...};  fp_pass_init(&fp);
 *     fp_pass_cuda g;  fp_pass_cuda_init(&g, &fp, local_device);
 *     scheduler: .produce_next_boundary = fp_pass_produce_cuda, .produce_ctx = &g
 *     ... fp_pass_cuda_free(&g); fp_pass_free(&fp);
 * Built without nvcc, fp_pass_cuda_init fails with a one-line error.
 */
#ifndef FQ_FP_PASS_CUDA_H
#define FQ_FP_PASS_CUDA_H

#include "coordinator/fp_pass.h"
#include "fq_layer.h"

typedef struct {
    fp_pass *p;          /* the pass state (fp_pass_init'ed by the caller) */
    int device;
    void *gpu;           /* the CUDA context and buffers (opaque) */
    fq_stats *stats;     /* optional, caller-initialised: maxima of the last layer computed */
    int tf32;            /* set after init: the layers' GEMMs in TF32 (layer_fwd_cuda.h), for
                          * a bf16/fp16 cache, which keeps fewer bits than TF32 rounds to */
    double upload_s, compute_s, download_s; /* where the layer time went */
} fp_pass_cuda;

int fp_pass_cuda_init(fp_pass_cuda *g, fp_pass *p, int device);
void fp_pass_cuda_free(fp_pass_cuda *g);
/* scheduler callback (ctx = fp_pass_cuda *): make boundary b (b = 0, 1, ... in order). */
int fp_pass_produce_cuda(void *ctx, int boundary);
/* the scheduler's flush_boundaries for it: fp_pass_flush of its pass */
int fp_pass_flush_cuda(void *ctx);

#endif
