/* baseline_quarot.h — the QuaRot-RTN baseline (ALGORITHM §8) in the common qlayer form.
 *
 * QuaRot makes activations easy to quantize by rotating them with Hadamard matrices, which
 * spread every outlier channel over all channels. Offline: the RMSNorm weights are folded
 * into the linears that read them (norms become ones), and the residual stream is rotated
 * by Q = D·H_d (D a seeded random ±1 diagonal): E ← E·Q, Wq/Wk/Wv/Wup/Wgate/lm_head ← W·Q,
 * Wo/Wdown ← Qᵀ·W. Per layer, in qlayer terms:
 *   - V/O: H_dh on the output side of each Wv head block (so the V cache lives in the
 *     rotated basis), M_o = H_h online across heads, and Wo's input side ← ·(H_h ⊗ H_dh);
 *   - K: M_k = M_k^{−T} = H_dh after RoPE (cancels in q·kᵀ, rotates the K cache);
 *   - down: online down_in = (L, R) with L ⊗ R = H_f, and Wdown ← Wdown·H_f;
 *   - attn_in and mlp_in stay identity (the residual rotation is offline).
 * Activation clip 0.9 on every linear input, K/V clip 0.95, weights RTN with the per-row
 * clip search of worker/weight_clip_mse.h. The FP function is unchanged up to rounding,
 * which the 16-bit test checks.
 *
 * Sizes with no Hadamard construction (h = 6, f = 172, …) use hadamard.h's seeded random
 * orthogonal fallback; the rotation set records which, and quarot_random_note() words the
 * one warning line the caller should print. With tp_blocks T, M_o and the down transform
 * are T identical diagonal blocks of order h/T and f/T, so no rotation crosses a shard.
 *
 * smoothrot (worker/baseline_smoothrot.h) is this pipeline after a SmoothQuant scaling of
 * the down_proj input, passed here as `down_smooth`.
 */
#ifndef FQ_BASELINE_QUAROT_H
#define FQ_BASELINE_QUAROT_H

#include "llama_model.h"
#include "qlayer.h"
#include "qmodel.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    float act_clip;   /* ratio on max and min of every linear input (QuaRot: 0.9) */
    float kv_clip;    /* ratio on max and min of the K and V caches (QuaRot: 0.95) */
    int mse_clip;     /* 1: weights by the per-row clip search; 0: plain RTN max|w| */
    uint64_t seed;    /* D's signs and the random-orthogonal fallbacks */
} quarot_opts;

/* act 0.9, kv 0.95, clip search on, seed 0. */
quarot_opts quarot_opts_default(void);
/* From a validated job: quantization.quarot_act_clip, quarot_kv_clip and seed. */
struct job;
quarot_opts quarot_opts_from_job(const struct job *j);

/* The rotations that QuaRot applies, built once and shared by every layer. */
enum { QR_RESIDUAL, QR_HEAD_DIM, QR_HEADS, QR_DOWN, QR_NROT };

typedef struct {
    int d, h, dh, f, blocks; /* blocks: tensor-parallel blocks of M_o and the down transform */
    real *sign;              /* [d] ±1: D of Q = D·H_d */
    int dk;                  /* H_d = dhk ⊗ Sylvester(d/dk), applied by the fast transform */
    real *dhk;               /* [dk, dk] */
    real *hdh;               /* [dh, dh] H_dh (M_k, Wv's output side, Wo's input side) */
    real *hh;                /* [h/blocks]² H_h (M_o blocks) */
    int fn1, fn2;            /* H_{f/blocks} = FL ⊗ FR, FL = H_K ⊗ Sylvester(fn1/K) */
    real *fl, *fr;           /* [fn1, fn1], [fn2, fn2] */
    int is_random[QR_NROT];  /* 1: that rotation is random orthogonal, not Hadamard */
    int order[QR_NROT];      /* order of the factor that had no construction */
} quarot_rotations;

int quarot_rotations_init(quarot_rotations *r, const llama_config *c, const qconfig *qc,
                          uint64_t seed);
void quarot_rotations_free(quarot_rotations *r);
/* 1 when a rotation fell back to random orthogonal, with one line naming them in buf;
 * 0 (buf empty) otherwise. */
int quarot_random_note(const quarot_rotations *r, char *buf, size_t len);

/* One decoder layer. down_smooth: NULL, or [f] SmoothQuant scales s of the down_proj input
 * (Wup rows ÷ s, Wdown columns × s before rotating). */
int baseline_quarot_layer(const llama_layer *l, const llama_config *c, const qconfig *qc,
                          const quarot_rotations *rot, const quarot_opts *o,
                          const float *down_smooth, qlayer *out);

/* The model-level parts: embed ← E·Q, final norm ← ones, lm_head ← (lm_head ∘ γ_final)·Q.
 * Allocates the three arrays ([V, d], [d], [V, d]). */
int quarot_rotate_head(const llama_model *fp, const quarot_rotations *rot, real **embed,
                       real **final_norm, real **lm_head);

/* A whole rotated and quantized model: what baseline_quarot produces. */
typedef struct {
    int n_layers;
    qlayer *layers;
    real *embed, *final_norm, *lm_head;
    quarot_rotations rot; /* kept for is_random / quarot_random_note */
} quarot_model;

/* All layers and the head. down_smooth: NULL or [n_layers, f] (smoothrot). */
int baseline_quarot(const llama_model *fp, const qconfig *qc, const quarot_opts *o,
                    const float *down_smooth, quarot_model *out);
void quarot_model_free(quarot_model *q);
/* Build the evaluation model; the embed, norm and head move into m (q keeps its layers
 * and must still be freed). */
int quarot_model_to_qmodel(quarot_model *q, const llama_config *c, const qconfig *qc,
                           qmodel *m);

#endif
