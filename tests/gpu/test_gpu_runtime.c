/* test_gpu_runtime.c — the GPU inference runtime (runtime/) against the CPU model of core/.
 *
 * On stories260K (bundled; override with FLATQ_TEST_MODEL, text with FLATQ_TEST_TEXT):
 *   - window logits of the bf16 GPU model vs the fp32 CPU forward (llama_window_logits);
 *   - the KV cache: a prefill of half the window followed by one-token decode steps gives
 *     the logits of the whole-window forward at every position;
 *   - batching: two different windows in one batch give each window's own logits;
 *   - perplexity through the shared protocol (core/perplexity.c) within 0.5% of the CPU;
 *   - the W4A4KV4 path on both models the accuracy claims are made on: an RTN W4A4KV4
 *     checkpoint, written here in flatq's format through the CPU code (baseline_rtn,
 *     qformat), run by the real kernels vs the runtime's composition on the CPU
 *     (core/w4a4_layer_ref.c): window logits and perplexity over the first 4 windows (1%;
 *     2% with the tensor-core attention, see check_w4a4_model). On stories260K
 *     (f = 172: padded W4A4 rows) and on flatq-llama-16m (GQA group 3, T_d 32 × 32) from
 *     $FLATQ_DATA/models (default ../shared/data; FLATQ_TEST_QMODEL_16M overrides the model
 *     directory). A missing 16m model is a FAIL row naming the path, not a skip.
 * One rank, no NCCL (tensor parallelism is checked by running bin/flatq under mpirun,
 * see bench/gpu_runtime_check.sh). Rows "ROW|runtime|…" join tests/gpu/run.sh's table.
 */
#include "gpu_check.h"
#include "dtype.h"
#include "llama_model.h"
#include "perplexity.h"
#include "qformat.h"
#include "qmodel.h"
#include "w4a4_layer_ref.h"
#include "worker/baseline_rtn.h"
#include "runtime/gpu_model.h"
#include "runtime/rt_ops.h"
#include "tokenizer.h"

#include <unistd.h>

static const char *env_or(const char *k, const char *dflt)
{
    const char *v = getenv(k);
    return v && *v ? v : dflt;
}

typedef struct {
    gpu_model *m;
    gpu_suite *t;
} gpu_runner;

/* the eval's device path: per-token NLL on the GPU (rt_window_nll), summed on the host */
static int gpu_window_nll(void *ctx, const int32_t *ids, int s, double *sum)
{
    gpu_runner *r = ctx;
    const float *d;
    int pos0 = 0;
    double *nll = gpu_host_f64((size_t)s);
    if (gpu_model_forward(r->m, ids, 1, s, &pos0, 1, &d) != FQ_OK ||
        rt_window_nll(&r->t->ctx, r->m->nll_d, d, r->m->ids_d, s, r->m->cfg.vocab) != FQ_OK ||
        rt_download(&r->t->ctx, nll, r->m->nll_d, sizeof(double) * (size_t)(s - 1)) != FQ_OK) {
        free(nll);
        return FQ_ERR;
    }
    *sum = 0;
    for (int i = 0; i < s - 1; i++)
        *sum += nll[i];
    free(nll);
    return FQ_OK;
}

static int gpu_window(void *ctx, const int32_t *ids, int s, real *logits)
{
    gpu_runner *r = ctx;
    const float *d;
    int pos0 = 0;
    if (gpu_model_forward(r->m, ids, 1, s, &pos0, 1, &d) != FQ_OK)
        return FQ_ERR;
    return rt_download(&r->t->ctx, logits, d, sizeof(float) * (size_t)s * r->m->cfg.vocab);
}

/* W4A4KV4 on the FP model in src_dir (tokenized text `text`, tokens from its own tokenizer):
 * an RTN checkpoint written in a temporary directory, the real kernels vs the fake-quant CPU
 * forward of the same checkpoint. Rows are labelled "w4a4 <label> …". */
static void check_w4a4_model(gpu_suite *t, const char *label, const char *src_dir,
                             const char *text, int S)
{
    char what[160];
    llama_model fp;
    tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    if (llama_model_load(src_dir, &fp) != FQ_OK || tokenizer_load(src_dir, &tok) != FQ_OK ||
        tokenizer_encode_file(tok, text, 1, &ids, &n) != FQ_OK) {
        snprintf(what, sizeof what, "w4a4 %s: load %s with text %s", label, src_dir, text);
        gpu_die(t, what);
    }
    if (n < (size_t)(4 * S)) {
        snprintf(what, sizeof what, "w4a4 %s: text shorter than 4 windows", label);
        gpu_die(t, what);
    }
    printf("INFO|runtime|w4a4 %s: d %d, heads %d/%d, dh %d, f %d, layers %d\n", label,
           fp.cfg.hidden, fp.cfg.n_heads, fp.cfg.n_kv_heads, fp.cfg.head_dim,
           fp.cfg.intermediate, fp.cfg.n_layers);
    char qdir[] = "/tmp/flatq-gpu-rtn-XXXXXX";
    qmodel qm;
    qmodel_runner qr;
    gpu_model gq;
    qconfig qc = {.w_bits = 4, .a_bits = 4, .kv_bits = 4, .tp_blocks = 1};
    snprintf(qc.method, sizeof qc.method, "rtn");
    w4a4_ref_model em;
    if (!mkdtemp(qdir) || baseline_rtn_checkpoint(&fp, src_dir, &qc, qdir) != FQ_OK ||
        qmodel_load(qdir, &qm) != FQ_OK || qmodel_runner_init(&qr, &qm, S) != FQ_OK ||
        w4a4_ref_model_load(&em, qdir, S) != FQ_OK) {
        snprintf(what, sizeof what, "w4a4 %s: RTN checkpoint", label);
        gpu_die(t, what);
    }
    tp_comm one = {.tp = 1, .rank = 0, .device = 0};
    int V = fp.cfg.vocab;
    float *ref = gpu_host((size_t)S * V), *got = gpu_host((size_t)S * V);
    snprintf(what, sizeof what, "gpu_model_load (W4A4 %s)", label);
    gpu_call(t, gpu_model_load(&gq, qdir, &t->ctx, &one, 1, S, S, S), what);
    gpu_runner gr = {&gq, t};
    /* The reference is the runtime's own composition on the CPU (core/w4a4_layer_ref.c,
     * bf16 between the steps): an RTN W4A4 model is chaotic at bf16 rounding scale, so
     * the fp32 fake-quant forward differs from any bf16 runtime by several % in ppl
     * (tests/unit/test_w4a4_layer_ref.c); it is printed for the record. The logits differ
     * through the same rounding-boundary flips, hence the loose logits bound. */
    gpu_call(t, w4a4_ref_window_logits(&em, ids, S, ref), "cpu runtime-composition logits");
    ppl_result pc, pe, pg;
    gpu_call(t, perplexity_eval(ids, n, S, V, 4, qmodel_window_logits, &qr, &pc), "cpu q ppl");
    gpu_call(t, perplexity_eval(ids, n, S, V, 4, w4a4_ref_window_logits, &em, &pe),
             "cpu composition ppl");
    /* Both attention kernels (ctx.attn_tc; dh 8 takes the CUDA-core one either way). The
     * CUDA-core kernel computes what the composition computes, in fp32: 1 %. The
     * tensor-core one is as exact against float64 (≤ 1e-4, test_gpu_w4a4) and gives the
     * same first-window logits error (1.1e-3 on 16m), but rounds differently, and on this
     * chaotic RTN fixture that moved the four-window ppl 1.26 % (session 8): 2 %. The
     * acceptance on calibrated checkpoints (issue 8: flatq eval within 0.5 % of the CPU)
     * is measured by bench/device_eval_tc.sh: 0.47 % (tensor-core), 0.26 % (CUDA-core). */
    for (int tc = 0; tc < 2; tc++) {
        const char *kn = tc ? "tensor-core attention" : "CUDA-core attention";
        const double tol = tc ? 2e-2 : 1e-2;
        t->ctx.attn_tc = tc;
        snprintf(what, sizeof what, "gpu W4A4 logits (%s)", label);
        gpu_call(t, gpu_window(&gr, ids, S, got), what);
        snprintf(what, sizeof what, "w4a4 %s window logits vs CPU composition, %s", label, kn);
        gpu_check_rel(t, what, got, ref, (size_t)S * V, 0.25);
        gpu_call(t, perplexity_eval(ids, n, S, V, 4, gpu_window, &gr, &pg), "gpu q ppl");
        double rel = fabs(pg.ppl / pe.ppl - 1);
        printf("INFO|runtime|w4a4 %s ppl: cpu fp32 fake-quant %.4f, cpu runtime composition "
               "%.4f, gpu (%s) %.4f\n", label, pc.ppl, pe.ppl, kn, pg.ppl);
        snprintf(what, sizeof what, "w4a4 %s ppl vs CPU composition (relative), %s", label, kn);
        gpu_report(t, what, rel, tol, rel <= tol, "");
    }
    t->ctx.attn_tc = 1;
    /* the decode steps in plain stream order and as programmatic dependents (ctx.pdl): the
     * same kernels on the same data, so the same bits, unless a kernel reads an activation
     * before its griddepcontrol.wait */
    const int half = S / 2, steps = 8;
    float *plain = gpu_host((size_t)steps * V), *dep = gpu_host((size_t)steps * V);
    for (int mode = 0; mode < 2; mode++) {
        float *dst = mode ? dep : plain;
        const float *d;
        int pos = 0;
        t->ctx.pdl = mode;
        gpu_call(t, gpu_model_forward(&gq, ids, 1, half, &pos, 0, &d), "w4a4 prefill");
        for (int st = 0; st < steps; st++) {
            pos = half + st;
            gpu_call(t, gpu_model_forward(&gq, ids + pos, 1, 1, &pos, 0, &d), "w4a4 decode");
            gpu_call(t, rt_download(&t->ctx, dst + (size_t)st * V, d, sizeof(float) * V),
                     "download");
        }
    }
    t->ctx.pdl = 0;
    snprintf(what, sizeof what, "w4a4 %s decode logits, PDL vs stream order", label);
    gpu_check_exact(t, what, dep, plain, (size_t)steps * V);
    free(plain), free(dep);
    w4a4_ref_model_free(&em);
    gpu_model_free(&gq);
    qmodel_runner_free(&qr);
    qmodel_free(&qm);
    llama_model_free(&fp);
    tokenizer_free(tok);
    free(ref), free(got), free(ids);
}

/* rt_rmsnorm_bf16 (the 16-byte path when d % 8 == 0, the scalar one otherwise) against the
 * float64 formula on the same bf16 inputs; the output is bf16 (half an ulp: 2^-9 relative) */
static void check_rmsnorm(gpu_suite *t, int n, int d)
{
    const float eps = 1e-5f;
    size_t nd = (size_t)n * d;
    float *x = gpu_host(nd), *gam = gpu_host(d), *ref = gpu_host(nd), *got = gpu_host(nd);
    uint16_t *xb = malloc(nd * 2), *ob = malloc(nd * 2);
    if (!xb || !ob)
        gpu_die(t, "host alloc");
    gpu_fill_normal(t, x, nd, 1.0);
    gpu_fill_normal(t, gam, d, 0.5);
    for (size_t i = 0; i < nd; i++) {
        xb[i] = fq_f32_to_bf16(x[i] * (i % 97 == 0 ? 30.f : 1.f)); /* a few outliers */
        x[i] = fq_bf16_to_f32(xb[i]);
    }
    for (int r = 0; r < n; r++) {
        double ss = 0;
        for (int c = 0; c < d; c++)
            ss += (double)x[(size_t)r * d + c] * x[(size_t)r * d + c];
        double inv = 1.0 / sqrt(ss / d + eps);
        for (int c = 0; c < d; c++)
            ref[(size_t)r * d + c] = (float)(gam[c] * (x[(size_t)r * d + c] * inv));
    }
    /* buffers in floats: bf16 rows fit in half as many */
    float *dx = gpu_dev(t, (nd + 1) / 2), *dout = gpu_dev(t, (nd + 1) / 2);
    float *dg = gpu_dev_copy(t, gam, d);
    gpu_call(t, rt_upload(&t->ctx, dx, xb, nd * 2), "upload x");
    gpu_call(t, rt_rmsnorm_bf16(&t->ctx, (uint16_t *)dout, (const uint16_t *)dx, dg, n, d, eps),
             "rt_rmsnorm_bf16");
    gpu_call(t, fq_cuda_sync(&t->ctx), "sync");
    gpu_call(t, rt_download(&t->ctx, ob, dout, nd * 2), "download");
    for (size_t i = 0; i < nd; i++)
        got[i] = fq_bf16_to_f32(ob[i]);
    char what[96];
    snprintf(what, sizeof what, "rt_rmsnorm_bf16 n%d d%d vs float64", n, d);
    gpu_check_rel(t, what, got, ref, nd, 4e-3);
    free(xb);
    free(ob);
    free(x);
    free(gam);
    free(ref);
    free(got);
}

/* rt_rope_mk_bf16 (one launch) against rt_rope_bf16 + rt_vec_transform_bf16 (five), bit for
 * bit, and both against float64 RoPE and products on the same bf16 inputs */
static void check_rope_mk(gpu_suite *t, int B, int n, int hq, int hk, int dh, int with_v)
{
    const int half = dh / 2, maxpos = 512;
    size_t nq = (size_t)B * n * hq * dh, nk = (size_t)B * n * hk * dh, mm = (size_t)dh * dh;
    size_t ntab = (size_t)maxpos * half, all = nq + 2 * nk;
    float *f = gpu_host(all), *cs = gpu_host(ntab), *sn = gpu_host(ntab), *M = gpu_host(3 * mm);
    float *ref = gpu_host(all), *got = gpu_host(all), *sep = gpu_host(all);
    uint16_t *h = malloc(all * 2), *o = malloc(all * 2);
    if (!h || !o)
        gpu_die(t, "host alloc");
    gpu_fill_normal(t, f, all, 1.0);
    gpu_fill_normal(t, M, 3 * mm, 1.0 / sqrt(dh));
    for (size_t i = 0; i < ntab; i++) {
        double a = 6.2831853 * gpu_uniform(t);
        cs[i] = (float)cos(a), sn[i] = (float)sin(a);
    }
    for (size_t i = 0; i < all; i++) {
        h[i] = fq_f32_to_bf16(f[i]);
        f[i] = fq_bf16_to_f32(h[i]);
    }
    int32_t pos0[4];
    for (int b = 0; b < B; b++)
        pos0[b] = 3 + 7 * b;
    /* float64: q, k rotated, then each vector times its M (q: M[0], k: M[1], v: M[2]) */
    for (size_t vec = 0; vec < all / dh; vec++) {
        const float *x = f + vec * dh;
        int part = vec < nq / dh ? 0 : vec < (nq + nk) / dh ? 1 : 2;
        size_t local = part == 0 ? vec : part == 1 ? vec - nq / dh : vec - (nq + nk) / dh;
        int heads = part == 0 ? hq : hk;
        size_t tok = local / heads;
        int p = pos0[tok / n] + (int)(tok % n);
        double r[4096];
        for (int i = 0; i < half; i++) {
            double c = cs[(size_t)p * half + i], s2 = sn[(size_t)p * half + i];
            r[i] = part == 2 ? x[i] : x[i] * c - x[i + half] * s2;
            r[i + half] = part == 2 ? x[i + half] : x[i + half] * c + x[i] * s2;
        }
        const float *Mp = M + (size_t)part * mm;
        for (int j = 0; j < dh; j++) {
            double acc = 0;
            for (int i = 0; i < dh; i++)
                acc += r[i] * Mp[(size_t)i * dh + j];
            ref[vec * dh + j] = (float)(part == 2 && !with_v ? x[j] : acc);
        }
    }
    float *dx = gpu_dev(t, (all + 1) / 2), *dy = gpu_dev(t, (all + 1) / 2);
    float *dcs = gpu_dev_copy(t, cs, ntab), *dsn = gpu_dev_copy(t, sn, ntab);
    float *dM = gpu_dev_copy(t, M, 3 * mm), *dpos = gpu_dev(t, 4);
    gpu_call(t, rt_upload(&t->ctx, dpos, pos0, sizeof pos0), "upload pos0");
    gpu_call(t, rt_upload(&t->ctx, dx, h, all * 2), "upload q, k, v");
    gpu_call(t, rt_upload(&t->ctx, dy, h, all * 2), "upload q, k, v");
    uint16_t *q1 = (uint16_t *)dx, *k1 = q1 + nq, *v1 = k1 + nk;
    uint16_t *q2 = (uint16_t *)dy, *k2 = q2 + nq, *v2 = k2 + nk;
    const int32_t *p0 = (const int32_t *)dpos;
    gpu_call(t, rt_rope_bf16(&t->ctx, q1, B, n, hq, dh, p0, dcs, dsn), "rt_rope_bf16 q");
    gpu_call(t, rt_rope_bf16(&t->ctx, k1, B, n, hk, dh, p0, dcs, dsn), "rt_rope_bf16 k");
    gpu_call(t, rt_vec_transform_bf16(&t->ctx, q1, B * n * hq, dh, dM), "vec q");
    gpu_call(t, rt_vec_transform_bf16(&t->ctx, k1, B * n * hk, dh, dM + mm), "vec k");
    if (with_v)
        gpu_call(t, rt_vec_transform_bf16(&t->ctx, v1, B * n * hk, dh, dM + 2 * mm), "vec v");
    gpu_call(t, rt_rope_mk_bf16(&t->ctx, q2, k2, v2, B, n, hq, hk, dh, p0, dcs, dsn, dM,
                                dM + mm, with_v ? dM + 2 * mm : NULL), "rt_rope_mk_bf16");
    gpu_call(t, fq_cuda_sync(&t->ctx), "sync");
    gpu_call(t, rt_download(&t->ctx, o, dx, all * 2), "download");
    for (size_t i = 0; i < all; i++)
        sep[i] = fq_bf16_to_f32(o[i]);
    gpu_call(t, rt_download(&t->ctx, o, dy, all * 2), "download");
    for (size_t i = 0; i < all; i++)
        got[i] = fq_bf16_to_f32(o[i]);
    char what[112];
    snprintf(what, sizeof what, "rt_rope_mk_bf16 B%d n%d heads %d/%d dh%d%s vs separate kernels",
             B, n, hq, hk, dh, with_v ? " +M_v" : "");
    gpu_check_exact(t, what, got, sep, all);
    snprintf(what, sizeof what, "rt_rope_mk_bf16 B%d n%d heads %d/%d dh%d%s vs float64", B, n,
             hq, hk, dh, with_v ? " +M_v" : "");
    gpu_check_rel(t, what, got, ref, all, 1e-2);
    free(f), free(cs), free(sn), free(M), free(ref), free(got), free(sep), free(h), free(o);
}

/* rt_argmax against the first maximum of each row on the host: planted ties (the lower
 * index must win), the maximum in the scalar tail, rows whose start is not 16-byte aligned
 * (V % 4 != 0: the scalar path) */
static void check_argmax(gpu_suite *t, int n, int V)
{
    size_t nv = (size_t)n * V;
    float *lg = gpu_host(nv);
    gpu_fill_normal(t, lg, nv, 1.0);
    for (int r = 0; r < n; r++) {
        float *row = lg + (size_t)r * V;
        int a = (r * 7919 + 13) % V, b = (a + 1 + r * 104729 % (V - 1)) % V;
        if (r % 3 == 0)
            row[a] = row[b] = 50.f; /* a tie */
        else if (r % 3 == 1)
            row[V - 1] = 60.f; /* the last element */
        else
            row[a] = 55.f;
    }
    int32_t *want = malloc(sizeof(int32_t) * n), *got = malloc(sizeof(int32_t) * n);
    if (!want || !got)
        gpu_die(t, "host alloc");
    for (int r = 0; r < n; r++) {
        const float *row = lg + (size_t)r * V;
        int bi = 0;
        for (int v = 1; v < V; v++)
            if (row[v] > row[bi])
                bi = v;
        want[r] = bi;
    }
    float *dl = gpu_dev_copy(t, lg, nv), *di = gpu_dev(t, (size_t)n);
    gpu_call(t, rt_argmax(&t->ctx, (int32_t *)di, dl, n, V), "rt_argmax");
    gpu_call(t, fq_cuda_sync(&t->ctx), "sync");
    gpu_call(t, rt_download(&t->ctx, got, di, sizeof(int32_t) * n), "download");
    char what[64];
    snprintf(what, sizeof what, "rt_argmax n%d V%d vs host first maximum", n, V);
    int diff = 0;
    for (int r = 0; r < n; r++)
        if (got[r] != want[r]) {
            fprintf(stderr, "%s: row %d: got %d, expected %d\n", what, r, got[r], want[r]);
            diff++;
        }
    gpu_report(t, what, diff, 0, diff == 0, " rows");
    free(lg), free(want), free(got);
}

int main(void)
{
    gpu_suite t;
    gpu_suite_begin(&t, "runtime", 8);
    const char *dir = env_or("FLATQ_TEST_MODEL", "data/models/stories260K-hf");
    const char *text = env_or("FLATQ_TEST_TEXT", "data/text/tinystories_sample.txt");
    check_rmsnorm(&t, 1, 8192);
    check_rmsnorm(&t, 5, 384);
    check_rmsnorm(&t, 3, 172);
    check_rmsnorm(&t, 2, 28672);
    check_argmax(&t, 6, 128256);
    check_argmax(&t, 5, 1001);
    check_rope_mk(&t, 1, 1, 64, 8, 128, 1);
    check_rope_mk(&t, 3, 5, 6, 2, 64, 0);
    check_rope_mk(&t, 2, 1, 4, 4, 48, 1);
    /* prefill sizes (n >= 16): the tiled kernel, whole and partial CTAs of 64 (dh 128) and
     * 128 (dh 64) vectors */
    check_rope_mk(&t, 2, 40, 64, 8, 128, 1);
    check_rope_mk(&t, 1, 50, 6, 2, 64, 0);
    check_rope_mk(&t, 1, 300, 8, 8, 128, 1);
    llama_model cpu;
    tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    if (llama_model_load(dir, &cpu) != FQ_OK || tokenizer_load(dir, &tok) != FQ_OK ||
        tokenizer_encode_file(tok, text, 1, &ids, &n) != FQ_OK)
        gpu_die(&t, "load model/text");
    int S = 128, V = cpu.cfg.vocab;
    if (n < (size_t)(8 * S))
        gpu_die(&t, "text shorter than 8 windows");
    tp_comm one = {.tp = 1, .rank = 0, .device = 0};
    gpu_model m;
    gpu_call(&t, gpu_model_load(&m, dir, &t.ctx, &one, 2, S, 2 * S, 2 * S), "gpu_model_load");

    /* 1. window logits vs the CPU forward */
    llama_runner cr;
    gpu_call(&t, llama_runner_init(&cr, &cpu, S), "llama_runner_init");
    float *ref = gpu_host((size_t)S * V), *got = gpu_host((size_t)S * V);
    gpu_runner gr = {&m, &t};
    gpu_call(&t, llama_window_logits(&cr, ids, S, ref), "cpu logits");
    gpu_call(&t, gpu_window(&gr, ids, S, got), "gpu logits");
    gpu_check_rel(&t, "fp window logits vs CPU fp32", got, ref, (size_t)S * V, 3e-2);

    /* 2. prefill S/2 then decode one token at a time: each step's logits = that row */
    float *win = gpu_host_copy(got, (size_t)S * V), *step = gpu_host((size_t)S * V);
    const float *d;
    int pos = 0, half = S / 2;
    gpu_call(&t, gpu_model_forward(&m, ids, 1, half, &pos, 0, &d), "prefill");
    gpu_call(&t, rt_download(&t.ctx, step + (size_t)(half - 1) * V, d, sizeof(float) * V),
             "download");
    for (pos = half; pos < S; pos++) {
        gpu_call(&t, gpu_model_forward(&m, ids + pos, 1, 1, &pos, 0, &d), "decode");
        gpu_call(&t, rt_download(&t.ctx, step + (size_t)pos * V, d, sizeof(float) * V),
                 "download");
    }
    gpu_check_rel(&t, "KV-cache decode vs window rows", step + (size_t)(half - 1) * V,
                  win + (size_t)(half - 1) * V, (size_t)(S - half + 1) * V, 1e-2);

    /* 3. a batch of two different windows: each equals its own single-window logits */
    int32_t *two = malloc(sizeof(int32_t) * 2 * S);
    memcpy(two, ids, sizeof(int32_t) * S);
    memcpy(two + S, ids + 3 * S, sizeof(int32_t) * S);
    float *b2 = gpu_host((size_t)2 * S * V), *single = gpu_host((size_t)2 * S * V);
    int pos2[2] = {0, 0};
    gpu_call(&t, gpu_model_forward(&m, two, 2, S, pos2, 1, &d), "batch forward");
    gpu_call(&t, rt_download(&t.ctx, b2, d, sizeof(float) * 2 * S * V), "download");
    memcpy(single, win, sizeof(float) * S * V);
    gpu_call(&t, gpu_window(&gr, two + S, S, single + (size_t)S * V), "second window");
    gpu_check_rel(&t, "batch of 2 vs single windows", b2, single, (size_t)2 * S * V, 1e-2);

    /* 4. perplexity over 6 windows, same protocol as flatq eval */
    ppl_result pc, pg;
    gpu_call(&t, perplexity_eval(ids, n, S, V, 6, llama_window_logits, &cr, &pc), "cpu ppl");
    gpu_call(&t, perplexity_eval(ids, n, S, V, 6, gpu_window, &gr, &pg), "gpu ppl");
    double rel = fabs(pg.ppl / pc.ppl - 1);
    printf("INFO|runtime|ppl cpu %.4f gpu %.4f\n", pc.ppl, pg.ppl);
    gpu_report(&t, "fp ppl vs CPU (relative)", rel, 5e-3, rel <= 5e-3, "");
    /* the same windows through the device NLL (what flatq eval --device cuda uses) */
    ppl_result pn;
    gpu_call(&t, perplexity_eval_nll(ids, n, S, 6, gpu_window_nll, &gr, &pn), "gpu nll ppl");
    rel = fabs(pn.ppl / pg.ppl - 1);
    printf("INFO|runtime|ppl gpu host log-softmax %.6f, device nll %.6f\n", pg.ppl, pn.ppl);
    gpu_report(&t, "device NLL vs host log-softmax ppl", rel, 1e-6, rel <= 1e-6, "");

    /* 5. W4A4KV4: real kernels vs the fake-quant CPU forward of the same checkpoint, on
     * stories260K (padded rows: f = 172) and flatq-llama-16m (GQA group 3) */
    check_w4a4_model(&t, "stories260K", dir, text, S);
    char m16[4096], t16[4096];
    const char *data = env_or("FLATQ_DATA", "../shared/data");
    snprintf(m16, sizeof m16, "%s", env_or("FLATQ_TEST_QMODEL_16M", ""));
    if (!*m16)
        snprintf(m16, sizeof m16, "%s/models/flatq-llama-16m", data);
    snprintf(t16, sizeof t16, "%s/text/tinystories/tinystories_sample.txt", data);
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/config.json", m16);
    FILE *pf = fopen(probe, "r");
    if (!pf || access(t16, R_OK) != 0) {
        fprintf(stderr, "runtime: flatq-llama-16m W4A4 check NOT RUN: %s or %s missing (set "
                "FLATQ_DATA to the shared data directory)\n", probe, t16);
        gpu_report(&t, "w4a4 16m model + text found (FLATQ_DATA)", 1, 0, 0, " missing");
    } else {
        check_w4a4_model(&t, "16m", m16, t16, S);
    }
    if (pf)
        fclose(pf);

    free(ref), free(got), free(win), free(step), free(two), free(b2), free(single), free(ids);
    llama_runner_free(&cr);
    gpu_model_free(&m);
    llama_model_free(&cpu);
    tokenizer_free(tok);
    return gpu_suite_end(&t);
}
