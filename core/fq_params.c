/* fq_params.c — the recipe, the full-precision statistics and the trainable parameters of
 * one FlatQuant layer (fq_layer.h): layout, validation and initialisation.
 *
 * Layout: the flat array is ordered by optimiser group (transforms | scales | weight clips
 * | activation clips) so every AdamW group is one contiguous slice. Within the transforms
 * the factors come in a fixed order (L_a R_a L_ug R_ug M_k M_v, then per TP block
 * L_d R_d M_o), each Θ_U, Θ_V, λ (or M in direct form). Initialisation draws from one seeded
 * generator in that order, so a seed fixes every initial factor. The Hadamard starts
 * (issue 10) reuse core/hadamard.h's matrices and core/transform_init.h's inverse Cayley.
 */
#include "fq_layer.h"
#include "llama_capture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cayley.h"
#include "error.h"
#include "hadamard.h"
#include "kron.h"
#include "rng.h"
#include "transform_init.h"

const char *const fq_group_names[FQ_NGROUPS] = {"transforms", "channel scales",
                                                "weight clips", "activation clips"};

fq_recipe fq_recipe_defaults(void)
{
    fq_recipe r;
    memset(&r, 0, sizeof r);
    r.w_bits = 4;
    r.a_bits = 4;
    r.kv_bits = 4;
    r.epochs = 15;
    r.batch = 4;
    r.lr = 5e-3;
    r.clip_lr = 5e-2;
    r.lr_min = 5e-6;
    r.weight_decay = 0.01;
    r.warmup_steps = 0;
    r.alpha = 0.3;
    r.smooth_alpha = 0.5;
    r.clip_init = 4.0;
    r.scale_init = FQ_SCALE_SQ;
    r.init = FQ_INIT_RANDOM;
    r.tp_blocks = 1;
    r.seed = 0;
    return r;
}

static int bits_ok(int b) { return (b >= 2 && b <= 8) || b == 16; }

int fq_recipe_check(const fq_recipe *r, const llama_config *c)
{
    static const char *where = "core/fq_params.c:fq_recipe_check";
    if (!r || !c)
        return fq_error("%s: NULL recipe or config (expected both)", where);
    const char *bn[3] = {"w_bits", "a_bits", "kv_bits"};
    int bv[3] = {r->w_bits, r->a_bits, r->kv_bits};
    for (int i = 0; i < 3; i++)
        if (!bits_ok(bv[i]))
            return fq_error("%s: field '%s' is %d (expected 2..8, or 16 for no quantization)",
                            where, bn[i], bv[i]);
    if (r->epochs < 1)
        return fq_error("%s: field 'epochs' is %d (expected >= 1)", where, r->epochs);
    if (r->batch < 1)
        return fq_error("%s: field 'batch' is %d (expected >= 1)", where, r->batch);
    const char *ln[4] = {"lr", "clip_lr", "lr_min", "weight_decay"};
    double lv[4] = {r->lr, r->clip_lr, r->lr_min, r->weight_decay};
    for (int i = 0; i < 4; i++)
        if (!isfinite(lv[i]) || lv[i] < 0 || (i < 2 && lv[i] == 0))
            return fq_error("%s: field '%s' is %g (expected a finite value %s)", where, ln[i],
                            lv[i], i < 2 ? "> 0" : ">= 0");
    if (r->warmup_steps < 0)
        return fq_error("%s: field 'warmup_steps' is %d (expected >= 0)", where,
                        r->warmup_steps);
    if (!(r->alpha >= 0 && r->alpha <= 1))
        return fq_error("%s: field 'alpha' is %g (expected 0..1)", where, r->alpha);
    if (!(r->smooth_alpha >= 0 && r->smooth_alpha <= 1))
        return fq_error("%s: field 'smooth_alpha' is %g (expected 0..1)", where,
                        r->smooth_alpha);
    if (!isfinite(r->clip_init))
        return fq_error("%s: field 'clip_init' is %g (expected a finite logit)", where,
                        r->clip_init);
    if (r->scale_init != FQ_SCALE_SQ && r->scale_init != FQ_SCALE_ONE)
        return fq_error("%s: field 'scale_init' is %d (expected sq_style or one_style)", where,
                        (int)r->scale_init);
    if (r->init != FQ_INIT_RANDOM && r->init != FQ_INIT_IDENTITY &&
        r->init != FQ_INIT_HADAMARD && r->init != FQ_INIT_SMOOTHROT)
        return fq_error("%s: field 'init' is %d (expected random, identity, hadamard or "
                        "smoothrot)", where, (int)r->init);
    int T = r->tp_blocks;
    if (T < 1 || c->n_heads % T || c->n_kv_heads % T || c->intermediate % T)
        return fq_error("%s: field 'tp_blocks' is %d (expected >= 1 dividing the %d heads, "
                        "%d KV heads and intermediate size %d)", where, T, c->n_heads,
                        c->n_kv_heads, c->intermediate);
    if (c->hidden <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 || c->head_dim <= 0 ||
        c->intermediate <= 0 || c->n_heads % c->n_kv_heads || c->head_dim % 2)
        return fq_error("%s: model shape d %d, h %d, g %d, dh %d, f %d (expected positive "
                        "sizes, g dividing h, even head_dim)", where, c->hidden, c->n_heads,
                        c->n_kv_heads, c->head_dim, c->intermediate);
    if (r->w_bits <= 4 && (c->hidden % 2 || c->intermediate % 2))
        return fq_error("%s: field 'w_bits' is %d but an input size is odd (expected even "
                        "sizes for packed int4 weights)", where, r->w_bits);
    return FQ_OK;
}

int fq_linear_out(const llama_config *c, int lin)
{
    switch (lin) {
    case QL_Q: return c->n_heads * c->head_dim;
    case QL_K:
    case QL_V: return c->n_kv_heads * c->head_dim;
    case QL_O:
    case QL_DOWN: return c->hidden;
    default: return c->intermediate;
    }
}

int fq_linear_in(const llama_config *c, int lin)
{
    switch (lin) {
    case QL_O: return c->n_heads * c->head_dim;
    case QL_DOWN: return c->intermediate;
    default: return c->hidden;
    }
}

/* ---- statistics ---- */

int fq_stats_init(fq_stats *st, const llama_config *c)
{
    memset(st, 0, sizeof *st);
    if (!c || c->hidden <= 0 || c->intermediate <= 0)
        return fq_error("core/fq_params.c:fq_stats_init: invalid model shape (expected "
                        "positive hidden and intermediate sizes)");
    st->d = c->hidden;
    st->f = c->intermediate;
    st->attn_in = fq_calloc((size_t)st->d, sizeof(real), "attention input maxima");
    st->mlp_in = fq_calloc((size_t)st->d, sizeof(real), "MLP input maxima");
    st->down_in = fq_calloc((size_t)st->f, sizeof(real), "down input maxima");
    if (!st->attn_in || !st->mlp_in || !st->down_in) {
        fq_stats_free(st);
        return FQ_ERR;
    }
    return FQ_OK;
}

void fq_stats_free(fq_stats *st)
{
    free(st->attn_in);
    free(st->mlp_in);
    free(st->down_in);
    memset(st, 0, sizeof *st);
}

static void colmax_abs(real *mx, const real *x, long rows, int n)
{
    for (long r = 0; r < rows; r++) {
        const real *xr = x + r * n;
        for (int j = 0; j < n; j++) {
            real a = fabs(xr[j]);
            if (a > mx[j])
                mx[j] = a;
        }
    }
}

int fq_stats_layer_fwd(fq_stats *st, real *x, const llama_layer *l, const llama_config *c,
                       const rope_table *rope, int b, int s, llama_scratch *w)
{
    if (!st || !x || !l || !c || !rope || !w || b <= 0 || s <= 0 || b > w->b || s > w->s ||
        st->d != c->hidden || st->f != c->intermediate)
        return fq_error("core/fq_params.c:fq_stats_layer_fwd: invalid arguments (expected "
                        "stats for this model and a scratch for %d x %d tokens)", b, s);
    /* the FP forward with its linear inputs captured, then their per-channel maxima */
    int n = b * s, d = c->hidden, f = c->intermediate;
    llama_layer_inputs cap = {0};
    cap.attn_in = fq_malloc(sizeof(real) * (size_t)n * d, "stats capture");
    cap.mlp_in = fq_malloc(sizeof(real) * (size_t)n * d, "stats capture");
    cap.down_in = fq_malloc(sizeof(real) * (size_t)n * f, "stats capture");
    if (!cap.attn_in || !cap.mlp_in || !cap.down_in) {
        free(cap.attn_in);
        free(cap.mlp_in);
        free(cap.down_in);
        return FQ_ERR;
    }
    llama_layer_fwd_capture(x, l, c, rope, b, s, w, &cap);
    colmax_abs(st->attn_in, cap.attn_in, n, d);
    colmax_abs(st->mlp_in, cap.mlp_in, n, d);
    colmax_abs(st->down_in, cap.down_in, n, f);
    free(cap.attn_in);
    free(cap.mlp_in);
    free(cap.down_in);
    st->tokens += n;
    return FQ_OK;
}

/* ---- parameters ---- */

void fq_params_free(fq_params *P)
{
    if (!P)
        return;
    free(P->fac);
    free(P->p);
    free(P->g);
    memset(P, 0, sizeof *P);
}

real fq_factor_lambda_min(const fq_params *P, int i)
{
    if (P->direct_inv)
        return 0;
    return factor_lambda_min_abs(P->p + P->fac[i].lambda, P->fac[i].k);
}

void fq_col_absmax(double *wm, const real *const *ws, const int *rows, int nw, int n)
{
    for (int j = 0; j < n; j++)
        wm[j] = 0;
    for (int i = 0; i < nw; i++)
        for (long r = 0; r < rows[i]; r++) {
            const real *wr = ws[i] + r * n;
            for (int j = 0; j < n; j++) {
                double a = fabs((double)wr[j]);
                wm[j] = a > wm[j] ? a : wm[j];
            }
        }
}

/* c_j = max(w̄_j^{1−α} / x̄_j^α, 1e−5), w̄ over the rows of the concatenated consumers. */
static int sq_scale_init(real *c, const real *xmax, const real *const *ws, const int *rows,
                         int nw, int n, double alpha)
{
    double *wm = fq_malloc(sizeof(double) * (size_t)n, "weight column maxima");
    if (!wm)
        return FQ_ERR;
    fq_col_absmax(wm, ws, rows, nw, n);
    for (int j = 0; j < n; j++) {
        double xm = fmax(1e-5, (double)xmax[j]);
        c[j] = (real)fmax(pow(wm[j], 1 - alpha) / pow(xm, alpha), 1e-5);
    }
    free(wm);
    return FQ_OK;
}

/* The smoothrot baseline's rule (worker/baseline_smoothrot.c, ALGORITHM §8) as a
 * FlatQuant scale: s_j = max(x̄_j^α / max(w̄_j, 1e−5)^{1−α}, 1e−5) divides the activation,
 * so c_j = 1/s_j multiplies it. w̄ over the rows of Wdown [d, f]. */
static int smoothquant_scale_init(real *c, const real *xmax, const real *wdown, int d, int f,
                                  double alpha)
{
    double *wm = fq_malloc(sizeof(double) * (size_t)f, "weight column maxima");
    if (!wm)
        return FQ_ERR;
    fq_col_absmax(wm, &wdown, &d, 1, f);
    for (int j = 0; j < f; j++) {
        double s = fmax(pow((double)xmax[j], alpha) / pow(fmax(wm[j], 1e-5), 1 - alpha), 1e-5);
        c[j] = (real)(1 / s);
    }
    free(wm);
    return FQ_OK;
}

/* Factor F starts as the normalised Hadamard matrix of its size (seeded random-orthogonal
 * where hadamard.h has no construction): M itself in direct form, else SVD-form
 * parameters that reproduce it. */
static int factor_init_hadamard(fq_params *P, const fq_factor *F, uint64_t seed,
                                rng_state *rng)
{
    int k = F->k, is_random;
    real *h = fq_malloc(sizeof(real) * (size_t)k * k, "Hadamard factor");
    int rc = h ? hadamard_matrix(k, h, seed, &is_random) : FQ_ERR;
    if (rc == FQ_OK && P->direct_inv)
        memcpy(P->p + F->m, h, sizeof(real) * (size_t)k * k);
    else if (rc == FQ_OK)
        rc = factor_init_orthogonal(P->p + F->theta_u, P->p + F->theta_v, P->p + F->lambda,
                                    h, k, rng);
    free(h);
    return rc == FQ_OK ? FQ_OK : fq_error_wrap("factor %s (%dx%d)", F->name, k, k);
}

int fq_params_init(fq_params *P, const llama_config *c, const fq_recipe *r,
                   const llama_layer *l, const fq_stats *st)
{
    static const char *where = "core/fq_params.c:fq_params_init";
    if (!P)
        return fq_error("%s: NULL params (expected a struct to fill)", where);
    memset(P, 0, sizeof *P);
    if (fq_recipe_check(r, c))
        return fq_error_wrap("%s", where);
    const int smoothrot = r->init == FQ_INIT_SMOOTHROT;
    if ((r->scale_init == FQ_SCALE_SQ || smoothrot) &&
        (!st || !l || st->d != c->hidden || st->f != c->intermediate || st->tokens <= 0))
        return fq_error("%s: %s scale init needs the layer weights and FP statistics "
                        "over at least one token (expected fq_stats from the FP pass)", where,
                        smoothrot ? "the smoothrot" : "sq_style");
    P->cfg = *c;
    P->w_bits = r->w_bits;
    P->a_bits = r->a_bits;
    P->kv_bits = r->kv_bits;
    P->direct_inv = r->direct_inv;
    P->separate_vtrans = r->separate_vtrans;
    P->share_act_clip = r->share_act_clip;
    P->T = r->tp_blocks;
    const int d = c->hidden, f = c->intermediate, h = c->n_heads, dh = c->head_dim, T = P->T;
    P->hb = h / T;
    if (kron_split(d, &P->na1, &P->na2, NULL) || kron_split(f / T, &P->nd1, &P->nd2, NULL))
        return fq_error_wrap("%s", where);

    P->nfactors = FQ_F_NFIXED + 3 * T;
    P->fac = fq_calloc((size_t)P->nfactors, sizeof(fq_factor), "factor table");
    if (!P->fac)
        return FQ_ERR;
    static const char *fixed[FQ_F_NFIXED] = {"L_a", "R_a", "L_ug", "R_ug", "M_k", "M_v"};
    int fk[FQ_F_NFIXED] = {P->na1, P->na2, P->na1, P->na2, dh, dh};
    for (int i = 0; i < FQ_F_NFIXED; i++) {
        snprintf(P->fac[i].name, sizeof P->fac[i].name, "%s", fixed[i]);
        P->fac[i].k = fk[i];
    }
    for (int t = 0; t < T; t++) {
        const char *bn[3] = {"L_d", "R_d", "M_o"};
        int bk[3] = {P->nd1, P->nd2, P->hb};
        for (int j = 0; j < 3; j++) {
            fq_factor *F = &P->fac[FQ_F_NFIXED + 3 * t + j];
            if (T == 1)
                snprintf(F->name, sizeof F->name, "%s", bn[j]);
            else
                snprintf(F->name, sizeof F->name, "%s[%d]", bn[j], t);
            F->k = bk[j];
        }
    }
    size_t off = 0;
    P->group_off[FQ_G_TRANSFORM] = off;
    for (int i = 0; i < P->nfactors; i++) {
        fq_factor *F = &P->fac[i];
        size_t kk = (size_t)F->k * F->k;
        if (P->direct_inv) {
            F->m = off;
            off += kk;
        } else {
            F->theta_u = off;
            F->theta_v = off + kk;
            F->lambda = off + 2 * kk;
            off += 2 * kk + (size_t)F->k;
        }
    }
    P->group_off[FQ_G_SCALE] = off;
    P->c_a = off;
    P->c_ug = off + d;
    P->c_d = off + 2 * (size_t)d;
    off += 2 * (size_t)d + f;
    P->group_off[FQ_G_WCLIP] = off;
    for (int i = 0; i < QL_NLINEAR; i++) {
        int o = fq_linear_out(c, i);
        P->lwc_a[i] = off;
        P->lwc_b[i] = off + o;
        off += 2 * (size_t)o;
    }
    P->group_off[FQ_G_ACLIP] = off;
    for (int i = 0; i < QL_NLINEAR; i++) {
        P->lac[i] = off;
        off += 2;
    }
    if (P->share_act_clip) {
        P->lac[QL_K] = P->lac[QL_V] = P->lac[QL_Q];
        P->lac[QL_GATE] = P->lac[QL_UP];
    }
    P->kvc[0] = off;
    P->kvc[1] = off + 2;
    off += 4;
    P->group_off[FQ_NGROUPS] = off;
    P->n = off;
    P->p = fq_calloc(off, sizeof(real), "layer parameters");
    P->g = fq_calloc(off, sizeof(real), "layer gradients");
    if (!P->p || !P->g) {
        fq_params_free(P);
        return FQ_ERR;
    }

    /* Factors: Haar-random Θ (both U and V; M itself in direct form), identity, or a
     * normalised Hadamard matrix of the factor's size (transform_init.h). */
    rng_state rng;
    rng_seed(&rng, r->seed);
    for (int i = 0; i < P->nfactors; i++) {
        fq_factor *F = &P->fac[i];
        int k = F->k;
        if (r->init == FQ_INIT_HADAMARD || smoothrot) {
            if (factor_init_hadamard(P, F, r->seed + (uint64_t)i, &rng))
                goto fail;
            continue;
        }
        if (P->direct_inv) {
            real *M = P->p + F->m;
            if (r->init == FQ_INIT_RANDOM) {
                if (factor_init_haar(M, k, &rng))
                    goto fail;
            } else {
                for (int j = 0; j < k; j++)
                    M[(size_t)j * k + j] = 1;
            }
            continue;
        }
        if (r->init == FQ_INIT_RANDOM &&
            (factor_init_haar(P->p + F->theta_u, k, &rng) ||
             factor_init_haar(P->p + F->theta_v, k, &rng)))
            goto fail;
        for (int j = 0; j < k; j++)
            P->p[F->lambda + j] = 1;
    }
    /* Per-channel scales. */
    if (smoothrot) {
        /* the smoothrot baseline's scaling: down_proj input only, c = 1/s_SmoothQuant */
        for (size_t j = P->group_off[FQ_G_SCALE]; j < P->group_off[FQ_G_WCLIP]; j++)
            P->p[j] = 1;
        if (!l->wdown)
            return fq_params_free(P), fq_error("%s: layer weight down missing", where);
        if (smoothquant_scale_init(P->p + P->c_d, st->down_in, l->wdown, d, f,
                                   r->smooth_alpha))
            goto fail;
    } else if (r->scale_init == FQ_SCALE_ONE) {
        for (size_t j = P->group_off[FQ_G_SCALE]; j < P->group_off[FQ_G_WCLIP]; j++)
            P->p[j] = 1;
    } else {
        const real *wa[3] = {l->wq, l->wk, l->wv}, *wm[2] = {l->wup, l->wgate},
                   *wd[1] = {l->wdown};
        int ra[3] = {fq_linear_out(c, QL_Q), fq_linear_out(c, QL_K), fq_linear_out(c, QL_V)};
        int rm[2] = {f, f}, rd[1] = {d};
        for (int i = 0; i < 3; i++)
            if (!wa[i] || (i < 2 && !wm[i]))
                return fq_params_free(P), fq_error("%s: layer weights missing (expected "
                                                   "q, k, v, up, gate, down)", where);
        if (!wd[0])
            return fq_params_free(P), fq_error("%s: layer weight down missing", where);
        if (sq_scale_init(P->p + P->c_a, st->attn_in, wa, ra, 3, d, r->alpha) ||
            sq_scale_init(P->p + P->c_ug, st->mlp_in, wm, rm, 2, d, r->alpha) ||
            sq_scale_init(P->p + P->c_d, st->down_in, wd, rd, 1, f, r->alpha))
            goto fail;
    }
    for (size_t j = P->group_off[FQ_G_WCLIP]; j < P->n; j++)
        P->p[j] = (real)r->clip_init;
    return FQ_OK;
fail:
    fq_error_wrap("%s", where);
    fq_params_free(P);
    return FQ_ERR;
}
