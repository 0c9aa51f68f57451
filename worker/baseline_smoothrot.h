/* baseline_smoothrot.h — smooth-then-rotate ("SmoothRot", the channel-scaling paper;
 * ALGORITHM §8): a SmoothQuant scaling of the down_proj input, then the full QuaRot pipeline.
 *
 * Rotation alone spreads an outlier channel over all channels but keeps its energy; the
 * down_proj input of LLaMA has a few channels so large that the rotated vector is still
 * dominated by them. Dividing those channels by s_j = max|X_j|^α / max|W_j|^{1−α} first
 * (and multiplying the matching Wdown columns by s_j) moves part of the range into the
 * weights, which the per-row weight quantizer handles better. The division is folded into
 * the Wup rows (z = silu(gate) ∘ up is linear in up), so inference costs nothing extra.
 *
 * The statistics come from an FP pass over calibration windows (un-rotated activations),
 * collected by smooth_stats_collect.
 */
#ifndef FQ_BASELINE_SMOOTHROT_H
#define FQ_BASELINE_SMOOTHROT_H

#include "baseline_quarot.h"
#include "llama_model.h"

#include <stddef.h>
#include <stdint.h>

/* Run the FP model over n_windows windows of seqlen tokens (ids: n_windows·seqlen, each
 * window scored on its own) and return *down_max [n_layers, f]: the max |x_j| of each
 * layer's down_proj input channel over all tokens (malloc'ed; the caller frees). */
int smooth_stats_collect(const llama_model *m, const int32_t *ids, size_t n_windows, int seqlen,
                         float **down_max);

/* *scales [n_layers, f]: s_j = max(max|X_j|^α / max(max_i |Wdown_ij|, 1e−5)^{1−α}, 1e−5),
 * α in [0, 1] (malloc'ed). */
/* One layer's scales s [f] from its down_proj input maxima [f] (s_j = x_j^α / w_j^{1−α},
 * w_j = max |Wdown[:, j]|, floored at 1e-5). */
int smooth_down_scales_layer(const llama_layer *l, int d, int f, const float *down_max,
                             double alpha, float *s);
int smooth_down_scales(const llama_model *m, const float *down_max, double alpha,
                       float **scales);

/* smoothrot = smooth_down_scales + baseline_quarot with those scales. */
int baseline_smoothrot(const llama_model *fp, const qconfig *qc, const quarot_opts *o,
                       const float *down_max, double alpha, quarot_model *out);

#endif
