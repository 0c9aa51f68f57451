/* tokenizer_metaspace.c — the Metaspace pre-tokenizer and decoder of tokenizer.json.
 *
 * Newer conversions of SentencePiece-style (LLaMA-2, Mistral) tokenizers no longer spell
 * "space → ▁, and one ▁ in front" as a Prepend+Replace normalizer; they use Metaspace, a
 * pre-tokenizer (with the same name as a decoder) that does it per piece of input, so
 * the exact rule about WHICH pieces get the leading ▁ decides the ids:
 *
 *   - spaces (U+0020 only; tabs and newlines stay) become the replacement character;
 *   - prepend_scheme "always": a piece that does not already start with the replacement
 *     gets one in front; "first": the same, but only for the piece that begins at offset
 *     0 of the original input — the text after an added token (e.g. "<s>Hi") gets none;
 *     "never": nothing is prepended;
 *   - split: the piece is cut before every replacement character, each cut keeping its
 *     leading ▁ (Hugging Face's MergedWithNext), so BPE never merges across a word start.
 *
 * The decoder turns each replacement character back into a space, except in the first
 * token of the list when the scheme is not "never": there every replacement character
 * is dropped (not just a leading one), as Hugging Face does.
 *
 * Options are parsed as Hugging Face 0.23.2 deserializes them, refusals included: a
 * replacement that is not exactly one character, an unknown scheme, and the legacy
 * `add_prefix_space: false` unless prepend_scheme is "never" are errors there and here.
 * The pure transforms live here; the encoder and decoder call them (tokenizer_encode.c,
 * tokenizer_decode.c), so the rule is written once.
 */
#include "tokenizer_internal.h"

#include "error.h"
#include "utf8.h"

#include <jansson.h>
#include <string.h>

/* A null value counts as absent, as serde's Option does. */
static json_t *field(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return v && !json_is_null(v) ? v : NULL;
}

static int parse_bool(const char *label, json_t *obj, const char *key, const char *path,
                      int *out)
{
    json_t *v = field(obj, key);
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return fq_error("%s: %s.%s: not a boolean (expected true or false)", label, path, key);
    *out = json_is_true(v);
    return 1;
}

int tok_metaspace_parse(const char *label, struct json_t *obj, const char *path,
                        tok_metaspace *out)
{
    if (!label || !obj || !path || !out)
        return fq_error("tok_metaspace_parse: NULL argument (expected a label, a JSON "
                        "object, a path and an output)");
    memset(out, 0, sizeof *out);
    json_t *rep = field(obj, "replacement");
    if (!json_is_string(rep))
        return fq_error("%s: %s.replacement: missing or not a string (expected one "
                        "character, e.g. \"\\u2581\")", label, path);
    size_t n = json_string_length(rep);
    const unsigned char *r = (const unsigned char *)json_string_value(rep);
    if (n == 0 || n > sizeof out->rep || utf8_seq_len(r, n) != n)
        return fq_error("%s: %s.replacement: \"%.40s\" is not a single character (expected "
                        "one character, e.g. \"\\u2581\")", label, path, (const char *)r);
    memcpy(out->rep, r, n);
    out->rep_len = n;

    out->prepend = TOK_PREPEND_ALWAYS;
    json_t *ps = field(obj, "prepend_scheme");
    if (ps) {
        const char *s = json_string_value(ps);
        if (s && strcmp(s, "always") == 0)
            out->prepend = TOK_PREPEND_ALWAYS;
        else if (s && strcmp(s, "first") == 0)
            out->prepend = TOK_PREPEND_FIRST;
        else if (s && strcmp(s, "never") == 0)
            out->prepend = TOK_PREPEND_NEVER;
        else
            return fq_error("%s: %s.prepend_scheme: %s%.40s%s is not a scheme (expected "
                            "\"first\", \"always\" or \"never\")", label, path,
                            s ? "\"" : "", s ? s : "not a string", s ? "\"" : "");
    }
    int aps = 1;
    int rc = parse_bool(label, obj, "add_prefix_space", path, &aps);
    if (rc < 0)
        return FQ_ERR;
    if (rc == 1 && !aps && out->prepend != TOK_PREPEND_NEVER)
        return fq_error("%s: %s.add_prefix_space: false contradicts prepend_scheme \"%s\" "
                        "(expected prepend_scheme \"never\" with it, as Hugging Face "
                        "requires)", label, path,
                        out->prepend == TOK_PREPEND_FIRST ? "first" : "always");
    out->split = 1;
    if (parse_bool(label, obj, "split", path, &out->split) < 0)
        return FQ_ERR;
    return FQ_OK;
}

size_t tok_metaspace_max_len(const tok_metaspace *m, size_t len)
{
    return (len + 1) * m->rep_len;
}

size_t tok_metaspace_apply(const tok_metaspace *m, const char *s, size_t len, int at_start,
                           char *out)
{
    if (len == 0)
        return 0; /* an empty piece yields no word, prepend or not */
    size_t o = 0;
    /* The "already starts with the replacement" test is on the replaced text, so a
     * leading space counts as the prefix. */
    int starts = s[0] == ' ' || (len >= m->rep_len && memcmp(s, m->rep, m->rep_len) == 0);
    int prepend = m->prepend == TOK_PREPEND_ALWAYS ||
                  (m->prepend == TOK_PREPEND_FIRST && at_start);
    if (prepend && !starts) {
        memcpy(out, m->rep, m->rep_len);
        o = m->rep_len;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ' ') {
            memcpy(out + o, m->rep, m->rep_len);
            o += m->rep_len;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

size_t tok_metaspace_piece_end(const tok_metaspace *m, const char *s, size_t len)
{
    if (!m->split || len <= 1)
        return len;
    /* s is valid UTF-8 and the replacement one whole character, so a match after byte 0
     * is on a character boundary. */
    const char *h = memmem(s + 1, len - 1, m->rep, m->rep_len);
    return h ? (size_t)(h - s) : len;
}
