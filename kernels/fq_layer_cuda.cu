/* fq_layer_cuda.cu — one FlatQuant layer's training forward and backward on the GPU, the
 * twin of core/fq_layer.c (see kernels/fq_layer_cuda.h).
 *
 * The idea: the same sequence of ops as the CPU step, each replaced by its kernels/ twin
 * (llama_ops, quantizer, kron), over a device tape laid out like the CPU tape (same
 * buffer names, same aliasing when a quantizer is off), so a reader can hold the two
 * files side by side. The parameter side — factor materialisation and the fold of factor
 * gradients into Θ_U, Θ_V, λ — is core/fq_factors.c, called on the host; this file only
 * moves its slabs (M | M^{-T} up, gM | gM^{-T} down) and the scale / clip-logit slice of
 * p and g (which are contiguous: the groups after the transforms).
 *
 * What exists only here: the Wv clamp-then-rotate path's LWC clamp (one block per row, like
 * the weight quantizer), block-diagonal gathers as cudaMemcpy2D, deterministic loss sums,
 * and per-row clip-gradient reductions (no atomics, so the step is bitwise repeatable).
 * Trade-offs: the tape keeps every activation in fp32 plus the attention probabilities
 * [b, h, s, s] (4 GiB for a 70B layer at 4 × 2048 tokens); weight-side buffers W ⊘ c, W',
 * Ŵ are kept per linear so the backward recomputes nothing.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern "C" {
#include "error.h"
#include "fq_layer.h"
}
#include "kernels/cuda_common.cuh"
#include "kernels/fq_layer_cuda.h"
#include "kernels/linear_codes_cuda.h"

#define F "kernels/fq_layer_cuda.cu"
#define MAX_ALLOCS 192
#define LOSS_BLOCKS 256
/* Same meaning as core/fq_layer.c: σ(100) = 1 in fp32, "no clipping". */
#define NO_CLIP_LOGIT 100.0f

const char *const fq_prof_names[FQ_PROF_NGROUPS] = {
    "params (host)", "weight side", "GEMM (linears)", "attention", "act transforms",
    "act/KV quantizers", "norm/rope/swiglu/loss", "w LWC+quant", "channel scales"};

struct fq_tape_cuda {
    fq_cuda_ctx *ctx;
    int b, s, N, d;
    size_t nparams;
    int nfactors;
    fq_factor_mats fm;      /* host parameter side */
    float *dfac, *dgfac;    /* device M | Mi and gM | gMi, same layout as fm's slab */
    float **M, **Mi, **gM, **gMi; /* host tables of device pointers, one per factor */
    size_t pbase, pn;       /* device mirror of p[pbase, pbase + pn) (scales and clips) */
    float *dp, *dg;
    float *w[QL_NLINEAR], *gamma1, *gamma2, *rcos, *rsin;
    float *w1[QL_NLINEAR], *wp[QL_NLINEAR], *wh[QL_NLINEAR], *wsc[QL_NLINEAR];
    float *wcl, *wrot, *noclip, *gw0, *gw1, *gw2;
    /* Z = X̃·R of each Kronecker product in the forward, kept for its backward (which
     * would otherwise recompute it: one of five products); NULL where blocks (T > 1)
     * gather through the work buffers */
    float *wz[QL_NLINEAR], *zA, *zB, *zD;
    float *A, *A1, *A2, *Ah[3], *asc[3];
    float *Q, *K, *V, *V2, *Qp, *Kp, *Kh, *Vh, *ksc, *kz, *vsc, *vz;
    float *O, *O1, *Oh, *osc, *X2;
    float *Bn, *rstd2, *B1, *B2, *Bh[2], *bsc[2];
    float *Hu, *Hg, *Z, *Z1, *Z2, *Zh, *zsc;
    float *t1, *t2, *t3, *k1, *k2, *k3, *k4, *s1, *s2, *s3, *s4, *s5;
    float *work, *gat0, *gat1, *gat2, *att, *attscr, *rowg;
    double *lsum;
    /* bf16-code linears (linear_codes_cuda.h): weight and input codes per linear, the
     * input scales they pair with, a bf16 gradient copy and an fp32 accumulator; made on
     * first use. codes_mode: -1 follow ctx->math (FQ_MATH_BF16), 0 off, 1 on. */
    int codes_mode, codes_made;
    uint16_t *qw[QL_NLINEAR], *qa[QL_NLINEAR], *gyb;
    /* the forward's int8 copies of the same codes (integer tensor cores, exact int32 sums);
     * codes_i8: 1 (default) use them where the shapes allow, 0 the bf16 GEMM */
    int codes_i8;
    int8_t *qw8[QL_NLINEAR], *qa8[QL_NLINEAR];
    const float *xsc[QL_NLINEAR];
    float *cacc;
    void *allocs[MAX_ALLOCS];
    int nallocs;
    size_t bytes;
    int prof, cur;
    double last, acc[FQ_PROF_NGROUPS];
};

/* ---- small kernels that have no CPU-op twin in kernels/ ---- */

static __global__ void add_kernel(float *dst, const float *src, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] += src[i];
}

/* Row extrema and how many elements tie for them (every thread gets them). */
__device__ inline void row_minmax_block(const float *w, int n, float *sh, float *mx, float *mn,
                                        float *nmx, float *nmn)
{
    float a = -INFINITY, b = INFINITY;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        a = fmaxf(a, w[j]);
        b = fminf(b, w[j]);
    }
    *mx = block_max(a, sh);
    *mn = block_min(b, sh);
    float cx = 0.0f, cn = 0.0f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        cx += w[j] == *mx ? 1.0f : 0.0f;
        cn += w[j] == *mn ? 1.0f : 0.0f;
    }
    *nmx = block_sum(cx, sh);
    *nmn = block_sum(cn, sh);
}

/* LWC clamp alone (Wv before its output rotation): min(max(w, mn·σ(b)), mx·σ(a)). */
static __global__ void lwc_clamp_fwd_kernel(float *out, const float *w, int cols, const float *a,
                                            const float *b)
{
    __shared__ float sh[32];
    const size_t r = blockIdx.x;
    const float *wr = w + r * cols;
    float mx, mn, nmx, nmn;
    row_minmax_block(wr, cols, sh, &mx, &mn, &nmx, &nmn);
    float hi = mx * sigmoid_like_cpu(a[r]), lo = mn * sigmoid_like_cpu(b[r]);
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float p = wr[j] < lo ? lo : wr[j];
        out[r * cols + j] = p > hi ? hi : p;
    }
}

/* Its backward: clamped elements route their gradient to the bound, the bound to the clip
 * logit and to the row's extreme element(s); ga, gb accumulated. */
static __global__ void lwc_clamp_bwd_kernel(float *gw, float *ga, float *gb, const float *g,
                                            const float *w, int cols, const float *a,
                                            const float *b)
{
    __shared__ float sh[32];
    const size_t r = blockIdx.x;
    const float *wr = w + r * cols, *gr = g + r * cols;
    float *gwr = gw + r * cols;
    float mx, mn, nmx, nmn;
    row_minmax_block(wr, cols, sh, &mx, &mn, &nmx, &nmn);
    float sa = sigmoid_like_cpu(a[r]), sb = sigmoid_like_cpu(b[r]);
    float hi = mx * sa, lo = mn * sb, ghi = 0.0f, glo = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float p = wr[j];
        int from = 0;
        if (p < lo) {
            p = lo;
            from = 1;
        }
        if (p > hi)
            from = 2;
        gwr[j] = from == 0 ? gr[j] : 0.0f;
        if (from == 1)
            glo += gr[j];
        else if (from == 2)
            ghi += gr[j];
    }
    ghi = block_sum(ghi, sh);
    glo = block_sum(glo, sh);
    if (threadIdx.x == 0) {
        ga[r] += ghi * mx * sa * (1.0f - sa);
        gb[r] += glo * mn * sb * (1.0f - sb);
    }
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        if (wr[j] == mx)
            gwr[j] += ghi * sa / nmx;
        if (wr[j] == mn)
            gwr[j] += glo * sb / nmn;
    }
}

/* Σ (y − t)² in double: fixed grid, fixed per-thread stride, fixed tree → same bits. */
static __global__ void mse_partial_kernel(double *part, const float *y, const float *t, size_t n)
{
    __shared__ double sh[FQ_BLOCK];
    double acc = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        double e = (double)y[i] - (double)t[i];
        acc += e * e;
    }
    sh[threadIdx.x] = acc;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o)
            sh[threadIdx.x] += sh[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        part[blockIdx.x] = sh[0];
}

static __global__ void mse_final_kernel(double *part, int nb)
{
    double acc = 0.0;
    for (int i = 0; i < nb; i++)
        acc += part[i];
    part[nb] = acc;
}

static __global__ void loss_seed_kernel(float *g, const float *y, const float *t, double k,
                                        size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        g[i] = (float)(k * ((double)y[i] - (double)t[i]));
}

/* ---- helpers ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Charge the time since the last boundary to the running group; `group` runs next. */
static void prof(fq_tape_cuda *tp, int group)
{
    if (!tp->prof)
        return;
    cudaStreamSynchronize(CTX_STREAM(tp->ctx));
    double t = now_s();
    tp->acc[tp->cur] += t - tp->last;
    tp->last = t;
    tp->cur = group;
}

void fq_tape_cuda_profile(fq_tape_cuda *tp, int on)
{
    if (!tp)
        return;
    if (on && !tp->prof) {
        cudaStreamSynchronize(CTX_STREAM(tp->ctx));
        memset(tp->acc, 0, sizeof tp->acc);
        tp->last = now_s();
        tp->cur = FQ_PROF_OTHER;
    }
    tp->prof = on;
}

void fq_tape_cuda_profile_read(const fq_tape_cuda *tp, double secs[FQ_PROF_NGROUPS])
{
    for (int i = 0; i < FQ_PROF_NGROUPS; i++)
        secs[i] = tp ? tp->acc[i] : 0.0;
}

static float *dbuf(fq_tape_cuda *tp, size_t n, const char *what)
{
    float *p;
    if (tp->nallocs >= MAX_ALLOCS) {
        fq_error(F ":fq_tape_cuda_create: too many buffers (expected at most %d)", MAX_ALLOCS);
        return NULL;
    }
    if (fq_cuda_alloc(&p, n ? n : 1, what))
        return NULL;
    tp->allocs[tp->nallocs++] = p;
    tp->bytes += (n ? n : 1) * sizeof(float);
    return p;
}

static float *dpar(const fq_tape_cuda *tp, size_t off) { return tp->dp + (off - tp->pbase); }
static float *dgrad(const fq_tape_cuda *tp, size_t off) { return tp->dg + (off - tp->pbase); }

/* ---- linears on bf16 codes ---- */

static int gemm(fq_tape_cuda *tp, int ta, int tb, int m, int n, int k, float alpha,
                const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);

/* Whether linear lin runs on codes this step: asked for, both operands quantized by
 * per-row scales (one block per row), and the integer sums exact in fp32. */
static int codes_on(const fq_tape_cuda *tp, const fq_params *P, int lin)
{
    const int want = tp->codes_mode < 0 ? tp->ctx->math == FQ_MATH_BF16 : tp->codes_mode;
    const int blocks = lin == QL_O || lin == QL_DOWN ? P->T : 1;
    return want && P->a_bits != 16 && P->w_bits != 16 && blocks == 1 &&
           codes_gemm_exact(P->a_bits, P->w_bits, fq_linear_in(&P->cfg, lin));
}

static int codes_make(fq_tape_cuda *tp, const fq_params *P)
{
    if (tp->codes_made)
        return FQ_OK;
    size_t most = 1, in_most = 1;
    for (int lin = 0; lin < QL_NLINEAR; lin++) {
        const size_t out = (size_t)fq_linear_out(&P->cfg, lin), in = fq_linear_in(&P->cfg, lin);
        /* two bf16 per float slot */
        if (!(tp->qw[lin] = (uint16_t *)dbuf(tp, (out * in + 1) / 2, "weight codes (bf16)")) ||
            !(tp->qa[lin] = (uint16_t *)dbuf(tp, ((size_t)tp->N * in + 1) / 2,
                                             "input codes (bf16)")))
            return FQ_ERR;
        /* four int8 per float slot */
        if (tp->codes_i8 &&
            (!(tp->qw8[lin] = (int8_t *)dbuf(tp, (out * in + 3) / 4, "weight codes (int8)")) ||
             !(tp->qa8[lin] = (int8_t *)dbuf(tp, ((size_t)tp->N * in + 3) / 4,
                                             "input codes (int8)"))))
            return FQ_ERR;
        most = out > most ? out : most;
        in_most = in > in_most ? in : in_most;
    }
    most = most > in_most ? most : in_most;
    if (!(tp->gyb = (uint16_t *)dbuf(tp, ((size_t)tp->N * most + 1) / 2, "gradient (bf16)")) ||
        !(tp->cacc = dbuf(tp, (size_t)tp->N * P->cfg.hidden, "code GEMM accumulator")))
        return FQ_ERR;
    tp->codes_made = 1;
    return FQ_OK;
}

int fq_tape_cuda_set_linear_codes_i8(fq_tape_cuda *tp, int on)
{
    if (!tp || on < 0 || on > 1)
        return fq_error(F ":fq_tape_cuda_set_linear_codes_i8: %s (expected a tape and 0 or 1)",
                        tp ? "bad value" : "NULL tape");
    if (on && tp->codes_made && !tp->qw8[0])
        return fq_error(F ":fq_tape_cuda_set_linear_codes_i8: the code buffers were made "
                        "without int8 copies (expected the switch before the first step)");
    tp->codes_i8 = on;
    return FQ_OK;
}

int fq_tape_cuda_set_linear_codes(fq_tape_cuda *tp, int mode)
{
    if (!tp || mode < -1 || mode > 1)
        return fq_error(F ":fq_tape_cuda_set_linear_codes: %s (expected a tape and -1, 0 or 1)",
                        tp ? "bad mode" : "NULL tape");
    tp->codes_mode = mode;
    return FQ_OK;
}

/* y = X̂·Ŵᵀ (+ y when accumulate) for linear lin, X̂ = xh [N, in] with per-row scales xsc. */
static int linear_fwd(fq_tape_cuda *tp, const fq_params *P, int lin, const float *xh,
                      const float *xsc, float *y, int accumulate)
{
    const int out = fq_linear_out(&P->cfg, lin), in = fq_linear_in(&P->cfg, lin), N = tp->N;
    if (!codes_on(tp, P, lin))
        return gemm(tp, 0, 1, N, out, in, 1.0f, xh, in, tp->wh[lin], in,
                    accumulate ? 1.0f : 0.0f, y, out);
    float *acc = accumulate ? tp->cacc : y;
    tp->xsc[lin] = xsc;
    /* int8 copies of the codes for the integer tensor cores where the shapes allow; their
     * int32 sums go into the accumulator's (or y's) bytes, converted in place */
    const int i8 = tp->codes_i8 && in % 4 == 0;
    if (codes_make(tp, P) ||
        codes_bf16_cuda(tp->ctx, tp->qw[lin], i8 ? tp->qw8[lin] : NULL, tp->wh[lin],
                        tp->wsc[lin], out, in) ||
        codes_bf16_cuda(tp->ctx, tp->qa[lin], i8 ? tp->qa8[lin] : NULL, xh, xsc, N, in))
        return fq_error_wrap(F ":linear_fwd: %s codes", qlinear_names[lin]);
    int rc = i8 ? fq_gemm_i8_cuda(tp->ctx, N, out, in, tp->qa8[lin], in, tp->qw8[lin], in,
                                  (int32_t *)acc, out) ||
                      codes_epilogue_i32_cuda(tp->ctx, y, (const int32_t *)acc, xsc,
                                              tp->wsc[lin], N, out, accumulate)
                : fq_gemm_bf16_cuda(tp->ctx, 0, 1, N, out, in, tp->qa[lin], in, tp->qw[lin], in,
                                    acc, out) ||
                      codes_epilogue_cuda(tp->ctx, y, acc, xsc, tp->wsc[lin], N, out,
                                          accumulate);
    if (rc)
        return fq_error_wrap(F ":linear_fwd: %s on %s codes", qlinear_names[lin],
                             i8 ? "int8" : "bf16");
    return FQ_OK;
}

static int dcopy(fq_tape_cuda *tp, float *dst, const float *src, size_t n, const char *where)
{
    CU_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice,
                             CTX_STREAM(tp->ctx)), F, where, "cudaMemcpyAsync");
    return FQ_OK;
}

static int dzero(fq_tape_cuda *tp, float *dst, size_t n, const char *where)
{
    CU_CHECK(cudaMemsetAsync(dst, 0, n * sizeof(float), CTX_STREAM(tp->ctx)), F, where,
             "cudaMemsetAsync");
    return FQ_OK;
}

static int dadd(fq_tape_cuda *tp, float *dst, const float *src, size_t n)
{
    add_kernel<<<fq_grid(n, FQ_BLOCK), FQ_BLOCK, 0, CTX_STREAM(tp->ctx)>>>(dst, src, n);
    LAUNCH_CHECK(F, "dadd", "add_kernel");
    return FQ_OK;
}

static int gemm(fq_tape_cuda *tp, int ta, int tb, int m, int n, int k, float alpha,
                const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    return fq_gemm_cuda(tp->ctx, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void fq_tape_cuda_free(fq_tape_cuda *tp)
{
    if (!tp)
        return;
    for (int i = 0; i < tp->nallocs; i++)
        fq_cuda_free(tp->allocs[i]);
    fq_cuda_free(tp->lsum);
    fq_factor_mats_free(&tp->fm);
    free(tp->M);
    free(tp);
}

size_t fq_tape_cuda_bytes(const fq_tape_cuda *tp) { return tp ? tp->bytes : 0; }

static long lmax(long a, long b) { return a > b ? a : b; }

int fq_tape_cuda_create(fq_tape_cuda **out, fq_cuda_ctx *ctx, const fq_params *P,
                        const llama_layer *l, const rope_table *rope, int b, int s)
{
    if (!out || !ctx || !ctx->stream || !P || !P->p || !l || !rope || b <= 0 || s <= 0)
        return fq_error(F ":fq_tape_cuda_create: invalid arguments (expected an initialised "
                        "context, params, layer, rope table and a positive batch %d x %d)", b,
                        s);
    *out = NULL;
    const llama_config *c = &P->cfg;
    if (rope->seqlen < s || rope->head_dim != c->head_dim)
        return fq_error(F ":fq_tape_cuda_create: rope table for %d positions of dim %d "
                        "(expected >= %d positions of dim %d)", rope->seqlen, rope->head_dim,
                        s, c->head_dim);
    for (int i = 0; i < QL_NLINEAR; i++)
        if (!fq_layer_weight(l, i))
            return fq_error(F ":fq_tape_cuda_create: layer weight %s is NULL (expected all "
                            "seven)", qlinear_names[i]);
    if (!l->attn_norm || !l->mlp_norm)
        return fq_error(F ":fq_tape_cuda_create: layer norm weight is NULL");
    const long N = (long)b * s, d = c->hidden, f = c->intermediate,
               qd = (long)c->n_heads * c->head_dim, kd = (long)c->n_kv_heads * c->head_dim;
    const int nf = P->nfactors, g = c->n_kv_heads, dh = c->head_dim;
    fq_tape_cuda *tp = (fq_tape_cuda *)fq_calloc(1, sizeof *tp, "GPU calibration tape");
    if (!tp)
        return FQ_ERR;
    tp->ctx = ctx;
    tp->codes_mode = -1;
    tp->codes_i8 = 1;
    tp->b = b;
    tp->s = s;
    tp->N = (int)N;
    tp->d = (int)d;
    tp->nparams = P->n;
    tp->nfactors = nf;
    tp->pbase = P->group_off[FQ_G_SCALE];
    tp->pn = P->n - tp->pbase;
    if (fq_factor_mats_create(&tp->fm, P) ||
        !(tp->M = (float **)fq_calloc(4 * (size_t)nf, sizeof(float *), "factor table")))
        goto fail;
    tp->Mi = tp->M + nf;
    tp->gM = tp->M + 2 * nf;
    tp->gMi = tp->M + 3 * nf;
    {
        const size_t tot = tp->fm.total;
        if (!(tp->dfac = dbuf(tp, 2 * tot, "factor matrices")) ||
            !(tp->dgfac = dbuf(tp, 2 * tot, "factor gradients")) ||
            !(tp->dp = dbuf(tp, tp->pn, "scales and clip logits")) ||
            !(tp->dg = dbuf(tp, tp->pn, "scale and clip gradients")))
            goto fail;
        for (int i = 0; i < nf; i++) {
            size_t off = (size_t)(tp->fm.M[i] - tp->fm.M[0]);
            tp->M[i] = tp->dfac + off;
            tp->Mi[i] = tp->dfac + tot + off;
            tp->gM[i] = tp->dgfac + off;
            tp->gMi[i] = tp->dgfac + tot + off;
        }
    }
    {
        const int w16 = P->w_bits == 16, a16 = P->a_bits == 16, kv16 = P->kv_bits == 16;
        const int vrot = !P->separate_vtrans;
        long wmax = 0;
        for (int lin = 0; lin < QL_NLINEAR; lin++) {
            long o = fq_linear_out(c, lin), in = fq_linear_in(c, lin), n = o * in;
            wmax = lmax(wmax, n);
            if (!(tp->w[lin] = dbuf(tp, (size_t)n, "layer weight")) ||
                fq_cuda_upload(ctx, tp->w[lin], fq_layer_weight(l, lin), (size_t)n))
                goto fail;
            fq_weight_side ws;
            fq_weight_side_of(P, lin, &ws);
            if (ws.T == 1 && !(tp->wz[lin] = dbuf(tp, (size_t)n, "weight-side X·R")))
                goto fail;
            if (lin != QL_O && !(tp->w1[lin] = dbuf(tp, (size_t)n, "weight / c")))
                goto fail;
            if (!(tp->wp[lin] = dbuf(tp, (size_t)n, "transformed weight")) ||
                !(tp->wsc[lin] = dbuf(tp, (size_t)o, "weight scales")))
                goto fail;
            if (lin == QL_V && vrot) {
                if (w16)
                    tp->wcl = tp->wp[lin];
                else if (!(tp->wcl = dbuf(tp, (size_t)n, "clipped Wv")))
                    goto fail;
                if (!(tp->wrot = dbuf(tp, (size_t)n, "rotated Wv")))
                    goto fail;
                if (w16)
                    tp->wh[lin] = tp->wrot;
                else if (!(tp->wh[lin] = dbuf(tp, (size_t)n, "quantized weight")))
                    goto fail;
            } else if (w16) {
                tp->wh[lin] = tp->wp[lin];
            } else if (!(tp->wh[lin] = dbuf(tp, (size_t)n, "quantized weight"))) {
                goto fail;
            }
        }
        long widest = lmax(d, lmax(f, qd));
        if (!(tp->noclip = dbuf(tp, (size_t)widest, "no-clip logits")) ||
            fq_cuda_fill(ctx, tp->noclip, NO_CLIP_LOGIT, (size_t)widest) ||
            !(tp->gw0 = dbuf(tp, (size_t)wmax, "weight gradient")) ||
            !(tp->gw1 = dbuf(tp, (size_t)wmax, "weight gradient")) ||
            !(tp->gw2 = dbuf(tp, (size_t)wmax, "weight gradient")) ||
            !(tp->gamma1 = dbuf(tp, (size_t)d, "norm weight")) ||
            !(tp->gamma2 = dbuf(tp, (size_t)d, "norm weight")) ||
            fq_cuda_upload(ctx, tp->gamma1, l->attn_norm, (size_t)d) ||
            fq_cuda_upload(ctx, tp->gamma2, l->mlp_norm, (size_t)d) ||
            !(tp->rcos = dbuf(tp, (size_t)s * dh / 2, "rope cos")) ||
            !(tp->rsin = dbuf(tp, (size_t)s * dh / 2, "rope sin")) ||
            fq_cuda_upload(ctx, tp->rcos, rope->cos, (size_t)s * dh / 2) ||
            fq_cuda_upload(ctx, tp->rsin, rope->sin, (size_t)s * dh / 2))
            goto fail;
#define TAKE(ptr, n, what)                                                                       \
    do {                                                                                         \
        if (!((ptr) = dbuf(tp, (size_t)(n), what)))                                              \
            goto fail;                                                                           \
    } while (0)
        TAKE(tp->A, N * d, "activation");
        TAKE(tp->A1, N * d, "activation");
        TAKE(tp->A2, N * d, "activation");
        TAKE(tp->zA, N * d, "activation X·R");
        TAKE(tp->zB, N * d, "activation X·R");
        if (P->T == 1)
            TAKE(tp->zD, N * f, "activation X·R");
        for (int i = 0; i < 3; i++) {
            if (a16)
                tp->Ah[i] = tp->A2;
            else
                TAKE(tp->Ah[i], N * d, "activation");
            TAKE(tp->asc[i], N, "scales");
        }
        TAKE(tp->Q, N * qd, "activation");
        TAKE(tp->K, N * kd, "activation");
        TAKE(tp->V, N * kd, "activation");
        if (P->separate_vtrans)
            TAKE(tp->V2, N * kd, "activation");
        TAKE(tp->Qp, N * qd, "activation");
        TAKE(tp->Kp, N * kd, "activation");
        float *vin = P->separate_vtrans ? tp->V2 : tp->V;
        if (kv16) {
            tp->Kh = tp->Kp;
            tp->Vh = vin;
        } else {
            TAKE(tp->Kh, N * kd, "activation");
            TAKE(tp->Vh, N * kd, "activation");
        }
        TAKE(tp->ksc, N * g, "scales");
        TAKE(tp->kz, N * g, "zero points");
        TAKE(tp->vsc, N * g, "scales");
        TAKE(tp->vz, N * g, "zero points");
        TAKE(tp->O, N * qd, "activation");
        TAKE(tp->O1, N * qd, "activation");
        if (a16)
            tp->Oh = tp->O1;
        else
            TAKE(tp->Oh, N * qd, "activation");
        TAKE(tp->osc, N * P->T, "scales");
        TAKE(tp->X2, N * d, "activation");
        TAKE(tp->Bn, N * d, "activation");
        TAKE(tp->rstd2, N, "rms factors");
        TAKE(tp->B1, N * d, "activation");
        TAKE(tp->B2, N * d, "activation");
        for (int i = 0; i < 2; i++) {
            if (a16)
                tp->Bh[i] = tp->B2;
            else
                TAKE(tp->Bh[i], N * d, "activation");
            TAKE(tp->bsc[i], N, "scales");
        }
        TAKE(tp->Hu, N * f, "activation");
        TAKE(tp->Hg, N * f, "activation");
        TAKE(tp->Z, N * f, "activation");
        TAKE(tp->Z1, N * f, "activation");
        TAKE(tp->Z2, N * f, "activation");
        if (a16)
            tp->Zh = tp->Z2;
        else
            TAKE(tp->Zh, N * f, "activation");
        TAKE(tp->zsc, N * P->T, "scales");
        long big = N * lmax(f, qd);
        TAKE(tp->t1, big, "backward scratch");
        TAKE(tp->t2, big, "backward scratch");
        TAKE(tp->t3, big, "backward scratch");
        TAKE(tp->k1, N * kd, "backward scratch");
        TAKE(tp->k2, N * kd, "backward scratch");
        TAKE(tp->k3, N * kd, "backward scratch");
        TAKE(tp->k4, N * kd, "backward scratch");
        TAKE(tp->s1, N * d, "backward scratch");
        TAKE(tp->s2, N * d, "backward scratch");
        TAKE(tp->s3, N * d, "backward scratch");
        TAKE(tp->s4, N * d, "backward scratch");
        TAKE(tp->s5, N * d, "backward scratch");
        long rowsn = lmax(N * widest, wmax);
        TAKE(tp->work, 2 * rowsn, "transform work");
        if (P->T > 1) {
            TAKE(tp->gat0, rowsn, "block gather");
            TAKE(tp->gat1, rowsn, "block gather");
            TAKE(tp->gat2, rowsn, "block gather");
        }
        TAKE(tp->att, (long)b * c->n_heads * s * s, "attention probabilities");
        TAKE(tp->attscr, (long)b * s * s, "attention scratch");
        TAKE(tp->rowg, 2 * N * lmax(P->T, g), "clip gradient rows");
#undef TAKE
    }
    if (cudaMalloc((void **)&tp->lsum, sizeof(double) * (LOSS_BLOCKS + 1)) != cudaSuccess) {
        (void)cudaGetLastError();
        tp->lsum = NULL;
        fq_error(F ":fq_tape_cuda_create: cannot allocate the loss partial sums");
        goto fail;
    }
    if (fq_cuda_sync(ctx))
        goto fail;
    *out = tp;
    return FQ_OK;
fail:
    fq_tape_cuda_free(tp);
    return fq_error_wrap(F ":fq_tape_cuda_create: %d x %d tokens", b, s);
}

/* ---- block-diagonal transforms (as core/fq_layer.c's blk_*) ----
 * Rows of length T·n1·n2; block t uses L = Lm[lb + ls·t], R = Rm[rb + rs·t]; Rm NULL means
 * the head transform (R = I). */
typedef struct {
    float *const *Lm, *const *Rm, *const *gLm, *const *gRm;
    int lb, ls, rb, rs;
} blk_factors;

static int cols_copy(fq_tape_cuda *tp, float *dst, size_t dpitch, const float *src,
                     size_t spitch, int nb, long rows)
{
    CU_CHECK(cudaMemcpy2DAsync(dst, dpitch * sizeof(float), src, spitch * sizeof(float),
                               (size_t)nb * sizeof(float), (size_t)rows,
                               cudaMemcpyDeviceToDevice, CTX_STREAM(tp->ctx)),
             F, "block gather", "cudaMemcpy2DAsync");
    return FQ_OK;
}

/* z: where to keep Z = X̃·R for the backward (NULL: the work buffer) */
static int one_fwd(fq_tape_cuda *tp, float *y, const float *x, int rows, int n1, int n2,
                   const float *L, const float *R, float *z)
{
    if (!R)
        return head_transform_fwd_cuda(tp->ctx, y, x, rows, n1, n2, L, tp->work);
    return z ? kron_fwd_z_cuda(tp->ctx, y, z, x, rows, n1, n2, L, R)
             : kron_fwd_cuda(tp->ctx, y, x, rows, n1, n2, L, R, tp->work);
}

/* z: as one_fwd's, used when T == 1 */
static int blk_fwd(fq_tape_cuda *tp, float *y, const float *x, int rows, int T, int n1, int n2,
                   const blk_factors *bf, float *z)
{
    const int nb = n1 * n2, width = T * nb;
    for (int t = 0; t < T; t++) {
        const float *L = bf->Lm[bf->lb + bf->ls * t];
        const float *R = bf->Rm ? bf->Rm[bf->rb + bf->rs * t] : NULL;
        if (T == 1)
            return one_fwd(tp, y, x, rows, n1, n2, L, R, z);
        if (cols_copy(tp, tp->gat0, nb, x + (size_t)t * nb, width, nb, rows) ||
            one_fwd(tp, tp->gat1, tp->gat0, rows, n1, n2, L, R, NULL) ||
            cols_copy(tp, y + (size_t)t * nb, width, tp->gat1, nb, nb, rows))
            return FQ_ERR;
    }
    return FQ_OK;
}

/* z: the forward's Z = X̃·R (NULL: recomputed) */
static int one_bwd(fq_tape_cuda *tp, float *gx, float *gL, float *gR, const float *gy,
                   const float *x, int rows, int n1, int n2, const float *L, const float *R,
                   const float *z)
{
    return R ? kron_bwd_z_cuda(tp->ctx, gx, gL, gR, gy, x, z, rows, n1, n2, L, R, tp->work)
             : head_transform_bwd_cuda(tp->ctx, gx, gL, gy, x, rows, n1, n2, L, tp->work);
}

/* gx written (may be NULL); factor gradients accumulated; z as blk_fwd's. */
static int blk_bwd(fq_tape_cuda *tp, float *gx, const float *gy, const float *x, int rows,
                   int T, int n1, int n2, const blk_factors *bf, const float *z)
{
    const int nb = n1 * n2, width = T * nb;
    for (int t = 0; t < T; t++) {
        const float *L = bf->Lm[bf->lb + bf->ls * t];
        const float *R = bf->Rm ? bf->Rm[bf->rb + bf->rs * t] : NULL;
        float *gL = bf->gLm[bf->lb + bf->ls * t];
        float *gR = bf->Rm ? bf->gRm[bf->rb + bf->rs * t] : NULL;
        if (T == 1)
            return one_bwd(tp, gx, gL, gR, gy, x, rows, n1, n2, L, R, z);
        if (cols_copy(tp, tp->gat0, nb, gy + (size_t)t * nb, width, nb, rows) ||
            cols_copy(tp, tp->gat1, nb, x + (size_t)t * nb, width, nb, rows) ||
            one_bwd(tp, gx ? tp->gat2 : NULL, gL, gR, tp->gat0, tp->gat1, rows, n1, n2, L, R,
                    NULL))
            return FQ_ERR;
        if (gx && cols_copy(tp, gx + (size_t)t * nb, width, tp->gat2, nb, nb, rows))
            return FQ_ERR;
    }
    return FQ_OK;
}

static void weight_factors(const fq_tape_cuda *tp, const fq_weight_side *ws, blk_factors *bf)
{
    memset(bf, 0, sizeof *bf);
    bf->Lm = bf->Rm = tp->Mi;
    bf->gLm = bf->gRm = tp->gMi;
    bf->lb = ws->lb;
    bf->ls = ws->ls;
    bf->rb = ws->rb;
    bf->rs = ws->rs;
}

/* Wv's output side: per KV head ν, out_ν = M_vᵀ·W_ν on its [dh, in] row block. */
static int vrot_fwd(fq_tape_cuda *tp, float *out, const float *w, int g, int dh, int in,
                    const float *Mv)
{
    const long long st = (long long)dh * in;
    return fq_gemm_strided_exact_cuda(tp->ctx, 1, 0, dh, in, dh, 1.0f, Mv, dh, 0, w, in, st,
                                      0.0f, out, in, st, g, "vrot_fwd");
}

static int vrot_bwd(fq_tape_cuda *tp, float *gw, float *gMv, const float *gout, const float *w,
                    int g, int dh, int in, const float *Mv)
{
    const long long st = (long long)dh * in;
    if (fq_gemm_strided_exact_cuda(tp->ctx, 0, 0, dh, in, dh, 1.0f, Mv, dh, 0, gout, in, st,
                                   0.0f, gw, in, st, g, "vrot_bwd"))
        return FQ_ERR;
    for (int v = 0; v < g; v++) {
        size_t o = (size_t)v * dh * in;
        if (fq_gemm_strided_exact_cuda(tp->ctx, 0, 1, dh, dh, in, 1.0f, w + o, in, 0, gout + o,
                                       in, 0, 1.0f, gMv, dh, 0, 1, "vrot_bwd"))
            return FQ_ERR;
    }
    return FQ_OK;
}

/* ---- forward ---- */

/* The host parameter side, then its results onto the device. */
static int params_fwd(fq_tape_cuda *tp, const fq_params *P)
{
    if (fq_factors_fwd(&tp->fm, P) ||
        fq_cuda_upload(tp->ctx, tp->dfac, tp->fm.M[0], 2 * tp->fm.total) ||
        fq_cuda_upload(tp->ctx, tp->dp, P->p + tp->pbase, tp->pn))
        return FQ_ERR;
    return FQ_OK;
}

/* tp->wp[lin] = the Kronecker product of inverse transposes applied to W ⊘ c: the weight
 * side up to the clip, for the training forward and for the merge alike */
static int weight_transform(fq_tape_cuda *tp, const fq_params *P, int lin)
{
    const llama_config *c = &P->cfg;
    const int out = fq_linear_out(c, lin), in = fq_linear_in(c, lin);
    fq_weight_side ws;
    fq_weight_side_of(P, lin, &ws);
    blk_factors bf;
    weight_factors(tp, &ws, &bf);
    const float *src = tp->w[lin];
    if (ws.c_off != FQ_NO_SCALE) {
        prof(tp, FQ_PROF_CHSCALE);
        if (chscale_weight_fwd_cuda(tp->ctx, tp->w1[lin], src, dpar(tp, ws.c_off), out, in))
            return FQ_ERR;
        src = tp->w1[lin];
    }
    prof(tp, FQ_PROF_WEIGHTS);
    return blk_fwd(tp, tp->wp[lin], src, out, ws.T, ws.n1, ws.n2, &bf, tp->wz[lin]);
}

static int weight_fwd(fq_tape_cuda *tp, const fq_params *P, int lin)
{
    const llama_config *c = &P->cfg;
    const int out = fq_linear_out(c, lin), in = fq_linear_in(c, lin);
    if (weight_transform(tp, P, lin))
        return FQ_ERR;
    const float *a = dpar(tp, P->lwc_a[lin]), *b = dpar(tp, P->lwc_b[lin]);
    prof(tp, FQ_PROF_WQUANT);
    if (lin == QL_V && !P->separate_vtrans) {
        if (P->w_bits != 16) {
            lwc_clamp_fwd_kernel<<<out, FQ_BLOCK, 0, CTX_STREAM(tp->ctx)>>>(tp->wcl, tp->wp[lin],
                                                                            in, a, b);
            LAUNCH_CHECK(F, "weight_fwd", "lwc_clamp_fwd_kernel");
        }
        prof(tp, FQ_PROF_WEIGHTS);
        if (vrot_fwd(tp, tp->wrot, tp->wcl, c->n_kv_heads, c->head_dim, in, tp->M[FQ_F_MV]))
            return FQ_ERR;
        prof(tp, FQ_PROF_WQUANT);
        if (P->w_bits != 16 &&
            quant_weight_lwc_fwd_cuda(tp->ctx, tp->wh[lin], tp->wsc[lin], tp->wrot, out, in,
                                      P->w_bits, tp->noclip, tp->noclip))
            return FQ_ERR;
    } else if (P->w_bits != 16 &&
               quant_weight_lwc_fwd_cuda(tp->ctx, tp->wh[lin], tp->wsc[lin], tp->wp[lin], out,
                                         in, P->w_bits, a, b)) {
        return FQ_ERR;
    }
    return FQ_OK;
}

static int act_q(fq_tape_cuda *tp, const fq_params *P, float *out, float *sc, const float *in,
                 int rows, int k, int blocks, int lin)
{
    if (P->a_bits == 16)
        return FQ_OK; /* out aliases in (set up by fq_tape_cuda_create) */
    const real *cl = P->p + P->lac[lin];
    return quant_act_sym_fwd_cuda(tp->ctx, out, sc, in, rows, k, blocks, P->a_bits,
                                  (float)cl[0], (float)cl[1]);
}

/* The activation side's channel scales, charged to their own profile group. */
static int act_chscale_fwd(fq_tape_cuda *tp, float *y, const float *x, const float *c,
                           int rows, int n)
{
    prof(tp, FQ_PROF_CHSCALE);
    int rc = chscale_act_fwd_cuda(tp->ctx, y, x, c, rows, n);
    prof(tp, FQ_PROF_TRANSFORMS);
    return rc;
}

static int act_chscale_bwd(fq_tape_cuda *tp, float *g_x, float *g_c, const float *g_y,
                           const float *x, const float *c, int rows, int n)
{
    prof(tp, FQ_PROF_CHSCALE);
    int rc = chscale_act_bwd_cuda(tp->ctx, g_x, g_c, g_y, x, c, rows, n);
    prof(tp, FQ_PROF_TRANSFORMS);
    return rc;
}

static int check_call(const fq_tape_cuda *tp, const fq_params *P, const void *x, const void *y,
                      const char *fn)
{
    if (!tp || !P || !P->p || !x || !y)
        return fq_error(F ":%s: NULL argument (expected tape, params, input and output)", fn);
    if (tp->nparams != P->n || tp->nfactors != P->nfactors)
        return fq_error(F ":%s: tape was made for other params (expected the tape of these "
                        "params)", fn);
    return FQ_OK;
}

/* Rows of w [rows, cols] times c[r]: Wup's rows ∘ c_d, which the merge folds in after the
 * clip (the training forward applies c_d to the down_proj input instead). */
static __global__ void row_scale_kernel(float *w, const float *c, int cols)
{
    const size_t r = blockIdx.x;
    const float s = c[r];
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        w[r * cols + j] *= s;
}

int fq_tape_cuda_merged_weights(fq_tape_cuda *tp, const fq_params *P, float *const w[QL_NLINEAR])
{
    if (check_call(tp, P, w, w, "fq_tape_cuda_merged_weights"))
        return FQ_ERR;
    for (int lin = 0; lin < QL_NLINEAR; lin++)
        if (!w[lin])
            return fq_error(F ":fq_tape_cuda_merged_weights: host buffer of %s is NULL "
                            "(expected [out, in] floats)", qlinear_names[lin]);
    const llama_config *c = &P->cfg;
    cudaStream_t st = CTX_STREAM(tp->ctx);
    if (params_fwd(tp, P))
        return FQ_ERR;
    for (int lin = 0; lin < QL_NLINEAR; lin++) {
        const int out = fq_linear_out(c, lin), in = fq_linear_in(c, lin);
        if (weight_transform(tp, P, lin))
            return FQ_ERR;
        float *res = tp->wp[lin];
        if (P->w_bits != 16) { /* in place: each row's bounds are known before it is written */
            lwc_clamp_fwd_kernel<<<out, FQ_BLOCK, 0, st>>>(res, res, in, dpar(tp, P->lwc_a[lin]),
                                                          dpar(tp, P->lwc_b[lin]));
            LAUNCH_CHECK(F, "fq_tape_cuda_merged_weights", "lwc_clamp_fwd_kernel");
        }
        if (lin == QL_V && !P->separate_vtrans) {
            if (vrot_fwd(tp, tp->wrot, res, c->n_kv_heads, c->head_dim, in, tp->M[FQ_F_MV]))
                return FQ_ERR;
            res = tp->wrot;
        }
        if (lin == QL_UP) {
            row_scale_kernel<<<out, FQ_BLOCK, 0, st>>>(res, dpar(tp, P->c_d), in);
            LAUNCH_CHECK(F, "fq_tape_cuda_merged_weights", "row_scale_kernel");
        }
        if (fq_cuda_download(tp->ctx, w[lin], res, (size_t)out * in))
            return FQ_ERR;
    }
    return FQ_OK;
}

int fq_layer_fwd_cuda(fq_tape_cuda *tp, const fq_params *P, const float *x, float *y)
{
    if (check_call(tp, P, x, y, "fq_layer_fwd_cuda"))
        return FQ_ERR;
    fq_cuda_ctx *ctx = tp->ctx;
    const llama_config *c = &P->cfg;
    const int N = tp->N, b = tp->b, s = tp->s, d = c->hidden, f = c->intermediate,
              h = c->n_heads, g = c->n_kv_heads, dh = c->head_dim, qd = h * dh, T = P->T;
    const float eps = (float)c->rms_eps;
    int lin_of[3] = {QL_Q, QL_K, QL_V};
    float *proj[3] = {tp->Q, tp->K, tp->V};
    blk_factors bf;
    const float *vin;

    prof(tp, FQ_PROF_PARAMS);
    if (params_fwd(tp, P))
        goto fail;
    prof(tp, FQ_PROF_WEIGHTS);
    for (int lin = 0; lin < QL_NLINEAR; lin++)
        if (weight_fwd(tp, P, lin))
            return fq_error_wrap(F ":fq_layer_fwd_cuda: weight %s", qlinear_names[lin]);
    /* 1–3: RMSNorm1, ∘ c_a, Kron(L_a, R_a), three input quantizations */
    prof(tp, FQ_PROF_OTHER);
    if (rmsnorm_fwd_cuda(ctx, tp->A, NULL, x, tp->gamma1, N, d, eps))
        goto fail;
    prof(tp, FQ_PROF_TRANSFORMS);
    if (act_chscale_fwd(tp, tp->A1, tp->A, dpar(tp, P->c_a), N, d) ||
        kron_fwd_z_cuda(ctx, tp->A2, tp->zA, tp->A1, N, P->na1, P->na2, tp->M[FQ_F_LA],
                        tp->M[FQ_F_RA]))
        goto fail;
    for (int i = 0; i < 3; i++) {
        prof(tp, FQ_PROF_QUANT);
        if (act_q(tp, P, tp->Ah[i], tp->asc[i], tp->A2, N, d, 1, lin_of[i]))
            goto fail;
        /* 5: projections */
        prof(tp, FQ_PROF_GEMM);
        if (linear_fwd(tp, P, lin_of[i], tp->Ah[i], tp->asc[i], proj[i], 0))
            goto fail;
    }
    /* 6–8: RoPE, M_k on k and M_k^{-T} on q, KV quantization */
    prof(tp, FQ_PROF_OTHER);
    if (rope_fwd_cuda(ctx, tp->Q, b, s, h, dh, tp->rcos, tp->rsin) ||
        rope_fwd_cuda(ctx, tp->K, b, s, g, dh, tp->rcos, tp->rsin))
        goto fail;
    prof(tp, FQ_PROF_TRANSFORMS);
    if (vec_transform_fwd_cuda(ctx, tp->Qp, tp->Q, N * h, dh, tp->Mi[FQ_F_MK]) ||
        vec_transform_fwd_cuda(ctx, tp->Kp, tp->K, N * g, dh, tp->M[FQ_F_MK]))
        goto fail;
    vin = tp->V;
    if (P->separate_vtrans) {
        if (vec_transform_fwd_cuda(ctx, tp->V2, tp->V, N * g, dh, tp->M[FQ_F_MV]))
            goto fail;
        vin = tp->V2;
    }
    prof(tp, FQ_PROF_QUANT);
    if (P->kv_bits != 16) {
        const real *kc = P->p + P->kvc[0], *vc = P->p + P->kvc[1];
        if (quant_kv_asym_fwd_cuda(ctx, tp->Kh, tp->ksc, tp->kz, tp->Kp, N * g, dh, P->kv_bits,
                                   (float)kc[0], (float)kc[1]) ||
            quant_kv_asym_fwd_cuda(ctx, tp->Vh, tp->vsc, tp->vz, vin, N * g, dh, P->kv_bits,
                                   (float)vc[0], (float)vc[1]))
            goto fail;
    }
    /* 9–11: attention, M_oᵀ·O per block, o input quantization, o_proj + residual */
    prof(tp, FQ_PROF_ATTENTION);
    if (attention_fwd_cuda(ctx, tp->O, tp->att, tp->Qp, tp->Kh, tp->Vh, b, s, h, g, dh))
        goto fail;
    memset(&bf, 0, sizeof bf);
    bf.Lm = tp->M;
    bf.gLm = tp->gM;
    bf.lb = FQ_F_MO(0);
    bf.ls = 3;
    prof(tp, FQ_PROF_TRANSFORMS);
    if (blk_fwd(tp, tp->O1, tp->O, N, T, P->hb, dh, &bf, NULL))
        goto fail;
    prof(tp, FQ_PROF_QUANT);
    if (act_q(tp, P, tp->Oh, tp->osc, tp->O1, N, qd, T, QL_O))
        goto fail;
    prof(tp, FQ_PROF_GEMM);
    if (dcopy(tp, tp->X2, x, (size_t)N * d, "fq_layer_fwd_cuda") ||
        linear_fwd(tp, P, QL_O, tp->Oh, tp->osc, tp->X2, 1))
        goto fail;
    /* 12–14: RMSNorm2, ∘ c_ug, Kron(L_ug, R_ug), up/gate quantization, SwiGLU */
    prof(tp, FQ_PROF_OTHER);
    if (rmsnorm_fwd_cuda(ctx, tp->Bn, tp->rstd2, tp->X2, tp->gamma2, N, d, eps))
        goto fail;
    prof(tp, FQ_PROF_TRANSFORMS);
    if (act_chscale_fwd(tp, tp->B1, tp->Bn, dpar(tp, P->c_ug), N, d) ||
        kron_fwd_z_cuda(ctx, tp->B2, tp->zB, tp->B1, N, P->na1, P->na2, tp->M[FQ_F_LUG],
                        tp->M[FQ_F_RUG]))
        goto fail;
    prof(tp, FQ_PROF_QUANT);
    if (act_q(tp, P, tp->Bh[0], tp->bsc[0], tp->B2, N, d, 1, QL_UP) ||
        act_q(tp, P, tp->Bh[1], tp->bsc[1], tp->B2, N, d, 1, QL_GATE))
        goto fail;
    prof(tp, FQ_PROF_GEMM);
    if (linear_fwd(tp, P, QL_UP, tp->Bh[0], tp->bsc[0], tp->Hu, 0) ||
        linear_fwd(tp, P, QL_GATE, tp->Bh[1], tp->bsc[1], tp->Hg, 0))
        goto fail;
    prof(tp, FQ_PROF_OTHER);
    if (swiglu_fwd_cuda(ctx, tp->Z, tp->Hg, tp->Hu, (size_t)N * f))
        goto fail;
    /* 15–16: ∘ c_d, block Kron(L_d, R_d), down input quantization, down_proj + residual */
    memset(&bf, 0, sizeof bf);
    bf.Lm = bf.Rm = tp->M;
    bf.lb = FQ_F_LD(0);
    bf.ls = 3;
    bf.rb = FQ_F_RD(0);
    bf.rs = 3;
    prof(tp, FQ_PROF_TRANSFORMS);
    if (act_chscale_fwd(tp, tp->Z1, tp->Z, dpar(tp, P->c_d), N, f) ||
        blk_fwd(tp, tp->Z2, tp->Z1, N, T, P->nd1, P->nd2, &bf, tp->zD))
        goto fail;
    prof(tp, FQ_PROF_QUANT);
    if (act_q(tp, P, tp->Zh, tp->zsc, tp->Z2, N, f, T, QL_DOWN))
        goto fail;
    prof(tp, FQ_PROF_GEMM);
    if (dcopy(tp, y, tp->X2, (size_t)N * d, "fq_layer_fwd_cuda") ||
        linear_fwd(tp, P, QL_DOWN, tp->Zh, tp->zsc, y, 1))
        goto fail;
    prof(tp, FQ_PROF_OTHER);
    return FQ_OK;
fail:
    return fq_error_wrap(F ":fq_layer_fwd_cuda");
}

int fq_layer_loss_cuda(fq_tape_cuda *tp, const float *y, const float *target, float *g_y,
                       double *mse)
{
    if (!tp || !y || !target || !mse)
        return fq_error(F ":fq_layer_loss_cuda: NULL argument (expected tape, output, target "
                        "and result)");
    cudaStream_t st = CTX_STREAM(tp->ctx);
    const size_t n = (size_t)tp->N * (size_t)tp->d;
    prof(tp, FQ_PROF_OTHER);
    mse_partial_kernel<<<LOSS_BLOCKS, FQ_BLOCK, 0, st>>>(tp->lsum, y, target, n);
    LAUNCH_CHECK(F, "fq_layer_loss_cuda", "mse_partial_kernel");
    mse_final_kernel<<<1, 1, 0, st>>>(tp->lsum, LOSS_BLOCKS);
    LAUNCH_CHECK(F, "fq_layer_loss_cuda", "mse_final_kernel");
    double sum = 0;
    CU_CHECK(cudaMemcpyAsync(&sum, tp->lsum + LOSS_BLOCKS, sizeof sum, cudaMemcpyDeviceToHost,
                             st), F, "fq_layer_loss_cuda", "cudaMemcpyAsync");
    CU_CHECK(cudaStreamSynchronize(st), F, "fq_layer_loss_cuda",
             "a kernel of the layer forward or the loss");
    *mse = sum / (double)n;
    if (g_y && isfinite(*mse) && *mse > 0) {
        const double k = 2.0 / ((double)n * *mse);
        loss_seed_kernel<<<fq_grid(n, FQ_BLOCK), FQ_BLOCK, 0, st>>>(g_y, y, target, k, n);
        LAUNCH_CHECK(F, "fq_layer_loss_cuda", "loss_seed_kernel");
    }
    return FQ_OK;
}

/* ---- backward ---- */

/* STE backward of an activation quantizer; returns the gradient of its input (g_out itself
 * for 16 bits, else buf). The shared clip logits get their per-row shares summed in order. */
static const float *act_q_bwd(fq_tape_cuda *tp, const fq_params *P, float *buf,
                              const float *g_out, const float *in, const float *sc, int rows,
                              int k, int blocks, int lin)
{
    if (P->a_bits == 16)
        return g_out;
    const real *cl = P->p + P->lac[lin];
    float *gc = dgrad(tp, P->lac[lin]);
    const size_t R = (size_t)rows * blocks;
    if (quant_act_sym_bwd_rows_cuda(tp->ctx, buf, tp->rowg, tp->rowg + R, g_out, in, sc, rows,
                                    k, blocks, P->a_bits, (float)cl[0], (float)cl[1]) ||
        fq_cuda_sum_into(tp->ctx, gc, tp->rowg, R) ||
        fq_cuda_sum_into(tp->ctx, gc + 1, tp->rowg + R, R))
        return NULL;
    return buf;
}

static int kv_q_bwd(fq_tape_cuda *tp, const fq_params *P, float *g_in, const float *g_out,
                    const float *in, const float *sc, const float *z, int which)
{
    const real *cl = P->p + P->kvc[which];
    float *gc = dgrad(tp, P->kvc[which]);
    const size_t R = (size_t)tp->N * P->cfg.n_kv_heads;
    if (quant_kv_asym_bwd_rows_cuda(tp->ctx, g_in, tp->rowg, tp->rowg + R, g_out, in, sc, z,
                                    (int)R, P->cfg.head_dim, P->kv_bits, (float)cl[0],
                                    (float)cl[1]) ||
        fq_cuda_sum_into(tp->ctx, gc, tp->rowg, R) ||
        fq_cuda_sum_into(tp->ctx, gc + 1, tp->rowg + R, R))
        return FQ_ERR;
    return FQ_OK;
}

/* From G_Ŵ (in tp->gw0) back to the factors' inverse transposes, the channel scale and the
 * LWC logits of linear lin. */
static int weight_bwd(fq_tape_cuda *tp, const fq_params *P, int lin)
{
    const llama_config *c = &P->cfg;
    const int out = fq_linear_out(c, lin), in = fq_linear_in(c, lin), bits = P->w_bits;
    fq_weight_side ws;
    fq_weight_side_of(P, lin, &ws);
    blk_factors bf;
    weight_factors(tp, &ws, &bf);
    const float *a = dpar(tp, P->lwc_a[lin]), *b = dpar(tp, P->lwc_b[lin]);
    float *ga = dgrad(tp, P->lwc_a[lin]), *gb = dgrad(tp, P->lwc_b[lin]);
    float *gwp; /* ∂L/∂W' */
    prof(tp, FQ_PROF_WQUANT);
    if (lin == QL_V && !P->separate_vtrans) {
        float *grot = tp->gw0;
        if (bits != 16) {
            if (quant_weight_lwc_bwd_cuda(tp->ctx, tp->gw1, NULL, NULL, tp->gw0, tp->wrot,
                                          tp->wsc[lin], out, in, bits, tp->noclip, tp->noclip))
                return FQ_ERR;
            grot = tp->gw1;
        }
        prof(tp, FQ_PROF_WEIGHTS);
        if (vrot_bwd(tp, tp->gw2, tp->gM[FQ_F_MV], grot, tp->wcl, c->n_kv_heads, c->head_dim,
                     in, tp->M[FQ_F_MV]))
            return FQ_ERR;
        prof(tp, FQ_PROF_WQUANT);
        gwp = tp->gw2;
        if (bits != 16) {
            lwc_clamp_bwd_kernel<<<out, FQ_BLOCK, 0, CTX_STREAM(tp->ctx)>>>(
                tp->gw1, ga, gb, tp->gw2, tp->wp[lin], in, a, b);
            LAUNCH_CHECK(F, "weight_bwd", "lwc_clamp_bwd_kernel");
            gwp = tp->gw1;
        }
    } else if (bits != 16) {
        if (quant_weight_lwc_bwd_cuda(tp->ctx, tp->gw1, ga, gb, tp->gw0, tp->wp[lin],
                                      tp->wsc[lin], out, in, bits, a, b))
            return FQ_ERR;
        gwp = tp->gw1;
    } else {
        gwp = tp->gw0;
    }
    const int scaled = ws.c_off != FQ_NO_SCALE;
    const float *src = scaled ? tp->w1[lin] : tp->w[lin];
    float *gsrc = scaled ? (gwp == tp->gw2 ? tp->gw0 : tp->gw2) : NULL;
    prof(tp, FQ_PROF_WEIGHTS);
    if (blk_bwd(tp, gsrc, gwp, src, out, ws.T, ws.n1, ws.n2, &bf, tp->wz[lin]))
        return FQ_ERR;
    prof(tp, FQ_PROF_CHSCALE);
    if (scaled && chscale_weight_bwd_cuda(tp->ctx, NULL, dgrad(tp, ws.c_off), gsrc, tp->w[lin],
                                          dpar(tp, ws.c_off), out, in))
        return FQ_ERR;
    return FQ_OK;
}

/* G_X̂ = G_Y·Ŵ (into gx, when not NULL) and G_Ŵ = G_Yᵀ·X̂ (into tp->gw0), then the weight
 * side backward of lin. */
static int linear_q_bwd(fq_tape_cuda *tp, const fq_params *P, int lin, float *gx,
                        const float *gy, const float *xh)
{
    const llama_config *c = &P->cfg;
    const int out = fq_linear_out(c, lin), in = fq_linear_in(c, lin);
    prof(tp, FQ_PROF_GEMM);
    if (codes_on(tp, P, lin)) {
        /* G_X̂ = (G_Y·diag(s_w))·Q_w and G_Ŵ = (diag(s_x)·G_Y)ᵀ·Q_x: the codes of the
         * forward, the gradient scaled and rounded to bf16 */
        if ((gx && (scaled_bf16_cuda(tp->ctx, tp->gyb, gy, NULL, tp->wsc[lin], tp->N, out) ||
                    fq_gemm_bf16_cuda(tp->ctx, 0, 0, tp->N, in, out, tp->gyb, out, tp->qw[lin],
                                      in, gx, in))) ||
            scaled_bf16_cuda(tp->ctx, tp->gyb, gy, tp->xsc[lin], NULL, tp->N, out) ||
            fq_gemm_bf16_cuda(tp->ctx, 1, 0, out, in, tp->N, tp->gyb, out, tp->qa[lin], in,
                              tp->gw0, in))
            return fq_error_wrap(F ":linear_q_bwd: %s on codes", qlinear_names[lin]);
    } else if ((gx && gemm(tp, 0, 0, tp->N, in, out, 1.0f, gy, out, tp->wh[lin], in, 0.0f, gx,
                           in)) ||
               gemm(tp, 1, 0, out, in, tp->N, 1.0f, gy, out, xh, in, 0.0f, tp->gw0, in)) {
        return FQ_ERR;
    }
    prof(tp, FQ_PROF_WEIGHTS);
    if (weight_bwd(tp, P, lin))
        return fq_error_wrap("weight %s", qlinear_names[lin]);
    return FQ_OK;
}

/* Gradients of the device mirror and of the factor slabs → P->g, then the host fold. */
static int params_bwd(fq_tape_cuda *tp, fq_params *P)
{
    prof(tp, FQ_PROF_PARAMS);
    memset(P->g, 0, sizeof(real) * P->n);
    if (fq_cuda_download(tp->ctx, P->g + tp->pbase, tp->dg, tp->pn) ||
        fq_cuda_download(tp->ctx, tp->fm.gM[0], tp->dgfac, 2 * tp->fm.total) ||
        fq_factors_bwd(&tp->fm, P))
        return FQ_ERR;
    return FQ_OK;
}

int fq_layer_bwd_cuda(fq_tape_cuda *tp, fq_params *P, const float *g_y)
{
    if (check_call(tp, P, g_y, g_y, "fq_layer_bwd_cuda"))
        return FQ_ERR;
    if (!P->g)
        return fq_error(F ":fq_layer_bwd_cuda: params without gradients (expected "
                        "fq_params_init)");
    fq_cuda_ctx *ctx = tp->ctx;
    const llama_config *c = &P->cfg;
    const int N = tp->N, b = tp->b, s = tp->s, d = c->hidden, f = c->intermediate,
              h = c->n_heads, g = c->n_kv_heads, dh = c->head_dim, qd = h * dh, kd = g * dh,
              T = P->T;
    const size_t Nd = (size_t)N * d;
    blk_factors bf;
    const float *gq, *gKp, *gVin, *vin;
    float *gX2 = tp->s5, *gZ1, *gO, *gQp, *gV, *gK, *gQ, *gA2, *gA1;
    prof(tp, FQ_PROF_OTHER);
    if (dzero(tp, tp->dg, tp->pn, "fq_layer_bwd_cuda") ||
        dzero(tp, tp->dgfac, 2 * tp->fm.total, "fq_layer_bwd_cuda") ||
        dcopy(tp, gX2, g_y, Nd, "fq_layer_bwd_cuda"))
        goto fail;

    /* 16–15: down_proj, down input quantizer, block Kron(L_d, R_d), ∘ c_d */
    if (linear_q_bwd(tp, P, QL_DOWN, tp->t1, g_y, tp->Zh))
        goto fail;
    prof(tp, FQ_PROF_QUANT);
    if (!(gq = act_q_bwd(tp, P, tp->t2, tp->t1, tp->Z2, tp->zsc, N, f, T, QL_DOWN)))
        goto fail;
    memset(&bf, 0, sizeof bf);
    bf.Lm = bf.Rm = tp->M;
    bf.gLm = bf.gRm = tp->gM;
    bf.lb = FQ_F_LD(0);
    bf.ls = 3;
    bf.rb = FQ_F_RD(0);
    bf.rs = 3;
    gZ1 = gq == tp->t1 ? tp->t2 : tp->t1;
    prof(tp, FQ_PROF_TRANSFORMS);
    if (blk_bwd(tp, gZ1, gq, tp->Z1, N, T, P->nd1, P->nd2, &bf, tp->zD) ||
        act_chscale_bwd(tp, tp->t3, dgrad(tp, P->c_d), gZ1, tp->Z, dpar(tp, P->c_d), N, f))
        goto fail;
    /* 14: SwiGLU, up/gate projections */
    prof(tp, FQ_PROF_OTHER);
    if (dzero(tp, tp->t1, (size_t)N * f, "fq_layer_bwd_cuda") ||
        dzero(tp, tp->t2, (size_t)N * f, "fq_layer_bwd_cuda") ||
        swiglu_bwd_cuda(ctx, tp->t1, tp->t2, tp->t3, tp->Hg, tp->Hu, (size_t)N * f))
        goto fail;
    if (linear_q_bwd(tp, P, QL_UP, tp->s1, tp->t2, tp->Bh[0]) ||
        linear_q_bwd(tp, P, QL_GATE, tp->s2, tp->t1, tp->Bh[1]))
        goto fail;
    /* 13–12: the two input quantizers, Kron(L_ug, R_ug), ∘ c_ug, RMSNorm2 */
    prof(tp, FQ_PROF_QUANT);
    if (P->a_bits == 16) {
        if (dadd(tp, tp->s1, tp->s2, Nd))
            goto fail;
    } else {
        if (!act_q_bwd(tp, P, tp->s3, tp->s1, tp->B2, tp->bsc[0], N, d, 1, QL_UP) ||
            !act_q_bwd(tp, P, tp->s4, tp->s2, tp->B2, tp->bsc[1], N, d, 1, QL_GATE) ||
            dadd(tp, tp->s3, tp->s4, Nd) || dcopy(tp, tp->s1, tp->s3, Nd, "fq_layer_bwd_cuda"))
            goto fail;
    }
    prof(tp, FQ_PROF_TRANSFORMS);
    if (kron_bwd_z_cuda(ctx, tp->s2, tp->gM[FQ_F_LUG], tp->gM[FQ_F_RUG], tp->s1, tp->B1,
                        tp->zB, N, P->na1, P->na2, tp->M[FQ_F_LUG], tp->M[FQ_F_RUG],
                        tp->work) ||
        act_chscale_bwd(tp, tp->s3, dgrad(tp, P->c_ug), tp->s2, tp->Bn,
                             dpar(tp, P->c_ug), N, d))
        goto fail;
    prof(tp, FQ_PROF_OTHER);
    /* rmsnorm_bwd_cuda accumulates into dx like the CPU op: gX2 already holds g_y */
    if (rmsnorm_bwd_cuda(ctx, gX2, tp->s3, tp->X2, tp->gamma2, tp->rstd2, N, d))
        goto fail;
    /* 11–10: o_proj, o input quantizer (per-block scales), M_oᵀ·O per block */
    if (linear_q_bwd(tp, P, QL_O, tp->t1, gX2, tp->Oh))
        goto fail;
    prof(tp, FQ_PROF_QUANT);
    if (!(gq = act_q_bwd(tp, P, tp->t2, tp->t1, tp->O1, tp->osc, N, qd, T, QL_O)))
        goto fail;
    memset(&bf, 0, sizeof bf);
    bf.Lm = tp->M;
    bf.gLm = tp->gM;
    bf.lb = FQ_F_MO(0);
    bf.ls = 3;
    gO = gq == tp->t1 ? tp->t2 : tp->t1;
    prof(tp, FQ_PROF_TRANSFORMS);
    if (blk_bwd(tp, gO, gq, tp->O, N, T, P->hb, dh, &bf, NULL))
        goto fail;
    /* 9: attention → G_Q', G_K̂, G_V̂ */
    gQp = gO == tp->t1 ? tp->t2 : tp->t1;
    prof(tp, FQ_PROF_ATTENTION);
    if (dzero(tp, gQp, (size_t)N * qd, "fq_layer_bwd_cuda") ||
        dzero(tp, tp->k1, (size_t)N * kd, "fq_layer_bwd_cuda") ||
        dzero(tp, tp->k2, (size_t)N * kd, "fq_layer_bwd_cuda") ||
        attention_bwd_cuda(ctx, gQp, tp->k1, tp->k2, gO, tp->Qp, tp->Kh, tp->Vh, tp->att, b, s,
                           h, g, dh, tp->attscr))
        goto fail;
    /* 8: KV quantizers */
    prof(tp, FQ_PROF_QUANT);
    gKp = tp->k1;
    gVin = tp->k2;
    vin = P->separate_vtrans ? tp->V2 : tp->V;
    if (P->kv_bits != 16) {
        if (kv_q_bwd(tp, P, tp->k3, tp->k1, tp->Kp, tp->ksc, tp->kz, 0) ||
            kv_q_bwd(tp, P, tp->k4, tp->k2, vin, tp->vsc, tp->vz, 1))
            goto fail;
        gKp = tp->k3;
        gVin = tp->k4;
    }
    prof(tp, FQ_PROF_TRANSFORMS);
    gV = (float *)gVin;
    if (P->separate_vtrans) {
        gV = gVin == tp->k2 ? tp->k4 : tp->k2;
        if (vec_transform_bwd_cuda(ctx, gV, tp->gM[FQ_F_MV], gVin, tp->V, N * g, dh,
                                   tp->M[FQ_F_MV]))
            goto fail;
    }
    /* 7–6: M_k, M_k^{-T}, then RoPE (inverse rotation) */
    gK = gKp == tp->k1 ? tp->k3 : tp->k1;
    gQ = tp->t3;
    if (vec_transform_bwd_cuda(ctx, gK, tp->gM[FQ_F_MK], gKp, tp->K, N * g, dh,
                               tp->M[FQ_F_MK]) ||
        vec_transform_bwd_cuda(ctx, gQ, tp->gMi[FQ_F_MK], gQp, tp->Q, N * h, dh,
                               tp->Mi[FQ_F_MK]))
        goto fail;
    prof(tp, FQ_PROF_OTHER);
    if (rope_bwd_cuda(ctx, gQ, b, s, h, dh, tp->rcos, tp->rsin) ||
        rope_bwd_cuda(ctx, gK, b, s, g, dh, tp->rcos, tp->rsin))
        goto fail;
    /* 5–1: projections, three input quantizers, Kron(L_a, R_a), ∘ c_a */
    if (linear_q_bwd(tp, P, QL_Q, tp->s1, gQ, tp->Ah[0]) ||
        linear_q_bwd(tp, P, QL_K, tp->s2, gK, tp->Ah[1]) ||
        linear_q_bwd(tp, P, QL_V, tp->s3, gV, tp->Ah[2]))
        goto fail;
    prof(tp, FQ_PROF_QUANT);
    gA2 = tp->s1;
    if (P->a_bits == 16) {
        if (dadd(tp, tp->s1, tp->s2, Nd) || dadd(tp, tp->s1, tp->s3, Nd))
            goto fail;
    } else {
        if (!act_q_bwd(tp, P, tp->s4, tp->s1, tp->A2, tp->asc[0], N, d, 1, QL_Q) ||
            !act_q_bwd(tp, P, tp->s5, tp->s2, tp->A2, tp->asc[1], N, d, 1, QL_K) ||
            dadd(tp, tp->s4, tp->s5, Nd) ||
            !act_q_bwd(tp, P, tp->s5, tp->s3, tp->A2, tp->asc[2], N, d, 1, QL_V) ||
            dadd(tp, tp->s4, tp->s5, Nd))
            goto fail;
        gA2 = tp->s4;
    }
    gA1 = gA2 == tp->s1 ? tp->s2 : tp->s1;
    prof(tp, FQ_PROF_TRANSFORMS);
    if (kron_bwd_z_cuda(ctx, gA1, tp->gM[FQ_F_LA], tp->gM[FQ_F_RA], gA2, tp->A1, tp->zA, N,
                        P->na1, P->na2, tp->M[FQ_F_LA], tp->M[FQ_F_RA], tp->work) ||
        act_chscale_bwd(tp, NULL, dgrad(tp, P->c_a), gA1, tp->A, dpar(tp, P->c_a), N, d))
        goto fail;
    if (params_bwd(tp, P))
        goto fail;
    prof(tp, FQ_PROF_OTHER);
    return FQ_OK;
fail:
    return fq_error_wrap(F ":fq_layer_bwd_cuda");
}
