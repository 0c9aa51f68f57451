/* sha256.h — SHA-256 (FIPS 180-2) for checksums of cache files and layer results.
 *
 * flatq checks every file it reuses (activation cache, finished layers) by content,
 * not by existence, so a torn or corrupted file is redone instead of trusted. One-shot
 * sha256() for buffers in memory, and an incremental context for files streamed in
 * chunks. Portable C, no assembly: speed is a few hundred MB/s, far below the cost of
 * producing the data it checks.
 */
#ifndef FQ_SHA256_H
#define FQ_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct sha256_ctx {
    uint32_t h[8];
    uint64_t len; /* bytes hashed so far */
    uint8_t buf[64];
    size_t n; /* bytes waiting in buf */
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
void sha256_final(sha256_ctx *c, uint8_t out[32]);
void sha256(const void *data, size_t n, uint8_t out[32]);

/* Lowercase hex of a digest: out must hold 65 bytes (64 digits + NUL). */
void sha256_hex(const uint8_t digest[32], char out[65]);

#endif
