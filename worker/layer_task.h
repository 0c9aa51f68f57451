/* layer_task.h — what a worker does with one layer, for every method: read the layer's
 * FP weights and its cached input/target boundaries, produce the quantized layer
 * (rtn: directly; flatquant: learned transforms), measure its loss against the target
 * before and after, and commit the result file (layer_NNN.safetensors, with the losses
 * and timings in its metadata) atomically. The run_layer_fn of worker_loop/scheduler. */
#ifndef FQ_LAYER_TASK_H
#define FQ_LAYER_TASK_H

#include "job.h"
#include "kernels/flatq_cuda.h"
#include "llama_model.h"
#include "qlayer.h"
#include "worker/worker_loop.h"

typedef struct {
    const job *j;
    const llama_config *cfg;
    const st_checkpoint *ck;
    const char *cache_dir;
    const char *fingerprint; /* of the calibration data, as the cache was written */
    qconfig qc;
    int rank;
    char host[64];
    fq_cuda_ctx *cuda;      /* device: cuda: this rank's GPU; NULL on CPU */
    char device_desc[64];   /* "cpu" or "cuda:N (NAME)", for reports */
} layer_task_ctx;

int layer_task_run(void *ctx, layer_task *t);

/* Mean squared error between a quantized layer's output on x and the target y (both
 * [n, s, d]), evaluated in batches of b samples. */
int qlayer_mse(const qlayer *q, const llama_config *c, const qconfig *qc, const float *x,
               const float *y, int n, int s, int b, double *mse);

#endif
