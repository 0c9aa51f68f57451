/* fq_merge.h — reparameterisation of a trained FlatQuant layer (ALGORITHM §5, steps 1–3):
 * the learned factors materialised, the input-side transforms folded into each weight
 * (⊘ c, then the Kronecker product of inverse transposes), the learned weight clip
 * applied, M_v folded into Wv's output rows (unless separate_vtrans), c_a and c_ug folded
 * into the norms and c_d into Wup's rows (after Wup's own clip), the clip logits turned
 * into ratios σ(·).
 *
 * All of it is computed in float64 with its own small routines (Cayley solve, inverse,
 * Kronecker on rows) and only then cast to `real`: the training path and this one share
 * no factor code, so comparing the merged layer's forward with the training forward
 * (tests/unit/test_fq_merge_f64.c) checks both. The weight quantization (RTN, §5.4) and
 * packing happen in worker/layer_reparam.c, which turns this into a qlayer.
 */
#ifndef FQ_FQ_MERGE_H
#define FQ_FQ_MERGE_H

#include "fq_layer.h"

typedef struct {
    int T;                          /* tp_blocks */
    real *attn_norm, *mlp_norm;     /* γ1 ∘ c_a, γ2 ∘ c_ug [d] */
    real *La, *Ra, *Lug, *Rug;      /* [na1²], [na2²] */
    real *Ld, *Rd;                  /* [T, nd1²], [T, nd2²] */
    real *Mo;                       /* [T, hb²]: O ← M_oᵀ·O per block */
    real *Mk, *Mk_inv_t, *Mv;       /* [dh²]; Mv is online only with separate_vtrans */
    real *w[QL_NLINEAR];            /* merged, clipped weights [out, in] */
    real act_clip[QL_NLINEAR][2];   /* σ(cmax), σ(cmin) */
    real kv_clip[2][2];             /* K, V */
} fq_merged;

/* Merge P (trained for layer l) into m. Fails on non-finite or singular factors. */
int fq_merge(fq_merged *m, const fq_params *P, const llama_layer *l);
/* The same with weights = 0: everything but m->w (left NULL, and l's weights may be NULL),
 * for a caller that merges the weights elsewhere (the GPU: kernels/fq_layer_cuda.h,
 * fq_tape_cuda_merged_weights); weights = 1 is fq_merge. */
int fq_merge_parts(fq_merged *m, const fq_params *P, const llama_layer *l, int weights);
void fq_merged_free(fq_merged *m);

#endif
