/* inspect_html.c — the `flatq inspect --html` page, rendered from the inspect JSON
 * document (coordinator/inspect.h) so the page and --json can never disagree.
 *
 * One section per metric; in each, one small chart per linear input with the four
 * variants as lines over the layers (log scale: the metrics span decades between layers
 * and between transforms). The layer-error section draws the measured error solid and
 * its estimate dashed in the same colour, so the quality of the estimate is visible at a
 * glance. A table with every activation difficulty closes the page.
 */
#include "coordinator/inspect.h"

#include "difficulty.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* doc.layers[li].inputs[i].<sec>.<variant>.<key> as a double; NaN when absent or null. */
static double metric(const json_t *layers, int li, int i, const char *sec, const char *variant,
                     const char *key)
{
    json_t *in = json_array_get(json_object_get(json_array_get(layers, (size_t)li), "inputs"),
                                (size_t)i);
    json_t *v = json_object_get(json_object_get(json_object_get(in, sec), variant), key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

typedef struct {
    const char *title, *sec, *key, *ylabel;
    int with_estimate;
} metric_view;

static int metric_section(strbuf *o, const json_t *doc, const metric_view *mv)
{
    const json_t *layers = json_object_get(doc, "layers"), *inputs = json_object_get(doc, "inputs");
    int L = (int)json_array_size(layers), ni = (int)json_array_size(inputs);
    double *y = malloc(sizeof(double) * (size_t)(L ? L : 1) * 2 * DIFF_VARIANTS);
    if (!y)
        return fq_error("inspect_html: out of memory");
    if (strbuf_printf(o, "<h2>") != FQ_OK || strbuf_put_escaped(o, mv->title) != FQ_OK ||
        strbuf_printf(o, "</h2>\n<div class=\"charts\">\n") != FQ_OK)
        goto fail;
    for (int i = 0; i < ni; i++) {
        svg_series s[2 * DIFF_VARIANTS];
        char names[2 * DIFF_VARIANTS][48];
        int ns = 0;
        for (int v = 0; v < DIFF_VARIANTS; v++)
            for (int e = 0; e <= mv->with_estimate; e++, ns++) {
                double *yy = y + (size_t)ns * (L ? L : 1);
                for (int li = 0; li < L; li++)
                    yy[li] = metric(layers, li, i, mv->sec, difficulty_variant_names[v],
                                    e ? "estimate" : mv->key);
                snprintf(names[ns], sizeof names[ns], "%s%s", difficulty_variant_names[v],
                         e ? " (estimate)" : "");
                s[ns] = (svg_series){names[ns], yy, L, v, e};
            }
        char title[160];
        snprintf(title, sizeof title, "%s input", json_string_value(json_array_get(inputs, (size_t)i)));
        svg_chart c = {title, "layer", mv->ylabel, 1, 540, mv->with_estimate ? 320 : 290};
        if (svg_line_chart(o, &c, 0, s, ns) != FQ_OK)
            goto fail;
    }
    free(y);
    return strbuf_printf(o, "</div>\n");
fail:
    free(y);
    return FQ_ERR;
}

static int difficulty_table(strbuf *o, const json_t *doc)
{
    const json_t *rows = json_object_get(doc, "difficulty");
    int n = (int)json_array_size(rows);
    const char *head[6] = {"layer", "input", "before", "smooth", "rotate", "smoothrot"};
    char *text = malloc((size_t)(n ? n : 1) * 6 * 24);
    const char **cells = malloc(sizeof(char *) * (size_t)(n ? n : 1) * 6);
    if (!text || !cells) {
        free(text);
        free(cells);
        return fq_error("inspect_html: out of memory");
    }
    for (int r = 0; r < n; r++) {
        json_t *row = json_array_get(rows, (size_t)r);
        for (int j = 0; j < 6; j++) {
            char *t = text + ((size_t)r * 6 + j) * 24;
            json_t *v = json_object_get(row, head[j]);
            cells[r * 6 + j] = t;
            if (json_is_string(v))
                snprintf(t, 24, "%s", json_string_value(v));
            else if (json_is_integer(v))
                snprintf(t, 24, "%lld", (long long)json_integer_value(v));
            else if (json_is_number(v))
                snprintf(t, 24, "%.4g", json_number_value(v));
            else
                cells[r * 6 + j] = NULL;
        }
    }
    int rc = strbuf_printf(o, "<h2>Activation difficulty D, all values</h2>\n");
    if (rc == FQ_OK)
        rc = html_table(o, head, 6, cells, n);
    free(text);
    free(cells);
    return rc;
}

int inspect_html_render(const json_t *doc, strbuf *o)
{
    if (!json_is_object(doc) || !json_is_array(json_object_get(doc, "layers")) ||
        !json_is_array(json_object_get(doc, "inputs")))
        return fq_error("inspect_html: the document needs 'layers' and 'inputs' arrays");
    const char *model = json_string_value(json_object_get(doc, "model"));
    char title[512];
    snprintf(title, sizeof title, "flatq inspect — %s", model ? model : "model");
    if (html_page_begin(o, title) != FQ_OK)
        return FQ_ERR;
    const char *text = json_string_value(json_object_get(doc, "text"));
    if (strbuf_printf(o, "<p class=\"note\">Text ") != FQ_OK ||
        strbuf_put_escaped(o, text ? text : "?") != FQ_OK ||
        strbuf_printf(o, ": %lld windows of %lld tokens. Transforms: <b>smooth</b> = "
                         "SmoothQuant scaling (&alpha; = %.2g), <b>rotate</b> = random Hadamard "
                         "(QuaRot), <b>smoothrot</b> = smoothing then rotation. The layer error "
                         "uses %lld-bit symmetric per-row RTN of X and W. Lower is easier to "
                         "quantize everywhere.</p>\n",
                      (long long)json_integer_value(json_object_get(doc, "windows")),
                      (long long)json_integer_value(json_object_get(doc, "seqlen")),
                      json_number_value(json_object_get(doc, "alpha")),
                      (long long)json_integer_value(json_object_get(doc, "bits"))) != FQ_OK)
        return FQ_ERR;
    static const metric_view views[] = {
        {"Channel-magnitude difficulty D = std_j ‖X:,j‖₂ of the activations", "activation",
         "difficulty", "D", 0},
        {"Layer error ‖XWᵀ − Q(X)Q(W)ᵀ‖²_F (solid) and its estimate (dashed)", "error",
         "measured", "squared error", 1},
        {"Max/median ratio of per-channel max|x|", "activation", "max_median", "ratio", 0},
        {"Kurtosis of the activations (3 = Gaussian)", "activation", "kurtosis", "kurtosis", 0},
        {"Difficulty D of the consuming weights (columns)", "weight", "difficulty", "D", 0},
    };
    for (size_t k = 0; k < sizeof views / sizeof views[0]; k++)
        if (metric_section(o, doc, &views[k]) != FQ_OK)
            return FQ_ERR;
    if (difficulty_table(o, doc) != FQ_OK)
        return FQ_ERR;
    return html_page_end(o);
}
