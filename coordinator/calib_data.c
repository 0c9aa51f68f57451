/* calib_data.c — see calib_data.h. */
#include "coordinator/calib_data.h"
#include "error.h"
#include "fileio.h"
#include "rng.h"
#include "utf8.h"

#include <stdlib.h>
#include <string.h>

/* Python's str.isspace() for one code point: what .strip() removes at the ends. */
static int py_isspace(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 ||
           cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

/* Bytes of the whitespace code point starting at s[0] (0 when it is not one). */
static size_t space_at(const char *s, size_t avail)
{
    size_t k = utf8_seq_len((const unsigned char *)s, avail);
    if (k == 0)
        return 0;
    return py_isspace(utf8_decode((const unsigned char *)s, k)) ? k : 0;
}

/* Bytes of the whitespace code point ending at s[n − 1] (0 when none). */
static size_t space_before(const char *s, size_t n)
{
    for (size_t k = 1; k <= 4 && k <= n; k++) {
        unsigned char c = (unsigned char)s[n - k];
        if ((c & 0xc0) != 0x80) /* a lead byte (or ASCII): the code point starts here */
            return space_at(s + n - k, k) == k ? k : 0;
    }
    return 0;
}

int calib_text_rows(const char *text, size_t n, char **all, size_t *len, size_t *nrows)
{
    if (!text || !all || !len || !nrows)
        return fq_error("calib_text_rows: NULL argument");
    /* the file's lines (a final newline ends the last line, it does not open a new one) */
    size_t nl = 0;
    for (size_t i = 0; i < n; i++)
        nl += text[i] == '\n';
    size_t rows = nl + (n > 0 && text[n - 1] != '\n');
    char *grown = realloc(*all, *len + n + 2 * rows + 3);
    if (!grown)
        return fq_error("calibration: out of memory joining the text rows");
    *all = grown;
    size_t pos = 0;
    for (size_t r = 0; r < rows; r++) {
        const char *eol = memchr(text + pos, '\n', n - pos);
        size_t end = eol ? (size_t)(eol - text) : n, b = pos, e = end, k;
        while (b < e && (k = space_at(text + b, e - b)) > 0)
            b += k;
        while (e > b && (k = space_before(text + b, e - b)) > 0)
            e -= k;
        if (*nrows > 0) {
            memcpy(*all + *len, "\n\n", 2);
            *len += 2;
        }
        (*nrows)++;
        memcpy(*all + *len, text + b, e - b);
        *len += e - b;
        pos = end + 1;
    }
    return FQ_OK;
}

int calib_windows_sample(const tokenizer *tok, char *const *texts, int n_text, int nsamples,
                         int seqlen, uint64_t seed, int32_t **ids, size_t *text_tokens)
{
    *ids = NULL;
    if (n_text < 1 || nsamples < 1 || seqlen < 2)
        return fq_error("calibration: %d texts, nsamples %d, seqlen %d (expected >= 1, >= 1, >= 2)",
                        n_text, nsamples, seqlen);
    /* every line of every text a row, stripped, rows joined with a blank line: the
     * reference's "\n\n".join(row.strip() for row in wikitext) (ALGORITHM §4.1) */
    char *all = NULL;
    size_t len = 0, nrows = 0;
    for (int t = 0; t < n_text; t++) {
        char *buf;
        size_t n;
        if (fq_read_file(texts[t], &buf, &n) != FQ_OK) {
            free(all);
            return fq_error_wrap("calibration.text");
        }
        int rc = calib_text_rows(buf, n, &all, &len, &nrows);
        free(buf);
        if (rc != FQ_OK) {
            free(all);
            return FQ_ERR;
        }
    }
    int32_t *tokens;
    size_t ntok;
    int rc = tokenizer_encode(tok, all ? all : "", len, 1, &tokens, &ntok);
    free(all);
    if (rc != FQ_OK)
        return fq_error_wrap("calibration.text %s", texts[0]);
    *text_tokens = ntok;
    size_t need = (size_t)nsamples * (size_t)seqlen;
    if (ntok < need || ntok < (size_t)seqlen + 2) {
        free(tokens);
        return fq_error("calibration.text %s%s: %zu tokens, fewer than nsamples × seqlen = %d × %d "
                        "= %zu (expected a longer text or smaller calibration.nsamples/seqlen)",
                        texts[0], n_text > 1 ? " (and others)" : "", ntok, nsamples, seqlen, need);
    }
    int32_t *out = fq_malloc(sizeof(int32_t) * need, "calibration windows");
    if (!out) {
        free(tokens);
        return FQ_ERR;
    }
    rng_state rng;
    rng_seed(&rng, seed);
    uint64_t span = (uint64_t)(ntok - (size_t)seqlen - 1) + 1; /* starts 0..ntok−seqlen−1 */
    for (int k = 0; k < nsamples; k++) {
        size_t start = (size_t)(rng_next_u64(&rng) % span);
        memcpy(out + (size_t)k * seqlen, tokens + start, sizeof(int32_t) * (size_t)seqlen);
    }
    free(tokens);
    *ids = out;
    return FQ_OK;
}
