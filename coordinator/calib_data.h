/* calib_data.h — the calibration windows: texts joined with "\n\n", tokenized once
 * (BOS first), nsamples windows of seqlen tokens whose starts are drawn uniformly from
 * [0, Ntok − seqlen − 1] with the job's seed (ALGORITHM §4.1). */
#ifndef FQ_CALIB_DATA_H
#define FQ_CALIB_DATA_H

#include "tokenizer.h"

#include <stdint.h>

/* *ids: nsamples·seqlen token ids (malloc'ed), window k at ids + k·seqlen. Refuses a text
 * with fewer than nsamples·seqlen tokens (the rule) naming the files. */
int calib_windows_sample(const tokenizer *tok, char *const *texts, int n_text, int nsamples,
                         int seqlen, uint64_t seed, int32_t **ids, size_t *text_tokens);

#endif
