/* test_safetensors.c — the safetensors reader, writer and checkpoint loader.
 *
 * References are independent of the code under test: the original llama2.c
 * stories260K.bin (raw floats at offsets computed from its documented layout), files
 * written by the Python safetensors library (rewriting them must reproduce every byte),
 * hand-written expected header text, and hand-made hostile files whose errors must name
 * the file and what was expected.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <string.h>

#include "error.h"
#include "safetensors.h"
#include "st_test_util.h"

static void assert_msg_has(const char *needle)
{
    const char *m = fq_errmsg();
    if (!strstr(m, needle))
        fail_msg("error message \"%s\" lacks \"%s\"", m, needle);
    assert_null(strchr(m, '\n'));
}

/* ---- real checkpoints ---- */

static void test_stories260k_values_match_llama2c_bin(void **state)
{
    (void)state;
    const char *dir = tu_data("models/stories260K-hf", "stories260K reader test");
    const char *bin = tu_data("models/stories260K/stories260K.bin", "stories260K reader test");
    if (!dir || !bin)
        skip();
    st_checkpoint ck;
    assert_int_equal(st_checkpoint_open(dir, &ck), FQ_OK);
    assert_int_equal(ck.n_files, 1);
    assert_int_equal(ck.files[0].n_tensors, 47);
    assert_string_equal(st_file_meta(&ck.files[0], "format"), "pt");
    assert_null(st_checkpoint_find(&ck, "lm_head.weight")); /* tied */
    for (size_t i = 0; i < ck.files[0].n_tensors; i++)
        assert_int_equal(ck.files[0].tensors[i].dtype, FQ_F32);

    /* llama2.c legacy layout: 7 int32 header, then float32 arrays in a fixed order. */
    size_t nbin;
    unsigned char *raw = tu_read_all(bin, &nbin);
    assert_non_null(raw);
    const size_t V = 512, D = 64, L = 5, KV = 32, H = 172;
    size_t off = 7, emb = off;
    off += V * D + L * D;                       /* embedding, rms_att */
    off += L * D * D + L * KV * D;              /* wq, wk */
    size_t wv = off;
    off += L * KV * D + L * D * D + L * D;      /* wv, wo, rms_ffn */
    off += L * H * D;                           /* w1 */
    size_t w2 = off;
    off += L * D * H + L * H * D;               /* w2, w3 */
    size_t rms_final = off;
    assert_true((rms_final + D) * 4 <= nbin);
    const struct { const char *name; size_t at, n; int64_t d0, d1; } cases[] = {
        {"model.embed_tokens.weight", emb, V * D, 512, 64},
        {"model.layers.2.self_attn.v_proj.weight", wv + 2 * KV * D, KV * D, 32, 64},
        {"model.layers.3.mlp.down_proj.weight", w2 + 3 * D * H, D * H, 64, 172},
        {"model.norm.weight", rms_final, D, 64, -1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const st_tensor *t = st_checkpoint_find(&ck, cases[c].name);
        assert_non_null(t);
        assert_int_equal(t->nelem, cases[c].n);
        assert_int_equal(t->shape[0], cases[c].d0);
        assert_int_equal(t->ndim, cases[c].d1 < 0 ? 1 : 2);
        if (cases[c].d1 >= 0)
            assert_int_equal(t->shape[1], cases[c].d1);
        float *got = malloc(t->nelem * sizeof *got);
        assert_int_equal(st_tensor_to_f32(t, got, t->nelem), FQ_OK);
        assert_memory_equal(got, raw + 4 * cases[c].at, 4 * t->nelem);
        free(got);
    }
    free(raw);
    st_checkpoint_close(&ck);
}

static const char *const per_layer[] = {
    "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
    "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
    "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
};
static const int64_t per_layer_shape[][2] = {
    {384, 0}, {384, 384}, {128, 384}, {128, 384}, {384, 384}, {384, 0},
    {1024, 384}, {1024, 384}, {384, 1024},
};

static int file_holding(const st_checkpoint *ck, const st_tensor *t)
{
    for (size_t i = 0; i < ck->n_files; i++)
        if (t >= ck->files[i].tensors && t < ck->files[i].tensors + ck->files[i].n_tensors)
            return (int)i;
    return -1;
}

static void test_flatq16m_sharded_checkpoint(void **state)
{
    (void)state;
    const char *dir = tu_data("models/flatq-llama-16m", "flatq-llama-16m sharded reader test");
    if (!dir)
        skip();
    st_checkpoint ck;
    assert_int_equal(st_checkpoint_open(dir, &ck), FQ_OK);
    assert_int_equal(ck.n_files, 3);
    size_t n = 0, params = 0;
    for (size_t i = 0; i < ck.n_files; i++) {
        n += ck.files[i].n_tensors;
        for (size_t j = 0; j < ck.files[i].n_tensors; j++) {
            assert_int_equal(ck.files[i].tensors[j].dtype, FQ_BF16);
            params += ck.files[i].tensors[j].nelem;
        }
    }
    assert_int_equal(n, 57);
    assert_int_equal(params, 15733632); /* SOURCES.md and the index's total_size / 2 */
    char name[128];
    for (int l = 0; l < 6; l++) {
        for (size_t k = 0; k < 9; k++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", l, per_layer[k]);
            const st_tensor *t = st_checkpoint_find(&ck, name);
            assert_non_null(t);
            assert_int_equal(t->shape[0], per_layer_shape[k][0]);
            assert_int_equal(t->ndim, per_layer_shape[k][1] ? 2 : 1);
            if (per_layer_shape[k][1])
                assert_int_equal(t->shape[1], per_layer_shape[k][1]);
        }
    }
    const st_tensor *emb = st_checkpoint_find(&ck, "model.embed_tokens.weight");
    const st_tensor *head = st_checkpoint_find(&ck, "lm_head.weight");
    assert_non_null(emb);
    assert_non_null(head);
    assert_int_equal(emb->shape[0], 8192);
    assert_int_equal(head->shape[1], 384);
    /* Layer 1 spans shards 1 and 2 (SOURCES.md): q_proj in one, down_proj in the next. */
    int fq = file_holding(&ck, st_checkpoint_find(&ck, "model.layers.1.self_attn.q_proj.weight"));
    int fd = file_holding(&ck, st_checkpoint_find(&ck, "model.layers.1.mlp.down_proj.weight"));
    assert_true(fq >= 0 && fd >= 0 && fq != fd);
    assert_non_null(strstr(ck.files[fq].path, "model-00001-of-00003"));
    assert_non_null(strstr(ck.files[fd].path, "model-00002-of-00003"));
    /* Widening bf16 is a 16-bit shift; the norm is a learned gain, finite and nonzero. */
    const st_tensor *norm = st_checkpoint_find(&ck, "model.norm.weight");
    float g[384];
    assert_int_equal(st_tensor_to_f32(norm, g, 384), FQ_OK);
    for (int i = 0; i < 384; i++) {
        uint16_t h = (uint16_t)(norm->data[2 * i] | (norm->data[2 * i + 1] << 8));
        uint32_t u = (uint32_t)h << 16;
        float ref;
        memcpy(&ref, &u, 4);
        assert_true(g[i] == ref && isfinite(g[i]) && g[i] != 0.0f);
    }
    st_checkpoint_close(&ck);
}

/* Rewriting a file made by the Python library, tensors in its order, gives its bytes. */
static void rewrite_and_compare(const char *src, const char *dst)
{
    st_file f;
    assert_int_equal(st_file_open(src, &f), FQ_OK);
    st_writer *w = st_writer_new();
    assert_non_null(w);
    for (size_t i = 0; i < f.n_meta; i++)
        assert_int_equal(st_writer_set_meta(w, f.meta_keys[i], f.meta_values[i]), FQ_OK);
    for (size_t i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        assert_int_equal(st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data),
                         FQ_OK);
    }
    assert_int_equal(st_writer_commit(w, dst), FQ_OK);
    st_writer_free(w);
    size_t na, nb;
    unsigned char *a = tu_read_all(src, &na), *b = tu_read_all(dst, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    free(a);
    free(b);
    st_file_close(&f);
}

static void test_rewrite_reproduces_python_files(void **state)
{
    (void)state;
    const char *s = tu_data("models/stories260K-hf/model.safetensors", "rewrite test");
    const char *f3 = tu_data("models/flatq-llama-16m/model-00003-of-00003.safetensors",
                             "rewrite test");
    if (!s || !f3)
        skip();
    rewrite_and_compare(s, tu_path("re-stories.safetensors"));
    rewrite_and_compare(f3, tu_path("re-shard3.safetensors"));
}

/* ---- writer ---- */

static void test_writer_header_bytes_and_round_trip(void **state)
{
    (void)state;
    const float a[6] = {1.5f, -2.25f, 0.0f, 3.0e-8f, 65504.0f, -1.0f};
    const uint16_t bf[2] = {0x3fc0, 0xc010}; /* 1.5, -2.25 */
    const uint8_t u[3] = {7, 8, 9};
    const int64_t sa[2] = {2, 3}, sb[1] = {2}, su[1] = {3}, sz[2] = {0, 4};
    const double scalar = 0.125;
    st_writer *w = st_writer_new();
    assert_non_null(w);
    /* Added out of name order: data stays in add order, header keys are sorted. */
    assert_int_equal(st_writer_add(w, "z.f32", FQ_F32, 2, sa, a), FQ_OK);
    assert_int_equal(st_writer_add(w, "b\"q", FQ_BF16, 1, sb, bf), FQ_OK);
    assert_int_equal(st_writer_add(w, "a.u8", FQ_U8, 1, su, u), FQ_OK);
    assert_int_equal(st_writer_add(w, "empty", FQ_F16, 2, sz, NULL), FQ_OK);
    assert_int_equal(st_writer_add(w, "s", FQ_F64, 0, NULL, &scalar), FQ_OK);
    assert_int_equal(st_writer_set_meta(w, "format", "pt"), FQ_OK);
    assert_int_equal(st_writer_set_meta(w, "by", "flatq"), FQ_OK);
    assert_int_equal(st_writer_set_meta(w, "format", "flatq"), FQ_OK); /* replaces */
    assert_int_equal(st_writer_add(w, "a.u8", FQ_U8, 1, su, u), FQ_ERR);
    assert_msg_has("added twice");
    const char *path = tu_path("w.safetensors");
    assert_int_equal(st_writer_commit(w, path), FQ_OK);
    st_writer_free(w);

    const char *expect =
        "{\"__metadata__\":{\"by\":\"flatq\",\"format\":\"flatq\"},"
        "\"a.u8\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[28,31]},"
        "\"b\\\"q\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[24,28]},"
        "\"empty\":{\"dtype\":\"F16\",\"shape\":[0,4],\"data_offsets\":[31,31]},"
        "\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[31,39]},"
        "\"z.f32\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}";
    size_t n;
    unsigned char *b = tu_read_all(path, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | b[i];
    assert_int_equal(hl % 8, 0);
    assert_int_equal(n, 8 + hl + 39);
    assert_true(hl >= strlen(expect) && hl < strlen(expect) + 8);
    assert_memory_equal(b + 8, expect, strlen(expect));
    for (size_t i = 8 + strlen(expect); i < 8 + hl; i++)
        assert_int_equal(b[i], ' ');
    assert_memory_equal(b + 8 + hl, a, 24);
    free(b);

    st_file f;
    assert_int_equal(st_file_open(path, &f), FQ_OK);
    assert_int_equal(f.n_tensors, 5);
    assert_string_equal(st_file_meta(&f, "format"), "flatq");
    assert_null(st_file_meta(&f, "absent"));
    const st_tensor *t = st_file_find(&f, "z.f32");
    float back[6];
    assert_int_equal(st_tensor_to_f32(t, back, 6), FQ_OK);
    assert_memory_equal(back, a, sizeof a);
    t = st_file_find(&f, "b\"q");
    assert_int_equal(st_tensor_to_f32(t, back, 2), FQ_OK);
    assert_true(back[0] == 1.5f && back[1] == -2.25f);
    t = st_file_find(&f, "s");
    assert_int_equal(t->ndim, 0);
    assert_int_equal(t->nelem, 1);
    assert_int_equal(st_tensor_to_f32(t, back, 1), FQ_OK);
    assert_true(back[0] == 0.125f);
    t = st_file_find(&f, "empty");
    assert_int_equal(t->nelem, 0);
    assert_int_equal(st_tensor_to_f32(t, back, 0), FQ_OK);
    t = st_file_find(&f, "a.u8");
    assert_memory_equal(t->data, u, 3);
    assert_int_equal(st_tensor_to_f32(t, back, 3), FQ_ERR);
    assert_msg_has("tensor 'a.u8'");
    assert_int_equal(st_tensor_to_f32(st_file_find(&f, "z.f32"), back, 5), FQ_ERR);
    assert_msg_has("expected 6");
    st_file_close(&f);
}

/* w committed to the test file `name` (and freed), then opened into f */
static void commit_and_open(st_writer *w, const char *name, st_file *f)
{
    const char *path = tu_path(name);
    assert_int_equal(st_writer_commit(w, path), FQ_OK);
    st_writer_free(w);
    assert_int_equal(st_file_open(path, f), FQ_OK);
}

static void test_tensor_to_f32_f16_f64(void **state)
{
    (void)state;
    const uint16_t h[4] = {0x3c00, 0xc100, 0x0001, 0x7bff}; /* 1, -2.5, 2^-24, 65504 */
    const double d[3] = {0.1, -1e30, 3.0};
    const int64_t s4[1] = {4}, s3[1] = {3};
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_add(w, "h", FQ_F16, 1, s4, h), FQ_OK);
    assert_int_equal(st_writer_add(w, "d", FQ_F64, 1, s3, d), FQ_OK);
    st_file f;
    commit_and_open(w, "conv.safetensors", &f);
    float o[4];
    assert_int_equal(st_tensor_to_f32(st_file_find(&f, "h"), o, 4), FQ_OK);
    assert_true(o[0] == 1.0f && o[1] == -2.5f && o[2] == ldexpf(1.0f, -24) &&
                o[3] == 65504.0f);
    assert_int_equal(st_tensor_to_f32(st_file_find(&f, "d"), o, 3), FQ_OK);
    assert_true(o[0] == (float)0.1 && o[1] == (float)-1e30 && o[2] == 3.0f);
    st_file_close(&f);
}

/* A tensor of several conversion chunks (threaded in st_tensor_to_f32): every element as
 * the scalar conversion gives it, the chunk edges included. */
static void test_tensor_to_f32_chunked(void **state)
{
    (void)state;
    const size_t n = ((size_t)1 << 22) * 2 + 12345; /* 2 full chunks and a partial one */
    uint16_t *h = malloc(n * sizeof *h);
    float *o = malloc(n * sizeof *o);
    assert_non_null(h);
    assert_non_null(o);
    for (size_t i = 0; i < n; i++)
        h[i] = (uint16_t)(i * 40503u);
    const int64_t shape[1] = {(int64_t)n};
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_add(w, "big", FQ_BF16, 1, shape, h), FQ_OK);
    st_file f;
    commit_and_open(w, "chunked.safetensors", &f);
    assert_int_equal(st_tensor_to_f32(st_file_find(&f, "big"), o, n), FQ_OK);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        float want = fq_bf16_to_f32(h[i]);
        bad += memcmp(&o[i], &want, sizeof want) != 0;
    }
    assert_int_equal(bad, 0);
    st_file_close(&f);
    free(h);
    free(o);
}

static void test_writer_rejects_bad_input_and_commit_is_atomic(void **state)
{
    (void)state;
    const int64_t neg[1] = {-1}, big[2] = {INT64_C(1) << 40, INT64_C(1) << 40};
    const float x = 1.0f;
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_add(w, "__metadata__", FQ_F32, 0, NULL, &x), FQ_ERR);
    assert_int_equal(st_writer_add(w, "", FQ_F32, 0, NULL, &x), FQ_ERR);
    assert_int_equal(st_writer_add(w, "bad\xff", FQ_F32, 0, NULL, &x), FQ_ERR);
    assert_msg_has("bad\xff");
    assert_int_equal(st_writer_add(w, "n", FQ_F32, 1, neg, &x), FQ_ERR);
    assert_msg_has("shape[0] = -1");
    assert_int_equal(st_writer_add(w, "o", FQ_F32, 2, big, &x), FQ_ERR);
    assert_int_equal(st_writer_add(w, "i", FQ_DTYPE_INVALID, 0, NULL, &x), FQ_ERR);
    assert_int_equal(st_writer_add(w, "d", FQ_F32, 9, big, &x), FQ_ERR);
    assert_int_equal(st_writer_set_meta(w, "k", "\xc3"), FQ_ERR);

    /* Commit over an existing file replaces it and leaves no temp file behind. */
    const char *path = tu_path("atomic.safetensors");
    tu_write_bytes(path, "old", 3);
    assert_int_equal(st_writer_add(w, "x", FQ_F32, 0, NULL, &x), FQ_OK);
    assert_int_equal(st_writer_commit(w, path), FQ_OK);
    st_file f;
    assert_int_equal(st_file_open(path, &f), FQ_OK);
    st_file_close(&f);
    int entries = 0;
    DIR *dh = opendir(tu_dir);
    assert_non_null(dh);
    for (struct dirent *de; (de = readdir(dh)) != NULL; entries++)
        assert_null(strstr(de->d_name, ".tmp."));
    closedir(dh);
    assert_true(entries >= 3);
    /* A failed commit (missing directory) reports the path and writes nothing. */
    assert_int_equal(st_writer_commit(w, tu_path("no/such/dir/x.safetensors")), FQ_ERR);
    assert_msg_has("no/such/dir/x.safetensors");
    assert_msg_has("expected");
    st_writer_free(w);
}

/* ---- hostile single files ---- */

typedef struct {
    const char *what;
    int64_t claimed_len; /* -1: the real header length */
    const char *header;
    size_t data_bytes;
    const char *msg1, *msg2;
} bad_case;

static const bad_case bad_files[] = {
    {"header length past EOF", 1000, "{}", 0, "header length 1000 runs past the end",
     "expected at most 2 bytes"},
    {"header length zero", 0, "{}", 0, "header length is 0", "expected"},
    {"header over 100 MB", 200000000, "{}", 0, "over the 100 MB limit", "expected"},
    {"overlapping spans", -1,
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
     "tensor 'b': data_offsets [4, 12] overlap tensor 'a' (expected disjoint spans)", NULL},
    {"overlap hidden behind order", -1,
     "{\"late\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[9,11]},"
     "\"z0\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[5,5]},"
     "\"big\":{\"dtype\":\"U8\",\"shape\":[10],\"data_offsets\":[0,10]}}", 12,
     "tensor 'late': data_offsets [9, 11] overlap tensor 'big'", NULL},
    {"wrong dtype size", -1, "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",
     8, "tensor 'w': data_offsets [0, 8] span 8 bytes but shape x F32 size is 12 bytes",
     "expected equal"},
    {"unknown dtype", -1, "{\"w\":{\"dtype\":\"F8_E9M9\",\"shape\":[1],\"data_offsets\":[0,1]}}",
     1, "tensor 'w': unknown dtype 'F8_E9M9'", "expected one of F64"},
    {"negative shape", -1, "{\"w\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}",
     0, "tensor 'w': shape[0] is not a non-negative integer", "expected"},
    {"fractional shape", -1, "{\"w\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,1]}}",
     1, "shape[0] is not a non-negative integer", NULL},
    {"offsets past end", -1, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
     8, "tensor 'w': data_offsets [0, 16] end past the data section of 8 bytes",
     "expected end <= 8"},
    {"begin after end", -1, "{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,2]}}",
     8, "begin > end", "expected begin <= end"},
    {"offsets not a pair", -1, "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}",
     8, "not a pair", "expected [begin, end]"},
    {"non-object header", -1, "[1,2,3]", 0, "header is not a JSON object", "expected"},
    {"invalid JSON", -1, "{\"w\":", 0, "header JSON invalid", "expected valid JSON"},
    {"newline inside a bad token (found by fuzzing)", -1, "{\"__metad\\\n\n\"", 0,
     "header JSON invalid", "\\x0a"},
    {"duplicate names", -1,
     "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
     "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2, "duplicate", NULL},
    {"nine dims", -1,
     "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
     "shape has 9 dimensions", "expected at most 8"},
    {"shape product overflow", -1,
     "{\"w\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,1]}}",
     1, "overflows", "expected"},
    {"byte size overflow", -1,
     "{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,1]}}", 1,
     "byte size overflows", NULL},
    {"metadata value not a string", -1, "{\"__metadata__\":{\"format\":1}}", 0,
     "__metadata__ 'format' is not a string", "expected string values"},
    {"metadata not an object", -1, "{\"__metadata__\":[]}", 0,
     "'__metadata__' is not an object", NULL},
    {"entry not an object", -1, "{\"w\":7}", 0, "tensor 'w': entry is not an object", NULL},
    {"missing dtype", -1, "{\"w\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
     "missing or non-string 'dtype'", NULL},
    {"control bytes in a name stay escaped", -1,
     "{\"a\\nb\":{\"dtype\":\"Q\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
     "tensor 'a\\x0ab': unknown dtype 'Q'", NULL},
};

static void test_hostile_files(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++) {
        const bad_case *c = &bad_files[i];
        const char *path = tu_path("bad.safetensors");
        uint64_t len = c->claimed_len < 0 ? strlen(c->header) : (uint64_t)c->claimed_len;
        tu_write_st(path, len, c->header, c->data_bytes);
        st_file f;
        fq_error_clear();
        if (st_file_open(path, &f) != FQ_ERR)
            fail_msg("case '%s' was accepted", c->what);
        assert_null(f.tensors);
        assert_msg_has(path);
        assert_msg_has(c->msg1);
        if (c->msg2)
            assert_msg_has(c->msg2);
    }
}

static void test_truncated_and_odd_files(void **state)
{
    (void)state;
    st_file f;
    const char *p = tu_path("short.safetensors");
    tu_write_bytes(p, "\x10\0\0\0\0", 5);
    assert_int_equal(st_file_open(p, &f), FQ_ERR);
    assert_msg_has("is 5 bytes, too short");
    assert_msg_has("expected at least 8 bytes");
    tu_write_bytes(p, "", 0);
    assert_int_equal(st_file_open(p, &f), FQ_ERR);
    assert_msg_has("is 0 bytes");
    assert_int_equal(st_file_open(tu_path("missing.safetensors"), &f), FQ_ERR);
    assert_msg_has("missing.safetensors: cannot open");
    assert_int_equal(st_file_open(tu_dir, &f), FQ_ERR);
    assert_msg_has("not a regular file");
    /* A valid header whose file is cut in the middle of the data. */
    const char *h1 = "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
    tu_write_st(p, strlen(h1), h1, 10);
    assert_int_equal(st_file_open(p, &f), FQ_ERR);
    assert_msg_has("end past the data section of 10 bytes");
    /* Buffer API: NULL with a size, and the label names the source. */
    assert_int_equal(st_parse_buffer(NULL, 10, "buf", &f), FQ_ERR);
    assert_msg_has("buf: buffer is NULL");
    /* Gaps and trailing bytes are fine; zero-length tensors never overlap. */
    const char *h2 = "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]},"
                     "\"e\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[5,5]}}   ";
    tu_write_st(p, strlen(h2), h2, 9);
    assert_int_equal(st_file_open(p, &f), FQ_OK);
    assert_int_equal(f.n_tensors, 2);
    assert_int_equal(st_file_find(&f, "a")->data[0], 4);
    assert_string_equal(f.tensors[0].name, "a"); /* header order kept */
    st_file_close(&f);
}

/* ---- hostile checkpoints ---- */

static void write_shard(const char *name, const char *const *tensors, size_t n)
{
    st_writer *w = st_writer_new();
    const float v[2] = {1, 2};
    const int64_t s[1] = {2};
    for (size_t i = 0; i < n; i++)
        assert_int_equal(st_writer_add(w, tensors[i], FQ_F32, 1, s, v), FQ_OK);
    assert_int_equal(st_writer_commit(w, tu_path(name)), FQ_OK);
    st_writer_free(w);
}

static void write_index(const char *dir, const char *weight_map)
{
    char p[600], text[1024];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    snprintf(text, sizeof text, "{\"metadata\":{},\"weight_map\":%s}", weight_map);
    tu_write_bytes(p, text, strlen(text));
}

static void test_sharded_checkpoints_good_and_bad(void **state)
{
    (void)state;
    char d[512], e[512];
    snprintf(d, sizeof d, "%s", tu_path("ck"));
    snprintf(e, sizeof e, "%s", tu_path("empty-ck"));
    assert_int_equal(mkdir(d, 0755), 0);
    const char *s1[] = {"a", "b"}, *s2[] = {"c"}, *s2dup[] = {"c", "b"};
    write_shard("ck/s1.safetensors", s1, 2);
    write_shard("ck/s2.safetensors", s2, 1);
    st_checkpoint ck;

    write_index(d, "{\"a\":\"s1.safetensors\",\"c\":\"s2.safetensors\",\"b\":\"s1.safetensors\"}");
    assert_int_equal(st_checkpoint_open(d, &ck), FQ_OK);
    assert_int_equal(ck.n_files, 2); /* s1 opened once although named twice */
    assert_non_null(st_checkpoint_find(&ck, "c"));
    assert_null(st_checkpoint_find(&ck, "zz"));
    st_checkpoint_close(&ck);

    write_index(d, "{\"a\":\"s1.safetensors\",\"c\":\"s3.safetensors\"}");
    assert_int_equal(st_checkpoint_open(d, &ck), FQ_ERR);
    assert_msg_has("model.safetensors.index.json: shard 's3.safetensors'");
    assert_msg_has("s3.safetensors: cannot open");
    assert_int_equal(ck.n_files, 0);

    write_index(d, "{\"a\":\"s1.safetensors\",\"x\":\"s2.safetensors\"}");
    assert_int_equal(st_checkpoint_open(d, &ck), FQ_ERR);
    assert_msg_has("index.json: tensor 'x' is listed in shard 's2.safetensors' but that "
                   "shard does not contain it (expected every indexed tensor in its shard)");

    write_index(d, "{\"a\":\"../s1.safetensors\"}");
    assert_int_equal(st_checkpoint_open(d, &ck), FQ_ERR);
    assert_msg_has("weight_map['a'] is not a shard file name");

    write_index(d, "{}");
    assert_int_equal(st_checkpoint_open(d, &ck), FQ_ERR);
    assert_msg_has("\"weight_map\" (expected an object");

    write_index(d, "{\"a\":");
    assert_int_equal(st_checkpoint_open(d, &ck), FQ_ERR);
    assert_msg_has("model.safetensors.index.json:1:");

    write_shard("ck/s2.safetensors", s2dup, 2);
    write_index(d, "{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s2.safetensors\"}");
    assert_int_equal(st_checkpoint_open(d, &ck), FQ_ERR);
    assert_msg_has("tensor 'b' is in two shards");
    assert_msg_has("expected each tensor in exactly one shard");

    /* A corrupt shard is reported with the shard's path. */
    tu_write_st(tu_path("ck/s2.safetensors"), 500, "{}", 0);
    write_index(d, "{\"a\":\"s1.safetensors\",\"c\":\"s2.safetensors\"}");
    assert_int_equal(st_checkpoint_open(d, &ck), FQ_ERR);
    assert_msg_has("ck/s2.safetensors: header length 500 runs past the end");

    assert_int_equal(mkdir(e, 0755), 0);
    assert_int_equal(st_checkpoint_open(e, &ck), FQ_ERR);
    assert_msg_has("empty-ck: no model.safetensors or model.safetensors.index.json");

    /* Single-file layout, and a file path given directly. */
    write_shard("empty-ck/model.safetensors", s1, 2);
    assert_int_equal(st_checkpoint_open(e, &ck), FQ_OK);
    assert_int_equal(ck.files[0].n_tensors, 2);
    st_checkpoint_close(&ck);
    assert_int_equal(st_checkpoint_open(tu_path("ck/s1.safetensors"), &ck), FQ_OK);
    assert_non_null(st_checkpoint_find(&ck, "b"));
    st_checkpoint_close(&ck);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260k_values_match_llama2c_bin),
        cmocka_unit_test(test_flatq16m_sharded_checkpoint),
        cmocka_unit_test(test_rewrite_reproduces_python_files),
        cmocka_unit_test(test_writer_header_bytes_and_round_trip),
        cmocka_unit_test(test_tensor_to_f32_f16_f64),
        cmocka_unit_test(test_tensor_to_f32_chunked),
        cmocka_unit_test(test_writer_rejects_bad_input_and_commit_is_atomic),
        cmocka_unit_test(test_hostile_files),
        cmocka_unit_test(test_truncated_and_odd_files),
        cmocka_unit_test(test_sharded_checkpoints_good_and_bad),
    };
    return cmocka_run_group_tests_name("safetensors", tests, tu_setup, tu_teardown);
}
