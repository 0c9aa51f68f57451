/* fq_layer_cuda.h — the GPU twin of core/fq_layer.h: one FlatQuant layer's fake-quantized
 * training forward (ALGORITHM §4.4, the CPU's order of ops) and its backward, with the
 * activations kept on the device in a tape made once per batch shape.
 *
 * The parameter side is NOT here: factors M, M^{-T} are materialised from P->p by
 * core/fq_factors.c on the host, and the gradients with respect to them are folded back
 * into P->g there too, exactly as the CPU step does. Per step the tape uploads M | M^{-T}
 * and the scales / clip logits (a few hundred thousand floats for a 70B layer) and
 * downloads their gradients; the layer's FP weights, norms and RoPE tables are uploaded
 * once, at fq_tape_cuda_create. x, y, target and g_y are DEVICE pointers [b·s, d].
 *
 * Determinism: every reduction runs in a fixed order (shared clip-logit gradients go
 * through per-row values and fq_cuda_sum_into, no atomics), so on one GPU the same inputs
 * give the same bytes. GEMM math follows ctx->math (fq_cuda_set_math).
 */
#ifndef FQ_FQ_LAYER_CUDA_H
#define FQ_FQ_LAYER_CUDA_H

#include "fq_layer.h"
#include "kernels/flatq_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fq_tape_cuda fq_tape_cuda;

/* Device tape for batches of b sequences of s tokens, and the layer's weights uploaded.
 * The context must outlive the tape. rope must cover ≥ s positions. */
int fq_tape_cuda_create(fq_tape_cuda **tp, fq_cuda_ctx *ctx, const fq_params *P,
                        const llama_layer *l, const rope_table *rope, int b, int s);
void fq_tape_cuda_free(fq_tape_cuda *tp);
/* Device bytes the tape holds (weights, activations, scratch). */
size_t fq_tape_cuda_bytes(const fq_tape_cuda *tp);

/* y = the fake-quantized layer applied to x (device, [b·s, d] each). */
int fq_layer_fwd_cuda(fq_tape_cuda *tp, const fq_params *P, const float *x, float *y);
/* mse = mean((y − target)²) (summed in double, fixed order; synchronises). When g_y is not
 * NULL and mse is finite and > 0, g_y = 2(y − target)/(n·mse): the seed of the normalised
 * loss L/L̄ that calibrate_layer uses. */
int fq_layer_loss_cuda(fq_tape_cuda *tp, const float *y, const float *target, float *g_y,
                       double *mse);
/* P->g = ∂L/∂p for the last forward given g_y (device); overwritten, not accumulated. */
int fq_layer_bwd_cuda(fq_tape_cuda *tp, fq_params *P, const float *g_y);

/* The merged weights of ALGORITHM §5 (what core/fq_merge.c computes in float64, here in
 * fp32 through the training weight side): ⊘ c, the Kronecker product of inverse
 * transposes, the learned clip, M_vᵀ on Wv's rows (unless separate_vtrans), Wup's rows
 * ∘ c_d — into host buffers w[lin] of [out, in] floats. For a 70B layer this replaces
 * ~35 s of float64 on the worker's CPU (issue 6). Uses the tape's weight buffers. */
int fq_tape_cuda_merged_weights(fq_tape_cuda *tp, const fq_params *P,
                                float *const w[QL_NLINEAR]);

/* The seven linears as bf16 GEMMs on the quantization codes (kernels/linear_codes_cuda.h:
 * the forward exact, the backward's gradient operand rounded to bf16): mode -1 (the
 * default) when the context's math is FQ_MATH_BF16, 1 always, 0 never. Applies only where
 * both operands are quantized with one scale per row and the sums stay exact (4-bit
 * codes: any width; 8-bit: up to 1024); elsewhere the linears follow the context's math. */
int fq_tape_cuda_set_linear_codes(fq_tape_cuda *tp, int mode);
/* With codes on, the forward GEMMs on int8 copies of the codes (1, the default: integer
 * tensor cores, the same exact sums, so the same bits as the bf16 GEMM) or on the bf16
 * codes (0). Set before the tape's first step. */
int fq_tape_cuda_set_linear_codes_i8(fq_tape_cuda *tp, int on);

/* Time per op group (bench): when on, every group boundary synchronises the stream and
 * the wall time since the last boundary is charged to the group that ran. */
enum {
    FQ_PROF_PARAMS,     /* host factor math and the parameter copies */
    FQ_PROF_WEIGHTS,    /* weight side: Kronecker with M^{-T}, M_v rotation */
    FQ_PROF_GEMM,       /* the seven linears (fwd and bwd) */
    FQ_PROF_ATTENTION,  /* scores, softmax, P·V and their backward */
    FQ_PROF_TRANSFORMS, /* activation-side Kronecker, M_k, M_o */
    FQ_PROF_QUANT,      /* activation and KV quantizers */
    FQ_PROF_OTHER,      /* norms, RoPE, SwiGLU, residual copies, loss */
    FQ_PROF_WQUANT,     /* of the weight side: the LWC clamps and weight quantizers */
    FQ_PROF_CHSCALE,    /* channel scales of both sides, forward and backward */
    FQ_PROF_NGROUPS
};
extern const char *const fq_prof_names[FQ_PROF_NGROUPS];
void fq_tape_cuda_profile(fq_tape_cuda *tp, int on);
/* Seconds charged to each group since profiling was switched on. */
void fq_tape_cuda_profile_read(const fq_tape_cuda *tp, double secs[FQ_PROF_NGROUPS]);

#ifdef __cplusplus
}
#endif

#endif
