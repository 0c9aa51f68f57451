/* perplexity.c — windowed perplexity (see perplexity.h). */
#include "perplexity.h"
#include "error.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

double window_nll_sum(const real *logits, const int32_t *ids, int s, int vocab)
{
    double total = 0;
    for (int p = 0; p + 1 < s; p++) {
        const real *row = logits + (size_t)p * vocab;
        double mx = row[0];
        for (int v = 1; v < vocab; v++)
            if (row[v] > mx)
                mx = row[v];
        double sum = 0;
        for (int v = 0; v < vocab; v++)
            sum += exp((double)row[v] - mx);
        total += mx + log(sum) - (double)row[ids[p + 1]];
    }
    return total;
}

/* The window loop of both entry points: one callback scores a window into its NLL sum. */
typedef int (*window_score_fn)(void *ctx, const int32_t *ids, int s, double *nll_sum);

static int eval_windows(const int32_t *ids, size_t n, int seqlen, size_t max_windows,
                        window_score_fn score, void *ctx, ppl_result *out)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (seqlen < 2)
        return fq_error("eval: seqlen %d too small (expected >= 2)", seqlen);
    size_t windows = n / (size_t)seqlen;
    if (windows == 0)
        return fq_error("eval: the text has %zu tokens, fewer than one window of seqlen %d "
                        "(expected a longer text or a smaller seqlen)", n, seqlen);
    if (max_windows && windows > max_windows)
        windows = max_windows;
    double total = 0;
    for (size_t w = 0; w < windows; w++) {
        double nll = 0;
        if (score(ctx, ids + w * seqlen, seqlen, &nll) != FQ_OK)
            return fq_error_wrap("eval: window %zu", w);
        total += nll;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    out->tokens = n;
    out->windows = windows;
    out->predicted = windows * (size_t)(seqlen - 1);
    out->nll = total / (double)out->predicted;
    out->ppl = exp(out->nll);
    out->seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (!isfinite(out->nll))
        return fq_error("eval: mean NLL is not finite (%g): the model produced NaN/Inf logits",
                        out->nll);
    return FQ_OK;
}

/* A logits model as a scorer: its logits, then the host log-softmax. */
typedef struct {
    window_logits_fn fn;
    void *ctx;
    real *logits;
    int vocab;
} logits_scorer;

static int score_by_logits(void *vp, const int32_t *ids, int s, double *nll_sum)
{
    logits_scorer *l = vp;
    if (l->fn(l->ctx, ids, s, l->logits) != FQ_OK)
        return FQ_ERR;
    *nll_sum = window_nll_sum(l->logits, ids, s, l->vocab);
    return FQ_OK;
}

int perplexity_eval(const int32_t *ids, size_t n, int seqlen, int vocab, size_t max_windows,
                    window_logits_fn fn, void *ctx, ppl_result *out)
{
    if (seqlen < 2)
        return fq_error("eval: seqlen %d too small (expected >= 2)", seqlen);
    logits_scorer l = {fn, ctx, fq_malloc(sizeof(real) * (size_t)seqlen * vocab, "logits"),
                       vocab};
    if (!l.logits)
        return FQ_ERR;
    int rc = eval_windows(ids, n, seqlen, max_windows, score_by_logits, &l, out);
    free(l.logits);
    return rc;
}

int perplexity_eval_nll(const int32_t *ids, size_t n, int seqlen, size_t max_windows,
                        window_nll_fn fn, void *ctx, ppl_result *out)
{
    if (!fn)
        return fq_error("eval: NULL window scorer");
    return eval_windows(ids, n, seqlen, max_windows, fn, ctx, out);
}
