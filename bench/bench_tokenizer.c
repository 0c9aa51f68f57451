/* bench_tokenizer.c — encode throughput of flatq's tokenizer next to Hugging Face's
 * (npm `tokenizers`, run through bench/tokenizer_npm.mjs on the same text).
 *
 * Each side encodes the whole text (with BOS) `repeat` times after one warm-up run; the
 * best time counts (the least disturbed by the other tenants of a shared machine), the
 * mean is printed too. Run it pinned to one core so neither side gets extra threads:
 *   taskset -c 0 build/bench/bench_tokenizer [--repeat N] [TEXT [MODEL_DIR...]]
 * Defaults: $FLATQ_DATA/text/wikitext-2-raw/wiki.test.paper.txt, both test models.
 * The npm column is left empty (and says why) when node or the package is missing.
 */
#include "error.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Run the npm side; 0 and fills the numbers on success. */
static int run_npm(const char *text, const char *model, int repeat, double *best, double *mean,
                   long *tokens)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "node bench/tokenizer_npm.mjs '%s' '%s' %d 2>/dev/null", text,
             model, repeat);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    char line[512] = "";
    char *ok = fgets(line, sizeof line, p);
    int rc = pclose(p);
    if (!ok || rc != 0)
        return -1;
    return sscanf(line, "{\"tokens\":%ld,\"best_s\":%lf,\"mean_s\":%lf}", tokens, best, mean) == 3
               ? 0
               : -1;
}

int main(int argc, char **argv)
{
    int repeat = 5, argi = 1;
    if (argi + 1 < argc && strcmp(argv[argi], "--repeat") == 0) {
        repeat = atoi(argv[argi + 1]);
        argi += 2;
    }
    if (repeat < 1)
        repeat = 1;
    const char *data = getenv("FLATQ_DATA");
    if (!data || !*data)
        data = "../shared/data";
    char def_text[1024], def_m1[1024], def_m2[1024];
    snprintf(def_text, sizeof def_text, "%s/text/wikitext-2-raw/wiki.test.paper.txt", data);
    snprintf(def_m1, sizeof def_m1, "%s/models/stories260K-hf", data);
    snprintf(def_m2, sizeof def_m2, "%s/models/flatq-llama-16m", data);
    const char *text_path = argi < argc ? argv[argi++] : def_text;
    const char *def_models[] = {def_m1, def_m2};
    const char **models = argi < argc ? (const char **)argv + argi : def_models;
    int n_models = argi < argc ? argc - argi : 2;

    size_t len;
    char *text = slurp(text_path, &len);
    if (!text) {
        fprintf(stderr, "bench_tokenizer: %s: cannot read (expected a text file)\n", text_path);
        return 1;
    }
    printf("text: %s (%.2f MB), best of %d runs after 1 warm-up, encode with BOS\n",
           text_path, len / 1e6, repeat);
    printf("%-18s %-10s %10s %9s %9s %9s %11s %8s\n", "model", "impl", "tokens", "best s",
           "mean s", "MB/s", "Mtokens/s", "vs npm");
    for (int m = 0; m < n_models; m++) {
        tokenizer *t;
        if (tokenizer_load(models[m], &t) != FQ_OK) {
            fprintf(stderr, "bench_tokenizer: %s\n", fq_errmsg());
            free(text);
            return 1;
        }
        int32_t *ids;
        size_t n = 0;
        double best = 1e30, total = 0;
        for (int r = 0; r <= repeat; r++) {
            double t0 = now_s();
            if (tokenizer_encode(t, text, len, 1, &ids, &n) != FQ_OK) {
                fprintf(stderr, "bench_tokenizer: %s\n", fq_errmsg());
                return 1;
            }
            double dt = now_s() - t0;
            free(ids);
            if (r == 0)
                continue;
            best = dt < best ? dt : best;
            total += dt;
        }
        tokenizer_free(t);
        const char *name = strrchr(models[m], '/') ? strrchr(models[m], '/') + 1 : models[m];
        double nb, nm;
        long nt;
        int have_npm = run_npm(text_path, models[m], repeat, &nb, &nm, &nt) == 0;
        printf("%-18s %-10s %10zu %9.4f %9.4f %9.2f %11.3f %7.2fx\n", name, "flatq", n, best,
               total / repeat, len / 1e6 / best, n / 1e6 / best, have_npm ? nb / best : 0.0);
        if (have_npm)
            printf("%-18s %-10s %10ld %9.4f %9.4f %9.2f %11.3f %7.2fx%s\n", name, "npm", nt, nb,
                   nm, len / 1e6 / nb, nt / 1e6 / nb, 1.0,
                   (size_t)nt == n ? "" : "  (TOKEN COUNTS DIFFER)");
        else
            printf("%-18s %-10s  not run: needs node and tests/reference/node_modules "
                   "(cd tests/reference && npm install)\n", name, "npm");
    }
    free(text);
    return 0;
}
