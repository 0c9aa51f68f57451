/* test_llama_golden.c — the CPU LLaMA against PyTorch/transformers (fp32).
 *
 * tests/golden/reference/llama_golden.json was made by tests/reference/llama_golden.py on
 * the GPU machine (torch 2.11, transformers 5.17, tokenizers 0.23.2). For every case: the
 * token ids flatq produces must hash to the reference's ids_sha256, the perplexity (same
 * window protocol) must match within 1e-4 relative, and the logits of a fixed prompt within
 * 1e-4 absolute. The bundled stories260K runs everywhere; flatq-llama-16m and wiki.test.raw
 * come from FLATQ_DATA. Under SAN=1 the full-text 16m perplexities (minutes of compute)
 * are announced as not run; the normal build runs them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fileio.h"
#include "llama_model.h"
#include "perplexity.h"
#include "sha256.h"
#include "st_test_util.h"
#include "tokenizer.h"
#include "utf8.h"

#define GOLDEN "tests/golden/reference/llama_golden.json"

static json_t *golden;

static int setup(void **state)
{
    (void)state;
    json_error_t e;
    golden = json_load_file(GOLDEN, 0, &e);
    if (!golden)
        fprintf(stderr, "%s:%d: %s\n", GOLDEN, e.line, e.text);
    return golden ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    json_decref(golden);
    return 0;
}

/* The model directory: the bundled copy of stories260K, the shared one of the 16m model. */
static const char *model_dir(const char *name, const char *test)
{
    if (strcmp(name, "stories260K-hf") == 0)
        return "data/models/stories260K-hf";
    static char rel[256];
    snprintf(rel, sizeof rel, "models/%s", name);
    return tu_data(rel, test);
}

static const char *text_path(const char *rel, const char *test)
{
    static char buf[1024];
    const char *base = strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel;
    snprintf(buf, sizeof buf, "data/text/%s", base);
    struct stat st;
    if (stat(buf, &st) == 0)
        return buf;
    return tu_data(rel, test);
}

static void ids_hex(const int32_t *ids, size_t n, char hex[65])
{
    uint8_t *b = malloc(n * 4 + 1), d[32];
    assert_non_null(b);
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ids[i];
        b[4 * i] = (uint8_t)v;
        b[4 * i + 1] = (uint8_t)(v >> 8);
        b[4 * i + 2] = (uint8_t)(v >> 16);
        b[4 * i + 3] = (uint8_t)(v >> 24);
    }
    sha256(b, n * 4, d);
    sha256_hex(d, hex);
    free(b);
}

static void run_ppl_case(json_t *row)
{
    const char *model = json_string_value(json_object_get(row, "model"));
    const char *text = json_string_value(json_object_get(row, "text"));
    json_t *chars = json_object_get(row, "chars");
    int seqlen = (int)json_integer_value(json_object_get(row, "seqlen"));
    char test[256];
    snprintf(test, sizeof test, "ppl %s on %s @%d", model, text, seqlen);
    const char *dir = model_dir(model, test), *path = text_path(text, test);
    if (!dir || !path)
        skip();
    if (getenv("FLATQ_SAN") && strcmp(model, "stories260K-hf") != 0) {
        printf("!!! NOT RUN under SAN=1: %s (minutes of BLAS work; the normal build checks it)\n",
               test);
        skip();
    }
    llama_model m;
    tokenizer *tok = NULL;
    assert_int_equal(llama_model_load(dir, &m), FQ_OK);
    assert_int_equal(tokenizer_load(dir, &tok), FQ_OK);
    char *buf;
    size_t len;
    assert_int_equal(fq_read_file(path, &buf, &len), FQ_OK);
    if (json_is_integer(chars))
        len = utf8_prefix_bytes(buf, len, (long)json_integer_value(chars));
    int32_t *ids;
    size_t n;
    assert_int_equal(tokenizer_encode(tok, buf, len, 1, &ids, &n), FQ_OK);
    char hex[65];
    ids_hex(ids, n, hex);
    assert_int_equal(n, json_integer_value(json_object_get(row, "tokens")));
    assert_string_equal(hex, json_string_value(json_object_get(row, "ids_sha256")));
    llama_runner r;
    ppl_result res;
    assert_int_equal(llama_runner_init(&r, &m, seqlen), FQ_OK);
    assert_int_equal(perplexity_eval(ids, n, seqlen, m.cfg.vocab, 0, llama_window_logits, &r, &res),
                     FQ_OK);
    double want = json_real_value(json_object_get(row, "ppl"));
    printf("%s: flatq %.6f  torch %.6f  rel %.2e (%zu windows, %.0f tokens/s)\n", test, res.ppl,
           want, fabs(res.ppl - want) / want, res.windows,
           res.windows * (double)seqlen / res.seconds);
    assert_int_equal(res.windows, json_integer_value(json_object_get(row, "windows")));
    assert_true(fabs(res.ppl - want) / want < 1e-4);
    llama_runner_free(&r);
    free(ids);
    free(buf);
    tokenizer_free(tok);
    llama_model_free(&m);
}

static void test_ppl(void **state, int index)
{
    (void)state;
    json_t *row = json_array_get(json_object_get(golden, "ppl"), (size_t)index);
    assert_non_null(row);
    run_ppl_case(row);
}

static void test_ppl_0(void **s) { test_ppl(s, 0); }
static void test_ppl_1(void **s) { test_ppl(s, 1); }
static void test_ppl_2(void **s) { test_ppl(s, 2); }
static void test_ppl_3(void **s) { test_ppl(s, 3); }

static void test_logits(void **state, const char *name)
{
    (void)state;
    json_t *g = json_object_get(json_object_get(golden, "logits"), name);
    assert_non_null(g);
    char test[128];
    snprintf(test, sizeof test, "logits %s", name);
    const char *dir = model_dir(name, test);
    if (!dir)
        skip();
    llama_model m;
    tokenizer *tok = NULL;
    assert_int_equal(llama_model_load(dir, &m), FQ_OK);
    assert_int_equal(tokenizer_load(dir, &tok), FQ_OK);
    const char *prompt = json_string_value(json_object_get(g, "prompt"));
    int32_t *ids;
    size_t n;
    assert_int_equal(tokenizer_encode(tok, prompt, strlen(prompt), 1, &ids, &n), FQ_OK);
    json_t *gids = json_object_get(g, "ids");
    assert_int_equal(n, json_array_size(gids));
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ids[i], json_integer_value(json_array_get(gids, i)));
    llama_runner r;
    assert_int_equal(llama_runner_init(&r, &m, (int)n), FQ_OK);
    int V = m.cfg.vocab;
    real *logits = malloc(sizeof(real) * n * (size_t)V);
    assert_non_null(logits);
    assert_int_equal(llama_window_logits(&r, ids, (int)n, logits), FQ_OK);
    double worst = 0;
    json_t *head = json_object_get(g, "head"), *last = json_object_get(g, "last");
    for (size_t p = 0; p < n; p++) {
        json_t *row = json_array_get(head, p);
        for (size_t v = 0; v < json_array_size(row); v++)
            worst = fmax(worst, fabs(logits[p * V + v] - json_real_value(json_array_get(row, v))));
    }
    assert_int_equal(json_array_size(last), V);
    for (int v = 0; v < V; v++)
        worst = fmax(worst, fabs(logits[(n - 1) * V + v] - json_real_value(json_array_get(last, v))));
    printf("%s: max |logit − torch| = %.3g over %zu positions\n", test, worst, n);
    assert_true(worst < 1e-4);
    free(logits);
    llama_runner_free(&r);
    free(ids);
    tokenizer_free(tok);
    llama_model_free(&m);
}

static void test_logits_stories(void **s) { test_logits(s, "stories260K-hf"); }
static void test_logits_16m(void **s) { test_logits(s, "flatq-llama-16m"); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_stories), cmocka_unit_test(test_logits_16m),
        cmocka_unit_test(test_ppl_0),          cmocka_unit_test(test_ppl_1),
        cmocka_unit_test(test_ppl_2),          cmocka_unit_test(test_ppl_3),
    };
    return cmocka_run_group_tests_name("llama_golden", tests, setup, teardown);
}
