/* cmd_run.c — `flatq run MODEL_DIR`: generate text from a prompt with an FP or quantized
 * checkpoint on the CPU (greedy, or temperature + top-p sampling with a seed), streaming
 * the text as it is produced; --bench times prefill and decode.
 *
 * This is the CPU reference of generation: each new token re-runs the window (no KV
 * cache), which is exact and simple and fast enough for the small models flatq tests on.
 * --device cuda hands over to the GPU runtime (cmd_run_gpu.c: KV caches, tensor
 * parallelism under mpirun, --bench with batch/prompt/generation lengths).
 */
#include "coordinator/commands.h"
#include "coordinator/run_common.h"
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
            "                 [--top-p P] [--seed S] [--bench] [--device cpu|cuda]\n"
            "                 [--batch B --prompt-len P --gen-len G] [--profile]\n"
            "  Generates up to N tokens (default 64) after the prompt (BOS first) and prints\n"
            "  them as they come. Temperature 0 (default) is greedy; otherwise tokens are\n"
            "  sampled from the top-p nucleus (default 0.9) with the seed (default 0).\n"
            "  MODEL_DIR is an FP checkpoint or a quantized one written by flatq calibrate.\n"
            "  --bench prints prefill and decode tokens/s instead of the text.\n"
            "  --device cuda runs on the GPU with a KV cache; under mpirun -np T each rank\n"
            "  drives one GPU (tensor parallelism). With --bench it times B random prompts\n"
            "  of P tokens (defaults 1, 128) and G decode steps (default 128) and prints\n"
            "  the all-reduce share and GPU memory per rank; --batch 1,8,64 times each size\n"
            "  on one loaded model (prompts of more than 16384 tokens in all are prefilled\n"
            "  in chunks along the sequence). FLATQ_NCCL_TIMEOUT_S (default 300) bounds\n"
            "  every wait for the other ranks. --profile (with --bench on the GPU) adds a\n"
            "  table of rank 0's time per op (CUDA events between the steps of a forward).\n"
            "  FLATQ_PDL=0 launches the GPU kernels in plain stream order instead of as\n"
            "  programmatic dependents (each starting during its predecessor's tail);\n"
            "  FLATQ_GRID_BARRIER=0 keeps kernels from waiting on their whole grid (for\n"
            "  GPUs shared with other processes at once, as under CUDA MPS);\n"
            "  FLATQ_ATTN_TC=0 attends with the CUDA-core kernel instead of the\n"
            "  tensor-core one.\n");
}

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

/* --batch B or a list B1,B2,... (at most 8): the bench loads the model once */
static int parse_batches(const char *v, run_args *a)
{
    a->n_batches = 0;
    a->batch = 0;
    const char *p = v ? v : "";
    do {
        char *end;
        long b = strtol(p, &end, 10);
        if (end == p || b < 1 || b > 4096 || (*end && *end != ',') ||
            (*end == ',' && !end[1]) || a->n_batches == 8)
            return fq_error("run: --batch: expected up to 8 comma-separated sizes in [1, 4096], "
                            "got '%s'", v ? v : "");
        a->batches[a->n_batches++] = b;
        a->batch = b > a->batch ? b : a->batch;
        p = *end ? end + 1 : end;
    } while (*p);
    return FQ_OK;
}

static int run_parse(int argc, char **argv, run_args *a)
{
    memset(a, 0, sizeof *a);
    a->prompt = "Once upon a time";
    a->max_new = 64;
    a->top_p = 0.9;
    a->batch = 1;
    a->batches[0] = 1;
    a->n_batches = 1;
    a->prompt_len = 128;
    a->gen_len = 128;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
        if (strcmp(k, "--bench") == 0) {
            a->bench = 1;
            continue;
        }
        if (strcmp(k, "--profile") == 0) {
            a->profile = 1;
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
        } else if (strcmp(k, "--device") == 0) {
            if (v && strcmp(v, "cuda") == 0)
                a->cuda = 1;
            else if (!v || strcmp(v, "cpu") != 0)
                return fq_error("run: --device: expected cpu or cuda, got '%s'", v ? v : "");
        } else if (strcmp(k, "--batch") == 0) {
            if (parse_batches(v, a) != FQ_OK)
                return FQ_ERR;
        } else if (strcmp(k, "--prompt-len") == 0 || strcmp(k, "--gen-len") == 0) {
            if (parse_num(k, v, 1, 1 << 20, &x) != FQ_OK)
                return FQ_ERR;
            long *dst = k[2] == 'p' ? &a->prompt_len : &a->gen_len;
            *dst = (long)x;
        } else if (strcmp(k, "--seed") == 0) {
            if (parse_num(k, v, 0, 9e15, &x) != FQ_OK)
                return FQ_ERR;
            a->seed = (long)x;
        } else
            return fq_error("run: unknown argument '%s' (expected --prompt, --max-new, "
                            "--temperature, --top-p, --seed, --device, --batch, --prompt-len, "
                            "--gen-len, --bench or --profile)", k);
        i++;
    }
    if (!a->model)
        return fq_error("run: MODEL_DIR is required (see flatq run --help)");
    if (a->profile && !(a->bench && a->cuda))
        return fq_error("run: --profile times the GPU bench's ops (expected --bench --device cuda)");
    if (!a->cuda && ((a->n_batches != 1 || a->batch != 1) || a->prompt_len != 128 || a->gen_len != 128))
        return fq_error("run: --batch, --prompt-len and --gen-len need --device cuda (the CPU "
                        "bench times the --prompt)");
    return FQ_OK;
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
    if (a.cuda)
        return cmd_run_gpu(&a);
    tokenizer *tok = NULL;
    eval_model e;
    int32_t *ids = NULL, *all = NULL;
    size_t n = 0;
    real *logits = NULL;
    run_cand *work = NULL;
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
    work = fq_malloc(sizeof(run_cand) * (size_t)e.vocab, "sampling");
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
        int next = run_next_token(row, e.vocab, &a, &rng, work);
        all[len++] = next;
        if (!a.bench) {
            run_print_new_text(tok, all + n, (size_t)(len - (int)n), &printed);
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
