/* report.h — the calibration report: report.json, report.md and report.html in the job's
 * output directory, all three from one JSON document that the coordinator fills.
 *
 * Why one document: the JSON is the record a script reads back (compare runs, plot across
 * jobs), the markdown is what a person pastes into an issue or a log, and the HTML is what
 * they open to look; rendering both views from the JSON means they cannot drift apart.
 * Each file is written atomically (temporary name + rename), so an interrupted job leaves
 * the previous report or the new one, never half of one.
 *
 * Schema (every key optional unless marked *required*; a missing value shows as "–" and is
 * left out of the charts; null is accepted wherever a number is expected):
 * {
 *   "job":   {"path", "model", "output", "method", "w_bits", "a_bits", "kv_bits",
 *             "nsamples", "seqlen", "epochs", "fingerprint"}       *required* object,
 *                                                                  strings or numbers
 *   "model": {"name", "layers", "hidden", "intermediate", "heads", "kv_heads"}
 *                                                                  *required* object
 *   "ranks": [{"rank": int, "host": str, "device": str, "busy_s": num, "idle_s": num,
 *              "cache_read_s": num, "layers": int}]
 *   "layers": [{"layer": int, "rank": int, "seconds": num, "loss_before": num,
 *               "loss_after": num, "epoch_loss": [num, …]}]        *required* array
 *   "difficulty": [{"layer": int, "input": str, "before": num, "smooth": num,
 *                   "rotate": num, "smoothrot": num}]    (the shape flatq inspect emits)
 *   "eval": [{"method": str, "text": str, "seqlen": int, "ppl": num, "nll": num,
 *             "tokens": int, "windows": int}]            (method "fp" is the reference
 *                                                        for the "× FP" column)
 *   "wall_seconds": num, "fp_pass_seconds": num, "finished_at": str
 * }
 * A value of the wrong type is refused with one line naming it, e.g.
 * "report: layers[3].loss_after: expected a number or null (got string)".
 */
#ifndef FQ_REPORT_H
#define FQ_REPORT_H

#include <jansson.h>

#include "coordinator/svg.h"

/* Check report against the schema above (types only; nothing is required inside the
 * sections). */
int report_validate(const json_t *report);

/* Validate, then write dir/report.json, dir/report.md and dir/report.html. dir must exist. */
int report_write(const char *dir, json_t *report);

/* The two views, appended to out (report must be valid). */
int report_render_md(const json_t *report, strbuf *out);
int report_render_html(const json_t *report, strbuf *out);

#endif
