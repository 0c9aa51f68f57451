/* test_layer_cache.c — the activation cache: round trip per dtype (checked against the
 * rounding error each dtype allows, and the on-disk layout read back by hand), damaged
 * files (flipped bytes, truncation, another job's fingerprint) detected, write failures
 * (unwritable directory, fp16 overflow, disk full) reported without leaving files; the FP
 * pass's commit with the write on a thread of its own gives the same files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coordinator/fp_pass.h"
#include "coordinator/layer_cache.h"
#include "dtype.h"
#include "error.h"

static const char *fp_a = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
static const char *fp_b = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

enum { N = 5, S = 7, D = 12 };

static char *make_dir(void)
{
    char *t = strdup("/tmp/fq_cache_test.XXXXXX");
    assert_non_null(mkdtemp(t));
    return t;
}

static void remove_dir(const char *dir)
{
    DIR *dd = opendir(dir);
    if (dd) {
        struct dirent *e;
        char p[4096];
        while ((e = readdir(dd)))
            if (e->d_name[0] != '.') {
                snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
                unlink(p);
            }
        closedir(dd);
    }
    rmdir(dir);
}

static int count_entries(const char *dir)
{
    DIR *dd = opendir(dir);
    assert_non_null(dd);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dd)))
        n += e->d_name[0] != '.';
    closedir(dd);
    return n;
}

static void fill(float *x, size_t count, double scale)
{
    for (size_t i = 0; i < count; i++)
        x[i] = (float)(scale * sin(0.37 * (double)i + 0.1) * (1.0 + (double)(i % 13)));
}

static void file_path(const char *dir, int b, char *out)
{
    snprintf(out, 4096, "%s/boundary_%03d.fqa", dir, b);
}

static void test_round_trip_each_dtype(void **state)
{
    (void)state;
    char *dir = make_dir();
    float x[N * S * D];
    fill(x, N * S * D, 3.0);
    /* Relative rounding error bound of each format (half an ulp). */
    const struct { layer_cache_dtype t; double rel; } cases[] = {
        {LAYER_CACHE_F32, 0.0}, {LAYER_CACHE_F16, 1.0 / 2048}, {LAYER_CACHE_BF16, 1.0 / 256}};
    for (int c = 0; c < 3; c++) {
        int b = 10 + c;
        assert_int_equal(layer_cache_write(dir, b, fp_a, cases[c].t, x, N, S, D), FQ_OK);
        float *y = NULL;
        layer_cache_header h;
        assert_int_equal(layer_cache_read(dir, b, fp_a, &y, &h), FQ_OK);
        assert_int_equal(h.nsamples, N);
        assert_int_equal(h.seqlen, S);
        assert_int_equal(h.hidden, D);
        assert_int_equal(h.dtype, cases[c].t);
        assert_string_equal(h.fingerprint, fp_a);
        for (int i = 0; i < N * S * D; i++)
            assert_true(fabs((double)y[i] - (double)x[i]) <=
                        cases[c].rel * fabs((double)x[i]) + 1e-7);
        /* A range of samples equals the same rows of the whole read. */
        float part[2 * S * D];
        assert_int_equal(layer_cache_read_samples(dir, b, fp_a, 2, 4, part, &h), FQ_OK);
        assert_memory_equal(part, y + 2 * S * D, sizeof part);
        assert_int_equal(layer_cache_read_samples(dir, b, fp_a, 4, 6, part, &h), FQ_ERR);
        assert_int_equal(layer_cache_valid(dir, b, fp_a), 1);
        /* The layout, read by hand: magic, little-endian shape, file length. */
        char p[4096];
        file_path(dir, b, p);
        FILE *f = fopen(p, "rb");
        unsigned char hdr[48];
        assert_int_equal(fread(hdr, 1, sizeof hdr, f), sizeof hdr);
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        fclose(f);
        assert_memory_equal(hdr, "FQACT001", 8);
        assert_int_equal(hdr[12], (unsigned)cases[c].t);
        assert_int_equal(hdr[20], b);
        assert_int_equal(hdr[24], N);
        assert_int_equal(hdr[32], S);
        assert_int_equal(hdr[40], D);
        size_t esize = cases[c].t == LAYER_CACHE_F32 ? 4 : 2;
        assert_int_equal(len, 256 + N * 32 + N * S * D * esize);
        free(y);
    }
    /* fp32 is bit exact. */
    float *y = NULL;
    layer_cache_header h;
    assert_int_equal(layer_cache_read(dir, 10, NULL, &y, &h), FQ_OK);
    assert_memory_equal(x, y, sizeof x);
    free(y);
    assert_int_equal(count_entries(dir), 3); /* no temporary files left behind */
    remove_dir(dir);
    free(dir);
}

static void slurp(const char *path, unsigned char **buf, long *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = ftell(f);
    fseek(f, 0, SEEK_SET);
    *buf = malloc((size_t)*len);
    assert_int_equal(fread(*buf, 1, (size_t)*len, f), (size_t)*len);
    fclose(f);
}

/* boundary b's files in dirs a and b have the same bytes */
static void assert_same_file(const char *da, const char *db, int b)
{
    char pa[4096], pb[4096];
    unsigned char *ba, *bb;
    long la, lb;
    file_path(da, b, pa);
    file_path(db, b, pb);
    slurp(pa, &ba, &la);
    slurp(pb, &bb, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(ba, bb, (size_t)la);
    free(ba);
    free(bb);
}

/* Samples are encoded, hashed and checked on several threads: the file must not depend on
 * how many, and a corrupted sample must be named whichever thread reads it. */
static void test_thread_count_invisible(void **state)
{
    (void)state;
    char *d1 = make_dir(), *d4 = make_dir(), p4[4096];
    float x[N * S * D], y[N * S * D];
    fill(x, N * S * D, 2.0);
    setenv("FLATQ_IO_THREADS", "1", 1);
    assert_int_equal(layer_cache_write(d1, 3, fp_a, LAYER_CACHE_BF16, x, N, S, D), FQ_OK);
    setenv("FLATQ_IO_THREADS", "4", 1);
    assert_int_equal(layer_cache_write(d4, 3, fp_a, LAYER_CACHE_BF16, x, N, S, D), FQ_OK);
    assert_same_file(d1, d4, 3);
    /* every sample read back by 3 threads equals the 1-thread read */
    float *y1 = NULL;
    layer_cache_header h;
    setenv("FLATQ_IO_THREADS", "1", 1);
    assert_int_equal(layer_cache_read(d1, 3, fp_a, &y1, &h), FQ_OK);
    setenv("FLATQ_IO_THREADS", "3", 1);
    assert_int_equal(layer_cache_read_samples(d4, 3, fp_a, 0, N, y, &h), FQ_OK);
    assert_memory_equal(y, y1, sizeof y);
    free(y1);
    /* a flipped byte in the last sample's payload is found and named */
    file_path(d4, 3, p4);
    FILE *f = fopen(p4, "r+b");
    assert_non_null(f);
    long at = 256 + N * 32 + (long)(N - 1) * S * D * 2 + 5;
    fseek(f, at, SEEK_SET);
    int c = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(c ^ 0x10, f);
    fclose(f);
    float *bad = NULL;
    assert_int_equal(layer_cache_read(d4, 3, fp_a, &bad, &h), FQ_ERR);
    assert_null(bad);
    assert_non_null(strstr(fq_errmsg(), "checksum mismatch in sample 4"));
    unsetenv("FLATQ_IO_THREADS");
    remove_dir(d1);
    remove_dir(d4);
    free(d1);
    free(d4);
}

static void flip_byte(const char *path, long at)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, at, SEEK_SET);
    int c = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(c ^ 0x01, f);
    fclose(f);
}

static void test_flipped_bytes_detected(void **state)
{
    (void)state;
    char *dir = make_dir(), p[4096];
    float x[N * S * D];
    fill(x, N * S * D, 1.0);
    file_path(dir, 3, p);
    /* header field, header checksum, sample table, first and last payload byte */
    long size = 256 + N * 32 + N * S * D * 2;
    const long where[] = {30, 250, 256 + 40, 256 + N * 32, size - 1};
    for (size_t k = 0; k < sizeof where / sizeof where[0]; k++) {
        assert_int_equal(layer_cache_write(dir, 3, fp_a, LAYER_CACHE_BF16, x, N, S, D), FQ_OK);
        assert_int_equal(layer_cache_valid(dir, 3, fp_a), 1);
        flip_byte(p, where[k]);
        assert_int_equal(layer_cache_valid(dir, 3, fp_a), 0);
        assert_non_null(strstr(fq_errmsg(), "boundary_003.fqa"));
        assert_non_null(strstr(fq_errmsg(), "checksum"));
        float *y = (float *)0x1;
        layer_cache_header h;
        assert_int_equal(layer_cache_read(dir, 3, fp_a, &y, &h), FQ_ERR);
        assert_null(y);
    }
    /* A flipped byte in sample 4 does not stop reading samples 0..2, but reading 4 fails. */
    assert_int_equal(layer_cache_write(dir, 3, fp_a, LAYER_CACHE_BF16, x, N, S, D), FQ_OK);
    flip_byte(p, size - 1);
    float part[3 * S * D];
    layer_cache_header h;
    assert_int_equal(layer_cache_read_samples(dir, 3, fp_a, 0, 3, part, &h), FQ_OK);
    assert_int_equal(layer_cache_read_samples(dir, 3, fp_a, 4, 5, part, &h), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "sample 4"));
    remove_dir(dir);
    free(dir);
}

/* The cache is committed without fsync (atomic_file_commit_nosync), so after a crash the
 * renamed file may have its size but blocks never written back, which read as zeros: the
 * digests must reject a zeroed stretch of payload and an all-zero file alike, and a write
 * leaves no temporary file beside the cache. */
static void test_unsynced_crash_leftovers(void **state)
{
    (void)state;
    char *dir = make_dir(), p[4096];
    float x[N * S * D];
    fill(x, N * S * D, 1.0);
    file_path(dir, 5, p);
    const long size = 256 + N * 32 + N * S * D * 2;
    for (int whole = 0; whole <= 1; whole++) {
        assert_int_equal(layer_cache_write(dir, 5, fp_a, LAYER_CACHE_BF16, x, N, S, D), FQ_OK);
        assert_int_equal(layer_cache_valid(dir, 5, fp_a), 1);
        const long from = whole ? 0 : 256 + N * 32 + S * D * 2, len = whole ? size : S * D * 2;
        char *zeros = calloc((size_t)len, 1);
        assert_non_null(zeros);
        FILE *f = fopen(p, "r+b");
        assert_non_null(f);
        assert_int_equal(fseek(f, from, SEEK_SET), 0);
        assert_int_equal(fwrite(zeros, 1, (size_t)len, f), (size_t)len);
        fclose(f);
        free(zeros);
        assert_int_equal(layer_cache_valid(dir, 5, fp_a), 0);
    }
    DIR *d = opendir(dir);
    assert_non_null(d);
    int files = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') {
            files++;
            assert_string_equal(e->d_name, "boundary_005.fqa");
        }
    closedir(d);
    assert_int_equal(files, 1);
    remove_dir(dir);
    free(dir);
}

static void test_truncated_and_foreign_files(void **state)
{
    (void)state;
    char *dir = make_dir(), p[4096];
    float x[N * S * D];
    fill(x, N * S * D, 1.0);
    file_path(dir, 0, p);
    assert_int_equal(layer_cache_write(dir, 0, fp_a, LAYER_CACHE_F32, x, N, S, D), FQ_OK);
    layer_cache_header h;
    assert_int_equal(layer_cache_read_header(dir, 0, fp_b, &h), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "fingerprint"));
    assert_int_equal(layer_cache_valid(dir, 0, fp_b), 0);
    assert_int_equal(truncate(p, 256 + N * 32 + 100), 0);
    assert_int_equal(layer_cache_read_header(dir, 0, fp_a, &h), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "truncated"));
    assert_int_equal(truncate(p, 10), 0);
    assert_int_equal(layer_cache_read_header(dir, 0, fp_a, &h), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "header"));
    FILE *f = fopen(p, "wb");
    for (int i = 0; i < 300; i++)
        fputc('x', f);
    fclose(f);
    assert_int_equal(layer_cache_read_header(dir, 0, fp_a, &h), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "magic"));
    assert_int_equal(layer_cache_valid(dir, 1, fp_a), 0); /* absent */
    assert_non_null(strstr(fq_errmsg(), "boundary_001.fqa"));
    assert_int_equal(layer_cache_remove(dir, 0), FQ_OK);
    assert_int_equal(layer_cache_remove(dir, 0), FQ_OK);
    remove_dir(dir);
    free(dir);
}

static void test_bad_arguments_and_unwritable_dir(void **state)
{
    (void)state;
    char *dir = make_dir(), blocker[4096];
    float x[N * S * D];
    fill(x, N * S * D, 1.0);
    assert_int_equal(layer_cache_write(dir, 0, "abc", LAYER_CACHE_F32, x, N, S, D), FQ_ERR);
    assert_int_equal(layer_cache_write(dir, 0, fp_a, LAYER_CACHE_F32, x, 0, S, D), FQ_ERR);
    assert_int_equal(layer_cache_write(dir, 0, fp_a, (layer_cache_dtype)9, x, N, S, D), FQ_ERR);
    assert_int_equal(layer_cache_write(dir, -1, fp_a, LAYER_CACHE_F32, x, N, S, D), FQ_ERR);
    /* A "directory" that is a regular file: unwritable even for root. */
    snprintf(blocker, sizeof blocker, "%s/not_a_dir", dir);
    FILE *f = fopen(blocker, "w");
    fclose(f);
    assert_int_equal(layer_cache_write(blocker, 2, fp_a, LAYER_CACHE_F32, x, N, S, D), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "not_a_dir/boundary_002.fqa"));
    assert_non_null(strstr(fq_errmsg(), "Not a directory"));
    assert_int_equal(layer_cache_write("/nonexistent/fq", 2, fp_a, LAYER_CACHE_F32, x, N, S, D),
                     FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "No such file or directory"));
    remove_dir(dir);
    free(dir);
}

static void test_fp16_overflow_and_nan_refused(void **state)
{
    (void)state;
    char *dir = make_dir();
    float x[N * S * D];
    fill(x, N * S * D, 1.0);
    x[2 * S * D + 5] = 70000.0f; /* fine in bf16/fp32, inf in fp16 */
    assert_int_equal(layer_cache_write(dir, 4, fp_a, LAYER_CACHE_F16, x, N, S, D), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "boundary 4"));
    assert_non_null(strstr(fq_errmsg(), "fp16"));
    assert_non_null(strstr(fq_errmsg(), "sample 2"));
    assert_int_equal(count_entries(dir), 0);
    assert_int_equal(layer_cache_write(dir, 4, fp_a, LAYER_CACHE_BF16, x, N, S, D), FQ_OK);
    x[7] = NAN;
    assert_int_equal(layer_cache_write(dir, 5, fp_a, LAYER_CACHE_F32, x, N, S, D), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "not finite"));
    assert_int_equal(count_entries(dir), 1);
    remove_dir(dir);
    free(dir);
}

/* Write a boundary that does not fit; expect an error naming the file and errno, and
 * nothing left in the directory. */
static void expect_disk_full(const char *dir, const char *errtext)
{
    enum { BN = 4, BS = 64, BD = 128 }; /* 128 KiB of fp32 */
    float *x = malloc(sizeof(float) * BN * BS * BD);
    fill(x, BN * BS * BD, 1.0);
    assert_int_equal(layer_cache_write(dir, 7, fp_a, LAYER_CACHE_F32, x, BN, BS, BD), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "boundary_007.fqa"));
    assert_non_null(strstr(fq_errmsg(), errtext));
    assert_int_equal(count_entries(dir), 0);
    free(x);
}

static void test_disk_full(void **state)
{
    (void)state;
    char *dir = make_dir();
    /* A real full filesystem when we may mount one (root), ... */
    if (mount("tmpfs", dir, "tmpfs", 0, "size=64k") == 0) {
        expect_disk_full(dir, "No space left on device");
        assert_int_equal(umount(dir), 0);
    } else {
        fprintf(stderr, "test_disk_full: cannot mount a tmpfs (%s); RLIMIT_FSIZE case only\n",
                strerror(errno));
    }
    /* ... and always a file size limit, which fails the same write path with EFBIG. */
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 64 * 1024;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    expect_disk_full(dir, "File too large");
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    remove_dir(dir);
    free(dir);
}

/* fp_pass_commit_boundary with the write on the writer thread (async_commit, the job's
 * mode) and without: each boundary's file is byte-identical to layer_cache_write of the
 * values committed, x holds them as the cache stores them when commit returns (the next
 * boundary computes from x while the file is written), and an fp16 overflow moves the
 * cache to bf16 from that boundary on. */
static void test_fp_pass_commit_writer_thread(void **state)
{
    (void)state;
    char *ref = make_dir();
    llama_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.hidden = D;
    const size_t n = (size_t)N * S * D;
    float *want = malloc(sizeof(float) * n);
    for (int mode = 0; mode < 2; mode++) {
        char *dir = make_dir();
        fp_pass p = {.cfg = &cfg, .cache_dir = dir, .fingerprint = fp_a,
                     .dtype = LAYER_CACHE_F16, .nsamples = N, .seqlen = S};
        assert_int_equal(fp_pass_init(&p), FQ_OK);
        p.async_commit = mode;
        for (int b = 0; b < 4; b++) {
            fill(p.x, n, 3.0 + b);
            if (b == 2)
                p.x[n / 2] = 1e6f; /* beyond fp16: bf16 from here on */
            memcpy(want, p.x, sizeof(float) * n);
            assert_int_equal(fp_pass_commit_boundary(&p, b), FQ_OK);
            const layer_cache_dtype t = b < 2 ? LAYER_CACHE_F16 : LAYER_CACHE_BF16;
            assert_int_equal(p.dtype, t);
            for (size_t i = 0; i < n; i++) {
                float r = t == LAYER_CACHE_F16 ? fq_f16_to_f32(fq_f32_to_f16(want[i]))
                                               : fq_bf16_to_f32(fq_f32_to_bf16(want[i]));
                assert_true(p.x[i] == r);
            }
            if (mode == 0) /* the reference files, written directly */
                assert_int_equal(layer_cache_write(ref, b, fp_a, t, want, N, S, D), FQ_OK);
            /* overwriting x at once must not change what the writer writes */
            fill(p.x, n, -7.0);
        }
        assert_int_equal(fp_pass_flush(&p), FQ_OK);
        assert_int_equal(p.produced, 4);
        fp_pass_free(&p);
        for (int b = 0; b < 4; b++)
            assert_same_file(ref, dir, b);
        assert_int_equal(count_entries(dir), 4);
        remove_dir(dir);
        free(dir);
    }
    /* a write that fails on the writer thread is reported by the flush */
    fp_pass p = {.cfg = &cfg, .cache_dir = "/nonexistent/fq_cache", .fingerprint = fp_a,
                 .dtype = LAYER_CACHE_BF16, .nsamples = N, .seqlen = S};
    assert_int_equal(fp_pass_init(&p), FQ_OK);
    p.async_commit = 1;
    fill(p.x, n, 1.0);
    assert_int_equal(fp_pass_commit_boundary(&p, 0), FQ_OK);
    assert_int_equal(fp_pass_flush(&p), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "boundary 0"));
    fp_pass_free(&p);
    free(want);
    remove_dir(ref);
    free(ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_each_dtype),
        cmocka_unit_test(test_thread_count_invisible),
        cmocka_unit_test(test_flipped_bytes_detected),
        cmocka_unit_test(test_unsynced_crash_leftovers),
        cmocka_unit_test(test_truncated_and_foreign_files),
        cmocka_unit_test(test_bad_arguments_and_unwritable_dir),
        cmocka_unit_test(test_fp16_overflow_and_nan_refused),
        cmocka_unit_test(test_disk_full),
        cmocka_unit_test(test_fp_pass_commit_writer_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
