/* bench_layer_cache.c — activation-cache write and read throughput (coordinator/
 * layer_cache.c: bf16 encode + per-sample SHA-256 + pwrite; pread + SHA-256 check + fp32
 * decode) with the portable SHA-256 on 1 thread (the baseline), then with the CPU's
 * SHA-256 (core/sha256.c picks the SHA extensions where present) at 1 thread and at each
 * count given, on one boundary file in DIR.
 *   build/bench/bench_layer_cache [--samples N] [--seqlen S] [--hidden D] [--dir DIR] [T...]
 * Defaults: 32 × 2048 × 1024 (128 MiB in bf16), /tmp, threads 1 and all cores. A 70B
 * layer's boundary is 128 × 2048 × 8192 (4 GiB): multiply the times by 32. The file
 * stays in the page cache between write and read, so "read" is hashing + decoding, the
 * part that is CPU-bound (what a worker sees when the coordinator's node wrote it). */
#include "coordinator/layer_cache.h"
#include "error.h"
#include "parallel.h"
#include "sha256.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const char *fp = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

int main(int argc, char **argv)
{
    size_t n = 32, s = 2048, d = 1024;
    const char *dir = "/tmp";
    int counts[16], nc = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--samples") && i + 1 < argc)
            n = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--seqlen") && i + 1 < argc)
            s = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--hidden") && i + 1 < argc)
            d = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (nc < 16 && atoi(argv[i]) > 0)
            counts[nc++] = atoi(argv[i]);
        else {
            fprintf(stderr, "usage: %s [--samples N] [--seqlen S] [--hidden D] [--dir DIR] "
                            "[THREADS...]\n", argv[0]);
            return 2;
        }
    }
    if (nc == 0) {
        counts[nc++] = 1;
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        if (cores > 1)
            counts[nc++] = (int)(cores > 16 ? 16 : cores);
    }
    size_t count = n * s * d;
    float *x = malloc(count * sizeof *x), *y = malloc(count * sizeof *y);
    if (!x || !y) {
        fprintf(stderr, "bench_layer_cache: out of memory for %zu values\n", count);
        return 1;
    }
    for (size_t i = 0; i < count; i++)
        x[i] = (float)sin(0.001 * (double)i) * 3.0f;
    memset(y, 0, count * sizeof *y); /* first touch outside the timed reads */
    double mib = (double)count * 2 / (1 << 20);
    printf("cache %zu x %zu x %zu bf16 = %.0f MiB in %s\n", n, s, d, mib, dir);
    printf("%-8s %-20s %10s %12s %10s %12s   %s\n", "threads", "SHA-256", "write s",
           "write MiB/s", "read s", "read MiB/s", "vs portable, 1 thread (write / read)");
    double base_w = 0, base_r = 0;
    for (int c = -1; c < nc; c++) {
        /* row -1: the portable SHA-256 on one thread, the baseline of the ratios */
        char v[16];
        snprintf(v, sizeof v, "%d", c < 0 ? 1 : counts[c]);
        setenv("FLATQ_IO_THREADS", v, 1);
        sha256_use_portable(c < 0);
        const char *sha = sha256_backend();
        double best_w = 1e30, best_r = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = now_s();
            if (layer_cache_write(dir, 999, fp, LAYER_CACHE_BF16, x, n, s, d) != FQ_OK) {
                fprintf(stderr, "bench_layer_cache: %s\n", fq_errmsg());
                return 1;
            }
            double t1 = now_s();
            layer_cache_header h;
            if (layer_cache_read_samples(dir, 999, fp, 0, n, y, &h) != FQ_OK) {
                fprintf(stderr, "bench_layer_cache: %s\n", fq_errmsg());
                return 1;
            }
            double t2 = now_s();
            best_w = t1 - t0 < best_w ? t1 - t0 : best_w;
            best_r = t2 - t1 < best_r ? t2 - t1 : best_r;
        }
        if (c < 0)
            base_w = best_w, base_r = best_r;
        printf("%-8s %-20s %10.3f %12.0f %10.3f %12.0f   %.2fx / %.2fx\n", v, sha, best_w,
               mib / best_w, best_r, mib / best_r, base_w / best_w, base_r / best_r);
    }
    sha256_use_portable(0);
    layer_cache_remove(dir, 999);
    free(x);
    free(y);
    return 0;
}
