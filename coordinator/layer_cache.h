/* layer_cache.h — the activation cache: the full-precision input of every decoder layer,
 * one file per layer boundary (`boundary_%03d.fqa` in the cache directory).
 *
 * Layer i reads boundary i (its input) and boundary i+1 (its full-precision target).
 * The file is written once, atomically (atomic_file.h), and trusted only after its
 * checksums verify, so a resumed job reuses a valid cache and rebuilds a damaged one.
 * Because of those checksums it is committed without fsync (atomic_file_commit_nosync):
 * a file torn by a crash fails its digests and is rebuilt, and the FP pass does not wait
 * for the disk before a worker may read the boundary from the page cache.
 *
 * Layout (all integers little-endian):
 *   header, 256 bytes:  magic "FQACT001", u32 version, u32 dtype (1 fp32, 2 fp16,
 *       3 bf16), u32 ndim (3), u32 boundary, u64 shape[3] = (nsamples, seqlen, hidden),
 *       64 hex chars of the job+model fingerprint, 32-byte payload digest, zero padding,
 *       and in its last 32 bytes the sha256 of the first 224 (header checksum).
 *   sample table: nsamples × 32 bytes, sha256 of each sample's payload bytes.
 *   payload: nsamples × seqlen × hidden elements, row-major.
 * The payload digest is sha256 of the sample table: one hashing pass over the data
 * serves both whole-file verification and reading a range of samples (mini-batches
 * streamed from a 4 GB boundary) without touching the rest.
 */
#ifndef FQ_LAYER_CACHE_H
#define FQ_LAYER_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    LAYER_CACHE_F32 = 1,
    LAYER_CACHE_F16 = 2,
    LAYER_CACHE_BF16 = 3,
} layer_cache_dtype;

enum { LAYER_CACHE_HEADER_BYTES = 256, LAYER_CACHE_VERSION = 1 };

typedef struct {
    int boundary;
    layer_cache_dtype dtype;
    uint64_t nsamples, seqlen, hidden;
    char fingerprint[65];
    uint8_t payload_digest[32];
} layer_cache_header;

/* "DIR/boundary_%03d.fqa" into out (cap bytes). */
int layer_cache_path(const char *dir, int boundary, char *out, size_t cap);

/* Write x[n][s][d] (fp32) as `dtype`. Fails, naming the boundary, when a value is not
 * finite or would overflow to inf in fp16 (the caller then picks bf16 or fp32).
 * fingerprint: 64 lowercase hex characters naming the job+model. */
int layer_cache_write(const char *dir, int boundary, const char *fingerprint,
                      layer_cache_dtype dtype, const float *x, size_t n, size_t s, size_t d);

/* The two halves of layer_cache_write, for a caller that writes from another thread while
 * x changes (coordinator/fp_pass.c): encode `count` values of sample `sample` as `dtype`
 * into dst (the same checks and messages), and write a payload already in `dtype`
 * (n·s·d elements, as layer_cache_encode leaves them). */
int layer_cache_encode(const float *x, size_t count, layer_cache_dtype dtype, void *dst,
                       int boundary, size_t sample);
int layer_cache_write_encoded(const char *dir, int boundary, const char *fingerprint,
                              layer_cache_dtype dtype, const void *payload, size_t n, size_t s,
                              size_t d);
/* bytes per element of dtype (4 or 2) */
size_t layer_cache_dtype_bytes(layer_cache_dtype dtype);

/* Read and check the header only: magic, version, sizes against the file length,
 * header checksum, and (when fingerprint is not NULL) the fingerprint. */
int layer_cache_read_header(const char *dir, int boundary, const char *fingerprint,
                            layer_cache_header *h);

/* Read the whole boundary as fp32 (*x_out malloc'ed, n*s*d floats), verifying every
 * checksum. */
int layer_cache_read(const char *dir, int boundary, const char *fingerprint, float **x_out,
                     layer_cache_header *h);

/* Read samples [a, b) into x (caller's buffer of (b-a)*s*d floats), verifying the
 * sample table and the checksum of each sample read; the rest is not touched. */
int layer_cache_read_samples(const char *dir, int boundary, const char *fingerprint,
                             size_t a, size_t b, float *x, layer_cache_header *h);

/* 1 when the boundary exists and verifies completely (for resume), 0 otherwise with
 * the reason in fq_errmsg(). */
int layer_cache_valid(const char *dir, int boundary, const char *fingerprint);

/* Remove a boundary file (cache trimming); absent is fine. */
int layer_cache_remove(const char *dir, int boundary);

const char *layer_cache_dtype_name(layer_cache_dtype t);

#endif
