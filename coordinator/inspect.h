/* inspect.h — `flatq inspect`: how hard each linear input of a model is to quantize, and
 * how much each baseline's transform helps (ALGORITHM §8, core/difficulty.h).
 *
 * The pieces: inspect.c runs the FP model and builds one JSON document (the single source
 * for the terminal table, --json and --html); inspect_html.c renders that document. The
 * document:
 *   {"model", "text", "seqlen", "windows", "tokens", "alpha", "bits",
 *    "config": {"layers", "hidden", "intermediate", "heads", "kv_heads", "head_dim"},
 *    "inputs": ["k_proj", "o_proj", "gate_proj", "down_proj"],
 *    "consumers": {"k_proj": "q_proj+k_proj+v_proj", …},
 *    "layers": [{"layer", "inputs": [{"input", "channels", "weight_rows", "rotation",
 *        "activation": {VARIANT: {"difficulty", "max_median", "kurtosis"}},
 *        "weight":     {VARIANT: {"difficulty", "max_median", "kurtosis"}},
 *        "error":      {VARIANT: {"measured", "estimate"}}}]}],
 *    "difficulty": [{"layer", "input", "before", "smooth", "rotate", "smoothrot"}]}
 * with VARIANT ∈ before, smooth, rotate, smoothrot; undefined statistics are null. The
 * "difficulty" array has the shape of the calibration report's optional section
 * (coordinator/report.h), so a job can copy it in unchanged.
 */
#ifndef FQ_INSPECT_H
#define FQ_INSPECT_H

#include <jansson.h>

#include "coordinator/svg.h"

/* The document above for MODEL on the first windows·seqlen tokens of TEXT (4-bit error
 * figures, SmoothQuant α 0.5) — what `flatq inspect --json` prints. */
int inspect_document(const char *model, const char *text, int seqlen, int windows,
                     json_t **doc);

/* Append the inspect HTML page for doc (the document above) to out. */
int inspect_html_render(const json_t *doc, strbuf *out);

#endif
