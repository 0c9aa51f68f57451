/* w4a4.h — the plain-C face of flatq's W4A4 inference kernels for Hopper (ALGORITHM §6).
 *
 * Inference runs on packed 4-bit data: activations are transformed and quantized per token
 * into nibbles plus one fp32 scale per (token, K-block); weights are the checkpoint's
 * nibbles plus one fp32 scale per output row; the GEMM unpacks to int8 and uses int8 tensor
 * cores with int32 accumulation, then applies both scales in the epilogue. The KV cache is
 * 4-bit asymmetric per (token, KV head) with an fp16 (scale, zero) pair.
 *
 * Layouts (shared by the C references in core/w4a4_ref.h, the kernels and the runtime):
 *   packed int4 [rows, Kp/2] uint8: element 2k in the low nibble, 2k+1 in the high one, two's
 *     complement (the checkpoint's qweight layout, core/FORMAT.md), codes in [−8, 7];
 *     Kp = fq_w4a4_padded_k(K) = round_up(K, 64): a row of K real values is stored with
 *     codes K..Kp−1 equal to 0, which add nothing to the int32 sums, so the GEMM runs on
 *     whole 64-element steps. Kp = K whenever K % 64 == 0 (the layout is then unchanged);
 *     the runtime pads the checkpoint's weight rows at load;
 *   activation scales [rows, kblocks] fp32: kblocks contiguous blocks of K/kblocks REAL
 *     values each have their own per-token scale (kblocks > 1: the TP per-block scales of
 *     §7; a K that is not a multiple of 64 takes kblocks = 1 only);
 *   bf16 tensors are uint16_t bit patterns in C (core/dtype.h converts);
 *   KV4 cache: codes [batch, kv_heads, max_ctx, dh/2] uint8 (unsigned nibbles 0..15, same
 *     low/high order), (scale, zero) [batch, kv_heads, max_ctx, 2] fp16 bit patterns; the
 *     dequantized value is scale·(code − zero).
 *
 * Every function takes the calibration context (fq_cuda_ctx: device, stream, cuBLAS) first,
 * checks its shapes at the boundary (a GEMM K not a multiple of 64, M = 0, a kblocks that
 * does not divide K, dh odd …) and returns FQ_OK or FQ_ERR with fq_error() naming the
 * function and the offending argument. All pointers except clip ratios are DEVICE memory.
 */
#ifndef FQ_W4A4_H
#define FQ_W4A4_H

#include <stddef.h>
#include <stdint.h>

#include "flatq_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The packed row length, in codes, of a row of K real values (two codes per byte). */
#define FQ_W4A4_ROW_QUANTUM 64
static inline int fq_w4a4_padded_k(int K)
{
    return (K + FQ_W4A4_ROW_QUANTUM - 1) / FQ_W4A4_ROW_QUANTUM * FQ_W4A4_ROW_QUANTUM;
}

/* One consumer of a transformed activation: its clip ratios (σ(cmax), σ(cmin)) and where
 * its codes [M, Kp/2] and scales [M, kblocks] go. q, k, v share one transform of the
 * attention input; gate and up share one of the MLP input (ALGORITHM §6 step 2). */
typedef struct {
    float kmax, kmin;
    uint8_t *codes;
    float *scales;
} fq_quant_dst;

/* Fused online transform + per-token symmetric quantization, one read of x [M, K] bf16 and
 * one write per consumer. The transform is `blocks` independent Kronecker factors
 * y_b = L_bᵀ·X_b·R_b on each block's [n1, n2] view (K = blocks·n1·n2; L [blocks, n1, n1],
 * R [blocks, n2, n2] fp32; either may be NULL for identity: the o_proj input is L = M_o
 * blocks with R = NULL on the [h, dh] view). kblocks (scales per token) is a multiple of
 * blocks (usually equal: one scale per TP block); 1 ≤ nconsumers ≤ 3; fp32 accumulation
 * (at prefill sizes with both factors, the products on TF32 tensor cores when
 * ctx->transform_tf32 is set, as the inference runtime does).
 * K is the real length (1..W4A4_MAX_K): the transform and the scales see only the K real
 * values, each code row is written Kp = fq_w4a4_padded_k(K) long with zero codes after K.
 * K % 64 != 0 needs blocks = kblocks = 1 (one transform block, one scale per token). */
int fq_transform_quant_cuda(fq_cuda_ctx *ctx, const fq_quant_dst *dst, int nconsumers,
                            const uint16_t *x, int M, int K, int blocks, int n1, int n2,
                            const float *L, const float *R, int kblocks, int bits);

/* The decode-size transform + quantize with the op before it fused into its input load,
 * saving that op's launch and the row's round trip through memory:
 *   fq_norm_transform_quant_cuda: x is the residual [M, K]; the transform sees
 *     bf16(γ·(x·r)), r = 1/sqrt(mean x² + eps), as rt_rmsnorm_bf16 writes it (blocks =
 *     kblocks = 1: the norm needs the whole row);
 *   fq_swiglu_transform_quant_cuda: x = gate [M, K] beside up [M, K]; the transform sees
 *     bf16(g/(1 + e^−g)·u), as rt_swiglu_bf16 writes it.
 * Only for the shapes fq_transform_quant_fuses() accepts (the column-split decode kernel:
 * M <= 64, K % 64 == 0, …); others are refused, so a caller asks first and otherwise runs
 * the op and fq_transform_quant_cuda. */
int fq_transform_quant_fuses(const fq_cuda_ctx *ctx, int M, int K, int blocks, int n1, int n2,
                             int kblocks);

/* 1 when fq_transform_quant_cuda runs this shape (have_l, have_r: L, R non-NULL) on the
 * fused TF32 tensor-core kernel (ctx->transform_tc set; kernels/w4a4_quant_tc.cu: its
 * shapes and accuracy), 0 when on another path */
int fq_transform_quant_tc_takes(const fq_cuda_ctx *ctx, int M, int K, int blocks, int n1,
                                int n2, int have_l, int have_r, int kblocks);
int fq_norm_transform_quant_cuda(fq_cuda_ctx *ctx, const fq_quant_dst *dst, int nconsumers,
                                 const uint16_t *x, const float *gamma, float eps, int M, int K,
                                 int n1, int n2, const float *L, const float *R, int bits);
int fq_swiglu_transform_quant_cuda(fq_cuda_ctx *ctx, const fq_quant_dst *dst, int nconsumers,
                                   const uint16_t *gate, const uint16_t *up, int M, int K,
                                   int blocks, int n1, int n2, const float *L, const float *R,
                                   int kblocks, int bits);

/* y [M, N] bf16 = Σ_b (Σ_{j∈block b} qx[t, j]·qw[o, j])·sx[t, b]·sw[o] (+ residual [M, N]
 * bf16 when not NULL; y may equal residual). int32 accumulation is exact. K here is the
 * PACKED row length Kp (a multiple of 64; rows of qx and qw are K/2 bytes): pass
 * fq_w4a4_padded_k(real K), with kblocks = 1 whenever the real K was padded.
 * Chooses a tensor-core prefill kernel or a bandwidth-bound decode kernel (small M). */
int fq_w4a4_gemm_cuda(fq_cuda_ctx *ctx, uint16_t *y, const uint8_t *qx, const float *sx,
                      int kblocks, const uint8_t *qw, const float *sw, int M, int N, int K,
                      const uint16_t *residual);

/* Up to three GEMMs of the same M, K and kblocks (q/k/v, gate/up: each its own codes and
 * scales, since each consumer has its own clip) in one launch of the decode kernel when M
 * is small, else one fq_w4a4_gemm_cuda each; results as fq_w4a4_gemm_cuda's. At decode
 * the small k/v GEMMs then fill the GPU together with q instead of one after another. */
typedef struct {
    uint16_t *y;
    const uint8_t *qx, *qw;
    const float *sx, *sw;
    int N;
    const uint16_t *residual;
} fq_w4a4_problem;
int fq_w4a4_gemm_multi_cuda(fq_cuda_ctx *ctx, int np, const fq_w4a4_problem *problems,
                            int kblocks, int M, int K);

/* Added for tests and benchmarks. The GEMM with a chosen kernel (path: FQ_W4A4_AUTO picks
 * the decode kernel for M <= 32, and for M <= 64 when N <= 10240, when kblocks × its
 * tiles of 16 rows <= 64; else a tensor-core one: FQ_W4A4_WGMMA, the warpgroup-MMA kernel,
 * which unpacks the activations into M·K bytes of the context's scratch first, unless
 * ctx->gemm_wgmma is 0, then FQ_W4A4_PREFILL, the mma.sync kernel), and the raw int32 accumulators
 * acc [M, N] = Σ_j qx[t, j]·qw[o, j] over the whole K through the same kernels, so a test
 * can compare them bit for bit with fq_w4a4_gemm_i32 (core/w4a4_ref.h). GPU-only limits,
 * refused with an error: K <= 131072 (also in C); device buffers 16-byte aligned; on the
 * decode path M <= 64 and kblocks × (1, 2 or 4 tiles for M <= 16, 32, 64) <= 64; a transform block n1·n2 <= 28672; attention: dh a power of two in
 * 8..256, heads/kv_heads in 1..32, batch <= 256, n_q <= 65535. A KV scale beyond
 * the fp16 range is written as inf on the GPU (the C reference refuses it). */
enum { FQ_W4A4_AUTO = 0, FQ_W4A4_PREFILL = 1, FQ_W4A4_DECODE = 2, FQ_W4A4_WGMMA = 3 };
int fq_w4a4_gemm_path_cuda(fq_cuda_ctx *ctx, uint16_t *y, const uint8_t *qx, const float *sx,
                           int kblocks, const uint8_t *qw, const float *sw, int M, int N, int K,
                           const uint16_t *residual, int path);
/* Tests and benchmarks: the one-tile (M <= 16) decode kernel with `loads` 16-byte weight
 * loads per row and thread in flight (2 or 4) and `warps` per CTA (8 or 16) instead of the
 * automatic choice (2 loads; 16 warps when the grid has fewer than 4 CTAs per SM); 0, 0
 * restores it. Process-wide, not thread-safe: set it before launching. */
int fq_w4a4_decode_config(int loads, int warps);
/* Tests and benchmarks: the wgmma GEMM's token tile when kblocks > 1: 128 (the default; the
 * fp32 block sums in registers) or 256 (where the tile count allows; the fp32 block sums
 * in M·N floats of the context's FQ_SCRATCH_KBLOCKS buffer, through L2). Process-wide, not
 * thread-safe, like fq_w4a4_decode_config. */
int fq_w4a4_kblocks_config(int tile);
/* Tests and benchmarks: 1 (the default): K-blocks of whole 128-k tiles flush between
 * tiles; 0: at the k-step that ends a block, as any other K-block length does. */
int fq_w4a4_kblocks_aligned_config(int on);
/* Tests and benchmarks: the prefill GEMM's token tile for one K-block, 0 (the default: 256
 * unless 128 saves a tenth of the waves) or 128 or 256 forced, and the pipeline stages of a
 * 128-token tile (8, the default, or 5). Process-wide. */
int fq_w4a4_tile_config(int tile, int stages128);
int fq_w4a4_gemm_i32_cuda(fq_cuda_ctx *ctx, int32_t *acc, const uint8_t *qx, const uint8_t *qw,
                          int M, int N, int K, int path);

typedef struct {
    int batch, kv_heads, max_ctx, dh;
    uint8_t *k_codes, *v_codes; /* [batch, kv_heads, max_ctx, dh/2] */
    uint16_t *k_sz, *v_sz;      /* fp16 (scale, zero) [batch, kv_heads, max_ctx, 2] */
} fq_kv4_cache;

/* Quantize k, v [batch, n_new, kv_heads, dh] bf16 (after RoPE and the M_k / M_v
 * transforms) into cache positions pos0[b] .. pos0[b] + n_new − 1 (pos0 on the host,
 * [batch]) with the asymmetric rule of ALGORITHM §2.1 and the learned clip ratios. */
int fq_kv4_write_cuda(fq_cuda_ctx *ctx, fq_kv4_cache *cache, const uint16_t *k,
                      const uint16_t *v, int n_new, const int *pos0, float k_kmax,
                      float k_kmin, float v_kmax, float v_kmin, int bits);

/* Causal attention of q [batch, n_q, heads, dh] bf16 (positions ctx_len[b] − n_q ..
 * ctx_len[b] − 1) over the cache's first ctx_len[b] positions (ctx_len on the host),
 * dequantizing K and V on the fly; out [batch, n_q, heads, dh] bf16; softmax scale
 * 1/sqrt(dh); GQA (heads a multiple of kv_heads). n_q = 1 is the decode case
 * (split over the context for long sequences); n_q > 1 is prefill. */
int fq_attention_kv4_cuda(fq_cuda_ctx *ctx, uint16_t *out, const uint16_t *q,
                          const fq_kv4_cache *cache, int n_q, const int *ctx_len, int heads);

/* The same attention over a bf16 cache k, v [batch, kv_heads, max_ctx, dh] (16-byte
 * aligned): the BF16 baseline runtime attends with this, so that a W4A4-vs-BF16 ratio
 * compares the KV formats and the linears, not two attention designs. */
int fq_attention_bf16kv_cuda(fq_cuda_ctx *ctx, uint16_t *out, const uint16_t *q,
                             const uint16_t *k, const uint16_t *v, int batch, int kv_heads,
                             int max_ctx, int dh, int n_q, const int *ctx_len, int heads);

/* Both attentions run on the tensor-core kernel (mma.sync bf16, flash-style, one launch at
 * prefill) where dh is 64 or 128 and q, the caches and out are aligned as cudaMalloc leaves
 * them, unless ctx->attn_tc is 0; on the CUDA-core kernel otherwise. */

#ifdef __cplusplus
}
#endif

#endif
