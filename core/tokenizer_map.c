/* tokenizer_map.c — the hash maps behind the tokenizer: token text → id, token pair →
 * merge, plus a growable id buffer.
 *
 * Open addressing with linear probing at load factor ≤ 1/2: lookups touch one or two
 * cache lines, which is what the encode loop spends its time on. Keys of the string map
 * live in one arena (offsets, not pointers, so the arena can grow); nothing is ever
 * deleted, which keeps probing trivial. The hash mixes 8 bytes at a time; it only has
 * to spread token strings, not resist attackers (a hostile tokenizer.json can at worst
 * make loading slow, and the fuzz target bounds input size).
 */
#include "tokenizer_internal.h"

#include "error.h"

#include <stdlib.h>
#include <string.h>

#define TOK_SLOT_USED (1ull << 63)

uint64_t tok_hash(const void *p, size_t len)
{
    const unsigned char *s = p;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (len * 0xff51afd7ed558ccdull);
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        s += 8;
        len -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, s, len);
    h = (h ^ v) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c <<= 1;
    return c;
}

int tok_strmap_init(tok_strmap *m, size_t expect)
{
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least(expect * 2 + 1);
    m->slots = fq_calloc(m->cap, sizeof *m->slots, "token map");
    return m->slots ? FQ_OK : FQ_ERR;
}

void tok_strmap_free(tok_strmap *m)
{
    free(m->slots);
    free(m->arena);
    memset(m, 0, sizeof *m);
}

static struct tok_slot *strmap_find(const tok_strmap *m, const char *key, size_t len,
                                    uint64_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct tok_slot *s = &m->slots[i];
        if (!s->used)
            return s;
        if (s->hash == h && s->len == len && memcmp(m->arena + s->off, key, len) == 0)
            return s;
    }
}

int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len, int32_t missing)
{
    if (!m->slots)
        return missing;
    const struct tok_slot *s = strmap_find(m, key, len, tok_hash(key, len));
    return s->used ? s->val : missing;
}

static int strmap_grow(tok_strmap *m)
{
    size_t ncap = m->cap * 2;
    struct tok_slot *ns = fq_calloc(ncap, sizeof *ns, "token map");
    if (!ns)
        return FQ_ERR;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].used)
            continue;
        size_t j = m->slots[i].hash & (ncap - 1);
        while (ns[j].used)
            j = (j + 1) & (ncap - 1);
        ns[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return FQ_OK;
}

int tok_strmap_put(tok_strmap *m, const char *key, size_t len, int32_t val, uint32_t *key_off)
{
    if (len > UINT32_MAX || m->arena_len + len > UINT32_MAX)
        return fq_error("token map: key of %zu bytes makes the table too large", len);
    if ((m->n + 1) * 2 > m->cap && strmap_grow(m) != FQ_OK)
        return FQ_ERR;
    uint64_t h = tok_hash(key, len);
    struct tok_slot *s = strmap_find(m, key, len, h);
    if (s->used) {
        s->val = val;
        if (key_off)
            *key_off = s->off;
        return FQ_OK;
    }
    if (m->arena_len + len > m->arena_cap) {
        size_t nc = m->arena_cap ? m->arena_cap : 4096;
        while (nc < m->arena_len + len)
            nc *= 2;
        char *na = realloc(m->arena, nc);
        if (!na)
            return fq_error("out of memory growing the token map to %zu bytes", nc);
        m->arena = na;
        m->arena_cap = nc;
    }
    if (len)
        memcpy(m->arena + m->arena_len, key, len);
    s->hash = h;
    s->off = (uint32_t)m->arena_len;
    s->len = (uint32_t)len;
    s->val = val;
    s->used = 1;
    m->arena_len += len;
    m->n++;
    if (key_off)
        *key_off = s->off;
    return FQ_OK;
}

static uint64_t pair_key(int32_t left, int32_t right)
{
    return ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) | TOK_SLOT_USED;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

int tok_mergemap_init(tok_mergemap *m, size_t expect)
{
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least(expect * 2 + 1);
    m->slots = fq_calloc(m->cap, sizeof *m->slots, "merge map");
    return m->slots ? FQ_OK : FQ_ERR;
}

void tok_mergemap_free(tok_mergemap *m)
{
    free(m->slots);
    memset(m, 0, sizeof *m);
}

int tok_mergemap_put(tok_mergemap *m, int32_t left, int32_t right, int32_t rank, int32_t new_id)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t ncap = m->cap * 2;
        struct tok_merge_slot *ns = fq_calloc(ncap, sizeof *ns, "merge map");
        if (!ns)
            return FQ_ERR;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->slots[i].key)
                continue;
            size_t j = mix64(m->slots[i].key) & (ncap - 1);
            while (ns[j].key)
                j = (j + 1) & (ncap - 1);
            ns[j] = m->slots[i];
        }
        free(m->slots);
        m->slots = ns;
        m->cap = ncap;
    }
    uint64_t k = pair_key(left, right);
    size_t mask = m->cap - 1;
    size_t i = mix64(k) & mask;
    while (m->slots[i].key && m->slots[i].key != k)
        i = (i + 1) & mask;
    if (!m->slots[i].key)
        m->n++;
    /* A repeated pair keeps its last rank, as a Rust HashMap built from the list does. */
    m->slots[i].key = k;
    m->slots[i].rank = rank;
    m->slots[i].new_id = new_id;
    return FQ_OK;
}

int tok_mergemap_get(const tok_mergemap *m, int32_t left, int32_t right, int32_t *rank,
                     int32_t *new_id)
{
    if (!m->slots)
        return 0;
    uint64_t k = pair_key(left, right);
    size_t mask = m->cap - 1;
    for (size_t i = mix64(k) & mask; m->slots[i].key; i = (i + 1) & mask) {
        if (m->slots[i].key == k) {
            *rank = m->slots[i].rank;
            *new_id = m->slots[i].new_id;
            return 1;
        }
    }
    return 0;
}

int tok_ids_push(tok_ids *b, int32_t id)
{
    if (b->n == b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 256;
        int32_t *nv = realloc(b->v, nc * sizeof *nv);
        if (!nv)
            return fq_error("out of memory growing the token id buffer to %zu ids", nc);
        b->v = nv;
        b->cap = nc;
    }
    b->v[b->n++] = id;
    return FQ_OK;
}

int tok_ids_append(tok_ids *b, const int32_t *ids, size_t n)
{
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n)
            nc *= 2;
        int32_t *nv = realloc(b->v, nc * sizeof *nv);
        if (!nv)
            return fq_error("out of memory growing the token id buffer to %zu ids", nc);
        b->v = nv;
        b->cap = nc;
    }
    if (n)
        memcpy(b->v + b->n, ids, n * sizeof *ids);
    b->n += n;
    return FQ_OK;
}
