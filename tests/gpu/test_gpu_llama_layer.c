/* test_gpu_llama_layer.c — the FP decoder layer on the GPU (llama_layer_fwd_cuda) and the
 * GPU FP pass (fp_pass_produce_cuda) against their CPU references.
 *
 * Layer: fq_stats_layer_fwd (the CPU forward that also folds per-channel maxima) and the
 * GPU layer with its stats on the same weights and inputs, on a random GQA shape with an
 * outlier channel and on layers of the bundled stories260K model: ‖Δ‖/‖ref‖ ≤ 1e-5 for the
 * output and for each of the three maxima vectors.
 * FP pass: the whole stories260K pass (embeddings + every layer) run by fp_pass_produce
 * and by fp_pass_produce_cuda into two caches, then every cached boundary compared: fp32
 * caches ‖Δ‖/‖ref‖ ≤ 1e-5 (errors compound over 5 layers but stay at rounding), bf16 caches
 * ≤ 1e-2 (a value near a bf16 rounding boundary may round the other way: one bf16 ulp,
 * 2^-8 relative, on a few elements), and the worst elementwise |Δ|/max|ref| is reported.
 */
#include "gpu_check.h"

#include "coordinator/fp_pass.h"
#include "coordinator/fp_pass_cuda.h"
#include "coordinator/layer_cache.h"
#include "fq_layer.h"
#include "kernels/llama_layer_cuda.h"
#include "llama_model.h"

#include <ftw.h>
#include <unistd.h>

#define MODEL "data/models/stories260K-hf"
#define FP "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void layer_sizes(const llama_config *c, size_t sz[9])
{
    size_t d = (size_t)c->hidden, f = (size_t)c->intermediate,
           qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t s[9] = {d, qd * d, kvd * d, kvd * d, d * qd, d, f * d, f * d, d * f};
    memcpy(sz, s, sizeof s);
}

/* CPU (fq_stats_layer_fwd) vs GPU on x [b, s, d]; `tag` names the rows. */
static void compare_layer(gpu_suite *t, const char *tag, const llama_config *c,
                          const llama_layer *l, const float *x, int b, int s)
{
    size_t n = (size_t)b * s * c->hidden;
    char name[96];
    /* CPU reference */
    float *ref = gpu_host_copy(x, n);
    rope_table rope;
    llama_scratch w;
    fq_stats st;
    gpu_call(t, rope_table_init(&rope, c, s), "rope_table_init");
    gpu_call(t, llama_scratch_init(&w, c, b, s), "llama_scratch_init");
    gpu_call(t, fq_stats_init(&st, c), "fq_stats_init");
    gpu_call(t, fq_stats_layer_fwd(&st, ref, l, c, &rope, b, s, &w), "fq_stats_layer_fwd");
    /* GPU */
    const float *host[9] = {l->attn_norm, l->wq, l->wk, l->wv, l->wo, l->mlp_norm, l->wgate,
                            l->wup, l->wdown};
    llama_layer_dev dl;
    llama_scratch_dev dw;
    fq_stats_dev dst;
    size_t half = (size_t)s * (c->head_dim / 2);
    gpu_call(t, llama_layer_dev_upload(&t->ctx, &dl, c, host), "llama_layer_dev_upload");
    gpu_call(t, llama_scratch_dev_init(&dw, c, b, s), "llama_scratch_dev_init");
    gpu_call(t, fq_stats_dev_init(&t->ctx, &dst, c), "fq_stats_dev_init");
    float *dcos = gpu_dev_copy(t, rope.cos, half), *dsin = gpu_dev_copy(t, rope.sin, half);
    float *dx = gpu_dev_copy(t, x, n);
    gpu_call(t, llama_layer_fwd_cuda(&t->ctx, dx, &dl, c, dcos, dsin, b, s, &dw, &dst),
             "llama_layer_fwd_cuda");
    float *got = gpu_fetch(t, dx, n);
    snprintf(name, sizeof name, "%s out", tag);
    gpu_check_rel(t, name, got, ref, n, 1e-5);
    float *ga = gpu_host((size_t)c->hidden), *gm = gpu_host((size_t)c->hidden),
          *gd = gpu_host((size_t)c->intermediate);
    gpu_call(t, fq_stats_dev_download(&t->ctx, &dst, ga, gm, gd), "fq_stats_dev_download");
    snprintf(name, sizeof name, "%s stats attn_in", tag);
    gpu_check_rel(t, name, ga, st.attn_in, (size_t)c->hidden, 1e-5);
    snprintf(name, sizeof name, "%s stats mlp_in", tag);
    gpu_check_rel(t, name, gm, st.mlp_in, (size_t)c->hidden, 1e-5);
    snprintf(name, sizeof name, "%s stats down_in", tag);
    gpu_check_rel(t, name, gd, st.down_in, (size_t)c->intermediate, 1e-5);
    free(ga);
    free(gm);
    free(gd);
    free(got);
    free(ref);
    fq_stats_dev_free(&dst);
    llama_scratch_dev_free(&dw);
    llama_layer_dev_free(&dl);
    fq_stats_free(&st);
    llama_scratch_free(&w);
    rope_table_free(&rope);
}

static void random_gqa_layer(gpu_suite *t)
{
    llama_config c;
    memset(&c, 0, sizeof c);
    c.hidden = 128;
    c.intermediate = 344;
    c.n_layers = 1;
    c.n_heads = 8;
    c.n_kv_heads = 2;
    c.head_dim = 16;
    c.vocab = 16;
    c.max_pos = 512;
    c.rms_eps = 1e-5;
    c.rope_theta = 10000;
    c.rope_type = ROPE_DEFAULT;
    c.bos_id = c.eos_id = -1;
    size_t sz[9];
    layer_sizes(&c, sz);
    llama_layer l;
    float **slot[9] = {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.mlp_norm, &l.wgate, &l.wup,
                       &l.wdown};
    int in[9] = {0, 128, 128, 128, 128, 0, 128, 128, 344};
    for (int i = 0; i < 9; i++) {
        *slot[i] = gpu_host(sz[i]);
        if (in[i]) {
            gpu_fill_normal(t, *slot[i], sz[i], 1.0 / sqrt((double)in[i]));
        } else {
            gpu_fill_normal(t, *slot[i], sz[i], 0.1);
            for (size_t j = 0; j < sz[i]; j++)
                (*slot[i])[j] += 1.0f;
        }
    }
    int b = 3, s = 67;
    size_t n = (size_t)b * s * c.hidden;
    float *x = gpu_host(n);
    gpu_fill_normal(t, x, n, 1.0);
    for (size_t r = 0; r < (size_t)b * s; r++)
        x[r * c.hidden + 5] *= 40.0f; /* an outlier residual channel */
    compare_layer(t, "gqa 8/2 d128 b3 s67", &c, &l, x, b, s);
    free(x);
    for (int i = 0; i < 9; i++)
        free(*slot[i]);
}

static void stories_layers(gpu_suite *t, const llama_model *m)
{
    const llama_config *c = &m->cfg;
    int b = 2, s = 96;
    int32_t ids[2 * 96];
    for (int i = 0; i < b * s; i++)
        ids[i] = (int32_t)(gpu_uniform(t) * c->vocab) % c->vocab;
    float *x = gpu_host((size_t)b * s * c->hidden);
    llama_embed_fwd(x, m->embed, c->hidden, ids, b * s);
    compare_layer(t, "stories260K layer 0", c, &m->layers[0], x, b, s);
    compare_layer(t, "stories260K layer 4", c, &m->layers[c->n_layers - 1], x, b, s);
    free(x);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* Run the whole pass into dir with the CPU or GPU producer. */
static void run_pass(gpu_suite *t, const llama_model *m, const int32_t *ids, int ns, int seq,
                     const char *dir, layer_cache_dtype dtype, int gpu)
{
    fp_pass p;
    memset(&p, 0, sizeof p);
    p.cfg = &m->cfg;
    p.ck = &m->ck;
    p.cache_dir = dir;
    p.fingerprint = FP;
    p.dtype = dtype;
    p.ids = ids;
    p.nsamples = ns;
    p.seqlen = seq;
    p.batch = 2;
    gpu_call(t, fp_pass_init(&p), "fp_pass_init");
    fp_pass_cuda g;
    if (gpu)
        gpu_call(t, fp_pass_cuda_init(&g, &p, 0), "fp_pass_cuda_init");
    for (int bd = 0; bd <= m->cfg.n_layers; bd++)
        gpu_call(t, gpu ? fp_pass_produce_cuda(&g, bd) : fp_pass_produce(&p, bd),
                 gpu ? "fp_pass_produce_cuda" : "fp_pass_produce");
    if (gpu)
        fp_pass_cuda_free(&g);
    fp_pass_free(&p);
}

static void whole_pass(gpu_suite *t, const llama_model *m, layer_cache_dtype dtype,
                       double tol)
{
    int ns = 5, seq = 64;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)ns * seq);
    for (int i = 0; i < ns * seq; i++)
        ids[i] = (int32_t)(gpu_uniform(t) * m->cfg.vocab) % m->cfg.vocab;
    char cpu_dir[] = "/tmp/flatq-gpu-fp-cpu-XXXXXX", gpu_dir[] = "/tmp/flatq-gpu-fp-gpu-XXXXXX";
    if (!mkdtemp(cpu_dir) || !mkdtemp(gpu_dir)) {
        fprintf(stderr, "cannot create temp dirs\n");
        exit(1);
    }
    run_pass(t, m, ids, ns, seq, cpu_dir, dtype, 0);
    run_pass(t, m, ids, ns, seq, gpu_dir, dtype, 1);
    double worst_elem = 0;
    for (int bd = 1; bd <= m->cfg.n_layers; bd++) {
        float *a, *b;
        layer_cache_header ha, hb;
        gpu_call(t, layer_cache_read(cpu_dir, bd, FP, &a, &ha), "layer_cache_read (cpu)");
        gpu_call(t, layer_cache_read(gpu_dir, bd, FP, &b, &hb), "layer_cache_read (gpu)");
        size_t n = (size_t)ns * seq * m->cfg.hidden;
        char name[96];
        snprintf(name, sizeof name, "FP pass %s boundary %d", layer_cache_dtype_name(dtype), bd);
        if (ha.dtype != hb.dtype)
            gpu_report(t, name, (double)hb.dtype, 0, 0, " dtype");
        gpu_check_rel(t, name, b, a, n, tol);
        double mx = 0, md = 0;
        for (size_t i = 0; i < n; i++) {
            mx = fmax(mx, fabs((double)a[i]));
            md = fmax(md, fabs((double)a[i] - (double)b[i]));
        }
        worst_elem = fmax(worst_elem, mx > 0 ? md / mx : md);
        free(a);
        free(b);
    }
    printf("INFO|FP pass %s: worst elementwise |gpu-cpu|/max|cpu| over boundaries = %.3e\n",
           layer_cache_dtype_name(dtype), worst_elem);
    nftw(cpu_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    nftw(gpu_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(ids);
}

int main(void)
{
    gpu_suite t;
    gpu_suite_begin(&t, "llama_layer", 20251127);
    random_gqa_layer(&t);
    llama_model m;
    if (llama_model_load(MODEL, &m) != FQ_OK)
        gpu_die(&t, "llama_model_load " MODEL);
    stories_layers(&t, &m);
    whole_pass(&t, &m, LAYER_CACHE_F32, 1e-5);
    whole_pass(&t, &m, LAYER_CACHE_BF16, 1e-2);
    llama_model_free(&m);
    return gpu_suite_end(&t);
}
