/* calibrate_layer.h — the per-layer FlatQuant training loop (ALGORITHM §4.3).
 *
 * Given one layer's FP weights, its cached FP inputs X and targets Y (float arrays the
 * caller owns, or a callback that fetches a batch, for streaming from the activation
 * cache) and a recipe, learn the layer's fq_params: epochs × (nsamples / batch) steps, each
 * a fake-quantized forward on samples [batch·j, batch·j + batch) in fixed order, the loss
 * L = mean((Ŷ − Y)²) divided by its own detached value, the backward, one AdamW step over
 * the four parameter groups and one cosine-scheduler step. Samples beyond the last full
 * batch are not used (as in the reference). Deterministic: same inputs and seed, same bytes.
 *
 * Loss before/after: a full forward pass over the same batches with the initial and with
 * the trained parameters (mean MSE per element), the per-layer report.
 * Non-finite loss, gradient or parameter stops the layer with
 * "layer L, step S: …" and FQ_ERR; nothing is written to the caller's params then.
 */
#ifndef FQ_CALIBRATE_LAYER_H
#define FQ_CALIBRATE_LAYER_H

#include "fq_layer.h"

/* Copy samples [first, first + count) of the inputs and targets into x, y
 * ([count, seqlen, d] each, fp32). Return FQ_OK or FQ_ERR (with fq_error set). */
typedef int (*calib_fetch_fn)(void *ctx, int first, int count, float *x, float *y);

typedef struct {
    int epoch;              /* 0-based */
    int epochs;
    double mse_sum;         /* Σ over the epoch's steps of the un-normalised MSE */
    int nfactors;
    const char *const *factor_names;
    const double *lambda_min; /* [nfactors] min |λ| after the epoch (0 in direct form) */
    double lr_transform, lr_clip; /* learning rates of the epoch's last step */
} calib_epoch_log;

typedef void (*calib_log_fn)(void *ctx, const calib_epoch_log *log);

typedef struct {
    int nsamples, seqlen;
    const float *x, *y;     /* [nsamples, seqlen, d]; or NULL when fetch is set */
    calib_fetch_fn fetch;
    void *fetch_ctx;
    calib_log_fn on_epoch;  /* may be NULL */
    void *log_ctx;
    int device_stream;      /* GPU path: 1 = copy every batch from the host even when all
                             * samples would fit in GPU memory (tests the streaming plan) */
} calib_data;

typedef struct {
    double loss_before, loss_after; /* mean squared error per element over all batches */
    long steps;
    size_t peak_device_bytes;       /* GPU path: device memory this layer used at its peak
                                     * (0 on the CPU) */
    double passes_s, loop_s;        /* wall seconds of the two full loss passes, and of the
                                     * training steps (the rest of a layer's time is setup) */
} calib_result;

/* Initialise P (fq_params_init with st for sq_style) and train it. layer_index only names
 * the layer in messages and logs. On error P is freed. */
int calibrate_layer(fq_params *P, const llama_layer *l, const llama_config *c,
                    const fq_recipe *r, const fq_stats *st, const calib_data *data,
                    int layer_index, calib_result *res);

#endif
