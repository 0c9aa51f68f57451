/* tokenizer_internal.h — the loaded form of a tokenizer.json, shared by the tokenizer_*.c
 * files (loading, BPE, encoding, decoding). Not part of the public API.
 *
 * Everything is resolved at load time into flat tables so that encoding does no JSON
 * work and no string building: vocab and merges are open-addressing hash maps, the
 * byte-level and byte-fallback symbols are 256-entry id tables, and the pipeline stages
 * are small arrays of tagged steps run in file order.
 */
#ifndef FQ_TOKENIZER_INTERNAL_H
#define FQ_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer.h"

/* ---- hash maps (tokenizer_map.c) ---- */
uint64_t tok_hash(const void *p, size_t len);

/* String → int32. Keys are copied into an arena owned by the map. */
typedef struct {
    struct tok_slot {
        uint64_t hash;
        uint32_t off, len;
        int32_t val;
        uint32_t used;
    } *slots;
    size_t cap, n;
    char *arena;
    size_t arena_len, arena_cap;
} tok_strmap;

int tok_strmap_init(tok_strmap *m, size_t expect);
void tok_strmap_free(tok_strmap *m);
/* Value of key, or `missing` when absent. */
int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len, int32_t missing);
/* Insert or overwrite. *key_off (if non-NULL) receives the key's arena offset. */
int tok_strmap_put(tok_strmap *m, const char *key, size_t len, int32_t val, uint32_t *key_off);

/* Token pair (left id, right id) → merge rank and merged id. */
typedef struct {
    struct tok_merge_slot {
        uint64_t key; /* (left << 32 | right) | TOK_SLOT_USED */
        int32_t rank, new_id;
    } *slots;
    size_t cap, n;
} tok_mergemap;

int tok_mergemap_init(tok_mergemap *m, size_t expect);
void tok_mergemap_free(tok_mergemap *m);
int tok_mergemap_put(tok_mergemap *m, int32_t left, int32_t right, int32_t rank, int32_t new_id);
/* 1 and fills rank/new_id when the pair merges, else 0. */
int tok_mergemap_get(const tok_mergemap *m, int32_t left, int32_t right, int32_t *rank,
                     int32_t *new_id);

/* ---- growable id buffer ---- */
typedef struct {
    int32_t *v;
    size_t n, cap;
} tok_ids;
int tok_ids_push(tok_ids *b, int32_t id);
int tok_ids_append(tok_ids *b, const int32_t *ids, size_t n);

/* ---- pipeline steps ---- */
enum tok_norm_kind { TOK_NORM_PREPEND, TOK_NORM_REPLACE };
typedef struct {
    enum tok_norm_kind kind;
    char *a; /* Prepend: text; Replace: pattern */
    size_t alen;
    char *b; /* Replace: content */
    size_t blen;
} tok_norm_step;

/* Metaspace (pre-tokenizer and decoder alike): spaces ↔ the replacement character. */
enum tok_prepend_scheme { TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER };
typedef struct {
    char rep[4]; /* the replacement character, UTF-8 */
    size_t rep_len;
    enum tok_prepend_scheme prepend;
    int split; /* pre-tokenizer: cut before each replacement character */
} tok_metaspace;

/* Parse a {"type": "Metaspace", …} object (pre_tokenizer or decoder) the way Hugging Face
 * deserializes it; path names it in messages (tokenizer_metaspace.c). */
struct json_t;
int tok_metaspace_parse(const char *label, struct json_t *obj, const char *path,
                        tok_metaspace *out);
/* Bytes that tok_metaspace_apply may write for an input of len bytes. */
size_t tok_metaspace_max_len(const tok_metaspace *m, size_t len);
/* Spaces → replacement, plus the prepended replacement that the scheme asks for;
 * at_start: the piece begins at offset 0 of the whole input. Returns the length written. */
size_t tok_metaspace_apply(const tok_metaspace *m, const char *s, size_t len, int at_start,
                           char *out);
/* End of the piece that starts at s[0] when split is on (the next replacement character
 * after s[0], which begins the next piece), else len. */
size_t tok_metaspace_piece_end(const tok_metaspace *m, const char *s, size_t len);

enum tok_split_behavior { TOK_SPLIT_ISOLATED, TOK_SPLIT_REMOVED };
enum tok_pre_kind { TOK_PRE_SPLIT, TOK_PRE_METASPACE };
typedef struct {
    enum tok_pre_kind kind;
    pcre2_code *re; /* Split */
    enum tok_split_behavior behavior;
    tok_metaspace meta; /* Metaspace */
} tok_split_step;

enum tok_dec_kind {
    TOK_DEC_BYTE_LEVEL,
    TOK_DEC_REPLACE,
    TOK_DEC_BYTE_FALLBACK,
    TOK_DEC_FUSE,
    TOK_DEC_STRIP,
    TOK_DEC_METASPACE
};
typedef struct {
    enum tok_dec_kind kind;
    char *a; /* Replace: pattern; Strip: the character (UTF-8) */
    size_t alen;
    char *b; /* Replace: content */
    size_t blen;
    size_t start, stop; /* Strip */
    tok_metaspace meta; /* Metaspace */
} tok_dec_step;

typedef struct {
    char *content;
    size_t len;
    int32_t id;
    int special, normalized;
} tok_added;

/* One piece of the post-processor's single-sequence template. */
typedef struct {
    int is_sequence; /* 1: the encoded text; 0: fixed ids */
    int32_t *ids;
    size_t n;
} tok_template_item;

struct tokenizer {
    char *label; /* the file name, for messages */

    /* model: BPE */
    tok_strmap vocab;
    tok_mergemap merges;
    int32_t unk_id; /* -1: none */
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t byte_fallback_id[256]; /* id of "<0xNN>", -1 if absent */

    /* id → text for decoding (model vocab, overridden by added tokens) */
    const char **id_text;
    uint32_t *id_len;
    int32_t vocab_size;

    tok_added *added;
    size_t n_added;
    /* first byte → whether any added token starts with it (normalized=0 / =1 groups) */
    uint8_t added_first[2][256];

    tok_norm_step *norm;
    size_t n_norm;

    tok_split_step *split; /* pre-tokenizer steps in file order (Split, Metaspace) */
    size_t n_split;
    int has_regex_split; /* any Split step: the encoder needs PCRE2 match data */
    int byte_level;               /* ByteLevel pre-tokenizer: bytes → GPT-2 symbols */
    int32_t byte_level_id[256];   /* vocab id of the symbol for each byte, -1 if absent */

    int has_template;
    tok_template_item *tmpl;
    size_t n_tmpl;

    int has_decoder;
    tok_dec_step *dec;
    size_t n_dec;

    int32_t bos_id, eos_id;
};

/* GPT-2 byte ↔ printable code point map used by ByteLevel. */
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp); /* -1 when cp is not in the map */

/* Read a whole file into a malloc'ed buffer (tokenizer_load.c). */

/* ---- BPE (tokenizer_bpe.c) ---- */
/* Per-call scratch for the merge loop, reused across words. */
typedef struct {
    struct tok_sym {
        int32_t id;
        int32_t prev, next;
        int32_t alive;
    } *sym;
    size_t sym_cap;
    struct tok_cand {
        int32_t rank, pos, left, right, new_id;
    } *heap;
    size_t heap_n, heap_cap;
    char *text; /* byte-level symbol string for ignore_merges lookups */
    size_t text_cap;
} tok_bpe_scratch;

void tok_bpe_scratch_free(tok_bpe_scratch *s);
/* Append the BPE ids of one pre-tokenized word (raw UTF-8 bytes) to out. */
int tok_bpe_word(const tokenizer *t, tok_bpe_scratch *s, const char *w, size_t len,
                 tok_ids *out);

#endif
