/* gptq_pass_cuda.c — the GPTQ pass's layer work on the GPU (gptq_pass_cuda.h). */
#include "coordinator/gptq_pass_cuda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/gptq_pass.h"
#include "coordinator/progress.h"
#include "error.h"
#include "fq_layer.h"
#include "parallel.h"

#define F "coordinator/gptq_pass_cuda.c"

#ifdef FLATQ_HAVE_CUDA

#include "kernels/gptq_cuda.h"
#include "kernels/qlayer_cuda.h"

/* the attention's softmax rows per forward, as the FP pass caps them */
#define PROBS_CAP_BYTES (2.0 * 1024 * 1024 * 1024)

struct gptq_gpu {
    fq_cuda_ctx *ctx;
    int saved_math; /* the context's math, restored at the end: the pass runs in fp32 */
    int gpu_factor; /* 1: the factorisations on the GPU (cuSOLVER found), 0: LAPACK */
    const llama_config *c;
    qconfig qc;
    int nsamples, seqlen, batch;
    float *x;   /* [nsamples, seqlen, d]: the current layer's input */
    float *buf; /* one batch, for the observed forwards (they stop half-way) */
    float *rope_cos, *rope_sin;
    qlayer_scratch_dev w;
};

void gptq_gpu_free(gptq_gpu *g)
{
    if (!g)
        return;
    fq_cuda_set_math(g->ctx, g->saved_math);
    fq_cuda_free(g->x);
    fq_cuda_free(g->buf);
    fq_cuda_free(g->rope_cos);
    fq_cuda_free(g->rope_sin);
    qlayer_scratch_dev_free(&g->w);
    free(g);
}

int gptq_gpu_init(gptq_gpu **out, fq_cuda_ctx *ctx, const llama_config *c, const qconfig *qc,
                  const rope_table *rope, const real *x, int nsamples, int seqlen, int batch)
{
    if (!out || !ctx || !c || !qc || !rope || !x || nsamples < 1 || seqlen < 1 || batch < 1 ||
        rope->seqlen < seqlen)
        return fq_error(F ":gptq_gpu_init: bad arguments (expected a context, the model, "
                        "activations, a rope table for %d positions and batch >= 1)", seqlen);
    *out = NULL;
    gptq_gpu *g = fq_calloc(1, sizeof *g, "GPU GPTQ state");
    if (!g)
        return FQ_ERR;
    g->ctx = ctx;
    /* fp32 like the CPU pass: the Hessians and the forwards feed 4-bit decisions */
    g->saved_math = ctx->math;
    ctx->math = FQ_MATH_FP32;
    g->c = c;
    g->qc = *qc;
    g->nsamples = nsamples;
    g->seqlen = seqlen;
    double probs = 4.0 * c->n_heads * (double)seqlen * seqlen;
    int cap = (int)(PROBS_CAP_BYTES / probs);
    g->batch = batch < nsamples ? batch : nsamples;
    if (g->batch > cap)
        g->batch = cap > 1 ? cap : 1;
    size_t d = (size_t)c->hidden, per = (size_t)seqlen * d, half = (size_t)seqlen * (c->head_dim / 2);
    if (fq_cuda_alloc(&g->x, per * nsamples, "GPTQ pass activations") ||
        fq_cuda_alloc(&g->buf, per * g->batch, "GPTQ pass batch") ||
        fq_cuda_alloc(&g->rope_cos, half, "RoPE cos") ||
        fq_cuda_alloc(&g->rope_sin, half, "RoPE sin") ||
        fq_cuda_upload(ctx, g->x, x, per * nsamples) ||
        fq_cuda_upload(ctx, g->rope_cos, rope->cos, half) ||
        fq_cuda_upload(ctx, g->rope_sin, rope->sin, half) ||
        qlayer_scratch_dev_init(&g->w, c, g->batch, seqlen)) {
        gptq_gpu_free(g);
        return fq_error_wrap("GPTQ pass on GPU %d", ctx->device);
    }
    char why[256];
    g->gpu_factor = gptq_cuda_have_solver(why);
    printf("gptq: the pass on GPU %d; float64 factorisations %s\n", ctx->device,
           g->gpu_factor ? "on the GPU" : "on the host's LAPACK");
    printf("gptq: %s\n", why);
    fflush(stdout);
    *out = g;
    return FQ_OK;
}

typedef struct {
    gptq_gpu *g;
    float *H[QL_NLINEAR]; /* device sums; NULL: not observed */
    long tokens[QL_NLINEAR];
    int stop_lin;
} dev_obs;

static int observe_dev(void *ctx, int lin, const float *xhat, int rows, int k)
{
    dev_obs *o = ctx;
    if (o->H[lin]) {
        if (gptq_hessian_add_cuda(o->g->ctx, o->H[lin], xhat, rows, k) != FQ_OK)
            return FQ_ERR;
        o->tokens[lin] += rows;
    }
    return lin == o->stop_lin ? 1 : 0;
}

/* every batch: in place on the activations (obs NULL), or on a copy with the observer */
static int forward_all(gptq_gpu *g, const qlayer_dev *l, dev_obs *obs)
{
    size_t per = (size_t)g->seqlen * g->c->hidden;
    for (int s0 = 0; s0 < g->nsamples; s0 += g->batch) {
        int nb = s0 + g->batch <= g->nsamples ? g->batch : g->nsamples - s0;
        float *x = g->x + (size_t)s0 * per;
        if (obs) {
            if (fq_cuda_copy(g->ctx, g->buf, x, per * nb) != FQ_OK)
                return FQ_ERR;
            x = g->buf;
        }
        if (qlayer_fwd_cuda(g->ctx, x, l, g->c, &g->qc, g->rope_cos, g->rope_sin, nb, g->seqlen,
                            &g->w, obs ? observe_dev : NULL, obs) != FQ_OK)
            return FQ_ERR;
    }
    return fq_cuda_sync(g->ctx);
}

int gptq_gpu_forward(gptq_gpu *g, const qlayer_rt *rt)
{
    if (!g || !rt)
        return fq_error(F ":gptq_gpu_forward: NULL argument");
    qlayer_dev l;
    if (qlayer_dev_upload(g->ctx, &l, rt, g->c) != FQ_OK)
        return FQ_ERR;
    int rc = forward_all(g, &l, NULL);
    qlayer_dev_free(&l);
    return rc;
}

/* host dequantized weight of l */
static float *dequantized(const qlinear *l)
{
    float *w = fq_malloc(sizeof(float) * (size_t)l->out * l->in, "dequantized weight");
    if (w && qlinear_dequantize(l, w) != FQ_OK) {
        free(w);
        w = NULL;
    }
    return w;
}

/* Element-wise host passes over a linear's weights or Hessian (up to 822 M elements for a
 * 70B down_proj), on the I/O threads: d = a − b, or d *= k when a is NULL. */
typedef struct {
    float *d;
    const real *a;
    const float *b;
    float k;
} elementwise;

static int elementwise_range(void *ctx, size_t i0, size_t i1, int t)
{
    (void)t;
    const elementwise *e = ctx;
    if (e->a)
        for (size_t i = i0; i < i1; i++)
            e->d[i] = (float)e->a[i] - e->b[i];
    else
        for (size_t i = i0; i < i1; i++)
            e->d[i] = e->k * e->d[i];
    return FQ_OK;
}

static int elementwise_run(float *d, const real *a, const float *b, float k, size_t n)
{
    elementwise e = {d, a, b, k};
    return fq_parallel_ranges(n, (size_t)1 << 22, 0, elementwise_range, &e);
}

/* tr((W' − Ŵ) H (W' − Ŵ)ᵀ) for the dequantized Ŵ (host) and H = hscale · Hsum, Hsum on the
 * device (the error is linear in H: the device keeps the unscaled sum) */
static int output_error(gptq_gpu *g, int out, int in, const float *deq, const real *wp,
                        const float *Hsum, double hscale, float *dev_delta, float *dev_work,
                        double *err)
{
    size_t n = (size_t)out * in;
    float *d = fq_malloc(sizeof(float) * n, "weight error");
    int rc = d ? elementwise_run(d, wp, deq, 0, n) : FQ_ERR;
    if (rc == FQ_OK)
        rc = fq_cuda_upload(g->ctx, dev_delta, d, n);
    free(d);
    if (rc == FQ_OK)
        rc = gptq_output_error_cuda(g->ctx, dev_delta, Hsum, out, in, dev_work, err);
    *err *= hscale;
    return rc;
}

/* GPTQ of one linear from its device Hessian sum H (scaled on the host as
 * gptq_hessian_get for the plan). l ← the new codes, *deq ← their dequantized weight (the
 * caller's, for the device layer); err[0/1] as in gptq_gpu_layer. */
static int quantize_linear(gptq_gpu *g, int lin, const real *wp, const float *H, long tokens,
                           const gptq_opts *o, const qlinear *rtn, qlinear *l, float **deq,
                           double err[2], double secs[GPTQ_NSECS])
{
    const llama_config *c = g->c;
    int out = fq_linear_out(c, lin), in = fq_linear_in(c, lin);
    size_t nh = (size_t)in * in, nw = (size_t)out * in;
    int bits = g->qc.w_bits;
    if (tokens < 1)
        return fq_error(F ": linear %s saw no input rows (expected the calibration windows)",
                        qlinear_names[lin]);
    float *hh = fq_malloc(sizeof(float) * nh, "Hessian");
    float *dU = NULL, *ddelta = NULL, *dwork = NULL;
    gptq_plan p;
    memset(&p, 0, sizeof p);
    int rc = FQ_ERR;
    double t0 = progress_monotonic_seconds(), t1;
    if (!hh || fq_cuda_download(g->ctx, hh, H, nh) != FQ_OK)
        goto out;
    const real k = (real)(2.0 / (double)tokens);
    if (elementwise_run(hh, NULL, NULL, (float)k, nh) != FQ_OK)
        goto out;
    if (bits == 16) { /* nothing to sweep: the weight is kept, as gptq_quantize does */
        rc = gptq_quantize_opts(l, wp, out, in, hh, bits, o);
        goto errors;
    }
    /* the factorisations on the GPU's FP64 units when cuSOLVER is there, else LAPACK */
    int gpu_factor = g->gpu_factor;
    if (gptq_plan_make_ex(&p, wp, out, in, hh, bits, o, !gpu_factor) != FQ_OK ||
        fq_cuda_alloc(&dU, nh, "GPTQ inverse Hessian factor"))
        goto out;
    if (gpu_factor && gptq_inverse_factor_cuda(g->ctx, p.Hd, in, p.damp, dU) != FQ_OK) {
        /* e.g. no memory for the float64 copy on a smaller GPU: the host can still do it */
        printf("gptq: %s: the GPU factorisation failed (%s); factorising on the host\n",
               qlinear_names[lin], fq_errmsg());
        fflush(stdout);
        gpu_factor = 0;
        if (gptq_plan_factor(&p) != FQ_OK)
            goto out;
    }
    if (!gpu_factor && fq_cuda_upload(g->ctx, dU, p.U, nh))
        goto out;
    t1 = progress_monotonic_seconds();
    secs[GPTQ_SEC_FACTOR] += t1 - t0;
    rc = gptq_plan_sweep_cuda(g->ctx, &p, dU, l);
    secs[GPTQ_SEC_SWEEP] += progress_monotonic_seconds() - t1;
errors:
    t1 = progress_monotonic_seconds();
    float *rdeq = NULL;
    if (rc == FQ_OK && (fq_cuda_alloc(&ddelta, nw, "weight error") ||
                        fq_cuda_alloc(&dwork, nw, "weight error times Hessian") ||
                        !(rdeq = dequantized(rtn)) || !(*deq = dequantized(l))))
        rc = FQ_ERR;
    if (rc == FQ_OK)
        rc = output_error(g, out, in, rdeq, wp, H, k, ddelta, dwork, &err[0]);
    if (rc == FQ_OK)
        rc = output_error(g, out, in, *deq, wp, H, k, ddelta, dwork, &err[1]);
    free(rdeq);
    secs[GPTQ_SEC_ERRORS] += progress_monotonic_seconds() - t1;
out:
    gptq_plan_free(&p);
    free(hh);
    fq_cuda_free(dU);
    fq_cuda_free(ddelta);
    fq_cuda_free(dwork);
    return rc == FQ_OK ? FQ_OK : fq_error_wrap("weight %s", qlinear_names[lin]);
}

int gptq_gpu_layer(gptq_gpu *g, qlayer *q, real *const wp[QL_NLINEAR], const gptq_opts *o,
                   double err[QL_NLINEAR][2], double secs[GPTQ_NSECS])
{
    if (!g || !q || !wp || !o || !err || !secs)
        return fq_error(F ":gptq_gpu_layer: NULL argument");
    const llama_config *c = g->c;
    for (int i = 0; i < GPTQ_NSECS; i++)
        secs[i] = 0;
    qlayer_rt rt;
    if (qlayer_rt_init(&rt, q, c) != FQ_OK)
        return FQ_ERR;
    /* not-yet-quantized linears run with W' itself */
    for (int i = 0; i < QL_NLINEAR; i++)
        memcpy(rt.w[i], wp[i], sizeof(real) * fq_linear_out(c, i) * fq_linear_in(c, i));
    qlayer_dev l;
    int rc = qlayer_dev_upload(g->ctx, &l, &rt, c);
    qlayer_rt_free(&rt);
    if (rc != FQ_OK)
        return FQ_ERR;
    for (int gi = 0; rc == FQ_OK && gi < GPTQ_NGROUPS; gi++) {
        dev_obs obs;
        memset(&obs, 0, sizeof obs);
        obs.g = g;
        for (int m = 0; rc == FQ_OK && m < gptq_group_len[gi]; m++) {
            int lin = gptq_group_lin[gi][m], in = fq_linear_in(c, lin);
            obs.stop_lin = lin;
            if (fq_cuda_alloc(&obs.H[lin], (size_t)in * in, "GPTQ Hessian") ||
                fq_cuda_fill(g->ctx, obs.H[lin], 0.0f, (size_t)in * in))
                rc = FQ_ERR;
        }
        double t0 = progress_monotonic_seconds();
        if (rc == FQ_OK)
            rc = forward_all(g, &l, &obs);
        secs[GPTQ_SEC_FORWARD] += progress_monotonic_seconds() - t0;
        for (int m = 0; rc == FQ_OK && m < gptq_group_len[gi]; m++) {
            int lin = gptq_group_lin[gi][m];
            qlinear nl;
            memset(&nl, 0, sizeof nl);
            float *deq = NULL;
            rc = quantize_linear(g, lin, wp[lin], obs.H[lin], obs.tokens[lin], o, &q->lin[lin],
                                 &nl, &deq, err[lin], secs);
            double tu = progress_monotonic_seconds();
            if (rc == FQ_OK && qlayer_dev_set_weight(g->ctx, &l, lin, deq, c))
                rc = FQ_ERR;
            secs[GPTQ_SEC_UPDATE] += progress_monotonic_seconds() - tu;
            free(deq);
            if (rc == FQ_OK) {
                qlinear_free(&q->lin[lin]);
                q->lin[lin] = nl;
            } else {
                qlinear_free(&nl);
            }
        }
        for (int i = 0; i < QL_NLINEAR; i++)
            fq_cuda_free(obs.H[i]);
    }
    /* the finished layer: the next layer's input */
    double t0 = progress_monotonic_seconds();
    if (rc == FQ_OK)
        rc = forward_all(g, &l, NULL);
    secs[GPTQ_SEC_FORWARD] += progress_monotonic_seconds() - t0;
    qlayer_dev_free(&l);
    return rc;
}

#else /* built without the CUDA backend */

struct gptq_gpu {
    int unused;
};

int gptq_gpu_init(gptq_gpu **out, fq_cuda_ctx *ctx, const llama_config *c, const qconfig *qc,
                  const rope_table *rope, const real *x, int nsamples, int seqlen, int batch)
{
    (void)ctx, (void)c, (void)qc, (void)rope, (void)x, (void)nsamples, (void)seqlen, (void)batch;
    if (out)
        *out = NULL;
    return fq_error("GPTQ pass: this flatq was built without the CUDA backend (expected nvcc "
                    "at build time, or device: cpu)");
}

void gptq_gpu_free(gptq_gpu *g)
{
    (void)g;
}

int gptq_gpu_forward(gptq_gpu *g, const qlayer_rt *rt)
{
    (void)g, (void)rt;
    return fq_error("GPTQ pass: this flatq was built without the CUDA backend");
}

int gptq_gpu_layer(gptq_gpu *g, qlayer *q, real *const wp[QL_NLINEAR], const gptq_opts *o,
                   double err[QL_NLINEAR][2], double secs[GPTQ_NSECS])
{
    (void)g, (void)q, (void)wp, (void)o, (void)err, (void)secs;
    return fq_error("GPTQ pass: this flatq was built without the CUDA backend");
}

#endif
