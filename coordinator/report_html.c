/* report_html.c — the HTML view of the calibration report (schema in report.h).
 *
 * Charts, each drawn only from what the document holds: per-layer loss before/after
 * training (log scale: losses fall by orders of magnitude along the depth), per-layer
 * wall time as bars coloured by the rank that ran it (a glance shows stragglers and an
 * unbalanced schedule), the difficulty metric per layer for each linear input when the
 * job measured it, and perplexity per method. Layers are placed by their "layer" number,
 * not by the order they finished in.
 */
#include "coordinator/report.h"

#include "coordinator/report_fmt.h"
#include "error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Largest integer value of key over an array section; -1 when none. */
static int max_int(const json_t *rows, const char *key)
{
    int m = -1;
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *v = json_object_get(json_array_get(rows, i), key);
        if (json_is_integer(v) && json_integer_value(v) > m && json_integer_value(v) < (1 << 20))
            m = (int)json_integer_value(v);
    }
    return m;
}

static int section_title(strbuf *o, const char *title)
{
    return strbuf_printf(o, "<h2>%s</h2>\n", title);
}

static int loss_and_time_charts(strbuf *o, const json_t *r)
{
    const json_t *ls = json_object_get(r, "layers");
    int L = max_int(ls, "layer") + 1;
    if (L <= 0)
        return strbuf_printf(o, "<p class=\"note\">No layer has finished.</p>\n");
    double *y = malloc(sizeof(double) * (size_t)L * 3);
    int *col = malloc(sizeof(int) * (size_t)L);
    char *lab = malloc((size_t)L * 12);
    const char **labels = malloc(sizeof(char *) * (size_t)L);
    int rc = FQ_ERR;
    if (!y || !col || !lab || !labels) {
        fq_error("report: out of memory drawing the layer charts");
        goto done;
    }
    for (int i = 0; i < 3 * L; i++)
        y[i] = NAN;
    for (int i = 0; i < L; i++) {
        col[i] = 0;
        snprintf(lab + 12 * i, 12, "%d", i);
        labels[i] = lab + 12 * i;
    }
    for (size_t i = 0; i < json_array_size(ls); i++) {
        json_t *row = json_array_get(ls, i), *li = json_object_get(row, "layer");
        if (!json_is_integer(li) || json_integer_value(li) < 0 || json_integer_value(li) >= L)
            continue;
        int l = (int)json_integer_value(li);
        y[l] = report_num(row, "loss_before");
        y[L + l] = report_num(row, "loss_after");
        y[2 * L + l] = report_num(row, "seconds");
        json_t *rk = json_object_get(row, "rank");
        col[l] = json_is_integer(rk) && json_integer_value(rk) >= 0 && json_integer_value(rk) < 64
                     ? (int)json_integer_value(rk)
                     : 0;
    }
    svg_series s[2] = {{"loss before training", y, L, 1, 0}, {"loss after training", y + L, L, 0, 0}};
    svg_chart c1 = {"Per-layer calibration loss", "layer", "MSE loss", 1, 540, 300};
    int nranks = max_int(ls, "rank") + 1;
    nranks = nranks < 1 ? 1 : nranks > 64 ? 64 : nranks;
    char rn[64][24];
    const char *legend[64];
    for (int k = 0; k < nranks; k++) {
        snprintf(rn[k], sizeof rn[k], "rank %d", k);
        legend[k] = rn[k];
    }
    svg_chart c2 = {"Per-layer time, coloured by the rank that ran it", "layer", "seconds", 0,
                    540, 300};
    if (section_title(o, "Layers") != FQ_OK || strbuf_printf(o, "<div class=\"charts\">\n") != FQ_OK ||
        svg_line_chart(o, &c1, 0, s, 2) != FQ_OK ||
        svg_bar_chart(o, &c2, labels, y + 2 * L, col, L, legend, nranks) != FQ_OK ||
        strbuf_printf(o, "</div>\n") != FQ_OK)
        goto done;
    rc = FQ_OK;
done:
    free(y);
    free(col);
    free(lab);
    free(labels);
    return rc;
}

static int difficulty_charts(strbuf *o, const json_t *r)
{
    const json_t *d = json_object_get(r, "difficulty");
    int L = max_int(d, "layer") + 1;
    if (L <= 0)
        return FQ_OK;
    static const char *const variants[4] = {"before", "smooth", "rotate", "smoothrot"};
    const char *inputs[16];
    int ni = 0;
    for (size_t i = 0; i < json_array_size(d) && ni < 16; i++) {
        const char *in = json_string_value(json_object_get(json_array_get(d, i), "input"));
        int seen = !in;
        for (int k = 0; k < ni && !seen; k++)
            seen = strcmp(inputs[k], in) == 0;
        if (!seen)
            inputs[ni++] = in;
    }
    double *y = malloc(sizeof(double) * (size_t)L * 4);
    if (!y)
        return fq_error("report: out of memory drawing the difficulty charts");
    int rc = section_title(o, "Channel-magnitude difficulty D per linear input") == FQ_OK &&
                     strbuf_printf(o, "<p class=\"note\">D = std over channels of ‖X:,j‖₂, before "
                                      "and after SmoothQuant scaling, a random Hadamard "
                                      "rotation, and both (lower is easier).</p>"
                                      "<div class=\"charts\">\n") == FQ_OK
                 ? FQ_OK
                 : FQ_ERR;
    for (int k = 0; k < ni && rc == FQ_OK; k++) {
        for (int i = 0; i < 4 * L; i++)
            y[i] = NAN;
        for (size_t i = 0; i < json_array_size(d); i++) {
            json_t *row = json_array_get(d, i), *li = json_object_get(row, "layer");
            const char *in = json_string_value(json_object_get(row, "input"));
            if (!in || strcmp(in, inputs[k]) != 0 || !json_is_integer(li) ||
                json_integer_value(li) < 0 || json_integer_value(li) >= L)
                continue;
            for (int v = 0; v < 4; v++)
                y[v * L + json_integer_value(li)] = report_num(row, variants[v]);
        }
        svg_series s[4];
        for (int v = 0; v < 4; v++)
            s[v] = (svg_series){variants[v], y + v * L, L, v, 0};
        char title[96];
        snprintf(title, sizeof title, "%s input", inputs[k]);
        svg_chart c = {title, "layer", "D", 1, 540, 290};
        rc = svg_line_chart(o, &c, 0, s, 4);
    }
    free(y);
    return rc == FQ_OK ? strbuf_printf(o, "</div>\n") : FQ_ERR;
}

/* An HTML table of an array section. */
static int section_table(strbuf *o, const json_t *rows, const char *const *keys,
                         const char *const *head, const int *digits, int ncols)
{
    size_t n = json_array_size(rows);
    char *text = malloc((n ? n : 1) * (size_t)ncols * 64);
    const char **cells = malloc(sizeof(char *) * (n ? n : 1) * (size_t)ncols);
    if (!text || !cells) {
        free(text);
        free(cells);
        return fq_error("report: out of memory building a table");
    }
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < ncols; j++) {
            char *t = text + (i * ncols + j) * 64;
            cells[i * ncols + j] = report_fmt(json_array_get(rows, i), keys[j], digits[j], t, 64);
        }
    int rc = html_table(o, head, ncols, cells, (int)n);
    free(text);
    free(cells);
    return rc;
}

static int eval_section(strbuf *o, const json_t *r)
{
    const json_t *ev = json_object_get(r, "eval");
    size_t n = json_array_size(ev);
    if (n == 0)
        return FQ_OK;
    json_t *rows = json_array();
    double *v = malloc(sizeof(double) * n);
    int *col = malloc(sizeof(int) * n);
    char *lab = malloc(n * 64);
    const char **labels = malloc(sizeof(char *) * n);
    const char *texts[8];
    int ntext = 0, rc = FQ_ERR;
    if (!rows || !v || !col || !lab || !labels) {
        fq_error("report: out of memory drawing the perplexity chart");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *row = json_deep_copy(json_array_get(ev, i));
        double fp = report_fp_ppl(r, row), ppl = report_num(row, "ppl");
        if (row && isfinite(fp) && fp > 0 && isfinite(ppl))
            json_object_set_new(row, "x_fp", json_real(ppl / fp));
        json_array_append_new(rows, row);
        /* one bar per row: its perplexity relative to FP on the same text (comparable
         * across texts), coloured by the text, labelled by the method */
        char m[24];
        report_fmt(row, "method", 6, m, sizeof m);
        snprintf(lab + 64 * i, 64, "%s", m);
        labels[i] = lab + 64 * i;
        v[i] = isfinite(fp) && fp > 0 ? ppl / fp : ppl;
        const char *text = json_string_value(json_object_get(row, "text"));
        int t = 0;
        while (t < ntext && text && strcmp(texts[t], text) != 0)
            t++;
        if (t == ntext && ntext < 8 && text)
            texts[ntext++] = text;
        col[i] = t;
    }
    const char *legend[8];
    for (int t = 0; t < ntext; t++)
        legend[t] = strrchr(texts[t], '/') ? strrchr(texts[t], '/') + 1 : texts[t];
    static const char *const k[] = {"method", "text", "seqlen", "ppl", "x_fp", "nll", "tokens", "windows"};
    static const char *const h[] = {"method", "text", "seqlen", "ppl", "× FP", "nll", "tokens", "windows"};
    static const int d[] = {6, 6, 6, 5, 4, 5, 6, 6};
    int width = 120 + 64 * (int)n;
    svg_chart c = {"Perplexity relative to FP on the same text (lower is better)", "method",
                   "ppl / FP ppl", 0, width < 540 ? 540 : width, 300};
    if (section_title(o, "Perplexity") != FQ_OK ||
        strbuf_printf(o, "<div class=\"charts\">\n") != FQ_OK ||
        svg_bar_chart(o, &c, labels, v, col, (int)n, legend, ntext) != FQ_OK ||
        strbuf_printf(o, "</div>\n") != FQ_OK || section_table(o, rows, k, h, d, 8) != FQ_OK)
        goto done;
    rc = FQ_OK;
done:
    json_decref(rows);
    free(v);
    free(col);
    free(lab);
    free(labels);
    return rc;
}

int report_render_html(const json_t *r, strbuf *o)
{
    const json_t *job = json_object_get(r, "job"), *model = json_object_get(r, "model");
    char b[8][256], title[400];
    snprintf(title, sizeof title, "flatq calibration report — %s",
             report_fmt(model, "name", 6, b[0], sizeof b[0]));
    if (html_page_begin(o, title) != FQ_OK)
        return FQ_ERR;
    static const char *const sk[] = {"job", "model", "output", "method", "bits", "calibration",
                                      "epochs", "wall time", "finished", "fingerprint"};
    char bits[64], cal[64], wall[96];
    snprintf(bits, sizeof bits, "W%sA%sKV%s", report_fmt(job, "w_bits", 6, b[0], 64),
             report_fmt(job, "a_bits", 6, b[1], 64), report_fmt(job, "kv_bits", 6, b[2], 64));
    snprintf(cal, sizeof cal, "%s × %s tokens", report_fmt(job, "nsamples", 6, b[0], 64),
             report_fmt(job, "seqlen", 6, b[1], 64));
    snprintf(wall, sizeof wall, "%s s (FP pass %s s)", report_fmt(r, "wall_seconds", 4, b[0], 64),
             report_fmt(r, "fp_pass_seconds", 4, b[1], 64));
    const char *sv[10] = {report_fmt(job, "path", 6, b[2], sizeof b[2]),
                          report_fmt(job, "model", 6, b[3], sizeof b[3]),
                          report_fmt(job, "output", 6, b[4], sizeof b[4]),
                          report_fmt(job, "method", 6, b[5], sizeof b[5]), bits, cal,
                          report_fmt(job, "epochs", 6, b[6], sizeof b[6]), wall,
                          report_fmt(r, "finished_at", 6, b[7], sizeof b[7]), NULL};
    char fp[128];
    sv[9] = report_fmt(job, "fingerprint", 6, fp, sizeof fp);
    static const char *const mk[] = {"layers", "hidden", "intermediate", "heads", "kv_heads"};
    static const int md[] = {6, 6, 6, 6, 6};
    static const char *const lk[] = {"layer", "rank", "seconds", "loss_before", "loss_after", "ratio"};
    static const char *const lh[] = {"layer", "rank", "seconds", "loss before", "loss after", "after/before"};
    static const int ld[] = {6, 6, 4, 4, 4, 3};
    static const char *const rk[] = {"rank", "host", "device", "busy_s", "idle_s", "cache_read_s", "layers"};
    static const char *const rh[] = {"rank", "host", "device", "busy s", "idle s", "cache read s", "layers"};
    static const int rd[] = {6, 6, 6, 4, 4, 4, 6};
    json_t *mrow = json_array(), *sorted = report_layers_sorted(r);
    if (!mrow || !sorted) {
        json_decref(mrow);
        json_decref(sorted);
        return fq_error("report: out of memory rendering the HTML");
    }
    json_array_append(mrow, (json_t *)model);
    const char *kv[20], *kvhead[2] = {"job", "value"};
    for (int i = 0; i < 10; i++) {
        kv[2 * i] = sk[i];
        kv[2 * i + 1] = sv[i];
    }
    int rc = section_title(o, "Job") == FQ_OK && html_table(o, kvhead, 2, kv, 10) == FQ_OK &&
                     section_table(o, mrow, mk, mk, md, 5) == FQ_OK &&
                     eval_section(o, r) == FQ_OK && loss_and_time_charts(o, r) == FQ_OK &&
                     section_table(o, sorted, lk, lh, ld, 6) == FQ_OK &&
                     difficulty_charts(o, r) == FQ_OK
                 ? FQ_OK
                 : FQ_ERR;
    json_decref(mrow);
    json_decref(sorted);
    if (rc == FQ_OK && json_array_size(json_object_get(r, "ranks")) > 0)
        rc = section_title(o, "Ranks") == FQ_OK &&
                     section_table(o, json_object_get(r, "ranks"), rk, rh, rd, 7) == FQ_OK
                 ? FQ_OK
                 : FQ_ERR;
    return rc == FQ_OK ? html_page_end(o) : FQ_ERR;
}
