/* run_common.h — what the CPU and GPU paths of `flatq run` share: the parsed arguments and
 * the next-token rule (argmax, or temperature + top-p with a seeded generator), so both
 * devices pick tokens identically from the same logits. */
#ifndef FQ_RUN_COMMON_H
#define FQ_RUN_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "real.h"
#include "rng.h"
#include "tokenizer.h"

typedef struct {
    const char *model, *prompt;
    long max_new;
    double temperature, top_p;
    long seed;
    int bench;
    int profile;                     /* --profile: per-op GPU times in the bench */
    int cuda;                        /* --device cuda */
    long batch, prompt_len, gen_len; /* GPU --bench shape; batch: the largest of batches */
    long batches[8];                 /* --batch 1,8,64: each timed on one loaded model */
    int n_batches;
} run_args;

typedef struct {
    int id;
    double p;
} run_cand;

/* Next token from one row of logits [vocab]; work holds vocab candidates. */
int run_next_token(const real *logits, int vocab, const run_args *a, rng_state *rng,
                   run_cand *work);

/* Streaming output: decode the whole continuation ids [n] and print the bytes past *printed
 * (updated), so multi-byte characters split across tokens come out whole. */
void run_print_new_text(const tokenizer *tok, const int32_t *ids, size_t n, size_t *printed);

/* `flatq run --device cuda` (coordinator/cmd_run_gpu.c); returns the exit code. */
int cmd_run_gpu(const run_args *a);

#endif
