/* job_schema.c — the job schema: tree (yaml_tree.h) → typed job struct.
 *
 * Every key is looked up by name; unknown keys are refused (with a "did you mean" when
 * a known key is within edit distance 2), values are type-checked and converted,
 * strings get ${ENV} expansion and paths are resolved against the directory of the
 * file they came from (job_paths.h). Only types and names are checked here; ranges
 * and relations between keys are job_validate's (job.c), so a job built by a program
 * meets the same rules. Each converted key records where it was written (job_where).
 * Null means "absent" only for sections ("cache:" alone) and for optional strings and
 * seeds; "epochs:" with no value is an error, not a silent default.
 */
#include "job_schema.h"

#include "error.h"
#include "job_paths.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "WHERE: KEY: message" at a node. */
static int at(const yt_node *n, const char *key, const char *fmt, ...) FQ_PRINTF(3, 4);
static int at(const yt_node *n, const char *key, const char *fmt, ...)
{
    char where[1200], msg[1024];
    yt_where(n, where, sizeof where);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fq_error("%s: %s: %s", where, key, msg);
}

typedef struct {
    job *j;
    char key[256]; /* full key path of the value being converted */
} conv;

static const char *full_key(conv *c, const char *prefix, const char *name)
{
    if (prefix && *prefix)
        snprintf(c->key, sizeof c->key, "%s.%s", prefix, name);
    else
        snprintf(c->key, sizeof c->key, "%s", name);
    return c->key;
}

static int record(conv *c, const char *key, const yt_node *n)
{
    char where[1200], clean[1200];
    yt_where(n, where, sizeof where);
    job_one_line(where, clean, sizeof clean);
    job *j = c->j;
    job_origin *o = realloc(j->origins, (size_t)(j->n_origins + 1) * sizeof *o);
    if (!o)
        return fq_error("out of memory recording where %s was set", key);
    j->origins = o;
    o[j->n_origins].key = fq_strdup(key);
    o[j->n_origins].where = fq_strdup(clean);
    if (!o[j->n_origins].key || !o[j->n_origins].where) {
        free(o[j->n_origins].key);
        free(o[j->n_origins].where);
        return FQ_ERR;
    }
    j->n_origins++;
    return FQ_OK;
}

static int edit_distance(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na > 40 || nb > 40)
        return 99;
    int d[41][41];
    for (size_t i = 0; i <= na; i++)
        d[i][0] = (int)i;
    for (size_t k = 0; k <= nb; k++)
        d[0][k] = (int)k;
    for (size_t i = 1; i <= na; i++)
        for (size_t k = 1; k <= nb; k++) {
            int best = d[i - 1][k - 1] + (a[i - 1] != b[k - 1]);
            if (d[i - 1][k] + 1 < best)
                best = d[i - 1][k] + 1;
            if (d[i][k - 1] + 1 < best)
                best = d[i][k - 1] + 1;
            d[i][k] = best;
        }
    return d[na][nb];
}

static int check_keys(conv *c, const yt_node *map, const char *prefix, const char *const *known)
{
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        const yt_node *k = map->items[i];
        int ok = 0;
        for (const char *const *p = known; *p && !ok; p++)
            ok = strcmp(*p, k->text) == 0;
        if (ok)
            continue;
        const char *best = NULL;
        int bestd = 3;
        for (const char *const *p = known; *p; p++) {
            int dist = edit_distance(k->text, *p);
            if (dist < bestd) {
                bestd = dist;
                best = *p;
            }
        }
        char list[1024] = "";
        size_t off = 0;
        for (const char *const *p = known; *p && off < sizeof list; p++)
            off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", p == known ? "" : ", ",
                                    *p);
        const char *key = full_key(c, prefix, k->text);
        if (best)
            return at(k, key, "unknown key (did you mean '%s'?)", best);
        return at(k, key, "unknown key (expected one of: %s)", list);
    }
    return FQ_OK;
}

/* Value node of NAME in MAP, or NULL when absent. */
static const yt_node *field(const yt_node *map, const char *name)
{
    return yt_map_get(map, name, NULL);
}

/* A scalar that is not null ("epochs:" with nothing is an error, not the default). */
static int want_scalar(const yt_node *n, const char *key, const char *expect)
{
    if (n->kind != YT_SCALAR || yt_is_null(n))
        return at(n, key, "expected %s, got %s", expect, yt_kind_name(n));
    return FQ_OK;
}

static int parse_ll(const yt_node *n, const char *key, const char *expect, long long lo,
                    long long hi, long long *out)
{
    if (want_scalar(n, key, expect) != FQ_OK)
        return FQ_ERR;
    const char *s = n->text;
    const char *d = s + (*s == '+' || *s == '-');
    int digits = *d != '\0';
    for (const char *p = d; *p; p++)
        digits &= isdigit((unsigned char)*p) != 0;
    if (n->quoted || !digits)
        return at(n, key, "expected %s, got '%.80s'%s", expect, s,
                  n->quoted ? " (quoted, so a string)" : "");
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE || v < lo || v > hi)
        return at(n, key, "expected %s, got %.80s (out of range)", expect, s);
    *out = v;
    return FQ_OK;
}

static int get_int(conv *c, const yt_node *map, const char *prefix, const char *name,
                   const char *expect, int *out)
{
    const yt_node *n = field(map, name);
    if (!n)
        return FQ_OK;
    const char *key = full_key(c, prefix, name);
    long long v;
    if (parse_ll(n, key, expect, INT_MIN, INT_MAX, &v) != FQ_OK)
        return FQ_ERR;
    *out = (int)v;
    return record(c, key, n);
}

static int get_seed(conv *c, const yt_node *map, const char *prefix, const char *name,
                    uint64_t *out, int *given)
{
    const yt_node *n = field(map, name);
    if (yt_is_null(n))
        n = NULL; /* "seed: null": not given */
    if (given)
        *given = n != NULL;
    if (!n)
        return FQ_OK;
    const char *key = full_key(c, prefix, name);
    long long v;
    if (parse_ll(n, key, "an integer seed >= 0", 0, LLONG_MAX, &v) != FQ_OK)
        return FQ_ERR;
    *out = (uint64_t)v;
    return record(c, key, n);
}

static int get_double(conv *c, const yt_node *map, const char *prefix, const char *name,
                      const char *expect, double *out)
{
    const yt_node *n = field(map, name);
    if (!n)
        return FQ_OK;
    const char *key = full_key(c, prefix, name);
    if (want_scalar(n, key, expect) != FQ_OK)
        return FQ_ERR;
    const char *s = n->text;
    int ok = !n->quoted && *s;
    for (const char *p = s; *p && ok; p++)
        ok = isdigit((unsigned char)*p) || strchr("+-.eE", *p);
    char *end = NULL;
    double v = ok ? strtod(s, &end) : 0;
    if (!ok || *end || end == s || !isfinite(v))
        return at(n, key, "expected %s, got '%.80s'%s", expect, s,
                  n->quoted ? " (quoted, so a string)" : "");
    *out = v;
    return record(c, key, n);
}

static int get_bool(conv *c, const yt_node *map, const char *prefix, const char *name,
                    bool *out)
{
    const yt_node *n = field(map, name);
    if (!n)
        return FQ_OK;
    const char *key = full_key(c, prefix, name);
    if (want_scalar(n, key, "true or false") != FQ_OK)
        return FQ_ERR;
    const char *s = n->text;
    if (!n->quoted && (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")))
        *out = true;
    else if (!n->quoted && (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")))
        *out = false;
    else
        return at(n, key, "expected true or false, got '%.80s'", s);
    return record(c, key, n);
}

/* NAMES is a NULL-terminated list; the index found is stored in *out. */
static int enum_value(const yt_node *n, const char *key, const char *const *names, int *out)
{
    char list[256] = "";
    size_t off = 0;
    for (const char *const *p = names; *p && off < sizeof list; p++)
        off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", p == names ? "" : "|", *p);
    if (want_scalar(n, key, list) != FQ_OK)
        return FQ_ERR;
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], n->text) == 0) {
            *out = i;
            return FQ_OK;
        }
    return at(n, key, "expected one of %s, got '%.80s'", list, n->text);
}

static int get_enum(conv *c, const yt_node *map, const char *prefix, const char *name,
                    const char *const *names, int *out)
{
    const yt_node *n = field(map, name);
    if (!n)
        return FQ_OK;
    const char *key = full_key(c, prefix, name);
    if (enum_value(n, key, names, out) != FQ_OK)
        return FQ_ERR;
    return record(c, key, n);
}

/* A string with ${ENV} expanded; a path is then made absolute (job_paths.h). */
static int string_value(const yt_node *n, const char *key, const char *expect, int is_path,
                        char **out)
{
    *out = NULL;
    if (n->kind != YT_SCALAR || yt_is_null(n))
        return at(n, key, "expected %s, got %s", expect, yt_kind_name(n));
    char *s = NULL, where[1200];
    int env_first = 0;
    yt_where(n, where, sizeof where);
    if (job_expand_env(n->text, &s, &env_first) != FQ_OK)
        return fq_error_wrap("%s: %s", where, key);
    if (!is_path) {
        *out = s;
        return FQ_OK;
    }
    if (!*s) {
        free(s);
        return at(n, key, "expected %s, got an empty string", expect);
    }
    int rc = job_resolve_path(env_first ? NULL : n->src->dir, s, out);
    free(s);
    return rc == FQ_OK ? FQ_OK : fq_error_wrap("%s: %s", where, key);
}

static int get_path(conv *c, const yt_node *map, const char *prefix, const char *name,
                    int required, const char *expect, char **out)
{
    const char *key = full_key(c, prefix, name);
    yt_node *kn = NULL;
    const yt_node *n = yt_map_get(map, name, &kn);
    if (!n || (yt_is_null(n) && !required)) {
        if (required)
            return at(map, key, "missing required key (expected %s)", expect);
        return FQ_OK;
    }
    char *s = NULL;
    if (string_value(n, key, expect, 1, &s) != FQ_OK)
        return FQ_ERR;
    free(*out);
    *out = s;
    return record(c, key, n);
}

static int get_path_list(conv *c, const yt_node *map, const char *prefix, const char *name,
                         char ***out, int *count)
{
    const char *expect = "a text file or a list of text files";
    const char *key = full_key(c, prefix, name);
    const yt_node *n = yt_map_get(map, name, NULL);
    if (!n)
        return at(map, key, "missing required key (expected %s)", expect);
    if (yt_is_null(n))
        return at(n, key, "expected %s, got nothing", expect);
    if (n->kind == YT_MAP)
        return at(n, key, "expected %s, got a mapping", expect);
    size_t cnt = n->kind == YT_SEQ ? n->n : 1;
    if (cnt == 0)
        return at(n, key, "expected %s, got an empty list", expect);
    if (cnt > 4096)
        return at(n, key, "expected at most 4096 files, got %zu", cnt);
    char **v = fq_calloc(cnt, sizeof *v, "file list");
    if (!v)
        return FQ_ERR;
    for (size_t i = 0; i < cnt; i++)
        if (string_value(n->kind == YT_SEQ ? n->items[i] : n, key, "a text file name", 1,
                         &v[i]) != FQ_OK) {
            for (size_t k = 0; k < i; k++)
                free(v[k]);
            free(v);
            return FQ_ERR;
        }
    for (int i = 0; i < *count; i++)
        free((*out)[i]);
    free(*out);
    *out = v;
    *count = (int)cnt;
    return record(c, key, n);
}

static const char *const method_names[] = {"fp", "rtn", "quarot", "smoothrot", "flatquant", NULL};
static const char *const quant_method_names[] = {"-", "rtn", "quarot", "smoothrot", "flatquant",
                                                 NULL};

static int get_methods(conv *c, const yt_node *map, job *j)
{
    const yt_node *n = field(map, "methods");
    if (!n)
        return FQ_OK;
    const char *key = full_key(c, "eval", "methods");
    if (n->kind == YT_MAP)
        return at(n, key, "expected a list of fp|rtn|quarot|smoothrot|flatquant, got a mapping");
    size_t cnt = n->kind == YT_SEQ ? n->n : 1;
    if (cnt == 0)
        return at(n, key, "expected at least one of fp|rtn|quarot|smoothrot|flatquant, got an "
                          "empty list");
    int seen[JOB_METHOD_COUNT] = {0};
    j->eval.n_methods = 0;
    for (size_t i = 0; i < cnt; i++) {
        const yt_node *e = n->kind == YT_SEQ ? n->items[i] : n;
        int m;
        if (enum_value(e, key, method_names, &m) != FQ_OK)
            return FQ_ERR;
        if (seen[m]++)
            return at(e, key, "'%s' listed twice (expected each method once)", e->text);
        j->eval.methods[j->eval.n_methods++] = (job_method)m;
    }
    return record(c, key, n);
}

/* A section's mapping; absent → NULL; a plain null ("cache:") counts as empty. */
static int section(const yt_node *root, const char *name, const yt_node **out, int *present)
{
    const yt_node *n = yt_map_get(root, name, NULL);
    *out = NULL;
    *present = n != NULL;
    if (!n || yt_is_null(n))
        return FQ_OK;
    if (n->kind != YT_MAP)
        return at(n, name, "expected a mapping of %s keys, got %s", name, yt_kind_name(n));
    *out = n;
    return FQ_OK;
}

static const char *const top_keys[] = {"include", "model", "output", "device", "tp", "seed",
                                       "cache", "calibration", "quantization", "eval",
                                       "report", NULL};
static const char *const cache_keys[] = {"dir", "dtype", "delete_consumed", NULL};
static const char *const calib_keys[] = {"text", "nsamples", "seqlen", "seed", "batch", NULL};
static const char *const quant_keys[] = {
    "method", "w_bits", "a_bits", "kv_bits", "w_sym", "a_sym", "kv_sym", "kv_group", "epochs", "restarts",
    "lr", "clip_lr", "lr_min", "weight_decay", "warmup_steps", "alpha", "clip_init",
    "scale_init", "init", "weight_quantizer", "gptq_damp", "gptq_block", "gptq_nsamples",
    "gptq_act_order", "gptq_clip_search", "direct_inv",
    "separate_vtrans", "share_act_clip", "smooth_alpha", "quarot_act_clip", "quarot_kv_clip",
    "gpu_math", "seed", NULL};
static const char *const eval_keys[] = {"text", "seqlen", "methods", "max_windows", NULL};
static const char *const report_keys[] = {"dir", NULL};

#define BITS "an integer in 2..8 or 16"

static int convert_quantization(conv *c, const yt_node *q, job *j)
{
    static const char *const scale_names[] = {"sq_style", "one_style", NULL};
    static const char *const init_names[] = {"random", "identity", "hadamard", "smoothrot",
                                             NULL};
    static const char *const wq_names[] = {"rtn", "gptq", NULL};
    struct job_quantization *z = &j->quantization;
    int m = (int)z->method, e;
    const char *p = "quantization";
    if (check_keys(c, q, p, quant_keys) != FQ_OK ||
        get_enum(c, q, p, "method", quant_method_names, &m) != FQ_OK)
        return FQ_ERR;
    z->method = (job_method)m;
    if (get_int(c, q, p, "w_bits", BITS, &z->w_bits) || get_int(c, q, p, "a_bits", BITS, &z->a_bits) ||
        get_int(c, q, p, "kv_bits", BITS, &z->kv_bits) ||
        get_bool(c, q, p, "w_sym", &z->w_sym) || get_bool(c, q, p, "a_sym", &z->a_sym) ||
        get_bool(c, q, p, "kv_sym", &z->kv_sym) ||
        get_int(c, q, p, "kv_group", "an integer >= 0", &z->kv_group) ||
        get_int(c, q, p, "epochs", "an integer >= 1", &z->epochs) ||
        get_int(c, q, p, "restarts", "an integer in 1..64", &z->restarts) ||
        get_int(c, q, p, "warmup_steps", "an integer >= 0", &z->warmup_steps) ||
        get_double(c, q, p, "lr", "a number >= 0", &z->lr) ||
        get_double(c, q, p, "clip_lr", "a number >= 0", &z->clip_lr) ||
        get_double(c, q, p, "lr_min", "a number >= 0", &z->lr_min) ||
        get_double(c, q, p, "weight_decay", "a number >= 0", &z->weight_decay) ||
        get_double(c, q, p, "alpha", "a number in [0, 1]", &z->alpha) ||
        get_double(c, q, p, "clip_init", "a number", &z->clip_init) ||
        get_double(c, q, p, "smooth_alpha", "a number in [0, 1]", &z->smooth_alpha) ||
        get_double(c, q, p, "quarot_act_clip", "a number in (0, 1]", &z->quarot_act_clip) ||
        get_double(c, q, p, "quarot_kv_clip", "a number in (0, 1]", &z->quarot_kv_clip) ||
        get_double(c, q, p, "gptq_damp", "a number >= 0", &z->gptq_damp) ||
        get_int(c, q, p, "gptq_block", "an integer >= 1", &z->gptq_block) ||
        get_int(c, q, p, "gptq_nsamples", "an integer >= 0", &z->gptq_nsamples) ||
        get_bool(c, q, p, "direct_inv", &z->direct_inv) ||
        get_bool(c, q, p, "gptq_act_order", &z->gptq_act_order) ||
        get_bool(c, q, p, "gptq_clip_search", &z->gptq_clip_search) ||
        get_bool(c, q, p, "separate_vtrans", &z->separate_vtrans) ||
        get_bool(c, q, p, "share_act_clip", &z->share_act_clip) ||
        get_seed(c, q, p, "seed", &z->seed, NULL))
        return FQ_ERR;
    e = (int)z->scale_init;
    if (get_enum(c, q, p, "scale_init", scale_names, &e) != FQ_OK)
        return FQ_ERR;
    z->scale_init = (job_scale_init)e;
    e = (int)z->init;
    if (get_enum(c, q, p, "init", init_names, &e) != FQ_OK)
        return FQ_ERR;
    z->init = (job_init)e;
    e = (int)z->weight_quantizer;
    if (get_enum(c, q, p, "weight_quantizer", wq_names, &e) != FQ_OK)
        return FQ_ERR;
    z->weight_quantizer = (job_weight_quantizer)e;
    static const char *const gpu_math_names[] = {"tf32", "fp32", "bf16", NULL};
    e = (int)z->gpu_math;
    if (get_enum(c, q, p, "gpu_math", gpu_math_names, &e) != FQ_OK)
        return FQ_ERR;
    z->gpu_math = (job_gpu_math)e;
    return FQ_OK;
}

static int subdir(const char *parent, const char *name, char **out)
{
    size_t n = strlen(parent) + strlen(name) + 2;
    *out = fq_malloc(n, "directory path");
    if (!*out)
        return FQ_ERR;
    snprintf(*out, n, "%s%s%s", parent, strcmp(parent, "/") ? "/" : "", name);
    return FQ_OK;
}

int job_from_tree(const yt_node *root, job *j)
{
    static const char *const device_names[] = {"cpu", "cuda", NULL};
    static const char *const dtype_names[] = {"bf16", "fp16", "fp32", NULL};
    conv cv = {.j = j};
    conv *c = &cv;
    const yt_node *sec;
    int present, e;
    if (check_keys(c, root, "", top_keys) != FQ_OK ||
        get_path(c, root, "", "model", 1, "the model directory", &j->model) != FQ_OK ||
        get_path(c, root, "", "output", 1, "the output directory", &j->output) != FQ_OK ||
        get_int(c, root, "", "tp", "an integer >= 1", &j->tp) != FQ_OK)
        return FQ_ERR;
    e = (int)j->device;
    if (get_enum(c, root, "", "device", device_names, &e) != FQ_OK)
        return FQ_ERR;
    j->device = (job_device)e;
    int has_seed = 0;
    if (get_seed(c, root, "", "seed", &j->seed, &has_seed) != FQ_OK)
        return FQ_ERR;
    j->has_seed = has_seed;
    if (has_seed) {
        /* the global seed is the default of every other seed */
        j->calibration.seed = j->quantization.seed = j->seed;
        const char *w = job_where(j, "seed");
        for (int i = 0; i < 2; i++) {
            job_origin *o = realloc(j->origins, (size_t)(j->n_origins + 1) * sizeof *o);
            if (!o)
                return fq_error("out of memory recording seeds");
            j->origins = o;
            o[j->n_origins].key = fq_strdup(i ? "quantization.seed" : "calibration.seed");
            o[j->n_origins].where = fq_strdup(w);
            j->n_origins++;
            if (!o[j->n_origins - 1].key || !o[j->n_origins - 1].where)
                return FQ_ERR;
        }
    }

    if (section(root, "cache", &sec, &present) != FQ_OK)
        return FQ_ERR;
    if (sec) {
        bool del = j->cache.delete_consumed;
        e = (int)j->cache.dtype;
        if (check_keys(c, sec, "cache", cache_keys) != FQ_OK ||
            get_path(c, sec, "cache", "dir", 0, "the cache directory", &j->cache.dir) != FQ_OK ||
            get_enum(c, sec, "cache", "dtype", dtype_names, &e) != FQ_OK ||
            get_bool(c, sec, "cache", "delete_consumed", &del) != FQ_OK)
            return FQ_ERR;
        j->cache.dtype = (job_cache_dtype)e;
        j->cache.delete_consumed = del;
    }
    if (!j->cache.dir && subdir(j->output, "cache", &j->cache.dir) != FQ_OK)
        return FQ_ERR;

    if (section(root, "quantization", &sec, &present) != FQ_OK)
        return FQ_ERR;
    if (sec && convert_quantization(c, sec, j) != FQ_OK)
        return FQ_ERR;

    if (section(root, "calibration", &sec, &present) != FQ_OK)
        return FQ_ERR;
    j->calibrate = present;
    if (present) {
        const yt_node *m = sec ? sec : yt_map_get(root, "calibration", NULL);
        struct job_calibration *k = &j->calibration;
        if ((sec && check_keys(c, sec, "calibration", calib_keys) != FQ_OK) ||
            get_path_list(c, m, "calibration", "text", &k->text, &k->n_text) != FQ_OK ||
            get_int(c, sec, "calibration", "nsamples", "an integer >= 1", &k->nsamples) ||
            get_int(c, sec, "calibration", "seqlen", "an integer >= 2", &k->seqlen) ||
            get_int(c, sec, "calibration", "batch", "an integer >= 1", &k->batch) ||
            get_seed(c, sec, "calibration", "seed", &k->seed, NULL))
            return FQ_ERR;
    }

    j->eval.methods[0] = JOB_METHOD_FP;
    j->eval.methods[1] = j->quantization.method;
    j->eval.n_methods = 2;
    if (section(root, "eval", &sec, &present) != FQ_OK)
        return FQ_ERR;
    j->evaluate = present;
    if (present) {
        const yt_node *m = sec ? sec : yt_map_get(root, "eval", NULL);
        if ((sec && check_keys(c, sec, "eval", eval_keys) != FQ_OK) ||
            get_path_list(c, m, "eval", "text", &j->eval.text, &j->eval.n_text) != FQ_OK ||
            get_int(c, sec, "eval", "seqlen", "an integer >= 2", &j->eval.seqlen) ||
            get_int(c, sec, "eval", "max_windows", "an integer >= 0", &j->eval.max_windows) ||
            get_methods(c, sec, j))
            return FQ_ERR;
    }

    if (section(root, "report", &sec, &present) != FQ_OK)
        return FQ_ERR;
    if (sec && (check_keys(c, sec, "report", report_keys) != FQ_OK ||
                get_path(c, sec, "report", "dir", 0, "the report directory", &j->report.dir)))
        return FQ_ERR;
    if (!j->report.dir && !(j->report.dir = fq_strdup(j->output)))
        return FQ_ERR;
    return FQ_OK;
}

