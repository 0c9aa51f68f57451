/* scheduler.c — the coordinator's dispatch loop (design in scheduler.h). */
#include "coordinator/scheduler.h"
#include "coordinator/layer_result.h"
#include "error.h"
#include "worker/sched_protocol.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { LAYER_PENDING = 0, LAYER_RUNNING = 1, LAYER_DONE = 2 };

typedef struct {
    const scheduler_config *cfg;
    int nranks;
    sched_identity *who;   /* per rank */
    int *busy_layer;       /* per rank: layer in flight or -1 */
    double *last_heard;    /* per rank */
    double *task_start;    /* per rank */
    int *stopped;          /* per rank: STOP sent */
    int *stats_in;         /* per rank: STATS received */
    unsigned char *state;  /* per layer */
    unsigned char *released; /* per boundary */
    int produced;          /* boundaries 0..produced-1 exist */
    int need_boundaries;   /* produce up to this many */
    int ndone;
    scheduler_report *rep;
} sched;

/* The line the SIGTERM handler writes: rebuilt at every event, read in the handler. */
static char sigterm_line[2048];
static volatile sig_atomic_t sigterm_line_len;

static void on_sigterm(int sig)
{
    if (sigterm_line_len > 0) {
        ssize_t w = write(2, sigterm_line, (size_t)sigterm_line_len);
        (void)w;
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void update_sigterm_line(const sched *s)
{
    char buf[sizeof sigterm_line];
    int n = snprintf(buf, sizeof buf,
                     "flatq: the job was stopped by a signal (mpirun does this when a rank "
                     "dies; see its message for which); in flight:");
    int any = 0;
    for (int r = 0; r < s->nranks && n > 0 && (size_t)n < sizeof buf - 200; r++)
        if (s->busy_layer[r] >= 0) {
            n += snprintf(buf + n, sizeof buf - (size_t)n, "%s layer %d on rank %d (host %s)",
                          any ? "," : "", s->busy_layer[r], r, s->who[r].host);
            any = 1;
        }
    if (n > 0 && (size_t)n < sizeof buf - 200)
        n += snprintf(buf + n, sizeof buf - (size_t)n,
                      "%s; %d of %d layers finished and kept in %s; rerun the same command "
                      "to resume\n",
                      any ? "" : " nothing", s->ndone, s->cfg->nlayers, s->cfg->outdir);
    if (n <= 0 || (size_t)n >= sizeof buf)
        n = snprintf(buf, sizeof buf, "flatq: job stopped by a signal; rerun to resume\n");
    sigterm_line_len = 0;
    memcpy(sigterm_line, buf, (size_t)n);
    sigterm_line_len = n;
}

static int mpi_check(int rc, const char *what)
{
    if (rc == MPI_SUCCESS)
        return FQ_OK;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return fq_error("coordinator: %s failed (%s)", what, msg);
}

static int layer_ready(const sched *s, int layer) { return s->produced >= layer + 2; }

/* The next layer to hand out: ready, pending, costliest first, then lowest index. */
static int pick_layer(const sched *s)
{
    int best = -1;
    double best_cost = 0;
    for (int l = 0; l < s->cfg->nlayers; l++) {
        if (s->state[l] != LAYER_PENDING || !layer_ready(s, l))
            continue;
        double c = s->cfg->layer_cost ? s->cfg->layer_cost(s->cfg->cost_ctx, l) : 0;
        if (best < 0 || c > best_cost) {
            best = l;
            best_cost = c;
        }
    }
    return best;
}

static int any_pending(const sched *s)
{
    for (int l = 0; l < s->cfg->nlayers; l++)
        if (s->state[l] == LAYER_PENDING)
            return 1;
    return 0;
}

/* Release boundaries that no pending or running layer reads and the FP pass is past. */
static int release_unneeded(sched *s)
{
    if (!s->cfg->release_boundary)
        return FQ_OK;
    for (int b = 0; b <= s->cfg->nlayers; b++) {
        if (s->released[b] || b >= s->produced)
            continue;
        int fp_pass_past = b + 1 < s->produced || s->produced >= s->need_boundaries;
        int reader_left = (b >= 1 && s->state[b - 1] != LAYER_DONE) ||
                          (b < s->cfg->nlayers && s->state[b] != LAYER_DONE);
        if (!fp_pass_past || reader_left)
            continue;
        if (s->cfg->release_boundary(s->cfg->release_ctx, b) != FQ_OK)
            return fq_error_wrap("coordinator: releasing boundary %d", b);
        s->released[b] = 1;
    }
    return FQ_OK;
}

static int finish_layer(sched *s, int rank, const sched_done *d)
{
    char path[4096], have[65];
    int layer = d->layer;
    if (layer_result_path(s->cfg->outdir, layer, path, sizeof path) != FQ_OK)
        return FQ_ERR;
    if (file_sha256_hex(path, have) != FQ_OK)
        return fq_error_wrap("coordinator: layer %d from rank %d (host %s)", layer, rank,
                             s->who[rank].host);
    if (strncmp(have, d->sha256, 64) != 0)
        return fq_error("%s: checksum %.12s… differs from the %.12s… rank %d (host %s) "
                        "reported (expected the output directory to be shared by all ranks)",
                        path, have, d->sha256, rank, s->who[rank].host);
    if (layer_result_mark_done(s->cfg->outdir, layer, have) != FQ_OK)
        return FQ_ERR;
    s->state[layer] = LAYER_DONE;
    s->ndone++;
    s->rep->layers_run++;
    s->busy_layer[rank] = -1;
    if (s->cfg->progress)
        progress_layer_done(s->cfg->progress, layer, rank, s->who[rank].host, d->seconds,
                            d->loss);
    update_sigterm_line(s);
    return release_unneeded(s);
}

static int reply(sched *s, int rank, int kind, int layer)
{
    sched_reply r = {kind, layer};
    return mpi_check(MPI_Send(&r, sizeof r, MPI_BYTE, rank, SCHED_TAG_REPLY, s->cfg->comm),
                     "reply to a worker");
}

static int handle_request(sched *s, int rank)
{
    int layer = pick_layer(s);
    if (layer >= 0) {
        s->state[layer] = LAYER_RUNNING;
        s->busy_layer[rank] = layer;
        s->task_start[rank] = progress_monotonic_seconds();
        if (s->cfg->progress)
            progress_layer_started(s->cfg->progress, layer, rank, s->who[rank].host);
        update_sigterm_line(s);
        return reply(s, rank, SCHED_REPLY_TASK, layer);
    }
    if (!any_pending(s)) {
        s->stopped[rank] = 1;
        return reply(s, rank, SCHED_REPLY_STOP, -1);
    }
    return reply(s, rank, SCHED_REPLY_WAIT, -1);
}

/* Receive one message that Iprobe found and act on it. */
static int handle_message(sched *s, const MPI_Status *st)
{
    int rank = st->MPI_SOURCE;
    MPI_Comm comm = s->cfg->comm;
    s->last_heard[rank] = progress_monotonic_seconds();
    switch (st->MPI_TAG) {
    case SCHED_TAG_REQUEST: {
        int dummy;
        if (mpi_check(MPI_Recv(&dummy, 1, MPI_INT, rank, st->MPI_TAG, comm, MPI_STATUS_IGNORE),
                      "receive request") != FQ_OK)
            return FQ_ERR;
        return handle_request(s, rank);
    }
    case SCHED_TAG_PROGRESS: {
        sched_progress m;
        if (mpi_check(MPI_Recv(&m, sizeof m, MPI_BYTE, rank, st->MPI_TAG, comm,
                               MPI_STATUS_IGNORE),
                      "receive progress") != FQ_OK)
            return FQ_ERR;
        if (s->cfg->progress)
            progress_layer_loss(s->cfg->progress, m.layer, m.step, m.nsteps, m.loss);
        return FQ_OK;
    }
    case SCHED_TAG_DONE: {
        sched_done d;
        if (mpi_check(MPI_Recv(&d, sizeof d, MPI_BYTE, rank, st->MPI_TAG, comm,
                               MPI_STATUS_IGNORE),
                      "receive result") != FQ_OK)
            return FQ_ERR;
        d.sha256[64] = '\0';
        if (d.layer != s->busy_layer[rank])
            return fq_error("coordinator: rank %d reported layer %d but was given layer %d",
                            rank, d.layer, s->busy_layer[rank]);
        return finish_layer(s, rank, &d);
    }
    case SCHED_TAG_FAIL: {
        sched_fail f;
        if (mpi_check(MPI_Recv(&f, sizeof f, MPI_BYTE, rank, st->MPI_TAG, comm,
                               MPI_STATUS_IGNORE),
                      "receive failure") != FQ_OK)
            return FQ_ERR;
        f.message[sizeof f.message - 1] = '\0';
        return fq_error("worker rank %d (host %s) failed on layer %d: %s; %d of %d layers "
                        "finished and kept in %s; rerun the same command to resume",
                        rank, s->who[rank].host, f.layer, f.message, s->ndone,
                        s->cfg->nlayers, s->cfg->outdir);
    }
    case SCHED_TAG_STATS: {
        worker_stats w;
        if (mpi_check(MPI_Recv(&w, sizeof w, MPI_BYTE, rank, st->MPI_TAG, comm,
                               MPI_STATUS_IGNORE),
                      "receive stats") != FQ_OK)
            return FQ_ERR;
        w.host[sizeof w.host - 1] = w.device[sizeof w.device - 1] = '\0';
        s->rep->workers[rank] = w;
        s->stats_in[rank] = 1;
        return FQ_OK;
    }
    default:
        return fq_error("coordinator: unexpected message tag %d from rank %d", st->MPI_TAG,
                        rank);
    }
}

/* Receive everything already waiting. */
static int drain(sched *s)
{
    for (;;) {
        int flag = 0;
        MPI_Status st;
        if (mpi_check(MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, s->cfg->comm, &flag, &st),
                      "probe for messages") != FQ_OK)
            return FQ_ERR;
        if (!flag)
            return FQ_OK;
        if (handle_message(s, &st) != FQ_OK)
            return FQ_ERR;
    }
}

/* A worker that owes us something (a result, or its stats after STOP) and has been
 * silent for longer than the timeout is dead. Called right after drain(), so time the
 * coordinator spent in the FP pass never counts against a worker. */
static int check_heartbeats(sched *s)
{
    double now = progress_monotonic_seconds(), limit = s->cfg->heartbeat_timeout_s;
    if (limit <= 0)
        limit = 600;
    for (int r = 1; r < s->nranks; r++) {
        int owes = s->busy_layer[r] >= 0 || (s->stopped[r] && !s->stats_in[r]);
        if (!owes || now - s->last_heard[r] <= limit)
            continue;
        if (s->busy_layer[r] >= 0)
            return fq_error("worker rank %d (host %s) died while calibrating layer %d (silent "
                            "for %.0f s); %d of %d layers finished and kept in %s; rerun the "
                            "same command to resume",
                            r, s->who[r].host, s->busy_layer[r], now - s->last_heard[r],
                            s->ndone, s->cfg->nlayers, s->cfg->outdir);
        return fq_error("worker rank %d (host %s) died after its last layer (silent for %.0f "
                        "s); all %d layers are finished in %s",
                        r, s->who[r].host, now - s->last_heard[r], s->cfg->nlayers,
                        s->cfg->outdir);
    }
    return FQ_OK;
}

static int produce_one(sched *s)
{
    int b = s->produced;
    if (s->cfg->produce_next_boundary(s->cfg->produce_ctx, b) != FQ_OK ||
        (s->cfg->flush_boundaries && s->cfg->flush_boundaries(s->cfg->produce_ctx) != FQ_OK))
        return fq_error_wrap("coordinator: FP pass, boundary %d", b);
    s->produced++;
    s->rep->boundaries_produced++;
    return release_unneeded(s);
}

static void local_report(layer_task *task, int step, int nsteps, double loss)
{
    progress *p = task->report_ctx;
    if (p)
        progress_layer_loss(p, task->layer, step, nsteps, loss);
}

/* One rank: produce a boundary, then run every layer it made ready. */
static int run_alone(sched *s)
{
    while (s->ndone < s->cfg->nlayers) {
        if (s->produced < s->need_boundaries && produce_one(s) != FQ_OK)
            return FQ_ERR;
        int layer;
        while ((layer = pick_layer(s)) >= 0) {
            s->state[layer] = LAYER_RUNNING;
            s->busy_layer[0] = layer;
            update_sigterm_line(s);
            if (s->cfg->progress)
                progress_layer_started(s->cfg->progress, layer, 0, s->who[0].host);
            layer_task task = {.layer = layer, .outdir = s->cfg->outdir, .loss = NAN,
                               .report = local_report, .report_ctx = s->cfg->progress};
            sched_done d = {.layer = layer};
            double t0 = progress_monotonic_seconds();
            if (layer_result_path(s->cfg->outdir, layer, task.result_path,
                                  sizeof task.result_path) != FQ_OK ||
                s->cfg->run_layer(s->cfg->run_ctx, &task) != FQ_OK ||
                file_sha256_hex(task.result_path, d.sha256) != FQ_OK)
                return fq_error_wrap("layer %d (rank 0, host %s); %d of %d layers finished "
                                     "and kept in %s; rerun the same command to resume",
                                     layer, s->who[0].host, s->ndone, s->cfg->nlayers,
                                     s->cfg->outdir);
            d.seconds = progress_monotonic_seconds() - t0;
            d.loss = task.loss;
            worker_stats *w = &s->rep->workers[0];
            w->layers++;
            w->busy_s += d.seconds;
            w->cache_read_s += task.cache_read_s;
            if (finish_layer(s, 0, &d) != FQ_OK)
                return FQ_ERR;
        }
        if (s->produced >= s->need_boundaries && s->ndone < s->cfg->nlayers)
            return fq_error("coordinator: %d layers left but none ready (internal error)",
                            s->cfg->nlayers - s->ndone);
    }
    return FQ_OK;
}

/* With workers, the FP pass runs on a thread of its own: a boundary of a 70B model takes
 * ~14 s on the GPU, and a loop that computed it between two drains left every worker that
 * finished a layer meanwhile waiting that long for its next task (most of an 80-layer job
 * runs beside the FP pass). The thread makes boundaries start..need-1 in order and
 * publishes each through `done`; the main thread counts them in, and makes every MPI call
 * (MPI_THREAD_FUNNELED). A boundary is released only once `done` is past it, so the
 * thread never reads a deleted one. */
typedef struct {
    const scheduler_config *cfg;
    int start, need;
    atomic_int done;   /* boundaries 0..done-1 exist */
    atomic_int failed; /* err holds the FP pass's message */
    atomic_int stop;   /* the main thread is leaving: stop after the current boundary */
    char err[1024];
} fp_thread;

static void *fp_thread_main(void *arg)
{
    fp_thread *f = arg;
    const scheduler_config *c = f->cfg;
    int b = f->start, rc = FQ_OK;
    for (; b < f->need && !atomic_load(&f->stop); b++) {
        if ((rc = c->produce_next_boundary(c->produce_ctx, b)) != FQ_OK)
            break;
        /* with a flush, b may still be in writing: only those before it are complete */
        atomic_store(&f->done, c->flush_boundaries ? b : b + 1);
    }
    /* the last write is waited for on every way out: nothing runs past the scheduler */
    if (c->flush_boundaries && c->flush_boundaries(c->produce_ctx) != FQ_OK && rc == FQ_OK)
        rc = FQ_ERR;
    if (rc != FQ_OK) {
        snprintf(f->err, sizeof f->err, "%s", fq_errmsg());
        atomic_store(&f->failed, 1);
        return NULL;
    }
    atomic_store(&f->done, b);
    return NULL;
}

static int run_with_workers(sched *s)
{
    struct timespec nap = {0, 1000000}; /* 1 ms between probes when idle */
    fp_thread f = {.cfg = s->cfg, .start = s->produced, .need = s->need_boundaries};
    atomic_init(&f.done, s->produced);
    atomic_init(&f.failed, 0);
    atomic_init(&f.stop, 0);
    pthread_t th;
    int running = 0, rc = FQ_OK;
    if (f.start < f.need) {
        if (pthread_create(&th, NULL, fp_thread_main, &f) != 0)
            return fq_error("coordinator: cannot start the FP pass thread");
        running = 1;
    }
    for (;;) {
        int all_stopped = 1;
        for (int r = 1; r < s->nranks; r++)
            all_stopped &= s->stats_in[r];
        if (all_stopped && s->ndone == s->cfg->nlayers)
            break;
        int got = atomic_load(&f.done);
        while (rc == FQ_OK && s->produced < got) {
            s->produced++;
            s->rep->boundaries_produced++;
            rc = release_unneeded(s);
        }
        if (rc == FQ_OK && atomic_load(&f.failed))
            rc = fq_error("coordinator: FP pass, boundary %d: %s", s->produced, f.err);
        if (rc == FQ_OK && (drain(s) != FQ_OK || check_heartbeats(s) != FQ_OK))
            rc = FQ_ERR;
        if (rc != FQ_OK)
            break;
        nanosleep(&nap, NULL);
    }
    if (running) {
        atomic_store(&f.stop, 1);
        pthread_join(th, NULL);
    }
    return rc;
}

int scheduler_run(const scheduler_config *cfg, scheduler_report *rep)
{
    if (!cfg || !rep || !cfg->outdir || !cfg->produce_next_boundary || !cfg->run_layer ||
        cfg->nlayers < 1 || cfg->nlayers > 999)
        return fq_error("scheduler_run: missing callback or output directory, or nlayers "
                        "outside 1..999");
    memset(rep, 0, sizeof *rep);
    sched s = {.cfg = cfg, .rep = rep};
    MPI_Comm_size(cfg->comm, &s.nranks);
    MPI_Comm_set_errhandler(cfg->comm, MPI_ERRORS_RETURN);
    int n = s.nranks, L = cfg->nlayers, rc = FQ_ERR;
    s.who = calloc((size_t)n, sizeof *s.who);
    s.busy_layer = calloc((size_t)n, sizeof *s.busy_layer);
    s.last_heard = calloc((size_t)n, sizeof *s.last_heard);
    s.task_start = calloc((size_t)n, sizeof *s.task_start);
    s.stopped = calloc((size_t)n, sizeof *s.stopped);
    s.stats_in = calloc((size_t)n, sizeof *s.stats_in);
    s.state = calloc((size_t)L, 1);
    s.released = calloc((size_t)L + 1, 1);
    rep->workers = calloc((size_t)n, sizeof *rep->workers);
    rep->nranks = n;
    void (*old_handler)(int) = SIG_DFL;
    int installed = 0;
    if (!s.who || !s.busy_layer || !s.last_heard || !s.task_start || !s.stopped ||
        !s.stats_in || !s.state || !s.released || !rep->workers) {
        fq_error("coordinator: out of memory for %d ranks and %d layers", n, L);
        goto out;
    }
    sched_identity me = {{0}, {0}};
    char name[MPI_MAX_PROCESSOR_NAME];
    int len = 0;
    MPI_Get_processor_name(name, &len);
    snprintf(me.host, sizeof me.host, "%.63s", name);
    snprintf(me.device, sizeof me.device, "%.63s", cfg->device ? cfg->device : "cpu");
    if (mpi_check(MPI_Gather(&me, sizeof me, MPI_BYTE, s.who, sizeof me, MPI_BYTE, 0,
                             cfg->comm),
                  "gather of identities") != FQ_OK)
        goto out;
    double now = progress_monotonic_seconds();
    for (int r = 0; r < n; r++) {
        s.who[r].host[63] = s.who[r].device[63] = '\0';
        s.busy_layer[r] = -1;
        s.last_heard[r] = now;
        rep->workers[r].rank = r;
        memcpy(rep->workers[r].host, s.who[r].host, 64);
        memcpy(rep->workers[r].device, s.who[r].device, 64);
        if (cfg->progress && (r > 0 || n == 1))
            progress_worker(cfg->progress, r, s.who[r].host, s.who[r].device);
    }
    /* Resume: verified layers are done; produce boundaries only up to the last pending. */
    uint8_t *done = calloc((size_t)L, 1);
    if (!done || layer_result_scan(cfg->outdir, L, done, &rep->layers_skipped) != FQ_OK) {
        free(done);
        if (!fq_errmsg()[0])
            fq_error("coordinator: out of memory");
        goto out;
    }
    for (int l = 0; l < L; l++) {
        if (done[l]) {
            s.state[l] = LAYER_DONE;
            s.ndone++;
        } else {
            layer_result_forget(cfg->outdir, l); /* a stale sidecar must not survive */
            s.need_boundaries = l + 2;
        }
    }
    free(done);
    if (cfg->progress) {
        cfg->progress->done = s.ndone;
        if (s.ndone > 0)
            progress_note(cfg->progress, "resuming: %d of %d layers already finished in %s",
                          s.ndone, L, cfg->outdir);
    }
    update_sigterm_line(&s);
    if (cfg->announce_on_sigterm) {
        old_handler = signal(SIGTERM, on_sigterm);
        installed = 1;
    }
    rc = n == 1 ? run_alone(&s) : run_with_workers(&s);
    if (rc == FQ_OK && cfg->progress)
        progress_end(cfg->progress);
out:
    if (installed)
        signal(SIGTERM, old_handler);
    free(s.who);
    free(s.busy_layer);
    free(s.last_heard);
    free(s.task_start);
    free(s.stopped);
    free(s.stats_in);
    free(s.state);
    free(s.released);
    if (rc != FQ_OK) {
        free(rep->workers);
        rep->workers = NULL;
    }
    return rc;
}
