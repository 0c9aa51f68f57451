/* st_test_util.h — helpers for the safetensors / config tests: a scratch directory,
 * hand-made files, and the location of the shared data (FLATQ_DATA).
 * Header-only (static functions) so each test binary stays one source file. */
#ifndef FQ_ST_TEST_UTIL_H
#define FQ_ST_TEST_UTIL_H

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tu_dir[256];

static inline int tu_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

/* Create a fresh scratch directory (one per test binary run). */
static inline int tu_setup(void **state)
{
    (void)state;
    const char *base = getenv("TMPDIR");
    snprintf(tu_dir, sizeof tu_dir, "%s/flatq-test-XXXXXX", base && base[0] ? base : "/tmp");
    return mkdtemp(tu_dir) ? 0 : -1;
}

static inline int tu_teardown(void **state)
{
    (void)state;
    return nftw(tu_dir, tu_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Path of `name` inside the scratch directory (static buffer; rotates among 4). */
static inline const char *tu_path(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tu_dir, name);
    return buf[k];
}

static inline void tu_write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "test setup: cannot write %s\n", path);
        exit(1);
    }
}

/* A safetensors file from a header string: u64 length (as given, so it can lie),
 * the header, then `data_bytes` bytes of data (0, 1, 2, ...). */
static inline void tu_write_st(const char *path, uint64_t claimed_len, const char *header,
                        size_t data_bytes)
{
    size_t hl = strlen(header), n = 8 + hl + data_bytes;
    unsigned char *b = malloc(n);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(claimed_len >> (8 * i));
    memcpy(b + 8, header, hl);
    for (size_t i = 0; i < data_bytes; i++)
        b[8 + hl + i] = (unsigned char)i;
    tu_write_bytes(path, b, n);
    free(b);
}

static inline unsigned char *tu_read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(sz > 0 ? (size_t)sz : 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

/* FLATQ_DATA/rel if it exists, else NULL after one loud line naming the test. */
static inline const char *tu_data(const char *rel, const char *test)
{
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    const char *root = getenv("FLATQ_DATA");
    snprintf(buf[k], sizeof buf[k], "%s/%s", root && root[0] ? root : "../shared/data", rel);
    struct stat st;
    if (stat(buf[k], &st) != 0) {
        fprintf(stderr, "!!! NOT RUN: %s: %s is absent (set FLATQ_DATA to shared/data)\n",
                test, buf[k]);
        return NULL;
    }
    return buf[k];
}

#endif
