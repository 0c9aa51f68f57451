/* gptq_pass_cuda.h — the GPTQ pass's layer work on a GPU (issue 10), for `device: cuda`
 * jobs: the same steps as coordinator/gptq_pass.c's CPU path, with the forwards, the
 * Hessian sums, the column sweeps and the output errors on the device.
 *
 * The calibration windows' activations go up once and stay on the GPU for the whole pass
 * (nsamples · seqlen · d floats: 0.1 GB for flatq-llama-16m's 32 windows, 2.1 GB for a
 * 70B model's); each layer moves them forward in place, batch by batch. Per layer the GPU
 * holds the layer (its seven weights in fp32), one group's Hessians (in² floats each:
 * 3.3 GB for a 70B down_proj) and one batch's scratch (the batch is capped so the
 * attention's softmax rows stay under 2 GiB). The float64 factorisations (core/gptq.h
 * says why float64) run on the GPU through cuSOLVER when the CUDA toolkit's solver library
 * can be opened (kernels/gptq_cuda.h), else on the host's LAPACK; either way from the
 * damped Hessian gptq_plan_make_ex leaves, so the same scales, order and dead inputs.
 *
 * Built without nvcc, gptq_gpu_init fails with a one-line error.
 */
#ifndef FQ_GPTQ_PASS_CUDA_H
#define FQ_GPTQ_PASS_CUDA_H

#include "gptq.h"
#include "kernels/flatq_cuda.h"
#include "llama_ops.h"
#include "qlayer_fwd.h"

typedef struct gptq_gpu gptq_gpu;

/* x: the host activations [nsamples, seqlen, d] of the first layer's input (uploaded);
 * batch: windows per forward (capped by memory). */
int gptq_gpu_init(gptq_gpu **out, fq_cuda_ctx *ctx, const llama_config *c, const qconfig *qc,
                  const rope_table *rope, const real *x, int nsamples, int seqlen, int batch);
void gptq_gpu_free(gptq_gpu *g);

/* The activations ← the finished layer rt applied to them (a layer done earlier). */
int gptq_gpu_forward(gptq_gpu *g, const qlayer_rt *rt);

/* Where a layer's GPU GPTQ time goes (gptq_gpu_layer's secs[]). */
enum { GPTQ_SEC_FORWARD,  /* the forwards, with the Hessian sums inside them */
       GPTQ_SEC_FACTOR,   /* Hessians to the host, the plan's scales, the factorisations */
       GPTQ_SEC_SWEEP,    /* the column sweeps on the GPU */
       GPTQ_SEC_ERRORS,   /* dequantized weights and the log's output errors */
       GPTQ_SEC_UPDATE,   /* the new weights into the device layer */
       GPTQ_NSECS };

/* GPTQ the seven weights of q (RTN codes replaced) from the merged weights wp, group by
 * group in gptq_pass.h's order, then move the activations through the finished layer.
 * err[lin][0/1]: output error of RTN / GPTQ through the Hessian (for the log); secs: the
 * seconds of each GPTQ_SEC_* share. */
int gptq_gpu_layer(gptq_gpu *g, qlayer *q, real *const wp[QL_NLINEAR], const gptq_opts *o,
                   double err[QL_NLINEAR][2], double secs[GPTQ_NSECS]);

#endif
