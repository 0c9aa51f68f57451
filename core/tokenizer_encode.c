/* tokenizer_encode.c — text → ids: the pipeline Hugging Face runs, in its order.
 *
 *   1. added tokens whose `normalized` is false are cut out of the raw text
 *      (leftmost, longest match wins);
 *   2. each remaining piece is normalized (Prepend/Replace), and added tokens with
 *      `normalized` true are cut out of the normalized text;
 *   3. pre-tokenizer steps cut the pieces into words, in file order: Split (PCRE2) and
 *      Metaspace (space → ▁, a leading ▁ per its scheme, optional cut before each ▁);
 *   4. each word goes through BPE, with a per-call cache keyed by the word's bytes
 *      (natural text repeats a few thousand words, so most words are a table lookup);
 *   5. the post-processor's template wraps the ids (BOS) when add_special is set.
 *
 * Each piece carries whether it begins at offset 0 of the whole input: Metaspace's
 * "first" scheme prepends only there (not after an added token), as Hugging Face does.
 *
 * All state of one call lives in an enc_ctx, so a tokenizer can encode on many threads.
 * The cache is per call rather than per tokenizer for the same reason; one call per file
 * is the usual pattern, so it warms up quickly.
 */
#include "fileio.h"
#include "tokenizer_internal.h"

#include "error.h"
#include "utf8.h"

#include <stdlib.h>
#include <string.h>

/* Words longer than this are not cached: they are rare and would bloat the cache. */
#define TOK_CACHE_MAX_WORD 256
#define TOK_CACHE_MAX_ENTRIES (1u << 20)

typedef struct {
    const tokenizer *t;
    tok_bpe_scratch bpe;
    tok_strmap cache; /* word → offset of [n, ids…] in cache_ids */
    tok_ids cache_ids;
    char *buf[2];
    size_t buf_cap[2];
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    /* One buffer per pre-tokenizer step (Metaspace rewrites its piece): a step's buffer
     * is only live in that step's frame of split_words. */
    char **pre_buf;
    size_t *pre_cap;
    tok_ids out;
} enc_ctx;

static void ctx_free(enc_ctx *c)
{
    tok_bpe_scratch_free(&c->bpe);
    tok_strmap_free(&c->cache);
    free(c->cache_ids.v);
    free(c->buf[0]);
    free(c->buf[1]);
    pcre2_match_data_free(c->md);
    pcre2_match_context_free(c->mctx);
    pcre2_jit_stack_free(c->jit);
    for (size_t k = 0; c->pre_buf && k < c->t->n_split; k++)
        free(c->pre_buf[k]);
    free(c->pre_buf);
    free(c->pre_cap);
    free(c->out.v);
}

static int ctx_init(enc_ctx *c, const tokenizer *t)
{
    memset(c, 0, sizeof *c);
    c->t = t;
    if (tok_strmap_init(&c->cache, 4096) != FQ_OK)
        return FQ_ERR;
    if (t->n_split) {
        c->pre_buf = fq_calloc(t->n_split, sizeof *c->pre_buf, "pre-tokenizer buffers");
        c->pre_cap = fq_calloc(t->n_split, sizeof *c->pre_cap, "pre-tokenizer buffers");
        if (!c->pre_buf || !c->pre_cap)
            return FQ_ERR;
    }
    if (t->has_regex_split) {
        /* Ten capture pairs is plenty for split patterns; the ovector only needs [0]. */
        c->md = pcre2_match_data_create(10, NULL);
        c->mctx = pcre2_match_context_create(NULL);
        c->jit = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, NULL);
        if (!c->md || !c->mctx || !c->jit)
            return fq_error("out of memory creating regex match data");
        pcre2_jit_stack_assign(c->mctx, NULL, c->jit);
    }
    return FQ_OK;
}

static int encode_word(enc_ctx *c, const char *w, size_t len)
{
    if (len == 0)
        return FQ_OK;
    if (len > TOK_CACHE_MAX_WORD)
        return tok_bpe_word(c->t, &c->bpe, w, len, &c->out);
    int32_t off = tok_strmap_get(&c->cache, w, len, -1);
    if (off >= 0)
        return tok_ids_append(&c->out, c->cache_ids.v + off + 1, (size_t)c->cache_ids.v[off]);
    size_t start = c->out.n;
    if (tok_bpe_word(c->t, &c->bpe, w, len, &c->out) != FQ_OK)
        return FQ_ERR;
    size_t n = c->out.n - start;
    if (c->cache.n >= TOK_CACHE_MAX_ENTRIES || c->cache_ids.n + n + 1 > INT32_MAX)
        return FQ_OK;
    size_t rec = c->cache_ids.n;
    /* A word may give no ids at all (unknown characters, no unk token): then out.v may
     * still be NULL, and NULL + 0 is undefined. */
    if (tok_ids_push(&c->cache_ids, (int32_t)n) != FQ_OK ||
        (n && tok_ids_append(&c->cache_ids, c->out.v + start, n) != FQ_OK))
        return FQ_ERR;
    return tok_strmap_put(&c->cache, w, len, (int32_t)rec, NULL);
}

static int split_words(enc_ctx *c, size_t k, const char *s, size_t len, int at_start);

/* Metaspace step k over s[0..len): rewrite into the step's buffer, then each piece on. */
static int metaspace_words(enc_ctx *c, size_t k, const char *s, size_t len, int at_start)
{
    const tok_metaspace *m = &c->t->split[k].meta;
    size_t need = tok_metaspace_max_len(m, len);
    if (need > c->pre_cap[k]) {
        char *nb = realloc(c->pre_buf[k], need);
        if (!nb)
            return fq_error("out of memory growing the Metaspace buffer to %zu bytes", need);
        c->pre_buf[k] = nb;
        c->pre_cap[k] = need;
    }
    char *w = c->pre_buf[k];
    size_t n = tok_metaspace_apply(m, s, len, at_start, w);
    for (size_t off = 0; off < n;) {
        size_t end = off + tok_metaspace_piece_end(m, w + off, n - off);
        if (split_words(c, k + 1, w + off, end - off, at_start && off == 0) != FQ_OK)
            return FQ_ERR;
        off = end;
    }
    return FQ_OK;
}

/* Run pre-tokenizer step k (and the ones after it) over s[0..len); at_start: s begins
 * at offset 0 of the input. */
static int split_words(enc_ctx *c, size_t k, const char *s, size_t len, int at_start)
{
    const tokenizer *t = c->t;
    if (len == 0)
        return FQ_OK;
    if (k == t->n_split)
        return encode_word(c, s, len);
    if (t->split[k].kind == TOK_PRE_METASPACE)
        return metaspace_words(c, k, s, len, at_start);
    const tok_split_step *st = &t->split[k];
    size_t off = 0, prev = 0;
    while (off <= len) {
        int rc = pcre2_match(st->re, (PCRE2_SPTR)s, len, off, PCRE2_NO_UTF_CHECK, c->md,
                             c->mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            char msg[256];
            pcre2_get_error_message(rc, (PCRE2_UCHAR *)msg, sizeof msg);
            return fq_error("%s: pre_tokenizer split regex failed: %s (expected it to match "
                            "within PCRE2's limits)", t->label, msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) {
            /* An empty match yields no piece; step over one character. */
            if (ms >= len)
                break;
            size_t cl = utf8_seq_len((const unsigned char *)s + ms, len - ms);
            off = ms + (cl ? cl : 1);
            continue;
        }
        if (ms > prev &&
            split_words(c, k + 1, s + prev, ms - prev, at_start && prev == 0) != FQ_OK)
            return FQ_ERR;
        if (st->behavior == TOK_SPLIT_ISOLATED &&
            split_words(c, k + 1, s + ms, me - ms, at_start && ms == 0) != FQ_OK)
            return FQ_ERR;
        prev = off = me;
    }
    return split_words(c, k + 1, s + prev, len - prev, at_start && prev == 0);
}

/* Match the added token (of group g) starting at s[0..len), longest first; -1 if none. */
static const tok_added *added_at(const tokenizer *t, int g, const char *s, size_t len)
{
    const tok_added *best = NULL;
    for (size_t i = 0; i < t->n_added; i++) {
        const tok_added *a = &t->added[i];
        if ((a->normalized ? 1 : 0) != g || a->len > len || (best && a->len <= best->len))
            continue;
        if (memcmp(a->content, s, a->len) == 0)
            best = a;
    }
    return best;
}

typedef int (*piece_fn)(enc_ctx *c, const char *s, size_t len, int at_start);

/* Cut added tokens of group g out of s; gaps go to fn, tokens straight to the output. */
static int split_added(enc_ctx *c, int g, const char *s, size_t len, piece_fn fn,
                       int at_start)
{
    const tokenizer *t = c->t;
    size_t prev = 0;
    for (size_t i = 0; i < len; i++) {
        if (!t->added_first[g][(unsigned char)s[i]])
            continue;
        const tok_added *a = added_at(t, g, s + i, len - i);
        if (!a)
            continue;
        if (i > prev && fn(c, s + prev, i - prev, at_start && prev == 0) != FQ_OK)
            return FQ_ERR;
        if (tok_ids_push(&c->out, a->id) != FQ_OK)
            return FQ_ERR;
        prev = i + a->len;
        i = prev - 1;
    }
    return len > prev ? fn(c, s + prev, len - prev, at_start && prev == 0) : FQ_OK;
}

static int pretokenize(enc_ctx *c, const char *s, size_t len, int at_start)
{
    return split_words(c, 0, s, len, at_start);
}

static int reserve(enc_ctx *c, int which, size_t need)
{
    if (need <= c->buf_cap[which])
        return FQ_OK;
    size_t nc = c->buf_cap[which] ? c->buf_cap[which] : 1024;
    while (nc < need)
        nc *= 2;
    char *nb = realloc(c->buf[which], nc);
    if (!nb)
        return fq_error("out of memory growing the normalization buffer to %zu bytes", nc);
    c->buf[which] = nb;
    c->buf_cap[which] = nc;
    return FQ_OK;
}

static int normalize_then_split(enc_ctx *c, const char *s, size_t len, int at_start)
{
    const tokenizer *t = c->t;
    if (t->n_norm == 0)
        return split_added(c, 1, s, len, pretokenize, at_start);
    /* Ping-pong between two buffers; cur points at the latest text. */
    const char *cur = s;
    size_t n = len;
    int dst = 0;
    for (size_t k = 0; k < t->n_norm; k++) {
        const tok_norm_step *st = &t->norm[k];
        if (st->kind == TOK_NORM_PREPEND) {
            if (n == 0)
                continue;
            if (reserve(c, dst, n + st->alen) != FQ_OK)
                return FQ_ERR;
            memcpy(c->buf[dst], st->a, st->alen);
            memmove(c->buf[dst] + st->alen, cur, n);
            n += st->alen;
        } else {
            size_t hits = 0;
            for (const char *p = cur; (p = memmem(p, n - (size_t)(p - cur), st->a, st->alen));
                 p += st->alen)
                hits++;
            if (hits == 0)
                continue;
            size_t nn = n - hits * st->alen + hits * st->blen;
            if (reserve(c, dst, nn) != FQ_OK)
                return FQ_ERR;
            char *o = c->buf[dst];
            const char *p = cur, *end = cur + n;
            for (;;) {
                const char *h = memmem(p, (size_t)(end - p), st->a, st->alen);
                size_t run = h ? (size_t)(h - p) : (size_t)(end - p);
                memcpy(o, p, run);
                o += run;
                if (!h)
                    break;
                memcpy(o, st->b, st->blen);
                o += st->blen;
                p = h + st->alen;
            }
            n = nn;
        }
        cur = c->buf[dst];
        dst ^= 1;
    }
    return split_added(c, 1, cur, n, pretokenize, at_start);
}

int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int add_special,
                     int32_t **ids, size_t *n_ids)
{
    if (!t || (!text && len) || !ids || !n_ids)
        return fq_error("tokenizer_encode: NULL argument (expected a tokenizer, text and "
                        "output pointers)");
    *ids = NULL;
    *n_ids = 0;
    size_t bad = utf8_first_invalid((const unsigned char *)text, len);
    if (bad < len)
        return fq_error("tokenizer: input text: invalid UTF-8 at byte offset %zu (byte 0x%02x; "
                        "expected UTF-8 text)", bad, (unsigned char)text[bad]);
    enc_ctx c;
    int rc = ctx_init(&c, t);
    tok_ids seq = {0};
    if (rc == FQ_OK)
        rc = split_added(&c, 0, text ? text : "", len, normalize_then_split, 1);
    if (rc == FQ_OK && add_special && t->has_template) {
        seq = c.out;
        c.out = (tok_ids){0};
        for (size_t i = 0; i < t->n_tmpl && rc == FQ_OK; i++) {
            const tok_template_item *it = &t->tmpl[i];
            rc = it->is_sequence ? tok_ids_append(&c.out, seq.v, seq.n)
                                 : tok_ids_append(&c.out, it->ids, it->n);
        }
    }
    free(seq.v);
    if (rc == FQ_OK) {
        *n_ids = c.out.n;
        *ids = c.out.v ? c.out.v : fq_malloc(sizeof(int32_t), "token ids");
        c.out.v = NULL;
        if (!*ids)
            rc = FQ_ERR;
    }
    ctx_free(&c);
    return rc;
}

int tokenizer_encode_file(const tokenizer *t, const char *path, int add_special,
                          int32_t **ids, size_t *n_ids)
{
    if (!t || !path || !ids || !n_ids)
        return fq_error("tokenizer_encode_file: NULL argument (expected a tokenizer, a path "
                        "and output pointers)");
    char *buf;
    size_t len;
    if (fq_read_file(path, &buf, &len) != FQ_OK)
        return FQ_ERR;
    size_t bad = utf8_first_invalid((const unsigned char *)buf, len);
    int rc;
    if (bad < len)
        rc = fq_error("%s: invalid UTF-8 at byte offset %zu (byte 0x%02x; expected UTF-8 "
                      "text)", path, bad, (unsigned char)buf[bad]);
    else
        rc = tokenizer_encode(t, buf, len, add_special, ids, n_ids);
    free(buf);
    if (rc != FQ_OK && bad >= len)
        fq_error_wrap("%s", path);
    return rc;
}
