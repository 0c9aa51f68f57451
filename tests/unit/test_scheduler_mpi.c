/* test_scheduler_mpi.c — the job machinery end to end with a test-only "layer task".
 *
 * Two modes in one binary:
 *  - no arguments (make test runs it directly, as a singleton MPI process): cmocka tests
 *    of the one-rank path — results equal the task run by hand, resume skips verified
 *    layers and redoes a corrupted one, cache trimming releases exactly the boundaries
 *    no pending layer reads, a changed fingerprint is refused;
 *  - `--job CACHE OUT LOG [options]` under mpirun (tests/integration/sched_*.sh): a whole
 *    job over N ranks, so the scripts can compare bytes across rank counts, kill a
 *    worker, corrupt files and rerun.
 *
 * The "FP pass" makes boundary b+1 = tanh(1.1·x_b) + 0.01·b from the cached boundary b;
 * the "calibration" of layer L reads boundaries L and L+1 and writes, per hidden
 * channel, the sum over samples and tokens of tanh(x)·(L+1) − target (float64), plus
 * its mean square as the "loss". Every invocation is appended to LOG, so the scripts
 * can count what was (re)computed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "atomic_file.h"
#include "fileio.h"
#include "coordinator/layer_cache.h"
#include "coordinator/layer_result.h"
#include "coordinator/progress.h"
#include "coordinator/scheduler.h"
#include "error.h"
#include "worker/worker_loop.h"

typedef struct {
    const char *cache, *out, *log;
    int nlayers, n, s, d;
    int hang_layer;
    int layer_ms;
    layer_cache_dtype dtype;
    char fingerprint[65]; /* recipe+model, for the cache */
    /* --pipelined: produce(b) leaves boundary b unwritten (held in `pending`) until the
     * next produce or flush, as the FP pass's writer thread does */
    int pipelined, pending_b;
    float *pending;
} test_job;

static void log_line(const test_job *j, const char *fmt, ...) FQ_PRINTF(2, 3);
static void log_line(const test_job *j, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    int fd = open(j->log, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd >= 0) {
        ssize_t w = write(fd, buf, (size_t)n); /* O_APPEND: whole lines from any rank */
        (void)w;
        close(fd);
    }
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int write_pending(test_job *j)
{
    if (!j->pending)
        return FQ_OK;
    int rc = layer_cache_write(j->cache, j->pending_b, j->fingerprint, j->dtype, j->pending,
                               (size_t)j->n, (size_t)j->s, (size_t)j->d);
    free(j->pending);
    j->pending = NULL;
    if (rc == FQ_OK)
        log_line(j, "build boundary %d\n", j->pending_b);
    return rc;
}

static int flush_boundaries(void *ctx) { return write_pending(ctx); }

static int produce_boundary(void *ctx, int b)
{
    test_job *j = ctx;
    if (write_pending(j) != FQ_OK)
        return FQ_ERR;
    if (layer_cache_valid(j->cache, b, j->fingerprint)) {
        log_line(j, "reuse boundary %d\n", b);
        return FQ_OK;
    }
    size_t count = (size_t)j->n * j->s * j->d;
    float *x;
    if (b == 0) {
        x = fq_malloc(count * sizeof *x, "boundary 0");
        if (!x)
            return FQ_ERR;
        for (size_t i = 0; i < count; i++)
            x[i] = (float)sin(0.1 * (double)(i * 7 % 1013) + 0.3);
    } else {
        layer_cache_header h;
        if (layer_cache_read(j->cache, b - 1, j->fingerprint, &x, &h) != FQ_OK)
            return FQ_ERR;
        for (size_t i = 0; i < count; i++)
            x[i] = (float)(tanh(1.1 * (double)x[i]) + 0.01 * (b - 1));
    }
    if (j->pipelined) {
        /* a worker that read b now would fail: the scheduler must wait for the flush */
        j->pending = x;
        j->pending_b = b;
        return FQ_OK;
    }
    int rc = layer_cache_write(j->cache, b, j->fingerprint, j->dtype, x, (size_t)j->n,
                               (size_t)j->s, (size_t)j->d);
    free(x);
    if (rc == FQ_OK)
        log_line(j, "build boundary %d\n", b);
    return rc;
}

static int release_boundary(void *ctx, int b)
{
    test_job *j = ctx;
    log_line(j, "release boundary %d\n", b);
    return layer_cache_remove(j->cache, b);
}

/* The test calibration; also used by the cmocka tests as the reference. */
static int compute_layer_result(const test_job *j, int layer, double *sums, double *loss,
                                double *read_s)
{
    float *x = NULL, *t = NULL;
    layer_cache_header h;
    double t0 = progress_monotonic_seconds();
    if (layer_cache_read(j->cache, layer, j->fingerprint, &x, &h) != FQ_OK ||
        layer_cache_read(j->cache, layer + 1, j->fingerprint, &t, &h) != FQ_OK) {
        free(x);
        return FQ_ERR;
    }
    *read_s = progress_monotonic_seconds() - t0;
    size_t rows = (size_t)j->n * j->s, d = (size_t)j->d;
    double sq = 0;
    memset(sums, 0, d * sizeof *sums);
    for (size_t r = 0; r < rows; r++)
        for (size_t k = 0; k < d; k++) {
            double e = tanh((double)x[r * d + k]) * (layer + 1) - (double)t[r * d + k];
            sums[k] += e;
            sq += e * e;
        }
    *loss = sq / (double)(rows * d);
    free(x);
    free(t);
    return FQ_OK;
}

static int run_test_layer(void *ctx, layer_task *task)
{
    test_job *j = ctx;
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    log_line(j, "run layer %d rank %d\n", task->layer, rank);
    if (task->layer == j->hang_layer) {
        char p[4200];
        snprintf(p, sizeof p, "%s.hang.pid", j->log);
        FILE *f = fopen(p, "w");
        if (f) {
            fprintf(f, "%ld\n", (long)getpid());
            fclose(f);
        }
        for (int i = 0; i < 1200; i++) { /* alive (heartbeating) until killed */
            task->report(task, i, 1200, 1.0);
            nap_ms(50);
        }
    }
    double *sums = fq_calloc((size_t)j->d, sizeof *sums, "layer result");
    double loss = 0;
    if (!sums || compute_layer_result(j, task->layer, sums, &loss, &task->cache_read_s) != FQ_OK) {
        free(sums);
        return FQ_ERR;
    }
    for (int step = 0; step < 4; step++) {
        task->report(task, step, 4, loss * (4 - step));
        nap_ms(j->layer_ms / 4);
    }
    size_t n = 16 + (size_t)j->d * sizeof *sums;
    unsigned char *blob = fq_malloc(n, "result blob");
    int rc = FQ_ERR;
    if (blob) {
        memset(blob, 0, 16);
        memcpy(blob, "FQTESTRS", 8);
        memcpy(blob + 8, &task->layer, sizeof task->layer);
        memcpy(blob + 16, sums, (size_t)j->d * sizeof *sums);
        rc = result_file_commit(task->result_path, blob, n);
    }
    task->loss = loss;
    free(blob);
    free(sums);
    return rc;
}

static const char *model_fp = "9999999999999999999999999999999999999999999999999999999999999999";

/* Rank 0's checks before any rank starts: the output directory belongs to this job. */
static int prepare(test_job *j, const char *recipe_fp)
{
    if (job_fingerprint_check(j->out, recipe_fp, model_fp) != FQ_OK)
        return FQ_ERR;
    job_fingerprint_combine(recipe_fp, model_fp, j->fingerprint);
    return FQ_OK;
}

/* OUT/final.bin = every layer's result in order: the bytes the scripts compare. */
static int gather(const test_job *j)
{
    char path[4200], final[4200];
    snprintf(final, sizeof final, "%s/final.bin", j->out);
    FILE *o = fopen(final, "wb");
    if (!o)
        return fq_error("%s: cannot create", final);
    for (int l = 0; l < j->nlayers; l++) {
        char *data;
        size_t n;
        layer_result_path(j->out, l, path, sizeof path);
        if (fq_read_file(path, &data, &n) != FQ_OK) {
            fclose(o);
            return FQ_ERR;
        }
        fwrite(data, 1, n, o);
        free(data);
    }
    return fclose(o) == 0 ? FQ_OK : fq_error("%s: write failed", final);
}

static int run_job(test_job *j, MPI_Comm comm, double heartbeat, int trim, scheduler_report *rep)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (rank != 0) {
        worker_config wc = {.comm = comm, .outdir = j->out, .run_layer = run_test_layer,
                            .run_ctx = j, .device = "cpu", .wait_retry_s = 0.02,
                            .report_every_s = 0.2};
        worker_stats ws;
        return worker_loop(&wc, &ws);
    }
    progress prog;
    progress_init(&prog, stdout, j->nlayers, 0, -1);
    scheduler_config sc = {.comm = comm, .nlayers = j->nlayers, .outdir = j->out,
                           .produce_next_boundary = produce_boundary, .produce_ctx = j,
                           .flush_boundaries = j->pipelined ? flush_boundaries : NULL,
                           .release_boundary = trim ? release_boundary : NULL,
                           .release_ctx = j, .run_layer = run_test_layer, .run_ctx = j,
                           .device = "cpu", .heartbeat_timeout_s = heartbeat,
                           .announce_on_sigterm = 1, .progress = &prog};
    if (scheduler_run(&sc, rep) != FQ_OK)
        return FQ_ERR;
    return gather(j);
}

/* ---- mode 1: driver under mpirun ---- */

static int driver(int argc, char **argv)
{
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    test_job j = {.cache = argv[2], .out = argv[3], .log = argv[4], .nlayers = 6, .n = 4,
                  .s = 8, .d = 16, .hang_layer = -1, .layer_ms = 100,
                  .dtype = LAYER_CACHE_BF16};
    const char *recipe = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    double heartbeat = 600;
    int trim = 0;
    for (int i = 5; i < argc; i++) {
        if (!strcmp(argv[i], "--layers") && i + 1 < argc)
            j.nlayers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--hang-layer") && i + 1 < argc)
            j.hang_layer = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--layer-ms") && i + 1 < argc)
            j.layer_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--recipe") && i + 1 < argc)
            recipe = argv[++i];
        else if (!strcmp(argv[i], "--heartbeat") && i + 1 < argc)
            heartbeat = atof(argv[++i]);
        else if (!strcmp(argv[i], "--trim"))
            trim = 1;
        else if (!strcmp(argv[i], "--pipelined"))
            j.pipelined = 1;
        else {
            if (rank == 0)
                fprintf(stderr, "test_scheduler_mpi: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    /* Rank 0 decides whether the job may start; everyone learns it before any work. */
    int ok = 1;
    if (rank == 0 && prepare(&j, recipe) != FQ_OK) {
        fprintf(stderr, "flatq: %s\n", fq_errmsg());
        ok = 0;
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Bcast(j.fingerprint, 65, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (!ok)
        return 1;
    scheduler_report rep = {0};
    if (run_job(&j, MPI_COMM_WORLD, heartbeat, trim, &rep) != FQ_OK) {
        fprintf(stderr, "flatq: %s\n", fq_errmsg());
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1); /* workers may be mid-layer: end them all now */
        return 1;
    }
    if (rank == 0) {
        printf("job done: %d layers run, %d skipped (verified), %d boundaries produced\n",
               rep.layers_run, rep.layers_skipped, rep.boundaries_produced);
        for (int r = 0; r < rep.nranks; r++) {
            const worker_stats *w = &rep.workers[r];
            printf("stats rank %d host %s device %s layers %d busy %.2fs idle %.2fs cache "
                   "%.3fs\n",
                   w->rank, w->host, w->device, w->layers, w->busy_s, w->idle_s,
                   w->cache_read_s);
        }
        free(rep.workers);
    }
    return 0;
}

/* ---- mode 2: cmocka tests on one rank ---- */

typedef struct {
    char root[64], cache[128], out[128], log[128];
    test_job j;
} fixture;

static const char *recipe_a = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    strcpy(f->root, "/tmp/fq_sched_test.XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    snprintf(f->cache, sizeof f->cache, "%s/cache", f->root);
    snprintf(f->out, sizeof f->out, "%s/out", f->root);
    snprintf(f->log, sizeof f->log, "%s/log", f->root);
    mkdir(f->cache, 0755);
    f->j = (test_job){.cache = f->cache, .out = f->out, .log = f->log, .nlayers = 5, .n = 3,
                      .s = 4, .d = 8, .hang_layer = -1, .layer_ms = 0,
                      .dtype = LAYER_CACHE_F32};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->root);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

static int count_in_log(const fixture *f, const char *what)
{
    char *text;
    size_t n;
    if (fq_read_file(f->log, &text, &n) != FQ_OK)
        return 0;
    int c = 0;
    for (char *p = text; (p = strstr(p, what)); p++)
        c++;
    free(text);
    return c;
}

static void run_once(fixture *f, int trim, scheduler_report *rep)
{
    unlink(f->log);
    assert_int_equal(prepare(&f->j, recipe_a), FQ_OK);
    int rc = run_job(&f->j, MPI_COMM_SELF, 600, trim, rep);
    if (rc != FQ_OK)
        fail_msg("%s", fq_errmsg());
}

static void test_one_rank_results_match_direct_computation(void **state)
{
    fixture *f = *state;
    scheduler_report rep;
    run_once(f, 0, &rep);
    assert_int_equal(rep.layers_run, 5);
    assert_int_equal(rep.boundaries_produced, 6);
    assert_int_equal(rep.workers[0].layers, 5);
    free(rep.workers);
    for (int l = 0; l < 5; l++) {
        double sums[8], loss, rs;
        assert_int_equal(compute_layer_result(&f->j, l, sums, &loss, &rs), FQ_OK);
        char path[4200];
        char *data;
        size_t n;
        layer_result_path(f->out, l, path, sizeof path);
        assert_int_equal(fq_read_file(path, &data, &n), FQ_OK);
        assert_int_equal(n, 16 + sizeof sums);
        assert_memory_equal(data + 16, sums, sizeof sums);
        free(data);
        assert_int_equal(layer_result_verified(f->out, l), 1);
    }
}

static void test_resume_skips_verified_and_redoes_corrupted(void **state)
{
    fixture *f = *state;
    scheduler_report rep;
    run_once(f, 0, &rep);
    free(rep.workers);
    char final_a[4200], *a, *b;
    size_t na, nb;
    snprintf(final_a, sizeof final_a, "%s/final.bin", f->out);
    assert_int_equal(fq_read_file(final_a, &a, &na), FQ_OK);
    /* corrupt layer 3's result and boundary 1 of the cache */
    char p[4200];
    layer_result_path(f->out, 3, p, sizeof p);
    FILE *fp = fopen(p, "r+b");
    fseek(fp, 20, SEEK_SET);
    fputc('!', fp);
    fclose(fp);
    layer_cache_path(f->cache, 1, p, sizeof p);
    fp = fopen(p, "r+b");
    fseek(fp, -3, SEEK_END);
    fputc('!', fp);
    fclose(fp);
    run_once(f, 0, &rep);
    assert_int_equal(rep.layers_skipped, 4);
    assert_int_equal(rep.layers_run, 1);
    assert_int_equal(rep.boundaries_produced, 5); /* only up to boundary 4 (layer 3's target) */
    free(rep.workers);
    assert_int_equal(count_in_log(f, "run layer"), 1);
    assert_int_equal(count_in_log(f, "run layer 3 "), 1);
    assert_int_equal(count_in_log(f, "build boundary 1\n"), 1);
    assert_int_equal(count_in_log(f, "reuse boundary"), 4);
    assert_int_equal(fq_read_file(final_a, &b, &nb), FQ_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    free(a);
    free(b);
    /* everything verified: nothing to do, no boundary produced */
    run_once(f, 0, &rep);
    assert_int_equal(rep.layers_run, 0);
    assert_int_equal(rep.boundaries_produced, 0);
    free(rep.workers);
    /* a different recipe is refused */
    const char *recipe_b = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    assert_int_equal(prepare(&f->j, recipe_b), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "different recipe"));
}

static void test_trim_releases_each_boundary_once_when_unneeded(void **state)
{
    fixture *f = *state;
    scheduler_report rep;
    run_once(f, 1, &rep);
    free(rep.workers);
    /* every boundary released exactly once, and after the layers that read it ran */
    char *text;
    size_t n;
    assert_int_equal(fq_read_file(f->log, &text, &n), FQ_OK);
    for (int b = 0; b <= 5; b++) {
        char rel[64], run_before[64], run_after[64];
        snprintf(rel, sizeof rel, "release boundary %d\n", b);
        assert_int_equal(count_in_log(f, rel), 1);
        char *at = strstr(text, rel);
        if (b >= 1) {
            snprintf(run_before, sizeof run_before, "run layer %d ", b - 1);
            assert_true(strstr(text, run_before) < at);
        }
        if (b < 5) {
            snprintf(run_after, sizeof run_after, "run layer %d ", b);
            assert_true(strstr(text, run_after) < at);
        }
    }
    free(text);
    for (int b = 0; b <= 5; b++) {
        char p[4200];
        layer_cache_path(f->cache, b, p, sizeof p);
        assert_int_equal(access(p, F_OK), -1);
    }
}

/* Under ASan, Open MPI's allocations kept until exit are suppressed by library name in
 * tests/lsan.supp; the fast unwinder loses those frames (no frame pointers in the
 * Debian builds), so leak stacks are taken with the slow, exact one. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "fast_unwind_on_malloc=0"; }

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rc;
    if (argc >= 5 && strcmp(argv[1], "--job") == 0) {
        rc = driver(argc, argv);
    } else if (argc > 1) {
        fprintf(stderr, "usage: test_scheduler_mpi [--job CACHE OUT LOG [--layers N] "
                        "[--hang-layer L] [--layer-ms MS] [--recipe HEX] [--heartbeat S] "
                        "[--trim]]\n");
        rc = 2;
    } else {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_one_rank_results_match_direct_computation,
                                            setup, teardown),
            cmocka_unit_test_setup_teardown(test_resume_skips_verified_and_redoes_corrupted,
                                            setup, teardown),
            cmocka_unit_test_setup_teardown(test_trim_releases_each_boundary_once_when_unneeded,
                                            setup, teardown),
        };
        rc = cmocka_run_group_tests(tests, NULL, NULL);
    }
    MPI_Finalize();
    return rc;
}
