/* test_synth_model.c — synthetic checkpoints read back with flatq's own loaders
 * (llama_model_load, st_checkpoint_open, qconfig_load/qlayer_read): config and shapes,
 * bf16 on disk, the outlier channels, the init scale measured against 1/sqrt(in),
 * byte-identical output for a seed whatever the threads and shard limit, and the
 * quantized format equal to an independent RTN of the weights the FP loader reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "llama_model.h"
#include "qformat.h"
#include "qlayer.h"
#include "st_test_util.h"
#include "synth_model.h"

#define TOKENIZER "data/models/stories260K-hf/tokenizer.json"

static void write_model(const char *dir, const char *shape, int layers, uint64_t seed,
                        int threads, uint64_t shard_bytes)
{
    synth_spec s;
    assert_int_equal(synth_spec_init(&s, shape, layers, seed), FQ_OK);
    s.threads = threads;
    if (shard_bytes)
        s.shard_bytes = shard_bytes;
    if (synth_write_checkpoint(&s, dir) != FQ_OK || synth_copy_tokenizer(TOKENIZER, dir) != FQ_OK)
        fail_msg("synth: %s", fq_errmsg());
}

static void test_loads_with_the_fp_loader(void **state)
{
    (void)state;
    const char *dir = tu_path("s260k");
    write_model(dir, "stories260k", 2, 11, 2, 0);
    synth_spec s;
    assert_int_equal(synth_spec_init(&s, "stories260k", 2, 11), FQ_OK);
    llama_config want;
    synth_spec_config(&s, &want);
    llama_model m;
    if (llama_model_load(dir, &m) != FQ_OK)
        fail_msg("load: %s", fq_errmsg());
    assert_int_equal(m.cfg.hidden, 64);
    assert_int_equal(m.cfg.n_heads, 8);
    assert_int_equal(m.cfg.n_kv_heads, 4);
    assert_int_equal(m.cfg.head_dim, 8);
    assert_int_equal(m.cfg.intermediate, 172);
    assert_int_equal(m.cfg.n_layers, 2);
    assert_int_equal(m.cfg.vocab, 512);
    assert_int_equal(m.cfg.tie_embeddings, want.tie_embeddings);
    assert_true(m.cfg.rope_theta == want.rope_theta);
    /* every tensor is BF16 with the LLaMA shape */
    const st_tensor *t = st_checkpoint_find(&m.ck, "model.layers.1.self_attn.k_proj.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, FQ_BF16);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 32);
    assert_int_equal(t->shape[1], 64);
    t = st_checkpoint_find(&m.ck, "model.layers.0.mlp.down_proj.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 64);
    assert_int_equal(t->shape[1], 172);
    /* what the loader widened equals what the generator hands out */
    llama_layer l;
    assert_int_equal(synth_layer_generate(&s, 1, &l), FQ_OK);
    assert_memory_equal(l.wup, m.layers[1].wup, sizeof(float) * 172 * 64);
    assert_memory_equal(l.mlp_norm, m.layers[1].mlp_norm, sizeof(float) * 64);
    llama_layer_free(&l);
    llama_model_free(&m);
}

static void test_llama3_shape_config(void **state)
{
    (void)state;
    /* only the config: the 70B shape's weights are far too big for a unit test */
    synth_spec s;
    assert_int_equal(synth_spec_init(&s, "llama-3-70b", 80, 0), FQ_OK);
    llama_config c;
    synth_spec_config(&s, &c);
    assert_int_equal(c.hidden, 8192);
    assert_int_equal(c.n_heads, 64);
    assert_int_equal(c.n_kv_heads, 8);
    assert_int_equal(c.intermediate, 28672);
    assert_int_equal(c.vocab, 128256);
    assert_int_equal(c.rope_type, ROPE_LLAMA3);
    /* 80 layers x 9 + embed + norm + lm_head */
    assert_int_equal(synth_tensor_count(&s), 80 * 9 + 3);
    int64_t r, k;
    char name[128];
    assert_int_equal(synth_tensor_info(&s, 1 + 9 * 5 + 1, name, sizeof name, &r, &k), FQ_OK);
    assert_string_equal(name, "model.layers.5.self_attn.q_proj.weight");
    assert_int_equal(r, 8192);
    assert_int_equal(k, 8192);
}

static double col_absmean(const float *w, int rows, int cols, int j)
{
    double s = 0;
    for (int r = 0; r < rows; r++)
        s += fabs(w[(size_t)r * cols + j]);
    return s / rows;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void test_outliers_and_init_scale(void **state)
{
    (void)state;
    synth_spec s;
    assert_int_equal(synth_spec_init(&s, "flatq-16m", 1, 3), FQ_OK);
    int d = 384, f = 1024;
    for (int i = 0; i < SYNTH_OUTLIERS; i++) {
        assert_true(s.outlier_ch[i] >= 0 && s.outlier_ch[i] < d);
        assert_true(s.outlier_gain[i] >= 20.0f && s.outlier_gain[i] <= 100.0f);
    }
    llama_layer l;
    assert_int_equal(synth_layer_generate(&s, 0, &l), FQ_OK);
    /* median column of gate_proj [f, d]: std 1/sqrt(d), E|z| = sqrt(2/pi) for a normal
     * (0.8 with the bounded Irwin-Hall tails: within 5% either way) */
    double col[384];
    for (int j = 0; j < d; j++)
        col[j] = col_absmean(l.wgate, f, d, j);
    double sorted[384];
    memcpy(sorted, col, sizeof col);
    qsort(sorted, (size_t)d, sizeof(double), cmp_double);
    double median = sorted[d / 2], expect = sqrt(2.0 / M_PI) / sqrt((double)d);
    assert_true(fabs(median / expect - 1.0) < 0.05);
    for (int i = 0; i < SYNTH_OUTLIERS; i++) {
        double ratio = col[s.outlier_ch[i]] / median;
        assert_true(ratio > 0.9 * s.outlier_gain[i] && ratio < 1.1 * s.outlier_gain[i]);
    }
    /* o_proj rows of the outlier channels are larger too, down_proj's as well */
    double row_o = 0, row_n = 0;
    for (int j = 0; j < d; j++) {
        row_o += fabs(l.wo[(size_t)s.outlier_ch[0] * d + j]);
        row_n += fabs(l.wo[(size_t)((s.outlier_ch[0] + 1) % d) * d + j]);
    }
    assert_true(row_o > 15 * row_n);
    /* RMSNorm weights around 1 */
    double mean = 0;
    for (int j = 0; j < d; j++)
        mean += l.attn_norm[j] / d;
    assert_true(fabs(mean - 1.0) < 0.02);
    llama_layer_free(&l);
    /* per-token ranges of the embeddings: outlier channels dominate the row maxima */
    float row[384];
    int hits = 0;
    for (int v = 0; v < 50; v++) {
        assert_int_equal(synth_tensor_rows(&s, 0, v * 100, 1, row), FQ_OK);
        int arg = 0;
        for (int j = 1; j < d; j++)
            if (fabsf(row[j]) > fabsf(row[arg]))
                arg = j;
        for (int i = 0; i < SYNTH_OUTLIERS; i++)
            hits += arg == s.outlier_ch[i];
    }
    assert_true(hits >= 45);
    (void)f;
}

static unsigned char *read_or_fail(const char *path, size_t *n)
{
    unsigned char *b = tu_read_all(path, n);
    if (!b)
        fail_msg("cannot read %s", path);
    return b;
}

/* All tensor bytes of a checkpoint dir, in name order, concatenated. */
static void compare_tensors(const char *a, const char *b, int expect_equal)
{
    st_checkpoint ca, cb;
    assert_int_equal(st_checkpoint_open(a, &ca), FQ_OK);
    assert_int_equal(st_checkpoint_open(b, &cb), FQ_OK);
    int differ = 0;
    size_t count = 0;
    for (size_t fi = 0; fi < ca.n_files; fi++)
        for (size_t ti = 0; ti < ca.files[fi].n_tensors; ti++) {
            const st_tensor *x = &ca.files[fi].tensors[ti];
            const st_tensor *y = st_checkpoint_find(&cb, x->name);
            assert_non_null(y);
            assert_int_equal(x->nbytes, y->nbytes);
            differ |= memcmp(x->data, y->data, x->nbytes) != 0;
            count++;
        }
    assert_int_equal(count, 1 + 2 * 9 + 1);
    assert_int_equal(differ, !expect_equal);
    st_checkpoint_close(&ca);
    st_checkpoint_close(&cb);
}

static void test_deterministic_bytes(void **state)
{
    (void)state;
    char a[512], b[512], c[512], e[512]; /* tu_path's buffers rotate: keep copies */
    snprintf(a, sizeof a, "%s", tu_path("det-a"));
    snprintf(b, sizeof b, "%s", tu_path("det-b"));
    snprintf(c, sizeof c, "%s", tu_path("det-c"));
    snprintf(e, sizeof e, "%s", tu_path("det-e"));
    write_model(a, "stories260k", 2, 5, 1, 0);
    /* three threads and a 20 kB shard limit: several shards, same tensors */
    write_model(b, "stories260k", 2, 5, 3, 20000);
    size_t n;
    unsigned char *single = read_or_fail(tu_path("det-a/model-00001-of-00001.safetensors"), &n);
    free(single);
    st_checkpoint cb;
    assert_int_equal(st_checkpoint_open(b, &cb), FQ_OK);
    assert_true(cb.n_files > 3);
    for (size_t i = 0; i < cb.n_files; i++) {
        size_t tensors = 0;
        for (size_t t = 0; t < cb.files[i].n_tensors; t++)
            tensors += cb.files[i].tensors[t].nbytes;
        assert_true(tensors <= 20000 || cb.files[i].n_tensors == 1);
    }
    st_checkpoint_close(&cb);
    compare_tensors(a, b, 1);
    /* the same call again gives the same file bytes; another seed does not */
    write_model(c, "stories260k", 2, 5, 2, 0);
    size_t na, nc;
    unsigned char *fa = read_or_fail(tu_path("det-a/model-00001-of-00001.safetensors"), &na);
    unsigned char *fc = read_or_fail(tu_path("det-c/model-00001-of-00001.safetensors"), &nc);
    assert_int_equal(na, nc);
    assert_memory_equal(fa, fc, na);
    free(fa);
    free(fc);
    write_model(e, "stories260k", 2, 6, 2, 0);
    compare_tensors(a, e, 0);
}

static void test_quantized_format(void **state)
{
    (void)state;
    char dir[512], qdir[512];
    snprintf(dir, sizeof dir, "%s", tu_path("q16m"));
    snprintf(qdir, sizeof qdir, "%s", tu_path("q16m/quantized"));
    synth_spec s;
    assert_int_equal(synth_spec_init(&s, "flatq-16m", 1, 9), FQ_OK);
    s.threads = 3;
    if (synth_write_checkpoint(&s, dir) != FQ_OK || synth_copy_tokenizer(TOKENIZER, dir) ||
        synth_write_quantized(&s, dir, qdir, 1) != FQ_OK)
        fail_msg("synth: %s", fq_errmsg());
    qconfig qc;
    assert_int_equal(qconfig_load(qdir, &qc), 1);
    assert_int_equal(qc.w_bits, 4);
    assert_int_equal(qc.a_bits, 4);
    assert_int_equal(qc.kv_bits, 4);
    llama_model m;
    if (llama_model_load(dir, &m) != FQ_OK)
        fail_msg("load: %s", fq_errmsg());
    st_checkpoint ck;
    assert_int_equal(st_checkpoint_open(qdir, &ck), FQ_OK);
    qlayer q;
    if (qlayer_read(&ck, &m.cfg, &qc, 0, &q) != FQ_OK)
        fail_msg("qlayer_read: %s", fq_errmsg());
    /* independent reference: whole-matrix RTN of the weights the FP loader read */
    const real *w[QL_NLINEAR] = {m.layers[0].wq, m.layers[0].wk, m.layers[0].wv, m.layers[0].wo,
                                 m.layers[0].wgate, m.layers[0].wup, m.layers[0].wdown};
    for (int k = 0; k < QL_NLINEAR; k++) {
        qlinear ref;
        assert_int_equal(qlinear_quantize_rtn(&ref, w[k], q.lin[k].out, q.lin[k].in, 4), FQ_OK);
        assert_memory_equal(ref.codes, q.lin[k].codes, (size_t)q.lin[k].out * q.lin[k].in / 2);
        assert_memory_equal(ref.scales, q.lin[k].scales, sizeof(float) * (size_t)q.lin[k].out);
        free(ref.codes);
        free(ref.scales);
        assert_true(q.act_clip[k][0] == 0.98f && q.act_clip[k][1] == 0.98f);
    }
    assert_true(q.kv_clip[1][0] == 0.98f);
    assert_memory_equal(q.attn_norm, m.layers[0].attn_norm, sizeof(float) * 384);
    /* identity online transforms */
    int n1 = q.attn_in.n1;
    for (int i = 0; i < n1; i++)
        for (int j = 0; j < n1; j++)
            assert_true(q.attn_in.L[i * n1 + j] == (i == j ? 1.0f : 0.0f));
    qlayer_free(&q);
    st_checkpoint_close(&ck);
    /* tp_blocks 2: block-diagonal identity T_d / M_o (what TP=2 needs), read back as such;
     * 4 does not divide 16m's 6 heads and is refused before anything is written */
    char q2[512];
    snprintf(q2, sizeof q2, "%s", tu_path("q16m/quantized-tp2"));
    if (synth_write_quantized(&s, dir, q2, 2) != FQ_OK)
        fail_msg("synth tp_blocks 2: %s", fq_errmsg());
    assert_int_equal(qconfig_load(q2, &qc), 1);
    assert_int_equal(qc.tp_blocks, 2);
    assert_int_equal(st_checkpoint_open(q2, &ck), FQ_OK);
    if (qlayer_read(&ck, &m.cfg, &qc, 0, &q) != FQ_OK)
        fail_msg("qlayer_read tp2: %s", fq_errmsg());
    assert_int_equal(q.o_blocks, 2);
    assert_int_equal(q.down_in.blocks, 2);
    int hb = m.cfg.n_heads / 2;
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < hb; i++)
            for (int j = 0; j < hb; j++)
                assert_true(q.Mo[((size_t)b * hb + i) * hb + j] == (i == j ? 1.0f : 0.0f));
    qlayer_free(&q);
    st_checkpoint_close(&ck);
    char q4[512];
    snprintf(q4, sizeof q4, "%s", tu_path("q16m/quantized-tp4"));
    assert_int_equal(synth_write_quantized(&s, dir, q4, 4), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "tp_blocks 4"));
    llama_model_free(&m);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    synth_spec s;
    assert_int_equal(synth_spec_init(&s, "llama-2-13b", 2, 0), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "--shape"));
    assert_non_null(strstr(fq_errmsg(), "llama-3-70b"));
    assert_int_equal(synth_spec_init(&s, "flatq-16m", 0, 0), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "--layers"));
    assert_int_equal(synth_spec_init(&s, "flatq-16m", 1, 0), FQ_OK);
    float row[384];
    assert_int_equal(synth_tensor_rows(&s, 0, 8190, 3, row), FQ_ERR);
    assert_int_equal(synth_tensor_rows(&s, 99, 0, 1, row), FQ_ERR);
    assert_int_equal(synth_copy_tokenizer("/nonexistent/tokenizer.json", tu_path("")), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "--tokenizer"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loads_with_the_fp_loader),
        cmocka_unit_test(test_llama3_shape_config),
        cmocka_unit_test(test_outliers_and_init_scale),
        cmocka_unit_test(test_deterministic_bytes),
        cmocka_unit_test(test_quantized_format),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, tu_setup, tu_teardown);
}
