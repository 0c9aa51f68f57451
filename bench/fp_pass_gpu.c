/* fp_pass_gpu.c — the calibration's FP pass, CPU vs GPU, per layer (issue 6).
 *
 *   fp_pass_gpu model MODEL_DIR [NSAMPLES SEQLEN]   the real pass of a checkpoint: every
 *       boundary made by fp_pass_produce and by fp_pass_produce_cuda into two caches
 *       (bf16), timed per boundary; the caches are then compared.
 *   fp_pass_gpu synth SHAPE [NSAMPLES SEQLEN CPU_SAMPLES]   one synthetic layer of SHAPE
 *       (core/synth_model.h) in memory: the GPU runs all NSAMPLES × SEQLEN tokens through
 *       llama_layer_fwd_cuda in the FP pass's batches (uploads and downloads included); the
 *       CPU runs CPU_SAMPLES sequences of llama_layer_fwd and is extrapolated linearly
 *       (the layer is linear in the number of sequences).
 * Prints one table row per measurement: seconds, achieved GFLOP/s (2·params·tokens plus
 * 4·s²·h·dh per sequence for attention) and the GPU/CPU speedup of the same run.
 */
#include "coordinator/fp_pass.h"
#include "coordinator/fp_pass_cuda.h"
#include "coordinator/layer_cache.h"
#include "coordinator/progress.h"
#include "error.h"
#include "synth_model.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef FLATQ_HAVE_CUDA
#include "kernels/llama_layer_cuda.h"

#define FPRINT "feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface"

static double layer_flops(const llama_config *c, double nseq, int s)
{
    double d = c->hidden, f = c->intermediate, qd = (double)c->n_heads * c->head_dim,
           kvd = (double)c->n_kv_heads * c->head_dim;
    double params = 2 * qd * d + 2 * kvd * d + 3 * f * d;
    return nseq * (2.0 * params * s + 4.0 * (double)s * s * qd);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

static int die(const char *what)
{
    fprintf(stderr, "fp_pass_gpu: %s: %s\n", what, fq_errmsg());
    return 1;
}

static int bench_model(const char *dir, int ns, int seq)
{
    llama_config c;
    st_checkpoint ck;
    if (llama_config_load(dir, &c) != FQ_OK || st_checkpoint_open(dir, &ck) != FQ_OK)
        return die(dir);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)ns * seq);
    uint64_t r = 88172645463325252ull;
    for (int i = 0; i < ns * seq; i++) {
        r ^= r << 13; r ^= r >> 7; r ^= r << 17;
        ids[i] = (int32_t)(r % (uint64_t)c.vocab);
    }
    char dirs[2][64] = {"/tmp/fqbench-cpu-XXXXXX", "/tmp/fqbench-gpu-XXXXXX"};
    double t_layer[2][256] = {{0}};
    for (int gpu = 0; gpu < 2; gpu++) {
        if (!mkdtemp(dirs[gpu]))
            return die("mkdtemp");
        fp_pass p;
        memset(&p, 0, sizeof p);
        p.cfg = &c; p.ck = &ck; p.cache_dir = dirs[gpu]; p.fingerprint = FPRINT;
        p.dtype = LAYER_CACHE_BF16; p.ids = ids; p.nsamples = ns; p.seqlen = seq; p.batch = 4;
        fp_pass_cuda g;
        if (fp_pass_init(&p) != FQ_OK || (gpu && fp_pass_cuda_init(&g, &p, 0) != FQ_OK))
            return die("init");
        for (int b = 0; b <= c.n_layers && b < 256; b++) {
            double before = p.seconds, t0 = progress_monotonic_seconds();
            if ((gpu ? fp_pass_produce_cuda(&g, b) : fp_pass_produce(&p, b)) != FQ_OK)
                return die("produce");
            double wall = progress_monotonic_seconds() - t0;
            t_layer[gpu][b] = p.seconds - before;
            if (b > 0)
                printf("ROW|%s|layer %d|%s|compute %.3f s|with cache write %.3f s|%.0f GFLOP/s\n",
                       dir, b - 1, gpu ? "gpu" : "cpu", t_layer[gpu][b], wall,
                       layer_flops(&c, ns, seq) / t_layer[gpu][b] / 1e9);
        }
        if (gpu) {
            printf("INFO|gpu time split: upload %.3f s, compute %.3f s, download %.3f s\n",
                   g.upload_s, g.compute_s, g.download_s);
            fp_pass_cuda_free(&g);
        }
        fp_pass_free(&p);
    }
    double sc = 0, sg = 0, worst = 0;
    for (int b = 1; b <= c.n_layers; b++) {
        sc += t_layer[0][b];
        sg += t_layer[1][b];
        float *a, *x;
        layer_cache_header h;
        if (layer_cache_read(dirs[0], b, FPRINT, &a, &h) || layer_cache_read(dirs[1], b, FPRINT, &x, &h))
            return die("read back");
        double num = 0, den = 0;
        size_t n = (size_t)ns * seq * c.hidden;
        for (size_t i = 0; i < n; i++) {
            num += ((double)a[i] - x[i]) * ((double)a[i] - x[i]);
            den += (double)a[i] * a[i];
        }
        worst = fmax(worst, sqrt(num / den));
        free(a);
        free(x);
    }
    printf("SUMMARY|%s|%d x %d tokens|cpu %.3f s/layer|gpu %.3f s/layer|speedup %.1fx|"
           "worst boundary ||gpu-cpu||/||cpu|| (bf16 caches) %.2e\n", dir, ns, seq,
           sc / c.n_layers, sg / c.n_layers, sc / sg, worst);
    for (int i = 0; i < 2; i++)
        nftw(dirs[i], rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(ids);
    st_checkpoint_close(&ck);
    return 0;
}

static int bench_synth(const char *shape, int ns, int seq, int cpu_ns)
{
    synth_spec s;
    if (synth_spec_init(&s, shape, 1, 1) != FQ_OK)
        return die(shape);
    llama_config c;
    synth_spec_config(&s, &c);
    double t0 = progress_monotonic_seconds();
    llama_layer l;
    if (synth_layer_generate(&s, 0, &l) != FQ_OK)
        return die("synth_layer_generate");
    printf("INFO|%s layer generated in %.1f s\n", shape, progress_monotonic_seconds() - t0);
    size_t d = (size_t)c.hidden;
    /* inputs: embedding rows of the synthetic model (outlier channels included) */
    int bmax = cpu_ns > 4 ? cpu_ns : 4;
    size_t nx = (size_t)bmax * seq * d;
    float *x = malloc(sizeof(float) * nx), *y = malloc(sizeof(float) * nx);
    if (!x || !y)
        return die("host buffers");
    for (size_t t = 0; t < (size_t)bmax * seq; t++)
        if (synth_tensor_rows(&s, 0, (int64_t)((t * 7919) % (size_t)c.vocab), 1, x + t * d))
            return die("embedding rows");
    rope_table rope;
    if (rope_table_init(&rope, &c, seq) != FQ_OK)
        return die("rope");
    /* CPU: cpu_ns sequences, batch 1 */
    llama_scratch w;
    if (llama_scratch_init(&w, &c, 1, seq) != FQ_OK)
        return die("scratch");
    memcpy(y, x, sizeof(float) * (size_t)cpu_ns * seq * d);
    t0 = progress_monotonic_seconds();
    for (int i = 0; i < cpu_ns; i++)
        llama_layer_fwd(y + (size_t)i * seq * d, &l, &c, &rope, 1, seq, &w);
    double cpu = (progress_monotonic_seconds() - t0) * ns / cpu_ns;
    llama_scratch_free(&w);
    /* GPU: all ns sequences in the FP pass's batches */
    fq_cuda_ctx ctx;
    if (fq_cuda_init(&ctx, 0) != FQ_OK)
        return die("fq_cuda_init");
    char name[128] = "?";
    fq_cuda_device_name(&ctx, name, sizeof name);
    int b = (int)((2.0 * (1 << 30)) / ((double)c.n_heads * seq * seq * 4));
    b = b < 1 ? 1 : b > 4 ? 4 : b;
    llama_layer_dev dl;
    llama_scratch_dev dw;
    float *dx, *dcos, *dsin;
    size_t half = (size_t)seq * (c.head_dim / 2);
    const float *host[9] = {l.attn_norm, l.wq, l.wk, l.wv, l.wo, l.mlp_norm, l.wgate, l.wup,
                            l.wdown};
    t0 = progress_monotonic_seconds();
    if (llama_layer_dev_upload(&ctx, &dl, &c, host) || llama_scratch_dev_init(&dw, &c, b, seq) ||
        fq_cuda_alloc(&dx, (size_t)b * seq * d, "x") || fq_cuda_alloc(&dcos, half, "cos") ||
        fq_cuda_alloc(&dsin, half, "sin") || fq_cuda_upload(&ctx, dcos, rope.cos, half) ||
        fq_cuda_upload(&ctx, dsin, rope.sin, half))
        return die("gpu setup");
    double up_w = progress_monotonic_seconds() - t0, comp = 0, xfer = 0;
    double g0 = progress_monotonic_seconds();
    for (int s0 = 0; s0 < ns; s0 += b) {
        int nb = s0 + b <= ns ? b : ns - s0;
        size_t cnt = (size_t)nb * seq * d;
        double a = progress_monotonic_seconds();
        if (fq_cuda_upload(&ctx, dx, x, cnt))
            return die("upload");
        double m = progress_monotonic_seconds();
        if (llama_layer_fwd_cuda(&ctx, dx, &dl, &c, dcos, dsin, nb, seq, &dw, NULL) ||
            fq_cuda_sync(&ctx))
            return die("llama_layer_fwd_cuda");
        double e = progress_monotonic_seconds();
        if (fq_cuda_download(&ctx, y, dx, cnt))
            return die("download");
        comp += e - m;
        xfer += (m - a) + (progress_monotonic_seconds() - e);
    }
    double gpu = progress_monotonic_seconds() - g0;
    /* check: the first GPU output sequence against the CPU one */
    float *ref = malloc(sizeof(float) * seq * d);
    memcpy(ref, x, sizeof(float) * seq * d);
    if (llama_scratch_init(&w, &c, 1, seq) != FQ_OK)
        return die("scratch");
    llama_layer_fwd(ref, &l, &c, &rope, 1, seq, &w);
    double num = 0, den = 0;
    for (size_t i = 0; i < (size_t)seq * d; i++) {
        num += ((double)ref[i] - y[i]) * ((double)ref[i] - y[i]);
        den += (double)ref[i] * ref[i];
    }
    double fl = layer_flops(&c, ns, seq);
    printf("ROW|%s layer|%d x %d tokens|cpu %.2f s (from %d seqs)|%.0f GFLOP/s\n", shape, ns,
           seq, cpu, cpu_ns, fl / cpu / 1e9);
    printf("ROW|%s layer|%d x %d tokens|gpu %.2f s (compute %.2f, transfers %.2f, batch %d; "
           "weights upload %.2f)|%.0f GFLOP/s compute|%s\n", shape, ns, seq, gpu, comp, xfer, b,
           up_w, fl / comp / 1e9, name);
    printf("SUMMARY|%s layer|speedup %.1fx (gpu incl. transfers vs cpu)|||gpu-cpu||/||cpu|| "
           "(one sequence) %.2e\n", shape, cpu / gpu, sqrt(num / den));
    free(ref);
    free(x);
    free(y);
    llama_scratch_free(&w);
    llama_scratch_dev_free(&dw);
    llama_layer_dev_free(&dl);
    fq_cuda_free(dx);
    fq_cuda_free(dcos);
    fq_cuda_free(dsin);
    fq_cuda_free_ctx(&ctx);
    rope_table_free(&rope);
    llama_layer_free(&l);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "model") == 0)
        return bench_model(argv[2], argc > 3 ? atoi(argv[3]) : 128, argc > 4 ? atoi(argv[4]) : 2048);
    if (argc >= 3 && strcmp(argv[1], "synth") == 0)
        return bench_synth(argv[2], argc > 3 ? atoi(argv[3]) : 128, argc > 4 ? atoi(argv[4]) : 2048,
                           argc > 5 ? atoi(argv[5]) : 1);
    fprintf(stderr, "usage: fp_pass_gpu model DIR [NSAMPLES SEQLEN] | synth SHAPE [NSAMPLES "
                    "SEQLEN CPU_SAMPLES]\n");
    return 2;
}

#else

int main(void)
{
    fprintf(stderr, "fp_pass_gpu: NOT RUN: this build has no CUDA backend (expected nvcc)\n");
    return 77;
}

#endif
