/* safetensors_write.c — build a safetensors file in memory and commit it atomically.
 *
 * The header is written byte for byte as the Python `safetensors` library writes it:
 * compact JSON, "__metadata__" first, then tensors in name order, each entry as
 * {"dtype":"F32","shape":[..],"data_offsets":[b,e]}, padded with spaces so the data
 * section starts 8-byte aligned. For tensors added in name order (the Python library
 * lays data out that way when all dtypes match) the output equals Python's byte for
 * byte; otherwise data stays in add order, which the format allows.
 *
 * Data is copied at add time so callers may free their buffers; the trade-off is that a
 * shard is held in memory once until commit. The commit writes a temp file in the target
 * directory, fsyncs it, renames it over the target and fsyncs the directory: a reader
 * sees the old file or the new one, never a torn one, even across a power cut.
 */
#include "safetensors.h"
#include "atomic_file.h"
#include "error.h"
#include "msg_escape.h"

#include <jansson.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char *name;
    fq_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t nbytes;
    size_t offset; /* in the data section, add order */
    uint8_t *data;
} st_wtensor;

struct st_writer {
    st_wtensor *t;
    size_t n, cap;
    char **meta_keys, **meta_values;
    size_t n_meta, cap_meta;
    size_t data_bytes;
};

st_writer *st_writer_new(void)
{
    return fq_calloc(1, sizeof(st_writer), "safetensors writer");
}

void st_writer_free(st_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    for (size_t i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->meta_keys);
    free(w->meta_values);
    free(w);
}

static int valid_json_string(const char *s)
{
    json_t *j = json_string(s); /* NULL for invalid UTF-8 */
    json_decref(j);
    return j != NULL;
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem, const char *what)
{
    if (need <= *cap)
        return FQ_OK;
    size_t nc = *cap ? *cap * 2 : 16;
    while (nc < need)
        nc *= 2;
    void *p = realloc(*arr, nc * elem);
    if (!p)
        return fq_error("out of memory growing %s to %zu entries", what, nc);
    *arr = p;
    *cap = nc;
    return FQ_OK;
}

int st_writer_add(st_writer *w, const char *name, fq_dtype dtype, int ndim,
                  const int64_t *shape, const void *data)
{
    if (!w || !name)
        return fq_error("st_writer_add: writer or name is NULL (expected both)");
    char shown[96];
    fq_msg_escape(name, shown, sizeof shown);
    if (!name[0] || strcmp(name, "__metadata__") == 0 || !valid_json_string(name))
        return fq_error("st_writer_add: tensor name '%s' is not allowed (expected a "
                        "non-empty UTF-8 name other than __metadata__)", shown);
    size_t esize = fq_dtype_size(dtype);
    if (esize == 0)
        return fq_error("st_writer_add: tensor '%s': invalid dtype (expected one of F64, "
                        "F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)", shown);
    if (ndim < 0 || ndim > ST_MAX_DIMS || (ndim > 0 && !shape))
        return fq_error("st_writer_add: tensor '%s': ndim %d (expected 0..%d with a shape)",
                        shown, ndim, ST_MAX_DIMS);
    size_t nelem = 1, nbytes;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(nelem, (size_t)shape[i], &nelem))
            return fq_error("st_writer_add: tensor '%s': shape[%d] = %lld (expected "
                            "non-negative dimensions whose product fits in memory)", shown,
                            i, (long long)shape[i]);
    }
    if (__builtin_mul_overflow(nelem, esize, &nbytes) ||
        w->data_bytes + nbytes < w->data_bytes)
        return fq_error("st_writer_add: tensor '%s': byte size overflows (expected a "
                        "tensor that fits in memory)", shown);
    if (nbytes && !data)
        return fq_error("st_writer_add: tensor '%s': data is NULL (expected %zu bytes)",
                        shown, nbytes);
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return fq_error("st_writer_add: tensor '%s' added twice (expected unique "
                            "names)", shown);
    if (grow((void **)&w->t, &w->cap, w->n + 1, sizeof *w->t, "safetensors writer") != FQ_OK)
        return FQ_ERR;
    st_wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = fq_strdup(name);
    t->data = fq_malloc(nbytes, "safetensors writer tensor copy");
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        return FQ_ERR;
    }
    if (nbytes)
        memcpy(t->data, data, nbytes);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    t->nbytes = nbytes;
    t->offset = w->data_bytes;
    w->data_bytes += nbytes;
    w->n++;
    return FQ_OK;
}

int st_writer_set_meta(st_writer *w, const char *key, const char *value)
{
    if (!w || !key || !value)
        return fq_error("st_writer_set_meta: writer, key or value is NULL (expected all)");
    if (!valid_json_string(key) || !valid_json_string(value))
        return fq_error("st_writer_set_meta: key or value is not valid UTF-8 (expected "
                        "UTF-8 strings)");
    char *v = fq_strdup(value);
    if (!v)
        return FQ_ERR;
    for (size_t i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta_keys[i], key) == 0) {
            free(w->meta_values[i]);
            w->meta_values[i] = v;
            return FQ_OK;
        }
    }
    size_t cap = w->cap_meta;
    if (grow((void **)&w->meta_keys, &cap, w->n_meta + 1, sizeof(char *), "metadata") ||
        grow((void **)&w->meta_values, &w->cap_meta, w->n_meta + 1, sizeof(char *),
             "metadata")) {
        free(v);
        return FQ_ERR;
    }
    w->meta_keys[w->n_meta] = fq_strdup(key);
    if (!w->meta_keys[w->n_meta]) {
        free(v);
        return FQ_ERR;
    }
    w->meta_values[w->n_meta++] = v;
    return FQ_OK;
}

/* ---- header text ---- */

typedef struct { char *p; size_t n, cap; int failed; } strbuf;

static void sb_put(strbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1)
            nc *= 2;
        char *p = realloc(b->p, nc);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_puts(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* A JSON string literal, escaped as jansson (and serde_json) do for UTF-8 output. */
static void sb_json_string(strbuf *b, const char *s)
{
    json_t *j = json_string(s);
    char *txt = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_decref(j);
    if (!txt) {
        b->failed = 1;
        return;
    }
    sb_puts(b, txt);
    free(txt);
}

typedef struct { const char *key, *value; } meta_pair;

static int cmp_meta_pair(const void *a, const void *b)
{
    return strcmp(((const meta_pair *)a)->key, ((const meta_pair *)b)->key);
}

static int cmp_wtensor_ptr(const void *a, const void *b)
{
    const st_wtensor *x = *(const st_wtensor *const *)a, *y = *(const st_wtensor *const *)b;
    return strcmp(x->name, y->name);
}

static int build_header(const st_writer *w, strbuf *b)
{
    char num[64];
    sb_puts(b, "{");
    int first = 1;
    if (w->n_meta) {
        meta_pair *kv = fq_calloc(w->n_meta, sizeof *kv, "metadata key order");
        if (!kv)
            return FQ_ERR;
        for (size_t i = 0; i < w->n_meta; i++)
            kv[i] = (meta_pair){w->meta_keys[i], w->meta_values[i]};
        qsort(kv, w->n_meta, sizeof *kv, cmp_meta_pair);
        sb_puts(b, "\"__metadata__\":{");
        for (size_t i = 0; i < w->n_meta; i++) {
            if (i)
                sb_puts(b, ",");
            sb_json_string(b, kv[i].key);
            sb_puts(b, ":");
            sb_json_string(b, kv[i].value);
        }
        sb_puts(b, "}");
        free(kv);
        first = 0;
    }
    const st_wtensor **order = fq_calloc(w->n, sizeof *order, "tensor name order");
    if (!order)
        return FQ_ERR;
    for (size_t i = 0; i < w->n; i++)
        order[i] = &w->t[i];
    qsort(order, w->n, sizeof *order, cmp_wtensor_ptr);
    for (size_t i = 0; i < w->n; i++) {
        const st_wtensor *t = order[i];
        if (!first)
            sb_puts(b, ",");
        first = 0;
        sb_json_string(b, t->name);
        sb_puts(b, ":{\"dtype\":\"");
        sb_puts(b, fq_dtype_name(t->dtype));
        sb_puts(b, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            sb_puts(b, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%zu,%zu]}", t->offset,
                 t->offset + t->nbytes);
        sb_puts(b, num);
    }
    free(order);
    sb_puts(b, "}");
    while (!b->failed && (b->n % 8) != 0)
        sb_puts(b, " ");
    if (b->failed)
        return fq_error("out of memory building the safetensors header");
    return FQ_OK;
}

/* ---- atomic commit (core/atomic_file.h: temp file, fsync, rename, fsync dir) ---- */

int st_writer_commit(st_writer *w, const char *path)
{
    if (!w || !path || !path[0])
        return fq_error("st_writer_commit: writer or path is missing (expected both)");
    strbuf hb = {0};
    if (build_header(w, &hb) != FQ_OK) {
        free(hb.p);
        return fq_error_wrap("%s", path);
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)hb.n >> (8 * i));
    atomic_file f;
    int rc = atomic_file_open(&f, path);
    if (rc == FQ_OK) {
        rc = atomic_file_write(&f, len8, 8);
        if (rc == FQ_OK)
            rc = atomic_file_write(&f, hb.p, hb.n);
        for (size_t i = 0; rc == FQ_OK && i < w->n; i++)
            rc = atomic_file_write(&f, w->t[i].data, w->t[i].nbytes);
        rc = rc == FQ_OK ? atomic_file_commit(&f) : (atomic_file_abort(&f), FQ_ERR);
    }
    free(hb.p);
    return rc;
}
