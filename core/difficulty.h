/* difficulty.h — how hard a linear layer's input is to quantize, before and after the
 * transforms the baselines apply (ALGORITHM §8, "Channel-magnitude difficulty metric").
 *
 * Everything here is a pure function of an activation matrix X [N, n] (N token rows, n
 * channels) and the weight W [out, n] that consumes it (row-vector convention, y = X·Wᵀ).
 * Statistics are accumulated in double whatever `real` is, because they are sums over
 * millions of values and are compared between methods, not fed back into the model.
 *
 *   difficulty D      std_j(m_j) with m_j = ‖X_:,j‖₂ (or ‖W_:,j‖₂), divisor n − 1: one
 *                     channel far louder than the rest gives a large D; a flat spectrum
 *                     gives D = 0. D scales with the matrix, so compare it only between
 *                     transforms of the same data (all transforms here keep X·Wᵀ).
 *   max/median        max_j c_j / median_j c_j with c_j = max_i |x_ij|: the outlier ratio
 *                     that decides how much per-token 4-bit resolution is wasted.
 *   kurtosis          Pearson's β₂ = m₄/m₂² over all values (3 for a Gaussian; large for
 *                     heavy tails).
 *   layer error       ‖XWᵀ − Q(X)Q(W)ᵀ‖_F² with symmetric per-row RTN (tokens of X, output
 *                     channels of W) and its uniform-noise estimate
 *                     (‖W‖_F²·Σ_t Δ_t² + ‖X‖_F²·Σ_o Δ_o²)/12, Δ = (max − min)/(2^bits − 1).
 *
 * Transforms (each keeps X·Wᵀ unchanged up to rounding):
 *   smooth     SmoothQuant: s_j = max|X_j|^α / max|W_j|^{1−α}, X ← X/s, W ← W·diag(s)
 *   rotate     QuaRot: Q = D·H/√n (D a seeded random ±1 diagonal, H the Hadamard matrix
 *              of core/hadamard.h, random orthogonal where n has no Hadamard), X ← X·Q,
 *              W ← W·Q
 *   smoothrot  smooth, then rotate (the channel-scaling paper's hybrid)
 * An undefined statistic (median 0, all values equal) is NaN; callers print it as "-".
 */
#ifndef FQ_DIFFICULTY_H
#define FQ_DIFFICULTY_H

#include <stdint.h>

#include "real.h"

typedef struct {
    double d;          /* channel-magnitude difficulty */
    double max_median; /* max/median of per-channel max|x| */
    double kurtosis;   /* Pearson β₂ of all values */
} difficulty_stats;

/* m[j] = ‖x_:,j‖₂ for the cols columns of x [rows, cols]. */
int difficulty_channel_norms(const real *x, int rows, int cols, double *m);
/* The three statistics of x [rows, cols]; rows ≥ 1, cols ≥ 2. */
int difficulty_stats_compute(const real *x, int rows, int cols, difficulty_stats *out);

/* Symmetric per-row round-to-nearest of x [rows, cols] into out (may alias x):
 * scale = max|row| / (2^(bits−1) − 1), values clamped to the integer grid. */
int difficulty_rtn_rows(real *out, const real *x, int rows, int cols, int bits);
/* *err = ‖XWᵀ − Q(X)Q(W)ᵀ‖_F², *est = the uniform-noise estimate above.
 * x [rows, n], w [out, n]. */
int difficulty_layer_error(const real *x, int rows, int n, const real *w, int out, int bits,
                           double *err, double *est);

/* SmoothQuant scales s [n] from x [rows, n] and w [out, n] (both maxima and s are
 * clamped at ≥ 1e-5 so a silent channel cannot divide by zero). */
int smooth_scales(real *s, const real *x, int rows, int n, const real *w, int out,
                  double alpha);
/* x ← x/s, w ← w·diag(s) in place. */
int smooth_apply(real *x, int rows, int n, real *w, int out, const real *s);

/* The rotation Q = D·H/√n of one size, ready to apply to many matrices. */
typedef struct {
    int n, k, pow2, is_random;
    real *hk;    /* [k, k] normalised Hadamard (or random orthogonal) factor */
    real *signs; /* [n] the ±1 diagonal D */
    real *work;  /* hadamard_apply_rows scratch for a block of rows */
} random_hadamard;
int random_hadamard_init(random_hadamard *q, int n, uint64_t seed);
/* x [rows, n] ← x·Q in place. */
int random_hadamard_apply(const random_hadamard *q, real *x, int rows);
void random_hadamard_free(random_hadamard *q);

enum { DIFF_BEFORE, DIFF_SMOOTH, DIFF_ROTATE, DIFF_SMOOTHROT, DIFF_VARIANTS };
/* "before", "smooth", "rotate", "smoothrot" (the report JSON's keys). */
extern const char *const difficulty_variant_names[DIFF_VARIANTS];

/* Every statistic of one (X, W) pair under each variant. */
typedef struct {
    difficulty_stats act[DIFF_VARIANTS];
    difficulty_stats weight[DIFF_VARIANTS];
    double error[DIFF_VARIANTS];
    double estimate[DIFF_VARIANTS];
    int rotation_is_random; /* n had no Hadamard matrix: Q is random orthogonal */
} difficulty_report;

/* Analyse x [rows, n] with its consumer w [out, n] (both left unchanged): SmoothQuant
 * strength alpha, `bits` for the layer error, seed for the rotation's signs and (where
 * needed) its random orthogonal factor. */
int difficulty_analyze(const real *x, int rows, int n, const real *w, int out, double alpha,
                       int bits, uint64_t seed, difficulty_report *r);

#endif
