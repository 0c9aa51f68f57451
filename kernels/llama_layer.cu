/* llama_layer.cu — the FP decoder layer forward on the GPU, with fq_stats maxima
 * (see llama_layer_cuda.h for the idea). The op order is core/llama_capture.c's, line for
 * line, so a reader checks the two side by side.
 *
 * colmax_abs: each thread owns one column of a slab of rows and folds its local maximum
 * into mx with an integer atomicMax: for non-negative IEEE floats the bit patterns order
 * like the values, so no compare-and-swap loop is needed. NaN inputs are skipped (the CPU
 * comparison `a > mx` skips them too).
 */
#include "kernels/cuda_common.cuh"
#include "kernels/llama_layer_cuda.h"

#include <string.h>

#define F "kernels/llama_layer.cu"
#define COLMAX_ROWS 128

static __global__ void colmax_abs_kernel(float *mx, const float *x, long rows, int n)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n)
        return;
    long r0 = (long)blockIdx.y * COLMAX_ROWS, r1 = r0 + COLMAX_ROWS < rows ? r0 + COLMAX_ROWS : rows;
    float m = 0.0f;
    for (long r = r0; r < r1; r++) {
        float a = fabsf(x[r * n + j]);
        if (a > m)
            m = a;
    }
    atomicMax((int *)&mx[j], __float_as_int(m));
}

int colmax_abs_cuda(fq_cuda_ctx *ctx, float *mx, const float *x, long rows, int n)
{
    if (!ctx || !ctx->stream || !mx || !x || rows <= 0 || n <= 0)
        return fq_error(F ":colmax_abs_cuda: bad arguments (expected a context, mx, x and a "
                        "positive shape, got [%ld, %d])", rows, n);
    long slabs = (rows + COLMAX_ROWS - 1) / COLMAX_ROWS;
    if (slabs > 65535)
        return fq_error(F ":colmax_abs_cuda: %ld rows (expected at most %d)", rows,
                        65535 * COLMAX_ROWS);
    dim3 grid((unsigned)((n + FQ_BLOCK - 1) / FQ_BLOCK), (unsigned)slabs);
    colmax_abs_kernel<<<grid, FQ_BLOCK, 0, CTX_STREAM(ctx)>>>(mx, x, rows, n);
    LAUNCH_CHECK(F, "colmax_abs_cuda", "colmax_abs_kernel");
    return FQ_OK;
}

/* ---- buffers ---- */

static void layer_sizes(const llama_config *c, size_t sz[9])
{
    size_t d = (size_t)c->hidden, f = (size_t)c->intermediate,
           qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t s[9] = {d, qd * d, kvd * d, kvd * d, d * qd, d, f * d, f * d, d * f};
    for (int i = 0; i < 9; i++)
        sz[i] = s[i];
}

static float **layer_slot(llama_layer_dev *dl, int i)
{
    float **slots[9] = {&dl->attn_norm, &dl->wq, &dl->wk, &dl->wv, &dl->wo,
                        &dl->mlp_norm, &dl->wgate, &dl->wup, &dl->wdown};
    return slots[i];
}

int llama_layer_shape_check(const llama_config *c, const char *where)
{
    if (!c || c->hidden <= 0 || c->intermediate <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->head_dim <= 0 || c->n_heads % c->n_kv_heads)
        return fq_error("%s: invalid model shape (expected positive sizes and heads a "
                        "multiple of KV heads)", where);
    return FQ_OK;
}

void llama_layer_dev_free(llama_layer_dev *dl)
{
    if (!dl)
        return;
    for (int i = 0; i < 9; i++) {
        fq_cuda_free(*layer_slot(dl, i));
        *layer_slot(dl, i) = NULL;
    }
}

int llama_layer_dev_upload(fq_cuda_ctx *ctx, llama_layer_dev *dl, const llama_config *c,
                           const float *const host[9])
{
    if (!ctx || !dl || !host || llama_layer_shape_check(c, F ":llama_layer_dev_upload"))
        return fq_error(F ":llama_layer_dev_upload: bad arguments (expected a context, a layer, "
                        "a model shape and 9 host tensors)");
    memset(dl, 0, sizeof *dl);
    size_t sz[9];
    layer_sizes(c, sz);
    for (int i = 0; i < 9; i++) {
        if (!host[i] || fq_cuda_alloc(layer_slot(dl, i), sz[i], "layer weight") ||
            fq_cuda_upload(ctx, *layer_slot(dl, i), host[i], sz[i])) {
            if (!host[i])
                fq_error(F ":llama_layer_dev_upload: host tensor %d is NULL (expected 9)", i);
            llama_layer_dev_free(dl);
            return FQ_ERR;
        }
    }
    return FQ_OK;
}

void llama_scratch_dev_free(llama_scratch_dev *w)
{
    if (!w)
        return;
    float *bufs[] = {w->a, w->q, w->k, w->v, w->att, w->gate, w->up, w->probs};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        fq_cuda_free(bufs[i]);
    memset(w, 0, sizeof *w);
}

int llama_scratch_dev_init(llama_scratch_dev *w, const llama_config *c, int b, int s)
{
    if (!w || llama_layer_shape_check(c, F ":llama_scratch_dev_init") || b <= 0 || s <= 0)
        return fq_error(F ":llama_scratch_dev_init: bad arguments (expected a model shape and "
                        "b, s > 0, got %d x %d)", b, s);
    memset(w, 0, sizeof *w);
    size_t n = (size_t)b * s, d = (size_t)c->hidden, f = (size_t)c->intermediate,
           qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    if (fq_cuda_alloc(&w->a, n * d, "layer scratch (normed input)") ||
        fq_cuda_alloc(&w->q, n * qd, "layer scratch (q)") ||
        fq_cuda_alloc(&w->k, n * kvd, "layer scratch (k)") ||
        fq_cuda_alloc(&w->v, n * kvd, "layer scratch (v)") ||
        fq_cuda_alloc(&w->att, n * qd, "layer scratch (attention output)") ||
        fq_cuda_alloc(&w->gate, n * f, "layer scratch (gate)") ||
        fq_cuda_alloc(&w->up, n * f, "layer scratch (up)") ||
        fq_cuda_alloc(&w->probs, (size_t)b * c->n_heads * s * s, "attention probabilities")) {
        llama_scratch_dev_free(w);
        return FQ_ERR;
    }
    w->b = b;
    w->s = s;
    return FQ_OK;
}

void fq_stats_dev_free(fq_stats_dev *st)
{
    if (!st)
        return;
    fq_cuda_free(st->attn_in);
    fq_cuda_free(st->mlp_in);
    fq_cuda_free(st->down_in);
    memset(st, 0, sizeof *st);
}

int fq_stats_dev_init(fq_cuda_ctx *ctx, fq_stats_dev *st, const llama_config *c)
{
    if (!ctx || !st || llama_layer_shape_check(c, F ":fq_stats_dev_init"))
        return fq_error(F ":fq_stats_dev_init: bad arguments (expected a context, stats and a "
                        "model shape)");
    memset(st, 0, sizeof *st);
    st->d = c->hidden;
    st->f = c->intermediate;
    if (fq_cuda_alloc(&st->attn_in, (size_t)st->d, "attention input maxima") ||
        fq_cuda_alloc(&st->mlp_in, (size_t)st->d, "MLP input maxima") ||
        fq_cuda_alloc(&st->down_in, (size_t)st->f, "down input maxima") ||
        fq_cuda_fill(ctx, st->attn_in, 0.0f, (size_t)st->d) ||
        fq_cuda_fill(ctx, st->mlp_in, 0.0f, (size_t)st->d) ||
        fq_cuda_fill(ctx, st->down_in, 0.0f, (size_t)st->f)) {
        fq_stats_dev_free(st);
        return FQ_ERR;
    }
    return FQ_OK;
}

int fq_stats_dev_download(fq_cuda_ctx *ctx, const fq_stats_dev *st, float *attn_in,
                          float *mlp_in, float *down_in)
{
    if (!ctx || !st || !st->attn_in || !attn_in || !mlp_in || !down_in)
        return fq_error(F ":fq_stats_dev_download: bad arguments (expected initialised stats "
                        "and three host arrays)");
    if (fq_cuda_download(ctx, attn_in, st->attn_in, (size_t)st->d) ||
        fq_cuda_download(ctx, mlp_in, st->mlp_in, (size_t)st->d) ||
        fq_cuda_download(ctx, down_in, st->down_in, (size_t)st->f))
        return FQ_ERR;
    return FQ_OK;
}

/* ---- the layer ---- */

int llama_layer_fwd_cuda(fq_cuda_ctx *ctx, float *x, const llama_layer_dev *l,
                         const llama_config *c, const float *rope_cos, const float *rope_sin,
                         int b, int s, llama_scratch_dev *w, fq_stats_dev *st)
{
    if (llama_layer_shape_check(c, F ":llama_layer_fwd_cuda"))
        return FQ_ERR;
    if (!ctx || !x || !l || !l->wq || !rope_cos || !rope_sin || !w || !w->a || b <= 0 ||
        s <= 0 || b > w->b || s > w->s)
        return fq_error(F ":llama_layer_fwd_cuda: bad arguments (expected device x, weights, "
                        "rope tables and a scratch for %d x %d tokens)", b, s);
    if (st && (st->d != c->hidden || st->f != c->intermediate))
        return fq_error(F ":llama_layer_fwd_cuda: stats for [%d, %d] (expected this model's "
                        "[%d, %d])", st->d, st->f, c->hidden, c->intermediate);
    int n = b * s, d = c->hidden, f = c->intermediate, h = c->n_heads, g = c->n_kv_heads,
        dh = c->head_dim;
    float eps = (float)c->rms_eps;
    if (rmsnorm_fwd_cuda(ctx, w->a, NULL, x, l->attn_norm, n, d, eps) ||
        (st && colmax_abs_cuda(ctx, st->attn_in, w->a, n, d)) ||
        linear_fwd_cuda(ctx, w->q, w->a, l->wq, n, d, h * dh) ||
        linear_fwd_cuda(ctx, w->k, w->a, l->wk, n, d, g * dh) ||
        linear_fwd_cuda(ctx, w->v, w->a, l->wv, n, d, g * dh) ||
        rope_fwd_cuda(ctx, w->q, b, s, h, dh, rope_cos, rope_sin) ||
        rope_fwd_cuda(ctx, w->k, b, s, g, dh, rope_cos, rope_sin) ||
        attention_fwd_cuda(ctx, w->att, w->probs, w->q, w->k, w->v, b, s, h, g, dh) ||
        fq_gemm_cuda(ctx, 0, 1, n, d, h * dh, 1.0f, w->att, h * dh, l->wo, h * dh, 1.0f, x, d) ||
        rmsnorm_fwd_cuda(ctx, w->a, NULL, x, l->mlp_norm, n, d, eps) ||
        (st && colmax_abs_cuda(ctx, st->mlp_in, w->a, n, d)) ||
        linear_fwd_cuda(ctx, w->gate, w->a, l->wgate, n, d, f) ||
        linear_fwd_cuda(ctx, w->up, w->a, l->wup, n, d, f) ||
        swiglu_fwd_cuda(ctx, w->gate, w->gate, w->up, (size_t)n * f) ||
        (st && colmax_abs_cuda(ctx, st->down_in, w->gate, n, f)) ||
        fq_gemm_cuda(ctx, 0, 1, n, d, f, 1.0f, w->gate, f, l->wdown, f, 1.0f, x, d))
        return fq_error_wrap(F ":llama_layer_fwd_cuda (%d x %d tokens)", b, s);
    return FQ_OK;
}
