/* calib_data.h — the calibration windows (ALGORITHM §4.1): every line of the texts is a
 * row, stripped of surrounding whitespace (Python's str.strip()), rows joined with "\n\n"
 * — how the reference builds its WikiText calibration text from the dataset's rows —,
 * tokenized once (BOS first), nsamples windows of seqlen tokens whose starts are drawn
 * uniformly from [0, Ntok − seqlen − 1] with the job's seed. */
#ifndef FQ_CALIB_DATA_H
#define FQ_CALIB_DATA_H

#include "tokenizer.h"

#include <stddef.h>
#include <stdint.h>

/* Append the rows of one text (n bytes; a final newline ends the last line) to *all
 * (realloc'ed, *len bytes so far; *nrows rows so far, updated): each row stripped, and
 * preceded by "\n\n" unless it is the first row of all. */
int calib_text_rows(const char *text, size_t n, char **all, size_t *len, size_t *nrows);

/* *ids: nsamples·seqlen token ids (malloc'ed), window k at ids + k·seqlen. Refuses a text
 * with fewer than nsamples·seqlen tokens (the rule) naming the files. */
int calib_windows_sample(const tokenizer *tok, char *const *texts, int n_text, int nsamples,
                         int seqlen, uint64_t seed, int32_t **ids, size_t *text_tokens);

#endif
