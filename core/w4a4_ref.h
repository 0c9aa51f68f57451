/* w4a4_ref.h — plain-C references of the W4A4 inference kernels (kernels/w4a4.h), the
 * truth the CUDA kernels are checked against bit for bit (codes, int32 accumulators, bf16
 * outputs) or within a stated tolerance (attention).
 *
 * Names are the kernels' minus `_cuda`, arguments the same minus the context; every pointer
 * is HOST memory and the layouts are those of kernels/w4a4.h. The math reuses what core/
 * already has: the Kronecker transform is kron_fwd (core/kron.c) and the quantizers are the
 * ratio forms of core/quantizer.c; the codes are read back from their dequantized output
 * (rint(û/s) recovers the integer exactly, since |q| ≤ 15 leaves the float product many
 * bits of margin). So the real path and the fake-quant path cannot drift apart.
 *
 * The shape checks live here too (w4a4_check_*), so the CUDA entry points refuse exactly
 * what the references refuse and give the same one-line messages, naming their own file.
 *
 * Epilogue order (the GPU follows it with round-to-nearest fp32 ops and no fused
 * multiply-add, which is what makes its bf16 output bit-exact):
 *   v = 0; for b in 0..kblocks−1: v = v + (float)acc_b·sx[t,b];  v = v·sw[o];
 *   v = v + residual (when given);  y = bf16_rne(v).
 */
#ifndef FQ_W4A4_REF_H
#define FQ_W4A4_REF_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/w4a4.h"

/* K is bounded so that the GPU's int32 accumulators (which hold 256× the products: nibbles
 * are used in place as 16·q int8 values) cannot overflow: 64·K·256 < 2^31. */
#define W4A4_MAX_K 131072

/* ---- nibble packing: element 2k in the low nibble, 2k+1 in the high one ---- */
/* codes [n] in [−8, 7] → packed [n/2] two's-complement nibbles; n even. */
int w4a4_pack_s4(uint8_t *packed, const int8_t *codes, size_t n);
int w4a4_unpack_s4(int8_t *codes, const uint8_t *packed, size_t n);
/* codes [n] in [0, 15] → packed [n/2] unsigned nibbles (the KV4 cache); n even. */
int w4a4_pack_u4(uint8_t *packed, const uint8_t *codes, size_t n);
int w4a4_unpack_u4(uint8_t *codes, const uint8_t *packed, size_t n);

/* ---- shape checks shared with the kernels; `where` is "file:function" ---- */
int w4a4_check_quant(const char *where, const fq_quant_dst *dst, int nconsumers,
                     const void *x, int M, int K, int blocks, int n1, int n2, int kblocks,
                     int bits);
int w4a4_check_gemm(const char *where, const void *y, const void *qx, const void *sx,
                    int kblocks, const void *qw, const void *sw, int M, int N, int K);
int w4a4_check_kv4_cache(const char *where, const fq_kv4_cache *cache);
int w4a4_check_kv4_write(const char *where, const fq_kv4_cache *cache, const void *k,
                         const void *v, int n_new, const int *pos0, float k_kmax,
                         float k_kmin, float v_kmax, float v_kmin, int bits);
int w4a4_check_attention(const char *where, const void *out, const void *q,
                         const fq_kv4_cache *cache, int n_q, const int *ctx_len, int heads);

/* ---- the references (kernels/w4a4.h describes each) ---- */
int fq_transform_quant(const fq_quant_dst *dst, int nconsumers, const uint16_t *x, int M,
                       int K, int blocks, int n1, int n2, const float *L, const float *R,
                       int kblocks, int bits);
int fq_w4a4_gemm(uint16_t *y, const uint8_t *qx, const float *sx, int kblocks,
                 const uint8_t *qw, const float *sw, int M, int N, int K,
                 const uint16_t *residual);
/* A row-parallel linear as tensor parallelism of degree tp computes it: rank r owns
 * K-blocks r·kblocks/tp … (r+1)·kblocks/tp − 1 (kblocks % tp == 0) and forms its partial
 * output as fq_w4a4_gemm does (rank 0 adds the residual); the partials are then summed in
 * rank order — rounded to bf16 first and after every addition when reduce_bf16 is set
 * (the runtime's bf16 all-reduce), in fp32 with one final rounding otherwise. tp = 1
 * gives fq_w4a4_gemm's result exactly. */
int fq_w4a4_gemm_rowpar(uint16_t *y, const uint8_t *qx, const float *sx, int kblocks,
                        const uint8_t *qw, const float *sw, int M, int N, int K,
                        const uint16_t *residual, int tp, int reduce_bf16);
/* The exact integer products acc [M, N] = Σ_j qx[t, j]·qw[o, j] over the whole K. */
int fq_w4a4_gemm_i32(int32_t *acc, const uint8_t *qx, const uint8_t *qw, int M, int N, int K);
int fq_kv4_write(fq_kv4_cache *cache, const uint16_t *k, const uint16_t *v, int n_new,
                 const int *pos0, float k_kmax, float k_kmin, float v_kmax, float v_kmin,
                 int bits);
/* Computed in float64 from the dequantized cache, rounded once to bf16 at the end. */
int fq_attention_kv4(uint16_t *out, const uint16_t *q, const fq_kv4_cache *cache, int n_q,
                     const int *ctx_len, int heads);

#endif
