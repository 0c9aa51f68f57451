/* utf8.h — strict UTF-8 validation, decoding and lossy repair.
 *
 * Strict means what Unicode and Rust's str accept: no overlong forms, no surrogates,
 * nothing above U+10FFFF. Lossy repair replaces each maximal invalid subpart with one
 * U+FFFD, the rule Rust's String::from_utf8_lossy (and WHATWG) follow, so decoded text
 * matches Hugging Face byte for byte.
 */
#ifndef FQ_UTF8_H
#define FQ_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length of the valid sequence starting at s[0] (1..4), or 0 if invalid/truncated. */
size_t utf8_seq_len(const unsigned char *s, size_t avail);
/* Offset of the first byte that starts an invalid sequence, or len when all valid. */
size_t utf8_first_invalid(const unsigned char *s, size_t len);
/* Decode the valid sequence at s of length n (from utf8_seq_len). */
uint32_t utf8_decode(const unsigned char *s, size_t n);
/* Encode cp into out (4 bytes room); returns the byte count. */
size_t utf8_encode(uint32_t cp, char *out);
/* Copy s into out (room for 3*len bytes), each invalid maximal subpart → U+FFFD.
 * Returns the bytes written. */
/* Byte length of the first `chars` code points of s (all of s if it is shorter). */
size_t utf8_prefix_bytes(const char *s, size_t len, long chars);
size_t utf8_repair(const unsigned char *s, size_t len, char *out);

#endif
