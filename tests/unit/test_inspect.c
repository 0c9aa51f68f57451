/* test_inspect.c — `flatq inspect` end to end on the bundled stories260K, and the layer
 * forward with capture it is built on.
 *
 * The capture is checked two ways: its output must be bitwise equal to llama_layer_fwd's,
 * and the captured inputs must explain that output — recomputed here in float64,
 * x_out − x_in = o_in·Woᵀ + down_in·Wdownᵀ, down_in = silu(mlp_in·Wgateᵀ)·(mlp_in·Wupᵀ),
 * attn_in = RMSNorm(x_in)·γ1. The CLI is run as a process ($FLATQ, default bin/flatq, as
 * scripts/run-tests.sh sets it): its --json must parse with the documented keys, its
 * --html must hold the charts, and every bad argument must give exit 1 and one line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error.h"
#include "llama_capture.h"
#include "rng.h"

#define MODEL "data/models/stories260K-hf"

static double silu(double v) { return v / (1 + exp(-v)); }

static void test_capture_matches_layer_fwd(void **state)
{
    (void)state;
    llama_model m;
    if (llama_model_load(MODEL, &m) != FQ_OK)
        fail_msg("%s (run from the repository root)", fq_errmsg());
    const llama_config *c = &m.cfg;
    int b = 2, s = 16, n = b * s, d = c->hidden, f = c->intermediate,
        qd = c->n_heads * c->head_dim;
    real *x0 = malloc(sizeof(real) * n * d), *xa = malloc(sizeof(real) * n * d),
         *xb = malloc(sizeof(real) * n * d);
    llama_layer_inputs cap = {malloc(sizeof(real) * n * d), malloc(sizeof(real) * n * qd),
                              malloc(sizeof(real) * n * d), malloc(sizeof(real) * n * f)};
    rng_state g;
    rng_seed(&g, 3);
    for (int i = 0; i < n * d; i++)
        x0[i] = (real)rng_normal(&g);
    memcpy(xa, x0, sizeof(real) * n * d);
    memcpy(xb, x0, sizeof(real) * n * d);
    rope_table rope;
    llama_scratch w;
    assert_int_equal(rope_table_init(&rope, c, s), FQ_OK);
    assert_int_equal(llama_scratch_init(&w, c, b, s), FQ_OK);
    const llama_layer *l = &m.layers[1];
    llama_layer_fwd(xa, l, c, &rope, b, s, &w);
    llama_layer_fwd_capture(xb, l, c, &rope, b, s, &w, &cap);
    assert_memory_equal(xa, xb, sizeof(real) * n * d);

    double worst = 0;
    for (int t = 0; t < n; t++) {
        double ms = 0;
        for (int j = 0; j < d; j++)
            ms += (double)x0[t * d + j] * x0[t * d + j];
        double rs = 1 / sqrt(ms / d + c->rms_eps);
        for (int j = 0; j < d; j++)
            worst = fmax(worst, fabs(cap.attn_in[t * d + j] - x0[t * d + j] * rs * l->attn_norm[j]));
        for (int j = 0; j < f; j++) {
            double gt = 0, up = 0;
            for (int k = 0; k < d; k++) {
                gt += (double)cap.mlp_in[t * d + k] * l->wgate[(size_t)j * d + k];
                up += (double)cap.mlp_in[t * d + k] * l->wup[(size_t)j * d + k];
            }
            worst = fmax(worst, fabs(cap.down_in[t * f + j] - silu(gt) * up));
        }
        for (int o = 0; o < d; o++) {
            double delta = 0;
            for (int k = 0; k < qd; k++)
                delta += (double)cap.o_in[t * qd + k] * l->wo[(size_t)o * qd + k];
            for (int k = 0; k < f; k++)
                delta += (double)cap.down_in[t * f + k] * l->wdown[(size_t)o * f + k];
            worst = fmax(worst, fabs((xb[t * d + o] - (double)x0[t * d + o]) - delta));
        }
    }
    if (!(worst < 1e-4))
        fail_msg("captured inputs do not explain the layer: worst deviation %g", worst);
    rope_table_free(&rope);
    llama_scratch_free(&w);
    free(x0);
    free(xa);
    free(xb);
    free(cap.attn_in);
    free(cap.o_in);
    free(cap.mlp_in);
    free(cap.down_in);
    llama_model_free(&m);
}

/* Run `flatq ARGS`, capturing stdout (and stderr into it when merge); returns exit code. */
static int run_flatq(const char *args, int merge, char **out)
{
    const char *bin = getenv("FLATQ") && *getenv("FLATQ") ? getenv("FLATQ") : "bin/flatq";
    if (access(bin, X_OK) != 0)
        fail_msg("%s is not built (make tests builds it)", bin);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s%s", bin, args, merge ? " 2>&1" : "");
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (size_t k; (k = fread(buf + len, 1, cap - len - 1, p)) > 0;) {
        len += k;
        if (cap - len < 4096)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = 0;
    int st = pclose(p);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static double num_at(json_t *root, const char *path)
{
    json_t *v = json_object_get(json_object_get(json_object_get(root, "activation"), "before"), path);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static void test_cli_json_and_html(void **state)
{
    (void)state;
    char html[] = "/tmp/fq_inspect_XXXXXX";
    int fd = mkstemp(html);
    assert_true(fd >= 0);
    close(fd);
    char args[512], *out = NULL;
    snprintf(args, sizeof args, "inspect " MODEL " --seqlen 64 --windows 2 "
                                "--text data/text/tinystories_sample.txt --json --html %s", html);
    int rc = run_flatq(args, 0, &out);
    if (rc != 0)
        fail_msg("exit %d: %s", rc, out);
    json_error_t err;
    json_t *doc = json_loads(out, 0, &err);
    if (!doc)
        fail_msg("--json is not JSON: %s", err.text);
    assert_int_equal(json_integer_value(json_object_get(doc, "seqlen")), 64);
    assert_int_equal(json_integer_value(json_object_get(doc, "windows")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(doc, "config"), "layers")), 5);
    json_t *layers = json_object_get(doc, "layers");
    assert_int_equal(json_array_size(layers), 5);
    static const char *const inputs[4] = {"k_proj", "o_proj", "gate_proj", "down_proj"};
    static const int channels[4] = {64, 64, 64, 172};
    for (size_t li = 0; li < 5; li++) {
        json_t *ins = json_object_get(json_array_get(layers, li), "inputs");
        assert_int_equal(json_array_size(ins), 4);
        for (size_t i = 0; i < 4; i++) {
            json_t *in = json_array_get(ins, i);
            assert_string_equal(json_string_value(json_object_get(in, "input")), inputs[i]);
            assert_int_equal(json_integer_value(json_object_get(in, "channels")), channels[i]);
            assert_true(num_at(in, "difficulty") > 0);
            assert_true(num_at(in, "kurtosis") > 1);
            for (int v = 0; v < 4; v++) {
                static const char *const vn[4] = {"before", "smooth", "rotate", "smoothrot"};
                json_t *e = json_object_get(json_object_get(in, "error"), vn[v]);
                assert_true(json_number_value(json_object_get(e, "measured")) > 0);
                assert_true(json_number_value(json_object_get(e, "estimate")) > 0);
                assert_non_null(json_object_get(json_object_get(json_object_get(in, "weight"), vn[v]),
                                                "difficulty"));
            }
        }
    }
    /* 172 = 43·4 has no Hadamard matrix: the rotation says it is random orthogonal */
    json_t *down = json_array_get(json_object_get(json_array_get(layers, 0), "inputs"), 3);
    assert_string_equal(json_string_value(json_object_get(down, "rotation")), "random-orthogonal");
    json_t *diff = json_object_get(doc, "difficulty");
    assert_int_equal(json_array_size(diff), 20);
    json_t *d0 = json_array_get(diff, 0);
    assert_true(json_is_number(json_object_get(d0, "smoothrot")));
    /* the report-shaped row carries the same number as the detailed one */
    assert_true(json_number_value(json_object_get(d0, "before")) ==
                num_at(json_array_get(json_object_get(json_array_get(layers, 0), "inputs"), 0),
                       "difficulty"));
    json_decref(doc);
    free(out);

    FILE *f = fopen(html, "r");
    assert_non_null(f);
    static char page[1 << 20];
    size_t n = fread(page, 1, sizeof page - 1, f);
    page[n] = 0;
    fclose(f);
    unlink(html);
    assert_int_equal(count(page, "<svg"), 20); /* 5 metrics × 4 inputs */
    assert_null(strstr(page, "nan"));
    assert_null(strstr(page, "inf<"));
    assert_non_null(strstr(page, "</html>"));
}

static void test_cli_default_text_table(void **state)
{
    (void)state;
    char *out = NULL;
    int rc = run_flatq("inspect " MODEL, 1, &out);
    if (rc != 0)
        fail_msg("exit %d: %s", rc, out);
    assert_non_null(strstr(out, "wiki.test.paper.txt"));
    assert_non_null(strstr(out, "4 windows x 512"));
    assert_non_null(strstr(out, "activation difficulty D"));
    assert_non_null(strstr(out, "    4  down_proj"));
    free(out);
}

static void test_cli_bad_arguments(void **state)
{
    (void)state;
    static const struct {
        const char *args, *want;
    } cases[] = {
        {"inspect", "MODEL_DIR is required"},
        {"inspect " MODEL " --seqlen 1", "--seqlen: expected an integer in 2.."},
        {"inspect " MODEL " --windows x", "--windows: expected an integer"},
        {"inspect " MODEL " --alpha 2", "--alpha: expected a number in [0, 1]"},
        {"inspect " MODEL " --bits 9", "--bits"},
        {"inspect " MODEL " --bogus 1", "unknown argument '--bogus'"},
        {"inspect " MODEL " extra", "extra argument 'extra'"},
        {"inspect " MODEL " --text", "--text needs a value"},
        {"inspect /nonexistent/model", "/nonexistent/model"},
        {"inspect " MODEL " --seqlen 1024", "max_position_embeddings 512"},
        {"inspect " MODEL " --text data/text/tinystories_sample.txt --windows 8",
         "tokens (expected at least 4096"},
        {"inspect " MODEL " --text /nonexistent.txt", "/nonexistent.txt"},
        {"inspect " MODEL " --seqlen 32 --windows 1 --html /nonexistent/dir/x.html",
         "/nonexistent/dir/x.html"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = NULL;
        int rc = run_flatq(cases[i].args, 1, &out);
        if (rc != 1 || strncmp(out, "flatq: ", 7) != 0 || !strstr(out, cases[i].want) ||
            count(out, "\n") != 1)
            fail_msg("'%s': exit %d, output '%s' (expected exit 1 and one line with '%s')",
                     cases[i].args, rc, out, cases[i].want);
        free(out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_capture_matches_layer_fwd),
        cmocka_unit_test(test_cli_json_and_html),
        cmocka_unit_test(test_cli_default_text_table),
        cmocka_unit_test(test_cli_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
