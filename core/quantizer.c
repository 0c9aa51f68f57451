/* quantizer.c — fake quantizers with learnable clipping and STE gradients.
 *
 * Structure: one scan gives a row's extrema (and how many elements tie for them); one
 * helper turns extrema and clip ratios into the scale plus a record of which branch was
 * taken; forward and backward share both, so the backward sees exactly the forward's
 * decisions. See quantizer.h for the conventions and ALGORITHM §2 for the math.
 */
#include "quantizer.h"

#include <stdbool.h>

#include "error.h"

/* The weight range floor of ALGORITHM §2.1 / §10. */
#define WEIGHT_RANGE_FLOOR ((real)1e-5)

real quant_sigmoid(real x) { return (real)1 / ((real)1 + exp(-x)); }

typedef struct {
    real umax, umin; /* max_j u_j and min_j u_j */
    int nmax, nmin;  /* how many elements equal them (ties share the gradient) */
} row_extrema;

static row_extrema row_extrema_scan(const real *u, int n)
{
    row_extrema e = {u[0], u[0], 1, 1};
    for (int j = 1; j < n; j++) {
        if (u[j] > e.umax) {
            e.umax = u[j];
            e.nmax = 1;
        } else if (u[j] == e.umax) {
            e.nmax++;
        }
        if (u[j] < e.umin) {
            e.umin = u[j];
            e.nmin = 1;
        } else if (u[j] == e.umin) {
            e.nmin++;
        }
    }
    return e;
}

/* How the symmetric range t = max(|l|, m) was decided, for the backward. */
typedef struct {
    real s;          /* the scale */
    real w_m, w_l;   /* share of ∂t that goes to m and to l: (1,0), (0,1) or (½,½) */
    bool no_grad;    /* t = 0 ⇒ s = 1 branch, or weight range floored */
} sym_range;

static sym_range sym_range_of(real m, real l, int maxq, bool weight)
{
    sym_range r = {0, 0, 0, false};
    real t = -l > m ? -l : m;
    if (-l > m)
        r.w_l = 1;
    else if (m > -l)
        r.w_m = 1;
    else
        r.w_m = r.w_l = (real)0.5;
    if (weight) {
        if (t < WEIGHT_RANGE_FLOOR) {
            t = WEIGHT_RANGE_FLOOR;
            r.no_grad = true;
        }
    } else if (t == 0) {
        r.s = 1;
        r.no_grad = true;
        return r;
    }
    r.s = t / (real)maxq;
    return r;
}

static int check_bits(const char *where, int bits)
{
    if (bits < 2 || bits > 8)
        return fq_error("core/quantizer.c:%s: bits = %d (expected 2..8; 16 means no "
                        "quantization and is handled by the caller)", where, bits);
    return FQ_OK;
}

static int check_shape(const char *where, int rows, int k, int blocks)
{
    if (rows <= 0 || k <= 0)
        return fq_error("core/quantizer.c:%s: shape [%d, %d] (expected positive rows and "
                        "row length)", where, rows, k);
    if (blocks <= 0 || k % blocks != 0)
        return fq_error("core/quantizer.c:%s: blocks = %d for row length %d (expected a "
                        "positive divisor of the row length)", where, blocks, k);
    return FQ_OK;
}

static int check_logits(const char *where, real cmax, real cmin)
{
    if (!isfinite(cmax) || !isfinite(cmin))
        return fq_error("core/quantizer.c:%s: clip logits (%g, %g) (expected finite values)",
                        where, (double)cmax, (double)cmin);
    return FQ_OK;
}

/* ---------- symmetric activation quantizer ---------- */

int quant_act_sym_fwd(real *out, real *scale, const real *in, int rows, int k, int blocks,
                      int bits, real cmax, real cmin)
{
    if (check_logits("quant_act_sym_fwd", cmax, cmin))
        return FQ_ERR;
    return quant_act_sym_ratio(out, scale, in, rows, k, blocks, bits, quant_sigmoid(cmax),
                               quant_sigmoid(cmin));
}

int quant_act_sym_ratio(real *out, real *scale, const real *in, int rows, int k, int blocks,
                        int bits, real kmax, real kmin)
{
    if (!out || !scale || !in)
        return fq_error("core/quantizer.c:quant_act_sym_fwd: NULL buffer (expected out, "
                        "scale and in)");
    if (check_bits("quant_act_sym_fwd", bits) || check_shape("quant_act_sym_fwd", rows, k, blocks))
        return FQ_ERR;
    const int maxq = (1 << (bits - 1)) - 1, minq = -(1 << (bits - 1));
    const int len = k / blocks;
    const long nrows = (long)rows * blocks;
    for (long r = 0; r < nrows; r++) {
        const real *u = in + r * len;
        real *o = out + r * len;
        row_extrema e = row_extrema_scan(u, len);
        real m = (e.umax > 0 ? e.umax : 0) * kmax, l = (e.umin < 0 ? e.umin : 0) * kmin;
        real s = sym_range_of(m, l, maxq, false).s;
        if (!isfinite(s))
            return fq_error("core/quantizer.c:quant_act_sym_fwd: row %ld has a non-finite "
                            "range (expected finite activations)", r / blocks);
        scale[r] = s;
        for (int j = 0; j < len; j++) {
            real q = rint(u[j] / s);
            q = q < minq ? minq : (q > maxq ? maxq : q);
            o[j] = s * q;
        }
    }
    return FQ_OK;
}

/* Route the range gradients (G_m, G_l) of one row to the clip logits and to the extreme
 * elements of u (ALGORITHM §2.4). kmax/kmin are the clip ratios (1 for weights). */
static void range_bwd(real *g_u, real *g_cmax, real *g_cmin, const real *u, int n,
                      const row_extrema *e, real g_m, real g_l, real kmax, real kmin)
{
    if (g_m != 0) {
        real pos = e->umax > 0 ? e->umax : 0;
        if (g_cmax)
            *g_cmax += g_m * pos * kmax * (1 - kmax);
        if (e->umax > 0 && g_u) {
            real share = g_m * kmax / (real)e->nmax;
            for (int j = 0; j < n; j++)
                if (u[j] == e->umax)
                    g_u[j] += share;
        }
    }
    if (g_l != 0) {
        real neg = e->umin < 0 ? e->umin : 0;
        if (g_cmin)
            *g_cmin += g_l * neg * kmin * (1 - kmin);
        if (e->umin < 0 && g_u) {
            real share = g_l * kmin / (real)e->nmin;
            for (int j = 0; j < n; j++)
                if (u[j] == e->umin)
                    g_u[j] += share;
        }
    }
}

int quant_act_sym_bwd(real *g_in, real *g_cmax, real *g_cmin, const real *g_out,
                      const real *in, const real *scale, int rows, int k, int blocks,
                      int bits, real cmax, real cmin)
{
    if (!g_in || !g_cmax || !g_cmin || !g_out || !in || !scale)
        return fq_error("core/quantizer.c:quant_act_sym_bwd: NULL buffer (expected g_in, "
                        "g_cmax, g_cmin, g_out, in and scale)");
    if (check_bits("quant_act_sym_bwd", bits) || check_shape("quant_act_sym_bwd", rows, k, blocks) ||
        check_logits("quant_act_sym_bwd", cmax, cmin))
        return FQ_ERR;
    const int maxq = (1 << (bits - 1)) - 1, minq = -(1 << (bits - 1));
    const real kmax = quant_sigmoid(cmax), kmin = quant_sigmoid(cmin);
    const int len = k / blocks;
    const long nrows = (long)rows * blocks;
    for (long r = 0; r < nrows; r++) {
        const real *u = in + r * len, *g = g_out + r * len;
        real *gu = g_in + r * len;
        const real s = scale[r];
        if (!(s > 0) || !isfinite(s))
            return fq_error("core/quantizer.c:quant_act_sym_bwd: scale[%ld] = %g (expected the "
                            "positive scale saved by the forward)", r, (double)s);
        row_extrema e = row_extrema_scan(u, len);
        real m = (e.umax > 0 ? e.umax : 0) * kmax, l = (e.umin < 0 ? e.umin : 0) * kmin;
        sym_range rg = sym_range_of(m, l, maxq, false);
        real g_s = 0;
        for (int j = 0; j < len; j++) {
            real x = u[j] / s, q = rint(x);
            bool inside = q >= minq && q <= maxq;
            real qc = q < minq ? minq : (q > maxq ? maxq : q);
            gu[j] = inside ? g[j] : 0;
            g_s += g[j] * (inside ? qc - x : qc);
        }
        if (rg.no_grad)
            continue;
        real g_t = g_s / (real)maxq;
        /* t = max(-l, m): ∂t/∂l = -1 when |l| wins. */
        range_bwd(gu, g_cmax, g_cmin, u, len, &e, g_t * rg.w_m, -g_t * rg.w_l, kmax, kmin);
    }
    return FQ_OK;
}

/* ---------- asymmetric KV quantizer ---------- */

/* Scale and zero point of one asymmetric row; *no_grad when the all-zero branch fired. */
static void asym_range_of(real m, real l, int qmax, real *s, real *z, bool *no_grad)
{
    *no_grad = false;
    if (m == 0 && l == 0) {
        l = -1;
        m = 1;
        *no_grad = true;
    }
    *s = (m - l) / (real)qmax;
    *z = rint(-l / *s);
}

int quant_kv_asym_fwd(real *out, real *scale, real *zero, const real *in, int rows, int len,
                      int bits, real cmax, real cmin)
{
    if (check_logits("quant_kv_asym_fwd", cmax, cmin))
        return FQ_ERR;
    return quant_kv_asym_ratio(out, scale, zero, in, rows, len, bits, quant_sigmoid(cmax),
                               quant_sigmoid(cmin));
}

int quant_kv_asym_ratio(real *out, real *scale, real *zero, const real *in, int rows, int len,
                        int bits, real kmax, real kmin)
{
    if (!out || !scale || !zero || !in)
        return fq_error("core/quantizer.c:quant_kv_asym_fwd: NULL buffer (expected out, "
                        "scale, zero and in)");
    if (check_bits("quant_kv_asym_fwd", bits) || check_shape("quant_kv_asym_fwd", rows, len, 1))
        return FQ_ERR;
    const int qmax = (1 << bits) - 1;
    for (long r = 0; r < rows; r++) {
        const real *u = in + r * len;
        real *o = out + r * len;
        row_extrema e = row_extrema_scan(u, len);
        real m = (e.umax > 0 ? e.umax : 0) * kmax, l = (e.umin < 0 ? e.umin : 0) * kmin;
        real s, z;
        bool no_grad;
        asym_range_of(m, l, qmax, &s, &z, &no_grad);
        if (!isfinite(s) || !isfinite(z))
            return fq_error("core/quantizer.c:quant_kv_asym_fwd: row %ld has a non-finite "
                            "range (expected finite K/V values)", r);
        scale[r] = s;
        zero[r] = z;
        for (int j = 0; j < len; j++) {
            real q = rint(u[j] / s) + z;
            q = q < 0 ? 0 : (q > qmax ? qmax : q);
            o[j] = s * (q - z);
        }
    }
    return FQ_OK;
}

int quant_kv_asym_bwd(real *g_in, real *g_cmax, real *g_cmin, const real *g_out,
                      const real *in, const real *scale, const real *zero, int rows, int len,
                      int bits, real cmax, real cmin)
{
    if (!g_in || !g_cmax || !g_cmin || !g_out || !in || !scale || !zero)
        return fq_error("core/quantizer.c:quant_kv_asym_bwd: NULL buffer (expected g_in, "
                        "g_cmax, g_cmin, g_out, in, scale and zero)");
    if (check_bits("quant_kv_asym_bwd", bits) || check_shape("quant_kv_asym_bwd", rows, len, 1) ||
        check_logits("quant_kv_asym_bwd", cmax, cmin))
        return FQ_ERR;
    const int qmax = (1 << bits) - 1;
    const real kmax = quant_sigmoid(cmax), kmin = quant_sigmoid(cmin);
    for (long r = 0; r < rows; r++) {
        const real *u = in + r * len, *g = g_out + r * len;
        real *gu = g_in + r * len;
        const real s = scale[r], z = zero[r];
        if (!(s > 0) || !isfinite(s))
            return fq_error("core/quantizer.c:quant_kv_asym_bwd: scale[%ld] = %g (expected the "
                            "positive scale saved by the forward)", r, (double)s);
        row_extrema e = row_extrema_scan(u, len);
        real m = (e.umax > 0 ? e.umax : 0) * kmax, l = (e.umin < 0 ? e.umin : 0) * kmin;
        real s_chk, z_chk;
        bool no_grad;
        asym_range_of(m, l, qmax, &s_chk, &z_chk, &no_grad);
        real g_s = 0;
        for (int j = 0; j < len; j++) {
            real x = u[j] / s, q = rint(x) + z;
            bool inside = q >= 0 && q <= qmax;
            real qc = q < 0 ? 0 : (q > qmax ? qmax : q);
            gu[j] = inside ? g[j] : 0;
            g_s += g[j] * (inside ? (qc - z) - x : qc - z);
        }
        if (no_grad)
            continue;
        real g_m = g_s / (real)qmax;
        range_bwd(gu, g_cmax, g_cmin, u, len, &e, g_m, -g_m, kmax, kmin);
    }
    return FQ_OK;
}

/* ---------- weights with learnable weight clipping ---------- */

/* Where a clamped weight element took its value from. */
enum { FROM_W = 0, FROM_WMIN = 1, FROM_WMAX = 2 };

/* Wc = min(max(w, wmin), wmax), in that order, as ALGORITHM §2.3 writes it. */
static real lwc_clamp(real w, real wmin, real wmax, int *from)
{
    real p = w;
    *from = FROM_W;
    if (w < wmin) {
        p = wmin;
        *from = FROM_WMIN;
    }
    if (p > wmax) {
        p = wmax;
        *from = FROM_WMAX;
    }
    return p;
}

static int check_weight_args(const char *where, const real *w, int rows, int cols, int bits,
                             const real *a, const real *b)
{
    if (!w || !a || !b)
        return fq_error("core/quantizer.c:%s: NULL buffer (expected w, a and b)", where);
    if (check_bits(where, bits) || check_shape(where, rows, cols, 1))
        return FQ_ERR;
    for (int r = 0; r < rows; r++)
        if (!isfinite(a[r]) || !isfinite(b[r]))
            return fq_error("core/quantizer.c:%s: weight clip logits of row %d are (%g, %g) "
                            "(expected finite values)", where, r, (double)a[r], (double)b[r]);
    return FQ_OK;
}

int quant_weight_lwc_fwd(real *out, real *scale, const real *w, int rows, int cols, int bits,
                         const real *a, const real *b)
{
    if (!out || !scale)
        return fq_error("core/quantizer.c:quant_weight_lwc_fwd: NULL buffer (expected out "
                        "and scale)");
    if (check_weight_args("quant_weight_lwc_fwd", w, rows, cols, bits, a, b))
        return FQ_ERR;
    const int maxq = (1 << (bits - 1)) - 1, minq = -(1 << (bits - 1));
    for (long r = 0; r < rows; r++) {
        const real *wr = w + r * cols;
        real *o = out + r * cols;
        row_extrema e = row_extrema_scan(wr, cols);
        real wmax = e.umax * quant_sigmoid(a[r]), wmin = e.umin * quant_sigmoid(b[r]);
        /* Clamped copy goes to out first; its extrema set the scale (κ = 1). */
        int from;
        for (int j = 0; j < cols; j++)
            o[j] = lwc_clamp(wr[j], wmin, wmax, &from);
        row_extrema ec = row_extrema_scan(o, cols);
        real m = ec.umax > 0 ? ec.umax : 0, l = ec.umin < 0 ? ec.umin : 0;
        real s = sym_range_of(m, l, maxq, true).s;
        if (!isfinite(s))
            return fq_error("core/quantizer.c:quant_weight_lwc_fwd: row %ld has a non-finite "
                            "range (expected finite weights)", r);
        scale[r] = s;
        for (int j = 0; j < cols; j++) {
            real q = rint(o[j] / s);
            q = q < minq ? minq : (q > maxq ? maxq : q);
            o[j] = s * q;
        }
    }
    return FQ_OK;
}

int quant_weight_lwc_bwd(real *g_w, real *g_a, real *g_b, const real *g_out, const real *w,
                         const real *scale, int rows, int cols, int bits, const real *a,
                         const real *b)
{
    if (!g_out || !scale)
        return fq_error("core/quantizer.c:quant_weight_lwc_bwd: NULL buffer (expected g_out "
                        "and scale)");
    if (check_weight_args("quant_weight_lwc_bwd", w, rows, cols, bits, a, b))
        return FQ_ERR;
    const int maxq = (1 << (bits - 1)) - 1, minq = -(1 << (bits - 1));
    for (long r = 0; r < rows; r++) {
        const real *wr = w + r * cols, *g = g_out + r * cols;
        real *gw = g_w ? g_w + r * cols : NULL;
        const real s = scale[r];
        if (!(s > 0) || !isfinite(s))
            return fq_error("core/quantizer.c:quant_weight_lwc_bwd: scale[%ld] = %g (expected "
                            "the positive scale saved by the forward)", r, (double)s);
        const real sa = quant_sigmoid(a[r]), sb = quant_sigmoid(b[r]);
        row_extrema e = row_extrema_scan(wr, cols);
        real wmax = e.umax * sa, wmin = e.umin * sb;
        /* Extrema of the clamped row, without materialising it. */
        int from;
        row_extrema ec = {lwc_clamp(wr[0], wmin, wmax, &from), 0, 0, 0};
        ec.umin = ec.umax;
        for (int j = 0; j < cols; j++) {
            real c = lwc_clamp(wr[j], wmin, wmax, &from);
            if (c > ec.umax) {
                ec.umax = c;
                ec.nmax = 0;
            }
            if (c == ec.umax)
                ec.nmax++;
            if (c < ec.umin) {
                ec.umin = c;
                ec.nmin = 0;
            }
            if (c == ec.umin)
                ec.nmin++;
        }
        real m = ec.umax > 0 ? ec.umax : 0, l = ec.umin < 0 ? ec.umin : 0;
        sym_range rg = sym_range_of(m, l, maxq, true);
        /* Pass 1: quantizer STE and the scale gradient. */
        real g_s = 0;
        for (int j = 0; j < cols; j++) {
            real c = lwc_clamp(wr[j], wmin, wmax, &from);
            real x = c / s, q = rint(x);
            bool inside = q >= minq && q <= maxq;
            real qc = q < minq ? minq : (q > maxq ? maxq : q);
            g_s += g[j] * (inside ? qc - x : qc);
        }
        real g_t = rg.no_grad ? 0 : g_s / (real)maxq;
        real g_m = g_t * rg.w_m, g_l = -g_t * rg.w_l;
        /* Pass 2: gradient w.r.t. each clamped element, then through the clamp. */
        real g_wmax = 0, g_wmin = 0;
        for (int j = 0; j < cols; j++) {
            real c = lwc_clamp(wr[j], wmin, wmax, &from);
            real q = rint(c / s);
            real gc = (q >= minq && q <= maxq) ? g[j] : 0;
            if (ec.umax > 0 && c == ec.umax)
                gc += g_m / (real)ec.nmax;
            if (ec.umin < 0 && c == ec.umin)
                gc += g_l / (real)ec.nmin;
            if (from == FROM_WMAX)
                g_wmax += gc;
            else if (from == FROM_WMIN)
                g_wmin += gc;
            if (gw)
                gw[j] = from == FROM_W ? gc : 0;
        }
        /* wmax = max_j w · σ(a), wmin = min_j w · σ(b). */
        if (g_a)
            g_a[r] += g_wmax * e.umax * sa * (1 - sa);
        if (g_b)
            g_b[r] += g_wmin * e.umin * sb * (1 - sb);
        if (gw) {
            for (int j = 0; j < cols; j++) {
                if (wr[j] == e.umax)
                    gw[j] += g_wmax * sa / (real)e.nmax;
                if (wr[j] == e.umin)
                    gw[j] += g_wmin * sb / (real)e.nmin;
            }
        }
    }
    return FQ_OK;
}
