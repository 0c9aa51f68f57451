/* calib_data.c — see calib_data.h. */
#include "coordinator/calib_data.h"
#include "error.h"
#include "fileio.h"
#include "rng.h"

#include <stdlib.h>
#include <string.h>

int calib_windows_sample(const tokenizer *tok, char *const *texts, int n_text, int nsamples,
                         int seqlen, uint64_t seed, int32_t **ids, size_t *text_tokens)
{
    *ids = NULL;
    if (n_text < 1 || nsamples < 1 || seqlen < 2)
        return fq_error("calibration: %d texts, nsamples %d, seqlen %d (expected >= 1, >= 1, >= 2)",
                        n_text, nsamples, seqlen);
    /* join the texts with a blank line, as the reference joins WikiText rows */
    char *all = NULL;
    size_t len = 0;
    for (int t = 0; t < n_text; t++) {
        char *buf;
        size_t n;
        if (fq_read_file(texts[t], &buf, &n) != FQ_OK) {
            free(all);
            return fq_error_wrap("calibration.text");
        }
        char *grown = realloc(all, len + n + 3);
        if (!grown) {
            free(buf);
            free(all);
            return fq_error("calibration: out of memory joining the texts");
        }
        all = grown;
        if (t > 0) {
            memcpy(all + len, "\n\n", 2);
            len += 2;
        }
        memcpy(all + len, buf, n);
        len += n;
        free(buf);
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
