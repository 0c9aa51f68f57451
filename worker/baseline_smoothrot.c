/* baseline_smoothrot.c — down_proj statistics, SmoothQuant scales, smooth-then-rotate
 * (baseline_smoothrot.h).
 *
 * The statistics pass reuses the FP layer forward: llama_layer_fwd leaves the SwiGLU
 * output silu(gate) ∘ up — the down_proj input — in its scratch `gate` buffer, so the pass
 * reads it there after each layer instead of keeping a second copy of the layer code
 * (tests/unit/test_baseline_quarot.c checks that against an independent recomputation).
 */
#include "baseline_smoothrot.h"
#include "error.h"
#include "fq_layer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int smooth_stats_collect(const llama_model *m, const int32_t *ids, size_t n_windows, int seqlen,
                         float **down_max)
{
    if (!down_max)
        return fq_error("worker/baseline_smoothrot.c:smooth_stats_collect: NULL output");
    *down_max = NULL;
    if (!m || !ids)
        return fq_error("worker/baseline_smoothrot.c:smooth_stats_collect: NULL model or "
                        "tokens (expected both)");
    if (n_windows == 0 || seqlen <= 0)
        return fq_error("worker/baseline_smoothrot.c:smooth_stats_collect: %zu windows of %d "
                        "tokens (expected at least one window of at least one token)",
                        n_windows, seqlen);
    const llama_config *c = &m->cfg;
    int f = c->intermediate, d = c->hidden;
    if (llama_check_ids(c, ids, n_windows * (size_t)seqlen) != FQ_OK)
        return fq_error_wrap("worker/baseline_smoothrot.c:smooth_stats_collect");
    float *mx = fq_calloc((size_t)c->n_layers * f, sizeof(float), "down_proj statistics");
    real *x = fq_malloc(sizeof(real) * (size_t)seqlen * d, "activations");
    rope_table rope;
    llama_scratch w;
    memset(&rope, 0, sizeof rope);
    memset(&w, 0, sizeof w);
    int rc = FQ_ERR;
    if (!mx || !x || rope_table_init(&rope, c, seqlen) != FQ_OK ||
        llama_scratch_init(&w, c, 1, seqlen) != FQ_OK)
        goto done;
    for (size_t win = 0; win < n_windows; win++) {
        llama_embed_fwd(x, m->embed, d, ids + win * (size_t)seqlen, seqlen);
        for (int i = 0; i < c->n_layers; i++) {
            llama_layer_fwd(x, &m->layers[i], c, &rope, 1, seqlen, &w);
            float *row = mx + (size_t)i * f;
            for (long t = 0; t < seqlen; t++)
                for (int j = 0; j < f; j++) {
                    float v = fabsf((float)w.gate[t * f + j]);
                    /* NaN compares false: keep it visible instead of dropping it */
                    if (!(v <= row[j]))
                        row[j] = v;
                }
        }
    }
    for (size_t i = 0; i < (size_t)c->n_layers * f; i++)
        if (!isfinite(mx[i])) {
            fq_error("worker/baseline_smoothrot.c:smooth_stats_collect: layer %zu down_proj "
                     "input channel %zu reached %g (expected finite activations)", i / f,
                     i % f, (double)mx[i]);
            goto done;
        }
    *down_max = mx;
    mx = NULL;
    rc = FQ_OK;
done:
    free(mx);
    free(x);
    rope_table_free(&rope);
    llama_scratch_free(&w);
    return rc;
}

int smooth_down_scales_layer(const llama_layer *l, int d, int f, const float *down_max,
                             double alpha, float *s)
{
    if (!l || !down_max || !s)
        return fq_error("worker/baseline_smoothrot.c:smooth_down_scales_layer: NULL argument");
    if (!(alpha >= 0 && alpha <= 1))
        return fq_error("worker/baseline_smoothrot.c: smooth_alpha %g (expected 0..1)", alpha);
    double *wm = fq_malloc(sizeof(double) * (size_t)f, "weight column maxima");
    if (!wm)
        return FQ_ERR;
    const real *wd = l->wdown;
    fq_col_absmax(wm, &wd, &d, 1, f);
    for (int j = 0; j < f; j++) {
        double xm = down_max[j];
        if (!(isfinite(xm) && xm >= 0)) {
            free(wm);
            return fq_error("worker/baseline_smoothrot.c: down_proj statistic %d is %g "
                            "(expected finite, >= 0)", j, xm);
        }
        double v = pow(xm, alpha) / pow(fmax(wm[j], 1e-5), 1 - alpha);
        s[j] = (float)fmax(v, 1e-5);
    }
    free(wm);
    return FQ_OK;
}

int smooth_down_scales(const llama_model *m, const float *down_max, double alpha,
                       float **scales)
{
    if (!scales)
        return fq_error("worker/baseline_smoothrot.c:smooth_down_scales: NULL output");
    *scales = NULL;
    if (!m || !down_max)
        return fq_error("worker/baseline_smoothrot.c:smooth_down_scales: NULL model or "
                        "statistics (expected both)");
    int f = m->cfg.intermediate, d = m->cfg.hidden;
    float *s = fq_malloc(sizeof(float) * (size_t)m->cfg.n_layers * f, "smoothing scales");
    if (!s)
        return FQ_ERR;
    for (int i = 0; i < m->cfg.n_layers; i++)
        if (smooth_down_scales_layer(&m->layers[i], d, f, down_max + (size_t)i * f, alpha,
                                     s + (size_t)i * f) != FQ_OK) {
            free(s);
            return fq_error_wrap("layer %d", i);
        }
    *scales = s;
    return FQ_OK;
}

int baseline_smoothrot(const llama_model *fp, const qconfig *qc, const quarot_opts *o,
                       const float *down_max, double alpha, quarot_model *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    float *s = NULL;
    if (smooth_down_scales(fp, down_max, alpha, &s) != FQ_OK)
        return fq_error_wrap("smoothrot");
    int rc = baseline_quarot(fp, qc, o, s, out);
    free(s);
    return rc == FQ_OK ? FQ_OK : fq_error_wrap("smoothrot");
}
