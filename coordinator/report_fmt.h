/* report_fmt.h — value formatting shared by the markdown and HTML views of the report
 * (coordinator/report.c, report_html.c); not a public interface. */
#ifndef FQ_REPORT_FMT_H
#define FQ_REPORT_FMT_H

#include <jansson.h>
#include <stddef.h>

/* obj[key] as text: strings as they are, integers in full, reals with `digits`
 * significant digits; "–" when absent, null or not finite. Returns buf. */
const char *report_fmt(const json_t *obj, const char *key, int digits, char *buf, size_t n);
/* obj[key] as a double; NaN when absent or not a number. */
double report_num(const json_t *obj, const char *key);
/* ppl of the "fp" eval row with the same text and seqlen as row; NaN when none. */
double report_fp_ppl(const json_t *report, const json_t *row);

/* A copy of the "layers" section sorted by layer number, with "ratio" = after/before
 * where both losses are known; NULL when out of memory. */
json_t *report_layers_sorted(const json_t *report);

#endif
