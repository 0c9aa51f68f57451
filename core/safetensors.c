/* safetensors.c — reader for safetensors files and checkpoint directories.
 *
 * The file is mapped read-only and never copied: tensors point into the mapping, so
 * opening a 5 GB shard costs a page-table entry, not 5 GB of RAM. Everything in the
 * header is treated as hostile (it may be truncated, corrupted or crafted): lengths are
 * checked against the file before use, shapes are multiplied with overflow checks, and
 * every tensor's byte span must lie inside the data section and match shape x dtype.
 * Spans must be disjoint (checked after sorting by start). Gaps between spans and bytes
 * after the last span are accepted: they are harmless, while a mutable alias between two
 * tensors is not. Zero-length tensors occupy no bytes and cannot overlap anything.
 *
 * Names in error messages are escaped and shortened, so a crafted name can never
 * break the "one line" rule of core/error.h.
 *
 * The writer lives in safetensors_write.c; the checkpoint (index + shards) logic in
 * safetensors_ckpt.c.
 */
#include "safetensors.h"
#include "parallel.h"
#include "error.h"
#include "msg_escape.h"

#include <jansson.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

_Static_assert(sizeof(size_t) >= sizeof(int64_t), "64-bit size_t: a shape dimension fits");

static uint64_t read_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void st_file_free_parts(st_file *f)
{
    if (f->tensors)
        for (size_t i = 0; i < f->n_tensors; i++)
            free(f->tensors[i].name);
    free(f->tensors);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    free(f->path);
    if (f->map)
        munmap(f->map, f->map_size);
    memset(f, 0, sizeof *f);
}

void st_file_close(st_file *f)
{
    if (f)
        st_file_free_parts(f);
}

static int parse_metadata(json_t *meta, const char *label, st_file *f)
{
    if (!json_is_object(meta))
        return fq_error("%s: header field '__metadata__' is not an object "
                        "(expected an object of string values)", label);
    size_t n = json_object_size(meta);
    f->meta_keys = fq_calloc(n, sizeof(char *), "safetensors metadata keys");
    f->meta_values = fq_calloc(n, sizeof(char *), "safetensors metadata values");
    if (!f->meta_keys || !f->meta_values)
        return fq_error_wrap("%s", label);
    const char *key;
    json_t *val;
    json_object_foreach(meta, key, val) {
        char shown[96];
        fq_msg_escape(key, shown, sizeof shown);
        if (!json_is_string(val))
            return fq_error("%s: __metadata__ '%s' is not a string (expected string values "
                            "only)", label, shown);
        f->meta_keys[f->n_meta] = fq_strdup(key);
        f->meta_values[f->n_meta] = fq_strdup(json_string_value(val));
        if (!f->meta_keys[f->n_meta] || !f->meta_values[f->n_meta]) {
            f->n_meta++;
            return fq_error_wrap("%s", label);
        }
        f->n_meta++;
    }
    return FQ_OK;
}

/* An integer that JSON gives as a non-negative whole number, else -1. */
static int64_t json_nonneg_int(json_t *v)
{
    if (!json_is_integer(v))
        return -1;
    json_int_t x = json_integer_value(v);
    return x < 0 ? -1 : (int64_t)x;
}

static int parse_tensor(const char *name, json_t *entry, const char *label,
                        size_t data_size, const uint8_t *data, st_tensor *t)
{
    char shown[96];
    fq_msg_escape(name, shown, sizeof shown);
    if (!json_is_object(entry))
        return fq_error("%s: tensor '%s': entry is not an object (expected {\"dtype\", "
                        "\"shape\", \"data_offsets\"})", label, shown);
    json_t *jd = json_object_get(entry, "dtype");
    json_t *js = json_object_get(entry, "shape");
    json_t *jo = json_object_get(entry, "data_offsets");
    if (!json_is_string(jd))
        return fq_error("%s: tensor '%s': missing or non-string 'dtype' (expected e.g. "
                        "\"BF16\")", label, shown);
    t->dtype = fq_dtype_parse(json_string_value(jd));
    if (t->dtype == FQ_DTYPE_INVALID) {
        char dshown[48];
        fq_msg_escape(json_string_value(jd), dshown, sizeof dshown);
        return fq_error("%s: tensor '%s': unknown dtype '%s' (expected one of F64, F32, "
                        "F16, BF16, I64, I32, I16, I8, U8, BOOL)", label, shown, dshown);
    }
    if (!json_is_array(js))
        return fq_error("%s: tensor '%s': missing or non-array 'shape' (expected an array "
                        "of non-negative integers)", label, shown);
    size_t nd = json_array_size(js);
    if (nd > ST_MAX_DIMS)
        return fq_error("%s: tensor '%s': shape has %zu dimensions (expected at most %d)",
                        label, shown, nd, ST_MAX_DIMS);
    t->ndim = (int)nd;
    size_t nelem = 1;
    for (size_t i = 0; i < nd; i++) {
        int64_t d = json_nonneg_int(json_array_get(js, i));
        if (d < 0)
            return fq_error("%s: tensor '%s': shape[%zu] is not a non-negative integer "
                            "(expected an array of non-negative integers)", label, shown, i);
        t->shape[i] = d;
        if (__builtin_mul_overflow(nelem, (size_t)d, &nelem))
            return fq_error("%s: tensor '%s': shape element count overflows (expected a "
                            "shape whose product fits in memory)", label, shown);
    }
    t->nelem = nelem;
    if (__builtin_mul_overflow(nelem, fq_dtype_size(t->dtype), &t->nbytes))
        return fq_error("%s: tensor '%s': shape byte size overflows (expected a shape "
                        "whose size fits in memory)", label, shown);
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return fq_error("%s: tensor '%s': missing 'data_offsets' or not a pair (expected "
                        "[begin, end])", label, shown);
    int64_t b = json_nonneg_int(json_array_get(jo, 0));
    int64_t e = json_nonneg_int(json_array_get(jo, 1));
    if (b < 0 || e < 0)
        return fq_error("%s: tensor '%s': data_offsets are not non-negative integers "
                        "(expected [begin, end] with 0 <= begin <= end)", label, shown);
    if (b > e)
        return fq_error("%s: tensor '%s': data_offsets [%lld, %lld] has begin > end "
                        "(expected begin <= end)", label, shown, (long long)b, (long long)e);
    if ((uint64_t)e > data_size)
        return fq_error("%s: tensor '%s': data_offsets [%lld, %lld] end past the data "
                        "section of %zu bytes (expected end <= %zu)", label, shown,
                        (long long)b, (long long)e, data_size, data_size);
    if ((uint64_t)(e - b) != t->nbytes)
        return fq_error("%s: tensor '%s': data_offsets [%lld, %lld] span %lld bytes but "
                        "shape x %s size is %zu bytes (expected equal)", label, shown,
                        (long long)b, (long long)e, (long long)(e - b),
                        fq_dtype_name(t->dtype), t->nbytes);
    t->data = data + b;
    t->name = fq_strdup(name);
    if (!t->name)
        return fq_error_wrap("%s", label);
    return FQ_OK;
}

typedef struct { size_t begin, end, idx; } span;

static int span_cmp(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

static int check_disjoint(const st_file *f, const uint8_t *data, const char *label)
{
    span *s = fq_calloc(f->n_tensors, sizeof *s, "safetensors span list");
    if (!s)
        return fq_error_wrap("%s", label);
    size_t n = 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        if (t->nbytes == 0)
            continue;
        s[n].begin = (size_t)(t->data - data);
        s[n].end = s[n].begin + t->nbytes;
        s[n].idx = i;
        n++;
    }
    qsort(s, n, sizeof *s, span_cmp);
    int rc = FQ_OK;
    for (size_t i = 1; i < n; i++) {
        /* Sorted by begin and pairwise disjoint so far, so s[i-1] holds the largest end. */
        if (s[i].begin < s[i - 1].end) {
            char a[96], o[96];
            fq_msg_escape(f->tensors[s[i].idx].name, a, sizeof a);
            fq_msg_escape(f->tensors[s[i - 1].idx].name, o, sizeof o);
            rc = fq_error("%s: tensor '%s': data_offsets [%zu, %zu] overlap tensor '%s' "
                          "(expected disjoint spans)", label, a, s[i].begin, s[i].end, o);
            break;
        }
    }
    free(s);
    return rc;
}

int st_parse_buffer(const uint8_t *buf, size_t size, const char *label, st_file *f)
{
    if (!f)
        return fq_error("st_parse_buffer: output is NULL (expected an st_file)");
    memset(f, 0, sizeof *f);
    if (!label)
        label = "<buffer>";
    if (!buf && size)
        return fq_error("%s: buffer is NULL (expected %zu bytes)", label, size);
    if (size < 8)
        return fq_error("%s: file is %zu bytes, too short for the header length (expected "
                        "at least 8 bytes)", label, size);
    uint64_t hlen = read_le64(buf);
    if (hlen == 0)
        return fq_error("%s: header length is 0 (expected a JSON header of at least 2 "
                        "bytes)", label);
    if (hlen > ST_MAX_HEADER)
        return fq_error("%s: header length %llu is over the 100 MB limit (expected a "
                        "header of at most %llu bytes)", label, (unsigned long long)hlen,
                        (unsigned long long)ST_MAX_HEADER);
    if (hlen > size - 8)
        return fq_error("%s: header length %llu runs past the end of the file (expected "
                        "at most %zu bytes after the 8-byte length)", label,
                        (unsigned long long)hlen, size - 8);
    const uint8_t *data = buf + 8 + hlen;
    size_t data_size = size - 8 - (size_t)hlen;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES,
                              &jerr);
    if (!root) {
        char why[160];
        return fq_error("%s: header JSON invalid at byte %d: %s (expected valid JSON)",
                        label, jerr.position, fq_msg_escape(jerr.text, why, sizeof why));
    }
    int rc = FQ_OK;
    if (!json_is_object(root)) {
        rc = fq_error("%s: header is not a JSON object (expected {\"name\": {\"dtype\", "
                      "\"shape\", \"data_offsets\"}, ...})", label);
        goto out;
    }
    f->path = fq_strdup(label);
    size_t n_entries = json_object_size(root);
    f->tensors = fq_calloc(n_entries, sizeof *f->tensors, "safetensors tensor table");
    if (!f->path || !f->tensors) {
        rc = fq_error_wrap("%s", label);
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            rc = parse_metadata(val, label, f);
        } else {
            rc = parse_tensor(key, val, label, data_size, data, &f->tensors[f->n_tensors]);
            if (f->tensors[f->n_tensors].name)
                f->n_tensors++;
        }
        if (rc != FQ_OK)
            goto out;
    }
    rc = check_disjoint(f, data, label);
out:
    json_decref(root);
    if (rc != FQ_OK)
        st_file_free_parts(f);
    return rc;
}

int st_file_open(const char *path, st_file *f)
{
    if (!f)
        return fq_error("st_file_open: output is NULL (expected an st_file)");
    memset(f, 0, sizeof *f);
    if (!path)
        return fq_error("st_file_open: path is NULL (expected a .safetensors file)");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fq_error("%s: cannot open: %s (expected a readable safetensors file)", path,
                        strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return fq_error("%s: cannot stat: %s (expected a readable safetensors file)", path,
                        strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return fq_error("%s: not a regular file (expected a safetensors file)", path);
    }
    size_t size = (size_t)st.st_size;
    if (size < 8) {
        close(fd);
        return fq_error("%s: file is %zu bytes, too short for the header length (expected "
                        "at least 8 bytes)", path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return fq_error("%s: cannot mmap %zu bytes: %s (expected a mappable file)", path,
                        size, strerror(e));
    if (st_parse_buffer(map, size, path, f) != FQ_OK) {
        munmap(map, size);
        return FQ_ERR;
    }
    f->map = map;
    f->map_size = size;
    return FQ_OK;
}

const st_tensor *st_file_find(const st_file *f, const char *name)
{
    if (!f || !name)
        return NULL;
    for (size_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

const char *st_file_meta(const st_file *f, const char *key)
{
    if (!f || !key)
        return NULL;
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0)
            return f->meta_values[i];
    return NULL;
}

/* A tensor's conversion in chunks on the I/O threads: a 70B layer's 0.86 G bf16 weights
 * (read through the mmap, so the page faults are in the loop too) took 2.2–2.5 s on one
 * core, once per layer in every worker and in the FP pass (issue 6). */
typedef struct {
    const st_tensor *t;
    float *dst;
} convert_job;

static int convert_range(void *ctx, size_t a, size_t b, int t)
{
    (void)t;
    const convert_job *c = ctx;
    const unsigned char *src = c->t->data;
    return fq_convert_to_f32(src + a * fq_dtype_size(c->t->dtype), c->t->dtype, b - a,
                             c->dst + a);
}

int st_tensor_to_f32(const st_tensor *t, float *dst, size_t n)
{
    if (!t || (!dst && n))
        return fq_error("st_tensor_to_f32: tensor or destination is NULL (expected both)");
    char shown[96];
    fq_msg_escape(t->name ? t->name : "?", shown, sizeof shown);
    if (n != t->nelem)
        return fq_error("tensor '%s': destination holds %zu floats (expected %zu, the "
                        "tensor's element count)", shown, n, t->nelem);
    if (n == 0)
        return FQ_OK;
    /* an unknown dtype (size 0) fails in fq_convert_to_f32 with its own message */
    convert_job cj = {t, dst};
    int rc = fq_dtype_size(t->dtype) == 0
                 ? fq_convert_to_f32(t->data, t->dtype, n, dst)
                 : fq_parallel_ranges(n, (size_t)1 << 22, 0, convert_range, &cj);
    if (rc != FQ_OK)
        return fq_error_wrap("tensor '%s'", shown);
    return FQ_OK;
}
