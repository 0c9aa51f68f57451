/* cmd_synth.c — `flatq synth OUT_DIR --shape NAME --layers N [--seed S] [--quantized]
 * [--tokenizer PATH]`: write a synthetic LLaMA-shaped checkpoint for benchmarks
 * (core/synth_model.h says what the weights look like and why).
 *
 * The tokenizer is copied from --tokenizer, else from the bundled stories260K model found
 * beside the binary (bin/../data/models/stories260K-hf) or under the working directory.
 * Its vocabulary is usually smaller than the shape's (512 or 8192 ids against 128256):
 * every id it produces is a valid row of the embeddings, which is all calibration and
 * evaluation need; the extra rows are never read. bos/eos in config.json are taken from
 * the tokenizer's model config.json when one sits beside it, else 1/2 (stories260K's).
 */
#include "coordinator/commands.h"
#include "error.h"
#include "coordinator/progress.h"
#include "synth_model.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage: flatq synth OUT_DIR --shape NAME --layers N [--seed S] [--quantized [--tp-blocks T]]\n"
    "                   [--tokenizer PATH] [--threads T]\n"
    "  Write a synthetic LLaMA-shaped checkpoint: config.json, sharded bf16 safetensors\n"
    "  (<= 5 GB each) with model.safetensors.index.json, and a tokenizer.json.\n"
    "  Weights are seeded random (std 1/sqrt(in)) with 4 outlier residual channels\n"
    "  20-100x larger in the embeddings and in the matching weight columns/rows.\n"
    "  --shape NAME     llama-3-70b, llama-3-8b, flatq-16m or stories260k\n"
    "  --layers N       number of decoder layers (1..1000)\n"
    "  --seed S         64-bit seed (default 0); same seed, same bytes\n"
    "  --quantized      also write flatq's W4A4KV4 format of the same weights (RTN, identity\n"
    "                   transforms, clip ratios 0.98) into OUT_DIR/quantized\n"
    "  --tp-blocks T    the quantized copy's transform blocks (default 1): tensor-parallel\n"
    "                   degrees dividing T can run it, as after a `tp: T` calibration\n"
    "  --tokenizer PATH tokenizer.json or a model directory holding one (default: the\n"
    "                   bundled stories260K tokenizer)\n"
    "  --threads T      worker threads (default: all CPUs)\n";

static int parse_long(const char *opt, const char *v, long long lo, long long hi,
                      long long *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return fq_error("synth: %s '%s' (expected an integer in %lld..%lld)", opt, v, lo, hi);
    *out = x;
    return FQ_OK;
}

/* The bundled stories260K model directory, beside the binary or under the cwd. */
static const char *bundled_tokenizer(char *buf, size_t cap)
{
    char exe[PATH_MAX - 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        for (int up = 0; up < 3; up++) {
            char *slash = strrchr(exe, '/');
            if (!slash || slash == exe)
                break;
            *slash = '\0';
            snprintf(buf, cap, "%s/data/models/stories260K-hf/tokenizer.json", exe);
            if (access(buf, R_OK) == 0)
                return buf;
        }
    }
    snprintf(buf, cap, "data/models/stories260K-hf/tokenizer.json");
    return buf;
}

/* bos/eos ids of the model the tokenizer comes from (its config.json), if any. */
static void tokenizer_special_ids(const char *tok, synth_spec *s)
{
    char path[PATH_MAX + 64];
    size_t n = strlen(tok);
    if (n >= 5 && strcmp(tok + n - 5, ".json") == 0) {
        const char *slash = strrchr(tok, '/');
        snprintf(path, sizeof path, "%.*s/config.json", slash ? (int)(slash - tok) : 1,
                 slash ? tok : ".");
    } else {
        snprintf(path, sizeof path, "%s/config.json", tok);
    }
    json_t *cfg = json_load_file(path, 0, NULL);
    if (!cfg)
        return;
    json_t *b = json_object_get(cfg, "bos_token_id"), *e = json_object_get(cfg, "eos_token_id");
    if (json_is_integer(b) && json_integer_value(b) >= 0 &&
        json_integer_value(b) < s->shape.vocab)
        s->bos_id = (int)json_integer_value(b);
    if (json_is_integer(e) && json_integer_value(e) >= 0 &&
        json_integer_value(e) < s->shape.vocab)
        s->eos_id = (int)json_integer_value(e);
    json_decref(cfg);
}

int cmd_synth(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return 0;
    }
    const char *out = NULL, *shape = NULL, *tok = NULL;
    long long layers = -1, seed = 0, threads = 0;
    int quantized = 0;
    long long tp_blocks = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if (strcmp(a, "--shape") == 0 && has_val)
            shape = argv[++i];
        else if (strcmp(a, "--layers") == 0 && has_val) {
            if (parse_long("--layers", argv[++i], 1, 1000, &layers) != FQ_OK)
                return cli_fail();
        } else if (strcmp(a, "--seed") == 0 && has_val) {
            if (parse_long("--seed", argv[++i], 0, LLONG_MAX, &seed) != FQ_OK)
                return cli_fail();
        } else if (strcmp(a, "--threads") == 0 && has_val) {
            if (parse_long("--threads", argv[++i], 1, 256, &threads) != FQ_OK)
                return cli_fail();
        } else if (strcmp(a, "--tokenizer") == 0 && has_val)
            tok = argv[++i];
        else if (strcmp(a, "--quantized") == 0)
            quantized = 1;
        else if (strcmp(a, "--tp-blocks") == 0 && has_val) {
            if (parse_long("--tp-blocks", argv[++i], 1, 1024, &tp_blocks) != FQ_OK)
                return cli_fail();
        }
        else if (a[0] == '-' && a[1]) {
            fq_error("synth: unknown option or missing value '%s' (expected --shape NAME, "
                     "--layers N, --seed S, --quantized, --tp-blocks T, --tokenizer PATH, --threads T)", a);
            return cli_fail();
        } else if (!out)
            out = a;
        else {
            fq_error("synth: extra argument '%s' (expected one OUT_DIR)", a);
            return cli_fail();
        }
    }
    if (!out || !shape || layers < 0) {
        fq_error("synth: missing %s (expected: flatq synth OUT_DIR --shape NAME --layers N)",
                 !out ? "OUT_DIR" : !shape ? "--shape NAME" : "--layers N");
        return cli_fail();
    }
    synth_spec s;
    if (synth_spec_init(&s, shape, (int)layers, (uint64_t)seed) != FQ_OK)
        return cli_fail();
    if (threads > 0)
        s.threads = (int)threads;
    char tokbuf[PATH_MAX];
    if (!tok)
        tok = bundled_tokenizer(tokbuf, sizeof tokbuf);
    tokenizer_special_ids(tok, &s);
    double t0 = progress_monotonic_seconds();
    if (synth_write_checkpoint(&s, out) != FQ_OK || synth_copy_tokenizer(tok, out) != FQ_OK)
        return cli_fail();
    double t1 = progress_monotonic_seconds();
    uint64_t bytes = 0;
    for (int t = 0; t < synth_tensor_count(&s); t++) {
        int64_t r = 0, c = 0;
        synth_tensor_info(&s, t, NULL, 0, &r, &c);
        bytes += (uint64_t)r * (uint64_t)(c ? c : 1) * 2;
    }
    printf("synth: %s: %s x %d layers, %.2f GB bf16 in %.1f s (%.2f GB/s, %d threads); "
           "outlier channels", out, s.shape.name, s.n_layers, bytes / 1e9, t1 - t0,
           bytes / 1e9 / (t1 - t0 > 1e-9 ? t1 - t0 : 1e-9), s.threads);
    for (int i = 0; i < SYNTH_OUTLIERS; i++)
        printf(" %d (x%.1f)", s.outlier_ch[i], s.outlier_gain[i]);
    printf("\n");
    if (quantized) {
        char qdir[PATH_MAX];
        snprintf(qdir, sizeof qdir, "%s/quantized", out);
        if (synth_write_quantized(&s, out, qdir, (int)tp_blocks) != FQ_OK)
            return cli_fail();
        printf("synth: %s: W4A4KV4 (RTN, identity transforms) in %.1f s\n", qdir,
               progress_monotonic_seconds() - t1);
    }
    return 0;
}
