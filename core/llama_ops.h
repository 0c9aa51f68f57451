/* llama_ops.h — the plain-C reference of a LLaMA decoder's operations (forward).
 *
 * llm.c style: each op is a function over raw pointers and sizes, no hidden state; the
 * caller owns every buffer. Activations are token-major: a [N, C] matrix holds N = B·S
 * token rows. Heads are contiguous inside a row (element j·dh + e of a q row is head j).
 * These functions are the truth that the calibration's backward (beside them, later) and
 * the CUDA kernels are checked against. Math in `real` (fp32; fp64 in FD tests).
 */
#ifndef FQ_LLAMA_OPS_H
#define FQ_LLAMA_OPS_H

#include "llama_config.h"
#include "real.h"

/* out[n,d] = gamma ∘ x · rsqrt(mean(x²) + eps); rstd[n] (may be NULL) saves the factor. */
void rmsnorm_fwd(real *out, real *rstd, const real *x, const real *gamma, int n, int d,
                 real eps);

/* RoPE tables for positions 0..seqlen-1: cos/sin [seqlen, dh/2] (the half angles; the
 * rotate_half layout repeats them for both halves). Computed in fp32 like transformers
 * (inv_freq and angle in float), honouring llama3 scaling. */
typedef struct {
    int seqlen, head_dim;
    real *cos, *sin;
} rope_table;
int rope_table_init(rope_table *t, const llama_config *c, int seqlen);
void rope_table_free(rope_table *t);

/* In place on x [b, s, heads·dh]: token (i, p) rotated by position p. */
void rope_fwd(real *x, int b, int s, int heads, int dh, const rope_table *t);

/* Causal grouped-query attention. q [b,s,h·dh], k,v [b,s,g·dh] → out [b,s,h·dh].
 * Query head j reads KV head j / (h/g). scratch holds s·s reals. If probs is not NULL it
 * receives the softmax rows [b, h, s, s] (zeros above the diagonal) for the backward.
 * The (sequence, head) pairs run on OpenBLAS's configured thread count (at most s/128),
 * each with one-thread GEMMs; the count is restored before returning. Not for concurrent
 * use with other BLAS callers of the same process. */
void attention_fwd(real *out, real *probs, const real *q, const real *k, const real *v,
                   int b, int s, int h, int g, int dh, real *scratch);

/* out[i] = silu(gate[i]) · up[i]. */
void swiglu_fwd(real *out, const real *gate, const real *up, size_t n);

/* out[n, o] = x[n, i] · Wᵀ with W [o, i] (row-vector convention). */
void linear_fwd(real *out, const real *x, const real *w, int n, int in, int o);

/* ---- backward: every *_bwd ACCUMULATES (+=) into its input gradients (llm.c style);
 * callers zero them first. Shapes as in the forward. ---- */

/* γ frozen: dx += ρ·(g − x̂·mean(g∘x̂)), g = dy∘γ, x̂ = x·ρ (rstd from the forward). */
void rmsnorm_bwd(real *dx, const real *dy, const real *x, const real *gamma, const real *rstd,
                 int n, int d);
/* In place: the gradient of the rotated vectors becomes that of the unrotated ones. */
void rope_bwd(real *dx, int b, int s, int heads, int dh, const rope_table *t);
/* Recomputes the softmax head by head from q and k (no [b,h,s,s] buffer kept);
 * scratch holds 2·s·s reals. Accumulates dq, dk, dv (GQA: the r query heads of a KV
 * head add into it). */
void attention_bwd(real *dq, real *dk, real *dv, const real *dout, const real *q,
                   const real *k, const real *v, int b, int s, int h, int g, int dh,
                   real *scratch);
void swiglu_bwd(real *dgate, real *dup, const real *dout, const real *gate, const real *up,
                size_t n);
/* dx += dout·W, dw += doutᵀ·x; either may be NULL. */
void linear_bwd(real *dx, real *dw, const real *dout, const real *x, const real *w, int n,
                int in, int o);

#endif
