/* gpu_check.h — the shared driver of the GPU op tests (tests/gpu/test_gpu_*.c).
 *
 * Each test fills random inputs on the host, runs the C reference of core/ and the CUDA op
 * of kernels/ on copies of the same inputs, and compares: ‖out − ref‖/‖ref‖ (in double)
 * under a stated tolerance, or bit-exact equality where the op must reproduce the CPU's
 * quantization codes. Device outputs are poisoned with NaN before each run, so an element
 * the kernel never wrote fails the check. Every result is one table row
 * "ROW|group|check|measured|tolerance|PASS/FAIL" that tests/gpu/run.sh collects. Exit
 * status: 0 all passed, 1 a check failed or a call errored, 77 no GPU visible (not run).
 * Test programs may exit; library code may not.
 */
#ifndef FQ_GPU_CHECK_H
#define FQ_GPU_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "kernels/flatq_cuda.h"

#define GPU_MAX_ALLOCS 256

typedef struct {
    fq_cuda_ctx ctx;
    const char *group;
    int checks, failures;
    void *allocs[GPU_MAX_ALLOCS];
    int nallocs;
    uint64_t rng;
} gpu_suite;

static inline void gpu_die(gpu_suite *t, const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", t->group, what, fq_errmsg());
    printf("ROW|%s|%s|error|-|FAIL\n", t->group, what);
    exit(1);
}

/* 77 (not run) when no GPU is visible; exits 1 on a CUDA error. */
static inline void gpu_suite_begin(gpu_suite *t, const char *group, uint64_t seed)
{
    memset(t, 0, sizeof *t);
    t->group = group;
    t->rng = seed * 0x9E3779B97F4A7C15ull + 1;
    int count = 0;
    if (fq_cuda_device_count(&count) || count == 0) {
        fprintf(stderr, "%s: NOT RUN: no CUDA device visible (%s)\n", group, fq_errmsg());
        exit(77);
    }
    if (fq_cuda_init(&t->ctx, 0))
        gpu_die(t, "fq_cuda_init");
    char name[256];
    if (fq_cuda_device_name(&t->ctx, name, sizeof name) == FQ_OK)
        printf("DEVICE|%s\n", name);
}

static inline int gpu_suite_end(gpu_suite *t)
{
    for (int i = 0; i < t->nallocs; i++)
        fq_cuda_free(t->allocs[i]);
    fq_cuda_free_ctx(&t->ctx);
    printf("SUMMARY|%s|%d checks|%d failed\n", t->group, t->checks, t->failures);
    return t->failures ? 1 : 0;
}

/* ---- random inputs (xorshift64*, Box–Muller) ---- */
static inline double gpu_uniform(gpu_suite *t)
{
    t->rng ^= t->rng >> 12;
    t->rng ^= t->rng << 25;
    t->rng ^= t->rng >> 27;
    return (double)((t->rng * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0);
}

static inline void gpu_fill_normal(gpu_suite *t, float *x, size_t n, double sd)
{
    for (size_t i = 0; i < n; i++) {
        double u1 = gpu_uniform(t), u2 = gpu_uniform(t);
        if (u1 < 1e-300)
            u1 = 1e-300;
        x[i] = (float)(sd * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
    }
}

static inline float *gpu_host(size_t n)
{
    float *p = malloc(n * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of host memory (%zu floats)\n", n);
        exit(1);
    }
    return p;
}

static inline double *gpu_host_f64(size_t n)
{
    double *p = (double *)calloc(n ? n : 1, sizeof(double));
    if (!p) {
        fprintf(stderr, "out of host memory\n");
        exit(1);
    }
    return p;
}

static inline float *gpu_host_copy(const float *src, size_t n)
{
    float *p = gpu_host(n);
    memcpy(p, src, n * sizeof(float));
    return p;
}

/* ---- device buffers, freed by gpu_suite_end ---- */
static inline float *gpu_dev(gpu_suite *t, size_t n)
{
    float *d;
    if (t->nallocs == GPU_MAX_ALLOCS || fq_cuda_alloc(&d, n, "test buffer"))
        gpu_die(t, "fq_cuda_alloc");
    t->allocs[t->nallocs++] = d;
    return d;
}

static inline float *gpu_dev_copy(gpu_suite *t, const float *h, size_t n)
{
    float *d = gpu_dev(t, n);
    if (fq_cuda_upload(&t->ctx, d, h, n))
        gpu_die(t, "fq_cuda_upload");
    return d;
}

/* A device buffer full of NaN: whatever the kernel does not write stays NaN. */
static inline float *gpu_dev_poison(gpu_suite *t, size_t n)
{
    float *d = gpu_dev(t, n);
    if (fq_cuda_fill(&t->ctx, d, NAN, n) || fq_cuda_sync(&t->ctx))
        gpu_die(t, "fq_cuda_fill");
    return d;
}

/* Download after synchronising (which surfaces asynchronous kernel errors). */
static inline float *gpu_fetch(gpu_suite *t, const float *d, size_t n)
{
    float *h = gpu_host(n);
    if (fq_cuda_sync(&t->ctx) || fq_cuda_download(&t->ctx, h, d, n))
        gpu_die(t, "fq_cuda_download");
    return h;
}

static inline void gpu_call(gpu_suite *t, int rc, const char *what)
{
    if (rc != FQ_OK)
        gpu_die(t, what);
}

/* ---- comparisons ---- */
static inline void gpu_report(gpu_suite *t, const char *check, double measured, double tol,
                              int pass, const char *unit)
{
    t->checks++;
    if (!pass)
        t->failures++;
    printf("ROW|%s|%s|%.3e%s|%.1e|%s\n", t->group, check, measured, unit, tol,
           pass ? "PASS" : "FAIL");
}

/* ‖got − ref‖/‖ref‖; any NaN/Inf in got fails. n_out: the got-NaN count. */
static inline void gpu_check_rel(gpu_suite *t, const char *check, const float *got,
                                 const float *ref, size_t n, double tol)
{
    double num = 0, den = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) {
            bad++;
            continue;
        }
        double d = (double)got[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * (double)ref[i];
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    if (bad) {
        fprintf(stderr, "%s: %s: %zu of %zu elements not finite (unwritten or NaN)\n", t->group,
                check, bad, n);
        rel = INFINITY;
    }
    gpu_report(t, check, rel, tol, bad == 0 && rel <= tol, "");
}

/* Bit-exact equality (same float values); measured = the number of differing elements. */
static inline void gpu_check_exact(gpu_suite *t, const char *check, const float *got,
                                   const float *ref, size_t n)
{
    size_t diff = 0, first = n;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &ref[i], sizeof(float)) != 0) {
            if (first == n)
                first = i;
            diff++;
        }
    if (diff)
        fprintf(stderr, "%s: %s: %zu of %zu differ; first at %zu: got %.9g ref %.9g\n",
                t->group, check, diff, n, first, (double)got[first], (double)ref[first]);
    gpu_report(t, check, (double)diff, 0, diff == 0, " diff");
}

#endif
