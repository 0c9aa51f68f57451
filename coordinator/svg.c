/* svg.c — inline SVG charts and HTML pieces for the reports (see svg.h).
 *
 * Layout of a chart: title on top, legend under it (wrapping rows of swatches), plot area
 * with a light grid, y tick labels on the left, x tick labels and the axis label below.
 * Tick choice: linear axes use steps of 1, 2 or 5 × 10^k aiming at ~5 intervals; log
 * axes put a grid line on every decade, plus 2× and 5× when the range spans at most two
 * decades (otherwise a narrow range would show a single line).
 */
#include "coordinator/svg.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int strbuf_printf(strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return fq_error("svg: formatting failed for '%s'", fmt);
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s)
            return fq_error("svg: out of memory growing a page to %zu bytes", cap);
        b->s = s;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return FQ_OK;
}

int strbuf_put_escaped(strbuf *b, const char *text)
{
    if (!text)
        return strbuf_printf(b, "%s", "");
    for (const char *p = text; *p; p++) {
        const char *e = NULL;
        switch (*p) {
        case '&': e = "&amp;"; break;
        case '<': e = "&lt;"; break;
        case '>': e = "&gt;"; break;
        case '"': e = "&quot;"; break;
        case '\'': e = "&#39;"; break;
        }
        if ((e ? strbuf_printf(b, "%s", e) : strbuf_printf(b, "%c", *p)) != FQ_OK)
            return FQ_ERR;
    }
    return FQ_OK;
}

void strbuf_free(strbuf *b)
{
    free(b->s);
    memset(b, 0, sizeof *b);
}

const char *svg_color(int i)
{
    /* Okabe-Ito-like categorical colours, then two greys */
    static const char *const palette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                          "#E69F00", "#56B4E9", "#8C564B", "#000000",
                                          "#999999", "#F0E442"};
    int n = (int)(sizeof palette / sizeof palette[0]);
    return palette[((i % n) + n) % n];
}

enum { ML = 70, MR = 20, MB = 48, TITLE_H = 24, LEGEND_ROW = 18 };

typedef struct {
    double lo, hi;
    int log;
    double ticks[64];
    int nticks;
} axis;

static double nice_step(double range)
{
    double raw = range / 5, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

static void axis_linear(axis *a, double lo, double hi)
{
    if (hi - lo <= 0) {
        double pad = fabs(lo) > 0 ? fabs(lo) * 0.1 : 1;
        lo -= pad;
        hi += pad;
    }
    double step = nice_step(hi - lo);
    a->log = 0;
    a->lo = floor(lo / step) * step;
    a->hi = ceil(hi / step) * step;
    a->nticks = 0;
    for (double t = a->lo; t <= a->hi + step * 1e-9 && a->nticks < 64; t += step)
        a->ticks[a->nticks++] = fabs(t) < step * 1e-9 ? 0 : t;
}

static void axis_log(axis *a, double lo, double hi)
{
    int d0 = (int)floor(log10(lo)), d1 = (int)ceil(log10(hi));
    if (d1 <= d0)
        d1 = d0 + 1;
    a->log = 1;
    a->lo = pow(10, d0);
    a->hi = pow(10, d1);
    a->nticks = 0;
    int minor = d1 - d0 <= 2;
    for (int d = d0; d <= d1 && a->nticks < 62; d++) {
        a->ticks[a->nticks++] = pow(10, d);
        if (minor && d < d1) {
            a->ticks[a->nticks++] = 2 * pow(10, d);
            a->ticks[a->nticks++] = 5 * pow(10, d);
        }
    }
}

/* Position in [0, 1] along the axis. */
static double axis_frac(const axis *a, double v)
{
    if (a->log)
        return (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo));
    return (v - a->lo) / (a->hi - a->lo);
}

static int usable(const axis *a, double v) { return isfinite(v) && (!a->log || v > 0); }

/* Short tick/tooltip text; v is finite. */
static void fmt_num(char *buf, size_t n, double v)
{
    double a = fabs(v);
    if (v == 0)
        snprintf(buf, n, "0");
    else if (a >= 1e4 && a < 1e7 && v == rint(v))
        snprintf(buf, n, "%.0f", v); /* 50000, not 5e+04 */
    else if (a >= 1e5 || a < 1e-3)
        snprintf(buf, n, "%.2g", v);
    else
        snprintf(buf, n, "%.4g", v);
}

typedef struct {
    int w, h, top, pw, ph; /* size, plot top, plot width/height */
} frame;

static int chart_begin(strbuf *o, const svg_chart *c, const char *const *names,
                       const int *colors, const int *dashed, int nnames, frame *f)
{
    f->w = c->width > 0 ? c->width : 520;
    f->h = c->height > 0 ? c->height : 300;
    /* legend rows: roughly 7 px per character plus the swatch */
    int rows = nnames > 0 ? 1 : 0, x = ML;
    for (int i = 0; i < nnames; i++) {
        int wdt = 28 + 7 * (int)strlen(names[i] ? names[i] : "");
        if (x + wdt > f->w - MR && x > ML) {
            rows++;
            x = ML;
        }
        x += wdt;
    }
    f->top = TITLE_H + rows * LEGEND_ROW + 8;
    f->pw = f->w - ML - MR;
    f->ph = f->h - f->top - MB;
    if (f->ph < 60) {
        f->h += 60 - f->ph;
        f->ph = 60;
    }
    if (strbuf_printf(o, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                         "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"11\" "
                         "role=\"img\"><title>", f->w, f->h, f->w, f->h) != FQ_OK ||
        strbuf_put_escaped(o, c->title) != FQ_OK ||
        strbuf_printf(o, "</title><rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>"
                         "<text x=\"%d\" y=\"16\" font-size=\"13\" font-weight=\"bold\">", ML) != FQ_OK ||
        strbuf_put_escaped(o, c->title) != FQ_OK || strbuf_printf(o, "</text>") != FQ_OK)
        return FQ_ERR;
    int row = 0;
    x = ML;
    for (int i = 0; i < nnames; i++) {
        const char *nm = names[i] ? names[i] : "";
        int wdt = 28 + 7 * (int)strlen(nm);
        if (x + wdt > f->w - MR && x > ML) {
            row++;
            x = ML;
        }
        int y = TITLE_H + row * LEGEND_ROW + 6;
        if (strbuf_printf(o, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" "
                             "stroke-width=\"3\"%s/><text x=\"%d\" y=\"%d\">", x, y, x + 20, y,
                          svg_color(colors[i]),
                          dashed && dashed[i] ? " stroke-dasharray=\"5,3\"" : "", x + 24,
                          y + 4) != FQ_OK ||
            strbuf_put_escaped(o, nm) != FQ_OK || strbuf_printf(o, "</text>") != FQ_OK)
            return FQ_ERR;
        x += wdt;
    }
    /* axis labels */
    if (strbuf_printf(o, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", ML + f->pw / 2,
                      f->h - 8) != FQ_OK ||
        strbuf_put_escaped(o, c->xlabel) != FQ_OK ||
        strbuf_printf(o, "</text><text transform=\"translate(14,%d) rotate(-90)\" "
                         "text-anchor=\"middle\">", f->top + f->ph / 2) != FQ_OK ||
        strbuf_put_escaped(o, c->ylabel) != FQ_OK ||
        strbuf_printf(o, "%s</text>", c->log_y ? " (log scale)" : "") != FQ_OK)
        return FQ_ERR;
    return FQ_OK;
}

static int draw_y_axis(strbuf *o, const frame *f, const axis *a)
{
    for (int i = 0; i < a->nticks; i++) {
        double y = f->top + f->ph * (1 - axis_frac(a, a->ticks[i]));
        char t[32];
        fmt_num(t, sizeof t, a->ticks[i]);
        int major = !a->log || fabs(log10(a->ticks[i]) - rint(log10(a->ticks[i]))) < 1e-9;
        if (strbuf_printf(o, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\"/>"
                             "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>", ML, y,
                          ML + f->pw, y, major ? "#ddd" : "#f0f0f0", ML - 6, y + 4, t) != FQ_OK)
            return FQ_ERR;
    }
    return strbuf_printf(o, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
                            "stroke=\"#888\"/>", ML, f->top, f->pw, f->ph);
}

static int no_data(strbuf *o, const frame *f)
{
    return strbuf_printf(o, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
                            "stroke=\"#888\"/><text x=\"%d\" y=\"%d\" text-anchor=\"middle\" "
                            "fill=\"#888\">no data</text></svg>\n", ML, f->top, f->pw, f->ph,
                         ML + f->pw / 2, f->top + f->ph / 2);
}

int svg_line_chart(strbuf *out, const svg_chart *c, double x0, const svg_series *s, int ns)
{
    if (!out || !c || (ns > 0 && !s) || ns < 0 || ns > 64)
        return fq_error("svg:line_chart: bad arguments (expected 0..64 series)");
    const char *names[64] = {0};
    int colors[64] = {0}, dashed[64] = {0}, nmax = 0;
    double lo = INFINITY, hi = -INFINITY;
    axis a;
    a.log = c->log_y;
    for (int k = 0; k < ns; k++) {
        names[k] = s[k].name;
        colors[k] = s[k].color;
        dashed[k] = s[k].dashed;
        nmax = s[k].n > nmax ? s[k].n : nmax;
        for (int i = 0; i < s[k].n; i++)
            if (usable(&a, s[k].y[i])) {
                lo = s[k].y[i] < lo ? s[k].y[i] : lo;
                hi = s[k].y[i] > hi ? s[k].y[i] : hi;
            }
    }
    frame f;
    if (chart_begin(out, c, names, colors, dashed, ns, &f) != FQ_OK)
        return FQ_ERR;
    if (!(lo <= hi))
        return no_data(out, &f);
    if (c->log_y)
        axis_log(&a, lo, hi);
    else
        axis_linear(&a, lo, hi);
    if (draw_y_axis(out, &f, &a) != FQ_OK)
        return FQ_ERR;
    /* x: integer ticks, about 12 at most */
    int span = nmax > 1 ? nmax - 1 : 1, step = 1;
    while (span / step > 12)
        step = step == 1 ? 2 : step == 2 ? 5 : step * 2;
    double xs = (double)f.pw / span, xoff = nmax > 1 ? 0 : f.pw / 2.0;
    for (int i = 0; i < nmax; i += step) {
        char t[32];
        fmt_num(t, sizeof t, x0 + i);
        if (strbuf_printf(out, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>",
                          ML + xoff + i * xs, f.top + f.ph + 16, t) != FQ_OK)
            return FQ_ERR;
    }
    for (int k = 0; k < ns; k++) {
        const char *col = svg_color(s[k].color);
        int open = 0;
        for (int i = 0; i <= s[k].n; i++) {
            int ok = i < s[k].n && usable(&a, s[k].y[i]);
            if (ok && !open && strbuf_printf(out, "<polyline fill=\"none\" stroke=\"%s\" "
                                                  "stroke-width=\"2\"%s points=\"", col,
                                             s[k].dashed ? " stroke-dasharray=\"5,3\"" : "") != FQ_OK)
                return FQ_ERR;
            if (ok && strbuf_printf(out, "%.1f,%.1f ", ML + xoff + i * xs,
                                    f.top + f.ph * (1 - axis_frac(&a, s[k].y[i]))) != FQ_OK)
                return FQ_ERR;
            if (!ok && open && strbuf_printf(out, "\"/>") != FQ_OK)
                return FQ_ERR;
            open = ok;
        }
        if (s[k].n > 60)
            continue;
        for (int i = 0; i < s[k].n; i++) { /* markers with the value as a tooltip */
            if (!usable(&a, s[k].y[i]))
                continue;
            char t[32], xt[32];
            fmt_num(t, sizeof t, s[k].y[i]);
            fmt_num(xt, sizeof xt, x0 + i);
            if (strbuf_printf(out, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"><title>",
                              ML + xoff + i * xs, f.top + f.ph * (1 - axis_frac(&a, s[k].y[i])),
                              col) != FQ_OK ||
                strbuf_put_escaped(out, s[k].name) != FQ_OK ||
                strbuf_printf(out, " @ %s: %s</title></circle>", xt, t) != FQ_OK)
                return FQ_ERR;
        }
    }
    return strbuf_printf(out, "</svg>\n");
}

int svg_bar_chart(strbuf *out, const svg_chart *c, const char *const *labels, const double *v,
                  const int *color, int n, const char *const *legend, int nlegend)
{
    if (!out || !c || n < 0 || (n > 0 && (!labels || !v || !color)) || nlegend < 0 ||
        nlegend > 64 || (nlegend > 0 && !legend))
        return fq_error("svg:bar_chart: bad arguments (expected n labels, values, colours and "
                        "0..64 legend names)");
    int colors[64] = {0};
    for (int k = 0; k < nlegend; k++)
        colors[k] = k;
    frame f;
    if (chart_begin(out, c, legend, colors, NULL, nlegend, &f) != FQ_OK)
        return FQ_ERR;
    double hi = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i]) && v[i] > hi)
            hi = v[i];
    if (!(hi > 0))
        return no_data(out, &f);
    axis a;
    axis_linear(&a, 0, hi);
    if (draw_y_axis(out, &f, &a) != FQ_OK)
        return FQ_ERR;
    double slot = (double)f.pw / n, bw = slot * 0.75;
    int lstep = 1;
    while (n / lstep > 24)
        lstep = lstep == 1 ? 2 : lstep == 2 ? 5 : lstep * 2;
    for (int i = 0; i < n; i++) {
        double x = ML + i * slot + (slot - bw) / 2;
        if (i % lstep == 0) {
            if (strbuf_printf(out, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">",
                              x + bw / 2, f.top + f.ph + 16) != FQ_OK ||
                strbuf_put_escaped(out, labels[i]) != FQ_OK || strbuf_printf(out, "</text>") != FQ_OK)
                return FQ_ERR;
        }
        if (!isfinite(v[i]) || v[i] <= 0)
            continue;
        double hpx = f.ph * axis_frac(&a, v[i]);
        char t[32];
        fmt_num(t, sizeof t, v[i]);
        if (strbuf_printf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                               "fill=\"%s\"><title>", x, f.top + f.ph - hpx, bw, hpx,
                          svg_color(color[i])) != FQ_OK ||
            strbuf_put_escaped(out, labels[i]) != FQ_OK ||
            strbuf_printf(out, "%s%s: %s</title></rect>",
                          color[i] >= 0 && color[i] < nlegend ? ", " : "",
                          color[i] >= 0 && color[i] < nlegend ? legend[color[i]] : "", t) != FQ_OK)
            return FQ_ERR;
    }
    return strbuf_printf(out, "</svg>\n");
}

int html_table(strbuf *out, const char *const *head, int ncols, const char *const *cells,
               int nrows)
{
    if (!out || !head || ncols < 1 || nrows < 0 || (nrows > 0 && !cells))
        return fq_error("svg:html_table: bad arguments (expected a header and row-major cells)");
    if (strbuf_printf(out, "<table><thead><tr>") != FQ_OK)
        return FQ_ERR;
    for (int j = 0; j < ncols; j++)
        if (strbuf_printf(out, "<th>") != FQ_OK || strbuf_put_escaped(out, head[j]) != FQ_OK ||
            strbuf_printf(out, "</th>") != FQ_OK)
            return FQ_ERR;
    if (strbuf_printf(out, "</tr></thead><tbody>\n") != FQ_OK)
        return FQ_ERR;
    for (int i = 0; i < nrows; i++) {
        if (strbuf_printf(out, "<tr>") != FQ_OK)
            return FQ_ERR;
        for (int j = 0; j < ncols; j++) {
            const char *cell = cells[(size_t)i * ncols + j];
            if (strbuf_printf(out, "<td>") != FQ_OK ||
                strbuf_put_escaped(out, cell ? cell : "–") != FQ_OK ||
                strbuf_printf(out, "</td>") != FQ_OK)
                return FQ_ERR;
        }
        if (strbuf_printf(out, "</tr>\n") != FQ_OK)
            return FQ_ERR;
    }
    return strbuf_printf(out, "</tbody></table>\n");
}

int html_page_begin(strbuf *out, const char *title)
{
    if (strbuf_printf(out, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                           "<title>") != FQ_OK ||
        strbuf_put_escaped(out, title) != FQ_OK)
        return FQ_ERR;
    if (strbuf_printf(
            out, "</title><style>\n"
             "body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1120px;"
             "color:#222;padding:0 16px}\n"
             "h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}\n"
             ".charts{display:flex;flex-wrap:wrap;gap:12px}\n"
             ".charts svg{border:1px solid #eee;border-radius:4px}\n"
             "table{border-collapse:collapse;font-size:13px;margin:8px 0}\n"
             "th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}\n"
             "th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}\n"
             ".note{color:#666;font-size:13px}\n"
             "</style></head><body>\n<h1>") != FQ_OK ||
        strbuf_put_escaped(out, title) != FQ_OK)
        return FQ_ERR;
    return strbuf_printf(out, "</h1>\n");
}

int html_page_end(strbuf *out) { return strbuf_printf(out, "</body></html>\n"); }
