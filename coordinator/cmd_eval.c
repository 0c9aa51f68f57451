/* cmd_eval.c — `flatq eval`: perplexity of a model on a text, the papers' protocol.
 *
 *   flatq eval JOB.yaml [--set key=value ...] [--json]      the job's eval section
 *   flatq eval --model DIR --text FILE [--seqlen N] [--max-windows K] [--max-chars C]
 *              [--method fp|rtn|quarot] [--w-bits B] [--a-bits B] [--kv-bits B] [--json]
 *
 * DIR may be an FP checkpoint or a quantized one written by `flatq calibrate` (its
 * quantization_config is honoured). --method rtn quantizes an FP checkpoint on the fly.
 * The text is tokenized once with the model's tokenizer (BOS first) and scored in
 * non-overlapping windows (core/perplexity.h). --max-chars keeps the first C characters
 * (code points) of the file, for the reference numbers quoted on text prefixes.
 *
 * --device cuda (or the job's `device: cuda`) scores the FP checkpoint or the quantized
 * one on the GPU runtime (runtime/gpu_session.h) through the same windows and the same
 * NLL code; under mpirun -np T the model is split over T GPUs and rank 0 prints.
 * On-the-fly baselines (rtn, quarot, smoothrot) have no checkpoint to load and stay on the
 * CPU.
 */
#include "coordinator/commands.h"
#include "coordinator/eval_job.h"
#include "coordinator/eval_model.h"
#include "error.h"
#include "fileio.h"
#include "llama_model.h"
#include "perplexity.h"
#include "qformat.h"
#include "runtime/gpu_session.h"
#include "tokenizer.h"
#include "utf8.h"

#include <jansson.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void eval_usage(FILE *out)
{
    fprintf(out,
            "usage: flatq eval JOB.yaml [--set key=value ...] [--json]\n"
            "       flatq eval --model DIR --text FILE [--seqlen N] [--max-windows K]\n"
            "                  [--max-chars C] [--method fp|rtn|quarot] [--w-bits B] [--a-bits B]\n"
            "                  [--kv-bits B] [--device cpu|cuda] [--json]\n"
            "  Perplexity: the text is tokenized once (BOS first), cut into non-overlapping\n"
            "  windows of N tokens (default 2048; the last partial one dropped), each scored\n"
            "  on its own; ppl = exp(mean NLL over all predicted tokens).\n"
            "  --max-windows K  score only the first K windows\n"
            "  --max-chars C    use only the first C characters of the text\n"
            "  --method M       rtn or quarot: quantize an FP model on the fly (bits:\n"
            "                   --w-bits/--a-bits/\n"
            "                   --kv-bits, default 4/4/4; 16 = not quantized)\n"
            "  --json           print JSON instead of a table\n"
            "  --device cuda    run the FP or quantized checkpoint on the GPU (tensor\n"
            "                   parallel under mpirun -np T; rank 0 prints)\n"
            "  DIR may also be a quantized checkpoint written by flatq calibrate.\n");
}

typedef struct {
    const char *model, *text;
    int seqlen;
    long max_windows, max_chars;
    int json;
    int cuda;
    job_method method;
    long bits[3]; /* w, a, kv */
} eval_args;

static int parse_long(const char *flag, const char *v, long lo, long *out)
{
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || end == v || x < lo)
        return fq_error("%s: expected an integer >= %ld, got '%s'", flag, lo, v ? v : "");
    *out = x;
    return FQ_OK;
}

static int eval_parse(int argc, char **argv, eval_args *a)
{
    memset(a, 0, sizeof *a);
    a->seqlen = 2048;
    a->method = JOB_METHOD_FP;
    a->bits[0] = a->bits[1] = a->bits[2] = 4;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
        if (strcmp(k, "--json") == 0) {
            a->json = 1;
            continue;
        }
        if (strcmp(k, "--model") == 0)
            a->model = v;
        else if (strcmp(k, "--text") == 0)
            a->text = v;
        else if (strcmp(k, "--seqlen") == 0) {
            if (parse_long(k, v, 2, &x) != FQ_OK)
                return FQ_ERR;
            a->seqlen = (int)x;
        } else if (strcmp(k, "--max-windows") == 0) {
            if (parse_long(k, v, 0, &a->max_windows) != FQ_OK)
                return FQ_ERR;
        } else if (strcmp(k, "--max-chars") == 0) {
            if (parse_long(k, v, 1, &a->max_chars) != FQ_OK)
                return FQ_ERR;
        } else if (strcmp(k, "--device") == 0) {
            if (v && strcmp(v, "cuda") == 0)
                a->cuda = 1;
            else if (!v || strcmp(v, "cpu") != 0)
                return fq_error("eval: --device: expected cpu or cuda, got '%s'", v ? v : "");
        } else if (strcmp(k, "--method") == 0) {
            if (v && strcmp(v, "fp") == 0)
                a->method = JOB_METHOD_FP;
            else if (v && strcmp(v, "rtn") == 0)
                a->method = JOB_METHOD_RTN;
            else if (v && strcmp(v, "quarot") == 0)
                a->method = JOB_METHOD_QUAROT;
            else
                return fq_error("eval: --method: expected fp, rtn or quarot, got '%s' "
                                "(smoothrot needs calibration text: use a job file; flatquant "
                                "needs flatq calibrate)", v ? v : "");
        } else if (strcmp(k, "--w-bits") == 0 || strcmp(k, "--a-bits") == 0 ||
                   strcmp(k, "--kv-bits") == 0) {
            int which = k[2] == 'w' ? 0 : k[2] == 'a' ? 1 : 2;
            if (parse_long(k, v, 2, &a->bits[which]) != FQ_OK)
                return FQ_ERR;
            if (a->bits[which] > 8 && a->bits[which] != 16)
                return fq_error("%s: expected 2..8 or 16, got %ld", k, a->bits[which]);
        } else
            return fq_error("eval: unknown argument '%s' (expected --model, --text, --seqlen, "
                            "--max-windows, --max-chars, --method, --w-bits, --a-bits, "
                            "--kv-bits, --device or --json)", k);
        if (!v)
            return fq_error("eval: %s needs a value", k);
        i++;
    }
    if (!a->model || !a->text)
        return fq_error("eval: --model DIR and --text FILE are required (see flatq eval --help)");
    if (a->cuda && a->method != JOB_METHOD_FP)
        return fq_error("eval: --method %s with --device cuda: the on-the-fly baselines run on "
                        "the CPU (expected --method fp, or a quantized checkpoint as --model)",
                        job_method_name(a->method));
    return FQ_OK;
}

/* Tokenize (a prefix of) a text file with BOS first. */
static int eval_tokenize(const tokenizer *tok, const char *path, long max_chars, int32_t **ids,
                         size_t *n)
{
    if (!max_chars)
        return tokenizer_encode_file(tok, path, 1, ids, n);
    char *buf = NULL;
    size_t len = 0;
    if (fq_read_file(path, &buf, &len) != FQ_OK)
        return FQ_ERR;
    int rc = tokenizer_encode(tok, buf, utf8_prefix_bytes(buf, len, max_chars), 1, ids, n);
    free(buf);
    return rc == FQ_OK ? FQ_OK : fq_error_wrap("%s", path);
}

/* `flatq eval JOB.yaml [--set k=v]... [--json]` */
static int eval_job_mode(int argc, char **argv)
{
    const char *sets[64];
    int n_sets = 0, json = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc && n_sets < 64)
            sets[n_sets++] = argv[++i];
        else {
            fq_error("eval: unknown argument '%s' after the job file (expected --set key=value "
                     "or --json)", argv[i]);
            return cli_fail();
        }
    }
    job j;
    if (job_load(argv[1], sets, n_sets, &j) != FQ_OK) {
        job_free(&j);
        return cli_fail();
    }
    if (!j.evaluate || j.eval.n_text == 0) {
        fq_error("%s: no eval section with eval.text (expected texts to evaluate on)", argv[1]);
        job_free(&j);
        return cli_fail();
    }
    json_t *rows = NULL;
    int rank = 0, init = 0;
    if (j.device == JOB_DEVICE_CUDA) {
        MPI_Initialized(&init);
        if (!init)
            MPI_Init(NULL, NULL);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    }
    int rc = eval_job_run(&j, MPI_COMM_WORLD, json || rank ? NULL : stdout, &rows);
    if (j.device == JOB_DEVICE_CUDA && !init)
        MPI_Finalize();
    if (rank != 0) {
        json_decref(rows);
        job_free(&j);
        return rc == FQ_OK ? 0 : 1;
    }
    if (rc == FQ_OK && json) {
        char *s = json_dumps(rows, JSON_REAL_PRECISION(17));
        if (s)
            printf("%s\n", s);
        free(s);
    }
    json_decref(rows);
    job_free(&j);
    return rc == FQ_OK ? 0 : cli_fail();
}

static void eval_print(const eval_args *a, const ppl_result *res, int quantized)
{
    double tps = res->seconds > 0 ? (double)(res->windows * (size_t)a->seqlen) / res->seconds : 0;
    if (a->json) {
        json_t *o = json_pack("{s:s, s:s, s:i, s:f, s:f, s:I, s:I, s:I, s:f, s:f}", "model",
                              a->model, "text", a->text, "seqlen", a->seqlen, "ppl", res->ppl,
                              "nll", res->nll, "tokens", (json_int_t)res->tokens, "windows",
                              (json_int_t)res->windows, "predicted", (json_int_t)res->predicted,
                              "seconds", res->seconds, "tokens_per_second", tps);
        char *s = o ? json_dumps(o, JSON_REAL_PRECISION(17)) : NULL;
        if (s)
            printf("%s\n", s);
        free(s);
        json_decref(o);
    } else {
        printf("model      %s%s\ntext       %s\nseqlen     %d\ntokens     %zu\nwindows    %zu\n"
               "predicted  %zu\nnll        %.6f\nppl        %.4f\nseconds    %.2f (%.0f tokens/s)\n",
               a->model, quantized ? " (quantized)" : "", a->text, a->seqlen, res->tokens,
               res->windows, res->predicted, res->nll, res->ppl, res->seconds, tps);
    }
}

/* --device cuda: every rank tokenizes and runs the windows; rank 0 prints */
static int eval_gpu(const eval_args *a)
{
    int init = 0, rank = 0, print = 1, rc = 1;
    MPI_Initialized(&init);
    if (!init)
        MPI_Init(NULL, NULL);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    ppl_result res;
    qconfig qc;
    int quantized = qconfig_load(a->model, &qc);
    if (quantized < 0 || tokenizer_load(a->model, &tok) != FQ_OK ||
        eval_tokenize(tok, a->text, a->max_chars, &ids, &n) != FQ_OK ||
        gpu_ppl(MPI_COMM_WORLD, a->model, ids, n, a->seqlen, (size_t)a->max_windows, &res, &print) != FQ_OK) {
        if (print)
            cli_fail();
        int size = 1;
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        if (size > 1) { /* a peer may sit in a collective that will never complete */
            fflush(stderr);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        goto done;
    }
    if (rank == 0)
        eval_print(a, &res, quantized == 1);
    rc = 0;
done:
    free(ids);
    tokenizer_free(tok);
    if (!init)
        MPI_Finalize();
    return rc;
}

int cmd_eval(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        eval_usage(stdout);
        return 0;
    }
    if (argc >= 2 && strncmp(argv[1], "--", 2) != 0)
        return eval_job_mode(argc, argv);
    eval_args a;
    if (eval_parse(argc, argv, &a) != FQ_OK)
        return cli_fail();
    tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    eval_model e;
    ppl_result res;
    qconfig qc = {0};
    qc.w_bits = (int)a.bits[0];
    qc.a_bits = (int)a.bits[1];
    qc.kv_bits = (int)a.bits[2];
    qc.tp_blocks = 1;
    snprintf(qc.method, sizeof qc.method, "%s", job_method_name(a.method));
    int rc = 1;
    memset(&e, 0, sizeof e);
    if (a.cuda)
        return eval_gpu(&a);
    if (eval_model_open(&e, a.model, a.method, &qc, NULL, a.seqlen) != FQ_OK ||
        tokenizer_load(a.model, &tok) != FQ_OK ||
        eval_tokenize(tok, a.text, a.max_chars, &ids, &n) != FQ_OK ||
        eval_model_ppl(&e, ids, n, a.seqlen, (size_t)a.max_windows, &res) != FQ_OK) {
        cli_fail();
        goto done;
    }
    eval_print(&a, &res, e.quantized);
    rc = 0;
done:
    eval_model_close(&e);
    free(ids);
    tokenizer_free(tok);
    return rc;
}
