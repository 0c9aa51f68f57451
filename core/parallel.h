/* parallel.h — a plain pthreads loop over independent items, for the host-side work that
 * is per sample or per chunk (checksums and dtype conversion of multi-GB activation
 * caches, synthetic weight generation), where one core is far slower than the disk. */
#ifndef FQ_PARALLEL_H
#define FQ_PARALLEL_H

#include <stddef.h>

/* fn(ctx, i, t) does item i on thread t (0 <= t < the thread count; for per-thread
 * scratch) and returns FQ_OK or an fq_error code. */
typedef int (*fq_item_fn)(void *ctx, size_t i, int t);

/* Run fn over items [0, n) on min(nthreads, n) threads taking items in order from a
 * shared counter; nthreads <= 1 runs them inline, in order. After the first failure no
 * further item is started; that failure's message becomes the caller's fq_errmsg() and
 * FQ_ERR is returned. */
int fq_parallel_for(size_t n, int nthreads, fq_item_fn fn, void *ctx);

/* fn(ctx, a, b, t) does items [a, b) on thread t: [0, n) cut into ranges of `chunk` items
 * (the last may be shorter), run as fq_parallel_for does on nthreads threads (<= 0: the
 * I/O threads of fq_io_threads). For element-wise passes over multi-GB arrays, where one
 * call per element would cost more than the work. */
typedef int (*fq_range_fn)(void *ctx, size_t a, size_t b, int t);
int fq_parallel_ranges(size_t n, size_t chunk, int nthreads, fq_range_fn fn, void *ctx);

/* nt buffers of `bytes` each, one per thread of a loop (NULL and an fq_error naming
 * `what` when memory runs out); fq_thread_buffers_free(b, nt) frees them and the array. */
void **fq_thread_buffers(int nt, size_t bytes, const char *what);
void fq_thread_buffers_free(void **b, int nt);

/* Threads for I/O-side loops over n items: FLATQ_IO_THREADS if set (1..256), else the
 * online cores capped at 16, never more than n, at least 1. */
int fq_io_threads(size_t n);

/* The same rule for any loop: the environment variable var if set (1..max), else the
 * online cores capped at cap, never more than n, at least 1. */
int fq_env_threads(const char *var, int max, int cap, size_t n);

#endif
