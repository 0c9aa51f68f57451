/* calibrate_layer_cuda.c — the GPU backend of the per-layer training loop
 * (calibrate_layer_cuda.h; the loop itself is calib_loop.c).
 *
 * Per step: the batch's X and Y are device pointers (into the resident copy, or a batch
 * buffer just uploaded), the forward and the loss run on the GPU, the loss comes back as
 * one double (the loop needs it for the schedule and the checks), the backward leaves
 * P->g on the host. Trade-off: batch uploads in the streaming plan are synchronous (no
 * overlap with compute); at 4 × 2048 × 8192 fp32 that is 2 × 268 MB per step, ~20 ms
 * over PCIe 5 against a step of several hundred ms.
 */
#include "calibrate_layer_cuda.h"

#include <stdlib.h>
#include <string.h>

#include "calib_loop.h"
#include "coordinator/progress.h"
#include "error.h"

#define WHERE "worker/calibrate_layer_cuda.c"

#ifdef FLATQ_HAVE_CUDA
#include "kernels/fq_layer_cuda.h"

/* Free memory kept beyond the resident samples: cuBLAS workspaces and the allocator. */
#define RESIDENT_MARGIN ((size_t)512 << 20)

typedef struct {
    const calib_data *data;
    fq_cuda_ctx *ctx;
    fq_tape_cuda *tp;
    int d;
    size_t n, per;       /* elements of one batch, of one sample */
    int resident;
    float *dX, *dY;      /* all used samples (resident plan) */
    float *dxb, *dyb;    /* one batch (streaming plan) */
    float *dout, *dg;    /* layer output and loss seed */
    float *xb, *yb;      /* host fetch buffers */
    size_t used0, peak;  /* device bytes in use before the layer, and the most since */
} gpu_backend;

static void note_peak(gpu_backend *gb)
{
    size_t fr, tot;
    if (fq_cuda_mem_info(&fr, &tot) == FQ_OK && tot - fr > gb->peak)
        gb->peak = tot - fr;
}

static int gpu_forward(void *self, const fq_params *P, int first, int count, int with_seed,
                       double *mse)
{
    gpu_backend *gb = self;
    const float *x, *t;
    if (gb->resident) {
        x = gb->dX + (size_t)first * gb->per;
        t = gb->dY + (size_t)first * gb->per;
    } else {
        const float *hx, *hy;
        if (calib_batch_get(gb->data, gb->d, gb->xb, gb->yb, first, count, &hx, &hy) ||
            fq_cuda_upload(gb->ctx, gb->dxb, hx, gb->n) ||
            fq_cuda_upload(gb->ctx, gb->dyb, hy, gb->n))
            return FQ_ERR;
        x = gb->dxb;
        t = gb->dyb;
    }
    if (fq_layer_fwd_cuda(gb->tp, P, x, gb->dout) ||
        fq_layer_loss_cuda(gb->tp, gb->dout, t, with_seed ? gb->dg : NULL, mse))
        return FQ_ERR;
    note_peak(gb);
    return FQ_OK;
}

static int gpu_backward(void *self, fq_params *P)
{
    gpu_backend *gb = self;
    if (fq_layer_bwd_cuda(gb->tp, P, gb->dg))
        return FQ_ERR;
    note_peak(gb);
    return FQ_OK;
}

/* All used samples onto the device, batch by batch through the host when fetching. */
static int upload_resident(gpu_backend *gb, int batch, int steps)
{
    for (int j = 0; j < steps; j++) {
        const float *hx, *hy;
        size_t off = (size_t)j * gb->n;
        if (calib_batch_get(gb->data, gb->d, gb->xb, gb->yb, j * batch, batch, &hx, &hy) ||
            fq_cuda_upload(gb->ctx, gb->dX + off, hx, gb->n) ||
            fq_cuda_upload(gb->ctx, gb->dY + off, hy, gb->n))
            return FQ_ERR;
    }
    return FQ_OK;
}

int calibrate_layer_cuda(fq_cuda_ctx *ctx, fq_params *P, const llama_layer *l,
                         const llama_config *c, const fq_recipe *r, const fq_stats *st,
                         const calib_data *data, int layer_index, calib_result *res)
{
    if (calib_check_args(P, l, c, r, data, layer_index, res, WHERE ":calibrate_layer_cuda"))
        return FQ_ERR;
    if (!ctx || !ctx->stream)
        return fq_error(WHERE ":calibrate_layer_cuda: layer %d: no CUDA context (expected "
                        "fq_cuda_init first)", layer_index);
    double t0 = progress_monotonic_seconds();
    if (fq_params_init(P, c, r, l, st))
        return fq_error_wrap(WHERE ":calibrate_layer_cuda: layer %d", layer_index);
    double t_params = progress_monotonic_seconds() - t0, t_tape = 0, t_upload = 0;

    const int batch = r->batch, steps = data->nsamples / batch;
    gpu_backend gb;
    memset(&gb, 0, sizeof gb);
    gb.data = data;
    gb.ctx = ctx;
    gb.d = c->hidden;
    gb.per = (size_t)data->seqlen * c->hidden;
    gb.n = (size_t)batch * gb.per;
    rope_table rope;
    memset(&rope, 0, sizeof rope);
    int rc = FQ_ERR;
    size_t fr, tot;
    if (fq_cuda_sync(ctx) || fq_cuda_mem_info(&fr, &tot))
        goto out;
    gb.used0 = gb.peak = tot - fr;
    if (data->fetch && (!(gb.xb = fq_malloc(sizeof(float) * gb.n, "fetched inputs")) ||
                        !(gb.yb = fq_malloc(sizeof(float) * gb.n, "fetched targets"))))
        goto out;
    t0 = progress_monotonic_seconds();
    if (rope_table_init(&rope, c, data->seqlen) ||
        fq_tape_cuda_create(&gb.tp, ctx, P, l, &rope, batch, data->seqlen) ||
        fq_cuda_alloc(&gb.dout, gb.n, "layer output") ||
        fq_cuda_alloc(&gb.dg, gb.n, "loss gradient") || fq_cuda_mem_info(&fr, &tot))
        goto out;
    t_tape = progress_monotonic_seconds() - t0;
    t0 = progress_monotonic_seconds();
    const size_t all = 2 * (size_t)steps * gb.n * sizeof(float);
    gb.resident = !data->device_stream && all + RESIDENT_MARGIN <= fr;
    if (gb.resident) {
        if (fq_cuda_alloc(&gb.dX, (size_t)steps * gb.n, "resident calibration inputs") ||
            fq_cuda_alloc(&gb.dY, (size_t)steps * gb.n, "resident calibration targets") ||
            upload_resident(&gb, batch, steps))
            goto out;
    } else if (fq_cuda_alloc(&gb.dxb, gb.n, "batch inputs") ||
               fq_cuda_alloc(&gb.dyb, gb.n, "batch targets")) {
        goto out;
    }
    note_peak(&gb);
    t_upload = progress_monotonic_seconds() - t0;
    /* the parts of "training setup" in layer_task's phases line (issue 6) */
    printf("flatq: layer %d setup: parameter init %.1f s, weights to the GPU %.1f s, "
           "samples to the GPU %.1f s (%s)\n", layer_index, t_params, t_tape, t_upload,
           gb.resident ? "resident" : "streamed per batch");
    fflush(stdout);
    calib_backend be = {&gb, gpu_forward, gpu_backward};
    rc = calib_loop_run(P, r, data, &be, layer_index, res);
    if (rc == FQ_OK)
        res->peak_device_bytes = gb.peak - gb.used0;
out:
    if (rc)
        fq_error_wrap(WHERE ":calibrate_layer_cuda: layer %d", layer_index);
    fq_tape_cuda_free(gb.tp);
    fq_cuda_free(gb.dX);
    fq_cuda_free(gb.dY);
    fq_cuda_free(gb.dxb);
    fq_cuda_free(gb.dyb);
    fq_cuda_free(gb.dout);
    fq_cuda_free(gb.dg);
    rope_table_free(&rope);
    free(gb.xb);
    free(gb.yb);
    if (rc)
        fq_params_free(P);
    return rc;
}

int merged_weights_cuda(fq_cuda_ctx *ctx, const fq_params *P, const llama_layer *l,
                        float *w[QL_NLINEAR])
{
    if (!ctx || !P || !P->p || !l || !w)
        return fq_error(WHERE ":merged_weights_cuda: NULL argument (expected a context, "
                        "params, layer and an output table)");
    memset(w, 0, sizeof(float *) * QL_NLINEAR);
    rope_table rope;
    fq_tape_cuda *tp = NULL;
    int rc = rope_table_init(&rope, &P->cfg, 1);
    if (rc != FQ_OK)
        return fq_error_wrap(WHERE ":merged_weights_cuda");
    for (int i = 0; rc == FQ_OK && i < QL_NLINEAR; i++) {
        size_t n = (size_t)fq_linear_out(&P->cfg, i) * fq_linear_in(&P->cfg, i);
        if (!(w[i] = fq_malloc(sizeof(float) * n, "merged weight")))
            rc = FQ_ERR;
    }
    /* a tape of one token: only its weight side is used */
    if (rc == FQ_OK)
        rc = fq_tape_cuda_create(&tp, ctx, P, l, &rope, 1, 1);
    if (rc == FQ_OK)
        rc = fq_tape_cuda_merged_weights(tp, P, w);
    fq_tape_cuda_free(tp);
    rope_table_free(&rope);
    if (rc != FQ_OK) {
        for (int i = 0; i < QL_NLINEAR; i++) {
            free(w[i]);
            w[i] = NULL;
        }
        return fq_error_wrap(WHERE ":merged_weights_cuda");
    }
    return FQ_OK;
}

#else

int merged_weights_cuda(fq_cuda_ctx *ctx, const fq_params *P, const llama_layer *l,
                        float *w[QL_NLINEAR])
{
    (void)ctx, (void)P, (void)l, (void)w;
    return fq_error(WHERE ":merged_weights_cuda: this flatq was built without the CUDA "
                    "backend (expected nvcc at build time, or device: cpu)");
}

int calibrate_layer_cuda(fq_cuda_ctx *ctx, fq_params *P, const llama_layer *l,
                         const llama_config *c, const fq_recipe *r, const fq_stats *st,
                         const calib_data *data, int layer_index, calib_result *res)
{
    (void)ctx, (void)P, (void)l, (void)c, (void)r, (void)st, (void)data, (void)res;
    return fq_error(WHERE ":calibrate_layer_cuda: layer %d: this flatq was built without the "
                    "CUDA backend (expected nvcc at build time, or device: cpu)", layer_index);
}

#endif
