/* report.c — validate the calibration report document, render its markdown view, and
 * write the three files (see report.h for the schema and why there are three).
 *
 * Validation is by table: each array section lists its keys and their types, so adding
 * a field to the schema is one line here and one in report.h. Only types are checked:
 * the coordinator may write a report for a job that stopped early, with sections empty.
 */
#include "coordinator/report.h"

#include "atomic_file.h"
#include "coordinator/report_fmt.h"
#include "error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum { T_NUM, T_INT, T_STR, T_NUMS } field_type;

typedef struct {
    const char *key;
    field_type type;
} field;

typedef struct {
    const char *name;
    int required;
    const field *fields;
    int nfields;
} section;

static const field rank_fields[] = {{"rank", T_INT},   {"host", T_STR},         {"device", T_STR},
                                    {"busy_s", T_NUM}, {"idle_s", T_NUM},       {"cache_read_s", T_NUM},
                                    {"layers", T_INT}};
static const field layer_fields[] = {{"layer", T_INT},       {"rank", T_INT},
                                     {"seconds", T_NUM},     {"loss_before", T_NUM},
                                     {"loss_after", T_NUM},  {"epoch_loss", T_NUMS}};
static const field diff_fields[] = {{"layer", T_INT},  {"input", T_STR},  {"before", T_NUM},
                                    {"smooth", T_NUM}, {"rotate", T_NUM}, {"smoothrot", T_NUM}};
static const field eval_fields[] = {{"method", T_STR}, {"text", T_STR}, {"seqlen", T_INT},
                                    {"ppl", T_NUM},    {"nll", T_NUM},  {"tokens", T_INT},
                                    {"windows", T_INT}};
#define SECTION(n, r, f) {n, r, f, (int)(sizeof f / sizeof f[0])}
static const section sections[] = {SECTION("ranks", 0, rank_fields),
                                   SECTION("layers", 1, layer_fields),
                                   SECTION("difficulty", 0, diff_fields),
                                   SECTION("eval", 0, eval_fields)};

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

static int check_field(const json_t *v, field_type t, const char *sec, size_t i, const char *key)
{
    if (!v || json_is_null(v))
        return FQ_OK;
    int ok = t == T_NUM ? json_is_number(v) : t == T_INT ? json_is_integer(v)
           : t == T_STR ? json_is_string(v) : json_is_array(v);
    if (ok && t == T_NUMS)
        for (size_t k = 0; k < json_array_size(v); k++)
            if (!json_is_number(json_array_get(v, k)))
                return fq_error("report: %s[%zu].%s[%zu]: expected a number (got %s)", sec, i,
                                key, k, type_name(json_array_get(v, k)));
    if (!ok)
        return fq_error("report: %s[%zu].%s: expected %s (got %s)", sec, i, key,
                        t == T_NUM    ? "a number or null"
                        : t == T_INT  ? "an integer or null"
                        : t == T_STR  ? "a string or null"
                                      : "an array of numbers",
                        type_name(v));
    return FQ_OK;
}

int report_validate(const json_t *r)
{
    if (!json_is_object(r))
        return fq_error("report: the document must be a JSON object (got %s)",
                        r ? type_name(r) : "NULL");
    const char *objs[] = {"job", "model"};
    for (int k = 0; k < 2; k++) {
        json_t *o = json_object_get(r, objs[k]);
        if (!json_is_object(o))
            return fq_error("report: %s: expected an object (got %s)", objs[k],
                            o ? type_name(o) : "nothing");
        const char *key;
        json_t *v;
        json_object_foreach(o, key, v) if (json_is_object(v) || json_is_array(v))
            return fq_error("report: %s.%s: expected a string or a number (got %s)", objs[k], key,
                            type_name(v));
    }
    for (size_t s = 0; s < sizeof sections / sizeof sections[0]; s++) {
        const section *sec = &sections[s];
        json_t *a = json_object_get(r, sec->name);
        if (!a && !sec->required)
            continue;
        if (!json_is_array(a))
            return fq_error("report: %s: expected an array%s (got %s)", sec->name,
                            sec->required ? " (required)" : "", a ? type_name(a) : "nothing");
        for (size_t i = 0; i < json_array_size(a); i++) {
            json_t *row = json_array_get(a, i);
            if (!json_is_object(row))
                return fq_error("report: %s[%zu]: expected an object (got %s)", sec->name, i,
                                type_name(row));
            for (int f = 0; f < sec->nfields; f++)
                if (check_field(json_object_get(row, sec->fields[f].key), sec->fields[f].type,
                                sec->name, i, sec->fields[f].key) != FQ_OK)
                    return FQ_ERR;
        }
    }
    const char *nums[] = {"wall_seconds", "fp_pass_seconds"};
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(r, nums[k]);
        if (v && !json_is_number(v) && !json_is_null(v))
            return fq_error("report: %s: expected a number (got %s)", nums[k], type_name(v));
    }
    json_t *fin = json_object_get(r, "finished_at");
    if (fin && !json_is_string(fin) && !json_is_null(fin))
        return fq_error("report: finished_at: expected a string (got %s)", type_name(fin));
    return FQ_OK;
}

const char *report_fmt(const json_t *obj, const char *key, int digits, char *buf, size_t n)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_string(v))
        snprintf(buf, n, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(buf, n, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v) && isfinite(json_real_value(v)))
        snprintf(buf, n, "%.*g", digits, json_real_value(v));
    else
        snprintf(buf, n, "–");
    return buf;
}

double report_num(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

double report_fp_ppl(const json_t *report, const json_t *row)
{
    json_t *ev = json_object_get(report, "eval");
    const char *text = json_string_value(json_object_get(row, "text"));
    for (size_t i = 0; i < json_array_size(ev); i++) {
        json_t *e = json_array_get(ev, i);
        const char *m = json_string_value(json_object_get(e, "method"));
        const char *t = json_string_value(json_object_get(e, "text"));
        if (m && strcasecmp(m, "fp") == 0 && (!text || !t || strcmp(text, t) == 0) &&
            json_equal(json_object_get(e, "seqlen"), json_object_get(row, "seqlen")))
            return report_num(e, "ppl");
    }
    return NAN;
}

/* Markdown cell: pipes escaped, newlines flattened. */
static int md_cell(strbuf *o, const char *s)
{
    if (strbuf_printf(o, " ") != FQ_OK)
        return FQ_ERR;
    for (; *s; s++)
        if ((*s == '|' ? strbuf_printf(o, "\\|")
             : *s == '\n' ? strbuf_printf(o, " ")
                          : strbuf_printf(o, "%c", *s)) != FQ_OK)
            return FQ_ERR;
    return strbuf_printf(o, " |");
}

/* A markdown table of an array section: keys[] as columns (digits per column). */
static int md_table(strbuf *o, const char *title, const json_t *rows, const char *const *keys,
                    const char *const *head, const int *digits, int ncols)
{
    if (json_array_size(rows) == 0)
        return FQ_OK;
    if (strbuf_printf(o, "\n## %s\n\n|", title) != FQ_OK)
        return FQ_ERR;
    for (int j = 0; j < ncols; j++)
        if (md_cell(o, head[j]) != FQ_OK)
            return FQ_ERR;
    if (strbuf_printf(o, "\n|") != FQ_OK)
        return FQ_ERR;
    for (int j = 0; j < ncols; j++)
        if (strbuf_printf(o, "%s", j == 0 ? "---|" : "---:|") != FQ_OK)
            return FQ_ERR;
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *row = json_array_get(rows, i);
        if (strbuf_printf(o, "\n|") != FQ_OK)
            return FQ_ERR;
        for (int j = 0; j < ncols; j++) {
            char buf[256];
            if (md_cell(o, report_fmt(row, keys[j], digits[j], buf, sizeof buf)) != FQ_OK)
                return FQ_ERR;
        }
    }
    return strbuf_printf(o, "\n");
}

/* The eval rows with a computed "× FP" column, as a copy the table code can read. */
static json_t *eval_rows_with_ratio(const json_t *r)
{
    json_t *ev = json_object_get(r, "eval"), *out = json_array();
    for (size_t i = 0; out && i < json_array_size(ev); i++) {
        json_t *row = json_deep_copy(json_array_get(ev, i));
        double fp = report_fp_ppl(r, row), ppl = report_num(row, "ppl");
        if (row && isfinite(fp) && fp > 0 && isfinite(ppl))
            json_object_set_new(row, "x_fp", json_real(ppl / fp));
        json_array_append_new(out, row);
    }
    return out;
}

static int cmp_layer(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "layer"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "layer"));
    return (x > y) - (x < y);
}

json_t *report_layers_sorted(const json_t *r)
{
    json_t *ls = json_object_get(r, "layers"), *out = json_array();
    size_t n = json_array_size(ls);
    json_t **rows = malloc(sizeof(json_t *) * (n ? n : 1));
    if (!out || !rows) {
        free(rows);
        json_decref(out);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        rows[i] = json_array_get(ls, i);
    qsort(rows, n, sizeof *rows, cmp_layer); /* finish order → depth order */
    for (size_t i = 0; i < n; i++) {
        json_t *row = json_deep_copy(rows[i]);
        double b = report_num(row, "loss_before"), a = report_num(row, "loss_after");
        if (row && isfinite(a) && isfinite(b) && b > 0)
            json_object_set_new(row, "ratio", json_real(a / b));
        json_array_append_new(out, row);
    }
    free(rows);
    return out;
}

int report_render_md(const json_t *r, strbuf *o)
{
    const json_t *job = json_object_get(r, "job"), *model = json_object_get(r, "model");
    char b[8][256];
    if (strbuf_printf(o, "# flatq calibration report — %s\n\n",
                      report_fmt(model, "name", 6, b[0], sizeof b[0])) != FQ_OK ||
        strbuf_printf(o, "- job: `%s` (fingerprint `%s`)\n",
                      report_fmt(job, "path", 6, b[0], sizeof b[0]),
                      report_fmt(job, "fingerprint", 6, b[1], sizeof b[1])) != FQ_OK ||
        strbuf_printf(o, "- model: `%s` — %s layers, hidden %s, intermediate %s, %s heads, %s KV heads\n",
                      report_fmt(job, "model", 6, b[0], sizeof b[0]),
                      report_fmt(model, "layers", 6, b[1], sizeof b[1]),
                      report_fmt(model, "hidden", 6, b[2], sizeof b[2]),
                      report_fmt(model, "intermediate", 6, b[3], sizeof b[3]),
                      report_fmt(model, "heads", 6, b[4], sizeof b[4]),
                      report_fmt(model, "kv_heads", 6, b[5], sizeof b[5])) != FQ_OK ||
        strbuf_printf(o, "- method: %s, W%sA%sKV%s; calibration %s × %s tokens, %s epochs\n",
                      report_fmt(job, "method", 6, b[0], sizeof b[0]),
                      report_fmt(job, "w_bits", 6, b[1], sizeof b[1]),
                      report_fmt(job, "a_bits", 6, b[2], sizeof b[2]),
                      report_fmt(job, "kv_bits", 6, b[3], sizeof b[3]),
                      report_fmt(job, "nsamples", 6, b[4], sizeof b[4]),
                      report_fmt(job, "seqlen", 6, b[5], sizeof b[5]),
                      report_fmt(job, "epochs", 6, b[6], sizeof b[6])) != FQ_OK ||
        strbuf_printf(o, "- output: `%s`\n- wall time: %s s (FP pass %s s), finished %s\n",
                      report_fmt(job, "output", 6, b[0], sizeof b[0]),
                      report_fmt(r, "wall_seconds", 4, b[1], sizeof b[1]),
                      report_fmt(r, "fp_pass_seconds", 4, b[2], sizeof b[2]),
                      report_fmt(r, "finished_at", 6, b[3], sizeof b[3])) != FQ_OK)
        return FQ_ERR;
    json_t *ev = eval_rows_with_ratio(r), *ls = report_layers_sorted(r);
    if (!ev || !ls) {
        json_decref(ev);
        json_decref(ls);
        return fq_error("report: out of memory rendering the markdown");
    }
    static const char *const ek[] = {"method", "text", "seqlen", "ppl", "x_fp", "nll", "tokens", "windows"};
    static const char *const eh[] = {"method", "text", "seqlen", "ppl", "× FP", "nll", "tokens", "windows"};
    static const int ed[] = {6, 6, 6, 5, 4, 5, 6, 6};
    static const char *const lk[] = {"layer", "rank", "seconds", "loss_before", "loss_after", "ratio"};
    static const char *const lh[] = {"layer", "rank", "seconds", "loss before", "loss after", "after/before"};
    static const int ld[] = {6, 6, 4, 4, 4, 3};
    static const char *const rk[] = {"rank", "host", "device", "busy_s", "idle_s", "cache_read_s", "layers"};
    static const char *const rh[] = {"rank", "host", "device", "busy s", "idle s", "cache read s", "layers"};
    static const int rd[] = {6, 6, 6, 4, 4, 4, 6};
    static const char *const dk[] = {"layer", "input", "before", "smooth", "rotate", "smoothrot"};
    static const int dd[] = {6, 6, 4, 4, 4, 4};
    int rc = md_table(o, "Perplexity", ev, ek, eh, ed, 8);
    if (rc == FQ_OK)
        rc = md_table(o, "Layers (calibration loss before and after training)", ls, lk, lh, ld, 6);
    if (rc == FQ_OK)
        rc = md_table(o, "Ranks", json_object_get(r, "ranks"), rk, rh, rd, 7);
    if (rc == FQ_OK)
        rc = md_table(o, "Channel-magnitude difficulty D per linear input", json_object_get(r, "difficulty"),
                      dk, dk, dd, 6);
    json_decref(ev);
    json_decref(ls);
    return rc;
}

/* Render one view and write it atomically to dir/name. */
static int write_view(const char *dir, const char *name, const json_t *r,
                      int (*render)(const json_t *, strbuf *))
{
    strbuf b = {0};
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = render(r, &b);
    if (rc == FQ_OK)
        rc = atomic_file_put(path, b.s, b.len);
    strbuf_free(&b);
    return rc == FQ_OK ? FQ_OK : fq_error_wrap("%s", path);
}

static int render_json(const json_t *r, strbuf *b)
{
    char *s = json_dumps(r, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    if (!s)
        return fq_error("report: cannot serialise the report (out of memory)");
    int rc = strbuf_printf(b, "%s\n", s);
    free(s);
    return rc;
}

int report_write(const char *dir, json_t *report)
{
    if (!dir || !*dir)
        return fq_error("report: no output directory given (expected the job's output path)");
    if (report_validate(report) != FQ_OK)
        return FQ_ERR;
    if (write_view(dir, "report.json", report, render_json) != FQ_OK ||
        write_view(dir, "report.md", report, report_render_md) != FQ_OK ||
        write_view(dir, "report.html", report, report_render_html) != FQ_OK)
        return FQ_ERR;
    return FQ_OK;
}
