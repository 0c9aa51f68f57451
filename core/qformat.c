/* qformat.c — write and read quantized layers and checkpoints (see qformat.h, FORMAT.md).
 *
 * Readers trust nothing: every tensor's dtype and shape is checked against the config and
 * quantization_config before its bytes are used, so a checkpoint whose quantization_config
 * disagrees with its tensors is refused naming the tensor.
 */
#include "qformat.h"
#include "atomic_file.h"
#include "error.h"
#include "fileio.h"
#include "kron.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const linear_prefix[QL_NLINEAR] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

/* One tensor of a layer: its name suffix, dtype, shape and where its data lives. */
typedef struct {
    char suffix[96];
    fq_dtype dtype;
    int ndim;
    int64_t shape[3];
    void **data; /* pointer to the qlayer field (read: allocated and filled) */
} qtensor;

static void put(qtensor *t, int *n, const char *suffix, fq_dtype dt, int ndim, int64_t a,
                int64_t b, int64_t c, void **data)
{
    qtensor *x = &t[(*n)++];
    snprintf(x->suffix, sizeof x->suffix, "%s", suffix);
    x->dtype = dt;
    x->ndim = ndim;
    x->shape[0] = a;
    x->shape[1] = b;
    x->shape[2] = c;
    x->data = data;
}

/* The full tensor list of a layer with the shapes c/qc imply. Kron factor shapes come from
 * the qlayer's own n1/n2 (the reader fills them from kron_split before calling). */
static int layer_tensors(qlayer *q, const qconfig *qc, qtensor *t)
{
    int n = 0, d = q->hidden, h = q->n_heads, dh = q->head_dim, ob = q->o_blocks;
    put(t, &n, "input_layernorm.weight", FQ_F32, 1, d, 0, 0, (void **)&q->attn_norm);
    put(t, &n, "post_attention_layernorm.weight", FQ_F32, 1, d, 0, 0, (void **)&q->mlp_norm);
    struct { const char *name; qkron *k; } kr[3] = {
        {"attn_in", &q->attn_in}, {"mlp_in", &q->mlp_in}, {"down_in", &q->down_in}};
    for (int i = 0; i < 3; i++) {
        char s[64];
        snprintf(s, sizeof s, "flatquant.%s.L", kr[i].name);
        put(t, &n, s, FQ_F32, 3, kr[i].k->blocks, kr[i].k->n1, kr[i].k->n1, (void **)&kr[i].k->L);
        snprintf(s, sizeof s, "flatquant.%s.R", kr[i].name);
        put(t, &n, s, FQ_F32, 3, kr[i].k->blocks, kr[i].k->n2, kr[i].k->n2, (void **)&kr[i].k->R);
    }
    put(t, &n, "flatquant.o_in.M", FQ_F32, 3, ob, h / ob, h / ob, (void **)&q->Mo);
    put(t, &n, "flatquant.k.M", FQ_F32, 2, dh, dh, 0, (void **)&q->Mk);
    put(t, &n, "flatquant.k.M_inv_t", FQ_F32, 2, dh, dh, 0, (void **)&q->Mk_inv_t);
    if (qc->separate_vtrans)
        put(t, &n, "flatquant.v.M", FQ_F32, 2, dh, dh, 0, (void **)&q->Mv);
    for (int i = 0; i < QL_NLINEAR; i++) {
        qlinear *l = &q->lin[i];
        char s[96];
        if (l->bits == 16) {
            snprintf(s, sizeof s, "%s.weight", linear_prefix[i]);
            put(t, &n, s, FQ_F32, 2, l->out, l->in, 0, (void **)&l->w);
            continue;
        }
        snprintf(s, sizeof s, "%s.qweight", linear_prefix[i]);
        if (l->bits <= 4)
            put(t, &n, s, FQ_U8, 2, l->out, l->in / 2, 0, (void **)&l->codes);
        else
            put(t, &n, s, FQ_I8, 2, l->out, l->in, 0, (void **)&l->codes);
        snprintf(s, sizeof s, "%s.scales", linear_prefix[i]);
        put(t, &n, s, FQ_F32, 1, l->out, 0, 0, (void **)&l->scales);
    }
    return n;
}

#define QL_MAX_TENSORS 40

static void layer_tensor_name(char *name, size_t cap, int layer, const char *suffix)
{
    int n = snprintf(name, cap, "model.layers.%d.", layer);
    if (n > 0 && (size_t)n < cap)
        snprintf(name + n, cap - (size_t)n, "%.*s", (int)(cap - (size_t)n - 1), suffix);
}

int qlayer_add_tensors(st_writer *w, int layer, const qlayer *q)
{
    qtensor t[QL_MAX_TENSORS];
    qconfig qc = {0};
    qc.separate_vtrans = q->Mv != NULL;
    int n = layer_tensors((qlayer *)q, &qc, t);
    float clip[QL_NLINEAR * 2 + 4];
    for (int i = 0; i < QL_NLINEAR; i++) {
        clip[2 * i] = q->act_clip[i][0];
        clip[2 * i + 1] = q->act_clip[i][1];
    }
    for (int i = 0; i < 4; i++)
        clip[QL_NLINEAR * 2 + i] = q->kv_clip[i / 2][i % 2];
    for (int i = 0; i < n; i++) {
        char name[256];
        layer_tensor_name(name, sizeof name, layer, t[i].suffix);
        if (st_writer_add(w, name, t[i].dtype, t[i].ndim, t[i].shape, *t[i].data) != FQ_OK)
            return FQ_ERR;
    }
    char name[256];
    int64_t sa[2] = {QL_NLINEAR, 2}, sk[2] = {2, 2};
    snprintf(name, sizeof name, "model.layers.%d.flatquant.act_clip", layer);
    if (st_writer_add(w, name, FQ_F32, 2, sa, clip) != FQ_OK)
        return FQ_ERR;
    snprintf(name, sizeof name, "model.layers.%d.flatquant.kv_clip", layer);
    return st_writer_add(w, name, FQ_F32, 2, sk, clip + QL_NLINEAR * 2);
}

int qlayer_write_file(const char *path, int layer, const qlayer *q)
{
    st_writer *w = st_writer_new();
    if (!w)
        return FQ_ERR;
    int rc = qlayer_add_tensors(w, layer, q);
    if (rc == FQ_OK)
        rc = st_writer_set_meta(w, "format", "flatq");
    if (rc == FQ_OK)
        rc = st_writer_commit(w, path);
    st_writer_free(w);
    return rc;
}

/* Find `name` with exactly the dtype and shape given; copy its bytes into a new buffer. */
static int read_exact(const st_checkpoint *ck, const char *name, fq_dtype dt, int ndim,
                      const int64_t *shape, void **out)
{
    const st_tensor *t = st_checkpoint_find(ck, name);
    if (!t)
        return fq_error("%s: tensor '%s' is missing (expected by quantization_config)", ck->dir,
                        name);
    int ok = t->dtype == dt && t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] == shape[i];
    if (!ok) {
        char want[96] = "", got[96] = "";
        size_t a = 0, b = 0;
        for (int i = 0; i < ndim; i++)
            a += (size_t)snprintf(want + a, sizeof want - a, "%s%lld", i ? ", " : "",
                                  (long long)shape[i]);
        for (int i = 0; i < t->ndim; i++)
            b += (size_t)snprintf(got + b, sizeof got - b, "%s%lld", i ? ", " : "",
                                  (long long)t->shape[i]);
        return fq_error("%s: tensor '%s' is %s [%s] (expected %s [%s] from quantization_config)",
                        ck->dir, name, fq_dtype_name(t->dtype), got, fq_dtype_name(dt), want);
    }
    void *p = fq_malloc(t->nbytes, name);
    if (!p)
        return FQ_ERR;
    memcpy(p, t->data, t->nbytes);
    *out = p;
    return FQ_OK;
}

int qlayer_read(const st_checkpoint *ck, const llama_config *c, const qconfig *qc, int layer,
                qlayer *q)
{
    if (qlayer_alloc(q, c, qc) != FQ_OK)
        return FQ_ERR;
    /* qlayer_alloc made identity transforms of the right shapes; replace them from disk */
    free(q->attn_norm);
    free(q->mlp_norm);
    free(q->attn_in.L); free(q->attn_in.R);
    free(q->mlp_in.L); free(q->mlp_in.R);
    free(q->down_in.L); free(q->down_in.R);
    free(q->Mo); free(q->Mk); free(q->Mk_inv_t); free(q->Mv);
    q->attn_norm = q->mlp_norm = q->Mo = q->Mk = q->Mk_inv_t = q->Mv = NULL;
    q->attn_in.L = q->attn_in.R = q->mlp_in.L = q->mlp_in.R = q->down_in.L = q->down_in.R = NULL;
    int d = c->hidden, f = c->intermediate, qd = c->n_heads * c->head_dim,
        kd = c->n_kv_heads * c->head_dim;
    int shape[QL_NLINEAR][2] = {{qd, d}, {kd, d}, {kd, d}, {d, qd}, {f, d}, {f, d}, {d, f}};
    for (int i = 0; i < QL_NLINEAR; i++) {
        q->lin[i].out = shape[i][0];
        q->lin[i].in = shape[i][1];
        q->lin[i].bits = qc->w_bits;
    }
    /* Kronecker factor shapes are the writer's choice (kron_split for FlatQuant, Hadamard
     * splits for QuaRot): take them from the file, checking they cover the right size. */
    struct { const char *name; qkron *k; int len; } kr[3] = {
        {"attn_in", &q->attn_in, d}, {"mlp_in", &q->mlp_in, d}, {"down_in", &q->down_in, f}};
    for (int i = 0; i < 3; i++) {
        char suffix[64], name[256];
        snprintf(suffix, sizeof suffix, "flatquant.%s.L", kr[i].name);
        layer_tensor_name(name, sizeof name, layer, suffix);
        const st_tensor *tl = st_checkpoint_find(ck, name);
        snprintf(suffix, sizeof suffix, "flatquant.%s.R", kr[i].name);
        layer_tensor_name(name, sizeof name, layer, suffix);
        const st_tensor *tr = st_checkpoint_find(ck, name);
        if (!tl || !tr || tl->ndim != 3 || tr->ndim != 3 || tl->shape[0] != tr->shape[0] ||
            tl->shape[0] < 1 || tl->shape[1] < 1 || tr->shape[1] < 1 ||
            tl->shape[0] * tl->shape[1] * tr->shape[1] != kr[i].len) {
            fq_error("%s: layer %d: the %s transform factors are missing or do not cover %d "
                     "channels (expected L [blocks, n1, n1] and R [blocks, n2, n2] with "
                     "blocks·n1·n2 = %d)", ck->dir, layer, kr[i].name, kr[i].len, kr[i].len);
            goto fail;
        }
        kr[i].k->blocks = (int)tl->shape[0];
        kr[i].k->n1 = (int)tl->shape[1];
        kr[i].k->n2 = (int)tr->shape[1];
    }
    qtensor t[QL_MAX_TENSORS];
    int n = layer_tensors(q, qc, t);
    for (int i = 0; i < n; i++) {
        char name[256];
        layer_tensor_name(name, sizeof name, layer, t[i].suffix);
        if (read_exact(ck, name, t[i].dtype, t[i].ndim, t[i].shape, t[i].data) != FQ_OK)
            goto fail;
    }
    float *clip = NULL;
    char name[256];
    int64_t sa[2] = {QL_NLINEAR, 2}, sk[2] = {2, 2};
    snprintf(name, sizeof name, "model.layers.%d.flatquant.act_clip", layer);
    if (read_exact(ck, name, FQ_F32, 2, sa, (void **)&clip) != FQ_OK)
        goto fail;
    memcpy(q->act_clip, clip, sizeof q->act_clip);
    free(clip);
    snprintf(name, sizeof name, "model.layers.%d.flatquant.kv_clip", layer);
    if (read_exact(ck, name, FQ_F32, 2, sk, (void **)&clip) != FQ_OK)
        goto fail;
    memcpy(q->kv_clip, clip, sizeof q->kv_clip);
    free(clip);
    return FQ_OK;
fail:
    qlayer_free(q);
    return FQ_ERR;
}

json_t *qconfig_to_json(const qconfig *qc, const llama_config *c)
{
    /* Factor shapes are not repeated here: each layer's tensors carry them. */
    return json_pack("{s:s, s:i, s:s, s:i, s:i, s:i, s:b, s:b, s:b, s:i, s:i, s:b, s:s, s:s}",
                     "quant_method", "flatquant", "format_version", QFORMAT_VERSION, "method",
                     qc->method, "w_bits", qc->w_bits, "a_bits", qc->a_bits, "kv_bits",
                     qc->kv_bits, "w_sym", 1, "a_sym", 1, "kv_sym", qc->kv_sym, "kv_group",
                     c->head_dim, "tp_blocks", qc->tp_blocks > 0 ? qc->tp_blocks : 1,
                     "separate_vtrans", qc->separate_vtrans, "weight_packing",
                     "bits<=4: uint8 [out, in/2], element 2k in the low nibble, 2k+1 in the high "
                     "nibble, two's complement; 5..8 bits: int8 [out, in]; w = scales[row]*code",
                     "act_quant", "per token (per tp block for o_proj/down_proj inputs), "
                     "symmetric, clip ratios act_clip[linear] = (max side, min side)");
}

static int get_int(const json_t *o, const char *key, const char *label, int lo, int hi, int *out)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return fq_error("%s: quantization_config.%s: expected an integer in %d..%d", label, key,
                        lo, hi);
    *out = (int)json_integer_value(v);
    return FQ_OK;
}

int qconfig_from_json(const json_t *o, const char *label, qconfig *qc)
{
    memset(qc, 0, sizeof *qc);
    if (!json_is_object(o))
        return fq_error("%s: quantization_config is not an object", label);
    const char *m = json_string_value(json_object_get(o, "method"));
    int ver;
    if (get_int(o, "format_version", label, 1, QFORMAT_VERSION, &ver) ||
        get_int(o, "w_bits", label, 2, 16, &qc->w_bits) ||
        get_int(o, "a_bits", label, 2, 16, &qc->a_bits) ||
        get_int(o, "kv_bits", label, 2, 16, &qc->kv_bits) ||
        get_int(o, "tp_blocks", label, 1, 1024, &qc->tp_blocks))
        return FQ_ERR;
    if (!m || strlen(m) >= sizeof qc->method)
        return fq_error("%s: quantization_config.method: expected a method name", label);
    snprintf(qc->method, sizeof qc->method, "%s", m);
    int bits[3] = {qc->w_bits, qc->a_bits, qc->kv_bits};
    for (int i = 0; i < 3; i++)
        if (bits[i] > 8 && bits[i] != 16)
            return fq_error("%s: quantization_config: bits %d (expected 2..8 or 16)", label, bits[i]);
    qc->kv_sym = json_is_true(json_object_get(o, "kv_sym"));
    qc->separate_vtrans = json_is_true(json_object_get(o, "separate_vtrans"));
    if (qc->kv_sym)
        return fq_error("%s: quantization_config.kv_sym: symmetric KV is not supported "
                        "(expected false)", label);
    return FQ_OK;
}

int qconfig_load(const char *dir, qconfig *qc)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t e;
    json_t *root = json_load_file(path, 0, &e);
    if (!root)
        return fq_error("%s:%d:%d: %s", path, e.line, e.column, e.text);
    const json_t *o = json_object_get(root, "quantization_config");
    int rc = 0;
    if (o)
        rc = qconfig_from_json(o, path, qc) == FQ_OK ? 1 : FQ_ERR;
    json_decref(root);
    return rc;
}

int qcheckpoint_write_head(const char *dir, const llama_config *c, const float *embed,
                           const float *final_norm, const float *lm_head)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, QFORMAT_HEAD_FILE);
    st_writer *w = st_writer_new();
    if (!w)
        return FQ_ERR;
    int64_t se[2] = {c->vocab, c->hidden}, sn[1] = {c->hidden};
    int rc = st_writer_add(w, "model.embed_tokens.weight", FQ_F32, 2, se, embed);
    if (rc == FQ_OK)
        rc = st_writer_add(w, "model.norm.weight", FQ_F32, 1, sn, final_norm);
    if (rc == FQ_OK && lm_head)
        rc = st_writer_add(w, "lm_head.weight", FQ_F32, 2, se, lm_head);
    if (rc == FQ_OK)
        rc = st_writer_set_meta(w, "format", "flatq");
    if (rc == FQ_OK)
        rc = st_writer_commit(w, path);
    st_writer_free(w);
    return rc;
}

static int copy_file_atomic(const char *src, const char *dst)
{
    char *buf;
    size_t n;
    if (fq_read_file(src, &buf, &n) != FQ_OK)
        return FQ_ERR;
    int rc = atomic_file_put(dst, buf, n);
    free(buf);
    return rc;
}

static int json_write_atomic(const char *path, json_t *o)
{
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    if (!s)
        return fq_error("%s: cannot serialise JSON", path);
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (!t) {
        free(s);
        return fq_error("%s: out of memory", path);
    }
    t[n] = '\n';
    int rc = atomic_file_put(path, t, n + 1);
    free(t);
    return rc;
}

int qcheckpoint_finish(const char *dir, const char *src_model_dir, const llama_config *c,
                       const qconfig *qc)
{
    char path[4096], src[4096];
    /* index: every tensor of every shard */
    json_t *map = json_object(), *index = NULL, *root = NULL;
    json_int_t total = 0;
    int rc = FQ_ERR;
    for (int i = -1; i < c->n_layers; i++) {
        char file[64];
        if (i < 0)
            snprintf(file, sizeof file, "%s", QFORMAT_HEAD_FILE);
        else
            snprintf(file, sizeof file, "layer_%03d.safetensors", i);
        snprintf(path, sizeof path, "%s/%s", dir, file);
        st_file f;
        if (st_file_open(path, &f) != FQ_OK)
            goto done;
        for (size_t k = 0; k < f.n_tensors; k++) {
            json_object_set_new(map, f.tensors[k].name, json_string(file));
            total += (json_int_t)f.tensors[k].nbytes;
        }
        st_file_close(&f);
    }
    index = json_pack("{s:{s:I}, s:O}", "metadata", "total_size", total, "weight_map", map);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (!index || json_write_atomic(path, index) != FQ_OK)
        goto done;
    /* config.json = source config + quantization_config */
    snprintf(src, sizeof src, "%s/config.json", src_model_dir);
    json_error_t e;
    root = json_load_file(src, 0, &e);
    if (!root) {
        fq_error("%s:%d:%d: %s", src, e.line, e.column, e.text);
        goto done;
    }
    json_t *qj = qconfig_to_json(qc, c);
    if (!qj) {
        fq_error_wrap("%s: quantization_config", dir);
        goto done;
    }
    json_object_set_new(root, "quantization_config", qj);
    /* the head shard always holds lm_head unless the embeddings stay tied */
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (json_write_atomic(path, root) != FQ_OK)
        goto done;
    const char *copies[] = {"tokenizer.json", "tokenizer_config.json", "generation_config.json",
                            "special_tokens_map.json"};
    for (size_t i = 0; i < sizeof copies / sizeof copies[0]; i++) {
        snprintf(src, sizeof src, "%s/%s", src_model_dir, copies[i]);
        FILE *probe = fopen(src, "rb");
        if (!probe)
            continue; /* optional files */
        fclose(probe);
        snprintf(path, sizeof path, "%s/%s", dir, copies[i]);
        if (copy_file_atomic(src, path) != FQ_OK)
            goto done;
    }
    rc = FQ_OK;
done:
    json_decref(map);
    json_decref(index);
    json_decref(root);
    return rc;
}
