/* calibrate_layer.c — the per-layer training loop of ALGORITHM §4.3 on the CPU
 * (calibrate_layer.h): the CPU backend of calib_loop.c.
 *
 * One tape, one batch buffer pair and the loss seed are allocated up front; the loop
 * itself allocates nothing. Batches come either from the caller's arrays (a pointer into
 * them, no copy) or through the fetch callback into the batch buffers. The loss is summed
 * in double so the per-step seed 2(Ŷ − Y)/(n·L̄) does not depend on summation order
 * beyond what the fixed loop order already fixes.
 */
#include "calibrate_layer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "calib_loop.h"
#include "error.h"

#define WHERE "worker/calibrate_layer.c"

typedef struct {
    const calib_data *data;
    const llama_layer *l;
    const rope_table *rope;
    fq_tape *tp;
    int d;
    size_t n;       /* elements of one batch */
    float *xb, *yb; /* fetch buffers (fetch mode only) */
    real *x, *y, *g;
} cpu_backend;

/* Forward one batch; *mse is the MSE per element; with_seed writes the seed of the
 * normalised loss L/L̄ into g. */
static int cpu_forward(void *self, const fq_params *P, int first, int count, int with_seed,
                       double *mse)
{
    cpu_backend *cb = self;
    const float *xf, *yf;
    if (calib_batch_get(cb->data, cb->d, cb->xb, cb->yb, first, count, &xf, &yf))
        return FQ_ERR;
    real_from_f32(xf, cb->n, cb->x);
    if (fq_layer_fwd(cb->tp, P, cb->l, cb->rope, cb->x, cb->y))
        return FQ_ERR;
    double sum = 0;
    for (size_t i = 0; i < cb->n; i++) {
        double e = (double)cb->y[i] - (double)yf[i];
        sum += e * e;
    }
    *mse = sum / (double)cb->n;
    if (with_seed && isfinite(*mse) && *mse > 0) {
        const double k = 2.0 / ((double)cb->n * *mse);
        for (size_t i = 0; i < cb->n; i++)
            cb->g[i] = (real)(k * ((double)cb->y[i] - (double)yf[i]));
    }
    return FQ_OK;
}

static int cpu_backward(void *self, fq_params *P)
{
    cpu_backend *cb = self;
    return fq_layer_bwd(cb->tp, P, cb->l, cb->rope, cb->g);
}

int calibrate_layer(fq_params *P, const llama_layer *l, const llama_config *c,
                    const fq_recipe *r, const fq_stats *st, const calib_data *data,
                    int layer_index, calib_result *res)
{
    if (calib_check_args(P, l, c, r, data, layer_index, res, WHERE ":calibrate_layer"))
        return FQ_ERR;
    if (fq_params_init(P, c, r, l, st))
        return fq_error_wrap(WHERE ":calibrate_layer: layer %d", layer_index);

    const size_t n = (size_t)r->batch * data->seqlen * c->hidden;
    rope_table rope;
    memset(&rope, 0, sizeof rope);
    cpu_backend cb = {data, l, &rope, NULL, c->hidden, n, NULL, NULL, NULL, NULL, NULL};
    int rc = FQ_ERR;
    cb.x = fq_malloc(sizeof(real) * n, "batch input");
    cb.y = fq_malloc(sizeof(real) * n, "batch output");
    cb.g = fq_malloc(sizeof(real) * n, "loss gradient");
    if (!cb.x || !cb.y || !cb.g)
        goto out;
    if (data->fetch && (!(cb.xb = fq_malloc(sizeof(float) * n, "fetched inputs")) ||
                        !(cb.yb = fq_malloc(sizeof(float) * n, "fetched targets"))))
        goto out;
    if (rope_table_init(&rope, c, data->seqlen) ||
        fq_tape_create(&cb.tp, P, r->batch, data->seqlen, NULL))
        goto out;
    calib_backend be = {&cb, cpu_forward, cpu_backward};
    rc = calib_loop_run(P, r, data, &be, layer_index, res);
out:
    if (rc)
        fq_error_wrap(WHERE ":calibrate_layer");
    fq_tape_free(cb.tp);
    rope_table_free(&rope);
    free(cb.x);
    free(cb.y);
    free(cb.g);
    free(cb.xb);
    free(cb.yb);
    if (rc)
        fq_params_free(P);
    return rc;
}
