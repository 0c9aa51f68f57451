/* quantizer.h — FlatQuant fake quantizers with learnable clipping and straight-through
 * gradients (ALGORITHM §2).
 *
 * CPU math map (core/, each op a _fwd/_bwd pair, caller-owned buffers, `real` scalars):
 *   quantizer.[ch]  fake quantizers: per-token symmetric activations (LAC, optional
 *                   per-block scales for TP), asymmetric KV per head vector, weights with
 *                   learnable weight clipping (LWC)
 *   kron.[ch]       factor split rule, Kronecker transform on rows (activation side and
 *                   the weight side with inverse-transposed factors), per-channel scales,
 *                   single k×k transforms (x·M per vector, M_oᵀ·O on [h, dh] views)
 *   cayley.[ch]     SVD-form factors M = U diag(λ) Vᵀ with Cayley-orthogonal U, V and
 *                   the exact M^{-T}; the direct (explicit inverse) form; Haar init
 *   hadamard.[ch]   normalised Hadamard matrices (Sylvester, Paley I/II, K·2^m) and their
 *                   fast application to rows, for the QuaRot baselines
 *   rng.[ch]        seeded xoshiro256** with normal sampling
 *   llama_ops.[ch]  RMSNorm, RoPE, attention, SwiGLU (the lead's file)
 *   worker/adamw.[ch]  AdamW over parameter groups and the cosine learning-rate schedule
 *
 * The idea. A "row" is the unit that shares one scale: a token's input vector (or one
 * block of it), one token × one KV head, or one output channel of a weight. The forward
 * saves only the per-row scale (and zero point); the backward rescans the row for its
 * extrema, which costs one pass over data it must read anyway and keeps the saved state
 * to one number per row. Rounding is rint() under the default mode (half to even),
 * exactly like torch.round and the inference kernels; never round().
 *
 * Gradients follow ALGORITHM §2.4: STE for rounding, clamp passes gradient only inside
 * its closed interval, the scale path reaches the clip logits and the extreme elements
 * (split evenly on ties), and the t = 0 (sym) / all-zero (asym) branches give no gradient
 * to the range. Input gradients are written (overwritten); clip-logit gradients are
 * accumulated (+=), because they are shared by all rows and often by several calls.
 *
 * Bits: 2..8. Bits 16 (no quantization) is the caller's business: it skips the call.
 */
#ifndef FQ_QUANTIZER_H
#define FQ_QUANTIZER_H

#include "real.h"

/* The logistic sigmoid, the map from clip logit to clip ratio κ. */
real quant_sigmoid(real x);

/* Per-token symmetric activation quantizer with one shared clip-logit pair (cmax, cmin).
 * in, out: [rows, k]; each row is split into `blocks` contiguous blocks of k/blocks values
 * with a scale each (blocks = 1: one scale per token). scale: [rows·blocks], saved for bwd.
 * out may not alias in. */
int quant_act_sym_fwd(real *out, real *scale, const real *in, int rows, int k, int blocks,
                      int bits, real cmax, real cmin);
/* The same with the clip ratios κmax = σ(cmax), κmin = σ(cmin) given directly: the
 * inference form, where a checkpoint stores the ratios. in-place (out == in) allowed. */
int quant_act_sym_ratio(real *out, real *scale, const real *in, int rows, int k, int blocks,
                        int bits, real kmax, real kmin);
/* g_in: [rows, k] written; *g_cmax, *g_cmin accumulated. scale: what fwd saved. */
int quant_act_sym_bwd(real *g_in, real *g_cmax, real *g_cmin, const real *g_out,
                      const real *in, const real *scale, int rows, int k, int blocks,
                      int bits, real cmax, real cmin);

/* Asymmetric quantizer for the K/V caches: rows of length len (one token × one KV head),
 * one shared clip-logit pair, integer zero point rne(−l/s) (no gradient).
 * scale, zero: [rows], saved for bwd. */
int quant_kv_asym_fwd(real *out, real *scale, real *zero, const real *in, int rows, int len,
                      int bits, real cmax, real cmin);
/* Ratio form of quant_kv_asym_fwd (see quant_act_sym_ratio). */
int quant_kv_asym_ratio(real *out, real *scale, real *zero, const real *in, int rows, int len,
                        int bits, real kmax, real kmin);
int quant_kv_asym_bwd(real *g_in, real *g_cmax, real *g_cmin, const real *g_out,
                      const real *in, const real *scale, const real *zero, int rows, int len,
                      int bits, real cmax, real cmin);

/* Weight quantizer with learnable weight clipping: per output row r the logits a[r]
 * (max side) and b[r] (min side) clamp the row to [min·σ(b), max·σ(a)], then a symmetric
 * quantizer with κ = 1 and the range floored at 1e-5. w, out: [rows, cols];
 * scale: [rows] saved. */
int quant_weight_lwc_fwd(real *out, real *scale, const real *w, int rows, int cols, int bits,
                         const real *a, const real *b);
/* g_w: [rows, cols] written (may be NULL when the weight needs no gradient);
 * g_a, g_b: [rows] accumulated (either may be NULL). */
int quant_weight_lwc_bwd(real *g_w, real *g_a, real *g_b, const real *g_out, const real *w,
                         const real *scale, int rows, int cols, int bits, const real *a,
                         const real *b);

#endif
