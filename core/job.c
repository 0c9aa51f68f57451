/* job.c — the job struct's defaults, its validation and its lifetime (job.h).
 *
 * Validation is separate from parsing: the parser checks types and names (it sees the
 * text), job_validate checks ranges and relations between keys (it sees the values),
 * so a job edited by a program (the CLI's non-job mode, --set) goes through the same
 * rules. Each message names where the offending value was written, via the origins
 * the loader recorded.
 */
#include "job.h"

#include "error.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char *const method_names[JOB_METHOD_COUNT] = {"fp", "rtn", "quarot", "smoothrot",
                                                           "flatquant"};

const char *job_method_name(job_method m)
{
    return (unsigned)m < JOB_METHOD_COUNT ? method_names[m] : "?";
}

const char *job_device_name(job_device d) { return d == JOB_DEVICE_CUDA ? "cuda" : "cpu"; }

const char *job_cache_dtype_name(job_cache_dtype d)
{
    return d == JOB_CACHE_FP16 ? "fp16" : d == JOB_CACHE_FP32 ? "fp32" : "bf16";
}

int job_defaults(job *j)
{
    if (!j)
        return fq_error("job_defaults: NULL job (expected a job to fill)");
    memset(j, 0, sizeof *j);
    j->device = JOB_DEVICE_CPU;
    j->tp = 1;
    j->cache.dtype = JOB_CACHE_BF16;
    j->calibration.nsamples = 128;
    j->calibration.seqlen = 2048;
    j->calibration.batch = 4;
    j->calibration.seed = 0;
    struct job_quantization *q = &j->quantization;
    q->method = JOB_METHOD_FLATQUANT;
    q->w_bits = q->a_bits = q->kv_bits = 4;
    q->w_sym = q->a_sym = true;
    q->kv_sym = false;
    q->kv_group = 0;
    q->epochs = 15;
    q->restarts = 1;
    q->warmup_steps = 0;
    q->lr = 5e-3;
    q->clip_lr = 5e-2;
    q->lr_min = 5e-6;
    q->weight_decay = 0.01;
    q->alpha = 0.3;
    q->clip_init = 4.0;
    q->smooth_alpha = 0.5;
    q->quarot_act_clip = 0.9;
    q->quarot_kv_clip = 0.95;
    q->scale_init = JOB_SCALE_SQ_STYLE;
    q->init = JOB_INIT_RANDOM;
    q->weight_quantizer = JOB_WQ_RTN;
    q->gpu_math = JOB_GPU_MATH_TF32;
    q->gptq_damp = 0.01;
    q->gptq_block = 128;
    q->gptq_nsamples = 0;
    q->gptq_act_order = false;
    q->gptq_clip_search = false;
    q->seed = 0;
    j->eval.seqlen = 2048;
    j->eval.methods[0] = JOB_METHOD_FP;
    j->eval.methods[1] = JOB_METHOD_FLATQUANT;
    j->eval.n_methods = 2;
    j->eval.max_windows = 0;
    return FQ_OK;
}

static void free_list(char **v, int n)
{
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void job_free(job *j)
{
    if (!j)
        return;
    free(j->path);
    free(j->model);
    free(j->output);
    free(j->cache.dir);
    free(j->report.dir);
    free_list(j->calibration.text, j->calibration.n_text);
    free_list(j->eval.text, j->eval.n_text);
    for (int i = 0; i < j->n_origins; i++) {
        free(j->origins[i].key);
        free(j->origins[i].where);
    }
    free(j->origins);
    memset(j, 0, sizeof *j);
}

const char *job_where(const job *j, const char *key)
{
    if (j && key)
        for (int i = j->n_origins - 1; i >= 0; i--)
            if (strcmp(j->origins[i].key, key) == 0)
                return j->origins[i].where;
    return "default";
}

/* "WHERE: KEY: message" — the shape of every job error. */
static int job_bad(const job *j, const char *key, const char *fmt, ...) FQ_PRINTF(3, 4);
static int job_bad(const job *j, const char *key, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *w = job_where(j, key);
    if (strcmp(w, "default") == 0)
        return fq_error("%s: %s: %s (the default value)", j->path ? j->path : "job", key, msg);
    return fq_error("%s: %s: %s", w, key, msg);
}

static int bits_ok(int b) { return (b >= 2 && b <= 8) || b == JOB_BITS_NONE; }

#define CHECK_INT(cond, key, val, expect)                                                  \
    do {                                                                                   \
        if (!(cond))                                                                       \
            return job_bad(j, key, "expected %s, got %d", expect, (int)(val));             \
    } while (0)
#define CHECK_DBL(cond, key, val, expect)                                                  \
    do {                                                                                   \
        if (!(isfinite(val) && (cond)))                                                    \
            return job_bad(j, key, "expected %s, got %g", expect, (double)(val));          \
    } while (0)

int job_validate(const job *j)
{
    if (!j)
        return fq_error("job_validate: NULL job (expected a loaded job)");
    const struct job_quantization *q = &j->quantization;
    if (!j->calibrate && !j->evaluate)
        return fq_error("%s: expected a calibration section, an eval section or both, got "
                        "neither", j->path ? j->path : "job");
    CHECK_INT(j->tp >= 1 && j->tp <= 4096, "tp", j->tp, "an integer >= 1");
    CHECK_INT((unsigned)q->method < JOB_METHOD_COUNT && q->method != JOB_METHOD_FP,
              "quantization.method", q->method, "flatquant|rtn|quarot|smoothrot");
    CHECK_INT(bits_ok(q->w_bits), "quantization.w_bits", q->w_bits, "an integer in 2..8 or 16");
    CHECK_INT(bits_ok(q->a_bits), "quantization.a_bits", q->a_bits, "an integer in 2..8 or 16");
    CHECK_INT(bits_ok(q->kv_bits), "quantization.kv_bits", q->kv_bits,
              "an integer in 2..8 or 16");
    CHECK_INT(q->kv_group >= 0, "quantization.kv_group", q->kv_group,
              "0 (one group per head) or a positive divisor of the head dim");
    CHECK_INT(q->epochs >= 1, "quantization.epochs", q->epochs, "an integer >= 1");
    CHECK_INT(q->restarts >= 1 && q->restarts <= 64, "quantization.restarts", q->restarts,
              "an integer in 1..64");
    CHECK_INT(q->warmup_steps >= 0, "quantization.warmup_steps", q->warmup_steps,
              "an integer >= 0");
    CHECK_INT(q->gptq_block >= 1, "quantization.gptq_block", q->gptq_block, "an integer >= 1");
    CHECK_INT(q->gptq_nsamples >= 0, "quantization.gptq_nsamples", q->gptq_nsamples,
              "an integer >= 0 (0: every calibration window)");
    CHECK_DBL(q->lr >= 0, "quantization.lr", q->lr, "a number >= 0");
    CHECK_DBL(q->clip_lr >= 0, "quantization.clip_lr", q->clip_lr, "a number >= 0");
    CHECK_DBL(q->lr_min >= 0, "quantization.lr_min", q->lr_min, "a number >= 0");
    CHECK_DBL(q->weight_decay >= 0, "quantization.weight_decay", q->weight_decay,
              "a number >= 0");
    CHECK_DBL(q->alpha >= 0 && q->alpha <= 1, "quantization.alpha", q->alpha,
              "a number in [0, 1]");
    CHECK_DBL(q->smooth_alpha >= 0 && q->smooth_alpha <= 1, "quantization.smooth_alpha",
              q->smooth_alpha, "a number in [0, 1]");
    CHECK_DBL(1, "quantization.clip_init", q->clip_init, "a finite number");
    CHECK_DBL(q->quarot_act_clip > 0 && q->quarot_act_clip <= 1, "quantization.quarot_act_clip",
              q->quarot_act_clip, "a number in (0, 1]");
    CHECK_DBL(q->quarot_kv_clip > 0 && q->quarot_kv_clip <= 1, "quantization.quarot_kv_clip",
              q->quarot_kv_clip, "a number in (0, 1]");
    CHECK_DBL(q->gptq_damp >= 0, "quantization.gptq_damp", q->gptq_damp, "a number >= 0");
    if (q->weight_quantizer == JOB_WQ_GPTQ && q->method != JOB_METHOD_FLATQUANT)
        return job_bad(j, "quantization.weight_quantizer",
                       "expected rtn with method %s (the GPTQ pass runs on FlatQuant layers "
                       "only), got gptq", job_method_name(q->method));
    if (q->weight_quantizer == JOB_WQ_GPTQ && q->w_bits == JOB_BITS_NONE)
        return job_bad(j, "quantization.weight_quantizer",
                       "expected rtn when w_bits is 16 (no weight quantization), got gptq");
    if (j->calibrate) {
        const struct job_calibration *c = &j->calibration;
        if (c->n_text < 1)
            return job_bad(j, "calibration.text", "missing (expected a text file or a list "
                                                  "of them)");
        CHECK_INT(c->nsamples >= 1, "calibration.nsamples", c->nsamples, "an integer >= 1");
        CHECK_INT(c->seqlen >= 2, "calibration.seqlen", c->seqlen, "an integer >= 2");
        CHECK_INT(c->batch >= 1, "calibration.batch", c->batch, "an integer >= 1");
        if (c->nsamples % c->batch != 0)
            return job_bad(j, "calibration.batch",
                           "expected a divisor of calibration.nsamples (%d), got %d",
                           c->nsamples, c->batch);
    }
    if (j->evaluate) {
        if (j->eval.n_text < 1)
            return job_bad(j, "eval.text", "missing (expected a text file or a list of them)");
        CHECK_INT(j->eval.seqlen >= 2, "eval.seqlen", j->eval.seqlen, "an integer >= 2");
        CHECK_INT(j->eval.max_windows >= 0, "eval.max_windows", j->eval.max_windows,
                  "an integer >= 0 (0 = all windows)");
        CHECK_INT(j->eval.n_methods >= 1 && j->eval.n_methods <= JOB_METHOD_COUNT,
                  "eval.methods", j->eval.n_methods, "a list of 1 to 5 methods");
        for (int i = 0; i < j->eval.n_methods; i++) {
            job_method m = j->eval.methods[i];
            CHECK_INT((unsigned)m < JOB_METHOD_COUNT, "eval.methods", m,
                      "fp|rtn|quarot|smoothrot|flatquant");
            if (m == JOB_METHOD_FLATQUANT && q->method != JOB_METHOD_FLATQUANT)
                return job_bad(j, "eval.methods",
                               "expected flatquant only when quantization.method is flatquant "
                               "(it evaluates this job's calibrated output), got it with "
                               "method %s", job_method_name(q->method));
        }
    }
    return FQ_OK;
}

int job_check_model(const job *j, int head_dim, int hidden, int intermediate)
{
    if (!j)
        return fq_error("job_check_model: NULL job (expected a loaded job)");
    if (head_dim < 1 || hidden < 1 || intermediate < 1 || hidden % head_dim != 0)
        return fq_error("job_check_model: model shape head_dim %d, hidden %d, intermediate %d "
                        "(expected positive sizes, hidden a multiple of head_dim)",
                        head_dim, hidden, intermediate);
    const struct job_quantization *q = &j->quantization;
    if (q->kv_bits != JOB_BITS_NONE && q->kv_group != 0 && head_dim % q->kv_group != 0)
        return job_bad(j, "quantization.kv_group",
                       "expected 0 or a divisor of the model's head dim %d, got %d", head_dim,
                       q->kv_group);
    if (intermediate % j->tp != 0)
        return job_bad(j, "tp", "expected a divisor of the model's intermediate size %d (the "
                                "down_proj transform is split into tp blocks), got %d",
                       intermediate, j->tp);
    return FQ_OK;
}
