/* qlayer.h — a quantized decoder layer as flatq stores and runs it.
 *
 * This is the product of calibration (any method: flatquant, rtn, quarot, smoothrot) and
 * the input of every quantized forward (CPU fake-quant eval, CUDA kernels). All methods
 * share one shape: online Kronecker transforms before the q/k/v, up/gate and down inputs,
 * an online head-mixing transform before o_proj, a per-head K transform after RoPE, and
 * seven quantized linears with per-output-row scales. A method without some transform
 * stores identity factors, so one forward serves all. The on-disk names and dtypes are
 * documented in core/FORMAT.md.
 */
#ifndef FQ_QLAYER_H
#define FQ_QLAYER_H

#include "llama_config.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

enum { QL_Q, QL_K, QL_V, QL_O, QL_GATE, QL_UP, QL_DOWN, QL_NLINEAR };
extern const char *const qlinear_names[QL_NLINEAR]; /* "q_proj", ... as in HF names */

typedef struct {
    int out, in;
    int bits;         /* 2..8: integer codes; 16: not quantized (w holds the weight) */
    uint8_t *codes;   /* bits <= 4: packed [out, in/2]; 5..8: int8 [out, in] */
    float *scales;    /* [out]: w ≈ scales[r] · code */
    float *w;         /* bits == 16: [out, in] */
} qlinear;

/* Kronecker transform y = x (L ⊗ R) on rows of length blocks·n1·n2: `blocks` independent
 * block-diagonal parts (tensor-parallel aware; 1 = the plain transform). */
typedef struct {
    int n1, n2, blocks;
    float *L; /* [blocks, n1, n1] */
    float *R; /* [blocks, n2, n2] */
} qkron;

typedef struct {
    int w_bits, a_bits, kv_bits; /* 16 = not quantized */
    int kv_sym;                  /* 0: asymmetric K/V (the recipe) */
    int tp_blocks;               /* block-diagonal T_d / M_o and per-block act scales */
    int separate_vtrans;
    char method[16];             /* flatquant | rtn | quarot | smoothrot */
} qconfig;

typedef struct {
    int hidden, n_heads, head_dim; /* shapes the transforms below need */
    float *attn_norm, *mlp_norm; /* γ1', γ2' [d] (per-channel scales folded in) */
    qkron attn_in, mlp_in, down_in;
    int o_blocks;                /* M_o as o_blocks diagonal blocks of (h/o_blocks)² */
    float *Mo;                   /* [o_blocks, hb, hb]: O ← M_oᵀ·O on the [h, dh] view */
    float *Mk, *Mk_inv_t;        /* [dh, dh]: k ← k·M_k, q ← q·M_k^{−T} after RoPE */
    float *Mv;                   /* [dh, dh] only with separate_vtrans: v ← v·M_v online */
    qlinear lin[QL_NLINEAR];
    float act_clip[QL_NLINEAR][2]; /* σ(cmax), σ(cmin) of each linear's input quantizer */
    float kv_clip[2][2];           /* K, V: σ(cmax), σ(cmin) */
} qlayer;

void qlayer_free(qlayer *q);
/* Free a linear's codes, scales and weight, and zero it. */
void qlinear_free(qlinear *l);
/* Allocate identity transforms and empty linears for the shapes of c (and tp blocks). */
int qlayer_alloc(qlayer *q, const llama_config *c, const qconfig *qc);

/* Pack / unpack signed codes in [−8, 7] two per byte: element 2k in the low nibble, 2k+1 in
 * the high nibble, two's complement (bits <= 4). n must be even. */
void int4_pack(const int8_t *codes, size_t n, uint8_t *packed);
void int4_unpack(const uint8_t *packed, size_t n, int8_t *codes);

/* Quantize a weight [out, in] row-wise, symmetric, to `bits` (RTN): s_r = max|w_r| / qmax
 * (clamped ≥ 1e−5 / qmax); codes = clamp(rint(w/s), −qmax−1, qmax). Fills l (allocates). */
int qlinear_quantize_rtn(qlinear *l, const float *w, int out, int in, int bits);
/* RTN's code of one weight on scale s, in float as qlinear_quantize_rtn computes it:
 * rint(w / s) clamped to [−qmax − 1, qmax] (the GPTQ clip search scores scales with it). */
static inline float qlinear_rtn_code(float w, float s, float qmax)
{
    return fminf(fmaxf(rintf(w / s), -qmax - 1), qmax);
}
/* Dequantized weight [out, in] (w ≈ s·code, or the fp32 weight for 16 bits). */
int qlinear_dequantize(const qlinear *l, float *w);

#endif
