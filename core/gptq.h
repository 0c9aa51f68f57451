/* gptq.h — GPTQ weight quantization of one linear layer (ALGORITHM §5, GPTQ option;
 * issue 10), CPU, for the sequential pass that runs after FlatQuant calibration.
 *
 * The idea. RTN rounds every weight to its nearest code on its own. GPTQ quantizes the
 * input columns of W [out, in] one at a time and pushes each column's rounding error onto
 * the columns not yet quantized, weighted by the inverse Hessian of the layer's inputs,
 * H = (2/N) Σ x̂ x̂ᵀ, so that ‖(W − Ŵ) X‖² (not ‖W − Ŵ‖²) is what the codes minimise.
 * The recipe is the official one: damping λ = damp · mean(diag H) added to the diagonal,
 * dead inputs (H_ii = 0) get H_ii = 1 and a zero weight column, the upper Cholesky factor
 * of H⁻¹ supplies the error weights, columns in natural order (act-order optional), error
 * propagation inside blocks of `block` columns with one GEMM for the rest of the row per
 * block (the "lazy batch" update).
 *
 * The per-row scale is fixed BEFORE the pass from the (already clipped) row exactly as RTN
 * sets it: s_r = max(max_j |W_rj|, 1e−5) / qmax in float (qlayer.h). So the learned clip is
 * kept, and with H = I (no correlation between inputs) the codes are RTN's, bit for bit.
 *
 * Trade-offs: the factorisations (Cholesky, inverse, Cholesky of the inverse) run in
 * float64 through OpenBLAS's LAPACK, since a 4-bit pass on an ill-conditioned fp32
 * Hessian goes wrong silently; the column loop and the block GEMM run in `real` (fp32 in
 * production, as the reference). Memory: the Hessian and its factor, in² doubles each.
 */
#ifndef FQ_GPTQ_H
#define FQ_GPTQ_H

#include "qlayer.h"
#include "real.h"

/* Σ x̂ x̂ᵀ over the tokens seen so far, for one linear input of size n. */
typedef struct {
    int n;
    long tokens;
    real *sum; /* [n, n], symmetric */
} gptq_hessian;

int gptq_hessian_init(gptq_hessian *h, int n);
void gptq_hessian_free(gptq_hessian *h);
/* Add rows × n inputs (row-major) to the sum (one GEMM). */
int gptq_hessian_add(gptq_hessian *h, const real *x, long rows);
/* H = (2 / tokens) · sum into out [n, n]; fails when no token was added. */
int gptq_hessian_get(const gptq_hessian *h, real *out);

/* Quantize w [out, in] with the Hessian H [in, in] into l (allocated; codes and scales
 * exactly as qlinear_quantize_rtn lays them out, so every reader of qlayers works
 * unchanged). bits 2..8 (16: the weight is copied, as RTN does); damp ≥ 0 (fraction of
 * mean diag H, recipe 0.01); block ≥ 1 (recipe 128). */
int gptq_quantize(qlinear *l, const real *w, int out, int in, const real *H, int bits,
                  double damp, int block);
/* The recipe's GPTQ options. With both flags 0, gptq_quantize_opts is gptq_quantize. */
typedef struct {
    double damp;     /* fraction of mean diag H (recipe 0.01) */
    int block;       /* recipe 128 */
    /* act_order: the columns are quantized by descending diag H (the inputs with the most
     * energy first, while the most inputs are left to absorb their error; GPTQ's
     * "act-order"), the codes stored in the original column order. The per-row scales do
     * not depend on the order, so the file format is unchanged. */
    int act_order;
    /* clip_search: each row's scale is first shrunk to the ratio α ∈ {1, 0.98, …, 0.80} of
     * its RTN scale that minimises Σ_j H_jj (w_j − ŵ_j)², the row's RTN error weighted by
     * the diagonal of H (the part of GPTQ's objective a scale alone controls; the learned
     * clip was fitted for RTN, not for GPTQ's error feedback). */
    int clip_search;
} gptq_opts;
int gptq_quantize_opts(qlinear *l, const real *w, int out, int in, const real *H, int bits,
                       const gptq_opts *o);

/* The pieces of gptq_quantize_opts, for a sweep that runs elsewhere (the GPU pass,
 * kernels/gptq_cuda.h). gptq_plan_make does everything that needs float64 or a decision
 * on the host — the damped inverse's factor U, the per-row scales (with the clip search),
 * act-order, dead inputs — so the CPU sweep and the GPU sweep start from the same bytes
 * and differ only in where the sweep's arithmetic runs. */
typedef struct {
    int out, in, bits, block;
    float qmax;
    real *U;       /* [in, in]: upper factor of the damped H⁻¹ (H⁻¹ = UᵀU), pass order */
    real *W;       /* [out, in]: the weight in pass order, dead inputs zeroed (the sweep's
                    * working copy: it is overwritten) */
    float *scales; /* [out] */
    int *perm;     /* NULL, or pass column i is input perm[i] (act-order) */
    double *Hd;    /* gptq_plan_make_ex with factor = 0: the damped Hessian in pass order
                    * [in, in] that the caller factorises (U is then NULL) */
    double damp;   /* the damping used (for the caller's error message) */
} gptq_plan;

/* bits 2..8 (16 has no sweep: gptq_quantize_opts copies the weight). */
int gptq_plan_make(gptq_plan *p, const real *w, int out, int in, const real *H, int bits,
                   const gptq_opts *o);
/* factor = 0: stop before the factorisations, leaving the damped Hessian in p->Hd for a
 * factorisation elsewhere (kernels/gptq_cuda.h gptq_inverse_factor_cuda: the GPU's FP64
 * units take seconds where the host's LAPACK takes minutes for a 70B down_proj). */
int gptq_plan_make_ex(gptq_plan *p, const real *w, int out, int in, const real *H, int bits,
                      const gptq_opts *o, int factor);
/* The host's factorisation of p->Hd into p->U (LAPACK, float64; Hd is consumed): what
 * gptq_plan_make does, and the GPU pass's fallback when its own factorisation fails. */
int gptq_plan_factor(gptq_plan *p);
void gptq_plan_free(gptq_plan *p);
/* The column sweep on the CPU: codes [out, in] (int8, pass order). Consumes p->W. */
int gptq_sweep(gptq_plan *p, int8_t *codes);
/* l ← the codes (pass order, taken over and freed) in input order, packed as
 * qlinear_quantize_rtn lays them out, with the plan's scales (taken over). */
int gptq_plan_finish(gptq_plan *p, int8_t *codes, qlinear *l);

/* tr((W − Ŵ) H (W − Ŵ)ᵀ) for the dequantized Ŵ of l: the layer-output error the codes
 * cause, (2/N)·‖(W − Ŵ) Xᵀ‖² when H = (2/N) XᵀX (for logs: GPTQ against RTN). */
int gptq_output_error(const qlinear *l, const real *w, const real *H, double *err);

#endif
