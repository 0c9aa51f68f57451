/* calib_loop.h — the per-layer training loop of ALGORITHM §4.3, independent of where the
 * layer's forward and backward run (calibrate_layer.c: CPU; calibrate_layer_cuda.c: GPU).
 *
 * The loop owns everything that must be identical across backends: argument checks, the
 * order of batches, the loss before/after passes, the non-finite checks and their
 * messages, the four AdamW groups with the cosine schedule (on the host, over P->p and
 * P->g), and the epoch log. A backend supplies two calls: the forward of one batch (MSE per
 * element, and, when asked, the seed of the normalised loss L/L̄ kept for its backward)
 * and the backward that fills P->g.
 */
#ifndef FQ_CALIB_LOOP_H
#define FQ_CALIB_LOOP_H

#include "calibrate_layer.h"

typedef struct {
    void *self;
    /* Samples [first, first + count): *mse = mean((Ŷ − Y)²); with_seed: also keep the
     * gradient seed of L/L̄ for the next backward (when mse is finite and > 0). */
    int (*forward)(void *self, const fq_params *P, int first, int count, int with_seed,
                   double *mse);
    /* P->g = ∂(L/L̄)/∂p for the last forward that kept its seed. */
    int (*backward)(void *self, fq_params *P);
} calib_backend;

/* The checks calibrate_layer and calibrate_layer_cuda share (fn names the caller). */
int calib_check_args(const fq_params *P, const llama_layer *l, const llama_config *c,
                     const fq_recipe *r, const calib_data *data, int layer_index,
                     calib_result *res, const char *fn);

/* Pointers to samples [first, first + count) of X and Y: into data's arrays, or fetched
 * into xb, yb ([count, seqlen, d] each) through data->fetch. */
int calib_batch_get(const calib_data *data, int d, float *xb, float *yb, int first, int count,
                    const float **x, const float **y);

/* Train the initialised P (loss before, epochs × steps, loss after) into res. */
int calib_loop_run(fq_params *P, const fq_recipe *r, const calib_data *data,
                   const calib_backend *be, int layer_index, calib_result *res);

#endif
