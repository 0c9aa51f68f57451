/* run_common.c — the next-token rule of `flatq run` (see run_common.h). */
#include "coordinator/run_common.h"
#include "error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int cand_desc(const void *x, const void *y)
{
    const run_cand *a = x, *b = y;
    return (a->p < b->p) - (a->p > b->p);
}

int run_next_token(const real *logits, int vocab, const run_args *a, rng_state *rng,
                   run_cand *work)
{
    int best = 0;
    for (int v = 1; v < vocab; v++)
        if (logits[v] > logits[best])
            best = v;
    if (a->temperature <= 0)
        return best;
    double sum = 0, mx = logits[best];
    for (int v = 0; v < vocab; v++) {
        work[v].id = v;
        work[v].p = exp(((double)logits[v] - mx) / a->temperature);
        sum += work[v].p;
    }
    qsort(work, (size_t)vocab, sizeof *work, cand_desc);
    double keep = 0;
    int n = 0;
    while (n < vocab && (n == 0 || keep < a->top_p * sum))
        keep += work[n++].p;
    double u = rng_uniform(rng) * keep;
    for (int i = 0; i < n; i++) {
        u -= work[i].p;
        if (u <= 0)
            return work[i].id;
    }
    return work[n - 1].id;
}

void run_print_new_text(const tokenizer *tok, const int32_t *ids, size_t n, size_t *printed)
{
    char *piece;
    size_t plen;
    if (!tok || !printed || tokenizer_decode(tok, ids, n, &piece, &plen) != FQ_OK)
        return; /* a token the tokenizer cannot decode prints nothing; generation goes on */
    if (plen > *printed)
        fwrite(piece + *printed, 1, plen - *printed, stdout);
    *printed = plen;
    free(piece);
    fflush(stdout);
}
