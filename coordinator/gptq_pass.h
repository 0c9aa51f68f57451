/* gptq_pass.h — `weight_quantizer: gptq` (ALGORITHM §5, issue 10): the sequential pass
 * that replaces each FlatQuant layer's RTN weights by GPTQ weights, after calibration.
 *
 * Why a separate pass, run by the coordinator after the scheduler's per-layer jobs (and
 * not inside them, nor in the eval): GPTQ's Hessians must come from the inputs the
 * QUANTIZED model feeds each layer — the output of the previous layer after its own GPTQ
 * — as the official pass does. That chain is sequential by nature, so it cannot live in
 * the independent per-layer jobs (which see FP inputs); and the eval only reads a
 * finished checkpoint, which must already hold the final codes so that every reader
 * (CPU eval, CUDA kernels, `flatq run`) sees the same model. The pass is cheap next to
 * calibration: a few forwards of each layer, no backward.
 *
 * How. Each worker, for a gptq job, also leaves the layer's merged, clipped, unquantized
 * weights W' (the ones RTN quantized) in the cache directory (merged_NNN.safetensors).
 * The pass then, from the calibration windows' embeddings, for layer 0, 1, …:
 *   1. loads the layer's result (RTN codes, transforms, clips) and W';
 *   2. for each group of linears in order — q/k/v, o, up/gate, down, as the official
 *      pass — runs the layer's fake-quant forward (core/qlayer_fwd.h) with the earlier
 *      groups already GPTQ-quantized and the rest still W', summing x̂x̂ᵀ of the group's
 *      actual inputs (stopping the forward there), and GPTQ-quantizes the group
 *      (core/gptq.h, recipe damping and block);
 *   3. rewrites the result file (same tensors, GPTQ codes, metadata weight_quantizer:
 *      gptq) atomically, records its new digest, deletes W';
 *   4. runs the finished layer over the windows: the next layer's input.
 * Resume: a result marked gptq is not redone (only run forward, step 4). A finished RTN
 * result whose W' has gone (cache removed) is forgotten BEFORE the scheduler runs
 * (gptq_pass_prepare), so that layer is calibrated again instead of failing here.
 * Determinism: the same job gives the same bytes, interrupted or not.
 */
#ifndef FQ_GPTQ_PASS_H
#define FQ_GPTQ_PASS_H

#include <stdint.h>

#include "job.h"
#include "kernels/flatq_cuda.h"
#include "llama_model.h"
#include "qlayer.h"

/* "CACHE/merged_%03d.safetensors". */
int gptq_merged_path(const char *cache_dir, int layer, char *out, size_t cap);
/* Write W' of one layer (fp32 [out, in] each, q..down order) atomically. */
int gptq_merged_write(const char *cache_dir, int layer, const llama_config *c,
                      float *const w[QL_NLINEAR]);

/* Before the scheduler: forget finished layers that still hold RTN weights and have no
 * readable W' (so they are calibrated again). *forgotten = how many. */
int gptq_pass_prepare(const char *outdir, const char *cache_dir, int nlayers, int *forgotten);

/* The official order of the linears' groups; each group's inputs depend only on the
 * groups before it. The last member is the one the forward reaches last (the observer
 * stops there). */
enum { GPTQ_NGROUPS = 4 };
extern const int gptq_group_lin[GPTQ_NGROUPS][3];
extern const int gptq_group_len[GPTQ_NGROUPS];

typedef struct {
    const job *j;
    /* device: cuda: the forwards, Hessians and sweeps on this GPU (coordinator/
     * gptq_pass_cuda.h); NULL: all on the CPU */
    fq_cuda_ctx *cuda;
    const llama_config *cfg;
    const st_checkpoint *ck; /* the FP model (embeddings) */
    const int32_t *ids;      /* nsamples · seqlen calibration tokens */
    int nsamples, seqlen;
    double seconds;          /* out: time spent */
    int layers_run, layers_reused; /* out */
} gptq_pass;

/* Run the pass over every layer of the job's output directory (all must be finished). */
int gptq_pass_run(gptq_pass *g);

#endif
