/* job_print.c — the resolved job as YAML, its canonical form and its fingerprint.
 *
 * job_print writes YAML that job_load_string reads back to the same job (strings are
 * double-quoted with escapes, "${" is written "$${" so it is not expanded again,
 * numbers use the shortest text that round-trips), so the log of a run is itself a
 * runnable job. job_canonical is a separate, line-oriented text with a version tag:
 * printing can change for readability without invalidating every resumable output,
 * while the canonical form changes only when the meaning of a key does.
 */
#include "job.h"

#include "error.h"
#include "sha256.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *p;
    size_t n, cap;
    int failed;
} outbuf;

static void ob_printf(outbuf *b, const char *fmt, ...) FQ_PRINTF(2, 3);
static void ob_printf(outbuf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if (b->p && b->n + (size_t)n < b->cap) {
            b->n += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 1024;
        while (cap <= b->n + (size_t)n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* A YAML double-quoted string; "${" doubled so that reloading does not expand it. */
static void ob_quoted(outbuf *b, const char *s)
{
    ob_printf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            ob_printf(b, "\\%c", *p);
        else if (*p == '\n')
            ob_printf(b, "\\n");
        else if (*p == '\t')
            ob_printf(b, "\\t");
        else if (*p < 0x20 || *p == 0x7f)
            ob_printf(b, "\\x%02x", *p);
        else if (p[0] == '$' && p[1] == '{')
            ob_printf(b, "$$");
        else
            ob_printf(b, "%c", *p);
    }
    ob_printf(b, "\"");
}

/* Shortest %g text that reads back as the same double. */
static void ob_double(outbuf *b, double v)
{
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    ob_printf(b, "%s", buf);
}

static const char *bool_name(bool v) { return v ? "true" : "false"; }

static void ob_list(outbuf *b, char *const *v, int n)
{
    ob_printf(b, "[");
    for (int i = 0; i < n; i++) {
        if (i)
            ob_printf(b, ", ");
        ob_quoted(b, v[i]);
    }
    ob_printf(b, "]");
}

static const char *const scale_init_names[] = {"sq_style", "one_style"};
static const char *const init_names[] = {"random", "identity", "hadamard", "smoothrot"};
static const char *const wq_names[] = {"rtn", "gptq"};

static void print_quantization(outbuf *b, const struct job_quantization *q, const char *ind)
{
    ob_printf(b, "%smethod: %s\n", ind, job_method_name(q->method));
    ob_printf(b, "%sw_bits: %d\n%sa_bits: %d\n%skv_bits: %d\n", ind, q->w_bits, ind, q->a_bits,
              ind, q->kv_bits);
    ob_printf(b, "%sw_sym: %s\n%sa_sym: %s\n%skv_sym: %s\n", ind, bool_name(q->w_sym), ind,
              bool_name(q->a_sym), ind, bool_name(q->kv_sym));
    ob_printf(b, "%skv_group: %d\n%sepochs: %d\n%swarmup_steps: %d\n%srestarts: %d\n", ind,
              q->kv_group, ind, q->epochs, ind, q->warmup_steps, ind, q->restarts);
    const struct {
        const char *name;
        double v;
    } d[] = {{"lr", q->lr},
             {"clip_lr", q->clip_lr},
             {"lr_min", q->lr_min},
             {"weight_decay", q->weight_decay},
             {"alpha", q->alpha},
             {"clip_init", q->clip_init},
             {"smooth_alpha", q->smooth_alpha},
             {"quarot_act_clip", q->quarot_act_clip},
             {"quarot_kv_clip", q->quarot_kv_clip},
             {"gptq_damp", q->gptq_damp}};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
        ob_printf(b, "%s%s: ", ind, d[i].name);
        ob_double(b, d[i].v);
        ob_printf(b, "\n");
    }
    ob_printf(b, "%sgptq_block: %d\n%sgptq_nsamples: %d\n%sgptq_act_order: %s\n", ind,
              q->gptq_block, ind, q->gptq_nsamples, ind, bool_name(q->gptq_act_order));
    ob_printf(b, "%sgptq_clip_search: %s\n", ind, bool_name(q->gptq_clip_search));
    ob_printf(b, "%sscale_init: %s\n%sinit: %s\n%sweight_quantizer: %s\n", ind,
              scale_init_names[q->scale_init & 1], ind, init_names[q->init & 3], ind,
              wq_names[q->weight_quantizer & 1]);
    ob_printf(b, "%sdirect_inv: %s\n%sseparate_vtrans: %s\n%sshare_act_clip: %s\n", ind,
              bool_name(q->direct_inv), ind, bool_name(q->separate_vtrans), ind,
              bool_name(q->share_act_clip));
    static const char *const gpu_math_names[] = {"tf32", "fp32", "bf16"};
    ob_printf(b, "%sgpu_math: %s\n", ind, gpu_math_names[q->gpu_math % 3]);
    ob_printf(b, "%sseed: %llu\n", ind, (unsigned long long)q->seed);
}

static int job_yaml(const job *j, outbuf *b)
{
    ob_printf(b, "# flatq job, fully resolved");
    if (j->path)
        ob_printf(b, " from %s", j->path);
    ob_printf(b, "\nmodel: ");
    ob_quoted(b, j->model);
    ob_printf(b, "\noutput: ");
    ob_quoted(b, j->output);
    ob_printf(b, "\ndevice: %s\ntp: %d\n", job_device_name(j->device), j->tp);
    if (j->has_seed)
        ob_printf(b, "seed: %llu\n", (unsigned long long)j->seed);
    ob_printf(b, "cache:\n  dir: ");
    ob_quoted(b, j->cache.dir);
    ob_printf(b, "\n  dtype: %s\n  delete_consumed: %s\n", job_cache_dtype_name(j->cache.dtype),
              bool_name(j->cache.delete_consumed));
    if (j->calibrate) {
        const struct job_calibration *c = &j->calibration;
        ob_printf(b, "calibration:\n  text: ");
        ob_list(b, c->text, c->n_text);
        ob_printf(b, "\n  nsamples: %d\n  seqlen: %d\n  batch: %d\n  seed: %llu\n", c->nsamples,
                  c->seqlen, c->batch, (unsigned long long)c->seed);
    }
    ob_printf(b, "quantization:\n");
    print_quantization(b, &j->quantization, "  ");
    if (j->evaluate) {
        ob_printf(b, "eval:\n  text: ");
        ob_list(b, j->eval.text, j->eval.n_text);
        ob_printf(b, "\n  seqlen: %d\n  methods: [", j->eval.seqlen);
        for (int i = 0; i < j->eval.n_methods; i++)
            ob_printf(b, "%s%s", i ? ", " : "", job_method_name(j->eval.methods[i]));
        ob_printf(b, "]\n  max_windows: %d\n", j->eval.max_windows);
    }
    ob_printf(b, "report:\n  dir: ");
    ob_quoted(b, j->report.dir);
    ob_printf(b, "\n");
    return b->failed ? fq_error("out of memory printing the job") : FQ_OK;
}

int job_print(const job *j, FILE *out)
{
    if (!j || !out)
        return fq_error("job_print: NULL argument (expected a job and a stream)");
    outbuf b = {0};
    int rc = job_yaml(j, &b);
    if (rc == FQ_OK && fwrite(b.p, 1, b.n, out) != b.n)
        rc = fq_error("job_print: write failed (expected a writable stream)");
    free(b.p);
    return rc;
}

int job_canonical(const job *j, char **text)
{
    if (!j || !text)
        return fq_error("job_canonical: NULL argument (expected a job and an output)");
    *text = NULL;
    outbuf b = {0};
    const struct job_calibration *c = &j->calibration;
    const struct job_quantization *q = &j->quantization;
    /* v2: calibration.text is read as stripped rows joined with "\n\n" (ALGORITHM §4.1);
     * outputs calibrated on v1's raw text are not resumed into */
    ob_printf(&b, "flatq-job-canonical v2\nmodel=");
    ob_quoted(&b, j->model);
    ob_printf(&b, "\ntp=%d\ncache.dtype=%s\ncalibration.text=", j->tp,
              job_cache_dtype_name(j->cache.dtype));
    ob_list(&b, c->text, c->n_text);
    ob_printf(&b, "\ncalibration.nsamples=%d\ncalibration.seqlen=%d\ncalibration.batch=%d\n"
                  "calibration.seed=%llu\n",
              c->nsamples, c->seqlen, c->batch, (unsigned long long)c->seed);
    ob_printf(&b, "quantization.method=%s\nquantization.bits=%d,%d,%d\nquantization.sym=%d,%d,%d\n"
                  "quantization.kv_group=%d\nquantization.epochs=%d\n"
                  "quantization.warmup_steps=%d\nquantization.gptq_block=%d\n",
              job_method_name(q->method), q->w_bits, q->a_bits, q->kv_bits, q->w_sym, q->a_sym,
              q->kv_sym, q->kv_group, q->epochs, q->warmup_steps, q->gptq_block);
    ob_printf(&b, "quantization.lr=%.17g\nquantization.clip_lr=%.17g\nquantization.lr_min=%.17g\n"
                  "quantization.weight_decay=%.17g\nquantization.alpha=%.17g\n"
                  "quantization.clip_init=%.17g\nquantization.smooth_alpha=%.17g\n"
                  "quantization.quarot_act_clip=%.17g\nquantization.quarot_kv_clip=%.17g\n"
                  "quantization.gptq_damp=%.17g\n",
              q->lr, q->clip_lr, q->lr_min, q->weight_decay, q->alpha, q->clip_init,
              q->smooth_alpha, q->quarot_act_clip, q->quarot_kv_clip, q->gptq_damp);
    ob_printf(&b, "quantization.scale_init=%s\nquantization.init=%s\n"
                  "quantization.weight_quantizer=%s\nquantization.direct_inv=%d\n"
                  "quantization.separate_vtrans=%d\nquantization.share_act_clip=%d\n"
                  "quantization.seed=%llu\n",
              scale_init_names[q->scale_init & 1], init_names[q->init & 3],
              wq_names[q->weight_quantizer & 1], q->direct_inv, q->separate_vtrans,
              q->share_act_clip, (unsigned long long)q->seed);
    /* only when used: jobs without it keep their canonical form (and resumable outputs) */
    if (q->restarts != 1)
        ob_printf(&b, "quantization.restarts=%d\n", q->restarts);
    if (q->gptq_nsamples != 0)
        ob_printf(&b, "quantization.gptq_nsamples=%d\n", q->gptq_nsamples);
    if (q->gptq_act_order)
        ob_printf(&b, "quantization.gptq_act_order=1\n");
    if (q->gptq_clip_search)
        ob_printf(&b, "quantization.gptq_clip_search=1\n");
    if (b.failed) {
        free(b.p);
        return fq_error("out of memory building the job's canonical form");
    }
    *text = b.p;
    return FQ_OK;
}

int job_fingerprint(const job *j, char hex[65])
{
    if (!hex)
        return fq_error("job_fingerprint: NULL output (expected 65 bytes)");
    char *text = NULL;
    if (job_canonical(j, &text) != FQ_OK)
        return FQ_ERR;
    uint8_t d[32];
    sha256(text, strlen(text), d);
    sha256_hex(d, hex);
    free(text);
    return FQ_OK;
}
