/* adamw.h — the optimiser and learning-rate schedule of the per-layer calibration loop
 * (ALGORITHM §4.1).
 *
 * AdamW with decoupled weight decay applied to EVERY group (the reference does that, so
 * clip logits drift toward 0, λ and c toward 0, Θ toward 0), bias correction exactly as
 * §4.1 writes it (ε added after dividing √v by √(1−β2^k)). Parameters, gradients and
 * moments are caller-owned arrays described by a list of groups; each group has its own
 * base learning rate, because the cosine schedule has one absolute floor η_min for all
 * groups (so a plain "lr scale" could not express it). The update is a fixed sequence of
 * scalar operations per element: same inputs, same bytes out.
 */
#ifndef FQ_ADAMW_H
#define FQ_ADAMW_H

#include <stddef.h>

#include "real.h"

typedef struct {
    real *param;      /* [n] updated in place */
    const real *grad; /* [n] */
    real *m, *v;      /* [n] first and second moments, zero before the first step */
    size_t n;
    real lr0;         /* this group's base learning rate η_0 */
    const char *name; /* for error messages */
} adamw_group;

/* Hyper-parameters in double, like Python floats in the reference: 1 − β is formed in
 * double and only then rounded to `real` (1 − 0.999f would be off by 1.3e-5 relative). */
typedef struct {
    double beta1, beta2, eps, weight_decay;
} adamw_config;

/* β = (0.9, 0.999), ε = 1e-8, weight decay 0.01. */
adamw_config adamw_defaults(void);

/* One AdamW step k (1-based count of steps taken including this one) with lr[i] the
 * current learning rate of group i. Fails, before touching anything, on a non-finite
 * gradient (naming the group and element) or invalid arguments. */
int adamw_step(adamw_group *groups, int ngroups, const adamw_config *cfg, long step,
               const real *lr);

/* Learning rate after t scheduler steps (t = 0 for the first optimiser step) of a cosine
 * schedule over `total` steps from lr0 down to lr_min:
 *   η_t = lr_min + (lr0 − lr_min)(1 + cos(π t/total))/2   (t clamped to total),
 * multiplied, when warmup > 0, by the linear ramp start + (1 − start)·min(t, warmup)/warmup
 * (start = 0.01 in the recipe's optional warm-up over 16 steps). */
real lr_cosine(real lr0, real lr_min, long t, long total, long warmup, real warmup_start);

#endif
