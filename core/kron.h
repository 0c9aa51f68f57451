/* kron.h — FlatQuant's affine transforms on rows: the Kronecker transform, its weight-side
 * twin, per-channel scales, and single k×k transforms (ALGORITHM §3.1, §3.2, §3.5, §4.5).
 *
 * A row x of length n = n1·n2 is viewed row-major as X̃ [n1, n2] and mapped to
 * Ỹ = Lᵀ X̃ R, i.e. y = x (L ⊗ R). All rows are processed with a handful of large GEMMs:
 * the R side is one GEMM over [rows·n1, n2]; the L side contracts the middle index, so the
 * data are first permuted to [n1, rows·n2], multiplied by one GEMM, and permuted back.
 * Two permutations cost O(rows·n) memory traffic next to O(rows·n·(n1+n2)) flops, and
 * one big GEMM runs far faster than `rows` tiny ones. Callers pass a work buffer.
 *
 * Backward functions write the input gradient (when its pointer is not NULL) and
 * ACCUMULATE (+=) parameter gradients (when their pointers are not NULL), so a factor used
 * by several ops collects all its contributions.
 */
#ifndef FQ_KRON_H
#define FQ_KRON_H

#include "real.h"

/* The factor split rule of §3.2: the official difference-of-squares search, and for
 * n ≡ 2 (mod 4), where that search never ends, the divisor pair with n1 the largest
 * divisor ≤ √n. *fallback (may be NULL) is set to 1 when the fallback was used, so the
 * caller can log it; a prime n gives (1, n), which is legal but costly. */
int kron_split(int n, int *n1, int *n2, int *fallback);

/* Work elements kron_fwd / kron_bwd need for `rows` rows of length n. */
long kron_fwd_work(int rows, int n);
long kron_bwd_work(int rows, int n);

/* y = x (L ⊗ R) for each of the rows. x, y: [rows, n1·n2] (must not alias);
 * L: [n1, n1], R: [n2, n2] row-major. */
int kron_fwd(real *y, const real *x, int rows, int n1, int n2, const real *L, const real *R,
             real *work);
/* g_x = per row L·G_Ỹ·Rᵀ (written; may be NULL); g_L += Σ (X̃R)·G_Ỹᵀ; g_R += Σ X̃ᵀ·L·G_Ỹ
 * (accumulated; either may be NULL). */
int kron_bwd(real *g_x, real *g_L, real *g_R, const real *g_y, const real *x, int rows,
             int n1, int n2, const real *L, const real *R, real *work);

/* Weight side ("Kron_rows"): each weight row w (input side) becomes w (L^{-T} ⊗ R^{-T}),
 * i.e. W̃' = L^{-1} W̃ R^{-T}, so x' w'ᵀ = x wᵀ. The same op with the inverse-transposed
 * factors; the backward accumulates into G_{L^{-T}}, G_{R^{-T}}. */
int kron_weight_fwd(real *w_out, const real *w, int out_rows, int n1, int n2,
                    const real *L_invT, const real *R_invT, real *work);
int kron_weight_bwd(real *g_w, real *g_L_invT, real *g_R_invT, const real *g_w_out,
                    const real *w, int out_rows, int n1, int n2, const real *L_invT,
                    const real *R_invT, real *work);

/* Activation per-channel scale: y = x ∘ c (c broadcast over rows). bwd: g_x = g_y ∘ c
 * (written, may be NULL), g_c += Σ_rows g_y ∘ x. */
int chscale_act_fwd(real *y, const real *x, const real *c, int rows, int n);
int chscale_act_bwd(real *g_x, real *g_c, const real *g_y, const real *x, const real *c,
                    int rows, int n);
/* Weight per-channel scale on columns: w1 = w ⊘ c. bwd: g_w = g_w1 ⊘ c (may be NULL),
 * g_c += −Σ_rows g_w1 ∘ w ⊘ c². */
int chscale_weight_fwd(real *w1, const real *w, const real *c, int rows, int n);
int chscale_weight_bwd(real *g_w, real *g_c, const real *g_w1, const real *w, const real *c,
                       int rows, int n);

/* Single transform on vectors: y = x M for nvec vectors of length k (M: [k, k]).
 * bwd: g_x = g_y Mᵀ (may be NULL), g_M += Σ xᵀ g_y. One GEMM each. */
int vec_transform_fwd(real *y, const real *x, int nvec, int k, const real *M);
int vec_transform_bwd(real *g_x, real *g_M, const real *g_y, const real *x, int nvec, int k,
                      const real *M);

/* Head mixing O1 = M_oᵀ·O for each token's [h, dh] view (M_o: [h, h]); work: tokens·h·dh.
 * bwd: g_O = M_o·g_O1 (may be NULL), g_Mo += Σ O·g_O1ᵀ; work: 2·tokens·h·dh. */
int head_transform_fwd(real *o1, const real *o, int tokens, int h, int dh, const real *Mo,
                       real *work);
int head_transform_bwd(real *g_o, real *g_Mo, const real *g_o1, const real *o, int tokens,
                       int h, int dh, const real *Mo, real *work);

#endif
