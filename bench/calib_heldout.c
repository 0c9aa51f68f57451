/* calib_heldout.c — which tokens of a calibration text the calibration windows never saw,
 * and that unseen text written out for evaluation. The job samples `nsamples` windows of
 * `seqlen` tokens at random starts (coordinator/calib_data.c, seed `seed`); the tokens
 * outside every window are the held-out part of the same text: a checkpoint's ppl there
 * says how its fit generalises inside the calibration domain, without touching the test
 * text (bench/ACCURACY.md, session 4).
 *   build/bench/calib_heldout MODEL_DIR TEXT NSAMPLES SEQLEN SEED OUT_TEXT [MIN_SPAN]
 * Spans of at least MIN_SPAN (default 256) uncovered tokens are decoded and joined with a
 * blank line into OUT_TEXT; the coverage is printed. */
#include "coordinator/calib_data.h"
#include "error.h"
#include "fileio.h"
#include "rng.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: %s MODEL_DIR TEXT NSAMPLES SEQLEN SEED OUT_TEXT [MIN_SPAN]\n",
                argv[0]);
        return 2;
    }
    int nsamples = atoi(argv[3]), seqlen = atoi(argv[4]);
    uint64_t seed = strtoull(argv[5], NULL, 10);
    size_t min_span = argc > 7 ? (size_t)atol(argv[7]) : 256;
    tokenizer *tok = NULL;
    char *buf = NULL, *all = NULL;
    size_t n = 0, len = 0, nrows = 0, ntok = 0;
    int32_t *tokens = NULL;
    if (tokenizer_load(argv[1], &tok) != FQ_OK || fq_read_file(argv[2], &buf, &n) != FQ_OK ||
        calib_text_rows(buf, n, &all, &len, &nrows) != FQ_OK ||
        tokenizer_encode(tok, all ? all : "", len, 1, &tokens, &ntok) != FQ_OK) {
        fprintf(stderr, "calib_heldout: %s\n", fq_errmsg());
        return 1;
    }
    if (ntok < (size_t)seqlen + 1 || nsamples < 1 || seqlen < 2) {
        fprintf(stderr, "calib_heldout: %zu tokens for windows of %d\n", ntok, seqlen);
        return 1;
    }
    /* the same draws as calib_windows_sample */
    unsigned char *seen = calloc(ntok, 1);
    rng_state rng;
    rng_seed(&rng, seed);
    uint64_t span = (uint64_t)(ntok - (size_t)seqlen - 1) + 1;
    for (int k = 0; k < nsamples; k++) {
        size_t start = (size_t)(rng_next_u64(&rng) % span);
        memset(seen + start, 1, (size_t)seqlen);
    }
    size_t covered = 0;
    for (size_t i = 0; i < ntok; i++)
        covered += seen[i];
    FILE *out = fopen(argv[6], "w");
    if (!out) {
        fprintf(stderr, "calib_heldout: cannot write %s\n", argv[6]);
        return 1;
    }
    size_t spans = 0, kept = 0;
    for (size_t i = 1; i < ntok;) { /* token 0 is BOS */
        if (seen[i]) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < ntok && !seen[j])
            j++;
        if (j - i >= min_span) {
            char *text = NULL;
            size_t tl = 0;
            if (tokenizer_decode(tok, tokens + i, j - i, &text, &tl) != FQ_OK) {
                fprintf(stderr, "calib_heldout: %s\n", fq_errmsg());
                return 1;
            }
            fprintf(out, "%s%.*s", spans ? "\n\n" : "", (int)tl, text);
            free(text);
            spans++;
            kept += j - i;
        }
        i = j;
    }
    fclose(out);
    printf("calibration text %s: %zu tokens, %d windows of %d (seed %llu) cover %zu (%.1f %%); "
           "%zu unseen spans of >= %zu tokens, %zu tokens, written to %s\n",
           argv[2], ntok, nsamples, seqlen, (unsigned long long)seed, covered,
           100.0 * (double)covered / (double)ntok, spans, min_span, kept, argv[6]);
    free(seen);
    free(tokens);
    free(all);
    free(buf);
    tokenizer_free(tok);
    return 0;
}
