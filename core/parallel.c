/* parallel.c — see parallel.h. */
#include "parallel.h"
#include "error.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct {
    fq_item_fn fn;
    void *ctx;
    size_t n, next;
    int failed;
    char err[2048];
    pthread_mutex_t mu;
} loop;

typedef struct {
    loop *l;
    int t;
} worker_arg;

static void *worker(void *arg)
{
    worker_arg *w = arg;
    loop *l = w->l;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        size_t i = l->failed ? l->n : l->next++;
        pthread_mutex_unlock(&l->mu);
        if (i >= l->n)
            break;
        if (l->fn(l->ctx, i, w->t) != FQ_OK) {
            pthread_mutex_lock(&l->mu);
            if (!l->failed) { /* the error buffer is per thread: carry the message over */
                l->failed = 1;
                snprintf(l->err, sizeof l->err, "%s", fq_errmsg());
            }
            pthread_mutex_unlock(&l->mu);
        }
    }
    return NULL;
}

int fq_parallel_for(size_t n, int nthreads, fq_item_fn fn, void *ctx)
{
    if (!fn)
        return fq_error("fq_parallel_for: NULL function");
    if (nthreads <= 1 || n <= 1) {
        for (size_t i = 0; i < n; i++)
            if (fn(ctx, i, 0) != FQ_OK)
                return FQ_ERR;
        return FQ_OK;
    }
    if ((size_t)nthreads > n)
        nthreads = (int)n;
    loop l = {.fn = fn, .ctx = ctx, .n = n};
    pthread_mutex_init(&l.mu, NULL);
    pthread_t *th = calloc((size_t)nthreads, sizeof *th);
    worker_arg *args = calloc((size_t)nthreads, sizeof *args);
    int started = 0;
    if (th && args)
        for (; started < nthreads; started++) {
            args[started] = (worker_arg){&l, started};
            if (pthread_create(&th[started], NULL, worker, &args[started]) != 0)
                break;
        }
    if (started == 0) /* no thread could start: do the work here */
        worker(&(worker_arg){&l, 0});
    for (int t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    free(th);
    free(args);
    pthread_mutex_destroy(&l.mu);
    if (l.failed)
        return fq_error("%s", l.err);
    return FQ_OK;
}

typedef struct {
    size_t n, chunk;
    fq_range_fn fn;
    void *ctx;
} ranges;

static int range_item(void *ctx, size_t i, int t)
{
    ranges *r = ctx;
    size_t a = i * r->chunk, b = r->n - a < r->chunk ? r->n : a + r->chunk;
    return r->fn(r->ctx, a, b, t);
}

int fq_parallel_ranges(size_t n, size_t chunk, int nthreads, fq_range_fn fn, void *ctx)
{
    if (!fn || chunk == 0)
        return fq_error("fq_parallel_ranges: NULL function or empty chunk");
    size_t items = (n + chunk - 1) / chunk;
    ranges r = {n, chunk, fn, ctx};
    return fq_parallel_for(items, nthreads > 0 ? nthreads : fq_io_threads(items), range_item,
                           &r);
}

void **fq_thread_buffers(int nt, size_t bytes, const char *what)
{
    void **b = fq_calloc((size_t)(nt > 0 ? nt : 1), sizeof *b, what);
    for (int t = 0; b && t < nt; t++)
        if (!(b[t] = fq_malloc(bytes, what))) {
            fq_thread_buffers_free(b, t);
            return NULL;
        }
    return b;
}

void fq_thread_buffers_free(void **b, int nt)
{
    for (int t = 0; b && t < nt; t++)
        free(b[t]);
    free(b);
}

int fq_env_threads(const char *var, int max, int cap, size_t n)
{
    long t = 0;
    const char *env = var ? getenv(var) : NULL;
    if (env && *env) {
        char *end = NULL;
        t = strtol(env, &end, 10);
        if (*end || t < 1 || t > max)
            t = 0; /* ignored: the default below */
    }
    if (t == 0) {
        t = sysconf(_SC_NPROCESSORS_ONLN);
        if (t > cap)
            t = cap;
    }
    if (t < 1)
        t = 1;
    if ((size_t)t > n)
        t = (long)(n ? n : 1);
    return (int)t;
}

int fq_io_threads(size_t n)
{
    return fq_env_threads("FLATQ_IO_THREADS", 256, 16, n);
}
