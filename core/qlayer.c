/* qlayer.c — allocation, int4 packing and RTN weight quantization of quantized layers. */
#include "qlayer.h"
#include "error.h"
#include "kron.h"
#include "parallel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const qlinear_names[QL_NLINEAR] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                               "gate_proj", "up_proj", "down_proj"};

void qlinear_free(qlinear *l)
{
    free(l->codes);
    free(l->scales);
    free(l->w);
    memset(l, 0, sizeof *l);
}

static void qkron_free(qkron *k)
{
    free(k->L);
    free(k->R);
    memset(k, 0, sizeof *k);
}

void qlayer_free(qlayer *q)
{
    free(q->attn_norm);
    free(q->mlp_norm);
    qkron_free(&q->attn_in);
    qkron_free(&q->mlp_in);
    qkron_free(&q->down_in);
    free(q->Mo);
    free(q->Mk);
    free(q->Mk_inv_t);
    free(q->Mv);
    for (int i = 0; i < QL_NLINEAR; i++)
        qlinear_free(&q->lin[i]);
    memset(q, 0, sizeof *q);
}

void int4_pack(const int8_t *codes, size_t n, uint8_t *packed)
{
    for (size_t k = 0; k + 1 < n; k += 2)
        packed[k / 2] = (uint8_t)(((uint8_t)codes[k] & 0x0F) | (((uint8_t)codes[k + 1] & 0x0F) << 4));
}

/* sign-extend a nibble: (x ^ 8) − 8 maps 0..15 to −8..7 two's complement */
static inline int8_t nibble_code(unsigned x) { return (int8_t)(((x & 0x0F) ^ 8) - 8); }

void int4_unpack(const uint8_t *packed, size_t n, int8_t *codes)
{
    for (size_t k = 0; k + 1 < n; k += 2) {
        codes[k] = nibble_code(packed[k / 2]);
        codes[k + 1] = nibble_code(packed[k / 2] >> 4);
    }
}

/* One row of RTN, as the loop over rows does it: codes into `codes` (int8 per weight). */
static void rtn_row(const float *wr, int in, float qmax, float *scale, int8_t *codes)
{
    float mx = 0;
    for (int j = 0; j < in; j++)
        mx = fmaxf(mx, fabsf(wr[j]));
    float s = fmaxf(mx, 1e-5f) / qmax;
    *scale = s;
    for (int j = 0; j < in; j++)
        codes[j] = (int8_t)qlinear_rtn_code(wr[j], s, qmax);
}

typedef struct {
    qlinear *l;
    const float *w;
    float qmax;
    int8_t **rowbuf; /* per thread, `in` codes (4-bit: packed after) */
} rtn_job;

/* Rows [r0, r1): a 70B layer's 0.86 G weights took ~7 s on one core (issue 6); the rows
 * are independent and each writes its own bytes, so threads give the same result. */
static int rtn_rows(void *ctx, size_t r0, size_t r1, int t)
{
    rtn_job *jb = ctx;
    qlinear *l = jb->l;
    const int in = l->in;
    for (size_t r = r0; r < r1; r++) {
        size_t off = r * (size_t)in;
        if (l->bits <= 4) {
            rtn_row(jb->w + off, in, jb->qmax, &l->scales[r], jb->rowbuf[t]);
            int4_pack(jb->rowbuf[t], (size_t)in, l->codes + off / 2);
        } else {
            rtn_row(jb->w + off, in, jb->qmax, &l->scales[r], (int8_t *)l->codes + off);
        }
    }
    return FQ_OK;
}

int qlinear_quantize_rtn(qlinear *l, const float *w, int out, int in, int bits)
{
    memset(l, 0, sizeof *l);
    if (out <= 0 || in <= 0)
        return fq_error("qlinear: shape [%d, %d] invalid (expected positive)", out, in);
    if (!((bits >= 2 && bits <= 8) || bits == 16))
        return fq_error("qlinear: %d bits unsupported (expected 2..8 or 16)", bits);
    l->out = out;
    l->in = in;
    l->bits = bits;
    size_t n = (size_t)out * in;
    if (bits == 16) {
        if (!(l->w = fq_malloc(sizeof(float) * n, "weight")))
            return FQ_ERR;
        memcpy(l->w, w, sizeof(float) * n);
        return FQ_OK;
    }
    if (bits <= 4 && in % 2)
        return fq_error("qlinear: input size %d is odd (expected even for two codes per byte)", in);
    l->codes = fq_malloc(bits <= 4 ? n / 2 : n, "weight codes");
    l->scales = fq_malloc(sizeof(float) * (size_t)out, "weight scales");
    const size_t chunk = 64; /* rows per item */
    /* small weights inline: threads cost more than they save below ~1 M weights */
    int nt = n < ((size_t)1 << 20) ? 1 : fq_io_threads(((size_t)out + chunk - 1) / chunk);
    rtn_job jb = {l, w, (float)((1 << (bits - 1)) - 1), NULL};
    if (l->codes && l->scales)
        jb.rowbuf = (int8_t **)fq_thread_buffers(nt, (size_t)in, "weight code row");
    int rc = jb.rowbuf ? fq_parallel_ranges((size_t)out, chunk, nt, rtn_rows, &jb) : FQ_ERR;
    if (jb.rowbuf)
        fq_thread_buffers_free((void **)jb.rowbuf, nt);
    if (rc != FQ_OK)
        qlinear_free(l);
    return rc;
}

typedef struct {
    const qlinear *l;
    float *w;
} dequant_job;

/* rows [a, b) of a 4-bit linear with an even row length (each row starts on a byte), the
 * nibbles decoded in place of a separate unpacked copy */
static int dequant_rows4(void *ctx, size_t a, size_t b, int t)
{
    (void)t;
    const dequant_job *j = ctx;
    const qlinear *l = j->l;
    const size_t in = (size_t)l->in;
    for (size_t r = a; r < b; r++) {
        const uint8_t *p = l->codes + r * in / 2;
        float *wr = j->w + r * in, s = l->scales[r];
        for (size_t k = 0; k < in; k += 2) {
            wr[k] = s * (float)nibble_code(p[k / 2]);
            wr[k + 1] = s * (float)nibble_code(p[k / 2] >> 4);
        }
    }
    return FQ_OK;
}

int qlinear_dequantize(const qlinear *l, float *w)
{
    size_t n = (size_t)l->out * l->in;
    if (l->bits == 16) {
        memcpy(w, l->w, sizeof(float) * n);
        return FQ_OK;
    }
    if (l->bits <= 4 && l->in % 2 == 0) {
        /* rows on the I/O threads: a 70B layer's GPTQ pass dequantizes ~2.6 G weights */
        dequant_job job = {l, w};
        return fq_parallel_ranges((size_t)l->out, 1 + ((size_t)1 << 20) / (size_t)l->in, 0,
                                  dequant_rows4, &job);
    }
    int8_t *codes = (int8_t *)l->codes, *tmp = NULL;
    if (l->bits <= 4) {
        if (!(tmp = fq_malloc(n, "codes")))
            return FQ_ERR;
        int4_unpack(l->codes, n, tmp);
        codes = tmp;
    }
    for (int r = 0; r < l->out; r++)
        for (int j = 0; j < l->in; j++)
            w[(size_t)r * l->in + j] = l->scales[r] * (float)codes[(size_t)r * l->in + j];
    free(tmp);
    return FQ_OK;
}

static float *identity_blocks(int blocks, int n)
{
    float *m = fq_calloc((size_t)blocks * n * n, sizeof(float), "identity transform");
    if (m)
        for (int b = 0; b < blocks; b++)
            for (int i = 0; i < n; i++)
                m[((size_t)b * n + i) * n + i] = 1;
    return m;
}

static int qkron_alloc(qkron *k, int len, int blocks, const char *what)
{
    if (blocks < 1 || len % blocks)
        return fq_error("%s: size %d is not divisible into %d tensor-parallel blocks", what, len,
                        blocks);
    if (kron_split(len / blocks, &k->n1, &k->n2, NULL) != FQ_OK)
        return FQ_ERR;
    k->blocks = blocks;
    k->L = identity_blocks(blocks, k->n1);
    k->R = identity_blocks(blocks, k->n2);
    return k->L && k->R ? FQ_OK : FQ_ERR;
}

int qlayer_alloc(qlayer *q, const llama_config *c, const qconfig *qc)
{
    memset(q, 0, sizeof *q);
    q->hidden = c->hidden;
    q->n_heads = c->n_heads;
    q->head_dim = c->head_dim;
    int d = c->hidden, dh = c->head_dim, tb = qc->tp_blocks > 0 ? qc->tp_blocks : 1;
    if (c->n_heads % tb)
        return fq_error("tp_blocks %d does not divide the %d attention heads", tb, c->n_heads);
    q->attn_norm = fq_malloc(sizeof(float) * d, "γ1");
    q->mlp_norm = fq_malloc(sizeof(float) * d, "γ2");
    if (!q->attn_norm || !q->mlp_norm || qkron_alloc(&q->attn_in, d, 1, "attn input") ||
        qkron_alloc(&q->mlp_in, d, 1, "mlp input") ||
        qkron_alloc(&q->down_in, c->intermediate, tb, "down_proj input"))
        goto fail;
    q->o_blocks = tb;
    q->Mo = identity_blocks(tb, c->n_heads / tb);
    q->Mk = identity_blocks(1, dh);
    q->Mk_inv_t = identity_blocks(1, dh);
    if (!q->Mo || !q->Mk || !q->Mk_inv_t)
        goto fail;
    if (qc->separate_vtrans && !(q->Mv = identity_blocks(1, dh)))
        goto fail;
    for (int i = 0; i < QL_NLINEAR; i++)
        q->act_clip[i][0] = q->act_clip[i][1] = 1;
    q->kv_clip[0][0] = q->kv_clip[0][1] = q->kv_clip[1][0] = q->kv_clip[1][1] = 1;
    return FQ_OK;
fail:
    qlayer_free(q);
    return FQ_ERR;
}
