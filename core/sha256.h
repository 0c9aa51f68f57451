/* sha256.h — SHA-256 (FIPS 180-4), streaming. Used to pin long id sequences and file
 * contents in tests and checksummed formats without pulling in a crypto library. */
#ifndef FQ_SHA256_H
#define FQ_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t total; /* bytes hashed so far */
    unsigned char buf[64];
    size_t nbuf;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t len);
void sha256_final(sha256_ctx *c, unsigned char out[32]);
/* Lower-case hex digest of data into hex[65]. */
void sha256_hex(const void *data, size_t len, char hex[65]);

#endif
