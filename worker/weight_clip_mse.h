/* weight_clip_mse.h — per-row symmetric RTN weight quantization with QuaRot's clip search
 * (ALGORITHM §8, QuaRot-RTN weights).
 *
 * For each output row the clip ratio p runs over {1, 0.99, …, 0.21} (80 values); the row is
 * quantized with s = max(p·max|w|, 1e−5)/qmax and the p minimising Σ|Q(w) − w|^2.4 wins
 * (the first, i.e. largest, p on ties). The 2.4 exponent weighs large errors more than
 * squared error would, so an outlier is clipped only when the rest of the row gains more
 * than the outlier loses. The codes and scales land in the same qlinear as plain RTN, so
 * the forward and the checkpoint need not know which search produced them.
 */
#ifndef FQ_WEIGHT_CLIP_MSE_H
#define FQ_WEIGHT_CLIP_MSE_H

#include "qlayer.h"

/* Number of clip ratios tried: p_i = 1 − i/100 for i < WEIGHT_CLIP_STEPS. */
#define WEIGHT_CLIP_STEPS 80
#define WEIGHT_CLIP_NORM 2.4

/* Best scale of one row of n weights for `bits` (2..8); *ratio (may be NULL) gets p. */
int weight_clip_search_row(const float *w, int n, int bits, float *scale, float *ratio);

/* Quantize W [out, in] row-wise with the searched scales into l (allocates; bits 16 copies
 * the weight like qlinear_quantize_rtn). ratios (may be NULL): [out] chosen p per row. */
int qlinear_quantize_mse(qlinear *l, const float *w, int out, int in, int bits, float *ratios);

#endif
