/* tokenizer_decode.c — ids → UTF-8 text through the tokenizer.json decoder chain.
 *
 * Hugging Face decoders work on a list of token strings, each step turning the list into
 * a new one (ByteLevel and Fuse collapse it into one string; ByteFallback groups runs of
 * "<0xNN>" tokens; Replace and Strip act per token); the final list is concatenated.
 * The same model here, with the quirks that decide the exact bytes: an invalid UTF-8
 * run of byte tokens becomes one U+FFFD per byte, ByteLevel repairs invalid UTF-8 with
 * one U+FFFD per maximal invalid subpart, Strip counts characters, and Metaspace drops
 * every replacement character of the list's first token (see tokenizer_metaspace.c).
 * Decoding is not on a hot path, so clarity wins over speed here.
 */
#include "tokenizer_internal.h"

#include "error.h"
#include "utf8.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    char *s;
    size_t len;
} dtok;

typedef struct {
    dtok *v;
    size_t n, cap;
} dlist;

static void dlist_free(dlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].s);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Append a copy of s[0..len). */
static int dlist_add(dlist *l, const char *s, size_t len)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        dtok *nv = realloc(l->v, nc * sizeof *nv);
        if (!nv)
            return fq_error("out of memory growing the decode list to %zu tokens", nc);
        l->v = nv;
        l->cap = nc;
    }
    char *c = fq_malloc(len + 1, "decoded token");
    if (!c)
        return FQ_ERR;
    if (len)
        memcpy(c, s, len);
    c[len] = '\0';
    l->v[l->n++] = (dtok){c, len};
    return FQ_OK;
}

/* Concatenate with a separator into one malloc'ed string. */
static char *dlist_join(const dlist *l, const char *sep, size_t *out_len)
{
    size_t sl = strlen(sep), total = 0;
    for (size_t i = 0; i < l->n; i++)
        total += l->v[i].len + (i ? sl : 0);
    char *o = fq_malloc(total + 1, "decoded text");
    if (!o)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (i) {
            memcpy(o + k, sep, sl);
            k += sl;
        }
        if (l->v[i].len)
            memcpy(o + k, l->v[i].s, l->v[i].len);
        k += l->v[i].len;
    }
    o[k] = '\0';
    *out_len = k;
    return o;
}

static int replace_all(const char *s, size_t n, const char *a, size_t al, const char *b,
                       size_t bl, dlist *out)
{
    size_t hits = 0;
    for (const char *p = s; (p = memmem(p, n - (size_t)(p - s), a, al)); p += al)
        hits++;
    size_t nn = n - hits * al + hits * bl;
    char *o = fq_malloc(nn + 1, "decoded token"), *w = o;
    if (!o)
        return FQ_ERR;
    const char *p = s, *end = s + n;
    for (;;) {
        const char *h = memmem(p, (size_t)(end - p), a, al);
        size_t run = h ? (size_t)(h - p) : (size_t)(end - p);
        memcpy(w, p, run);
        w += run;
        if (!h)
            break;
        memcpy(w, b, bl);
        w += bl;
        p = h + al;
    }
    int rc = dlist_add(out, o, nn);
    free(o);
    return rc;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "<0xNN>" → the byte; -1 otherwise. Rust's from_str_radix also takes "+N". */
static int byte_token(const dtok *t)
{
    if (t->len != 6 || memcmp(t->s, "<0x", 3) != 0 || t->s[5] != '>')
        return -1;
    int hi = hexval(t->s[3]), lo = hexval(t->s[4]);
    if (t->s[3] == '+' && lo >= 0)
        return lo;
    return hi >= 0 && lo >= 0 ? hi * 16 + lo : -1;
}

static int flush_bytes(const unsigned char *b, size_t n, dlist *out)
{
    if (n == 0)
        return FQ_OK;
    if (utf8_first_invalid(b, n) == n)
        return dlist_add(out, (const char *)b, n);
    for (size_t i = 0; i < n; i++)
        if (dlist_add(out, "\xef\xbf\xbd", 3) != FQ_OK)
            return FQ_ERR;
    return FQ_OK;
}

static int step_byte_fallback(const dlist *in, dlist *out)
{
    unsigned char *bytes = fq_malloc(in->n + 1, "byte tokens");
    size_t nb = 0;
    if (!bytes)
        return FQ_ERR;
    int rc = FQ_OK;
    for (size_t i = 0; i < in->n && rc == FQ_OK; i++) {
        int b = byte_token(&in->v[i]);
        if (b >= 0) {
            bytes[nb++] = (unsigned char)b;
            continue;
        }
        rc = flush_bytes(bytes, nb, out);
        nb = 0;
        if (rc == FQ_OK)
            rc = dlist_add(out, in->v[i].s, in->v[i].len);
    }
    if (rc == FQ_OK)
        rc = flush_bytes(bytes, nb, out);
    free(bytes);
    return rc;
}

static int step_byte_level(const dlist *in, dlist *out)
{
    size_t total = 0;
    for (size_t i = 0; i < in->n; i++)
        total += in->v[i].len;
    unsigned char *raw = fq_malloc(total + 1, "byte-level text");
    char *fixed = fq_malloc(total * 3 + 1, "byte-level text");
    if (!raw || !fixed) {
        free(raw);
        free(fixed);
        return FQ_ERR;
    }
    size_t k = 0;
    for (size_t i = 0; i < in->n; i++) {
        const unsigned char *s = (const unsigned char *)in->v[i].s;
        size_t len = in->v[i].len, k0 = k, j = 0;
        while (j < len) {
            size_t cl = utf8_seq_len(s + j, len - j);
            int b = cl ? tok_cp_to_byte(utf8_decode(s + j, cl)) : -1;
            if (b < 0)
                break;
            raw[k++] = (unsigned char)b;
            j += cl;
        }
        if (j < len) {
            /* A token with a character outside the byte map is taken as it is. */
            memcpy(raw + k0, s, len);
            k = k0 + len;
        }
    }
    size_t n = utf8_repair(raw, k, fixed);
    int rc = dlist_add(out, fixed, n);
    free(raw);
    free(fixed);
    return rc;
}

static int step_strip(const tok_dec_step *st, const dtok *t, dlist *out)
{
    const unsigned char *s = (const unsigned char *)t->s;
    /* Character boundaries, so cuts count characters as Hugging Face does. */
    size_t nch = 0;
    for (size_t j = 0; j < t->len;) {
        size_t cl = utf8_seq_len(s + j, t->len - j);
        j += cl ? cl : 1;
        nch++;
    }
    size_t *pos = fq_malloc((nch + 1) * sizeof *pos, "strip");
    if (!pos)
        return FQ_ERR;
    size_t c = 0;
    for (size_t j = 0; j < t->len; c++) {
        pos[c] = j;
        size_t cl = utf8_seq_len(s + j, t->len - j);
        j += cl ? cl : 1;
    }
    pos[nch] = t->len;
    size_t start_cut = 0, stop_cut = 0;
    while (start_cut < st->start && start_cut < nch &&
           pos[start_cut + 1] - pos[start_cut] == st->alen &&
           memcmp(t->s + pos[start_cut], st->a, st->alen) == 0)
        start_cut++;
    while (stop_cut < st->stop && stop_cut < nch &&
           pos[nch - stop_cut] - pos[nch - stop_cut - 1] == st->alen &&
           memcmp(t->s + pos[nch - stop_cut - 1], st->a, st->alen) == 0)
        stop_cut++;
    /* Hugging Face keeps (byte length − cuts) characters after the start cut; with
     * multi-byte characters that can keep the stripped tail, and an underflow keeps
     * everything. Reproduced as is. */
    size_t keep = nch - start_cut;
    if (t->len >= start_cut + stop_cut && t->len - start_cut - stop_cut < keep)
        keep = t->len - start_cut - stop_cut;
    size_t b0 = pos[start_cut], b1 = pos[start_cut + keep];
    free(pos);
    return dlist_add(out, t->s + b0, b1 - b0);
}

/* Replacement character → space; in token 0 (unless the scheme is "never") → nothing. */
static int step_metaspace(const tok_metaspace *m, const dlist *in, dlist *out)
{
    for (size_t i = 0; i < in->n; i++) {
        const char *b = i == 0 && m->prepend != TOK_PREPEND_NEVER ? "" : " ";
        if (replace_all(in->v[i].s, in->v[i].len, m->rep, m->rep_len, b, strlen(b), out) !=
            FQ_OK)
            return FQ_ERR;
    }
    return FQ_OK;
}

static int run_step(const tok_dec_step *st, const dlist *in, dlist *out)
{
    switch (st->kind) {
    case TOK_DEC_BYTE_LEVEL:
        return step_byte_level(in, out);
    case TOK_DEC_BYTE_FALLBACK:
        return step_byte_fallback(in, out);
    case TOK_DEC_FUSE: {
        size_t n;
        char *j = dlist_join(in, "", &n);
        if (!j)
            return FQ_ERR;
        int rc = dlist_add(out, j, n);
        free(j);
        return rc;
    }
    case TOK_DEC_REPLACE:
        for (size_t i = 0; i < in->n; i++)
            if (replace_all(in->v[i].s, in->v[i].len, st->a, st->alen, st->b, st->blen, out) !=
                FQ_OK)
                return FQ_ERR;
        return FQ_OK;
    case TOK_DEC_STRIP:
        for (size_t i = 0; i < in->n; i++)
            if (step_strip(st, &in->v[i], out) != FQ_OK)
                return FQ_ERR;
        return FQ_OK;
    case TOK_DEC_METASPACE:
        return step_metaspace(&st->meta, in, out);
    }
    return fq_error("tokenizer: decoder step of unknown kind %d", (int)st->kind);
}

int tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len)
{
    if (!t || (!ids && n) || !text || !len)
        return fq_error("tokenizer_decode: NULL argument (expected a tokenizer, ids and "
                        "output pointers)");
    *text = NULL;
    *len = 0;
    dlist a = {0}, b = {0};
    int rc = FQ_OK;
    for (size_t i = 0; i < n && rc == FQ_OK; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->vocab_size || !t->id_text[id])
            rc = fq_error("%s: decode: id %d at position %zu is not a token (expected an id "
                          "of the vocabulary, below %d)", t->label, (int)id, i, t->vocab_size);
        else
            rc = dlist_add(&a, t->id_text[id], t->id_len[id]);
    }
    for (size_t k = 0; k < t->n_dec && rc == FQ_OK; k++) {
        rc = run_step(&t->dec[k], &a, &b);
        dlist_free(&a);
        a = b;
        b = (dlist){0};
    }
    if (rc == FQ_OK) {
        *text = dlist_join(&a, t->has_decoder ? "" : " ", len);
        if (!*text)
            rc = FQ_ERR;
    }
    dlist_free(&a);
    dlist_free(&b);
    return rc;
}
