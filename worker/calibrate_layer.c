/* calibrate_layer.c — the per-layer training loop of ALGORITHM §4.3 (calibrate_layer.h).
 *
 * One tape, one batch buffer pair and the AdamW moments are allocated up front; the loop
 * itself allocates nothing. Batches come either from the caller's arrays (a pointer into
 * them, no copy) or through the fetch callback into the batch buffers. The loss is summed
 * in double so the per-step seed 2(Ŷ − Y)/(n·L̄) does not depend on summation order
 * beyond what the fixed loop order already fixes.
 */
#include "calibrate_layer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "error.h"

#define WHERE "worker/calibrate_layer.c"

typedef struct {
    const calib_data *data;
    int d;
    size_t batch_elems;
    float *xb, *yb; /* fetch buffers (fetch mode only) */
} batch_source;

/* Pointers to samples [first, first + count) of X and Y. */
static int batch_get(batch_source *bs, int first, int count, const float **x, const float **y)
{
    const calib_data *D = bs->data;
    size_t off = (size_t)first * D->seqlen * bs->d;
    if (!D->fetch) {
        *x = D->x + off;
        *y = D->y + off;
        return FQ_OK;
    }
    if (D->fetch(D->fetch_ctx, first, count, bs->xb, bs->yb))
        return fq_error_wrap("fetching samples %d..%d", first, first + count - 1);
    *x = bs->xb;
    *y = bs->yb;
    return FQ_OK;
}

/* Forward one batch; returns the MSE per element in *mse and, when g is not NULL, writes
 * the seed of the normalised loss L/L̄ into g. */
static int batch_forward(fq_tape *tp, const fq_params *P, const llama_layer *l,
                         const rope_table *rope, const float *xf, const float *yf, real *x,
                         real *y, real *g, size_t n, double *mse)
{
    real_from_f32(xf, n, x);
    if (fq_layer_fwd(tp, P, l, rope, x, y))
        return FQ_ERR;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)y[i] - (double)yf[i];
        sum += e * e;
    }
    *mse = sum / (double)n;
    if (g && isfinite(*mse) && *mse > 0) {
        const double k = 2.0 / ((double)n * *mse);
        for (size_t i = 0; i < n; i++)
            g[i] = (real)(k * ((double)y[i] - (double)yf[i]));
    }
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

static int full_pass(fq_tape *tp, const fq_params *P, const llama_layer *l,
                     const rope_table *rope, batch_source *bs, int batch, int steps, real *x,
                     real *y, double *loss)
{
    size_t n = bs->batch_elems;
    double sum = 0;
    for (int j = 0; j < steps; j++) {
        const float *xf, *yf;
        double mse;
        if (batch_get(bs, j * batch, batch, &xf, &yf) ||
            batch_forward(tp, P, l, rope, xf, yf, x, y, NULL, n, &mse))
            return FQ_ERR;
        sum += mse;
    }
    *loss = sum / steps;
    return FQ_OK;
}

int calibrate_layer(fq_params *P, const llama_layer *l, const llama_config *c,
                    const fq_recipe *r, const fq_stats *st, const calib_data *data,
                    int layer_index, calib_result *res)
{
    if (!P || !l || !c || !r || !data || !res)
        return fq_error(WHERE ":calibrate_layer: NULL argument (expected params, layer, "
                        "config, recipe, data and result)");
    memset(res, 0, sizeof *res);
    if (data->nsamples <= 0 || data->seqlen <= 0 ||
        (!data->fetch && (!data->x || !data->y)))
        return fq_error(WHERE ":calibrate_layer: layer %d: %d samples of %d tokens (expected "
                        "positive counts and X, Y arrays or a fetch callback)", layer_index,
                        data->nsamples, data->seqlen);
    if (r->batch > data->nsamples)
        return fq_error(WHERE ":calibrate_layer: layer %d: batch %d is larger than the %d "
                        "calibration samples (expected batch <= nsamples)", layer_index,
                        r->batch, data->nsamples);
    if (fq_params_init(P, c, r, l, st))
        return fq_error_wrap(WHERE ":calibrate_layer: layer %d", layer_index);

    const int batch = r->batch, steps = data->nsamples / batch, d = c->hidden;
    const long total = (long)steps * r->epochs;
    const size_t n = (size_t)batch * data->seqlen * d;
    batch_source bs = {data, d, n, NULL, NULL};
    fq_tape *tp = NULL;
    rope_table rope;
    memset(&rope, 0, sizeof rope);
    real *x = fq_malloc(sizeof(real) * n, "batch input");
    real *y = fq_malloc(sizeof(real) * n, "batch output");
    real *g = fq_malloc(sizeof(real) * n, "loss gradient");
    real *mom = fq_calloc(2 * P->n, sizeof(real), "AdamW moments");
    double *lam = fq_calloc((size_t)P->nfactors, sizeof(double), "lambda log");
    const char **fnames = fq_calloc((size_t)P->nfactors, sizeof(char *), "factor names");
    int rc = FQ_ERR;
    if (!x || !y || !g || !mom || !lam || !fnames)
        goto out;
    if (data->fetch && (!(bs.xb = fq_malloc(sizeof(float) * n, "fetched inputs")) ||
                        !(bs.yb = fq_malloc(sizeof(float) * n, "fetched targets"))))
        goto out;
    if (rope_table_init(&rope, c, data->seqlen) ||
        fq_tape_create(&tp, P, batch, data->seqlen, NULL))
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

    if (full_pass(tp, P, l, &rope, &bs, batch, steps, x, y, &res->loss_before))
        goto out;
    if (!isfinite(res->loss_before)) {
        fq_error("layer %d, step 0: loss is %s before training (expected finite inputs, "
                 "targets and weights)", layer_index, isnan(res->loss_before) ? "NaN" : "Inf");
        goto out;
    }
    long step = 0;
    for (int e = 0; e < r->epochs; e++) {
        double mse_sum = 0;
        for (int j = 0; j < steps; j++) {
            const float *xf, *yf;
            double mse;
            step++;
            if (batch_get(&bs, j * batch, batch, &xf, &yf) ||
                batch_forward(tp, P, l, &rope, xf, yf, x, y, g, n, &mse)) {
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
            if (fq_layer_bwd(tp, P, l, &rope, g)) {
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
    if (full_pass(tp, P, l, &rope, &bs, batch, steps, x, y, &res->loss_after))
        goto out;
    if (!isfinite(res->loss_after)) {
        fq_error("layer %d, step %ld: loss is %s after training (expected finite)", layer_index,
                 step, isnan(res->loss_after) ? "NaN" : "Inf");
        goto out;
    }
    rc = FQ_OK;
out:
    if (rc)
        fq_error_wrap(WHERE ":calibrate_layer");
    fq_tape_free(tp);
    rope_table_free(&rope);
    free(x);
    free(y);
    free(g);
    free(mom);
    free(lam);
    free(fnames);
    free(bs.xb);
    free(bs.yb);
    if (rc)
        fq_params_free(P);
    return rc;
}
