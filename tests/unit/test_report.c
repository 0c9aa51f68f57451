/* test_report.c — the calibration report renderer on a synthetic job: three files and
 * nothing else in the directory, the JSON reads back equal, the markdown holds the ppl
 * rows with the × FP ratio, the HTML has one <svg> per chart and never a NaN/Inf, missing
 * optional sections are fine, and wrong types are refused with one line naming the field.
 * Plus the SVG helpers on their own: gaps, log axes, escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coordinator/report.h"
#include "coordinator/svg.h"
#include "error.h"

static json_t *synthetic_report(void)
{
    json_t *r = json_pack(
        "{s:{s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:s},"
        " s:{s:s, s:i, s:i, s:i, s:i, s:i}, s:f, s:f, s:s}",
        "job", "path", "jobs/demo-tiny.yaml", "model", "data/models/stories260K-hf", "output",
        "out/demo", "method", "flatquant", "w_bits", 4, "a_bits", 4, "kv_bits", 4, "nsamples",
        16, "seqlen", 256, "epochs", 3, "fingerprint", "ab12cd",
        "model", "name", "stories260K <tiny> & co", "layers", 5, "hidden", 64, "intermediate",
        172, "heads", 8, "kv_heads", 4,
        "wall_seconds", 95.5, "fp_pass_seconds", 2.25, "finished_at", "2025-01-01T12:00:00Z");
    json_t *ranks = json_array(), *layers = json_array(), *diff = json_array(),
           *ev = json_array();
    for (int k = 0; k < 3; k++)
        json_array_append_new(ranks, json_pack("{s:i, s:s, s:s, s:f, s:f, s:f, s:i}", "rank", k,
                                               "host", "node1", "device", k ? "cpu" : "-",
                                               "busy_s", 10.0 * k, "idle_s", 0.5, "cache_read_s",
                                               0.01, "layers", k ? 2 + (k == 1) : 0));
    static const int order[5] = {3, 0, 4, 1, 2}; /* finish order ≠ layer order */
    for (int i = 0; i < 5; i++) {
        int l = order[i];
        json_array_append_new(layers, json_pack("{s:i, s:i, s:f, s:f, s:f, s:[f, f, f]}", "layer",
                                                l, "rank", 1 + l % 2, "seconds", 3.0 + l,
                                                "loss_before", 1e-3 * pow(4, l), "loss_after",
                                                2e-4 * pow(4, l), "epoch_loss", 0.3, 0.2, 0.1));
    }
    static const char *const inputs[4] = {"k_proj", "o_proj", "gate_proj", "down_proj"};
    for (int l = 0; l < 5; l++)
        for (int k = 0; k < 4; k++)
            json_array_append_new(diff, json_pack("{s:i, s:s, s:f, s:f, s:f, s:f}", "layer", l,
                                                  "input", inputs[k], "before", 20.0 + l,
                                                  "smooth", 8.0, "rotate", 9.5, "smoothrot", 4.0));
    static const char *const methods[4] = {"fp", "rtn", "quarot", "flatquant"};
    static const double ppl[4] = {119.5, 812.25, 240.0, 140.5};
    for (int k = 0; k < 4; k++)
        json_array_append_new(ev, json_pack("{s:s, s:s, s:i, s:f, s:f, s:i, s:i}", "method",
                                            methods[k], "text", "wiki.test.paper.txt", "seqlen",
                                            512, "ppl", ppl[k], "nll", log(ppl[k]), "tokens",
                                            2048, "windows", 4));
    json_object_set_new(r, "ranks", ranks);
    json_object_set_new(r, "layers", layers);
    json_object_set_new(r, "difficulty", diff);
    json_object_set_new(r, "eval", ev);
    return r;
}

static char *slurp(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    } else
        s[n] = 0;
    fclose(f);
    return s;
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

/* "nan" or "inf" as a word of its own, any case (numbers printed from non-finite values). */
static int has_nonfinite_word(const char *s)
{
    for (const char *p = s; *p; p++) {
        if (p > s && isalpha((unsigned char)p[-1]))
            continue;
        if ((strncasecmp(p, "nan", 3) == 0 || strncasecmp(p, "inf", 3) == 0) && !isalpha((unsigned char)p[3]))
            return 1;
    }
    return 0;
}

static int files_in(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    char path[512];
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.') {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    if (d)
        closedir(d);
    rmdir(dir);
}

static void test_full_report(void **state)
{
    (void)state;
    char dir[] = "/tmp/fq_report_XXXXXX";
    assert_non_null(mkdtemp(dir));
    json_t *r = synthetic_report();
    if (report_write(dir, r) != FQ_OK)
        fail_msg("report_write: %s", fq_errmsg());
    assert_int_equal(files_in(dir), 3); /* no temporary file left behind */

    char *js = slurp(dir, "report.json"), *md = slurp(dir, "report.md"),
         *html = slurp(dir, "report.html");
    assert_non_null(js);
    assert_non_null(md);
    assert_non_null(html);
    json_error_t jerr;
    json_t *back = json_loads(js, 0, &jerr);
    assert_non_null(back);
    assert_true(json_equal(back, r));

    /* the ppl table rows, with × FP = ppl / 119.5 */
    assert_non_null(strstr(md, "| method | text | seqlen | ppl | × FP |"));
    assert_non_null(strstr(md, "| fp | wiki.test.paper.txt | 512 | 119.5 | 1 |"));
    assert_non_null(strstr(md, "| flatquant | wiki.test.paper.txt | 512 | 140.5 | 1.176 |"));
    assert_non_null(strstr(md, "| rtn | wiki.test.paper.txt | 512 | 812.25 | 6.797 |"));
    /* layer rows are there with after/before = 0.2 */
    const char *l0 = strstr(md, "| 0 | 1 | 3 | 0.001 | 0.0002 | 0.2 |"),
               *l3 = strstr(md, "| 3 | 2 | 6 | 0.064 | 0.0128 | 0.2 |");
    assert_non_null(l0);
    assert_non_null(l3);
    assert_true(l0 < l3); /* depth order, not the order the layers finished in */
    assert_non_null(strstr(md, "## Channel-magnitude difficulty"));
    assert_non_null(strstr(md, "W4A4KV4"));

    /* charts: loss, time by rank, 4 difficulty inputs, ppl */
    assert_int_equal(count(html, "<svg"), 7);
    assert_int_equal(count(html, "</svg>"), 7);
    assert_false(has_nonfinite_word(html));
    assert_non_null(strstr(html, "stories260K &lt;tiny&gt; &amp; co"));
    assert_null(strstr(html, "<tiny>"));
    assert_non_null(strstr(html, "rank 2"));
    assert_non_null(strstr(html, "(log scale)"));

    free(js);
    free(md);
    free(html);
    json_decref(back);
    json_decref(r);
    remove_dir(dir);
}

static void test_optional_sections_missing(void **state)
{
    (void)state;
    char dir[] = "/tmp/fq_report_XXXXXX";
    assert_non_null(mkdtemp(dir));
    json_t *r = synthetic_report();
    json_object_del(r, "difficulty");
    json_object_del(r, "eval");
    json_object_del(r, "ranks");
    json_object_del(r, "wall_seconds");
    /* a null loss (layer not measured) is allowed and drawn as a gap */
    json_object_set_new(json_array_get(json_object_get(r, "layers"), 0), "loss_after", json_null());
    assert_int_equal(report_write(dir, r), FQ_OK);
    char *md = slurp(dir, "report.md"), *html = slurp(dir, "report.html");
    assert_non_null(md);
    assert_null(strstr(md, "## Perplexity"));
    assert_non_null(strstr(md, "wall time: – s"));
    assert_int_equal(count(html, "<svg"), 2);
    assert_false(has_nonfinite_word(html));
    free(md);
    free(html);
    json_decref(r);

    /* the smallest valid report: nothing has run yet */
    r = json_pack("{s:{}, s:{}, s:[]}", "job", "model", "layers");
    assert_int_equal(report_write(dir, r), FQ_OK);
    html = slurp(dir, "report.html");
    assert_non_null(strstr(html, "No layer has finished"));
    assert_false(has_nonfinite_word(html));
    free(html);
    json_decref(r);
    remove_dir(dir);
}

static void test_bad_reports_are_refused(void **state)
{
    (void)state;
    char dir[] = "/tmp/fq_report_XXXXXX";
    assert_non_null(mkdtemp(dir));
    json_t *r = synthetic_report();
    json_object_set_new(json_array_get(json_object_get(r, "layers"), 1), "loss_after",
                        json_string("low"));
    assert_int_equal(report_write(dir, r), FQ_ERR);
    assert_string_equal(fq_errmsg(),
                        "report: layers[1].loss_after: expected a number or null (got string)");
    assert_int_equal(files_in(dir), 0); /* nothing written from a bad document */
    json_decref(r);

    r = synthetic_report();
    json_array_append_new(json_object_get(json_array_get(json_object_get(r, "layers"), 2), "epoch_loss"),
                          json_string("x"));
    assert_int_equal(report_validate(r), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "layers[2].epoch_loss[3]"));
    json_object_del(r, "job");
    assert_int_equal(report_validate(r), FQ_ERR);
    assert_string_equal(fq_errmsg(), "report: job: expected an object (got nothing)");
    json_object_set_new(r, "job", json_pack("{s:[]}", "seqlen"));
    assert_int_equal(report_validate(r), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "job.seqlen"));
    json_decref(r);

    r = synthetic_report();
    json_object_set_new(r, "eval", json_object());
    assert_int_equal(report_validate(r), FQ_ERR);
    assert_string_equal(fq_errmsg(), "report: eval: expected an array (got object)");
    assert_int_equal(report_validate(NULL), FQ_ERR);
    json_decref(r);

    r = synthetic_report();
    assert_int_equal(report_write("/nonexistent/dir/for/flatq", r), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "/nonexistent/dir/for/flatq/report.json"));
    assert_null(strchr(fq_errmsg(), '\n'));
    json_decref(r);
    remove_dir(dir);
}

static void test_svg_line_chart_gaps_and_log_axis(void **state)
{
    (void)state;
    double y[6] = {1e-3, 2e-3, NAN, 5e-2, -1, 0.1}; /* NaN and a negative (log) are gaps */
    svg_series s = {"loss", y, 6, 0, 0};
    svg_chart c = {"t", "layer", "loss", 1, 0, 0};
    strbuf b = {0};
    assert_int_equal(svg_line_chart(&b, &c, 0, &s, 1), FQ_OK);
    assert_int_equal(count(b.s, "<polyline"), 3); /* {0,1}, {3}, {5} */
    assert_int_equal(count(b.s, "<circle"), 4);
    assert_non_null(strstr(b.s, ">0.001<"));      /* decade ticks 1e-3 … 1 */
    assert_non_null(strstr(b.s, ">0.1<"));
    assert_false(has_nonfinite_word(b.s));
    strbuf_free(&b);

    /* no usable point: a frame saying so, still one well-formed <svg> */
    double z[2] = {NAN, NAN};
    svg_series sz = {"x", z, 2, 1, 1};
    assert_int_equal(svg_line_chart(&b, &c, 0, &sz, 1), FQ_OK);
    assert_non_null(strstr(b.s, "no data"));
    assert_int_equal(count(b.s, "</svg>"), 1);
    strbuf_free(&b);

    /* linear axis: nice ticks around the data */
    double lin[3] = {0.0, 7.0, 12.0};
    svg_series sl = {"a<b", lin, 3, 2, 0};
    c.log_y = 0;
    assert_int_equal(svg_line_chart(&b, &c, 1, &sl, 1), FQ_OK);
    assert_non_null(strstr(b.s, ">12<")); /* step 2 over 0..12 */
    assert_non_null(strstr(b.s, ">2<"));
    assert_non_null(strstr(b.s, "a&lt;b"));
    strbuf_free(&b);
}

static void test_svg_bars_and_table(void **state)
{
    (void)state;
    const char *labels[3] = {"0", "1", "2"}, *legend[2] = {"rank 0", "rank 1"};
    double v[3] = {2, NAN, 5};
    int col[3] = {0, 1, 1};
    svg_chart c = {"time", "layer", "s", 0, 300, 200};
    strbuf b = {0};
    assert_int_equal(svg_bar_chart(&b, &c, labels, v, col, 3, legend, 2), FQ_OK);
    assert_int_equal(count(b.s, "<rect x="), 2 + 1); /* two bars + the plot frame */
    assert_non_null(strstr(b.s, svg_color(1)));
    assert_false(has_nonfinite_word(b.s));
    strbuf_free(&b);

    const char *head[2] = {"k", "v"}, *cells[4] = {"a&b", NULL, "x", "1"};
    assert_int_equal(html_table(&b, head, 2, cells, 2), FQ_OK);
    assert_non_null(strstr(b.s, "<td>a&amp;b</td><td>–</td>"));
    strbuf_free(&b);
    assert_int_equal(svg_bar_chart(&b, &c, NULL, v, col, 3, legend, 2), FQ_ERR);
    strbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_report),
        cmocka_unit_test(test_optional_sections_missing),
        cmocka_unit_test(test_bad_reports_are_refused),
        cmocka_unit_test(test_svg_line_chart_gaps_and_log_axis),
        cmocka_unit_test(test_svg_bars_and_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
