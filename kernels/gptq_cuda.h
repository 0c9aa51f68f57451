/* gptq_cuda.h — GPTQ on the GPU (issue 10): the device twin of core/gptq.h's Hessian sum,
 * column sweep and output error, for the GPTQ pass of a `device: cuda` job
 * (coordinator/gptq_pass.h).
 *
 * The split with the host. gptq_plan_make_ex (core/gptq.h) stays on the host: the scales
 * and the clip search, act-order, dead inputs, the damping. The GPU takes the parts that
 * grow with tokens or with out·in²: x̂ᵀx̂ over the calibration tokens, the sweep with its
 * lazy-batch GEMMs, tr(ΔHΔᵀ) for the log, and — through cuSOLVER, when it can be opened —
 * the float64 factorisations (float64 because a 4-bit pass on an fp32 factorisation goes
 * wrong silently): 163 s on 16 host cores for one LLaMA-3-70B layer's seven (session 10).
 * With the host's factor (LAPACK) the CPU and the GPU pass start every sweep from the same
 * bytes; cuSOLVER's factor may differ from LAPACK's in the last bit of a float.
 *
 * Exactness. Inside a block the sweep does the CPU's arithmetic in the CPU's order with
 * IEEE fp32 operations (no contraction), so a weight whose input fits one block
 * (in ≤ block) gets the CPU's codes bit for bit; across blocks the lazy update is a
 * cuBLAS SGEMM whose summation order differs from OpenBLAS's, so later blocks can differ
 * from the CPU by a code where a weight lands on a rounding boundary (tests/gpu:
 * test_gpu_gptq states the measured share).
 *
 * Every pointer is DEVICE memory unless named host; the GEMMs run at fp32 accuracy
 * whatever the context's math (fq_gemm_strided_exact_cuda).
 */
#ifndef FQ_GPTQ_CUDA_H
#define FQ_GPTQ_CUDA_H

#include <stdint.h>

#include "gptq.h"
#include "kernels/flatq_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest sweep block on the GPU: a block of U (block² floats) sits in shared memory
 * and each lane keeps block/32 of a row's columns in registers. */
#define GPTQ_CUDA_MAX_BLOCK 128

/* sum [n, n] += xᵀx for x [rows, n] (one fp32 GEMM). */
int gptq_hessian_add_cuda(fq_cuda_ctx *ctx, float *sum, const float *x, int rows, int n);

/* The column sweep of core/gptq.c (gptq_sweep) on W [out, in] (pass order, consumed) with
 * U [in, in] and scales [out]: codes [out, in] int8 in pass order. E: [out, block] work.
 * block 1..GPTQ_CUDA_MAX_BLOCK; qmax = 2^(bits−1) − 1. */
int gptq_sweep_cuda(fq_cuda_ctx *ctx, float *W, const float *U, const float *scales,
                    int8_t *codes, float *E, int out, int in, int block, float qmax);

/* The sweep of a plan (core/gptq.h) on the device, U [in, in] its factor already there
 * (uploaded, or from gptq_inverse_factor_cuda): p's working weight and scales go up, the
 * codes come back, and gptq_plan_finish makes l of them (p's scales move into l). */
int gptq_plan_sweep_cuda(fq_cuda_ctx *ctx, gptq_plan *p, const float *U, qlinear *l);

/* err (host) = tr(Δ H Δᵀ) = Σ_r Σ_j (ΔH)_rj Δ_rj for Δ [out, in], H [in, in]; work:
 * out·in floats. Summed per row in double, rows added on the host in order. */
int gptq_output_error_cuda(fq_cuda_ctx *ctx, const float *delta, const float *H, int out,
                           int in, float *work, double *err);

/* The float64 factorisations of core/gptq.c on the GPU through cuSOLVER (potrf, potri,
 * potrf; the CUDA toolkit's solver library, opened at run time so that a machine without
 * it still runs, on the host's LAPACK). 1 when it is there, else 0; `why` (may be NULL,
 * ≥ 256 bytes) names the library or the reason. */
int gptq_cuda_have_solver(char *why);
/* U [n, n] (device, float) ← the upper factor (H⁻¹ = UᵀU, row-major) of the damped
 * Hessian hd [n, n] (host, double: gptq_plan's Hd), as core/gptq.c computes it; damp only
 * names the fix in the error of a Hessian that is not positive definite. */
int gptq_inverse_factor_cuda(fq_cuda_ctx *ctx, const double *hd, int n, double damp, float *U);

#ifdef __cplusplus
}
#endif

#endif
