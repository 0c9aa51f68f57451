/* calib_loop.c — the backend-independent per-layer training loop (calib_loop.h).
 *
 * Everything here runs on the host and touches only the flat parameter arrays: the AdamW
 * moments are allocated up front and the loop allocates nothing else. The loss values
 * come back from the backend as doubles, so the schedule, the logs and the checks are the
 * same code whatever computed them.
 */
#include "calib_loop.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "coordinator/progress.h"
#include "error.h"

#define WHERE "worker/calib_loop.c"

int calib_check_args(const fq_params *P, const llama_layer *l, const llama_config *c,
                     const fq_recipe *r, const calib_data *data, int layer_index,
                     calib_result *res, const char *fn)
{
    if (!P || !l || !c || !r || !data || !res)
        return fq_error("%s: NULL argument (expected params, layer, config, recipe, data and "
                        "result)", fn);
    memset(res, 0, sizeof *res);
    if (data->nsamples <= 0 || data->seqlen <= 0 || (!data->fetch && (!data->x || !data->y)))
        return fq_error("%s: layer %d: %d samples of %d tokens (expected positive counts and "
                        "X, Y arrays or a fetch callback)", fn, layer_index, data->nsamples,
                        data->seqlen);
    if (r->batch > data->nsamples)
        return fq_error("%s: layer %d: batch %d is larger than the %d calibration samples "
                        "(expected batch <= nsamples)", fn, layer_index, r->batch,
                        data->nsamples);
    return FQ_OK;
}

int calib_batch_get(const calib_data *D, int d, float *xb, float *yb, int first, int count,
                    const float **x, const float **y)
{
    size_t off = (size_t)first * D->seqlen * d;
    if (!D->fetch) {
        *x = D->x + off;
        *y = D->y + off;
        return FQ_OK;
    }
    if (D->fetch(D->fetch_ctx, first, count, xb, yb))
        return fq_error_wrap("fetching samples %d..%d", first, first + count - 1);
    *x = xb;
    *y = yb;
    return FQ_OK;
}

static long first_nonfinite(const real *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i]))
            return (long)i;
    return -1;
}

/* Which group and parameter an index of the flat array is, for messages. */
static const char *param_group_of(const fq_params *P, size_t i)
{
    for (int g = 0; g < FQ_NGROUPS; g++)
        if (i >= P->group_off[g] && i < P->group_off[g + 1])
            return fq_group_names[g];
    return "?";
}

static int full_pass(const fq_params *P, const calib_backend *be, int batch, int steps,
                     double *loss)
{
    double sum = 0;
    for (int j = 0; j < steps; j++) {
        double mse;
        if (be->forward(be->self, P, j * batch, batch, 0, &mse))
            return FQ_ERR;
        sum += mse;
    }
    *loss = sum / steps;
    return FQ_OK;
}

int calib_loop_run(fq_params *P, const fq_recipe *r, const calib_data *data,
                   const calib_backend *be, int layer_index, calib_result *res)
{
    const int batch = r->batch, steps = data->nsamples / batch;
    const long total = (long)steps * r->epochs;
    real *mom = fq_calloc(2 * P->n, sizeof(real), "AdamW moments");
    double *lam = fq_calloc((size_t)P->nfactors, sizeof(double), "lambda log");
    const char **fnames = fq_calloc((size_t)P->nfactors, sizeof(char *), "factor names");
    int rc = FQ_ERR;
    if (!mom || !lam || !fnames)
        goto out;
    for (int i = 0; i < P->nfactors; i++)
        fnames[i] = P->fac[i].name;

    adamw_group groups[FQ_NGROUPS];
    real lr0[FQ_NGROUPS], lr[FQ_NGROUPS];
    for (int k = 0; k < FQ_NGROUPS; k++) {
        size_t lo = P->group_off[k];
        groups[k] = (adamw_group){P->p + lo, P->g + lo, mom + lo, mom + P->n + lo,
                                  P->group_off[k + 1] - lo, 0, fq_group_names[k]};
        lr0[k] = (real)(k <= FQ_G_SCALE ? r->lr : r->clip_lr);
        groups[k].lr0 = lr0[k];
        lr[k] = lr0[k];
    }
    adamw_config cfg = adamw_defaults();
    cfg.weight_decay = r->weight_decay;

    double t0 = progress_monotonic_seconds();
    res->passes_s = res->loop_s = 0;
    if (full_pass(P, be, batch, steps, &res->loss_before))
        goto out;
    double t1 = progress_monotonic_seconds();
    if (!isfinite(res->loss_before)) {
        fq_error("layer %d, step 0: loss is %s before training (expected finite inputs, "
                 "targets and weights)", layer_index, isnan(res->loss_before) ? "NaN" : "Inf");
        goto out;
    }
    long step = 0;
    for (int e = 0; e < r->epochs; e++) {
        double mse_sum = 0;
        for (int j = 0; j < steps; j++) {
            double mse;
            step++;
            if (be->forward(be->self, P, j * batch, batch, 1, &mse)) {
                fq_error_wrap("layer %d, step %ld", layer_index, step);
                goto out;
            }
            if (!isfinite(mse)) {
                fq_error("layer %d, step %ld: loss is %s (epoch %d, samples %d..%d; expected "
                         "finite: check these samples' inputs and targets, or lower the "
                         "learning rates)", layer_index, step,
                         isnan(mse) ? "NaN" : "Inf", e, j * batch, j * batch + batch - 1);
                goto out;
            }
            mse_sum += mse;
            if (mse == 0)
                continue; /* L/L̄ is undefined; nothing to learn from an exact batch */
            if (be->backward(be->self, P)) {
                fq_error_wrap("layer %d, step %ld", layer_index, step);
                goto out;
            }
            for (int k = 0; k < FQ_NGROUPS; k++)
                lr[k] = lr_cosine(lr0[k], (real)r->lr_min, step - 1, total, r->warmup_steps,
                                  (real)0.01);
            if (adamw_step(groups, FQ_NGROUPS, &cfg, step, lr)) {
                fq_error_wrap("layer %d, step %ld", layer_index, step);
                goto out;
            }
            long bad = first_nonfinite(P->p, P->n);
            if (bad >= 0) {
                fq_error("layer %d, step %ld: parameter %ld (%s) became %g (expected finite; "
                         "the learning rates may be too high)", layer_index, step, bad,
                         param_group_of(P, (size_t)bad), (double)P->p[bad]);
                goto out;
            }
        }
        for (int i = 0; i < P->nfactors; i++)
            lam[i] = (double)fq_factor_lambda_min(P, i);
        if (data->on_epoch) {
            calib_epoch_log lg = {e, r->epochs, mse_sum, P->nfactors, fnames, lam,
                                  (double)lr[FQ_G_TRANSFORM], (double)lr[FQ_G_WCLIP]};
            data->on_epoch(data->log_ctx, &lg);
        }
    }
    res->steps = step;
    double t2 = progress_monotonic_seconds();
    if (full_pass(P, be, batch, steps, &res->loss_after))
        goto out;
    res->loop_s = t2 - t1;
    res->passes_s = (t1 - t0) + (progress_monotonic_seconds() - t2);
    if (!isfinite(res->loss_after)) {
        fq_error("layer %d, step %ld: loss is %s after training (expected finite)", layer_index,
                 step, isnan(res->loss_after) ? "NaN" : "Inf");
        goto out;
    }
    rc = FQ_OK;
out:
    free(mom);
    free(lam);
    free(fnames);
    return rc;
}
