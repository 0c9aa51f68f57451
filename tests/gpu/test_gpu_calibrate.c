/* test_gpu_calibrate.c — worker/calibrate_layer_cuda.c against worker/calibrate_layer.c on
 * the shape of stories260K's layer 0 (d 64, 8 heads / 4 KV heads of 8, f 172), random
 * weights, targets from the FP layer itself, sq_style scales from the same FP pass:
 * 4 samples × 32 tokens, batch 2, 3 epochs (6 AdamW steps), the W4A4KV4 recipe.
 *
 * Checks: the loss before within 1e-4 relative of the CPU. Training through 4-bit codes
 * is chaotic in the last bits: a rounding difference flips a code, and AdamW's first
 * steps move every parameter by ±lr whatever its gradient's size. So the CPU is also run
 * on inputs nudged by one ulp, and each later quantity (every epoch's summed MSE, the
 * loss after, ‖Δp‖/‖p‖ per group) must be within max(floor, 10 × that CPU self-drift)
 * of the CPU, floors 1e-4 (losses) and 2e-3 (parameters): the GPU may differ from the
 * CPU no more than the CPU differs from itself under rounding-sized noise. The streamed plan
 * (fetch callback, every batch uploaded) gives the same bytes as the resident plan; two
 * resident runs give the same bytes; a NaN input stops the layer with an error naming it.
 */
#include "gpu_check.h"
#include "gpu_layer_fixture.h"
#include "worker/calibrate_layer_cuda.h"

enum { NS = 4, SEQ = 32, EPOCHS = 3 };

typedef struct {
    double mse[EPOCHS];
    int n;
} epoch_log;

static void on_epoch(void *ctx, const calib_epoch_log *lg)
{
    epoch_log *el = ctx;
    if (lg->epoch < EPOCHS)
        el->mse[lg->epoch] = lg->mse_sum;
    el->n++;
}

typedef struct {
    const float *x, *y;
    size_t per;
} fetch_src;

static int fetch(void *ctx, int first, int count, float *x, float *y)
{
    fetch_src *fs = ctx;
    memcpy(x, fs->x + (size_t)first * fs->per, sizeof(float) * fs->per * count);
    memcpy(y, fs->y + (size_t)first * fs->per, sizeof(float) * fs->per * count);
    return FQ_OK;
}

static void rel_report(gpu_suite *t, const char *name, double got, double ref, double tol)
{
    double rel = fabs(got - ref) / fmax(fabs(ref), 1e-30);
    gpu_report(t, name, rel, tol, isfinite(got) && rel <= tol, "");
}

/* got vs ref within max(floor, 10 × |pert − ref|), all relative to |ref| */
static void drift_report(gpu_suite *t, const char *name, double got, double ref, double pert,
                         double floor)
{
    double tol = fmax(floor, 10 * fabs(pert - ref) / fmax(fabs(ref), 1e-30));
    rel_report(t, name, got, ref, tol);
}

static double rel_norm(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

int main(void)
{
    gpu_suite t;
    gpu_suite_begin(&t, "calibrate", 7);
    llama_config c;
    gpu_layer_config(&c, 64, 8, 4, 8, 172);
    gpu_layer L;
    gpu_layer_init(&L, &c, 21, 0.125);
    const size_t per = (size_t)SEQ * c.hidden, nx = NS * per;
    float *x = gpu_host(nx), *y = gpu_host(nx);
    gpu_layer_inputs(x, NS * SEQ, c.hidden, 8, 2, 8.0);
    memcpy(y, x, sizeof(float) * nx);
    fq_stats st;
    llama_scratch w;
    rope_table rope;
    if (fq_stats_init(&st, &c) || llama_scratch_init(&w, &c, 1, SEQ) ||
        rope_table_init(&rope, &c, SEQ))
        gpu_die(&t, "FP pass setup");
    for (int i = 0; i < NS; i++)
        if (fq_stats_layer_fwd(&st, y + i * per, &L.l, &c, &rope, 1, SEQ, &w))
            gpu_die(&t, "fq_stats_layer_fwd");
    fq_recipe r = fq_recipe_defaults();
    r.epochs = EPOCHS;
    r.batch = 2;
    r.seed = 3;

    epoch_log lc = {{0}, 0}, lg = {{0}, 0}, ls = {{0}, 0}, lg2 = {{0}, 0};
    calib_data dc = {NS, SEQ, x, y, NULL, NULL, on_epoch, &lc, 0};
    calib_data dg = {NS, SEQ, x, y, NULL, NULL, on_epoch, &lg, 0};
    calib_data dg2 = {NS, SEQ, x, y, NULL, NULL, on_epoch, &lg2, 0};
    fetch_src fs = {x, y, per};
    calib_data dstream = {NS, SEQ, NULL, NULL, fetch, &fs, on_epoch, &ls, 1};
    float *xp = gpu_host(nx);
    for (size_t i = 0; i < nx; i++)
        xp[i] = nextafterf(x[i], i % 2 ? INFINITY : -INFINITY);
    epoch_log lp = {{0}, 0};
    calib_data dp = {NS, SEQ, xp, y, NULL, NULL, on_epoch, &lp, 0};
    fq_params Pc, Pg, Pg2, Ps, Pp;
    calib_result rc, rg, rg2, rs, rp;
    if (calibrate_layer(&Pc, &L.l, &c, &r, &st, &dc, 0, &rc) ||
        calibrate_layer(&Pp, &L.l, &c, &r, &st, &dp, 0, &rp))
        gpu_die(&t, "calibrate_layer (CPU)");
    gpu_call(&t, calibrate_layer_cuda(&t.ctx, &Pg, &L.l, &c, &r, &st, &dg, 0, &rg),
             "calibrate_layer_cuda");
    gpu_call(&t, calibrate_layer_cuda(&t.ctx, &Pg2, &L.l, &c, &r, &st, &dg2, 0, &rg2),
             "calibrate_layer_cuda (repeat)");
    gpu_call(&t, calibrate_layer_cuda(&t.ctx, &Ps, &L.l, &c, &r, &st, &dstream, 0, &rs),
             "calibrate_layer_cuda (streamed)");
    printf("INFO|loss before %.6e after %.6e (CPU %.6e %.6e), peak device %.1f MiB "
           "(streamed %.1f MiB)\n", rg.loss_before, rg.loss_after, rc.loss_before,
           rc.loss_after, rg.peak_device_bytes / 1048576.0, rs.peak_device_bytes / 1048576.0);

    rel_report(&t, "loss before vs CPU", rg.loss_before, rc.loss_before, 1e-4);
    for (int e = 0; e < EPOCHS; e++) {
        char name[64];
        snprintf(name, sizeof name, "epoch %d MSE sum vs CPU", e);
        drift_report(&t, name, lg.mse[e], lc.mse[e], lp.mse[e], 1e-4);
        printf("INFO|epoch %d: CPU %.9e GPU %.9e CPU(1-ulp inputs) %.9e\n", e, lc.mse[e],
               lg.mse[e], lp.mse[e]);
    }
    drift_report(&t, "loss after vs CPU", rg.loss_after, rc.loss_after, rp.loss_after, 1e-4);
    gpu_report(&t, "steps and epoch logs", (double)(rg.steps - rc.steps), 0,
               rg.steps == rc.steps && rg.steps == EPOCHS * (NS / 2) && lg.n == EPOCHS, " diff");
    for (int gi = 0; gi < FQ_NGROUPS; gi++) {
        char name[64];
        size_t lo = Pc.group_off[gi], n = Pc.group_off[gi + 1] - lo;
        snprintf(name, sizeof name, "trained p[%s] vs CPU", fq_group_names[gi]);
        double self = rel_norm(Pp.p + lo, Pc.p + lo, n);
        gpu_check_rel(&t, name, Pg.p + lo, Pc.p + lo, n, fmax(2e-3, 10 * self));
        printf("INFO|p[%s]: GPU vs CPU %.3e, CPU self-drift %.3e\n", fq_group_names[gi],
               rel_norm(Pg.p + lo, Pc.p + lo, n), self);
    }
    gpu_check_exact(&t, "repeat run: same p (bytes)", Pg2.p, Pg.p, Pg.n);
    gpu_check_exact(&t, "streamed plan: same p (bytes)", Ps.p, Pg.p, Pg.n);
    gpu_report(&t, "streamed plan: same losses", fabs(rs.loss_after - rg.loss_after), 0,
               rs.loss_after == rg.loss_after && rs.loss_before == rg.loss_before &&
                   memcmp(ls.mse, lg.mse, sizeof ls.mse) == 0, "");
    gpu_report(&t, "peak device bytes reported", (double)rg.peak_device_bytes, 0,
               rg.peak_device_bytes > 0, " B");

    /* a NaN in the inputs: the layer stops with its index and the non-finite loss */
    x[5] = NAN;
    fq_params Pn;
    calib_result rn;
    calib_data dn = {NS, SEQ, x, y, NULL, NULL, NULL, NULL, 0};
    int bad = calibrate_layer_cuda(&t.ctx, &Pn, &L.l, &c, &r, &st, &dn, 3, &rn);
    const char *msg = fq_errmsg();
    int ok = bad == FQ_ERR && strstr(msg, "layer 3") && strstr(msg, "NaN");
    printf("INFO|NaN input: %s\n", msg);
    gpu_report(&t, "NaN input: error names layer and NaN", ok ? 0 : 1, 0, ok, "");

    fq_params_free(&Pc);
    fq_params_free(&Pp);
    free(xp);
    fq_params_free(&Pg);
    fq_params_free(&Pg2);
    fq_params_free(&Ps);
    fq_stats_free(&st);
    llama_scratch_free(&w);
    rope_table_free(&rope);
    gpu_layer_free(&L);
    free(x);
    free(y);
    return gpu_suite_end(&t);
}
