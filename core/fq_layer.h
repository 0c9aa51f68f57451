/* fq_layer.h — one FlatQuant decoder layer for calibration: its trainable parameters, the
 * fake-quantized training forward of ALGORITHM §4.4 and its hand-written backward (§4.5).
 *
 * The idea. Every trainable number of a layer lives in ONE flat array `p` (and its gradient
 * in `g`, same layout), ordered by optimiser group — transforms (Θ_U, Θ_V, λ of the nine
 * factors, or M itself in direct form), per-channel scales, weight-clip logits, activation /
 * KV clip logits — so AdamW sees four contiguous groups and a checkpoint of the parameters
 * is one memcpy. fq_params records where each piece sits (offsets into p).
 *
 * The forward saves into an fq_tape every activation the backward reads; the tape is
 * allocated once for a batch shape and reused every step (no allocation in the loop). The
 * backward recomputes nothing but the attention softmax and the Kronecker intermediates
 * (as llama_ops / kron do). Weight-side transforms re-run every step, as the reference does.
 *
 * Bits 16 for w, a or kv makes that quantizer the identity (and its clip logits receive no
 * gradient): the W4A16 recipe and the exactness tests use this. tp_blocks = T > 1 makes T_d
 * and M_o block-diagonal (T independent factor sets) with per-block activation scales for
 * the o and down inputs (ALGORITHM §7 option 1).
 *
 * Trade-off: the tape keeps ~20 activation tensors of the batch (for d 4096, f 14336,
 * 4 × 2048 tokens about 4 GB in fp32); the CPU path targets the small models, the GPU
 * kernels mirror these names with their own memory plan.
 *
 * Everything is `real`, so tests/unit/test_fq_layer_f64.c checks it in float64.
 */
#ifndef FQ_FQ_LAYER_H
#define FQ_FQ_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "llama_config.h"
#include "llama_model.h"
#include "llama_ops.h"
#include "qlayer.h"
#include "real.h"

/* ---- the recipe: plain values, the lead maps the job file onto it ---- */
typedef enum { FQ_SCALE_SQ = 0, FQ_SCALE_ONE = 1 } fq_scale_init;
/* Initial factors (issue 10): random = Haar (official); identity; hadamard = normalised
 * Hadamard factors of each factor's size (core/hadamard.h; sizes with no construction get
 * its seeded random-orthogonal fallback); smoothrot = Hadamard factors with c_a = c_ug = 1
 * and c_d the SmoothQuant scales of the smoothrot baseline (smooth_alpha), replacing
 * scale_init. Every one is an exact start: the merged weights cancel the transforms. */
typedef enum {
    FQ_INIT_RANDOM = 0,
    FQ_INIT_IDENTITY = 1,
    FQ_INIT_HADAMARD = 2,
    FQ_INIT_SMOOTHROT = 3
} fq_transform_init;

typedef struct {
    int w_bits, a_bits, kv_bits; /* 2..8, or 16 = not quantized */
    int epochs, batch;
    double lr;           /* transforms and per-channel scales */
    double clip_lr;      /* weight, activation and KV clip logits */
    double lr_min;       /* cosine floor, the same absolute value for every group */
    double weight_decay; /* AdamW, every group */
    int warmup_steps;    /* 0: none; else linear ramp from 1% chained with the cosine */
    double alpha;        /* sq_style exponent */
    double smooth_alpha; /* SmoothQuant exponent of the smoothrot init (c_d) */
    double clip_init;    /* initial value of every clip logit */
    fq_scale_init scale_init;
    fq_transform_init init;
    int direct_inv, separate_vtrans, share_act_clip;
    int tp_blocks;       /* T ≥ 1 */
    uint64_t seed;
} fq_recipe;

/* The official LLaMA W4A4KV4 recipe of ALGORITHM §4.1. */
fq_recipe fq_recipe_defaults(void);
/* Refuse impossible values (naming the field) and shapes the recipe cannot apply to. */
int fq_recipe_check(const fq_recipe *r, const llama_config *c);

/* ---- full-precision statistics for the sq_style scale init (§3.4) ---- */
typedef struct {
    int d, f;
    real *attn_in; /* [d] max over tokens |RMSNorm1 output| */
    real *mlp_in;  /* [d] max over tokens |RMSNorm2 output| */
    real *down_in; /* [f] max over tokens |silu(gate)∘up| */
    long tokens;
} fq_stats;

int fq_stats_init(fq_stats *st, const llama_config *c);
void fq_stats_free(fq_stats *st);
/* The FP layer forward (same math as llama_layer_fwd, x [b, s, d] in place) that also
 * folds this batch's per-channel maxima into st. The coordinator's FP pass calls it for
 * every calibration batch instead of llama_layer_fwd. */
int fq_stats_layer_fwd(fq_stats *st, real *x, const llama_layer *l, const llama_config *c,
                       const rope_table *rope, int b, int s, llama_scratch *w);

/* ---- parameters ---- */
enum { FQ_G_TRANSFORM, FQ_G_SCALE, FQ_G_WCLIP, FQ_G_ACLIP, FQ_NGROUPS };
extern const char *const fq_group_names[FQ_NGROUPS];

/* Fixed factors first; then, per TP block t, L_d[t], R_d[t], M_o[t]. */
enum { FQ_F_LA, FQ_F_RA, FQ_F_LUG, FQ_F_RUG, FQ_F_MK, FQ_F_MV, FQ_F_NFIXED };
#define FQ_F_LD(t) (FQ_F_NFIXED + 3 * (t))
#define FQ_F_RD(t) (FQ_F_NFIXED + 3 * (t) + 1)
#define FQ_F_MO(t) (FQ_F_NFIXED + 3 * (t) + 2)

typedef struct {
    char name[16]; /* "L_a", "R_d[1]", ... */
    int k;
    size_t theta_u, theta_v, lambda; /* offsets in p (SVD form) */
    size_t m;                        /* offset of M (direct form) */
} fq_factor;

typedef struct {
    llama_config cfg;
    int w_bits, a_bits, kv_bits;
    int direct_inv, separate_vtrans, share_act_clip;
    int T;             /* tp_blocks */
    int na1, na2;      /* split of d (T_a, T_ug) */
    int nd1, nd2;      /* split of f/T (T_d blocks) */
    int hb;            /* h/T: size of an M_o block */
    int nfactors;
    fq_factor *fac;
    size_t n;          /* number of parameters */
    real *p, *g;       /* values and gradients, [n] each */
    size_t group_off[FQ_NGROUPS + 1];
    size_t c_a, c_ug, c_d;                       /* [d], [d], [f] */
    size_t lwc_a[QL_NLINEAR], lwc_b[QL_NLINEAR]; /* [out] each */
    size_t lac[QL_NLINEAR];                      /* (cmax, cmin); aliased when shared */
    size_t kvc[2];                               /* K, V: (cmax, cmin) */
} fq_params;

/* Allocate and initialise (factors per r->init: §3.3 Haar-random, identity or Hadamard;
 * §3.4 scales from st, which may be NULL only for one_style without the smoothrot init;
 * clip logits = clip_init). l supplies the weights for sq_style and smoothrot.
 * Deterministic in r->seed. */
int fq_params_init(fq_params *P, const llama_config *c, const fq_recipe *r,
                   const llama_layer *l, const fq_stats *st);
void fq_params_free(fq_params *P);
/* Output rows of each linear (q, k, v, o, gate, up, down order). */
/* wm[j] = max over the rows of the nw row-major weights ws[i] [rows[i], n] of |w_rj|,
 * walked rows outer (a column-at-a-time walk strided through 0.86 G weights of a 70B layer
 * for 12 s); the result does not depend on the order. */
void fq_col_absmax(double *wm, const real *const *ws, const int *rows, int nw, int n);
int fq_linear_out(const llama_config *c, int lin);
int fq_linear_in(const llama_config *c, int lin);
/* min |λ| of factor i (direct form: 0, not meaningful). */
real fq_factor_lambda_min(const fq_params *P, int i);

/* ---- the parameter side, shared by the CPU and GPU steps (core/fq_factors.c) ----
 * Every factor's M and M^{-T} materialised from p, and the gradients with respect to them
 * that the tensor side accumulates. Each kind is one contiguous slab in factor order
 * (factor i at offset Σ_{j<i} k_j² of the slab), so M and M^{-T} travel as ONE block of
 * 2·total reals (M[0] onward) and their gradients as one block (gM[0] onward). */
typedef struct {
    int nfactors;
    size_t total;          /* Σ k² over the factors */
    real **M, **Mi;        /* [nfactors] pointers into the slab */
    real **gM, **gMi;      /* gradients w.r.t. M and M^{-T} (the tensor side adds into them) */
    real **U, **V;         /* SVD form: the orthogonal factors, kept for the backward */
    real *slab;            /* 6·total: M | Mi | gM | gMi | U | V */
    int nthreads;          /* factors run side by side on this many threads */
    int *order;            /* factor indices, largest k first (the longest solve starts first) */
    size_t fwork_n, dwork_n; /* per-thread work sizes (reals, doubles) */
    real *fwork;           /* nthreads · fwork_n */
    double *dwork;         /* nthreads · dwork_n */
} fq_factor_mats;

/* Threads: FLATQ_FACTOR_THREADS if set (1..64), else the online cores capped at 8 and at
 * the factor count. Each factor is computed by one thread with single-threaded BLAS, so
 * the results do not depend on the thread count. */
int fq_factor_mats_create(fq_factor_mats *fm, const fq_params *P);
void fq_factor_mats_free(fq_factor_mats *fm);
/* M, M^{-T} (and U, V) of every factor from P->p. */
int fq_factors_fwd(fq_factor_mats *fm, const fq_params *P);
/* gM = gMi = 0 before a backward. */
void fq_factors_zero_grad(fq_factor_mats *fm);
/* ADD the factor gradients to P->g (Θ_U, Θ_V, λ; or M in direct form). */
int fq_factors_bwd(fq_factor_mats *fm, fq_params *P);

/* Which factors transform a linear's weight rows (W̃' = L^{-1} W̃ R^{-T} per block, i.e.
 * the Kronecker op with (Mi[L], Mi[R])): block t of T uses L factor lb + ls·t and R factor
 * rb + rs·t on a [n1, n2] view; c_off is the channel scale applied first (⊘ c), or
 * FQ_NO_SCALE. */
#define FQ_NO_SCALE ((size_t)-1)
typedef struct {
    int lb, ls, rb, rs;
    int T, n1, n2;
    size_t c_off;
} fq_weight_side;
void fq_weight_side_of(const fq_params *P, int lin, fq_weight_side *ws);
/* The FP weight of linear lin (q, k, v, o, gate, up, down). */
const real *fq_layer_weight(const llama_layer *l, int lin);

/* ---- forward / backward ---- */
/* The fake-quantizer forwards the layer calls (quantizer.h signatures). Tests swap in a
 * straight-through surrogate to get an independent reference by finite differences. */
typedef struct {
    int (*act_sym)(real *out, real *scale, const real *in, int rows, int k, int blocks,
                   int bits, real cmax, real cmin);
    int (*kv_asym)(real *out, real *scale, real *zero, const real *in, int rows, int len,
                   int bits, real cmax, real cmin);
    int (*weight_lwc)(real *out, real *scale, const real *w, int rows, int cols, int bits,
                      const real *a, const real *b);
} fq_quant_ops;

typedef struct fq_tape fq_tape; /* opaque: the saved activations and scratch */

/* A tape for batches of b sequences of s tokens. ops NULL = the quantizer.h functions. */
int fq_tape_create(fq_tape **tp, const fq_params *P, int b, int s, const fq_quant_ops *ops);
void fq_tape_free(fq_tape *tp);

/* y [b·s, d] = the fake-quantized layer applied to x [b·s, d] (positions 0..s−1 of each
 * sequence, causal). Fails on non-finite factors or activations. */
int fq_layer_fwd(fq_tape *tp, const fq_params *P, const llama_layer *l,
                 const rope_table *rope, const real *x, real *y);
/* P->g = ∂L/∂p given g_y = ∂L/∂y (overwritten, not accumulated) for the last forward. */
int fq_layer_bwd(fq_tape *tp, fq_params *P, const llama_layer *l, const rope_table *rope,
                 const real *g_y);

#endif
