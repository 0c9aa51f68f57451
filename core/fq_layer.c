/* fq_layer.c — the FlatQuant training forward of one decoder layer (ALGORITHM §4.4, steps
 * 1–16) and its backward (§4.5) to every parameter of fq_params (see fq_layer.h).
 *
 * Structure: fq_layer_fwd materialises the factors (M, M^{-T} of all nine kinds), runs the
 * weight side of the seven linears (⊘ c, Kronecker with inverse-transposed factors, LWC,
 * M_v on Wv's output rows, weight fake quantization), then the activation side. The
 * backward walks the same steps in reverse; each linear's weight-side backward runs as
 * soon as its weight gradient is known, so three weight-sized buffers suffice. All the
 * per-token work is GEMMs (real_gemm → BLAS) or single passes of the quantizers.
 *
 * Block-diagonal transforms (tp_blocks T > 1: T_d and M_o) gather each block's columns
 * into a contiguous [rows, n/T] buffer, run the ordinary Kronecker / head transform on it
 * and scatter back: two copies of the data against a GEMM over it, and one code path for
 * T = 1 and T > 1.
 */
#include "fq_layer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cayley.h"
#include "error.h"
#include "kron.h"
#include "quantizer.h"

#define WHERE "core/fq_layer.c"
/* Tape buffers besides the six per factor. */
#define TAPE_BUFS_FIXED 100

/* Logit whose sigmoid is exactly 1 in fp32 and fp64: "no clipping" for the weight
 * quantizer that runs after Wv's own clip and output rotation (κ = 1, §3.5). */
#define NO_CLIP_LOGIT ((real)100)

struct fq_tape {
    int b, s, N;
    size_t nparams;
    int nfactors;
    fq_quant_ops ops;
    real **bufs;
    int nbufs, maxbufs;
    /* factors (the parameter side, fq_factors.c); M.. alias fm's tables */
    fq_factor_mats fm;
    real **M, **Mi, **gM, **gMi;
    /* weight side per linear: W ⊘ c, W' (transformed), Ŵ (fake-quantized), row scales */
    real *w1[QL_NLINEAR], *wp[QL_NLINEAR], *wh[QL_NLINEAR], *wsc[QL_NLINEAR];
    real *wcl, *wrot; /* Wv clipped, then rotated by M_v (unless separate_vtrans) */
    real *noclip;     /* [max rows] logits NO_CLIP_LOGIT */
    real *gw0, *gw1, *gw2;
    /* activations (§4.4 names) */
    real *A, *A1, *A2, *Ah[3], *asc[3];
    real *Q, *K, *V, *V2, *Qp, *Kp, *Kh, *Vh, *ksc, *kz, *vsc, *vz;
    real *O, *O1, *Oh, *osc, *X2;
    real *Bn, *rstd2, *B1, *B2, *Bh[2], *bsc[2];
    real *Hu, *Hg, *Z, *Z1, *Z2, *Zh, *zsc;
    /* backward scratch: t* [N, max(f, h·dh)], k* [N, g·dh], s* [N, d] */
    real *t1, *t2, *t3, *k1, *k2, *k3, *k4, *s1, *s2, *s3, *s4, *s5;
    real *work, *gat0, *gat1, *gat2, *att;
};

static real *tape_buf(fq_tape *tp, size_t n)
{
    if (tp->nbufs >= tp->maxbufs) {
        fq_error(WHERE ":fq_tape_create: too many buffers (expected at most %d)",
                 tp->maxbufs);
        return NULL;
    }
    real *p = fq_calloc(n ? n : 1, sizeof(real), "calibration tape");
    if (p)
        tp->bufs[tp->nbufs++] = p;
    return p;
}

void fq_tape_free(fq_tape *tp)
{
    if (!tp)
        return;
    for (int i = 0; i < tp->nbufs; i++)
        free(tp->bufs[i]);
    free(tp->bufs);
    fq_factor_mats_free(&tp->fm);
    free(tp);
}

static long lmax(long a, long b) { return a > b ? a : b; }

int fq_tape_create(fq_tape **out, const fq_params *P, int b, int s, const fq_quant_ops *ops)
{
    if (!out || !P || !P->p || b <= 0 || s <= 0)
        return fq_error(WHERE ":fq_tape_create: invalid arguments (expected initialised "
                        "params and a positive batch %d x %d)", b, s);
    *out = NULL;
    const llama_config *c = &P->cfg;
    const long N = (long)b * s, d = c->hidden, f = c->intermediate,
               qd = (long)c->n_heads * c->head_dim, kd = (long)c->n_kv_heads * c->head_dim;
    fq_tape *tp = fq_calloc(1, sizeof *tp, "calibration tape");
    if (!tp)
        return FQ_ERR;
    tp->b = b;
    tp->s = s;
    tp->N = (int)N;
    tp->nparams = P->n;
    tp->nfactors = P->nfactors;
    if (ops) {
        tp->ops = *ops;
    } else {
        tp->ops.act_sym = quant_act_sym_fwd;
        tp->ops.kv_asym = quant_kv_asym_fwd;
        tp->ops.weight_lwc = quant_weight_lwc_fwd;
    }
    tp->maxbufs = TAPE_BUFS_FIXED;
    if (!(tp->bufs = fq_calloc((size_t)tp->maxbufs, sizeof(real *), "tape buffer table")) ||
        fq_factor_mats_create(&tp->fm, P))
        goto fail;
    tp->M = tp->fm.M;
    tp->Mi = tp->fm.Mi;
    tp->gM = tp->fm.gM;
    tp->gMi = tp->fm.gMi;

    const int w16 = P->w_bits == 16, a16 = P->a_bits == 16, kv16 = P->kv_bits == 16;
    const int vrot = !P->separate_vtrans;
    long wmax = 0;
    for (int lin = 0; lin < QL_NLINEAR; lin++) {
        long o = fq_linear_out(c, lin), in = fq_linear_in(c, lin), n = o * in;
        wmax = lmax(wmax, n);
        if (lin != QL_O && !(tp->w1[lin] = tape_buf(tp, (size_t)n)))
            goto fail;
        if (!(tp->wp[lin] = tape_buf(tp, (size_t)n)) || !(tp->wsc[lin] = tape_buf(tp, (size_t)o)))
            goto fail;
        if (lin == QL_V && vrot) {
            if (w16) {
                tp->wcl = tp->wp[lin];
            } else if (!(tp->wcl = tape_buf(tp, (size_t)n))) {
                goto fail;
            }
            if (!(tp->wrot = tape_buf(tp, (size_t)n)))
                goto fail;
            if (w16)
                tp->wh[lin] = tp->wrot;
            else if (!(tp->wh[lin] = tape_buf(tp, (size_t)n)))
                goto fail;
        } else if (w16) {
            tp->wh[lin] = tp->wp[lin];
        } else if (!(tp->wh[lin] = tape_buf(tp, (size_t)n))) {
            goto fail;
        }
    }
    if (!(tp->noclip = tape_buf(tp, (size_t)lmax(d, lmax(f, qd)))) ||
        !(tp->gw0 = tape_buf(tp, (size_t)wmax)) || !(tp->gw1 = tape_buf(tp, (size_t)wmax)) ||
        !(tp->gw2 = tape_buf(tp, (size_t)wmax)))
        goto fail;
    for (long i = 0; i < lmax(d, lmax(f, qd)); i++)
        tp->noclip[i] = NO_CLIP_LOGIT;

#define TAKE(ptr, n)                                                                             \
    do {                                                                                         \
        if (!((ptr) = tape_buf(tp, (size_t)(n))))                                                \
            goto fail;                                                                           \
    } while (0)
    TAKE(tp->A, N * d);
    TAKE(tp->A1, N * d);
    TAKE(tp->A2, N * d);
    for (int i = 0; i < 3; i++) {
        if (a16)
            tp->Ah[i] = tp->A2;
        else
            TAKE(tp->Ah[i], N * d);
        TAKE(tp->asc[i], N);
    }
    TAKE(tp->Q, N * qd);
    TAKE(tp->K, N * kd);
    TAKE(tp->V, N * kd);
    if (P->separate_vtrans)
        TAKE(tp->V2, N * kd);
    TAKE(tp->Qp, N * qd);
    TAKE(tp->Kp, N * kd);
    const real *vin = P->separate_vtrans ? tp->V2 : tp->V;
    if (kv16) {
        tp->Kh = tp->Kp;
        tp->Vh = (real *)vin;
    } else {
        TAKE(tp->Kh, N * kd);
        TAKE(tp->Vh, N * kd);
    }
    TAKE(tp->ksc, N * c->n_kv_heads);
    TAKE(tp->kz, N * c->n_kv_heads);
    TAKE(tp->vsc, N * c->n_kv_heads);
    TAKE(tp->vz, N * c->n_kv_heads);
    TAKE(tp->O, N * qd);
    TAKE(tp->O1, N * qd);
    if (a16)
        tp->Oh = tp->O1;
    else
        TAKE(tp->Oh, N * qd);
    TAKE(tp->osc, N * P->T);
    TAKE(tp->X2, N * d);
    TAKE(tp->Bn, N * d);
    TAKE(tp->rstd2, N);
    TAKE(tp->B1, N * d);
    TAKE(tp->B2, N * d);
    for (int i = 0; i < 2; i++) {
        if (a16)
            tp->Bh[i] = tp->B2;
        else
            TAKE(tp->Bh[i], N * d);
        TAKE(tp->bsc[i], N);
    }
    TAKE(tp->Hu, N * f);
    TAKE(tp->Hg, N * f);
    TAKE(tp->Z, N * f);
    TAKE(tp->Z1, N * f);
    TAKE(tp->Z2, N * f);
    if (a16)
        tp->Zh = tp->Z2;
    else
        TAKE(tp->Zh, N * f);
    TAKE(tp->zsc, N * P->T);
    long big = N * lmax(f, qd);
    TAKE(tp->t1, big);
    TAKE(tp->t2, big);
    TAKE(tp->t3, big);
    TAKE(tp->k1, N * kd);
    TAKE(tp->k2, N * kd);
    TAKE(tp->k3, N * kd);
    TAKE(tp->k4, N * kd);
    TAKE(tp->s1, N * d);
    TAKE(tp->s2, N * d);
    TAKE(tp->s3, N * d);
    TAKE(tp->s4, N * d);
    TAKE(tp->s5, N * d);
    long rowsn = lmax(N * lmax(d, lmax(f, qd)), wmax);
    TAKE(tp->work, 2 * rowsn);
    if (P->T > 1) {
        TAKE(tp->gat0, rowsn);
        TAKE(tp->gat1, rowsn);
        TAKE(tp->gat2, rowsn);
    }
    TAKE(tp->att, 2L * s * s);
#undef TAKE
    *out = tp;
    return FQ_OK;
fail:
    fq_tape_free(tp);
    return fq_error_wrap(WHERE ":fq_tape_create: %d x %d tokens", b, s);
}

/* ---- block-diagonal transforms ----
 * Rows of length T·n1·n2; block t uses factor L = Lm[lb + ls·t] and R = Rm[rb + rs·t];
 * Rm == NULL means R = I (the head transform O ← Lᵀ·O on a [n1, n2] view). */
typedef struct {
    real *const *Lm, *const *Rm, *const *gLm, *const *gRm;
    int lb, ls, rb, rs;
} blk_factors;

static void gather_cols(real *dst, const real *src, long rows, int width, int off, int nb)
{
    for (long r = 0; r < rows; r++)
        memcpy(dst + r * nb, src + r * width + off, sizeof(real) * (size_t)nb);
}

static void scatter_cols(real *dst, const real *src, long rows, int width, int off, int nb)
{
    for (long r = 0; r < rows; r++)
        memcpy(dst + r * width + off, src + r * nb, sizeof(real) * (size_t)nb);
}

static int one_fwd(real *y, const real *x, int rows, int n1, int n2, const real *L,
                   const real *R, real *work)
{
    return R ? kron_fwd(y, x, rows, n1, n2, L, R, work)
             : head_transform_fwd(y, x, rows, n1, n2, L, work);
}

static int blk_fwd(fq_tape *tp, real *y, const real *x, int rows, int T, int n1, int n2,
                   const blk_factors *bf)
{
    int nb = n1 * n2;
    for (int t = 0; t < T; t++) {
        const real *L = bf->Lm[bf->lb + bf->ls * t];
        const real *R = bf->Rm ? bf->Rm[bf->rb + bf->rs * t] : NULL;
        if (T == 1)
            return one_fwd(y, x, rows, n1, n2, L, R, tp->work);
        gather_cols(tp->gat0, x, rows, T * nb, t * nb, nb);
        if (one_fwd(tp->gat1, tp->gat0, rows, n1, n2, L, R, tp->work))
            return FQ_ERR;
        scatter_cols(y, tp->gat1, rows, T * nb, t * nb, nb);
    }
    return FQ_OK;
}

static int one_bwd(real *gx, real *gL, real *gR, const real *gy, const real *x, int rows,
                   int n1, int n2, const real *L, const real *R, real *work)
{
    return R ? kron_bwd(gx, gL, gR, gy, x, rows, n1, n2, L, R, work)
             : head_transform_bwd(gx, gL, gy, x, rows, n1, n2, L, work);
}

/* gx (written, may be NULL); factor gradients accumulated. */
static int blk_bwd(fq_tape *tp, real *gx, const real *gy, const real *x, int rows, int T,
                   int n1, int n2, const blk_factors *bf)
{
    int nb = n1 * n2;
    for (int t = 0; t < T; t++) {
        const real *L = bf->Lm[bf->lb + bf->ls * t];
        const real *R = bf->Rm ? bf->Rm[bf->rb + bf->rs * t] : NULL;
        real *gL = bf->gLm[bf->lb + bf->ls * t];
        real *gR = bf->Rm ? bf->gRm[bf->rb + bf->rs * t] : NULL;
        if (T == 1)
            return one_bwd(gx, gL, gR, gy, x, rows, n1, n2, L, R, tp->work);
        gather_cols(tp->gat0, gy, rows, T * nb, t * nb, nb);
        gather_cols(tp->gat1, x, rows, T * nb, t * nb, nb);
        if (one_bwd(gx ? tp->gat2 : NULL, gL, gR, tp->gat0, tp->gat1, rows, n1, n2, L, R,
                    tp->work))
            return FQ_ERR;
        if (gx)
            scatter_cols(gx, tp->gat2, rows, T * nb, t * nb, nb);
    }
    return FQ_OK;
}

/* The input-side transform of each linear's weight (fq_weight_side_of) as block factors
 * over the tape's M^{-T} tables. */
static void weight_transform_of(const fq_params *P, fq_tape *tp, int lin, blk_factors *bf,
                                int *T, int *n1, int *n2, size_t *c_off)
{
    fq_weight_side ws;
    fq_weight_side_of(P, lin, &ws);
    memset(bf, 0, sizeof *bf);
    bf->Lm = tp->Mi;
    bf->Rm = tp->Mi;
    bf->gLm = tp->gMi;
    bf->gRm = tp->gMi;
    bf->lb = ws.lb;
    bf->ls = ws.ls;
    bf->rb = ws.rb;
    bf->rs = ws.rs;
    *T = ws.T;
    *n1 = ws.n1;
    *n2 = ws.n2;
    *c_off = ws.c_off;
}

/* LWC clamp alone (Wv, whose clip comes before the output rotation): Wc = min(max(w,
 * wmin_r), wmax_r) with wmax_r = max_j w_rj·σ(a_r), wmin_r = min_j w_rj·σ(b_r). */
static void row_minmax(const real *w, int n, real *mx, real *mn, int *nmx, int *nmn)
{
    *mx = *mn = w[0];
    *nmx = *nmn = 1;
    for (int j = 1; j < n; j++) {
        if (w[j] > *mx) {
            *mx = w[j];
            *nmx = 1;
        } else if (w[j] == *mx) {
            (*nmx)++;
        }
        if (w[j] < *mn) {
            *mn = w[j];
            *nmn = 1;
        } else if (w[j] == *mn) {
            (*nmn)++;
        }
    }
}

static void lwc_clamp_fwd(real *out, const real *w, int rows, int cols, const real *a,
                          const real *b)
{
    for (long r = 0; r < rows; r++) {
        const real *wr = w + r * cols;
        real mx, mn;
        int nmx, nmn;
        row_minmax(wr, cols, &mx, &mn, &nmx, &nmn);
        real hi = mx * quant_sigmoid(a[r]), lo = mn * quant_sigmoid(b[r]);
        for (int j = 0; j < cols; j++) {
            real p = wr[j] < lo ? lo : wr[j];
            out[r * cols + j] = p > hi ? hi : p;
        }
    }
}

static void lwc_clamp_bwd(real *gw, real *ga, real *gb, const real *g, const real *w, int rows,
                          int cols, const real *a, const real *b)
{
    for (long r = 0; r < rows; r++) {
        const real *wr = w + r * cols, *gr = g + r * cols;
        real *gwr = gw + r * cols;
        real mx, mn;
        int nmx, nmn;
        row_minmax(wr, cols, &mx, &mn, &nmx, &nmn);
        real sa = quant_sigmoid(a[r]), sb = quant_sigmoid(b[r]);
        real hi = mx * sa, lo = mn * sb, ghi = 0, glo = 0;
        for (int j = 0; j < cols; j++) {
            real p = wr[j];
            int from = 0;
            if (p < lo) {
                p = lo;
                from = 1;
            }
            if (p > hi)
                from = 2;
            gwr[j] = from == 0 ? gr[j] : 0;
            if (from == 1)
                glo += gr[j];
            else if (from == 2)
                ghi += gr[j];
        }
        ga[r] += ghi * mx * sa * (1 - sa);
        gb[r] += glo * mn * sb * (1 - sb);
        for (int j = 0; j < cols; j++) {
            if (wr[j] == mx)
                gwr[j] += ghi * sa / (real)nmx;
            if (wr[j] == mn)
                gwr[j] += glo * sb / (real)nmn;
        }
    }
}

/* Wv's output side: per KV head ν, out_ν = M_vᵀ·W_ν on its [dh, in] row block. */
static void vrot_fwd(real *out, const real *w, int g, int dh, int in, const real *Mv)
{
    for (int v = 0; v < g; v++) {
        size_t o = (size_t)v * dh * in;
        real_gemm(1, 0, dh, in, dh, 1, Mv, dh, w + o, in, 0, out + o, in);
    }
}

static void vrot_bwd(real *gw, real *gMv, const real *gout, const real *w, int g, int dh, int in,
                     const real *Mv)
{
    for (int v = 0; v < g; v++) {
        size_t o = (size_t)v * dh * in;
        real_gemm(0, 0, dh, in, dh, 1, Mv, dh, gout + o, in, 0, gw + o, in);
        real_gemm(0, 1, dh, dh, in, 1, w + o, in, gout + o, in, 1, gMv, dh);
    }
}

/* ---- forward ---- */

static int weight_fwd(fq_tape *tp, const fq_params *P, const llama_layer *l, int lin)
{
    const llama_config *c = &P->cfg;
    int out = fq_linear_out(c, lin), in = fq_linear_in(c, lin), T, n1, n2;
    size_t coff;
    blk_factors bf;
    weight_transform_of(P, tp, lin, &bf, &T, &n1, &n2, &coff);
    const real *src = fq_layer_weight(l, lin);
    if (coff != FQ_NO_SCALE) {
        if (chscale_weight_fwd(tp->w1[lin], src, P->p + coff, out, in))
            return FQ_ERR;
        src = tp->w1[lin];
    }
    if (blk_fwd(tp, tp->wp[lin], src, out, T, n1, n2, &bf))
        return FQ_ERR;
    const real *a = P->p + P->lwc_a[lin], *b = P->p + P->lwc_b[lin];
    if (lin == QL_V && !P->separate_vtrans) {
        if (P->w_bits != 16)
            lwc_clamp_fwd(tp->wcl, tp->wp[lin], out, in, a, b);
        vrot_fwd(tp->wrot, tp->wcl, c->n_kv_heads, c->head_dim, in, tp->M[FQ_F_MV]);
        if (P->w_bits != 16 &&
            tp->ops.weight_lwc(tp->wh[lin], tp->wsc[lin], tp->wrot, out, in, P->w_bits,
                               tp->noclip, tp->noclip))
            return FQ_ERR;
    } else if (P->w_bits != 16 && tp->ops.weight_lwc(tp->wh[lin], tp->wsc[lin], tp->wp[lin],
                                                     out, in, P->w_bits, a, b)) {
        return FQ_ERR;
    }
    return FQ_OK;
}

static int act_q(fq_tape *tp, const fq_params *P, real *out, real *sc, const real *in, int rows,
                 int k, int blocks, int lin)
{
    if (P->a_bits == 16)
        return FQ_OK; /* out aliases in (set up by fq_tape_create) */
    const real *cl = P->p + P->lac[lin];
    return tp->ops.act_sym(out, sc, in, rows, k, blocks, P->a_bits, cl[0], cl[1]);
}

static int check_call(const fq_tape *tp, const fq_params *P, const llama_layer *l,
                      const rope_table *rope, const void *x, const void *y, const char *fn)
{
    if (!tp || !P || !P->p || !l || !rope || !x || !y)
        return fq_error(WHERE ":%s: NULL argument (expected tape, params, layer, rope, "
                        "input and output)", fn);
    if (tp->nparams != P->n || tp->nfactors != P->nfactors)
        return fq_error(WHERE ":%s: tape was made for other params (expected the tape of "
                        "these params)", fn);
    if (rope->seqlen < tp->s || rope->head_dim != P->cfg.head_dim)
        return fq_error(WHERE ":%s: rope table for %d positions of dim %d (expected >= %d "
                        "positions of dim %d)", fn, rope->seqlen, rope->head_dim, tp->s,
                        P->cfg.head_dim);
    for (int i = 0; i < QL_NLINEAR; i++)
        if (!fq_layer_weight(l, i))
            return fq_error(WHERE ":%s: layer weight %s is NULL", fn, qlinear_names[i]);
    if (!l->attn_norm || !l->mlp_norm)
        return fq_error(WHERE ":%s: layer norm weight is NULL", fn);
    return FQ_OK;
}

int fq_layer_fwd(fq_tape *tp, const fq_params *P, const llama_layer *l,
                 const rope_table *rope, const real *x, real *y)
{
    if (check_call(tp, P, l, rope, x, y, "fq_layer_fwd"))
        return FQ_ERR;
    const llama_config *c = &P->cfg;
    const int N = tp->N, b = tp->b, s = tp->s, d = c->hidden, f = c->intermediate,
              h = c->n_heads, g = c->n_kv_heads, dh = c->head_dim, qd = h * dh, kd = g * dh,
              T = P->T;
    const real eps = (real)c->rms_eps;
    if (fq_factors_fwd(&tp->fm, P))
        return fq_error_wrap(WHERE ":fq_layer_fwd");
    for (int lin = 0; lin < QL_NLINEAR; lin++)
        if (weight_fwd(tp, P, l, lin))
            return fq_error_wrap(WHERE ":fq_layer_fwd: weight %s", qlinear_names[lin]);
    blk_factors bf;
    int lin_of[3] = {QL_Q, QL_K, QL_V}, rows_of[3] = {qd, kd, kd};
    real *proj[3] = {tp->Q, tp->K, tp->V};

    /* 1–3: RMSNorm1, ∘ c_a, Kron(L_a, R_a), three input quantizations */
    rmsnorm_fwd(tp->A, NULL, x, l->attn_norm, N, d, eps);
    if (chscale_act_fwd(tp->A1, tp->A, P->p + P->c_a, N, d) ||
        kron_fwd(tp->A2, tp->A1, N, P->na1, P->na2, tp->M[FQ_F_LA], tp->M[FQ_F_RA], tp->work))
        goto fail;
    for (int i = 0; i < 3; i++) {
        if (act_q(tp, P, tp->Ah[i], tp->asc[i], tp->A2, N, d, 1, lin_of[i]))
            goto fail;
        /* 5: projections */
        real_gemm(0, 1, N, rows_of[i], d, 1, tp->Ah[i], d, tp->wh[lin_of[i]], d, 0, proj[i],
                  rows_of[i]);
    }
    /* 6–8: RoPE, M_k on k and M_k^{-T} on q, KV quantization (V already in the M_v basis) */
    rope_fwd(tp->Q, b, s, h, dh, rope);
    rope_fwd(tp->K, b, s, g, dh, rope);
    if (vec_transform_fwd(tp->Qp, tp->Q, N * h, dh, tp->Mi[FQ_F_MK]) ||
        vec_transform_fwd(tp->Kp, tp->K, N * g, dh, tp->M[FQ_F_MK]))
        goto fail;
    const real *vin = tp->V;
    if (P->separate_vtrans) {
        if (vec_transform_fwd(tp->V2, tp->V, N * g, dh, tp->M[FQ_F_MV]))
            goto fail;
        vin = tp->V2;
    }
    if (P->kv_bits != 16) {
        const real *kc = P->p + P->kvc[0], *vc = P->p + P->kvc[1];
        if (tp->ops.kv_asym(tp->Kh, tp->ksc, tp->kz, tp->Kp, N * g, dh, P->kv_bits, kc[0], kc[1]) ||
            tp->ops.kv_asym(tp->Vh, tp->vsc, tp->vz, vin, N * g, dh, P->kv_bits, vc[0], vc[1]))
            goto fail;
    }
    /* 9–11: attention, M_oᵀ·O per block, o input quantization (per-block scales), o_proj */
    attention_fwd(tp->O, NULL, tp->Qp, tp->Kh, tp->Vh, b, s, h, g, dh, tp->att);
    memset(&bf, 0, sizeof bf);
    bf.Lm = tp->M;
    bf.gLm = tp->gM;
    bf.lb = FQ_F_MO(0);
    bf.ls = 3;
    if (blk_fwd(tp, tp->O1, tp->O, N, T, P->hb, dh, &bf) ||
        act_q(tp, P, tp->Oh, tp->osc, tp->O1, N, qd, T, QL_O))
        goto fail;
    memcpy(tp->X2, x, sizeof(real) * (size_t)N * d);
    real_gemm(0, 1, N, d, qd, 1, tp->Oh, qd, tp->wh[QL_O], qd, 1, tp->X2, d);
    /* 12–14: RMSNorm2, ∘ c_ug, Kron(L_ug, R_ug), up/gate quantization, SwiGLU */
    rmsnorm_fwd(tp->Bn, tp->rstd2, tp->X2, l->mlp_norm, N, d, eps);
    if (chscale_act_fwd(tp->B1, tp->Bn, P->p + P->c_ug, N, d) ||
        kron_fwd(tp->B2, tp->B1, N, P->na1, P->na2, tp->M[FQ_F_LUG], tp->M[FQ_F_RUG], tp->work) ||
        act_q(tp, P, tp->Bh[0], tp->bsc[0], tp->B2, N, d, 1, QL_UP) ||
        act_q(tp, P, tp->Bh[1], tp->bsc[1], tp->B2, N, d, 1, QL_GATE))
        goto fail;
    real_gemm(0, 1, N, f, d, 1, tp->Bh[0], d, tp->wh[QL_UP], d, 0, tp->Hu, f);
    real_gemm(0, 1, N, f, d, 1, tp->Bh[1], d, tp->wh[QL_GATE], d, 0, tp->Hg, f);
    swiglu_fwd(tp->Z, tp->Hg, tp->Hu, (size_t)N * f);
    /* 15–16: ∘ c_d, block Kron(L_d, R_d), down input quantization, down_proj + residual */
    memset(&bf, 0, sizeof bf);
    bf.Lm = bf.Rm = tp->M;
    bf.lb = FQ_F_LD(0);
    bf.ls = 3;
    bf.rb = FQ_F_RD(0);
    bf.rs = 3;
    if (chscale_act_fwd(tp->Z1, tp->Z, P->p + P->c_d, N, f) ||
        blk_fwd(tp, tp->Z2, tp->Z1, N, T, P->nd1, P->nd2, &bf) ||
        act_q(tp, P, tp->Zh, tp->zsc, tp->Z2, N, f, T, QL_DOWN))
        goto fail;
    memcpy(y, tp->X2, sizeof(real) * (size_t)N * d);
    real_gemm(0, 1, N, d, f, 1, tp->Zh, f, tp->wh[QL_DOWN], f, 1, y, d);
    return FQ_OK;
fail:
    return fq_error_wrap(WHERE ":fq_layer_fwd");
}

/* ---- backward ---- */

/* STE backward of an activation quantizer; returns the gradient of its input (g_out itself
 * for 16 bits, else buf). */
static const real *act_q_bwd(fq_params *P, real *buf, const real *g_out, const real *in,
                             const real *sc, int rows, int k, int blocks, int lin)
{
    if (P->a_bits == 16)
        return g_out;
    const real *cl = P->p + P->lac[lin];
    real *gc = P->g + P->lac[lin];
    if (quant_act_sym_bwd(buf, gc, gc + 1, g_out, in, sc, rows, k, blocks, P->a_bits, cl[0],
                          cl[1]))
        return NULL;
    return buf;
}

/* From G_Ŵ (in tp->gw0) back to the factors' inverse transposes, the channel scale and the
 * LWC logits of linear lin. */
static int weight_bwd(fq_tape *tp, fq_params *P, const llama_layer *l, int lin)
{
    const llama_config *c = &P->cfg;
    int out = fq_linear_out(c, lin), in = fq_linear_in(c, lin), T, n1, n2, bits = P->w_bits;
    size_t coff;
    blk_factors bf;
    weight_transform_of(P, tp, lin, &bf, &T, &n1, &n2, &coff);
    const real *a = P->p + P->lwc_a[lin], *b = P->p + P->lwc_b[lin];
    real *ga = P->g + P->lwc_a[lin], *gb = P->g + P->lwc_b[lin];
    real *gwp; /* ∂L/∂W' */
    if (lin == QL_V && !P->separate_vtrans) {
        real *grot = tp->gw0;
        if (bits != 16) {
            if (quant_weight_lwc_bwd(tp->gw1, NULL, NULL, tp->gw0, tp->wrot, tp->wsc[lin], out,
                                     in, bits, tp->noclip, tp->noclip))
                return FQ_ERR;
            grot = tp->gw1;
        }
        vrot_bwd(tp->gw2, tp->gM[FQ_F_MV], grot, tp->wcl, c->n_kv_heads, c->head_dim, in,
                 tp->M[FQ_F_MV]);
        gwp = tp->gw2;
        if (bits != 16) {
            lwc_clamp_bwd(tp->gw1, ga, gb, tp->gw2, tp->wp[lin], out, in, a, b);
            gwp = tp->gw1;
        }
    } else if (bits != 16) {
        if (quant_weight_lwc_bwd(tp->gw1, ga, gb, tp->gw0, tp->wp[lin], tp->wsc[lin], out, in,
                                 bits, a, b))
            return FQ_ERR;
        gwp = tp->gw1;
    } else {
        gwp = tp->gw0;
    }
    const real *src = coff != FQ_NO_SCALE ? tp->w1[lin] : fq_layer_weight(l, lin);
    real *gsrc = coff != FQ_NO_SCALE ? (gwp == tp->gw2 ? tp->gw0 : tp->gw2) : NULL;
    if (blk_bwd(tp, gsrc, gwp, src, out, T, n1, n2, &bf))
        return FQ_ERR;
    if (gsrc && chscale_weight_bwd(NULL, P->g + coff, gsrc, fq_layer_weight(l, lin), P->p + coff,
                                   out, in))
        return FQ_ERR;
    return FQ_OK;
}

/* G_X̂ = G_Y·Ŵ (into gx, when not NULL) and G_Ŵ = G_Yᵀ·X̂ (into tp->gw0), then the weight
 * side backward of lin. */
static int linear_q_bwd(fq_tape *tp, fq_params *P, const llama_layer *l, int lin, real *gx,
                        const real *gy, const real *xh)
{
    const llama_config *c = &P->cfg;
    int out = fq_linear_out(c, lin), in = fq_linear_in(c, lin);
    if (gx)
        real_gemm(0, 0, tp->N, in, out, 1, gy, out, tp->wh[lin], in, 0, gx, in);
    real_gemm(1, 0, out, in, tp->N, 1, gy, out, xh, in, 0, tp->gw0, in);
    if (weight_bwd(tp, P, l, lin))
        return fq_error_wrap("weight %s", qlinear_names[lin]);
    return FQ_OK;
}

static void add_into(real *dst, const real *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] += src[i];
}

int fq_layer_bwd(fq_tape *tp, fq_params *P, const llama_layer *l, const rope_table *rope,
                 const real *g_y)
{
    if (check_call(tp, P, l, rope, g_y, g_y, "fq_layer_bwd"))
        return FQ_ERR;
    const llama_config *c = &P->cfg;
    const int N = tp->N, b = tp->b, s = tp->s, d = c->hidden, f = c->intermediate,
              h = c->n_heads, g = c->n_kv_heads, dh = c->head_dim, qd = h * dh, kd = g * dh,
              T = P->T;
    memset(P->g, 0, sizeof(real) * P->n);
    fq_factors_zero_grad(&tp->fm);
    blk_factors bf;
    const real *gq;
    real *gX2 = tp->s5;
    memcpy(gX2, g_y, sizeof(real) * (size_t)N * d);

    /* 16–15: down_proj, down input quantizer, block Kron(L_d, R_d), ∘ c_d */
    if (linear_q_bwd(tp, P, l, QL_DOWN, tp->t1, g_y, tp->Zh))
        goto fail;
    if (!(gq = act_q_bwd(P, tp->t2, tp->t1, tp->Z2, tp->zsc, N, f, T, QL_DOWN)))
        goto fail;
    memset(&bf, 0, sizeof bf);
    bf.Lm = bf.Rm = tp->M;
    bf.gLm = bf.gRm = tp->gM;
    bf.lb = FQ_F_LD(0);
    bf.ls = 3;
    bf.rb = FQ_F_RD(0);
    bf.rs = 3;
    real *gZ1 = gq == tp->t1 ? tp->t2 : tp->t1;
    if (blk_bwd(tp, gZ1, gq, tp->Z1, N, T, P->nd1, P->nd2, &bf) ||
        chscale_act_bwd(tp->t3, P->g + P->c_d, gZ1, tp->Z, P->p + P->c_d, N, f))
        goto fail;
    /* 14: SwiGLU, up/gate projections */
    memset(tp->t1, 0, sizeof(real) * (size_t)N * f);
    memset(tp->t2, 0, sizeof(real) * (size_t)N * f);
    swiglu_bwd(tp->t1, tp->t2, tp->t3, tp->Hg, tp->Hu, (size_t)N * f); /* t1 gate, t2 up */
    if (linear_q_bwd(tp, P, l, QL_UP, tp->s1, tp->t2, tp->Bh[0]) ||
        linear_q_bwd(tp, P, l, QL_GATE, tp->s2, tp->t1, tp->Bh[1]))
        goto fail;
    /* 13–12: the two input quantizers, Kron(L_ug, R_ug), ∘ c_ug, RMSNorm2 */
    if (P->a_bits == 16) {
        add_into(tp->s1, tp->s2, (size_t)N * d);
    } else {
        if (!act_q_bwd(P, tp->s3, tp->s1, tp->B2, tp->bsc[0], N, d, 1, QL_UP) ||
            !act_q_bwd(P, tp->s4, tp->s2, tp->B2, tp->bsc[1], N, d, 1, QL_GATE))
            goto fail;
        add_into(tp->s3, tp->s4, (size_t)N * d);
        memcpy(tp->s1, tp->s3, sizeof(real) * (size_t)N * d);
    }
    if (kron_bwd(tp->s2, tp->gM[FQ_F_LUG], tp->gM[FQ_F_RUG], tp->s1, tp->B1, N, P->na1, P->na2,
                 tp->M[FQ_F_LUG], tp->M[FQ_F_RUG], tp->work) ||
        chscale_act_bwd(tp->s3, P->g + P->c_ug, tp->s2, tp->Bn, P->p + P->c_ug, N, d))
        goto fail;
    rmsnorm_bwd(gX2, tp->s3, tp->X2, l->mlp_norm, tp->rstd2, N, d);
    /* 11–10: o_proj, o input quantizer (per-block scales), M_oᵀ·O per block */
    if (linear_q_bwd(tp, P, l, QL_O, tp->t1, gX2, tp->Oh))
        goto fail;
    if (!(gq = act_q_bwd(P, tp->t2, tp->t1, tp->O1, tp->osc, N, qd, T, QL_O)))
        goto fail;
    memset(&bf, 0, sizeof bf);
    bf.Lm = tp->M;
    bf.gLm = tp->gM;
    bf.lb = FQ_F_MO(0);
    bf.ls = 3;
    real *gO = gq == tp->t1 ? tp->t2 : tp->t1;
    if (blk_bwd(tp, gO, gq, tp->O, N, T, P->hb, dh, &bf))
        goto fail;
    /* 9: attention (recomputes the softmax) → G_Q', G_K̂, G_V̂ */
    real *gQp = gO == tp->t1 ? tp->t2 : tp->t1;
    memset(gQp, 0, sizeof(real) * (size_t)N * qd);
    memset(tp->k1, 0, sizeof(real) * (size_t)N * kd);
    memset(tp->k2, 0, sizeof(real) * (size_t)N * kd);
    attention_bwd(gQp, tp->k1, tp->k2, gO, tp->Qp, tp->Kh, tp->Vh, b, s, h, g, dh, tp->att);
    /* 8: KV quantizers (k1 = G_K̂, k2 = G_V̂ from the attention) */
    const real *gKp = tp->k1, *gVin = tp->k2;
    const real *vin = P->separate_vtrans ? tp->V2 : tp->V;
    if (P->kv_bits != 16) {
        const real *kc = P->p + P->kvc[0], *vc = P->p + P->kvc[1];
        real *gkc = P->g + P->kvc[0], *gvc = P->g + P->kvc[1];
        if (quant_kv_asym_bwd(tp->k3, gkc, gkc + 1, tp->k1, tp->Kp, tp->ksc, tp->kz, N * g, dh,
                              P->kv_bits, kc[0], kc[1]) ||
            quant_kv_asym_bwd(tp->k4, gvc, gvc + 1, tp->k2, vin, tp->vsc, tp->vz, N * g, dh,
                              P->kv_bits, vc[0], vc[1]))
            goto fail;
        gKp = tp->k3;
        gVin = tp->k4;
    }
    /* separate_vtrans: v ← v·M_v online */
    real *gV = (real *)gVin;
    if (P->separate_vtrans) {
        gV = gVin == tp->k2 ? tp->k4 : tp->k2;
        if (vec_transform_bwd(gV, tp->gM[FQ_F_MV], gVin, tp->V, N * g, dh, tp->M[FQ_F_MV]))
            goto fail;
    }
    /* 7–6: M_k, M_k^{-T}, then RoPE (inverse rotation), in spare buffers */
    real *gK = gKp == tp->k1 ? tp->k3 : tp->k1;
    real *gQ = tp->t3;
    if (vec_transform_bwd(gK, tp->gM[FQ_F_MK], gKp, tp->K, N * g, dh, tp->M[FQ_F_MK]) ||
        vec_transform_bwd(gQ, tp->gMi[FQ_F_MK], gQp, tp->Q, N * h, dh, tp->Mi[FQ_F_MK]))
        goto fail;
    rope_bwd(gQ, b, s, h, dh, rope);
    rope_bwd(gK, b, s, g, dh, rope);
    /* 5–1: projections, three input quantizers, Kron(L_a, R_a), ∘ c_a */
    if (linear_q_bwd(tp, P, l, QL_Q, tp->s1, gQ, tp->Ah[0]) ||
        linear_q_bwd(tp, P, l, QL_K, tp->s2, gK, tp->Ah[1]) ||
        linear_q_bwd(tp, P, l, QL_V, tp->s3, gV, tp->Ah[2]))
        goto fail;
    real *gA2 = tp->s1;
    if (P->a_bits == 16) {
        add_into(tp->s1, tp->s2, (size_t)N * d);
        add_into(tp->s1, tp->s3, (size_t)N * d);
    } else {
        if (!act_q_bwd(P, tp->s4, tp->s1, tp->A2, tp->asc[0], N, d, 1, QL_Q) ||
            !act_q_bwd(P, tp->s5, tp->s2, tp->A2, tp->asc[1], N, d, 1, QL_K))
            goto fail;
        add_into(tp->s4, tp->s5, (size_t)N * d);
        if (!act_q_bwd(P, tp->s5, tp->s3, tp->A2, tp->asc[2], N, d, 1, QL_V))
            goto fail;
        add_into(tp->s4, tp->s5, (size_t)N * d);
        gA2 = tp->s4;
    }
    real *gA1 = gA2 == tp->s1 ? tp->s2 : tp->s1;
    if (kron_bwd(gA1, tp->gM[FQ_F_LA], tp->gM[FQ_F_RA], gA2, tp->A1, N, P->na1, P->na2,
                 tp->M[FQ_F_LA], tp->M[FQ_F_RA], tp->work) ||
        chscale_act_bwd(NULL, P->g + P->c_a, gA1, tp->A, P->p + P->c_a, N, d))
        goto fail;
    if (fq_factors_bwd(&tp->fm, P))
        goto fail;
    return FQ_OK;
fail:
    return fq_error_wrap(WHERE ":fq_layer_bwd");
}
