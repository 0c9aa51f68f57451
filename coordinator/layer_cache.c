/* layer_cache.c — activation cache files; format and trade-offs in layer_cache.h.
 * Every field is checked against the file before use: a corrupted or truncated file
 * gives a one-line error naming the file, never a crash. */
#include "coordinator/layer_cache.h"
#include "atomic_file.h"
#include "dtype.h"
#include "error.h"
#include "parallel.h"
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char cache_magic[8] = {'F', 'Q', 'A', 'C', 'T', '0', '0', '1'};
enum { HDR_CHECKED_BYTES = 224, SAMPLE_DIGEST = 32 };
/* A guard against absurd shapes in a damaged header (2^40 elements = 4 TiB of fp32). */
static const uint64_t max_elements = (uint64_t)1 << 40;

const char *layer_cache_dtype_name(layer_cache_dtype t)
{
    switch (t) {
    case LAYER_CACHE_F32: return "fp32";
    case LAYER_CACHE_F16: return "fp16";
    case LAYER_CACHE_BF16: return "bf16";
    }
    return "invalid";
}

size_t layer_cache_dtype_bytes(layer_cache_dtype t) { return t == LAYER_CACHE_F32 ? 4 : 2; }

static fq_dtype to_fq_dtype(layer_cache_dtype t)
{
    return t == LAYER_CACHE_F32 ? FQ_F32 : t == LAYER_CACHE_F16 ? FQ_F16 : FQ_BF16;
}

int layer_cache_path(const char *dir, int boundary, char *out, size_t cap)
{
    if (!dir || !*dir || boundary < 0 || boundary > 999)
        return fq_error("layer_cache: bad cache directory or boundary %d (expected 0..999)",
                        boundary);
    int n = snprintf(out, cap, "%s/boundary_%03d.fqa", dir, boundary);
    if (n < 0 || (size_t)n >= cap)
        return fq_error("%s: cache path too long (expected under %zu bytes)", dir, cap);
    return FQ_OK;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}
static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static int fingerprint_ok(const char *fp)
{
    if (!fp || strlen(fp) != 64)
        return 0;
    for (int i = 0; i < 64; i++)
        if (!((fp[i] >= '0' && fp[i] <= '9') || (fp[i] >= 'a' && fp[i] <= 'f')))
            return 0;
    return 1;
}

static void header_encode(const layer_cache_header *h, uint8_t out[LAYER_CACHE_HEADER_BYTES])
{
    memset(out, 0, LAYER_CACHE_HEADER_BYTES);
    memcpy(out, cache_magic, 8);
    put_u32(out + 8, LAYER_CACHE_VERSION);
    put_u32(out + 12, (uint32_t)h->dtype);
    put_u32(out + 16, 3);
    put_u32(out + 20, (uint32_t)h->boundary);
    put_u64(out + 24, h->nsamples);
    put_u64(out + 32, h->seqlen);
    put_u64(out + 40, h->hidden);
    memcpy(out + 48, h->fingerprint, 64);
    memcpy(out + 112, h->payload_digest, 32);
    sha256(out, HDR_CHECKED_BYTES, out + HDR_CHECKED_BYTES);
}

/* Narrow one sample, refusing values that are or would become non-finite. */
int layer_cache_encode(const float *x, size_t count, layer_cache_dtype dtype, void *dst,
                       int boundary, size_t sample)
{
    for (size_t i = 0; i < count; i++)
        if (!isfinite(x[i]))
            return fq_error("layer_cache: boundary %d: activation %g at sample %zu index %zu "
                            "is not finite (expected finite values from the FP pass)",
                            boundary, (double)x[i], sample, i);
    if (fq_convert_from_f32(x, count, to_fq_dtype(dtype), dst) != FQ_OK)
        return FQ_ERR;
    if (dtype == LAYER_CACHE_F16) {
        const uint16_t *h = dst;
        for (size_t i = 0; i < count; i++)
            if ((h[i] & 0x7c00) == 0x7c00)
                return fq_error("layer_cache: boundary %d: activation %g at sample %zu index "
                                "%zu overflows fp16 (expected |x| < 65520; use bf16 or fp32 "
                                "for this cache)",
                                boundary, (double)x[i], sample, i);
    }
    return FQ_OK;
}

/* Samples are independent (own digest, own file range): they are encoded, hashed and
 * written on several threads — one core hashes ~0.3 GB/s, and a 70B layer's cache is
 * 4 GB per boundary. */
typedef struct {
    const float *x;          /* fp32 samples, encoded here; or */
    const uint8_t *payload;  /* samples already encoded */
    size_t per_sample, sample_bytes;
    layer_cache_dtype dtype;
    int boundary;
    uint8_t *table;
    atomic_file *f;
    off_t payload_at;
    void **bufs;
} write_job;

static int write_sample(void *ctx, size_t i, int t)
{
    write_job *j = ctx;
    const void *src = j->payload ? (const void *)(j->payload + i * j->sample_bytes) : j->bufs[t];
    if (!j->payload && layer_cache_encode(j->x + i * j->per_sample, j->per_sample, j->dtype,
                                          j->bufs[t], j->boundary, i) != FQ_OK)
        return FQ_ERR;
    sha256(src, j->sample_bytes, j->table + i * SAMPLE_DIGEST);
    return atomic_file_pwrite(j->f, src, j->sample_bytes,
                              j->payload_at + (off_t)(i * j->sample_bytes));
}

/* x (fp32) or payload (encoded) → the cache file of `boundary` */
static int cache_write(const char *dir, int boundary, const char *fingerprint,
                       layer_cache_dtype dtype, const float *x, const void *payload, size_t n,
                       size_t s, size_t d)
{
    char path[4096];
    if (layer_cache_path(dir, boundary, path, sizeof path) != FQ_OK)
        return FQ_ERR;
    if (!fingerprint_ok(fingerprint))
        return fq_error("%s: fingerprint must be 64 lowercase hex characters", path);
    if (dtype != LAYER_CACHE_F32 && dtype != LAYER_CACHE_F16 && dtype != LAYER_CACHE_BF16)
        return fq_error("%s: dtype %d (expected fp32, fp16 or bf16)", path, (int)dtype);
    if ((!x && !payload) || n == 0 || s == 0 || d == 0 || (uint64_t)n * s > max_elements / d)
        return fq_error("%s: shape (%zu, %zu, %zu) (expected non-empty, under 2^40 values)",
                        path, n, s, d);
    size_t per_sample = s * d, sample_bytes = per_sample * layer_cache_dtype_bytes(dtype);
    int nt = fq_io_threads(n);
    uint8_t *table = fq_calloc(n, SAMPLE_DIGEST, "cache sample table");
    void **bufs = payload ? NULL : fq_thread_buffers(nt, sample_bytes, "cache sample buffer");
    atomic_file f = {.fd = -1};
    int rc = FQ_ERR;
    if (!table || (!payload && !bufs) || atomic_file_open(&f, path) != FQ_OK)
        goto out;
    write_job job = {.x = x, .payload = payload, .per_sample = per_sample, .sample_bytes = sample_bytes,
                     .dtype = dtype, .boundary = boundary, .table = table, .f = &f,
                     .payload_at = LAYER_CACHE_HEADER_BYTES + (off_t)n * SAMPLE_DIGEST,
                     .bufs = bufs};
    if (fq_parallel_for(n, nt, write_sample, &job) != FQ_OK)
        goto fail;
    layer_cache_header h = {.boundary = boundary, .dtype = dtype, .nsamples = n,
                            .seqlen = s, .hidden = d};
    memcpy(h.fingerprint, fingerprint, 65);
    sha256(table, n * SAMPLE_DIGEST, h.payload_digest);
    uint8_t hdr[LAYER_CACHE_HEADER_BYTES];
    header_encode(&h, hdr);
    if (atomic_file_pwrite(&f, table, n * SAMPLE_DIGEST, LAYER_CACHE_HEADER_BYTES) != FQ_OK ||
        atomic_file_pwrite(&f, hdr, sizeof hdr, 0) != FQ_OK)
        goto fail;
    rc = atomic_file_commit_nosync(&f); /* digests guard it: atomic_file.h */
    goto out;
fail:
    atomic_file_abort(&f);
out:
    free(table);
    fq_thread_buffers_free(bufs, nt);
    return rc;
}

int layer_cache_write(const char *dir, int boundary, const char *fingerprint,
                      layer_cache_dtype dtype, const float *x, size_t n, size_t s, size_t d)
{
    return cache_write(dir, boundary, fingerprint, dtype, x, NULL, n, s, d);
}

int layer_cache_write_encoded(const char *dir, int boundary, const char *fingerprint,
                              layer_cache_dtype dtype, const void *payload, size_t n, size_t s,
                              size_t d)
{
    return cache_write(dir, boundary, fingerprint, dtype, NULL, payload, n, s, d);
}

static int read_exact(int fd, void *buf, size_t n, off_t at, const char *path)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, at);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return fq_error("%s: read failed (%s)", path, r < 0 ? strerror(errno) : "short file");
        p += r;
        at += r;
        n -= (size_t)r;
    }
    return FQ_OK;
}

/* Open the file and validate its header; returns the fd or -1. */
static int open_checked(const char *dir, int boundary, const char *fingerprint,
                        layer_cache_header *h, char *path, size_t cap)
{
    if (layer_cache_path(dir, boundary, path, cap) != FQ_OK)
        return -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fq_error("%s: cannot open (%s)", path, strerror(errno));
        return -1;
    }
    struct stat st;
    uint8_t raw[LAYER_CACHE_HEADER_BYTES], want[32];
    if (fstat(fd, &st) != 0) {
        fq_error("%s: cannot stat (%s)", path, strerror(errno));
        goto bad;
    }
    if (st.st_size < LAYER_CACHE_HEADER_BYTES) {
        fq_error("%s: file is %lld bytes (expected at least a %d-byte header)", path,
                 (long long)st.st_size, LAYER_CACHE_HEADER_BYTES);
        goto bad;
    }
    if (read_exact(fd, raw, sizeof raw, 0, path) != FQ_OK)
        goto bad;
    if (memcmp(raw, cache_magic, 8) != 0) {
        fq_error("%s: bad magic (expected \"FQACT001\": not a flatq activation cache)", path);
        goto bad;
    }
    sha256(raw, HDR_CHECKED_BYTES, want);
    if (memcmp(want, raw + HDR_CHECKED_BYTES, 32) != 0) {
        fq_error("%s: header checksum mismatch (expected an intact header; the file is "
                 "corrupted)", path);
        goto bad;
    }
    uint32_t version = get_u32(raw + 8), dtype = get_u32(raw + 12), ndim = get_u32(raw + 16);
    if (version != LAYER_CACHE_VERSION || ndim != 3 || dtype < 1 || dtype > 3) {
        fq_error("%s: version %u, ndim %u, dtype %u (expected version %d, ndim 3, dtype 1..3)",
                 path, version, ndim, dtype, LAYER_CACHE_VERSION);
        goto bad;
    }
    h->dtype = (layer_cache_dtype)dtype;
    h->boundary = (int)get_u32(raw + 20);
    h->nsamples = get_u64(raw + 24);
    h->seqlen = get_u64(raw + 32);
    h->hidden = get_u64(raw + 40);
    memcpy(h->fingerprint, raw + 48, 64);
    h->fingerprint[64] = '\0';
    memcpy(h->payload_digest, raw + 112, 32);
    if (h->boundary != boundary) {
        fq_error("%s: header says boundary %d (expected %d)", path, h->boundary, boundary);
        goto bad;
    }
    if (h->nsamples == 0 || h->seqlen == 0 || h->hidden == 0 ||
        h->nsamples > max_elements / h->seqlen ||
        h->nsamples * h->seqlen > max_elements / h->hidden) {
        fq_error("%s: shape (%llu, %llu, %llu) (expected non-empty, under 2^40 values)", path,
                 (unsigned long long)h->nsamples, (unsigned long long)h->seqlen,
                 (unsigned long long)h->hidden);
        goto bad;
    }
    uint64_t want_size = LAYER_CACHE_HEADER_BYTES + h->nsamples * SAMPLE_DIGEST +
                         h->nsamples * h->seqlen * h->hidden * layer_cache_dtype_bytes(h->dtype);
    if ((uint64_t)st.st_size != want_size) {
        fq_error("%s: file is %lld bytes (expected %llu for shape (%llu, %llu, %llu) %s; "
                 "truncated or corrupted)",
                 path, (long long)st.st_size, (unsigned long long)want_size,
                 (unsigned long long)h->nsamples, (unsigned long long)h->seqlen,
                 (unsigned long long)h->hidden, layer_cache_dtype_name(h->dtype));
        goto bad;
    }
    if (fingerprint && strcmp(fingerprint, h->fingerprint) != 0) {
        fq_error("%s: made by another job or model (fingerprint %.12s…, expected %.12s…)",
                 path, h->fingerprint, fingerprint);
        goto bad;
    }
    return fd;
bad:
    close(fd);
    return -1;
}

int layer_cache_read_header(const char *dir, int boundary, const char *fingerprint,
                            layer_cache_header *h)
{
    char path[4096];
    int fd = open_checked(dir, boundary, fingerprint, h, path, sizeof path);
    if (fd < 0)
        return FQ_ERR;
    close(fd);
    return FQ_OK;
}

typedef struct {
    int fd;
    const char *path;
    layer_cache_dtype dtype;
    size_t a, per_sample, sample_bytes;
    off_t payload_at;
    const uint8_t *table;
    float *x;
    void **bufs;
} read_job;

static int read_sample(void *ctx, size_t k, int t)
{
    read_job *j = ctx;
    size_t i = j->a + k;
    uint8_t digest[32];
    if (read_exact(j->fd, j->bufs[t], j->sample_bytes,
                   j->payload_at + (off_t)(i * j->sample_bytes), j->path) != FQ_OK)
        return FQ_ERR;
    sha256(j->bufs[t], j->sample_bytes, digest);
    if (memcmp(digest, j->table + i * SAMPLE_DIGEST, 32) != 0)
        return fq_error("%s: checksum mismatch in sample %zu (the file is corrupted)", j->path,
                        i);
    if (j->x && fq_convert_to_f32(j->bufs[t], to_fq_dtype(j->dtype), j->per_sample,
                                  j->x + k * j->per_sample) != FQ_OK)
        return FQ_ERR;
    return FQ_OK;
}

/* Read samples [a, b) with checks, several samples at a time; x may be NULL to verify
 * only. */
static int read_range(int fd, const char *path, const layer_cache_header *h, size_t a,
                      size_t b, float *x)
{
    size_t n = (size_t)h->nsamples, per_sample = (size_t)(h->seqlen * h->hidden);
    size_t sample_bytes = per_sample * layer_cache_dtype_bytes(h->dtype);
    int nt = fq_io_threads(b - a);
    uint8_t *table = fq_malloc(n * SAMPLE_DIGEST, "cache sample table");
    void **bufs = fq_thread_buffers(nt, sample_bytes, "cache sample buffer");
    int rc = FQ_ERR;
    if (!table || !bufs || read_exact(fd, table, n * SAMPLE_DIGEST, LAYER_CACHE_HEADER_BYTES,
                                      path) != FQ_OK)
        goto out;
    uint8_t digest[32];
    sha256(table, n * SAMPLE_DIGEST, digest);
    if (memcmp(digest, h->payload_digest, 32) != 0) {
        fq_error("%s: sample table checksum mismatch (the file is corrupted)", path);
        goto out;
    }
    read_job job = {.fd = fd, .path = path, .dtype = h->dtype, .a = a, .per_sample = per_sample,
                    .sample_bytes = sample_bytes,
                    .payload_at = LAYER_CACHE_HEADER_BYTES + (off_t)n * SAMPLE_DIGEST,
                    .table = table, .x = x, .bufs = bufs};
    rc = fq_parallel_for(b - a, nt, read_sample, &job);
out:
    free(table);
    fq_thread_buffers_free(bufs, nt);
    return rc;
}

int layer_cache_read_samples(const char *dir, int boundary, const char *fingerprint,
                             size_t a, size_t b, float *x, layer_cache_header *h)
{
    char path[4096];
    if (!x || !h)
        return fq_error("layer_cache_read_samples: NULL output");
    int fd = open_checked(dir, boundary, fingerprint, h, path, sizeof path);
    if (fd < 0)
        return FQ_ERR;
    int rc = FQ_OK;
    if (a >= b || b > h->nsamples)
        rc = fq_error("%s: sample range [%zu, %zu) (expected 0 <= a < b <= %llu)", path, a, b,
                      (unsigned long long)h->nsamples);
    else
        rc = read_range(fd, path, h, a, b, x);
    close(fd);
    return rc;
}

int layer_cache_read(const char *dir, int boundary, const char *fingerprint, float **x_out,
                     layer_cache_header *h)
{
    char path[4096];
    if (!x_out || !h)
        return fq_error("layer_cache_read: NULL output");
    *x_out = NULL;
    int fd = open_checked(dir, boundary, fingerprint, h, path, sizeof path);
    if (fd < 0)
        return FQ_ERR;
    size_t count = (size_t)(h->nsamples * h->seqlen * h->hidden);
    float *x = fq_malloc(count * sizeof *x, "activation cache");
    int rc = x ? read_range(fd, path, h, 0, (size_t)h->nsamples, x) : FQ_ERR;
    close(fd);
    if (rc != FQ_OK) {
        free(x);
        return FQ_ERR;
    }
    *x_out = x;
    return FQ_OK;
}

int layer_cache_valid(const char *dir, int boundary, const char *fingerprint)
{
    char path[4096];
    layer_cache_header h;
    int fd = open_checked(dir, boundary, fingerprint, &h, path, sizeof path);
    if (fd < 0)
        return 0;
    int rc = read_range(fd, path, &h, 0, (size_t)h.nsamples, NULL);
    close(fd);
    return rc == FQ_OK;
}

int layer_cache_remove(const char *dir, int boundary)
{
    char path[4096];
    if (layer_cache_path(dir, boundary, path, sizeof path) != FQ_OK)
        return FQ_ERR;
    if (unlink(path) != 0 && errno != ENOENT)
        return fq_error("%s: cannot remove (%s)", path, strerror(errno));
    return FQ_OK;
}
