/* sha256.h — SHA-256 (FIPS 180-4), one-shot and incremental.
 *
 * Used for job fingerprints (resume checks) and for checksums of cache and result
 * files. Written here rather than pulled from a crypto library: it is short, has no
 * dependency, and the checksums never need to be secret, only stable and strong.
 */
#ifndef FQ_SHA256_H
#define FQ_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t total;      /* bytes hashed so far */
    uint8_t block[64];
    size_t fill;         /* bytes waiting in block */
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
void sha256_final(sha256_ctx *c, uint8_t out[32]);

/* One call: out = SHA-256(data[0..n)). */
void sha256(const void *data, size_t n, uint8_t out[32]);
/* Which compression function runs: "x86 SHA extensions" or "portable C" (chosen at the
 * first use from cpuid). sha256_use_portable(1) forces the portable one, (0) re-chooses;
 * for tests and benchmarks (not thread-safe: call before hashing starts). */
const char *sha256_backend(void);
void sha256_use_portable(int on);
/* Lower-case hex of a digest, NUL-terminated (65 bytes). */
void sha256_hex(const uint8_t digest[32], char hex[65]);

#endif
