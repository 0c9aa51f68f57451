/* svg.h — just enough SVG and HTML to draw flatq's reports: a growable string, a line
 * chart, a bar chart, a table, and a page wrapper.
 *
 * The pages must open anywhere (a laptop with no network, an archived job directory), so
 * everything is inline: no scripts, no fonts, no external CSS; hovering a point shows its
 * value through SVG <title>. The charts are deliberately plain: x is an integer index
 * (layer, epoch), y is linear or log10 (decade grid), one colour per series from a fixed
 * palette that stays readable for the common colour-vision deficiencies. Points that are
 * not finite (or not > 0 on a log axis) are gaps in a line and are never printed, so a
 * page can never contain "nan" or "inf".
 */
#ifndef FQ_SVG_H
#define FQ_SVG_H

#include <stddef.h>

#include "error.h"

/* A growable NUL-terminated string; zero-initialise it. */
typedef struct {
    char *s;
    size_t len, cap;
} strbuf;

int strbuf_printf(strbuf *b, const char *fmt, ...) FQ_PRINTF(2, 3);
/* Append text with & < > " ' escaped for HTML/XML. */
int strbuf_put_escaped(strbuf *b, const char *text);
void strbuf_free(strbuf *b);

/* Palette colour i (any i ≥ 0; wraps). */
const char *svg_color(int i);

typedef struct {
    const char *name;  /* legend text */
    const double *y;   /* n values at x = x0, x0 + 1, … */
    int n;
    int color;         /* palette index */
    int dashed;
} svg_series;

typedef struct {
    const char *title, *xlabel, *ylabel;
    int log_y;
    int width, height; /* 0: 520 × 300 */
} svg_chart;

/* Line chart of ns series sharing the x axis x0, x0 + 1, … */
int svg_line_chart(strbuf *out, const svg_chart *c, double x0, const svg_series *s, int ns);

/* One bar per item (labels[i] under it, height v[i] from 0, colour palette[color[i]]);
 * legend[k] names palette colour k (nlegend may be 0). */
int svg_bar_chart(strbuf *out, const svg_chart *c, const char *const *labels, const double *v,
                  const int *color, int n, const char *const *legend, int nlegend);

/* <table> with a header row and nrows rows of ncols cells (row-major; NULL cell = "–").
 * Cells are escaped. */
int html_table(strbuf *out, const char *const *head, int ncols, const char *const *cells,
               int nrows);

/* <!DOCTYPE html> … <body> with the shared style; and the closing tags. */
int html_page_begin(strbuf *out, const char *title);
int html_page_end(strbuf *out);

#endif
