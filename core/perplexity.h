/* perplexity.h — the standard perplexity protocol of quantization papers.
 *
 * The text is tokenized once (BOS first), cut into non-overlapping windows of seqlen
 * tokens, the last partial window dropped; each window is scored on its own (its first
 * token is context only); ppl = exp(mean NLL over all predicted positions). The model is
 * a callback producing a window's logits, so FP, fake-quant and GPU models share it.
 */
#ifndef FQ_PERPLEXITY_H
#define FQ_PERPLEXITY_H

#include "real.h"

#include <stddef.h>
#include <stdint.h>

/* Fill logits [s, vocab] for the window ids[0..s). */
typedef int (*window_logits_fn)(void *ctx, const int32_t *ids, int s, real *logits);

typedef struct {
    double nll;       /* mean NLL (nats) */
    double ppl;
    size_t tokens;    /* tokens in the text, incl. BOS */
    size_t windows;
    size_t predicted; /* windows · (seqlen − 1) */
    double seconds;
} ppl_result;

/* Mean NLL of the targets ids[1..s) under logits [s, vocab] (log-softmax in double);
 * returns the summed NLL. */
double window_nll_sum(const real *logits, const int32_t *ids, int s, int vocab);

/* max_windows > 0 limits the number of windows scored (0 = all). */
int perplexity_eval(const int32_t *ids, size_t n, int seqlen, int vocab, size_t max_windows,
                    window_logits_fn fn, void *ctx, ppl_result *out);

/* The same protocol for a model that scores a window itself: *nll_sum = Σ over the targets
 * ids[1..s) of −log p(target) (the GPU runtime computes it on the device). */
typedef int (*window_nll_fn)(void *ctx, const int32_t *ids, int s, double *nll_sum);
int perplexity_eval_nll(const int32_t *ids, size_t n, int seqlen, size_t max_windows,
                        window_nll_fn fn, void *ctx, ppl_result *out);

#endif
