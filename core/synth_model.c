/* synth_model.c — the synthetic checkpoint generator (see synth_model.h for the idea).
 *
 * Layout of the work: a tensor is cut into row chunks of about 1 M values; a pool of
 * pthreads takes chunks in order from a shared counter, generates them, converts to bf16
 * and pwrites them at their offset in the shard. The header of every shard is known before
 * any data is generated (all shapes come from the spec), so it is written first and the
 * data section is filled in any order.
 */
#include "synth_model.h"

#include "atomic_file.h"
#include "dtype.h"
#include "error.h"
#include "fileio.h"
#include "parallel.h"
#include "qformat.h"
#include "qlayer.h"
#include "rng.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define F "core/synth_model.c"

static const synth_shape shapes[] = {
    {"llama-3-70b", 8192, 64, 8, 128, 28672, 128256, 131072, 500000.0, 1, 0},
    {"llama-3-8b", 4096, 32, 8, 128, 14336, 128256, 131072, 500000.0, 1, 0},
    {"flatq-16m", 384, 6, 2, 64, 1024, 8192, 2048, 500000.0, 0, 0},
    {"stories260k", 64, 8, 4, 8, 172, 512, 512, 10000.0, 0, 1},
};
#define NSHAPES (int)(sizeof shapes / sizeof shapes[0])

const synth_shape *synth_shape_find(const char *name)
{
    for (int i = 0; name && i < NSHAPES; i++)
        if (strcmp(shapes[i].name, name) == 0)
            return &shapes[i];
    return NULL;
}

const char *synth_shape_list(void)
{
    return "llama-3-70b, llama-3-8b, flatq-16m, stories260k";
}

/* ---- the tensors of a checkpoint ---- */

/* Per-layer tensors in the order llama_layer lists them. */
enum { K_ATTN_NORM, K_Q, K_K, K_V, K_O, K_MLP_NORM, K_GATE, K_UP, K_DOWN, K_PER_LAYER };
static const char *const layer_names[K_PER_LAYER] = {
    "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
    "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
    "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"};

typedef enum { T_EMBED, T_LAYER, T_NORM, T_HEAD } tensor_group;

typedef struct {
    tensor_group group;
    int layer, kind;
    int64_t rows, cols; /* cols 0: a vector of `rows` */
    uint64_t uid;       /* seeds the row streams */
} tensor_desc;

static int describe(const synth_spec *s, int t, tensor_desc *td)
{
    const synth_shape *sh = &s->shape;
    int n = synth_tensor_count(s);
    if (t < 0 || t >= n)
        return fq_error(F ":describe: tensor index %d out of range (expected 0..%d)", t, n - 1);
    int64_t d = sh->hidden, f = sh->intermediate, qd = (int64_t)sh->n_heads * sh->head_dim,
            kvd = (int64_t)sh->n_kv_heads * sh->head_dim;
    memset(td, 0, sizeof *td);
    if (t == 0) {
        *td = (tensor_desc){T_EMBED, -1, -1, sh->vocab, d, 1};
        return FQ_OK;
    }
    int lt = t - 1;
    if (lt < s->n_layers * K_PER_LAYER) {
        td->group = T_LAYER;
        td->layer = lt / K_PER_LAYER;
        td->kind = lt % K_PER_LAYER;
        td->uid = 16 + (uint64_t)td->layer * 16 + (uint64_t)td->kind;
        switch (td->kind) {
        case K_ATTN_NORM: case K_MLP_NORM: td->rows = d; td->cols = 0; break;
        case K_Q: td->rows = qd; td->cols = d; break;
        case K_K: case K_V: td->rows = kvd; td->cols = d; break;
        case K_O: td->rows = d; td->cols = qd; break;
        case K_GATE: case K_UP: td->rows = f; td->cols = d; break;
        default: td->rows = d; td->cols = f; break;
        }
        return FQ_OK;
    }
    if (t == 1 + s->n_layers * K_PER_LAYER)
        *td = (tensor_desc){T_NORM, -1, -1, d, 0, 2};
    else
        *td = (tensor_desc){T_HEAD, -1, -1, sh->vocab, d, 3};
    return FQ_OK;
}

int synth_tensor_count(const synth_spec *s)
{
    return 1 + s->n_layers * K_PER_LAYER + 1 + (s->shape.tie_embeddings ? 0 : 1);
}

static void tensor_name(const synth_spec *s, const tensor_desc *td, char *name, size_t cap)
{
    (void)s;
    switch (td->group) {
    case T_EMBED: snprintf(name, cap, "model.embed_tokens.weight"); break;
    case T_NORM: snprintf(name, cap, "model.norm.weight"); break;
    case T_HEAD: snprintf(name, cap, "lm_head.weight"); break;
    default: snprintf(name, cap, "model.layers.%d.%s", td->layer, layer_names[td->kind]); break;
    }
}

int synth_tensor_info(const synth_spec *s, int t, char *name, size_t cap, int64_t *rows,
                      int64_t *cols)
{
    tensor_desc td;
    if (!s || describe(s, t, &td) != FQ_OK)
        return FQ_ERR;
    if (name)
        tensor_name(s, &td, name, cap);
    if (rows)
        *rows = td.rows;
    if (cols)
        *cols = td.cols;
    return FQ_OK;
}

/* ---- values ---- */

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Unit-variance Irwin–Hall(4) sample from one 64-bit draw. */
static inline float approx_normal(rng_state *r)
{
    uint64_t u = rng_next_u64(r);
    uint32_t sum = (uint32_t)(u & 0xFFFF) + (uint32_t)((u >> 16) & 0xFFFF) +
                   (uint32_t)((u >> 32) & 0xFFFF) + (uint32_t)(u >> 48);
    /* mean 4·32767.5, variance 4·(65536² − 1)/12 */
    return (float)(((double)sum - 131070.0) * (1.7320508075688772 / 65536.0));
}

/* gain of residual channel j (1 when it is not an outlier) */
static float channel_gain(const synth_spec *s, int64_t j)
{
    for (int i = 0; i < SYNTH_OUTLIERS; i++)
        if (s->outlier_ch[i] == j)
            return s->outlier_gain[i];
    return 1.0f;
}

int synth_tensor_rows(const synth_spec *s, int t, int64_t row0, int64_t nrows, float *out)
{
    tensor_desc td;
    if (!s || !out || describe(s, t, &td) != FQ_OK)
        return FQ_ERR;
    if (row0 < 0 || nrows < 0 || row0 + nrows > td.rows)
        return fq_error(F ":synth_tensor_rows: rows [%lld, %lld) outside the tensor's %lld rows",
                        (long long)row0, (long long)(row0 + nrows), (long long)td.rows);
    int64_t cols = td.cols ? td.cols : 1;
    int is_norm = td.cols == 0;
    /* columns indexing the residual stream carry the outlier gains (embed, lm_head and
     * the inputs of q/k/v/gate/up); rows indexing it do for o_proj and down_proj */
    int gain_cols = td.group == T_EMBED ||
                    (td.group == T_LAYER && (td.kind == K_Q || td.kind == K_K ||
                                             td.kind == K_V || td.kind == K_GATE ||
                                             td.kind == K_UP));
    int gain_rows = td.group == T_LAYER && (td.kind == K_O || td.kind == K_DOWN);
    float std = (float)(1.0 / sqrt((double)(td.group == T_LAYER ? cols : s->shape.hidden)));
    for (int64_t r = 0; r < nrows; r++) {
        int64_t row = row0 + r;
        rng_state rng;
        rng_seed(&rng, mix64(s->seed ^ mix64(td.uid * 0x100000001B3ull + (uint64_t)row)));
        float *o = out + r * cols;
        if (is_norm) {
            float v = 1.0f + 0.05f * approx_normal(&rng);
            o[0] = fq_bf16_to_f32(fq_f32_to_bf16(v));
            continue;
        }
        float rg = gain_rows ? channel_gain(s, row) : 1.0f;
        for (int64_t c = 0; c < cols; c++)
            o[c] = std * rg * approx_normal(&rng);
        if (gain_cols)
            for (int i = 0; i < SYNTH_OUTLIERS; i++)
                o[s->outlier_ch[i]] *= s->outlier_gain[i];
        for (int64_t c = 0; c < cols; c++)
            o[c] = fq_bf16_to_f32(fq_f32_to_bf16(o[c]));
    }
    return FQ_OK;
}

/* ---- spec ---- */

int synth_spec_init(synth_spec *s, const char *shape, int n_layers, uint64_t seed)
{
    if (!s)
        return fq_error(F ":synth_spec_init: spec is NULL (expected a synth_spec)");
    memset(s, 0, sizeof *s);
    const synth_shape *sh = synth_shape_find(shape);
    if (!sh)
        return fq_error("--shape: unknown shape '%s' (expected one of: %s)",
                        shape ? shape : "(null)", synth_shape_list());
    if (n_layers < 1 || n_layers > 1000)
        return fq_error("--layers: %d layers (expected 1..1000)", n_layers);
    s->shape = *sh;
    s->n_layers = n_layers;
    s->seed = seed;
    s->bos_id = 1;
    s->eos_id = 2;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    s->threads = ncpu > 0 ? (int)(ncpu > 256 ? 256 : ncpu) : 1;
    s->shard_bytes = SYNTH_SHARD_BYTES;
    rng_state rng;
    rng_seed(&rng, mix64(seed ^ 0x6F75746C69657273ull)); /* "outliers" */
    for (int i = 0; i < SYNTH_OUTLIERS; i++) {
        int ch, dup;
        do {
            ch = (int)(rng_next_u64(&rng) % (uint64_t)sh->hidden);
            dup = 0;
            for (int j = 0; j < i; j++)
                dup |= s->outlier_ch[j] == ch;
        } while (dup);
        s->outlier_ch[i] = ch;
        s->outlier_gain[i] = (float)(20.0 * pow(5.0, rng_uniform(&rng)));
    }
    return FQ_OK;
}

void synth_spec_config(const synth_spec *s, llama_config *c)
{
    const synth_shape *sh = &s->shape;
    memset(c, 0, sizeof *c);
    c->hidden = sh->hidden;
    c->intermediate = sh->intermediate;
    c->n_layers = s->n_layers;
    c->n_heads = sh->n_heads;
    c->n_kv_heads = sh->n_kv_heads;
    c->head_dim = sh->head_dim;
    c->vocab = sh->vocab;
    c->max_pos = sh->max_pos;
    c->rms_eps = 1e-5;
    c->rope_theta = sh->rope_theta;
    c->tie_embeddings = sh->tie_embeddings;
    c->bos_id = s->bos_id;
    c->eos_id = s->eos_id;
    c->rope_type = sh->rope_llama3 ? ROPE_LLAMA3 : ROPE_DEFAULT;
    if (sh->rope_llama3) {
        c->rope_factor = 8.0;
        c->rope_low_freq_factor = 1.0;
        c->rope_high_freq_factor = 4.0;
        c->rope_original_max_pos = 8192;
    }
}

static json_t *config_json(const synth_spec *s)
{
    const synth_shape *sh = &s->shape;
    json_t *o = json_object();
    json_t *outl = json_array();
    for (int i = 0; i < SYNTH_OUTLIERS; i++)
        json_array_append_new(outl, json_pack("{s:i, s:f}", "channel", s->outlier_ch[i],
                                              "gain", (double)s->outlier_gain[i]));
    json_object_set_new(o, "architectures", json_pack("[s]", "LlamaForCausalLM"));
    json_object_set_new(o, "model_type", json_string("llama"));
    json_object_set_new(o, "hidden_size", json_integer(sh->hidden));
    json_object_set_new(o, "intermediate_size", json_integer(sh->intermediate));
    json_object_set_new(o, "num_hidden_layers", json_integer(s->n_layers));
    json_object_set_new(o, "num_attention_heads", json_integer(sh->n_heads));
    json_object_set_new(o, "num_key_value_heads", json_integer(sh->n_kv_heads));
    json_object_set_new(o, "head_dim", json_integer(sh->head_dim));
    json_object_set_new(o, "vocab_size", json_integer(sh->vocab));
    json_object_set_new(o, "max_position_embeddings", json_integer(sh->max_pos));
    json_object_set_new(o, "rms_norm_eps", json_real(1e-5));
    json_object_set_new(o, "rope_theta", json_real(sh->rope_theta));
    if (sh->rope_llama3)
        json_object_set_new(o, "rope_scaling",
                            json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3",
                                      "factor", 8.0, "low_freq_factor", 1.0,
                                      "high_freq_factor", 4.0,
                                      "original_max_position_embeddings", 8192));
    else
        json_object_set_new(o, "rope_scaling", json_null());
    json_object_set_new(o, "hidden_act", json_string("silu"));
    json_object_set_new(o, "attention_bias", json_false());
    json_object_set_new(o, "mlp_bias", json_false());
    json_object_set_new(o, "tie_word_embeddings", json_boolean(sh->tie_embeddings));
    json_object_set_new(o, "bos_token_id", json_integer(s->bos_id));
    json_object_set_new(o, "eos_token_id", json_integer(s->eos_id));
    json_object_set_new(o, "torch_dtype", json_string("bfloat16"));
    json_object_set_new(o, "flatq_synthetic",
                        json_pack("{s:s, s:I, s:o}", "shape", sh->name, "seed",
                                  (json_int_t)s->seed, "outliers", outl));
    return o;
}

static int json_put_file(const char *path, json_t *o)
{
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text)
        return fq_error("%s: out of memory serialising JSON", path);
    size_t n = strlen(text);
    char *buf = realloc(text, n + 2);
    if (!buf) {
        free(text);
        return fq_error("%s: out of memory serialising JSON", path);
    }
    buf[n] = '\n';
    buf[n + 1] = 0;
    int rc = atomic_file_put(path, buf, n + 1);
    free(buf);
    return rc;
}

static int make_dir(const char *dir)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return fq_error("%s: cannot create directory (%s)", dir, strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return fq_error("%s: not a directory (expected an output directory)", dir);
    return FQ_OK;
}

/* ---- the thread pool over row chunks ---- */

typedef struct chunk_job chunk_job;
/* Process rows [r0, r0+n) of the job's tensor; buf holds n·cols floats. */
typedef int (*chunk_fn)(chunk_job *j, int64_t r0, int64_t n, float *buf, void *scratch);

struct chunk_job {
    const synth_spec *s;
    int tensor;
    int64_t rows, cols, chunk_rows, nchunks;
    chunk_fn fn;
    void *ctx;
    void **buf;     /* per thread: chunk_rows·cols generated floats */
    void **scratch; /* per thread: as many bf16 values */
};

static int chunk_item(void *arg, size_t c, int t)
{
    chunk_job *j = arg;
    int64_t r0 = (int64_t)c * j->chunk_rows;
    int64_t n = r0 + j->chunk_rows <= j->rows ? j->chunk_rows : j->rows - r0;
    if (synth_tensor_rows(j->s, j->tensor, r0, n, (float *)j->buf[t]) != FQ_OK)
        return FQ_ERR;
    return j->fn(j, r0, n, (float *)j->buf[t], j->scratch[t]);
}

/* Run fn over every row chunk of tensor t with s->threads threads (core/parallel.h). */
static int for_each_chunk(const synth_spec *s, int t, chunk_fn fn, void *ctx)
{
    int64_t rows = 0, cols = 0;
    if (synth_tensor_info(s, t, NULL, 0, &rows, &cols) != FQ_OK)
        return FQ_ERR;
    chunk_job j;
    memset(&j, 0, sizeof j);
    j.s = s;
    j.tensor = t;
    j.rows = rows;
    j.cols = cols;
    int64_t per = (int64_t)1 << 20;
    j.chunk_rows = cols ? (per / cols > 0 ? per / cols : 1) : rows;
    if (j.chunk_rows > rows)
        j.chunk_rows = rows;
    j.nchunks = (rows + j.chunk_rows - 1) / j.chunk_rows;
    j.fn = fn;
    j.ctx = ctx;
    int nt = s->threads < 1 ? 1 : s->threads;
    if (nt > j.nchunks)
        nt = (int)j.nchunks;
    size_t vals = (size_t)j.chunk_rows * (size_t)(cols ? cols : 1);
    j.buf = fq_thread_buffers(nt, sizeof(float) * vals, "synthetic row chunk");
    j.scratch = fq_thread_buffers(nt, sizeof(uint16_t) * vals, "bf16 row chunk");
    int rc = j.buf && j.scratch ? fq_parallel_for((size_t)j.nchunks, nt, chunk_item, &j) : FQ_ERR;
    fq_thread_buffers_free(j.buf, nt);
    fq_thread_buffers_free(j.scratch, nt);
    return rc;
}

/* ---- sharded bf16 checkpoint ---- */

typedef struct {
    atomic_file *f;
    uint64_t data_start; /* file offset of the tensor's first byte */
} shard_write_ctx;

static int write_bf16_chunk(chunk_job *j, int64_t r0, int64_t n, float *buf, void *scratch)
{
    shard_write_ctx *w = j->ctx;
    size_t cols = (size_t)(j->cols ? j->cols : 1), cnt = (size_t)n * cols;
    uint16_t *b = scratch;
    for (size_t i = 0; i < cnt; i++)
        b[i] = fq_f32_to_bf16(buf[i]);
    /* safetensors stores little-endian; flatq targets little-endian hosts only */
    return atomic_file_pwrite(w->f, b, cnt * 2, (off_t)(w->data_start + (uint64_t)r0 * cols * 2));
}

static uint64_t tensor_bytes(const synth_spec *s, int t)
{
    int64_t rows = 0, cols = 0;
    synth_tensor_info(s, t, NULL, 0, &rows, &cols);
    return (uint64_t)rows * (uint64_t)(cols ? cols : 1) * 2;
}

/* Write tensors [t0, t1) as one shard file. */
static int write_shard(const synth_spec *s, const char *path, int t0, int t1)
{
    json_t *hdr = json_object();
    json_object_set_new(hdr, "__metadata__", json_pack("{s:s}", "format", "pt"));
    uint64_t off = 0;
    char name[128];
    for (int t = t0; t < t1; t++) {
        int64_t rows = 0, cols = 0;
        synth_tensor_info(s, t, name, sizeof name, &rows, &cols);
        json_t *shape = cols ? json_pack("[I, I]", (json_int_t)rows, (json_int_t)cols)
                             : json_pack("[I]", (json_int_t)rows);
        uint64_t nb = tensor_bytes(s, t);
        json_object_set_new(hdr, name,
                            json_pack("{s:s, s:o, s:[I, I]}", "dtype", "BF16", "shape", shape,
                                      "data_offsets", (json_int_t)off, (json_int_t)(off + nb)));
        off += nb;
    }
    char *text = json_dumps(hdr, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(hdr);
    if (!text)
        return fq_error("%s: out of memory building the safetensors header", path);
    size_t hn = strlen(text), padded = (hn + 7) / 8 * 8;
    char *h = malloc(8 + padded);
    if (!h) {
        free(text);
        return fq_error("%s: out of memory building the safetensors header", path);
    }
    for (int i = 0; i < 8; i++)
        h[i] = (char)(uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(h + 8, text, hn);
    memset(h + 8 + hn, ' ', padded - hn);
    free(text);
    atomic_file f;
    int rc = atomic_file_open(&f, path);
    if (rc != FQ_OK) {
        free(h);
        return FQ_ERR;
    }
    rc = atomic_file_pwrite(&f, h, 8 + padded, 0);
    free(h);
    uint64_t start = 8 + padded;
    for (int t = t0; rc == FQ_OK && t < t1; t++) {
        shard_write_ctx w = {&f, start};
        rc = for_each_chunk(s, t, write_bf16_chunk, &w);
        start += tensor_bytes(s, t);
    }
    if (rc != FQ_OK) {
        atomic_file_abort(&f);
        return fq_error_wrap("%s", path);
    }
    return atomic_file_commit(&f);
}

int synth_write_checkpoint(const synth_spec *s, const char *dir)
{
    if (!s || !dir || !dir[0])
        return fq_error(F ":synth_write_checkpoint: spec or directory missing (expected both)");
    if (make_dir(dir) != FQ_OK)
        return FQ_ERR;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *cfg = config_json(s);
    int rc = json_put_file(path, cfg);
    json_decref(cfg);
    if (rc != FQ_OK)
        return FQ_ERR;
    /* plan the shards: greedy, in checkpoint order, each ≤ shard_bytes (a single larger
     * tensor gets a shard of its own) */
    int n = synth_tensor_count(s);
    int *first = malloc(sizeof(int) * (size_t)(n + 1));
    if (!first)
        return fq_error(F ": out of memory planning shards");
    int nshards = 0;
    uint64_t cur = 0, total = 0;
    for (int t = 0; t < n; t++) {
        uint64_t b = tensor_bytes(s, t);
        if (t == 0 || (cur > 0 && cur + b > s->shard_bytes)) {
            first[nshards++] = t;
            cur = 0;
        }
        cur += b;
        total += b;
    }
    first[nshards] = n;
    json_t *map = json_object();
    char file[64], name[128];
    rc = FQ_OK;
    for (int k = 0; rc == FQ_OK && k < nshards; k++) {
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", k + 1, nshards);
        snprintf(path, sizeof path, "%s/%s", dir, file);
        rc = write_shard(s, path, first[k], first[k + 1]);
        for (int t = first[k]; t < first[k + 1]; t++) {
            synth_tensor_info(s, t, name, sizeof name, NULL, NULL);
            json_object_set_new(map, name, json_string(file));
        }
    }
    free(first);
    if (rc == FQ_OK) {
        json_t *index = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total,
                                  "weight_map", map);
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        rc = json_put_file(path, index);
        json_decref(index);
    } else {
        json_decref(map);
    }
    return rc;
}

int synth_copy_tokenizer(const char *tok, const char *dir)
{
    if (!tok || !dir)
        return fq_error(F ":synth_copy_tokenizer: paths missing (expected a tokenizer and a "
                        "directory)");
    char src[4096], dst[4096];
    size_t n = strlen(tok);
    int is_file = n >= 5 && strcmp(tok + n - 5, ".json") == 0;
    const char *names[] = {"tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < 2; i++) {
        if (is_file) {
            if (i == 1) {
                /* tokenizer_config.json beside the given tokenizer.json, when present */
                const char *slash = strrchr(tok, '/');
                int dl = slash ? (int)(slash - tok) : 1;
                snprintf(src, sizeof src, "%.*s/%s", dl, slash ? tok : ".", names[i]);
            } else {
                snprintf(src, sizeof src, "%s", tok);
            }
        } else {
            snprintf(src, sizeof src, "%s/%s", tok, names[i]);
        }
        char *data;
        size_t len;
        if (fq_read_file(src, &data, &len) != FQ_OK) {
            if (i == 1)
                continue; /* optional */
            return fq_error("--tokenizer: %s: cannot read (expected a tokenizer.json)", src);
        }
        snprintf(dst, sizeof dst, "%s/%s", dir, names[i]);
        int rc = atomic_file_put(dst, data, len);
        free(data);
        if (rc != FQ_OK)
            return FQ_ERR;
    }
    return FQ_OK;
}

/* ---- in-memory tensors, filled by the pool ---- */

static int copy_chunk(chunk_job *j, int64_t r0, int64_t n, float *buf, void *scratch)
{
    (void)scratch;
    size_t cols = (size_t)(j->cols ? j->cols : 1);
    memcpy((float *)j->ctx + (size_t)r0 * cols, buf, sizeof(float) * (size_t)n * cols);
    return FQ_OK;
}

/* The whole tensor t into out (rows·cols floats), generated by s->threads threads. */
static int fill_tensor(const synth_spec *s, int t, float *out)
{
    return for_each_chunk(s, t, copy_chunk, out);
}

static int tensor_alloc_fill(const synth_spec *s, int t, real **out)
{
    int64_t rows = 0, cols = 0;
    if (synth_tensor_info(s, t, NULL, 0, &rows, &cols) != FQ_OK)
        return FQ_ERR;
    size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    float *f = fq_malloc(sizeof(float) * n, "synthetic tensor");
    if (!f)
        return FQ_ERR;
    if (fill_tensor(s, t, f) != FQ_OK) {
        free(f);
        return FQ_ERR;
    }
    if (sizeof(real) == sizeof(float)) {
        *out = (real *)(void *)f;
        return FQ_OK;
    }
    *out = fq_malloc(sizeof(real) * n, "synthetic tensor");
    if (*out)
        real_from_f32(f, n, *out);
    free(f);
    return *out ? FQ_OK : FQ_ERR;
}

int synth_layer_generate(const synth_spec *s, int i, llama_layer *l)
{
    if (!s || !l || i < 0 || i >= s->n_layers)
        return fq_error(F ":synth_layer_generate: layer %d (expected 0..%d)", i,
                        s ? s->n_layers - 1 : -1);
    memset(l, 0, sizeof *l);
    real **dst[K_PER_LAYER] = {&l->attn_norm, &l->wq, &l->wk, &l->wv, &l->wo,
                               &l->mlp_norm, &l->wgate, &l->wup, &l->wdown};
    for (int k = 0; k < K_PER_LAYER; k++)
        if (tensor_alloc_fill(s, 1 + i * K_PER_LAYER + k, dst[k]) != FQ_OK) {
            llama_layer_free(l);
            return fq_error_wrap("synthetic layer %d", i);
        }
    return FQ_OK;
}

/* ---- quantized format ---- */

typedef struct {
    qlinear *dst;
    int bits;
} quant_ctx;

static int quantize_chunk(chunk_job *j, int64_t r0, int64_t n, float *buf, void *scratch)
{
    (void)scratch;
    quant_ctx *q = j->ctx;
    qlinear part;
    memset(&part, 0, sizeof part);
    if (qlinear_quantize_rtn(&part, buf, (int)n, (int)j->cols, q->bits) != FQ_OK)
        return FQ_ERR;
    size_t row_bytes = q->bits <= 4 ? (size_t)j->cols / 2 : (size_t)j->cols;
    memcpy(q->dst->codes + (size_t)r0 * row_bytes, part.codes, row_bytes * (size_t)n);
    memcpy(q->dst->scales + r0, part.scales, sizeof(float) * (size_t)n);
    free(part.codes);
    free(part.scales);
    free(part.w);
    return FQ_OK;
}

static int quantize_linear(const synth_spec *s, int t, int bits, qlinear *l)
{
    int64_t rows = 0, cols = 0;
    if (synth_tensor_info(s, t, NULL, 0, &rows, &cols) != FQ_OK)
        return FQ_ERR;
    if (cols % 2)
        return fq_error(F ":quantize_linear: %lld input columns (expected an even count)",
                        (long long)cols);
    size_t row_bytes = bits <= 4 ? (size_t)cols / 2 : (size_t)cols;
    free(l->codes);
    free(l->scales);
    free(l->w);
    memset(l, 0, sizeof *l);
    l->out = (int)rows;
    l->in = (int)cols;
    l->bits = bits;
    l->codes = fq_malloc(row_bytes * (size_t)rows, "quantized weight codes");
    l->scales = fq_malloc(sizeof(float) * (size_t)rows, "quantized weight scales");
    if (!l->codes || !l->scales)
        return FQ_ERR;
    quant_ctx q = {l, bits};
    return for_each_chunk(s, t, quantize_chunk, &q);
}

static int fill_vector(const synth_spec *s, int t, float *out)
{
    int64_t rows;
    if (synth_tensor_info(s, t, NULL, 0, &rows, NULL) != FQ_OK)
        return FQ_ERR;
    return synth_tensor_rows(s, t, 0, rows, out);
}

static int write_quant_head(const synth_spec *s, const llama_config *c, const char *qdir)
{
    int nt = synth_tensor_count(s);
    size_t vd = (size_t)c->vocab * c->hidden;
    float *embed = fq_malloc(sizeof(float) * vd, "embeddings");
    float *norm = fq_malloc(sizeof(float) * (size_t)c->hidden, "final norm");
    float *head = c->tie_embeddings ? NULL : fq_malloc(sizeof(float) * vd, "lm_head");
    int rc = embed && norm && (c->tie_embeddings || head) ? FQ_OK : FQ_ERR;
    if (rc == FQ_OK)
        rc = fill_tensor(s, 0, embed);
    if (rc == FQ_OK)
        rc = fill_vector(s, 1 + s->n_layers * K_PER_LAYER, norm);
    if (rc == FQ_OK && head)
        rc = fill_tensor(s, nt - 1, head);
    if (rc == FQ_OK)
        rc = qcheckpoint_write_head(qdir, c, embed, norm, head);
    free(embed);
    free(norm);
    free(head);
    return rc;
}

int synth_write_quantized(const synth_spec *s, const char *src_dir, const char *qdir,
                          int tp_blocks)
{
    if (!s || !src_dir || !qdir || !qdir[0])
        return fq_error(F ":synth_write_quantized: spec or directories missing (expected all)");
    llama_config c;
    synth_spec_config(s, &c);
    /* identity transforms in tp_blocks diagonal blocks (and per-block activation scales):
     * the layout a `tp: T` calibration writes, so TP degrees dividing T can run it */
    if (tp_blocks < 1 || c.n_heads % tp_blocks || c.n_kv_heads % tp_blocks ||
        c.intermediate % tp_blocks)
        return fq_error(F ":synth_write_quantized: tp_blocks %d (expected >= 1 dividing the %d "
                        "heads, %d KV heads and intermediate size %d)", tp_blocks, c.n_heads,
                        c.n_kv_heads, c.intermediate);
    if (make_dir(qdir) != FQ_OK)
        return FQ_ERR;
    qconfig qc;
    memset(&qc, 0, sizeof qc);
    qc.w_bits = 4;
    qc.a_bits = 4;
    qc.kv_bits = 4;
    qc.kv_sym = 0;
    qc.tp_blocks = tp_blocks;
    snprintf(qc.method, sizeof qc.method, "rtn");
    static const int lin_kind[QL_NLINEAR] = {K_Q, K_K, K_V, K_O, K_GATE, K_UP, K_DOWN};
    char path[4096];
    for (int i = 0; i < s->n_layers; i++) {
        qlayer q;
        if (qlayer_alloc(&q, &c, &qc) != FQ_OK)
            return fq_error_wrap("quantized layer %d", i);
        int base = 1 + i * K_PER_LAYER, rc = FQ_OK;
        rc = fill_vector(s, base + K_ATTN_NORM, q.attn_norm);
        if (rc == FQ_OK)
            rc = fill_vector(s, base + K_MLP_NORM, q.mlp_norm);
        for (int k = 0; rc == FQ_OK && k < QL_NLINEAR; k++)
            rc = quantize_linear(s, base + lin_kind[k], qc.w_bits, &q.lin[k]);
        for (int k = 0; k < QL_NLINEAR; k++)
            q.act_clip[k][0] = q.act_clip[k][1] = 0.98f;
        q.kv_clip[0][0] = q.kv_clip[0][1] = q.kv_clip[1][0] = q.kv_clip[1][1] = 0.98f;
        snprintf(path, sizeof path, "%s/layer_%03d.safetensors", qdir, i);
        if (rc == FQ_OK)
            rc = qlayer_write_file(path, i, &q);
        qlayer_free(&q);
        if (rc != FQ_OK)
            return fq_error_wrap("quantized layer %d", i);
    }
    if (write_quant_head(s, &c, qdir) != FQ_OK ||
        qcheckpoint_finish(qdir, src_dir, &c, &qc) != FQ_OK)
        return fq_error_wrap("%s", qdir);
    return FQ_OK;
}
