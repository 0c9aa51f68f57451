/* cmd_run.c — `flatq run MODEL_DIR`: generate text from a prompt with an FP or quantized
 * checkpoint on the CPU (greedy, or temperature + top-p sampling with a seed), streaming
 * the text as it is produced; --bench times prefill and decode.
 *
 * This is the CPU reference of generation: each new token re-runs the window (no KV
 * cache), which is exact and simple and fast enough for the small models flatq tests on.
 * The GPU path with KV caches and tensor parallelism is a separate runtime.
 */
#include "coordinator/commands.h"
#include "coordinator/eval_model.h"
#include "coordinator/progress.h"
#include "error.h"
#include "rng.h"
#include "tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void run_usage(FILE *out)
{
    fprintf(out,
            "usage: flatq run MODEL_DIR [--prompt TEXT] [--max-new N] [--temperature T]\n"
            "                 [--top-p P] [--seed S] [--bench]\n"
            "  Generates up to N tokens (default 64) after the prompt (BOS first) and prints\n"
            "  them as they come. Temperature 0 (default) is greedy; otherwise tokens are\n"
            "  sampled from the top-p nucleus (default 0.9) with the seed (default 0).\n"
            "  MODEL_DIR is an FP checkpoint or a quantized one written by flatq calibrate.\n"
            "  --bench prints prefill and decode tokens/s instead of the text.\n");
}

typedef struct {
    const char *model, *prompt;
    long max_new;
    double temperature, top_p;
    long seed;
    int bench;
} run_args;

static int parse_num(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end;
    double x = v ? strtod(v, &end) : NAN;
    if (!v || *end || end == v || !(x >= lo && x <= hi))
        return fq_error("run: %s: expected a number in [%g, %g], got '%s'", flag, lo, hi,
                        v ? v : "");
    *out = x;
    return FQ_OK;
}

static int run_parse(int argc, char **argv, run_args *a)
{
    memset(a, 0, sizeof *a);
    a->prompt = "Once upon a time";
    a->max_new = 64;
    a->top_p = 0.9;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
        if (strcmp(k, "--bench") == 0) {
            a->bench = 1;
            continue;
        }
        if (strncmp(k, "--", 2) != 0) {
            if (a->model)
                return fq_error("run: unexpected argument '%s' (one MODEL_DIR expected)", k);
            a->model = k;
            continue;
        }
        if (strcmp(k, "--prompt") == 0 && v)
            a->prompt = v;
        else if (strcmp(k, "--max-new") == 0) {
            if (parse_num(k, v, 1, 1 << 20, &x) != FQ_OK)
                return FQ_ERR;
            a->max_new = (long)x;
        } else if (strcmp(k, "--temperature") == 0) {
            if (parse_num(k, v, 0, 100, &a->temperature) != FQ_OK)
                return FQ_ERR;
        } else if (strcmp(k, "--top-p") == 0) {
            if (parse_num(k, v, 1e-6, 1, &a->top_p) != FQ_OK)
                return FQ_ERR;
        } else if (strcmp(k, "--seed") == 0) {
            if (parse_num(k, v, 0, 9e15, &x) != FQ_OK)
                return FQ_ERR;
            a->seed = (long)x;
        } else
            return fq_error("run: unknown argument '%s' (expected --prompt, --max-new, "
                            "--temperature, --top-p, --seed or --bench)", k);
        i++;
    }
    if (!a->model)
        return fq_error("run: MODEL_DIR is required (see flatq run --help)");
    return FQ_OK;
}

typedef struct {
    int id;
    double p;
} cand;

static int cand_desc(const void *x, const void *y)
{
    const cand *a = x, *b = y;
    return (a->p < b->p) - (a->p > b->p);
}

/* Next token from one row of logits: argmax, or a top-p sample at the temperature. */
static int next_token(const real *logits, int vocab, const run_args *a, rng_state *rng,
                      cand *work)
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

/* logits for the last position of ids[0..n) through the model's window function */
static int last_logits(eval_model *e, const int32_t *ids, int n, real *buf, real **row)
{
    int rc = e->quantized ? qmodel_window_logits(&e->qr, ids, n, buf)
                          : llama_window_logits(&e->fr, ids, n, buf);
    *row = buf + (size_t)(n - 1) * e->vocab;
    return rc;
}

int cmd_run(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        run_usage(stdout);
        return 0;
    }
    run_args a;
    if (run_parse(argc, argv, &a) != FQ_OK)
        return cli_fail();
    tokenizer *tok = NULL;
    eval_model e;
    int32_t *ids = NULL, *all = NULL;
    size_t n = 0;
    real *logits = NULL;
    cand *work = NULL;
    int rc = 1;
    memset(&e, 0, sizeof e);
    if (tokenizer_load(a.model, &tok) != FQ_OK ||
        tokenizer_encode(tok, a.prompt, strlen(a.prompt), 1, &ids, &n) != FQ_OK) {
        cli_fail();
        goto done;
    }
    qconfig qc = {0};
    int cap = (int)n + (int)a.max_new;
    if (eval_model_open(&e, a.model, JOB_METHOD_COUNT, &qc, NULL, cap) != FQ_OK) {
        cli_fail();
        goto done;
    }
    int max_pos = e.quantized ? e.qm.cfg.max_pos : e.fp.cfg.max_pos;
    if (cap > max_pos) {
        fq_error("run: prompt (%zu tokens) + --max-new %ld exceeds the model's context of %d",
                 n, a.max_new, max_pos);
        cli_fail();
        goto done;
    }
    all = fq_malloc(sizeof(int32_t) * (size_t)cap, "tokens");
    logits = fq_malloc(sizeof(real) * (size_t)cap * e.vocab, "logits");
    work = fq_malloc(sizeof(cand) * (size_t)e.vocab, "sampling");
    if (!all || !logits || !work) {
        cli_fail();
        goto done;
    }
    memcpy(all, ids, sizeof(int32_t) * n);
    rng_state rng;
    rng_seed(&rng, (uint64_t)a.seed);
    int eos = tokenizer_eos_id(tok), len = (int)n;
    if (!a.bench) {
        printf("%s", a.prompt);
        fflush(stdout);
    }
    double t0 = progress_monotonic_seconds(), t_first = 0;
    size_t printed = 0; /* bytes of the decoded continuation already on stdout */
    for (long k = 0; k < a.max_new; k++) {
        real *row;
        if (last_logits(&e, all, len, logits, &row) != FQ_OK) {
            cli_fail();
            goto done;
        }
        if (k == 0)
            t_first = progress_monotonic_seconds() - t0;
        int next = next_token(row, e.vocab, &a, &rng, work);
        all[len++] = next;
        if (!a.bench) {
            char *piece;
            size_t plen;
            /* decode the whole continuation and print the new bytes: multi-byte
             * characters split across tokens come out whole */
            if (tokenizer_decode(tok, all + n, (size_t)(len - (int)n), &piece, &plen) == FQ_OK) {
                if (plen > printed)
                    fwrite(piece + printed, 1, plen - printed, stdout);
                printed = plen;
                free(piece);
                fflush(stdout);
            }
        }
        if (next == eos)
            break;
    }
    double total = progress_monotonic_seconds() - t0;
    int generated = len - (int)n;
    if (a.bench)
        printf("prefill: %zu tokens in %.3f s (%.0f tokens/s)\ndecode: %d tokens in %.3f s "
               "(%.1f tokens/s, CPU, no KV cache: each step re-runs the window)\n",
               n, t_first, (double)n / t_first, generated - 1, total - t_first,
               generated > 1 ? (generated - 1) / (total - t_first) : 0.0);
    else
        printf("\n");
    rc = 0;
done:
    free(work);
    free(logits);
    free(all);
    free(ids);
    eval_model_close(&e);
    tokenizer_free(tok);
    return rc;
}
