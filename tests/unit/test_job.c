/* test_job.c — job files: values, defaults, includes and their override order, --set,
 * ${ENV}, relative paths, every kind of bad input (message names FILE:LINE:COL and the
 * key), the shipped jobs and recipes, printing round trip and the fingerprint.
 *
 * Files are written into a fresh temporary directory per test; the shipped files are
 * read from the repository (the tests run from its root, as `make test` does). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "job.h"
#include "sha256.h"

static char tmpdir[256];

static int setup(void **state)
{
    (void)state;
    strcpy(tmpdir, "/tmp/flatq-test-job-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Write TEXT to tmpdir/NAME (creating one level of subdirectory); returns the path. */
static const char *put(const char *name, const char *text)
{
    static char path[8][PATH_MAX];
    static int slot;
    char *p = path[slot++ % 8];
    snprintf(p, PATH_MAX, "%s/%s", tmpdir, name);
    char *slash = strrchr(p, '/');
    *slash = '\0';
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", p);
    assert_int_equal(system(cmd), 0);
    *slash = '/';
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static const char *in_tmp(const char *rel)
{
    static char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", tmpdir, rel);
    return p;
}

/* Load and expect failure whose message contains every given substring. */
static void expect_error(const char *path, const char *const *sets, int n_sets, ...)
{
    job j;
    fq_error_clear();
    int rc = job_load(path, sets, n_sets, &j);
    const char *msg = fq_errmsg();
    if (rc != FQ_ERR)
        fail_msg("expected %s to be refused", path);
    assert_null(strchr(msg, '\n'));
    va_list ap;
    va_start(ap, n_sets);
    for (const char *want; (want = va_arg(ap, const char *));)
        if (!strstr(msg, want))
            fail_msg("error message \"%s\" lacks \"%s\"", msg, want);
    va_end(ap);
    assert_null(j.model); /* the job was released */
}

#define MINIMAL "model: m\noutput: o\n"
#define CALIB "calibration:\n  text: t.txt\n"

static void test_values_and_defaults(void **state)
{
    (void)state;
    const char *p = put("full.yaml", "model: models/tiny\n"
                                     "output: /abs/out\n"
                                     "device: cuda\n"
                                     "tp: 2\n"
                                     "cache:\n  dtype: fp32\n  delete_consumed: true\n"
                                     "calibration:\n"
                                     "  text: [a.txt, sub/b.txt]\n"
                                     "  nsamples: 32\n  seqlen: 128\n  batch: 8\n  seed: 7\n"
                                     "quantization:\n"
                                     "  method: flatquant\n  w_bits: 4\n  a_bits: 16\n"
                                     "  kv_bits: 8\n  kv_sym: true\n  lr: 1.5e-3\n"
                                     "  init: hadamard\n  weight_quantizer: gptq\n"
                                     "  gptq_act_order: true\n  gptq_clip_search: true\n"
                                     "  separate_vtrans: true\n"
                                     "eval:\n  text: e.txt\n  seqlen: 256\n  max_windows: 3\n");
    job j;
    assert_int_equal(job_load(p, NULL, 0, &j), FQ_OK);
    char want[PATH_MAX];
    snprintf(want, sizeof want, "%s/models/tiny", tmpdir);
    assert_string_equal(j.model, want);
    assert_string_equal(j.output, "/abs/out");
    assert_int_equal(j.device, JOB_DEVICE_CUDA);
    assert_int_equal(j.tp, 2);
    assert_string_equal(j.cache.dir, "/abs/out/cache");
    assert_int_equal(j.cache.dtype, JOB_CACHE_FP32);
    assert_true(j.cache.delete_consumed);
    assert_true(j.calibrate);
    assert_int_equal(j.calibration.n_text, 2);
    snprintf(want, sizeof want, "%s/sub/b.txt", tmpdir);
    assert_string_equal(j.calibration.text[1], want);
    assert_int_equal(j.calibration.nsamples, 32);
    assert_int_equal(j.calibration.seqlen, 128);
    assert_int_equal(j.calibration.batch, 8);
    assert_int_equal(j.calibration.seed, 7);
    assert_int_equal(j.quantization.a_bits, 16);
    assert_int_equal(j.quantization.kv_bits, 8);
    assert_true(j.quantization.kv_sym);
    assert_true(j.quantization.lr == 1.5e-3);
    assert_int_equal(j.quantization.init, JOB_INIT_HADAMARD);
    assert_int_equal(j.quantization.weight_quantizer, JOB_WQ_GPTQ);
    assert_true(j.quantization.gptq_act_order);
    assert_true(j.quantization.gptq_clip_search);
    assert_true(j.quantization.separate_vtrans);
    /* untouched keys keep the official recipe's values */
    assert_int_equal(j.quantization.epochs, 15);
    assert_true(j.quantization.clip_lr == 5e-2);
    assert_true(j.quantization.lr_min == 5e-6);
    assert_true(j.quantization.alpha == 0.3);
    assert_true(j.quantization.w_sym && j.quantization.a_sym);
    assert_true(j.evaluate);
    assert_int_equal(j.eval.seqlen, 256);
    assert_int_equal(j.eval.max_windows, 3);
    assert_int_equal(j.eval.n_methods, 2);
    assert_int_equal(j.eval.methods[0], JOB_METHOD_FP);
    assert_int_equal(j.eval.methods[1], JOB_METHOD_FLATQUANT);
    assert_string_equal(j.report.dir, "/abs/out");
    char where[64];
    snprintf(where, sizeof where, "full.yaml:16:11");
    assert_non_null(strstr(job_where(&j, "quantization.w_bits"), where));
    assert_string_equal(job_where(&j, "quantization.epochs"), "default");
    job_free(&j);
    job_free(&j); /* idempotent */
}

static void test_defaults_match_recipe(void **state)
{
    (void)state;
    job j;
    assert_int_equal(job_defaults(&j), FQ_OK);
    assert_int_equal(j.tp, 1);
    assert_int_equal(j.calibration.nsamples, 128);
    assert_int_equal(j.calibration.seqlen, 2048);
    assert_int_equal(j.calibration.batch, 4);
    assert_int_equal(j.quantization.method, JOB_METHOD_FLATQUANT);
    assert_int_equal(j.quantization.w_bits, 4);
    assert_false(j.quantization.kv_sym);
    assert_true(j.quantization.lr == 5e-3);
    assert_true(j.quantization.weight_decay == 0.01);
    assert_true(j.quantization.smooth_alpha == 0.5);
    assert_true(j.quantization.quarot_act_clip == 0.9);
    assert_true(j.quantization.quarot_kv_clip == 0.95);
    assert_int_equal(j.eval.seqlen, 2048);
    assert_null(j.model);
    job_free(&j);
}

static void test_includes_override_order(void **state)
{
    (void)state;
    put("recipes/base.yaml", "quantization:\n  w_bits: 8\n  a_bits: 8\n  epochs: 3\n"
                             "  lr: 1.0e-3\n"
                             "calibration:\n  text: corpus.txt\n");
    put("recipes/mid.yaml", "include: base.yaml\nquantization:\n  a_bits: 6\n");
    put("late.yaml", "quantization:\n  epochs: 7\n");
    const char *p = put("job.yaml", "include: [recipes/mid.yaml, late]\n" MINIMAL
                                    "quantization:\n  w_bits: 4\n");
    job j;
    assert_int_equal(job_load(p, NULL, 0, &j), FQ_OK);
    assert_int_equal(j.quantization.w_bits, 4);  /* the job over its includes */
    assert_int_equal(j.quantization.a_bits, 6);  /* mid over base */
    assert_int_equal(j.quantization.epochs, 7);  /* later include over earlier */
    assert_true(j.quantization.lr == 1e-3);      /* base, untouched */
    assert_non_null(strstr(job_where(&j, "quantization.a_bits"), "recipes/mid.yaml:3:11"));
    /* a path written in an included file is relative to that file */
    char want[PATH_MAX];
    snprintf(want, sizeof want, "%s/recipes/corpus.txt", tmpdir);
    assert_string_equal(j.calibration.text[0], want);
    job_free(&j);
    /* the same recipe twice is a diamond, not a cycle */
    p = put("diamond.yaml", "include: [recipes/mid.yaml, recipes/base.yaml]\n" MINIMAL);
    assert_int_equal(job_load(p, NULL, 0, &j), FQ_OK);
    assert_int_equal(j.quantization.a_bits, 8); /* base listed last wins */
    job_free(&j);
}

static void test_set_overrides(void **state)
{
    (void)state;
    const char *p = put("set.yaml", MINIMAL CALIB "eval:\n  text: e.txt\n"
                                    "quantization:\n  lr: 1.0e-2\n");
    const char *sets[] = {"calibration.nsamples=16", "quantization.lr=2.5e-4",
                          "eval.methods=[fp, rtn, flatquant]", "model=rel/model",
                          "cache.dir=/scratch/c", "report.dir=r", "quantization.init=identity",
                          "calibration.nsamples=8"};
    job j;
    assert_int_equal(job_load(p, sets, 8, &j), FQ_OK);
    assert_int_equal(j.calibration.nsamples, 8); /* the last --set wins */
    assert_true(j.quantization.lr == 2.5e-4);
    assert_int_equal(j.eval.n_methods, 3);
    assert_int_equal(j.eval.methods[1], JOB_METHOD_RTN);
    char cwd[PATH_MAX], want[PATH_MAX + 32];
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(want, sizeof want, "%s/rel/model", cwd); /* --set paths: the current dir */
    assert_string_equal(j.model, want);
    assert_string_equal(j.cache.dir, "/scratch/c");
    snprintf(want, sizeof want, "%s/r", cwd);
    assert_string_equal(j.report.dir, want);
    assert_int_equal(j.quantization.init, JOB_INIT_IDENTITY);
    assert_string_equal(job_where(&j, "calibration.nsamples"), "--set 'calibration.nsamples=8'");
    job_free(&j);
}

static void test_env_expansion(void **state)
{
    (void)state;
    setenv("FQT_DATA", "/data/root", 1);
    setenv("FQT_REL", "reldata", 1);
    unsetenv("FQT_UNSET");
    setenv("FQT_EMPTY", "", 1);
    const char *p = put("env.yaml", "model: ${FQT_DATA}/models/m\n"
                                    "output: ${FQT_UNSET:-out}/x\n"
                                    "calibration:\n"
                                    "  text: [\"${FQT_REL}/a.txt\", \"${FQT_EMPTY:-d}/b.txt\","
                                    " \"lit$${NAME}.txt\", \"cost$5.txt\"]\n");
    job j;
    assert_int_equal(job_load(p, NULL, 0, &j), FQ_OK);
    assert_string_equal(j.model, "/data/root/models/m");
    char want[PATH_MAX + 64], cwd[PATH_MAX];
    snprintf(want, sizeof want, "%s/out/x", tmpdir); /* a default is file-relative */
    assert_string_equal(j.output, want);
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(want, sizeof want, "%s/reldata/a.txt", cwd); /* an env value: cwd-relative */
    assert_string_equal(j.calibration.text[0], want);
    snprintf(want, sizeof want, "%s/d/b.txt", tmpdir);
    assert_string_equal(j.calibration.text[1], want);
    snprintf(want, sizeof want, "%s/lit${NAME}.txt", tmpdir);
    assert_string_equal(j.calibration.text[2], want);
    snprintf(want, sizeof want, "%s/cost$5.txt", tmpdir);
    assert_string_equal(j.calibration.text[3], want);
    job_free(&j);
    p = put("env-bad.yaml", "output: o\nmodel: ${FQT_UNSET}/m\n" CALIB);
    expect_error(p, NULL, 0, "env-bad.yaml:2:8: model:", "FQT_UNSET is not set", NULL);
    p = put("env-bad2.yaml", "output: o\nmodel: ${FQT_DATA\n" CALIB);
    expect_error(p, NULL, 0, "env-bad2.yaml:2:8: model:", "${NAME}", NULL);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    const char *p;
    p = put("malformed.yaml", "model: m\noutput: [a, b\n");
    expect_error(p, NULL, 0, "malformed.yaml:", "malformed YAML", NULL);
    p = put("bits.yaml", MINIMAL CALIB "quantization:\n  method: flatquant\n  w_bits: four\n");
    expect_error(p, NULL, 0,
                 "bits.yaml:7:11: quantization.w_bits: expected an integer in 2..8 or 16, got "
                 "'four'", NULL);
    p = put("type.yaml", MINIMAL CALIB "tp: [1]\n");
    expect_error(p, NULL, 0, "type.yaml:5:5: tp: expected an integer >= 1, got a list", NULL);
    p = put("quoted.yaml", MINIMAL CALIB "tp: \"2\"\n");
    expect_error(p, NULL, 0, "quoted.yaml:5:5: tp:", "quoted", NULL);
    p = put("bool.yaml", MINIMAL CALIB "quantization:\n  w_sym: yes\n");
    expect_error(p, NULL, 0, "bool.yaml:6:10: quantization.w_sym: expected true or false", NULL);
    p = put("enum.yaml", MINIMAL CALIB "device: gpu\n");
    expect_error(p, NULL, 0, "enum.yaml:5:9: device: expected one of cpu|cuda, got 'gpu'", NULL);
    p = put("nullval.yaml", MINIMAL CALIB "quantization:\n  epochs:\n");
    expect_error(p, NULL, 0, "nullval.yaml:", "quantization.epochs: expected", NULL);
    p = put("nomodel.yaml", "output: o\n" CALIB);
    expect_error(p, NULL, 0, "nomodel.yaml:1:1: model: missing required key", NULL);
    p = put("notext.yaml", MINIMAL "calibration:\n  nsamples: 4\n");
    expect_error(p, NULL, 0, "notext.yaml:4:3: calibration.text: missing required key", NULL);
    p = put("nothing.yaml", MINIMAL);
    expect_error(p, NULL, 0, "nothing.yaml", "expected a calibration section, an eval section",
                 NULL);
    p = put("unknown.yaml", MINIMAL CALIB "quantization:\n  w_bitz: 4\n");
    expect_error(p, NULL, 0,
                 "unknown.yaml:6:3: quantization.w_bitz: unknown key (did you mean 'w_bits'?)",
                 NULL);
    p = put("unknown2.yaml", MINIMAL CALIB "colour: blue\n");
    expect_error(p, NULL, 0, "unknown2.yaml:5:1: colour: unknown key (expected one of:",
                 "quantization", NULL);
    p = put("dup.yaml", MINIMAL CALIB "tp: 1\ntp: 2\n");
    expect_error(p, NULL, 0, "dup.yaml:6:1: duplicate key 'tp' (first at line 5, column 1", NULL);
    p = put("bits0.yaml", MINIMAL CALIB "quantization:\n  a_bits: 0\n");
    expect_error(p, NULL, 0,
                 "bits0.yaml:6:11: quantization.a_bits: expected an integer in 2..8 or 16, got 0",
                 NULL);
    p = put("bits9.yaml", MINIMAL CALIB "quantization:\n  kv_bits: 9\n");
    expect_error(p, NULL, 0, "bits9.yaml:6:12: quantization.kv_bits:", "got 9", NULL);
    p = put("lr.yaml", MINIMAL CALIB "quantization:\n  lr: -1e-3\n");
    expect_error(p, NULL, 0, "lr.yaml:6:7: quantization.lr: expected a number >= 0, got -0.001",
                 NULL);
    p = put("nan.yaml", MINIMAL CALIB "quantization:\n  clip_lr: .nan\n");
    expect_error(p, NULL, 0, "nan.yaml:6:12: quantization.clip_lr:", NULL);
    p = put("epochs.yaml", MINIMAL CALIB "quantization:\n  epochs: 0\n");
    expect_error(p, NULL, 0, "epochs.yaml:6:11: quantization.epochs: expected an integer >= 1",
                 NULL);
    p = put("batch.yaml", MINIMAL "calibration:\n  text: t\n  nsamples: 10\n  batch: 4\n");
    expect_error(p, NULL, 0, "batch.yaml:6:10: calibration.batch: expected a divisor of "
                             "calibration.nsamples (10), got 4", NULL);
    p = put("seqlen.yaml", MINIMAL "calibration:\n  text: t\n  seqlen: 1\n");
    expect_error(p, NULL, 0, "seqlen.yaml:5:11: calibration.seqlen", NULL);
    p = put("tp0.yaml", MINIMAL CALIB "tp: 0\n");
    expect_error(p, NULL, 0, "tp0.yaml:5:5: tp: expected an integer >= 1, got 0", NULL);
    p = put("alias.yaml", "model: &m x\noutput: *m\n" CALIB);
    expect_error(p, NULL, 0, "alias.yaml:2:9:", "alias", NULL);
    p = put("twodocs.yaml", MINIMAL CALIB "---\n" MINIMAL);
    expect_error(p, NULL, 0, "twodocs.yaml:5:1:", "second YAML document", NULL);
    p = put("empty.yaml", "");
    expect_error(p, NULL, 0, "empty.yaml:1:1: empty file", NULL);
    p = put("list.yaml", "- a\n- b\n");
    expect_error(p, NULL, 0, "list.yaml:1:1:", "expected a mapping of job keys, got a list", NULL);
    p = put("deep.yaml", "model: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[x]]]]]]]]]]]]]]]]]]]]]"
                         "]]]]]]]]]]]]]]]]]]]\n");
    expect_error(p, NULL, 0, "deep.yaml:1:", "nesting too deep", NULL);
    p = put("evalfq.yaml", MINIMAL CALIB "quantization:\n  method: rtn\n"
                           "eval:\n  text: e\n  methods: [fp, flatquant]\n");
    expect_error(p, NULL, 0, "evalfq.yaml:9:12: eval.methods:", "method rtn", NULL);
    p = put("evaldup.yaml", MINIMAL "eval:\n  text: e\n  methods: [fp, fp]\n");
    expect_error(p, NULL, 0, "evaldup.yaml:5:17: eval.methods: 'fp' listed twice", NULL);
    p = put("emptylist.yaml", MINIMAL "calibration:\n  text: []\n");
    expect_error(p, NULL, 0, "emptylist.yaml:4:9: calibration.text:", "empty list", NULL);
    p = put("method-fp.yaml", MINIMAL CALIB "quantization:\n  method: fp\n");
    expect_error(p, NULL, 0, "method-fp.yaml:6:11: quantization.method:", NULL);
    p = put("section.yaml", MINIMAL CALIB "cache: fast\n");
    expect_error(p, NULL, 0, "section.yaml:5:8: cache: expected a mapping", NULL);
    expect_error(in_tmp("no-such.yaml"), NULL, 0, "no-such.yaml: cannot open", NULL);
    p = put("newline.yaml", MINIMAL CALIB "device: \"c\\npu\"\n");
    expect_error(p, NULL, 0, "newline.yaml:5:9: device: expected one of cpu|cuda, got 'c\\npu'",
                 NULL);
}

static void test_include_errors(void **state)
{
    (void)state;
    put("cyc/a.yaml", "include: b.yaml\nquantization:\n  epochs: 2\n");
    put("cyc/b.yaml", "include: a.yaml\n");
    const char *p = put("cyc/job.yaml", "include: a.yaml\n" MINIMAL CALIB);
    expect_error(p, NULL, 0, "cyc/b.yaml:1:10: include: include cycle", "a.yaml -> ", NULL);
    p = put("cyc/self.yaml", "include: self.yaml\n" MINIMAL CALIB);
    expect_error(p, NULL, 0, "self.yaml:1:10: include: include cycle", NULL);
    p = put("inc-missing.yaml", "include: [nope.yaml]\n" MINIMAL CALIB);
    expect_error(p, NULL, 0, "inc-missing.yaml:1:11: include: cannot find 'nope.yaml'", NULL);
    p = put("inc-map.yaml", "include: {a: 1}\n" MINIMAL CALIB);
    expect_error(p, NULL, 0, "inc-map.yaml:1:10: include: expected a recipe file name", NULL);
    put("bad-recipe.yaml", "quantization:\n  epochs: -3\n");
    p = put("inc-bad.yaml", "include: bad-recipe.yaml\n" MINIMAL CALIB);
    expect_error(p, NULL, 0, "bad-recipe.yaml:2:11: quantization.epochs", NULL);
    put("typo-recipe.yaml", "quantisation:\n  epochs: 3\n");
    p = put("inc-typo.yaml", "include: typo-recipe.yaml\n" MINIMAL CALIB);
    expect_error(p, NULL, 0, "typo-recipe.yaml:1:1: quantisation: unknown key (did you mean "
                             "'quantization'?)", NULL);
}

static void test_bad_set(void **state)
{
    (void)state;
    const char *p = put("s.yaml", MINIMAL CALIB);
    const char *a[] = {"nsamples"};
    expect_error(p, a, 1, "--set 'nsamples': expected key.path=value", NULL);
    const char *b[] = {"quantization.w_bits=four"};
    expect_error(p, b, 1,
                 "--set 'quantization.w_bits=four': quantization.w_bits: expected an integer "
                 "in 2..8 or 16, got 'four'", NULL);
    const char *c[] = {"quantization.w_bitz=4"};
    expect_error(p, c, 1, "--set 'quantization.w_bitz=4': quantization.w_bitz: unknown key "
                          "(did you mean 'w_bits'?)", NULL);
    const char *d[] = {"model.sub=1"};
    expect_error(p, d, 1, "--set 'model.sub=1': model: expected a section", NULL);
    const char *e[] = {"include=x.yaml"};
    expect_error(p, e, 1, "--set 'include=x.yaml': include: cannot be set", NULL);
    const char *f[] = {"tp={a: 1}"};
    expect_error(p, f, 1, "--set 'tp={a: 1}': tp: expected a value or a [list]", NULL);
    const char *g[] = {"eval.text=[a, b"};
    expect_error(p, g, 1, "--set 'eval.text=[a, b'", "malformed YAML", NULL);
    const char *h[] = {"quantization.lr=-1"};
    expect_error(p, h, 1, "--set 'quantization.lr=-1': quantization.lr: expected a number >= 0",
                 NULL);
    const char *i[] = {"a..b=1"};
    expect_error(p, i, 1, "--set 'a..b=1': expected key.path=value", NULL);
}

static void test_check_model(void **state)
{
    (void)state;
    const char *p = put("cm.yaml", MINIMAL CALIB "tp: 2\nquantization:\n  kv_group: 3\n");
    job j;
    assert_int_equal(job_load(p, NULL, 0, &j), FQ_OK);
    fq_error_clear();
    assert_int_equal(job_check_model(&j, 8, 64, 172), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "cm.yaml:7:13: quantization.kv_group: expected 0 or a "
                                        "divisor of the model's head dim 8, got 3"));
    j.quantization.kv_group = 4;
    assert_int_equal(job_check_model(&j, 8, 64, 172), FQ_OK);
    j.tp = 3; /* 172 is not a multiple of 3 */
    assert_int_equal(job_check_model(&j, 8, 64, 172), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "cm.yaml:5:5: tp: expected a divisor of the model's "
                                        "intermediate size 172"));
    assert_int_equal(job_check_model(&j, 0, 64, 172), FQ_ERR);
    job_free(&j);
}

static int repo_file(const char *rel, char *out, size_t cap)
{
    snprintf(out, cap, "%s", rel);
    if (access(out, R_OK) != 0)
        fail_msg("%s not found: run this test from the repository root (as `make test` does)",
                 rel);
    return 0;
}

static void test_shipped_jobs_and_recipes(void **state)
{
    (void)state;
    char path[PATH_MAX];
    setenv("FLATQ_DATA", "/shared/data", 1);
    unsetenv("FLATQ_MODELS");
    unsetenv("FLATQ_SCRATCH");
    job j;
    repo_file("jobs/demo-tiny.yaml", path, sizeof path);
    if (job_load(path, NULL, 0, &j) != FQ_OK)
        fail_msg("%s", fq_errmsg());
    assert_non_null(strstr(j.model, "/data/models/stories260K-hf"));
    assert_null(strstr(j.model, "/jobs/"));
    assert_int_equal(j.quantization.method, JOB_METHOD_FLATQUANT);
    assert_int_equal(j.quantization.epochs, 15);
    assert_int_equal(j.calibration.nsamples % j.calibration.batch, 0);
    assert_int_equal(j.eval.seqlen, 512);
    assert_int_equal(job_check_model(&j, 8, 64, 172), FQ_OK);
    job_free(&j);

    repo_file("jobs/flatq-llama-16m.yaml", path, sizeof path);
    if (job_load(path, NULL, 0, &j) != FQ_OK)
        fail_msg("%s", fq_errmsg());
    assert_string_equal(j.model, "/shared/data/models/flatq-llama-16m");
    assert_string_equal(j.calibration.text[0], "/shared/data/text/wikitext-2-tokens/valid.txt");
    assert_int_equal(j.calibration.nsamples, 128);
    assert_int_equal(j.calibration.seqlen, 2048);
    assert_int_equal(j.eval.n_methods, 5);
    job_free(&j);

    repo_file("jobs/llama-3-8b.yaml", path, sizeof path);
    const char *sets[] = {"model=/models/llama3-8b"};
    if (job_load(path, sets, 1, &j) != FQ_OK)
        fail_msg("%s", fq_errmsg());
    assert_string_equal(j.model, "/models/llama3-8b");
    assert_int_equal(j.device, JOB_DEVICE_CUDA);
    assert_int_equal(job_check_model(&j, 128, 4096, 14336), FQ_OK);
    job_free(&j);

    repo_file("jobs/llama-3-70b.yaml", path, sizeof path);
    if (job_load(path, NULL, 0, &j) != FQ_OK)
        fail_msg("%s", fq_errmsg());
    assert_int_equal(j.tp, 8);
    assert_true(j.quantization.separate_vtrans);
    assert_true(j.cache.delete_consumed);
    assert_int_equal(job_check_model(&j, 128, 8192, 28672), FQ_OK);
    job_free(&j);

    static const struct {
        const char *name;
        job_method method;
        int w, a, kv;
    } recipes[] = {{"w4a4kv4", JOB_METHOD_FLATQUANT, 4, 4, 4},
                   {"w4a16", JOB_METHOD_FLATQUANT, 4, 16, 16},
                   {"w8a8", JOB_METHOD_FLATQUANT, 8, 8, 16},
                   {"rtn", JOB_METHOD_RTN, 4, 4, 4},
                   {"quarot", JOB_METHOD_QUAROT, 4, 4, 4},
                   {"smoothrot", JOB_METHOD_SMOOTHROT, 4, 4, 4}};
    for (size_t i = 0; i < sizeof recipes / sizeof recipes[0]; i++) {
        char rel[64], abs_cfg[PATH_MAX + 80], text[PATH_MAX + 256], cwd[PATH_MAX];
        snprintf(rel, sizeof rel, "configs/%s.yaml", recipes[i].name);
        repo_file(rel, path, sizeof path);
        assert_non_null(getcwd(cwd, sizeof cwd));
        snprintf(abs_cfg, sizeof abs_cfg, "%s/%s", cwd, rel);
        snprintf(text, sizeof text, "include: %s\n" MINIMAL CALIB, abs_cfg);
        const char *p = put("recipe-job.yaml", text);
        if (job_load(p, NULL, 0, &j) != FQ_OK)
            fail_msg("%s: %s", rel, fq_errmsg());
        assert_int_equal(j.quantization.method, recipes[i].method);
        assert_int_equal(j.quantization.w_bits, recipes[i].w);
        assert_int_equal(j.quantization.a_bits, recipes[i].a);
        assert_int_equal(j.quantization.kv_bits, recipes[i].kv);
        job_free(&j);
    }
}

static char *print_to_string(const job *j)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    assert_non_null(f);
    assert_int_equal(job_print(j, f), FQ_OK);
    fclose(f);
    return buf;
}

static void test_print_round_trip(void **state)
{
    (void)state;
    const char *p = put("rt.yaml", "model: \"we\\\"ird ${X}\"\noutput: o\nseed: 5\n"
                                   "calibration:\n  text: [\"a b.txt\", c.txt]\n"
                                   "quantization:\n  lr: 0.1\n  alpha: 0.123456789012345\n"
                                   "eval:\n  text: e.txt\n  methods: [rtn, fp, flatquant]\n");
    setenv("X", "x", 1);
    job a, b;
    assert_int_equal(job_load(p, NULL, 0, &a), FQ_OK);
    assert_int_equal(a.calibration.seed, 5); /* the global seed is every seed's default */
    assert_int_equal(a.quantization.seed, 5);
    char *text = print_to_string(&a);
    assert_non_null(strstr(text, "  lr: 0.1\n"));
    unsetenv("X"); /* the printed job holds values, not references */
    if (job_load_string(text, strlen(text), "printed", &b) != FQ_OK)
        fail_msg("%s\n%s", fq_errmsg(), text);
    char *ca = NULL, *cb = NULL;
    assert_int_equal(job_canonical(&a, &ca), FQ_OK);
    assert_int_equal(job_canonical(&b, &cb), FQ_OK);
    assert_string_equal(ca, cb);
    assert_string_equal(a.model, b.model);
    assert_string_equal(a.report.dir, b.report.dir);
    assert_int_equal(b.eval.methods[0], JOB_METHOD_RTN);
    char *text2 = print_to_string(&b);
    /* identical after the header line, which names the source */
    assert_string_equal(strchr(text, '\n'), strchr(text2, '\n'));
    free(text);
    free(text2);
    free(ca);
    free(cb);
    job_free(&a);
    job_free(&b);
}

static void fingerprint_with(const char *path, const char *set, char hex[65])
{
    job j;
    const char *sets[] = {set};
    if (job_load(path, sets, set ? 1 : 0, &j) != FQ_OK)
        fail_msg("%s", fq_errmsg());
    assert_int_equal(job_fingerprint(&j, hex), FQ_OK);
    job_free(&j);
}

static void test_fingerprint(void **state)
{
    (void)state;
    const char *p = put("fp.yaml", MINIMAL CALIB "eval:\n  text: e.txt\n");
    char base[65], h[65];
    fingerprint_with(p, NULL, base);
    assert_int_equal(strlen(base), 64);
    /* the fingerprint is the sha256 of the canonical text */
    job j;
    char *canon = NULL;
    uint8_t d[32];
    char direct[65];
    assert_int_equal(job_load(p, NULL, 0, &j), FQ_OK);
    assert_int_equal(job_canonical(&j, &canon), FQ_OK);
    sha256(canon, strlen(canon), d);
    sha256_hex(d, direct);
    assert_string_equal(direct, base);
    assert_null(strstr(canon, "output"));
    free(canon);
    job_free(&j);
    /* results-relevant changes move it */
    const char *moving[] = {"quantization.lr=0.004", "quantization.epochs=14",
                            "quantization.w_bits=8", "calibration.seed=1",
                            "calibration.nsamples=64", "model=other", "tp=2",
                            "cache.dtype=fp32", "quantization.init=identity",
                            "calibration.text=u.txt", "quantization.separate_vtrans=true"};
    for (size_t i = 0; i < sizeof moving / sizeof moving[0]; i++) {
        fingerprint_with(p, moving[i], h);
        if (strcmp(h, base) == 0)
            fail_msg("fingerprint did not change with --set %s", moving[i]);
    }
    /* where things go, how they are evaluated, and on what device, do not */
    const char *still[] = {"output=elsewhere", "cache.dir=/tmp/c", "report.dir=r",
                           "device=cuda", "eval.seqlen=128", "eval.methods=[fp]",
                           "cache.delete_consumed=true", "quantization.lr=5e-3"};
    for (size_t i = 0; i < sizeof still / sizeof still[0]; i++) {
        fingerprint_with(p, still[i], h);
        if (strcmp(h, base) != 0)
            fail_msg("fingerprint changed with --set %s", still[i]);
    }
}

static void test_load_string(void **state)
{
    (void)state;
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    const char *y = MINIMAL CALIB;
    job j;
    assert_int_equal(job_load_string(y, strlen(y), "mem", &j), FQ_OK);
    char want[PATH_MAX + 8];
    snprintf(want, sizeof want, "%s/m", cwd);
    assert_string_equal(j.model, want);
    job_free(&j);
    const char *bad = "model: m\noutput: o\ncalibration:\n  text: t\n  nsamples: x\n";
    assert_int_equal(job_load_string(bad, strlen(bad), "mem", &j), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "mem:5:13: calibration.nsamples"));
    /* bytes after a NUL are not silently ignored */
    const char nul[] = "model: m\0garbage";
    assert_int_equal(job_load_string(nul, sizeof nul - 1, "nul", &j), FQ_ERR);
    /* include of something that is not a regular file fails instead of blocking */
    const char *dev = "include: /dev/zero\n" MINIMAL CALIB;
    assert_int_equal(job_load_string(dev, strlen(dev), "dev", &j), FQ_ERR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_values_and_defaults, setup, teardown),
        cmocka_unit_test(test_defaults_match_recipe),
        cmocka_unit_test_setup_teardown(test_includes_override_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_overrides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_expansion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_inputs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_include_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_set, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shipped_jobs_and_recipes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_print_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fingerprint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_string, setup, teardown),
    };
    return cmocka_run_group_tests_name("job", tests, NULL, NULL);
}
