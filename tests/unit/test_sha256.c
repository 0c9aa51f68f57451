/* test_sha256.c — SHA-256 against the FIPS 180-2 test vectors (appendix B), one-shot
 * and incremental with every split point of a message that crosses block boundaries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sha256.h"

static void hex_of(const void *data, size_t n, char hex[65])
{
    uint8_t d[32];
    sha256(data, n, d);
    sha256_hex(d, hex);
}

static void test_fips_vectors(void **state)
{
    (void)state;
    char hex[65];
    hex_of("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    hex_of("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(m448, strlen(m448), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnop"
                       "jklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    hex_of(m896, strlen(m896), hex);
    assert_string_equal(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static void test_million_a_incremental(void **state)
{
    (void)state;
    /* one million 'a' fed in uneven chunks: exercises the partial-block path */
    char chunk[997];
    memset(chunk, 'a', sizeof chunk);
    sha256_ctx c;
    sha256_init(&c);
    size_t left = 1000000;
    while (left) {
        size_t n = left < sizeof chunk ? left : sizeof chunk;
        sha256_update(&c, chunk, n);
        left -= n;
    }
    uint8_t d[32];
    char hex[65];
    sha256_final(&c, d);
    sha256_hex(d, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_every_split_matches_one_shot(void **state)
{
    (void)state;
    uint8_t msg[200];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i * 37 + 11);
    for (size_t len = 0; len <= sizeof msg; len += 7) {
        uint8_t want[32];
        sha256(msg, len, want);
        for (size_t cut = 0; cut <= len; cut++) {
            sha256_ctx c;
            uint8_t got[32];
            sha256_init(&c);
            sha256_update(&c, msg, cut);
            sha256_update(&c, msg + cut, len - cut);
            sha256_final(&c, got);
            assert_memory_equal(got, want, 32);
        }
    }
    /* padding boundary: 55 bytes fit in one block, 56 need two */
    char hex[65];
    char m55[55], m56[56];
    memset(m55, 'a', sizeof m55);
    memset(m56, 'a', sizeof m56);
    hex_of(m55, sizeof m55, hex);
    assert_string_equal(hex, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
    hex_of(m56, sizeof m56, hex);
    assert_string_equal(hex, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
}

/* The SHA-extension and portable compression functions agree on every length around the
 * block boundaries and on long runs of blocks (where the CPU has the extensions; the
 * backend in use is printed). */
static void test_backends_agree(void **state)
{
    (void)state;
    printf("sha256 backend: %s\n", sha256_backend());
    enum { MAXN = 4096 + 130 };
    uint8_t *buf = malloc(MAXN);
    assert_non_null(buf);
    uint64_t r = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < MAXN; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        buf[i] = (uint8_t)(r >> 56);
    }
    for (size_t n = 0; n < MAXN; n += (n < 200 ? 1 : 61)) {
        uint8_t a[32], b[32];
        sha256_use_portable(0);
        sha256(buf, n, a);
        sha256_use_portable(1);
        sha256(buf, n, b);
        assert_memory_equal(a, b, 32);
    }
    sha256_use_portable(0);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fips_vectors),
        cmocka_unit_test(test_million_a_incremental),
        cmocka_unit_test(test_every_split_matches_one_shot),
        cmocka_unit_test(test_backends_agree),
    };
    return cmocka_run_group_tests_name("sha256", tests, NULL, NULL);
}
