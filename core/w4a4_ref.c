/* w4a4_ref.c — plain-C references of the W4A4 inference kernels (see w4a4_ref.h).
 *
 * Written for clarity, not speed: each function converts its bf16 inputs to `real`, runs
 * the shared transform and quantizer code of core/, and packs the result. The GEMM sums in
 * int64 per K-block (exact) before the fp32 epilogue; the attention is float64 end to end,
 * so it serves as the independent truth for the GPU's fp32 online softmax.
 */
#include "w4a4_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "error.h"
#include "kron.h"
#include "qlayer.h"
#include "quantizer.h"
#include "real.h"

/* ---------- nibbles ---------- */

static int check_pack(const char *where, const void *a, const void *b, size_t n)
{
    if (!a || !b)
        return fq_error("core/w4a4_ref.c:%s: NULL buffer (expected packed and codes)", where);
    if (n % 2)
        return fq_error("core/w4a4_ref.c:%s: n = %zu (expected an even element count)", where,
                        n);
    return FQ_OK;
}

int w4a4_pack_s4(uint8_t *packed, const int8_t *codes, size_t n)
{
    if (check_pack("w4a4_pack_s4", packed, codes, n))
        return FQ_ERR;
    for (size_t i = 0; i < n; i++)
        if (codes[i] < -8 || codes[i] > 7)
            return fq_error("core/w4a4_ref.c:w4a4_pack_s4: codes[%zu] = %d (expected -8..7)", i,
                            codes[i]);
    int4_pack(codes, n, packed); /* the checkpoint's layout (core/qlayer.c) */
    return FQ_OK;
}

int w4a4_unpack_s4(int8_t *codes, const uint8_t *packed, size_t n)
{
    if (check_pack("w4a4_unpack_s4", packed, codes, n))
        return FQ_ERR;
    int4_unpack(packed, n, codes);
    return FQ_OK;
}

int w4a4_pack_u4(uint8_t *packed, const uint8_t *codes, size_t n)
{
    if (check_pack("w4a4_pack_u4", packed, codes, n))
        return FQ_ERR;
    for (size_t i = 0; i < n; i++)
        if (codes[i] > 15)
            return fq_error("core/w4a4_ref.c:w4a4_pack_u4: codes[%zu] = %d (expected 0..15)", i,
                            codes[i]);
    for (size_t i = 0; i < n; i += 2)
        packed[i / 2] = (uint8_t)(codes[i] | (codes[i + 1] << 4));
    return FQ_OK;
}

int w4a4_unpack_u4(uint8_t *codes, const uint8_t *packed, size_t n)
{
    if (check_pack("w4a4_unpack_u4", packed, codes, n))
        return FQ_ERR;
    for (size_t i = 0; i < n; i++)
        codes[i] = (packed[i / 2] >> (4 * (i & 1))) & 0xF;
    return FQ_OK;
}

/* ---------- shape checks ---------- */

static int check_bits4(const char *where, int bits)
{
    if (bits < 2 || bits > 4)
        return fq_error("%s: bits = %d (expected 2..4: codes are stored as nibbles)", where,
                        bits);
    return FQ_OK;
}

static int check_ratio(const char *where, const char *what, float kmax, float kmin)
{
    if (!(kmax > 0 && kmax <= 1) || !(kmin > 0 && kmin <= 1))
        return fq_error("%s: %s clip ratios (%g, %g) (expected values in (0, 1])", where, what,
                        (double)kmax, (double)kmin);
    return FQ_OK;
}

int w4a4_check_quant(const char *where, const fq_quant_dst *dst, int nconsumers,
                     const void *x, int M, int K, int blocks, int n1, int n2, int kblocks,
                     int bits)
{
    if (!dst || !x)
        return fq_error("%s: NULL dst or x (expected consumers and an input)", where);
    if (nconsumers < 1 || nconsumers > 3)
        return fq_error("%s: nconsumers = %d (expected 1..3)", where, nconsumers);
    if (M <= 0)
        return fq_error("%s: M = %d (expected at least one token)", where, M);
    if (K <= 0 || K > W4A4_MAX_K)
        return fq_error("%s: K = %d (expected 1..%d real values per token)", where, K,
                        W4A4_MAX_K);
    if (blocks <= 0 || n1 <= 0 || n2 <= 0 || (long)blocks * n1 * n2 != K)
        return fq_error("%s: blocks·n1·n2 = %d·%d·%d (expected positive factors with product "
                        "K = %d)", where, blocks, n1, n2, K);
    /* A padded row (K % 64 != 0) has one K-block: the GEMM applies per-block scales only
     * at 64-element step ends, which a block of a padded row would not fall on. */
    if (K % 64 && kblocks != 1)
        return fq_error("%s: kblocks = %d with K = %d (expected 1: a K that is not a multiple "
                        "of 64 is padded and takes one scale per token)", where, kblocks, K);
    if (kblocks <= 0 || kblocks % blocks || K % kblocks || (K % 64 == 0 && (K / kblocks) % 64))
        return fq_error("%s: kblocks = %d (expected a multiple of blocks = %d dividing K = %d "
                        "into blocks of a multiple of 64)", where, kblocks, blocks, K);
    if (check_bits4(where, bits))
        return FQ_ERR;
    for (int p = 0; p < nconsumers; p++) {
        if (!dst[p].codes || !dst[p].scales)
            return fq_error("%s: dst[%d] has a NULL codes or scales buffer (expected both)",
                            where, p);
        if (check_ratio(where, "dst", dst[p].kmax, dst[p].kmin))
            return FQ_ERR;
    }
    return FQ_OK;
}

int w4a4_check_gemm(const char *where, const void *y, const void *qx, const void *sx,
                    int kblocks, const void *qw, const void *sw, int M, int N, int K)
{
    if (!y || !qx || !sx || !qw || !sw)
        return fq_error("%s: NULL buffer (expected y, qx, sx, qw and sw)", where);
    if (M <= 0 || N <= 0)
        return fq_error("%s: M = %d, N = %d (expected at least one token and one output)",
                        where, M, N);
    if (K <= 0 || K % 64 || K > W4A4_MAX_K)
        return fq_error("%s: K = %d (expected a positive multiple of 64, at most %d)", where, K,
                        W4A4_MAX_K);
    if (kblocks <= 0 || K % kblocks || (K / kblocks) % 64)
        return fq_error("%s: kblocks = %d (expected a divisor of K = %d into blocks of a "
                        "multiple of 64)", where, kblocks, K);
    return FQ_OK;
}

int w4a4_check_kv4_cache(const char *where, const fq_kv4_cache *c)
{
    if (!c || !c->k_codes || !c->v_codes || !c->k_sz || !c->v_sz)
        return fq_error("%s: cache or one of its buffers is NULL (expected k/v codes and "
                        "scale-zero pairs)", where);
    if (c->batch <= 0 || c->kv_heads <= 0 || c->max_ctx <= 0)
        return fq_error("%s: cache shape batch %d, kv_heads %d, max_ctx %d (expected "
                        "positive)", where, c->batch, c->kv_heads, c->max_ctx);
    if (c->dh <= 0 || c->dh % 2)
        return fq_error("%s: cache dh = %d (expected a positive even head size)", where, c->dh);
    return FQ_OK;
}

int w4a4_check_kv4_write(const char *where, const fq_kv4_cache *cache, const void *k,
                         const void *v, int n_new, const int *pos0, float k_kmax,
                         float k_kmin, float v_kmax, float v_kmin, int bits)
{
    if (w4a4_check_kv4_cache(where, cache))
        return FQ_ERR;
    if (!k || !v || !pos0)
        return fq_error("%s: NULL k, v or pos0 (expected all three)", where);
    if (n_new <= 0)
        return fq_error("%s: n_new = %d (expected at least one new token)", where, n_new);
    for (int b = 0; b < cache->batch; b++)
        if (pos0[b] < 0 || (long)pos0[b] + n_new > cache->max_ctx)
            return fq_error("%s: pos0[%d] = %d with n_new = %d (expected positions inside "
                            "0..max_ctx-1 = %d)", where, b, pos0[b], n_new, cache->max_ctx - 1);
    if (check_ratio(where, "K", k_kmax, k_kmin) || check_ratio(where, "V", v_kmax, v_kmin))
        return FQ_ERR;
    return check_bits4(where, bits);
}

int w4a4_check_attention(const char *where, const void *out, const void *q,
                         const fq_kv4_cache *cache, int n_q, const int *ctx_len, int heads)
{
    if (w4a4_check_kv4_cache(where, cache))
        return FQ_ERR;
    if (!out || !q || !ctx_len)
        return fq_error("%s: NULL out, q or ctx_len (expected all three)", where);
    if (n_q <= 0)
        return fq_error("%s: n_q = %d (expected at least one query)", where, n_q);
    if (heads <= 0 || heads % cache->kv_heads)
        return fq_error("%s: heads = %d (expected a positive multiple of kv_heads = %d)", where,
                        heads, cache->kv_heads);
    for (int b = 0; b < cache->batch; b++)
        if (ctx_len[b] < n_q || ctx_len[b] > cache->max_ctx)
            return fq_error("%s: ctx_len[%d] = %d (expected n_q = %d ..max_ctx = %d)", where, b,
                            ctx_len[b], n_q, cache->max_ctx);
    return FQ_OK;
}

/* ---------- fused transform + quantize ---------- */

static real *identity(int n)
{
    real *m = calloc((size_t)n * n, sizeof(real));
    if (m)
        for (int i = 0; i < n; i++)
            m[(size_t)i * n + i] = 1;
    return m;
}

int fq_transform_quant(const fq_quant_dst *dst, int nconsumers, const uint16_t *x, int M,
                       int K, int blocks, int n1, int n2, const float *L, const float *R,
                       int kblocks, int bits)
{
    const char *where = "core/w4a4_ref.c:fq_transform_quant";
    if (w4a4_check_quant(where, dst, nconsumers, x, M, K, blocks, n1, n2, kblocks, bits))
        return FQ_ERR;
    const int n = n1 * n2;
    const size_t total = (size_t)M * K;
    real *xb = malloc((size_t)M * n * sizeof(real)), *yb = malloc((size_t)M * n * sizeof(real));
    real *y = malloc(total * sizeof(real)), *out = malloc(total * sizeof(real));
    real *scale = malloc((size_t)M * kblocks * sizeof(real));
    real *work = malloc((size_t)kron_fwd_work(M, n) * sizeof(real));
    real *Lb = malloc((size_t)n1 * n1 * sizeof(real)), *Rb = malloc((size_t)n2 * n2 * sizeof(real));
    const int Kp = fq_w4a4_padded_k(K);
    int8_t *codes = calloc((size_t)Kp, 1); /* codes K..Kp-1 stay 0: the row padding */
    int rc = FQ_ERR;
    if (!xb || !yb || !y || !out || !scale || !work || !Lb || !Rb || !codes) {
        fq_error("%s: out of memory for M = %d, K = %d", where, M, K);
        goto done;
    }
    for (int b = 0; b < blocks; b++) {
        for (int t = 0; t < M; t++)
            for (int j = 0; j < n; j++)
                xb[(size_t)t * n + j] = fq_bf16_to_f32(x[(size_t)t * K + (size_t)b * n + j]);
        real *li = L ? NULL : identity(n1), *ri = R ? NULL : identity(n2);
        if ((!L && !li) || (!R && !ri)) {
            free(li), free(ri);
            fq_error("%s: out of memory for identity factors", where);
            goto done;
        }
        if (L)
            real_from_f32(L + (size_t)b * n1 * n1, (size_t)n1 * n1, Lb);
        if (R)
            real_from_f32(R + (size_t)b * n2 * n2, (size_t)n2 * n2, Rb);
        int krc = kron_fwd(yb, xb, M, n1, n2, L ? Lb : li, R ? Rb : ri, work);
        free(li), free(ri);
        if (krc) {
            fq_error_wrap("%s", where);
            goto done;
        }
        for (int t = 0; t < M; t++)
            memcpy(y + (size_t)t * K + (size_t)b * n, yb + (size_t)t * n, (size_t)n * sizeof(real));
    }
    for (int p = 0; p < nconsumers; p++) {
        if (quant_act_sym_ratio(out, scale, y, M, K, kblocks, bits, dst[p].kmax, dst[p].kmin)) {
            fq_error_wrap("%s: consumer %d", where, p);
            goto done;
        }
        const int blen = K / kblocks;
        for (int t = 0; t < M; t++) {
            for (int j = 0; j < K; j++) {
                real s = scale[(size_t)t * kblocks + j / blen];
                codes[j] = (int8_t)rint(out[(size_t)t * K + j] / s);
            }
            if (w4a4_pack_s4(dst[p].codes + (size_t)t * (Kp / 2), codes, (size_t)Kp)) {
                fq_error_wrap("%s", where);
                goto done;
            }
            for (int b = 0; b < kblocks; b++)
                dst[p].scales[(size_t)t * kblocks + b] = (float)scale[(size_t)t * kblocks + b];
        }
    }
    rc = FQ_OK;
done:
    free(xb), free(yb), free(y), free(out), free(scale), free(work), free(Lb), free(Rb);
    free(codes);
    return rc;
}

/* ---------- GEMM ---------- */

static inline int s4_at(const uint8_t *row, int j)
{
    int nib = (row[j >> 1] >> (4 * (j & 1))) & 0xF;
    return nib >= 8 ? nib - 16 : nib;
}

static int64_t dot_s4(const uint8_t *a, const uint8_t *b, int j0, int j1)
{
    int64_t s = 0;
    for (int j = j0; j < j1; j++)
        s += s4_at(a, j) * s4_at(b, j);
    return s;
}

int fq_w4a4_gemm_rowpar(uint16_t *y, const uint8_t *qx, const float *sx, int kblocks,
                        const uint8_t *qw, const float *sw, int M, int N, int K,
                        const uint16_t *residual, int tp, int reduce_bf16)
{
    const char *where = "core/w4a4_ref.c:fq_w4a4_gemm";
    if (w4a4_check_gemm(where, y, qx, sx, kblocks, qw, sw, M, N, K))
        return FQ_ERR;
    if (tp < 1 || kblocks % tp)
        return fq_error("%s: tp = %d with %d K-blocks (expected a degree dividing the blocks)",
                        where, tp, kblocks);
    const int blen = K / kblocks, per = kblocks / tp;
    for (int t = 0; t < M; t++)
        for (int o = 0; o < N; o++) {
            const uint8_t *a = qx + (size_t)t * (K / 2), *w = qw + (size_t)o * (K / 2);
            float sum = 0;
            for (int r = 0; r < tp; r++) {
                float v = 0;
                for (int b = r * per; b < (r + 1) * per; b++) {
                    int32_t acc = (int32_t)dot_s4(a, w, b * blen, (b + 1) * blen);
                    v = v + (float)acc * sx[(size_t)t * kblocks + b];
                }
                v = v * sw[o];
                if (r == 0 && residual)
                    v = v + fq_bf16_to_f32(residual[(size_t)t * N + o]);
                if (reduce_bf16)
                    v = fq_bf16_to_f32(fq_f32_to_bf16(v));
                sum = r == 0 ? v : sum + v;
                if (reduce_bf16)
                    sum = fq_bf16_to_f32(fq_f32_to_bf16(sum));
            }
            y[(size_t)t * N + o] = fq_f32_to_bf16(sum);
        }
    return FQ_OK;
}

int fq_w4a4_gemm(uint16_t *y, const uint8_t *qx, const float *sx, int kblocks,
                 const uint8_t *qw, const float *sw, int M, int N, int K,
                 const uint16_t *residual)
{
    return fq_w4a4_gemm_rowpar(y, qx, sx, kblocks, qw, sw, M, N, K, residual, 1, 0);
}

int fq_w4a4_gemm_i32(int32_t *acc, const uint8_t *qx, const uint8_t *qw, int M, int N, int K)
{
    float one = 1;
    if (w4a4_check_gemm("core/w4a4_ref.c:fq_w4a4_gemm_i32", acc, qx, &one, 1, qw, &one, M, N, K))
        return FQ_ERR;
    for (int t = 0; t < M; t++)
        for (int o = 0; o < N; o++)
            acc[(size_t)t * N + o] =
                (int32_t)dot_s4(qx + (size_t)t * (K / 2), qw + (size_t)o * (K / 2), 0, K);
    return FQ_OK;
}

/* ---------- KV4 cache ---------- */

/* Quantize rows [rows, dh] of one of k/v into the cache planes. */
static int kv4_write_one(const char *where, uint8_t *codes_plane, uint16_t *sz_plane,
                         const fq_kv4_cache *c, const uint16_t *src, int n_new, const int *pos0,
                         float kmax, float kmin, int bits)
{
    const int dh = c->dh;
    const size_t rows = (size_t)c->batch * n_new * c->kv_heads;
    real *u = malloc(rows * dh * sizeof(real)), *out = malloc(rows * dh * sizeof(real));
    real *s = malloc(rows * sizeof(real)), *z = malloc(rows * sizeof(real));
    uint8_t *codes = malloc((size_t)dh);
    int rc = FQ_ERR;
    if (!u || !out || !s || !z || !codes) {
        fq_error("%s: out of memory for %zu head vectors", where, rows);
        goto done;
    }
    for (size_t i = 0; i < rows * dh; i++)
        u[i] = fq_bf16_to_f32(src[i]);
    if (quant_kv_asym_ratio(out, s, z, u, (int)rows, dh, bits, kmax, kmin)) {
        fq_error_wrap("%s", where);
        goto done;
    }
    for (int b = 0; b < c->batch; b++)
        for (int t = 0; t < n_new; t++)
            for (int hd = 0; hd < c->kv_heads; hd++) {
                size_t r = ((size_t)b * n_new + t) * c->kv_heads + hd;
                uint16_t s16 = fq_f32_to_f16((float)s[r]);
                if (!isfinite(fq_f16_to_f32(s16))) {
                    fq_error("%s: batch %d token %d head %d: scale %g overflows fp16 (expected "
                             "K/V ranges below about 1e6)", where, b, t, hd, (double)s[r]);
                    goto done;
                }
                for (int j = 0; j < dh; j++)
                    codes[j] = (uint8_t)(rint(out[r * dh + j] / s[r]) + z[r]);
                size_t slot = ((size_t)b * c->kv_heads + hd) * c->max_ctx + pos0[b] + t;
                if (w4a4_pack_u4(codes_plane + slot * (dh / 2), codes, (size_t)dh)) {
                    fq_error_wrap("%s", where);
                    goto done;
                }
                sz_plane[slot * 2] = s16;
                sz_plane[slot * 2 + 1] = fq_f32_to_f16((float)z[r]);
            }
    rc = FQ_OK;
done:
    free(u), free(out), free(s), free(z), free(codes);
    return rc;
}

int fq_kv4_write(fq_kv4_cache *cache, const uint16_t *k, const uint16_t *v, int n_new,
                 const int *pos0, float k_kmax, float k_kmin, float v_kmax, float v_kmin,
                 int bits)
{
    const char *where = "core/w4a4_ref.c:fq_kv4_write";
    if (w4a4_check_kv4_write(where, cache, k, v, n_new, pos0, k_kmax, k_kmin, v_kmax, v_kmin,
                             bits))
        return FQ_ERR;
    if (kv4_write_one(where, cache->k_codes, cache->k_sz, cache, k, n_new, pos0, k_kmax, k_kmin,
                      bits) ||
        kv4_write_one(where, cache->v_codes, cache->v_sz, cache, v, n_new, pos0, v_kmax, v_kmin,
                      bits))
        return FQ_ERR;
    return FQ_OK;
}

/* ---------- attention over the KV4 cache ---------- */

static double kv4_value(const uint8_t *codes, const uint16_t *sz, size_t slot, int dh, int j)
{
    int q = (codes[slot * (dh / 2) + j / 2] >> (4 * (j & 1))) & 0xF;
    return (double)fq_f16_to_f32(sz[slot * 2]) * (q - (double)fq_f16_to_f32(sz[slot * 2 + 1]));
}

int fq_attention_kv4(uint16_t *out, const uint16_t *q, const fq_kv4_cache *c, int n_q,
                     const int *ctx_len, int heads)
{
    const char *where = "core/w4a4_ref.c:fq_attention_kv4";
    if (w4a4_check_attention(where, out, q, c, n_q, ctx_len, heads))
        return FQ_ERR;
    const int dh = c->dh, r = heads / c->kv_heads;
    int maxctx = 0;
    for (int b = 0; b < c->batch; b++)
        maxctx = ctx_len[b] > maxctx ? ctx_len[b] : maxctx;
    double *p = malloc((size_t)maxctx * sizeof(double)), *o = malloc((size_t)dh * sizeof(double));
    if (!p || !o) {
        free(p), free(o);
        return fq_error("%s: out of memory for a context of %d", where, maxctx);
    }
    const double scale = 1.0 / sqrt((double)dh);
    for (int b = 0; b < c->batch; b++)
        for (int i = 0; i < n_q; i++) {
            const int pos = ctx_len[b] - n_q + i;
            for (int hq = 0; hq < heads; hq++) {
                const int g = hq / r;
                const uint16_t *qv = q + (((size_t)b * n_q + i) * heads + hq) * dh;
                const size_t base = ((size_t)b * c->kv_heads + g) * c->max_ctx;
                double mx = -INFINITY, sum = 0;
                for (int t = 0; t <= pos; t++) {
                    double s = 0;
                    for (int j = 0; j < dh; j++)
                        s += (double)fq_bf16_to_f32(qv[j]) * kv4_value(c->k_codes, c->k_sz, base + t, dh, j);
                    p[t] = s * scale;
                    mx = p[t] > mx ? p[t] : mx;
                }
                for (int t = 0; t <= pos; t++)
                    sum += p[t] = exp(p[t] - mx);
                for (int j = 0; j < dh; j++)
                    o[j] = 0;
                for (int t = 0; t <= pos; t++)
                    for (int j = 0; j < dh; j++)
                        o[j] += p[t] / sum * kv4_value(c->v_codes, c->v_sz, base + t, dh, j);
                uint16_t *ov = out + (((size_t)b * n_q + i) * heads + hq) * dh;
                for (int j = 0; j < dh; j++)
                    ov[j] = fq_f32_to_bf16((float)o[j]);
            }
        }
    free(p), free(o);
    return FQ_OK;
}
