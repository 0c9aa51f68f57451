/* qlayer_fwd.h — the CPU forward of a quantized layer (fake quantization).
 *
 * Runs a qlayer exactly as the inference path computes it (ALGORITHM §6): online
 * transforms, per-token activation quantization with the learned clips (one scale per
 * token, or per TP block), K/V quantization per (token, KV head), weights dequantized
 * from their int codes. The result is what the CUDA kernels must match and what
 * `flatq eval` scores for a quantized checkpoint. A qlayer is first expanded into a
 * qlayer_rt (dequantized `real` weights and factors), once per evaluation.
 */
#ifndef FQ_QLAYER_FWD_H
#define FQ_QLAYER_FWD_H

#include "llama_ops.h"
#include "qlayer.h"
#include "real.h"

typedef struct {
    int n1, n2, blocks;
    real *L, *R;
} qkron_rt;

typedef struct {
    real *attn_norm, *mlp_norm;
    qkron_rt attn_in, mlp_in, down_in, o_in; /* o_in: M_o blocks as L with R = I_dh */
    real *Mk, *Mk_inv_t, *Mv;
    real *w[QL_NLINEAR];
    real act_clip[QL_NLINEAR][2]; /* clip logits are not needed: these are σ values */
    real kv_clip[2][2];
} qlayer_rt;

int qlayer_rt_init(qlayer_rt *rt, const qlayer *q, const llama_config *c);
void qlayer_rt_free(qlayer_rt *rt);

/* Work buffers for one forward over n = b·s tokens. */
typedef struct {
    int n;
    real *a, *t, *q, *k, *v, *att, *gate, *up, *scores, *scale, *zero, *work;
} qlayer_scratch;
int qlayer_scratch_init(qlayer_scratch *w, const llama_config *c, int b, int s);
void qlayer_scratch_free(qlayer_scratch *w);

/* x [b, s, d] ← quantized layer(x), in place. */
int qlayer_fwd(real *x, const qlayer_rt *l, const llama_config *c, const qconfig *qc,
               const rope_table *rope, int b, int s, qlayer_scratch *w);

/* Called with each linear's actual input — transformed and fake-quantized, x̂ [rows, k] —
 * just before its GEMM (order q, k, v, o, up, gate, down). Return 0 to go on, 1 to stop
 * the forward there (x is then left half-computed), FQ_ERR to fail it. The GPTQ pass
 * collects its Hessians this way. */
typedef int (*qlayer_input_fn)(void *ctx, int lin, const real *xhat, int rows, int k);

/* qlayer_fwd with an observer of the linear inputs (on may be NULL). */
int qlayer_fwd_observed(real *x, const qlayer_rt *l, const llama_config *c, const qconfig *qc,
                        const rope_table *rope, int b, int s, qlayer_scratch *w,
                        qlayer_input_fn on, void *ctx);

#endif
