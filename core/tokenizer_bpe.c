/* tokenizer_bpe.c — the BPE model: one pre-tokenized word → token ids.
 *
 * The word starts as one symbol per character (per byte, for byte-level tokenizers,
 * whose characters are the GPT-2 stand-ins for bytes). Then the adjacent pair of lowest
 * merge rank is merged, leftmost first on ties, until no pair merges. Symbols sit in an
 * array linked as a list; candidate pairs sit in a binary min-heap keyed (rank, position).
 * A merge invalidates its neighbours' candidates lazily: a popped candidate is used only
 * if both symbols are still there with the ids it was made from. O(n log n) per word, so
 * a SentencePiece-style tokenizer without a pre-tokenizer (the whole text is one word)
 * is still fast.
 *
 * Unknown characters follow Hugging Face exactly: byte_fallback → one "<0xNN>" symbol per
 * byte when all of them exist; otherwise the unk token (consecutive ones fused when
 * fuse_unk); otherwise the character is dropped.
 */
#include "tokenizer_internal.h"

#include "error.h"
#include "utf8.h"

#include <stdlib.h>
#include <string.h>

/* GPT-2's map: printable Latin-1 bytes stand for themselves, the other 68 bytes (controls,
 * space, DEL, NBSP, soft hyphen) take code points 256.. in byte order. */
uint32_t tok_byte_to_cp(uint8_t b)
{
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)
        return b;
    if (b <= 32)
        return 256u + b;
    if (b <= 160)
        return 256u + 33u + (b - 127u);
    return 256u + 67u; /* 173 */
}

int tok_cp_to_byte(uint32_t cp)
{
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255))
        return (int)cp;
    if (cp < 256 || cp >= 256 + 68)
        return -1;
    uint32_t n = cp - 256;
    if (n <= 32)
        return (int)n;
    if (n <= 66)
        return (int)(127 + n - 33);
    return 173;
}

void tok_bpe_scratch_free(tok_bpe_scratch *s)
{
    free(s->sym);
    free(s->heap);
    free(s->text);
    memset(s, 0, sizeof *s);
}

static int cand_less(const struct tok_cand *a, const struct tok_cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static int heap_push(tok_bpe_scratch *s, struct tok_cand c)
{
    if (s->heap_n == s->heap_cap) {
        size_t nc = s->heap_cap ? s->heap_cap * 2 : 64;
        struct tok_cand *nh = realloc(s->heap, nc * sizeof *nh);
        if (!nh)
            return fq_error("out of memory growing the BPE heap to %zu entries", nc);
        s->heap = nh;
        s->heap_cap = nc;
    }
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &s->heap[p]))
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = c;
    return FQ_OK;
}

static struct tok_cand heap_pop(tok_bpe_scratch *s)
{
    struct tok_cand top = s->heap[0], last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        const struct tok_cand *best = &last;
        if (l < n && cand_less(&s->heap[l], best)) {
            m = l;
            best = &s->heap[l];
        }
        if (l + 1 < n && cand_less(&s->heap[l + 1], best))
            m = l + 1;
        if (m == i)
            break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (n)
        s->heap[i] = last;
    return top;
}

static int push_pair(const tokenizer *t, tok_bpe_scratch *s, int32_t pos)
{
    int32_t next = s->sym[pos].next;
    if (next < 0)
        return FQ_OK;
    struct tok_cand c = {0, pos, s->sym[pos].id, s->sym[next].id, 0};
    if (!tok_mergemap_get(&t->merges, c.left, c.right, &c.rank, &c.new_id))
        return FQ_OK;
    return heap_push(s, c);
}

typedef struct {
    tok_bpe_scratch *s;
    size_t n;
    int32_t pending_unk; /* 1 while an unk symbol waits to be emitted (fuse_unk) */
} sym_builder;

static int sym_add(sym_builder *b, int32_t id)
{
    tok_bpe_scratch *s = b->s;
    if (b->n == s->sym_cap) {
        size_t nc = s->sym_cap ? s->sym_cap * 2 : 256;
        struct tok_sym *ns = realloc(s->sym, nc * sizeof *ns);
        if (!ns)
            return fq_error("out of memory growing the BPE word to %zu symbols", nc);
        s->sym = ns;
        s->sym_cap = nc;
    }
    s->sym[b->n] = (struct tok_sym){id, (int32_t)b->n - 1, -1, 1};
    if (b->n > 0)
        s->sym[b->n - 1].next = (int32_t)b->n;
    b->n++;
    return FQ_OK;
}

/* One character (its UTF-8 bytes cs[0..cl)) whose vocab id is `id` (-1: unknown). */
static int add_char(const tokenizer *t, sym_builder *b, const char *cs, size_t cl, int32_t id)
{
    if (id >= 0) {
        if (b->pending_unk) {
            b->pending_unk = 0;
            if (sym_add(b, t->unk_id) != FQ_OK)
                return FQ_ERR;
        }
        return sym_add(b, id);
    }
    if (t->byte_fallback) {
        size_t k = 0;
        while (k < cl && t->byte_fallback_id[(unsigned char)cs[k]] >= 0)
            k++;
        if (k == cl) {
            /* Hugging Face adds these without flushing a pending unk first. */
            for (k = 0; k < cl; k++)
                if (sym_add(b, t->byte_fallback_id[(unsigned char)cs[k]]) != FQ_OK)
                    return FQ_ERR;
            return FQ_OK;
        }
    }
    if (t->unk_id < 0)
        return FQ_OK;
    if (b->pending_unk && !t->fuse_unk && sym_add(b, t->unk_id) != FQ_OK)
        return FQ_ERR;
    b->pending_unk = 1;
    return FQ_OK;
}

static int ensure_text(tok_bpe_scratch *s, size_t need)
{
    if (need <= s->text_cap)
        return FQ_OK;
    size_t nc = s->text_cap ? s->text_cap : 256;
    while (nc < need)
        nc *= 2;
    char *nt = realloc(s->text, nc);
    if (!nt)
        return fq_error("out of memory growing the BPE text buffer to %zu bytes", nc);
    s->text = nt;
    s->text_cap = nc;
    return FQ_OK;
}

int tok_bpe_word(const tokenizer *t, tok_bpe_scratch *s, const char *w, size_t len,
                 tok_ids *out)
{
    if (len == 0)
        return FQ_OK;
    if (t->ignore_merges) {
        /* A word that is itself a token is emitted whole, merges or not. */
        const char *key = w;
        size_t klen = len;
        if (t->byte_level) {
            if (ensure_text(s, len * 2) != FQ_OK)
                return FQ_ERR;
            klen = 0;
            for (size_t i = 0; i < len; i++)
                klen += utf8_encode(tok_byte_to_cp((uint8_t)w[i]), s->text + klen);
            key = s->text;
        }
        int32_t id = tok_strmap_get(&t->vocab, key, klen, -1);
        if (id >= 0)
            return tok_ids_push(out, id);
    }

    sym_builder b = {s, 0, 0};
    if (t->byte_level) {
        for (size_t i = 0; i < len; i++) {
            uint8_t byte = (uint8_t)w[i];
            char cs[4];
            size_t cl = utf8_encode(tok_byte_to_cp(byte), cs);
            if (add_char(t, &b, cs, cl, t->byte_level_id[byte]) != FQ_OK)
                return FQ_ERR;
        }
    } else {
        for (size_t i = 0; i < len;) {
            size_t cl = utf8_seq_len((const unsigned char *)w + i, len - i);
            if (cl == 0)
                return fq_error("tokenizer: invalid UTF-8 inside a word (expected valid "
                                "text after normalization)");
            int32_t id = tok_strmap_get(&t->vocab, w + i, cl, -1);
            if (add_char(t, &b, w + i, cl, id) != FQ_OK)
                return FQ_ERR;
            i += cl;
        }
    }
    if (b.pending_unk && sym_add(&b, t->unk_id) != FQ_OK)
        return FQ_ERR;
    if (b.n == 0)
        return FQ_OK;

    s->heap_n = 0;
    for (size_t i = 0; i + 1 < b.n; i++)
        if (push_pair(t, s, (int32_t)i) != FQ_OK)
            return FQ_ERR;
    while (s->heap_n > 0) {
        struct tok_cand c = heap_pop(s);
        struct tok_sym *L = &s->sym[c.pos];
        if (!L->alive || L->id != c.left || L->next < 0 || s->sym[L->next].id != c.right)
            continue;
        struct tok_sym *R = &s->sym[L->next];
        L->id = c.new_id;
        L->next = R->next;
        R->alive = 0;
        if (L->next >= 0)
            s->sym[L->next].prev = c.pos;
        if (L->prev >= 0 && push_pair(t, s, L->prev) != FQ_OK)
            return FQ_ERR;
        if (push_pair(t, s, c.pos) != FQ_OK)
            return FQ_ERR;
    }
    for (int32_t i = 0; i >= 0; i = s->sym[i].next)
        if (tok_ids_push(out, s->sym[i].id) != FQ_OK)
            return FQ_ERR;
    return FQ_OK;
}
