/* test_gpu_calibrate.c — worker/calibrate_layer_cuda.c against worker/calibrate_layer.c on
 * the shape of stories260K's layer 0 (d 64, 8 heads / 4 KV heads of 8, f 172), random
 * weights, targets from the FP layer itself, sq_style scales from the same FP pass:
 * 4 samples × 32 tokens, batch 2, 3 epochs (6 AdamW steps).
 *
 * Why the multi-step checks are shaped as they are (measured on the CPU, bench/NOTES.md
 * "GPU layer step", parity): training through 4-bit codes is chaotic. The CPU loop run in
 * fp32 and in float64 on this same fixture drifts apart by 1.7e-3 in epoch 1's MSE, 1.9e-2
 * to 3.7e-2 in epoch 2's (Gauss-Jordan or LAPACK factor solves) and 1.8e-2 in the final
 * loss (other fixture seeds: up to 2.2e-2), its trained parameters by up to 15% of how far
 * training moved them: the same size as the GPU-vs-CPU drift (H200: 1.8e-3, 3.8e-2,
 * 3.8e-2). A rounding difference flips a code, and AdamW's step is ±lr whatever
 * the gradient's size. With every quantizer off (bits 16) the objective is flat: the
 * transforms cancel exactly, every gradient is rounding noise, AdamW turns that noise into
 * ±lr steps and even fp32 vs float64 parameters drift 4e-2 apart, so there a trajectory
 * cannot be compared; the loss must stay at rounding level instead.
 *
 * Checks, each able to fail:
 *  - W4A4KV4, before the chaos: loss before and epoch 0 (steps 1–2, one AdamW update
 *    between them) within 1e-5 of the CPU.
 *  - W4A4KV4 at a trained point: one step (forward, loss, backward) from the CPU's
 *    parameters after 6 steps, on both backends: y, loss 1e-5, transform/scale gradients
 *    1e-5, clip-logit gradients 1e-4 (as test_gpu_fq_layer, but off the initial point).
 *  - W4A4KV4 after 3 epochs: epochs 1, 2 and the loss after within 1e-1 of the CPU
 *    (2.7× the largest fp32-vs-float64 spread above); training lowered the loss by ≥ 10%
 *    (the CPU: 19%); per group ‖p_gpu − p_cpu‖ ≤ 0.35 ‖p_cpu − p_init‖ (fp32 vs float64:
 *    ≤ 0.15; a dead or sign-flipped group gives ~1 or ~2).
 *  - bits 16: the loss before and after 3 epochs ≤ 1e-10 × mean(Y²) on both backends (the
 *    weight-side inverses still cancel the activation side after the parameters moved).
 *  - the loop with FQ_MATH_BF16 (linears on bf16 codes): loss before within 1e-2 (attention
 *    in tensor-core math flips codes), loss after within the chaotic 1e-1.
 *  - the streamed plan gives the resident plan's bytes; two runs give the same bytes; a NaN
 *    input stops the layer with an error naming it.
 */
#include "gpu_check.h"
#include "gpu_layer_fixture.h"
#include "kernels/fq_layer_cuda.h"
#include "worker/calibrate_layer_cuda.h"

enum { NS = 4, SEQ = 32, EPOCHS = 3, BATCH = 2 };

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

static double rel_of(double got, double ref) { return fabs(got - ref) / fmax(fabs(ref), 1e-30); }

static void rel_report(gpu_suite *t, const char *name, double got, double ref, double tol)
{
    double rel = rel_of(got, ref);
    gpu_report(t, name, rel, tol, isfinite(got) && rel <= tol, "");
}

static double dist(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(s);
}

typedef struct {
    llama_config c;
    gpu_layer L;
    float *x, *y;
    size_t per, nx;
    fq_stats st;
    double y_ms; /* mean(Y²) */
} fixture;

static void fixture_init(gpu_suite *t, fixture *f)
{
    gpu_layer_config(&f->c, 64, 8, 4, 8, 172);
    gpu_layer_init(&f->L, &f->c, 21, 0.125);
    f->per = (size_t)SEQ * f->c.hidden;
    f->nx = NS * f->per;
    f->x = gpu_host(f->nx);
    f->y = gpu_host(f->nx);
    gpu_layer_inputs(f->x, NS * SEQ, f->c.hidden, 8, 2, 8.0);
    memcpy(f->y, f->x, sizeof(float) * f->nx);
    llama_scratch w;
    rope_table rope;
    if (fq_stats_init(&f->st, &f->c) || llama_scratch_init(&w, &f->c, 1, SEQ) ||
        rope_table_init(&rope, &f->c, SEQ))
        gpu_die(t, "FP pass setup");
    for (int i = 0; i < NS; i++)
        if (fq_stats_layer_fwd(&f->st, f->y + i * f->per, &f->L.l, &f->c, &rope, 1, SEQ, &w))
            gpu_die(t, "fq_stats_layer_fwd");
    double s = 0;
    for (size_t i = 0; i < f->nx; i++)
        s += (double)f->y[i] * f->y[i];
    f->y_ms = s / (double)f->nx;
    llama_scratch_free(&w);
    rope_table_free(&rope);
}

static fq_recipe recipe(int bits)
{
    fq_recipe r = fq_recipe_defaults();
    r.epochs = EPOCHS;
    r.batch = BATCH;
    r.seed = 3;
    if (bits != 4)
        r.w_bits = r.a_bits = r.kv_bits = bits;
    return r;
}

/* One step from the parameters P (trained by the CPU) on samples 0..BATCH-1, both backends
 * with the same loss seed (the CPU's); P->p is left as it was. */
static void step_at_trained_point(gpu_suite *t, const fixture *f, fq_params *P)
{
    const size_t n = (size_t)BATCH * f->per;
    rope_table rope;
    fq_tape *ct;
    if (rope_table_init(&rope, &f->c, SEQ) || fq_tape_create(&ct, P, BATCH, SEQ, NULL))
        gpu_die(t, "trained-point setup");
    float *yc = gpu_host(n), *seed = gpu_host(n);
    memset(P->g, 0, sizeof(real) * P->n);
    if (fq_layer_fwd(ct, P, &f->L.l, &rope, f->x, yc))
        gpu_die(t, "CPU fq_layer_fwd");
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += ((double)yc[i] - f->y[i]) * ((double)yc[i] - f->y[i]);
    const double mse_c = s / (double)n;
    for (size_t i = 0; i < n; i++)
        seed[i] = (float)(2.0 / ((double)n * mse_c) * ((double)yc[i] - f->y[i]));
    if (fq_layer_bwd(ct, P, &f->L.l, &rope, seed))
        gpu_die(t, "CPU fq_layer_bwd");
    float *g_ref = gpu_host_copy(P->g, P->n);

    fq_tape_cuda *gt;
    gpu_call(t, fq_tape_cuda_create(&gt, &t->ctx, P, &f->L.l, &rope, BATCH, SEQ),
             "fq_tape_cuda_create");
    float *d_x = gpu_dev_copy(t, f->x, n), *d_t = gpu_dev_copy(t, f->y, n);
    float *d_seed = gpu_dev_copy(t, seed, n), *d_y = gpu_dev_poison(t, n);
    double mse_g;
    memset(P->g, 0xff, sizeof(real) * P->n); /* NaN: every gradient must be written */
    gpu_call(t, fq_layer_fwd_cuda(gt, P, d_x, d_y), "fq_layer_fwd_cuda");
    gpu_call(t, fq_layer_loss_cuda(gt, d_y, d_t, NULL, &mse_g), "fq_layer_loss_cuda");
    gpu_call(t, fq_layer_bwd_cuda(gt, P, d_seed), "fq_layer_bwd_cuda");
    float *yg = gpu_fetch(t, d_y, n);
    gpu_check_rel(t, "trained point: y vs CPU", yg, yc, n, 1e-5);
    rel_report(t, "trained point: loss vs CPU", mse_g, mse_c, 1e-5);
    for (int gi = 0; gi < FQ_NGROUPS; gi++) {
        char name[64];
        size_t lo = P->group_off[gi];
        snprintf(name, sizeof name, "trained point: g[%s] vs CPU", fq_group_names[gi]);
        gpu_check_rel(t, name, P->g + lo, g_ref + lo, P->group_off[gi + 1] - lo,
                      gi >= FQ_G_WCLIP ? 1e-4 : 1e-5);
    }
    fq_tape_cuda_free(gt);
    fq_tape_free(ct);
    rope_table_free(&rope);
    free(yc), free(seed), free(g_ref), free(yg);
}

static void test_quantized(gpu_suite *t, fixture *f)
{
    fq_recipe r = recipe(4);
    epoch_log lc = {{0}, 0}, lg = {{0}, 0}, ls = {{0}, 0}, lg2 = {{0}, 0};
    calib_data dc = {NS, SEQ, f->x, f->y, NULL, NULL, on_epoch, &lc, 0};
    calib_data dg = {NS, SEQ, f->x, f->y, NULL, NULL, on_epoch, &lg, 0};
    calib_data dg2 = {NS, SEQ, f->x, f->y, NULL, NULL, on_epoch, &lg2, 0};
    fetch_src fs = {f->x, f->y, f->per};
    calib_data dstream = {NS, SEQ, NULL, NULL, fetch, &fs, on_epoch, &ls, 1};
    fq_params Pc, Pg, Pg2, Ps, P0;
    calib_result rc, rg, rg2, rs;
    if (calibrate_layer(&Pc, &f->L.l, &f->c, &r, &f->st, &dc, 0, &rc) ||
        fq_params_init(&P0, &f->c, &r, &f->L.l, &f->st))
        gpu_die(t, "calibrate_layer (CPU)");
    gpu_call(t, calibrate_layer_cuda(&t->ctx, &Pg, &f->L.l, &f->c, &r, &f->st, &dg, 0, &rg),
             "calibrate_layer_cuda");
    gpu_call(t, calibrate_layer_cuda(&t->ctx, &Pg2, &f->L.l, &f->c, &r, &f->st, &dg2, 0, &rg2),
             "calibrate_layer_cuda (repeat)");
    gpu_call(t, calibrate_layer_cuda(&t->ctx, &Ps, &f->L.l, &f->c, &r, &f->st, &dstream, 0,
                                     &rs), "calibrate_layer_cuda (streamed)");
    printf("INFO|w4a4kv4: loss before %.9e after %.9e (CPU %.9e %.9e), peak device %.1f MiB "
           "(streamed %.1f MiB)\n", rg.loss_before, rg.loss_after, rc.loss_before,
           rc.loss_after, rg.peak_device_bytes / 1048576.0, rs.peak_device_bytes / 1048576.0);

    rel_report(t, "w4a4kv4 loss before vs CPU", rg.loss_before, rc.loss_before, 1e-5);
    rel_report(t, "w4a4kv4 epoch 0 MSE vs CPU", lg.mse[0], lc.mse[0], 1e-5);
    for (int e = 1; e < EPOCHS; e++) {
        char name[64];
        snprintf(name, sizeof name, "w4a4kv4 epoch %d MSE vs CPU (chaotic)", e);
        rel_report(t, name, lg.mse[e], lc.mse[e], 1e-1);
    }
    for (int e = 0; e < EPOCHS; e++)
        printf("INFO|epoch %d MSE sum: CPU %.9e GPU %.9e rel %.2e\n", e, lc.mse[e], lg.mse[e],
               rel_of(lg.mse[e], lc.mse[e]));
    rel_report(t, "w4a4kv4 loss after vs CPU (chaotic)", rg.loss_after, rc.loss_after, 1e-1);
    double gain = 1 - rg.loss_after / rg.loss_before;
    gpu_report(t, "w4a4kv4 training lowers the loss (share)", gain, 0.1,
               isfinite(gain) && gain >= 0.1, " (min)");
    gpu_report(t, "steps and epoch logs", (double)(rg.steps - rc.steps), 0,
               rg.steps == rc.steps && rg.steps == EPOCHS * (NS / BATCH) && lg.n == EPOCHS,
               " diff");
    for (int gi = 0; gi < FQ_NGROUPS; gi++) {
        char name[80];
        size_t lo = Pc.group_off[gi], n = Pc.group_off[gi + 1] - lo;
        double moved = dist(Pc.p + lo, P0.p + lo, n), apart = dist(Pg.p + lo, Pc.p + lo, n);
        double ratio = moved > 0 ? apart / moved : INFINITY;
        snprintf(name, sizeof name, "trained p[%s]: dist(gpu,cpu) / dist(cpu,init)",
                 fq_group_names[gi]);
        gpu_report(t, name, ratio, 0.35, ratio <= 0.35, "");
        printf("INFO|p[%s]: moved %.3e from init, GPU vs CPU %.3e\n", fq_group_names[gi],
               moved, apart);
    }
    gpu_check_exact(t, "repeat run: same p (bytes)", Pg2.p, Pg.p, Pg.n);
    gpu_check_exact(t, "streamed plan: same p (bytes)", Ps.p, Pg.p, Pg.n);
    gpu_report(t, "streamed plan: same losses", fabs(rs.loss_after - rg.loss_after), 0,
               rs.loss_after == rg.loss_after && rs.loss_before == rg.loss_before &&
                   memcmp(ls.mse, lg.mse, sizeof ls.mse) == 0, "");
    gpu_report(t, "peak device bytes reported", (double)rg.peak_device_bytes, 0,
               rg.peak_device_bytes > 0, " B");

    step_at_trained_point(t, f, &Pc);

    /* the production math of the bench's fastest mode: linears on bf16 codes, attention
     * on tensor cores; chaotic like the fp32 loop, so held to the same span */
    fq_params Pb;
    calib_result rb;
    calib_data db = {NS, SEQ, f->x, f->y, NULL, NULL, NULL, NULL, 0};
    gpu_call(t, fq_cuda_set_math(&t->ctx, FQ_MATH_BF16), "fq_cuda_set_math");
    gpu_call(t, calibrate_layer_cuda(&t->ctx, &Pb, &f->L.l, &f->c, &r, &f->st, &db, 0, &rb),
             "calibrate_layer_cuda (bf16 codes)");
    gpu_call(t, fq_cuda_set_math(&t->ctx, FQ_MATH_FP32), "fq_cuda_set_math");
    printf("INFO|bf16 codes: loss before %.9e after %.9e\n", rb.loss_before, rb.loss_after);
    rel_report(t, "bf16 codes loop: loss before vs CPU", rb.loss_before, rc.loss_before, 1e-2);
    rel_report(t, "bf16 codes loop: loss after vs CPU (chaotic)", rb.loss_after, rc.loss_after,
               1e-1);
    fq_params_free(&Pb);

    fq_params_free(&Pc);
    fq_params_free(&P0);
    fq_params_free(&Pg);
    fq_params_free(&Pg2);
    fq_params_free(&Ps);
}

static void test_bits16(gpu_suite *t, fixture *f)
{
    fq_recipe r = recipe(16);
    calib_data d = {NS, SEQ, f->x, f->y, NULL, NULL, NULL, NULL, 0};
    fq_params Pc, Pg;
    calib_result rc, rg;
    if (calibrate_layer(&Pc, &f->L.l, &f->c, &r, &f->st, &d, 0, &rc))
        gpu_die(t, "calibrate_layer (CPU, bits 16)");
    gpu_call(t, calibrate_layer_cuda(&t->ctx, &Pg, &f->L.l, &f->c, &r, &f->st, &d, 0, &rg),
             "calibrate_layer_cuda (bits 16)");
    const double tol = 1e-10;
    double v[4] = {rc.loss_before, rc.loss_after, rg.loss_before, rg.loss_after};
    const char *names[4] = {"bits16 CPU loss before / mean(Y^2)", "bits16 CPU loss after / mean(Y^2)",
                            "bits16 GPU loss before / mean(Y^2)", "bits16 GPU loss after / mean(Y^2)"};
    for (int i = 0; i < 4; i++) {
        double q = v[i] / f->y_ms;
        gpu_report(t, names[i], q, tol, isfinite(q) && q <= tol, "");
    }
    size_t n = Pc.group_off[FQ_G_WCLIP];
    double nc = 0;
    for (size_t i = 0; i < n; i++)
        nc += (double)Pc.p[i] * Pc.p[i];
    printf("INFO|bits16: transforms and scales moved by rounding noise alone: "
           "|p_gpu - p_cpu| / |p_cpu| = %.2e\n", dist(Pg.p, Pc.p, n) / sqrt(nc));
    fq_params_free(&Pc);
    fq_params_free(&Pg);
}

int main(void)
{
    gpu_suite t;
    gpu_suite_begin(&t, "calibrate", 7);
    fixture f;
    fixture_init(&t, &f);
    test_quantized(&t, &f);
    test_bits16(&t, &f);

    /* a NaN in the inputs: the layer stops with its index and the non-finite loss */
    f.x[5] = NAN;
    fq_recipe r = recipe(4);
    fq_params Pn;
    calib_result rn;
    calib_data dn = {NS, SEQ, f.x, f.y, NULL, NULL, NULL, NULL, 0};
    int bad = calibrate_layer_cuda(&t.ctx, &Pn, &f.L.l, &f.c, &r, &f.st, &dn, 3, &rn);
    const char *msg = fq_errmsg();
    int ok = bad == FQ_ERR && strstr(msg, "layer 3") && strstr(msg, "NaN");
    printf("INFO|NaN input: %s\n", msg);
    gpu_report(&t, "NaN input: error names layer and NaN", ok ? 0 : 1, 0, ok, "");

    fq_stats_free(&f.st);
    gpu_layer_free(&f.L);
    free(f.x);
    free(f.y);
    return gpu_suite_end(&t);
}
