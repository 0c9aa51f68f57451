/* tokenizer_load.c — tokenizer.json (jansson) → the flat tables of tokenizer_internal.h.
 *
 * The file is treated as untrusted: every field is type-checked, every id range-checked,
 * every merge must name vocab tokens whose concatenation is also in the vocab. Any
 * component type or option that changes the ids and that flatq does not implement is
 * refused with one line naming the file, the JSON path and what is supported; silently
 * ignoring one would give plausible-looking but wrong ids.
 *
 * Supported (what LLaMA-2/3 style files use):
 *   normalizer     null | Sequence | Prepend | Replace (String pattern)
 *   pre_tokenizer  null | Sequence | Split (Isolated/Removed, not inverted) |
 *                  Metaspace (tokenizer_metaspace.c) | ByteLevel (last, add_prefix_space=false)
 *   model          BPE (vocab, merges as "a b" or ["a","b"], unk_token, byte_fallback,
 *                  fuse_unk, ignore_merges)
 *   post_processor null | Sequence | TemplateProcessing (single) | ByteLevel (no-op on ids)
 *   decoder        null | Sequence | ByteLevel | Replace | ByteFallback | Fuse | Strip |
 *                  Metaspace
 *
 * Split regexes run on PCRE2 (UTF + UCP, JIT). Hugging Face runs them on Oniguruma, whose
 * \s is Unicode White_Space; PCRE2's \s also matches U+180E, so \s and \S are rewritten
 * into explicit classes before compiling.
 */
#include "fileio.h"
#include "tokenizer_internal.h"

#include "error.h"
#include "utf8.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Ids beyond this are refused: no real vocabulary is near it and it bounds allocation. */
#define TOK_MAX_ID (1 << 24)

/* Unicode White_Space, as a character-class body. */
#define TOK_WS_CLASS "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}" \
                     "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

/* The GPT-2 split that ByteLevel(use_regex=true) applies. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

typedef struct {
    tokenizer *t;
    const char *label;
} loader;

static int bad(const loader *L, const char *path, const char *what)
{
    return fq_error("%s: %s: %s", L->label, path, what);
}

static const char *type_of(const loader *L, json_t *obj, const char *path)
{
    if (!json_is_object(obj)) {
        bad(L, path, "not an object (expected an object with a \"type\" field)");
        return NULL;
    }
    const char *ty = json_string_value(json_object_get(obj, "type"));
    if (!ty)
        bad(L, path, "missing \"type\" (expected a string)");
    return ty;
}

static int get_bool(const loader *L, json_t *obj, const char *key, int def, int *out,
                    const char *path)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return FQ_OK;
    }
    if (!json_is_boolean(v))
        return fq_error("%s: %s.%s: not a boolean (expected true or false)", L->label, path,
                        key);
    *out = json_is_true(v);
    return FQ_OK;
}

static int dup_string(const loader *L, json_t *v, const char *path, char **out, size_t *len)
{
    if (!json_is_string(v))
        return bad(L, path, "not a string (expected a string)");
    size_t n = json_string_length(v);
    char *s = fq_malloc(n + 1, "tokenizer string");
    if (!s)
        return FQ_ERR;
    memcpy(s, json_string_value(v), n);
    s[n] = '\0';
    *out = s;
    *len = n;
    return FQ_OK;
}

/* {"String": "x"} → x; {"Regex": …} refused unless allow_regex (then *is_regex = 1). */
static int get_pattern(const loader *L, json_t *obj, const char *path, int allow_regex,
                       char **out, size_t *len, int *is_regex)
{
    char p[256];
    json_t *pat = json_object_get(obj, "pattern");
    snprintf(p, sizeof p, "%s.pattern", path);
    if (!json_is_object(pat))
        return bad(L, p, "missing or not an object (expected {\"String\": …} or {\"Regex\": …})");
    json_t *s = json_object_get(pat, "String");
    json_t *r = json_object_get(pat, "Regex");
    if (s) {
        *is_regex = 0;
        return dup_string(L, s, p, out, len);
    }
    if (r && allow_regex) {
        *is_regex = 1;
        return dup_string(L, r, p, out, len);
    }
    if (r)
        return bad(L, p, "Regex patterns are not supported here (expected {\"String\": …})");
    return bad(L, p, "neither String nor Regex (expected {\"String\": …} or {\"Regex\": …})");
}

/* A {"type": "Sequence", KEY: [...]} component: load each element with `add`, naming
 * it PATH.KEY[i] in errors. Shared by normalizers, pre-tokenizers, post-processors and
 * decoders, which all nest the same way. */
typedef int (*component_fn)(const loader *L, json_t *n, const char *path);

static int load_sequence(const loader *L, json_t *n, const char *path, const char *key,
                         const char *what, component_fn add)
{
    json_t *list = json_object_get(n, key);
    if (!json_is_array(list))
        return fq_error("%s: %s.%s: not an array (expected a list of %s)", L->label, path, key,
                        what);
    for (size_t i = 0; i < json_array_size(list); i++) {
        char p[256];
        snprintf(p, sizeof p, "%s.%s[%zu]", path, key, i);
        if (add(L, json_array_get(list, i), p) != FQ_OK)
            return FQ_ERR;
    }
    return FQ_OK;
}

/* ---------------- normalizer ---------------- */

static int add_norm(const loader *L, json_t *n, const char *path)
{
    tokenizer *t = L->t;
    const char *ty = type_of(L, n, path);
    if (!ty)
        return FQ_ERR;
    char p[256];
    if (strcmp(ty, "Sequence") == 0)
        return load_sequence(L, n, path, "normalizers", "normalizers", add_norm);
    tok_norm_step st = {0};
    if (strcmp(ty, "Prepend") == 0) {
        st.kind = TOK_NORM_PREPEND;
        snprintf(p, sizeof p, "%s.prepend", path);
        if (dup_string(L, json_object_get(n, "prepend"), p, &st.a, &st.alen) != FQ_OK)
            return FQ_ERR;
    } else if (strcmp(ty, "Replace") == 0) {
        int is_regex;
        st.kind = TOK_NORM_REPLACE;
        if (get_pattern(L, n, path, 0, &st.a, &st.alen, &is_regex) != FQ_OK)
            return FQ_ERR;
        snprintf(p, sizeof p, "%s.content", path);
        if (dup_string(L, json_object_get(n, "content"), p, &st.b, &st.blen) != FQ_OK) {
            free(st.a);
            return FQ_ERR;
        }
        if (st.alen == 0) {
            free(st.a);
            free(st.b);
            return fq_error("%s: %s.pattern: empty string (expected a non-empty pattern)",
                            L->label, path);
        }
    } else {
        return fq_error("%s: %s.type: unknown normalizer type \"%s\" (expected Sequence, "
                        "Prepend or Replace)", L->label, path, ty);
    }
    tok_norm_step *nn = realloc(t->norm, (t->n_norm + 1) * sizeof *nn);
    if (!nn) {
        free(st.a);
        free(st.b);
        return fq_error("out of memory loading the normalizer");
    }
    t->norm = nn;
    t->norm[t->n_norm++] = st;
    return FQ_OK;
}

/* ---------------- pre-tokenizer ---------------- */

/* Rewrite \s and \S into explicit White_Space classes (see the file comment). */
static char *translate_regex(const loader *L, const char *pat, size_t len, const char *path)
{
    size_t cap = len * 8 + sizeof TOK_WS_CLASS * 4 + 16, o = 0;
    int in_class = 0;
    char *out = fq_malloc(cap, "regex");
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        char c = pat[i];
        const char *rep = NULL;
        if (c == '\\' && i + 1 < len) {
            char d = pat[i + 1];
            if (d == 's')
                rep = in_class ? TOK_WS_CLASS : "[" TOK_WS_CLASS "]";
            else if (d == 'S' && !in_class)
                rep = "[^" TOK_WS_CLASS "]";
            else if (d == 'S') {
                free(out);
                bad(L, path, "\\S inside a character class is not supported "
                             "(expected \\s, \\p{…} or literal characters there)");
                return NULL;
            }
            if (rep) {
                size_t n = strlen(rep);
                if (o + n + 2 > cap) {
                    free(out);
                    bad(L, path, "regex too long after rewriting \\s");
                    return NULL;
                }
                memcpy(out + o, rep, n);
                o += n;
            } else {
                out[o++] = c;
                out[o++] = d;
            }
            i++;
            continue;
        }
        if (c == '[' && !in_class) {
            in_class = 1;
            out[o++] = c;
            /* A ']' right after '[' or '[^' is a literal member, not the end. */
            if (i + 1 < len && pat[i + 1] == '^')
                out[o++] = pat[++i];
            if (i + 1 < len && pat[i + 1] == ']')
                out[o++] = pat[++i];
            continue;
        }
        if (c == ']' && in_class)
            in_class = 0;
        if (o + 2 > cap) {
            free(out);
            bad(L, path, "regex too long after rewriting \\s");
            return NULL;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return out;
}

static int add_split(const loader *L, const char *pat, size_t len, int is_regex,
                     enum tok_split_behavior behavior, const char *path)
{
    tokenizer *t = L->t;
    char *src = NULL;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP;
    if (is_regex) {
        src = translate_regex(L, pat, len, path);
        if (!src)
            return FQ_ERR;
        len = strlen(src);
    } else {
        opts = PCRE2_UTF | PCRE2_LITERAL; /* UCP is not allowed with LITERAL (and moot) */
        if (len == 0)
            return bad(L, path, "empty split string (expected a non-empty pattern)");
    }
    int errcode;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(src ? src : pat), len, opts, &errcode,
                                   &erroff, NULL);
    free(src);
    if (!re) {
        char msg[256];
        pcre2_get_error_message(errcode, (PCRE2_UCHAR *)msg, sizeof msg);
        return fq_error("%s: %s: regex does not compile at offset %zu: %s (expected a "
                        "PCRE2-compatible pattern)", L->label, path, (size_t)erroff, msg);
    }
    /* JIT failure (e.g. no executable memory) only costs speed: the interpreter runs. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    tok_split_step *ns = realloc(t->split, (t->n_split + 1) * sizeof *ns);
    if (!ns) {
        pcre2_code_free(re);
        return fq_error("out of memory loading the pre-tokenizer");
    }
    t->split = ns;
    t->split[t->n_split] = (tok_split_step){.kind = TOK_PRE_SPLIT, .re = re,
                                            .behavior = behavior};
    t->n_split++;
    t->has_regex_split = 1;
    return FQ_OK;
}

static int add_metaspace_pretok(const loader *L, json_t *n, const char *path)
{
    tokenizer *t = L->t;
    tok_split_step st = {.kind = TOK_PRE_METASPACE};
    if (tok_metaspace_parse(L->label, n, path, &st.meta) != FQ_OK)
        return FQ_ERR;
    tok_split_step *ns = realloc(t->split, (t->n_split + 1) * sizeof *ns);
    if (!ns)
        return fq_error("out of memory loading the pre-tokenizer");
    t->split = ns;
    t->split[t->n_split++] = st;
    return FQ_OK;
}

static int add_pretok(const loader *L, json_t *n, const char *path)
{
    tokenizer *t = L->t;
    const char *ty = type_of(L, n, path);
    if (!ty)
        return FQ_ERR;
    char p[256];
    if (t->byte_level)
        return bad(L, path, "a pre-tokenizer after ByteLevel is not supported (expected "
                            "ByteLevel to be the last step)");
    if (strcmp(ty, "Sequence") == 0)
        return load_sequence(L, n, path, "pretokenizers", "pre-tokenizers", add_pretok);
    if (strcmp(ty, "Split") == 0) {
        char *pat;
        size_t len;
        int is_regex = 0, invert = 0;
        enum tok_split_behavior beh;
        const char *b = json_string_value(json_object_get(n, "behavior"));
        if (!b)
            return fq_error("%s: %s.behavior: missing (expected \"Isolated\" or \"Removed\")",
                            L->label, path);
        if (strcmp(b, "Isolated") == 0)
            beh = TOK_SPLIT_ISOLATED;
        else if (strcmp(b, "Removed") == 0)
            beh = TOK_SPLIT_REMOVED;
        else
            return fq_error("%s: %s.behavior: \"%s\" is not supported (expected \"Isolated\" "
                            "or \"Removed\")", L->label, path, b);
        if (get_bool(L, n, "invert", 0, &invert, path) != FQ_OK)
            return FQ_ERR;
        if (invert)
            return fq_error("%s: %s.invert: true is not supported (expected false)", L->label,
                            path);
        if (get_pattern(L, n, path, 1, &pat, &len, &is_regex) != FQ_OK)
            return FQ_ERR;
        snprintf(p, sizeof p, "%s.pattern", path);
        int rc = add_split(L, pat, len, is_regex, beh, p);
        free(pat);
        return rc;
    }
    if (strcmp(ty, "ByteLevel") == 0) {
        int prefix = 0, use_regex = 0;
        if (get_bool(L, n, "add_prefix_space", 1, &prefix, path) != FQ_OK ||
            get_bool(L, n, "use_regex", 1, &use_regex, path) != FQ_OK)
            return FQ_ERR;
        if (prefix)
            return fq_error("%s: %s.add_prefix_space: true is not supported (expected false)",
                            L->label, path);
        if (use_regex) {
            snprintf(p, sizeof p, "%s (use_regex)", path);
            if (add_split(L, gpt2_pattern, strlen(gpt2_pattern), 1, TOK_SPLIT_ISOLATED, p) !=
                FQ_OK)
                return FQ_ERR;
        }
        t->byte_level = 1;
        return FQ_OK;
    }
    if (strcmp(ty, "Metaspace") == 0)
        return add_metaspace_pretok(L, n, path);
    return fq_error("%s: %s.type: unknown pre_tokenizer type \"%s\" (expected Sequence, Split, "
                    "Metaspace or ByteLevel)", L->label, path, ty);
}

/* ---------------- model ---------------- */

static int load_model(const loader *L, json_t *m)
{
    tokenizer *t = L->t;
    const char *ty = type_of(L, m, "model");
    if (!ty)
        return FQ_ERR;
    if (strcmp(ty, "BPE") != 0)
        return fq_error("%s: model.type: unknown model type \"%s\" (expected BPE)", L->label,
                        ty);
    json_t *dropout = json_object_get(m, "dropout");
    if (dropout && !json_is_null(dropout) &&
        !(json_is_number(dropout) && json_number_value(dropout) == 0.0))
        return bad(L, "model.dropout", "BPE dropout is not supported (expected null)");
    const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(m, affix[i]);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return fq_error("%s: model.%s: not supported (expected null)", L->label, affix[i]);
    }
    if (get_bool(L, m, "byte_fallback", 0, &t->byte_fallback, "model") != FQ_OK ||
        get_bool(L, m, "fuse_unk", 0, &t->fuse_unk, "model") != FQ_OK ||
        get_bool(L, m, "ignore_merges", 0, &t->ignore_merges, "model") != FQ_OK)
        return FQ_ERR;

    json_t *vocab = json_object_get(m, "vocab");
    if (!json_is_object(vocab))
        return bad(L, "model.vocab", "missing or not an object (expected {\"token\": id, …})");
    if (tok_strmap_init(&t->vocab, json_object_size(vocab)) != FQ_OK)
        return FQ_ERR;
    const char *key;
    json_t *val;
    void *iter = json_object_iter(vocab);
    while (iter) {
        key = json_object_iter_key(iter);
        val = json_object_iter_value(iter);
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) >= TOK_MAX_ID)
            return fq_error("%s: model.vocab[\"%.40s\"]: id is not an integer in [0, %d) "
                            "(expected a token id)", L->label, key, TOK_MAX_ID);
        int32_t id = (int32_t)json_integer_value(val);
        /* Keys come from jansson, NUL-free unless escaped; the length is the key's. */
        size_t klen = json_object_iter_key_len(iter);
        if (tok_strmap_put(&t->vocab, key, klen, id, NULL) != FQ_OK)
            return FQ_ERR;
        if (id + 1 > t->vocab_size)
            t->vocab_size = id + 1;
        iter = json_object_iter_next(vocab, iter);
    }

    t->unk_id = -1;
    json_t *unk = json_object_get(m, "unk_token");
    if (unk && !json_is_null(unk)) {
        if (!json_is_string(unk))
            return bad(L, "model.unk_token", "not a string (expected a token or null)");
        t->unk_id = tok_strmap_get(&t->vocab, json_string_value(unk), json_string_length(unk),
                                   -1);
        if (t->unk_id < 0)
            return fq_error("%s: model.unk_token: \"%.40s\" is not in model.vocab (expected "
                            "a vocab token)", L->label, json_string_value(unk));
    }

    json_t *merges = json_object_get(m, "merges");
    if (!json_is_array(merges))
        return bad(L, "model.merges", "missing or not an array (expected a list of pairs)");
    if (tok_mergemap_init(&t->merges, json_array_size(merges)) != FQ_OK)
        return FQ_ERR;
    char *buf = NULL;
    size_t buf_cap = 0;
    int rc = FQ_OK;
    for (size_t i = 0; i < json_array_size(merges) && rc == FQ_OK; i++) {
        json_t *e = json_array_get(merges, i);
        const char *a, *b;
        size_t alen, blen;
        if (json_is_string(e)) {
            a = json_string_value(e);
            const char *sp = memchr(a, ' ', json_string_length(e));
            if (!sp || memchr(sp + 1, ' ', json_string_length(e) - (size_t)(sp + 1 - a))) {
                rc = fq_error("%s: model.merges[%zu]: \"%.40s\" is not two tokens separated by "
                              "one space (expected \"left right\")", L->label, i, a);
                break;
            }
            alen = (size_t)(sp - a);
            b = sp + 1;
            blen = json_string_length(e) - alen - 1;
        } else if (json_is_array(e) && json_array_size(e) == 2 &&
                   json_is_string(json_array_get(e, 0)) &&
                   json_is_string(json_array_get(e, 1))) {
            a = json_string_value(json_array_get(e, 0));
            alen = json_string_length(json_array_get(e, 0));
            b = json_string_value(json_array_get(e, 1));
            blen = json_string_length(json_array_get(e, 1));
        } else {
            rc = fq_error("%s: model.merges[%zu]: not a pair (expected \"left right\" or "
                          "[\"left\", \"right\"])", L->label, i);
            break;
        }
        int32_t ia = tok_strmap_get(&t->vocab, a, alen, -1);
        int32_t ib = tok_strmap_get(&t->vocab, b, blen, -1);
        if (ia < 0 || ib < 0) {
            rc = fq_error("%s: model.merges[%zu]: token \"%.*s\" is not in model.vocab "
                          "(expected merges of vocab tokens)", L->label, i,
                          (int)(ia < 0 ? (alen > 40 ? 40 : alen) : (blen > 40 ? 40 : blen)),
                          ia < 0 ? a : b);
            break;
        }
        if (alen + blen > buf_cap) {
            buf_cap = (alen + blen) * 2 + 16;
            char *nb = realloc(buf, buf_cap);
            if (!nb) {
                rc = fq_error("out of memory loading merges");
                break;
            }
            buf = nb;
        }
        memcpy(buf, a, alen);
        memcpy(buf + alen, b, blen);
        int32_t inew = tok_strmap_get(&t->vocab, buf, alen + blen, -1);
        if (inew < 0) {
            rc = fq_error("%s: model.merges[%zu]: merged token \"%.*s\" is not in model.vocab "
                          "(expected the concatenation to be a vocab token)", L->label, i,
                          (int)(alen + blen > 40 ? 40 : alen + blen), buf);
            break;
        }
        rc = tok_mergemap_put(&t->merges, ia, ib, (int32_t)i, inew);
    }
    free(buf);
    return rc;
}

/* ---------------- added tokens ---------------- */

/* Hugging Face ignores the "id" written in added_tokens: it re-adds the tokens in file
 * order, giving each the id of the same content already added or in the model vocab,
 * else the next free id (one past the largest added id when that is at or beyond the
 * model vocab's size, else the model vocab's size). Mirrored here so that a file whose
 * ids disagree encodes as it does there. The written id must still be a valid integer. */
static int32_t next_added_id(const tokenizer *t)
{
    int32_t nv = (int32_t)t->vocab.n, max = -1;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].id > max)
            max = t->added[i].id;
    if (max < 0)
        return nv;
    return max >= nv || nv == 0 ? max + 1 : nv;
}

static int load_added(const loader *L, json_t *list)
{
    tokenizer *t = L->t;
    if (!list || json_is_null(list))
        return FQ_OK;
    if (!json_is_array(list))
        return bad(L, "added_tokens", "not an array (expected a list of token objects)");
    size_t n = json_array_size(list);
    t->added = fq_calloc(n ? n : 1, sizeof *t->added, "added tokens");
    if (!t->added)
        return FQ_ERR;
    for (size_t i = 0; i < n; i++) {
        char p[64], pc[80];
        snprintf(p, sizeof p, "added_tokens[%zu]", i);
        snprintf(pc, sizeof pc, "%s.content", p);
        json_t *e = json_array_get(list, i);
        if (!json_is_object(e))
            return bad(L, p, "not an object (expected {\"id\": …, \"content\": …})");
        json_t *id = json_object_get(e, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= TOK_MAX_ID)
            return fq_error("%s: %s.id: not an integer in [0, %d) (expected a token id)",
                            L->label, p, TOK_MAX_ID);
        json_t *c = json_object_get(e, "content");
        if (!json_is_string(c))
            return bad(L, pc, "not a string (expected the token text)");
        int special = 0, normalized = 0, lstrip = 0, rstrip = 0, single = 0;
        if (get_bool(L, e, "special", 0, &special, p) != FQ_OK ||
            get_bool(L, e, "normalized", 0, &normalized, p) != FQ_OK ||
            get_bool(L, e, "lstrip", 0, &lstrip, p) != FQ_OK ||
            get_bool(L, e, "rstrip", 0, &rstrip, p) != FQ_OK ||
            get_bool(L, e, "single_word", 0, &single, p) != FQ_OK)
            return FQ_ERR;
        if (lstrip || rstrip || single)
            return fq_error("%s: %s: lstrip/rstrip/single_word true is not supported "
                            "(expected false)", L->label, p);
        /* A normalized token is matched in its normalized form; flatq matches the
         * content as written, which is the same only without a normalizer. */
        if (normalized && t->n_norm)
            return fq_error("%s: %s.normalized: true together with a normalizer is not "
                            "supported (expected false)", L->label, p);
        size_t len = json_string_length(c);
        if (len == 0)
            continue; /* Hugging Face skips empty added tokens */
        const char *content = json_string_value(c);
        tok_added *a = NULL;
        for (size_t k = 0; k < t->n_added && !a; k++)
            if (t->added[k].len == len && memcmp(t->added[k].content, content, len) == 0)
                a = &t->added[k];
        if (a) {
            a->special |= special;
            a->normalized = normalized;
        } else {
            int32_t vid = tok_strmap_get(&t->vocab, content, len, -1);
            int32_t new_id = vid >= 0 ? vid : next_added_id(t);
            if (new_id >= TOK_MAX_ID)
                return fq_error("%s: %s: too many added tokens (expected ids below %d)",
                                L->label, p, TOK_MAX_ID);
            a = &t->added[t->n_added];
            if (dup_string(L, c, pc, &a->content, &a->len) != FQ_OK)
                return FQ_ERR;
            t->n_added++;
            a->id = new_id;
            a->special = special;
            a->normalized = normalized;
        }
        t->added_first[a->normalized ? 1 : 0][(unsigned char)a->content[0]] = 1;
        if (a->id + 1 > t->vocab_size)
            t->vocab_size = a->id + 1;
    }
    return FQ_OK;
}

/* ---------------- post-processor ---------------- */

static int load_template(const loader *L, json_t *n, const char *path)
{
    tokenizer *t = L->t;
    char p[256];
    if (t->has_template)
        return bad(L, path, "a second TemplateProcessing is not supported (expected one)");
    json_t *single = json_object_get(n, "single");
    json_t *specials = json_object_get(n, "special_tokens");
    if (!json_is_array(single))
        return fq_error("%s: %s.single: not an array (expected a template list)", L->label,
                        path);
    if (specials && !json_is_null(specials) && !json_is_object(specials))
        return fq_error("%s: %s.special_tokens: not an object (expected {name: {ids: […]}})",
                        L->label, path);
    size_t n_items = json_array_size(single);
    t->tmpl = fq_calloc(n_items ? n_items : 1, sizeof *t->tmpl, "template");
    if (!t->tmpl)
        return FQ_ERR;
    t->has_template = 1;
    int seen_seq = 0;
    for (size_t i = 0; i < n_items; i++) {
        snprintf(p, sizeof p, "%s.single[%zu]", path, i);
        json_t *it = json_array_get(single, i);
        json_t *sp = json_object_get(it, "SpecialToken");
        json_t *sq = json_object_get(it, "Sequence");
        tok_template_item *ti = &t->tmpl[t->n_tmpl];
        if (json_is_object(sq)) {
            const char *id = json_string_value(json_object_get(sq, "id"));
            if (!id || strcmp(id, "A") != 0)
                return bad(L, p, "Sequence id is not \"A\" (expected \"A\" in a single "
                                 "template)");
            ti->is_sequence = 1;
            seen_seq = 1;
        } else if (json_is_object(sp)) {
            const char *name = json_string_value(json_object_get(sp, "id"));
            json_t *def = name ? json_object_get(specials, name) : NULL;
            json_t *ids = json_object_get(def, "ids");
            if (!json_is_array(ids))
                return fq_error("%s: %s: special token \"%.40s\" has no ids in "
                                "special_tokens (expected special_tokens[name].ids)",
                                L->label, p, name ? name : "?");
            ti->n = json_array_size(ids);
            ti->ids = fq_calloc(ti->n ? ti->n : 1, sizeof *ti->ids, "template ids");
            if (!ti->ids)
                return FQ_ERR;
            for (size_t k = 0; k < ti->n; k++) {
                json_t *v = json_array_get(ids, k);
                if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                    json_integer_value(v) >= TOK_MAX_ID) {
                    t->n_tmpl++;
                    return fq_error("%s: %s: special token \"%.40s\" id %zu is not an "
                                    "integer in [0, %d) (expected a token id)", L->label, p,
                                    name, k, TOK_MAX_ID);
                }
                ti->ids[k] = (int32_t)json_integer_value(v);
                if (ti->ids[k] + 1 > t->vocab_size)
                    t->vocab_size = ti->ids[k] + 1;
            }
            if (i == 0 && ti->n > 0)
                t->bos_id = ti->ids[0];
        } else {
            return bad(L, p, "neither SpecialToken nor Sequence (expected one of them)");
        }
        t->n_tmpl++;
    }
    if (!seen_seq)
        return fq_error("%s: %s.single: no Sequence item (expected the text to appear)",
                        L->label, path);
    return FQ_OK;
}

static int load_post(const loader *L, json_t *n, const char *path)
{
    const char *ty = type_of(L, n, path);
    if (!ty)
        return FQ_ERR;
    if (strcmp(ty, "Sequence") == 0)
        return load_sequence(L, n, path, "processors", "post-processors", load_post);
    if (strcmp(ty, "TemplateProcessing") == 0)
        return load_template(L, n, path);
    if (strcmp(ty, "ByteLevel") == 0)
        return FQ_OK; /* only adjusts offsets, never ids */
    return fq_error("%s: %s.type: unknown post_processor type \"%s\" (expected Sequence, "
                    "TemplateProcessing or ByteLevel)", L->label, path, ty);
}

/* ---------------- decoder ---------------- */

static int add_dec(const loader *L, json_t *n, const char *path)
{
    tokenizer *t = L->t;
    const char *ty = type_of(L, n, path);
    if (!ty)
        return FQ_ERR;
    char p[256];
    if (strcmp(ty, "Sequence") == 0)
        return load_sequence(L, n, path, "decoders", "decoders", add_dec);
    tok_dec_step st = {0};
    if (strcmp(ty, "ByteLevel") == 0) {
        st.kind = TOK_DEC_BYTE_LEVEL;
    } else if (strcmp(ty, "ByteFallback") == 0) {
        st.kind = TOK_DEC_BYTE_FALLBACK;
    } else if (strcmp(ty, "Fuse") == 0) {
        st.kind = TOK_DEC_FUSE;
    } else if (strcmp(ty, "Replace") == 0) {
        int is_regex;
        st.kind = TOK_DEC_REPLACE;
        if (get_pattern(L, n, path, 0, &st.a, &st.alen, &is_regex) != FQ_OK)
            return FQ_ERR;
        snprintf(p, sizeof p, "%s.content", path);
        if (dup_string(L, json_object_get(n, "content"), p, &st.b, &st.blen) != FQ_OK) {
            free(st.a);
            return FQ_ERR;
        }
        if (st.alen == 0) {
            free(st.a);
            free(st.b);
            return fq_error("%s: %s.pattern: empty string (expected a non-empty pattern)",
                            L->label, path);
        }
    } else if (strcmp(ty, "Strip") == 0) {
        st.kind = TOK_DEC_STRIP;
        json_t *c = json_object_get(n, "content");
        json_t *s0 = json_object_get(n, "start"), *s1 = json_object_get(n, "stop");
        snprintf(p, sizeof p, "%s.content", path);
        if (!json_is_integer(s0) || !json_is_integer(s1) || json_integer_value(s0) < 0 ||
            json_integer_value(s1) < 0)
            return fq_error("%s: %s.start/stop: not non-negative integers (expected counts)",
                            L->label, path);
        if (dup_string(L, c, p, &st.a, &st.alen) != FQ_OK)
            return FQ_ERR;
        if (st.alen == 0 || utf8_seq_len((const unsigned char *)st.a, st.alen) != st.alen) {
            free(st.a);
            return bad(L, p, "not a single character (expected one character)");
        }
        st.start = (size_t)json_integer_value(s0);
        st.stop = (size_t)json_integer_value(s1);
    } else if (strcmp(ty, "Metaspace") == 0) {
        st.kind = TOK_DEC_METASPACE;
        if (tok_metaspace_parse(L->label, n, path, &st.meta) != FQ_OK)
            return FQ_ERR;
    } else {
        return fq_error("%s: %s.type: unknown decoder type \"%s\" (expected Sequence, "
                        "ByteLevel, Replace, ByteFallback, Fuse, Strip or Metaspace)", L->label,
                        path, ty);
    }
    tok_dec_step *nd = realloc(t->dec, (t->n_dec + 1) * sizeof *nd);
    if (!nd) {
        free(st.a);
        free(st.b);
        return fq_error("out of memory loading the decoder");
    }
    t->dec = nd;
    t->dec[t->n_dec++] = st;
    return FQ_OK;
}

/* ---------------- tables built from the above ---------------- */

static int build_tables(const loader *L)
{
    tokenizer *t = L->t;
    for (int b = 0; b < 256; b++) {
        char s[8];
        size_t n = utf8_encode(tok_byte_to_cp((uint8_t)b), s);
        t->byte_level_id[b] = tok_strmap_get(&t->vocab, s, n, -1);
        snprintf(s, sizeof s, "<0x%02X>", b);
        t->byte_fallback_id[b] = tok_strmap_get(&t->vocab, s, 6, -1);
    }
    if (t->vocab_size == 0)
        return bad(L, "model.vocab", "empty (expected at least one token)");
    t->id_text = fq_calloc((size_t)t->vocab_size, sizeof *t->id_text, "id table");
    t->id_len = fq_calloc((size_t)t->vocab_size, sizeof *t->id_len, "id table");
    if (!t->id_text || !t->id_len)
        return FQ_ERR;
    for (size_t i = 0; i < t->vocab.cap; i++) {
        const struct tok_slot *s = &t->vocab.slots[i];
        if (!s->used)
            continue;
        t->id_text[s->val] = t->vocab.arena + s->off;
        t->id_len[s->val] = s->len;
    }
    for (size_t i = 0; i < t->n_added; i++) {
        t->id_text[t->added[i].id] = t->added[i].content;
        t->id_len[t->added[i].id] = (uint32_t)t->added[i].len;
    }
    return FQ_OK;
}

static int32_t token_id_by_name(const tokenizer *t, const char *s, size_t len)
{
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == len && memcmp(t->added[i].content, s, len) == 0)
            return t->added[i].id;
    return tok_strmap_get(&t->vocab, s, len, -1);
}

/* The EOS token is not in tokenizer.json; without a tokenizer_config.json the usual
 * names of special tokens stand in. */
static void guess_eos(tokenizer *t)
{
    static const char *names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>"};
    for (size_t k = 0; k < sizeof names / sizeof *names && t->eos_id < 0; k++)
        for (size_t i = 0; i < t->n_added; i++)
            if (t->added[i].special && strcmp(t->added[i].content, names[k]) == 0)
                t->eos_id = t->added[i].id;
}

static int load_root(loader *L, json_t *root)
{
    tokenizer *t = L->t;
    if (!json_is_object(root))
        return bad(L, "(root)", "not a JSON object (expected a tokenizer.json object)");
    const char *none_ok[] = {"truncation", "padding"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(root, none_ok[i]);
        if (v && !json_is_null(v))
            return fq_error("%s: %s: not supported (expected null)", L->label, none_ok[i]);
    }
    if (load_model(L, json_object_get(root, "model")) != FQ_OK)
        return FQ_ERR;
    json_t *n = json_object_get(root, "normalizer");
    if (n && !json_is_null(n) && add_norm(L, n, "normalizer") != FQ_OK)
        return FQ_ERR;
    if (load_added(L, json_object_get(root, "added_tokens")) != FQ_OK)
        return FQ_ERR;
    n = json_object_get(root, "pre_tokenizer");
    if (n && !json_is_null(n) && add_pretok(L, n, "pre_tokenizer") != FQ_OK)
        return FQ_ERR;
    n = json_object_get(root, "post_processor");
    if (n && !json_is_null(n) && load_post(L, n, "post_processor") != FQ_OK)
        return FQ_ERR;
    n = json_object_get(root, "decoder");
    if (n && !json_is_null(n)) {
        t->has_decoder = 1;
        if (add_dec(L, n, "decoder") != FQ_OK)
            return FQ_ERR;
    }
    return build_tables(L);
}

int tokenizer_load_buffer(const char *json, size_t len, const char *label, tokenizer **out)
{
    if (!json || !out)
        return fq_error("tokenizer_load_buffer: NULL argument (expected JSON text and an "
                        "output pointer)");
    *out = NULL;
    if (!label)
        label = "tokenizer.json";
    tokenizer *t = fq_calloc(1, sizeof *t, "tokenizer");
    if (!t)
        return FQ_ERR;
    t->bos_id = t->eos_id = t->unk_id = -1;
    t->label = fq_strdup(label);
    if (!t->label) {
        free(t);
        return FQ_ERR;
    }
    loader L = {t, t->label};
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_ALLOW_NUL, &jerr);
    if (!root) {
        fq_error("%s:%d:%d: invalid JSON: %s (expected a tokenizer.json file)", label,
                 jerr.line, jerr.column, jerr.text);
        tokenizer_free(t);
        return FQ_ERR;
    }
    int rc = load_root(&L, root);
    json_decref(root);
    if (rc != FQ_OK) {
        tokenizer_free(t);
        return FQ_ERR;
    }
    guess_eos(t);
    *out = t;
    return FQ_OK;
}

/* eos_token from tokenizer_config.json beside the tokenizer, when there is one. */
static int apply_config(tokenizer *t, const char *cfg_path)
{
    json_error_t jerr;
    json_t *cfg = json_load_file(cfg_path, 0, &jerr);
    if (!cfg)
        return fq_error("%s:%d:%d: invalid JSON: %s (expected tokenizer_config.json)",
                        cfg_path, jerr.line, jerr.column, jerr.text);
    json_t *eos = json_object_get(cfg, "eos_token");
    if (json_is_object(eos))
        eos = json_object_get(eos, "content");
    int rc = FQ_OK;
    if (json_is_string(eos)) {
        int32_t id = token_id_by_name(t, json_string_value(eos), json_string_length(eos));
        if (id < 0)
            rc = fq_error("%s: eos_token: \"%.40s\" is not a token of the tokenizer (expected "
                          "a vocab or added token)", cfg_path, json_string_value(eos));
        else
            t->eos_id = id;
    }
    json_decref(cfg);
    return rc;
}

int tokenizer_load(const char *path_or_model_dir, tokenizer **out)
{
    if (!path_or_model_dir || !out)
        return fq_error("tokenizer_load: NULL argument (expected a path and an output "
                        "pointer)");
    *out = NULL;
    struct stat st;
    size_t plen = strlen(path_or_model_dir);
    char *path = fq_malloc(plen + 32, "path"), *cfg = fq_malloc(plen + 32, "path");
    if (!path || !cfg) {
        free(path);
        free(cfg);
        return FQ_ERR;
    }
    if (stat(path_or_model_dir, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(path, plen + 32, "%s/tokenizer.json", path_or_model_dir);
        snprintf(cfg, plen + 32, "%s/tokenizer_config.json", path_or_model_dir);
    } else {
        memcpy(path, path_or_model_dir, plen + 1);
        const char *slash = strrchr(path_or_model_dir, '/');
        size_t dl = slash ? (size_t)(slash - path_or_model_dir) + 1 : 0;
        memcpy(cfg, path_or_model_dir, dl);
        memcpy(cfg + dl, "tokenizer_config.json", sizeof "tokenizer_config.json");
    }
    char *buf;
    size_t len;
    int rc = fq_read_file(path, &buf, &len);
    if (rc == FQ_OK) {
        rc = tokenizer_load_buffer(buf, len, path, out);
        free(buf);
    }
    if (rc == FQ_OK && stat(cfg, &st) == 0 && apply_config(*out, cfg) != FQ_OK) {
        tokenizer_free(*out);
        *out = NULL;
        rc = FQ_ERR;
    }
    free(path);
    free(cfg);
    return rc;
}

void tokenizer_free(tokenizer *t)
{
    if (!t)
        return;
    tok_strmap_free(&t->vocab);
    tok_mergemap_free(&t->merges);
    free(t->id_text);
    free(t->id_len);
    for (size_t i = 0; i < t->n_added; i++)
        free(t->added[i].content);
    free(t->added);
    for (size_t i = 0; i < t->n_norm; i++) {
        free(t->norm[i].a);
        free(t->norm[i].b);
    }
    free(t->norm);
    for (size_t i = 0; i < t->n_split; i++)
        pcre2_code_free(t->split[i].re);
    free(t->split);
    for (size_t i = 0; i < t->n_tmpl; i++)
        free(t->tmpl[i].ids);
    free(t->tmpl);
    for (size_t i = 0; i < t->n_dec; i++) {
        free(t->dec[i].a);
        free(t->dec[i].b);
    }
    free(t->dec);
    free(t->label);
    free(t);
}

int tokenizer_vocab_size(const tokenizer *t) { return t ? t->vocab_size : 0; }
int tokenizer_bos_id(const tokenizer *t) { return t ? t->bos_id : -1; }
int tokenizer_eos_id(const tokenizer *t) { return t ? t->eos_id : -1; }
