/* worker_loop.c — REQUEST / TASK / DONE loop of a worker rank (worker_loop.h). */
#include "worker/worker_loop.h"
#include "coordinator/layer_result.h"
#include "coordinator/progress.h"
#include "error.h"
#include "worker/sched_protocol.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct {
    MPI_Comm comm;
    double every_s, last_sent;
} report_state;

static int mpi_check(int rc, const char *what)
{
    if (rc == MPI_SUCCESS)
        return FQ_OK;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return fq_error("worker: %s failed (%s)", what, msg);
}

static void send_progress(layer_task *task, int step, int nsteps, double loss)
{
    report_state *rs = task->report_ctx;
    double now = progress_monotonic_seconds();
    if (now - rs->last_sent < rs->every_s)
        return;
    rs->last_sent = now;
    sched_progress m = {.layer = task->layer, .step = step, .nsteps = nsteps, .loss = loss};
    /* A lost heartbeat only delays progress; the DONE message carries the outcome. */
    MPI_Send(&m, sizeof m, MPI_BYTE, 0, SCHED_TAG_PROGRESS, rs->comm);
}

static void sleep_seconds(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

int worker_loop(const worker_config *cfg, worker_stats *stats)
{
    if (!cfg || !cfg->run_layer || !cfg->outdir || !stats)
        return fq_error("worker_loop: missing run_layer, output directory or stats");
    int rank;
    MPI_Comm_rank(cfg->comm, &rank);
    memset(stats, 0, sizeof *stats);
    stats->rank = rank;
    MPI_Comm_set_errhandler(cfg->comm, MPI_ERRORS_RETURN);
    sched_identity me = {{0}, {0}};
    int len = 0;
    char name[MPI_MAX_PROCESSOR_NAME];
    MPI_Get_processor_name(name, &len);
    snprintf(me.host, sizeof me.host, "%.63s", name);
    snprintf(me.device, sizeof me.device, "%.63s", cfg->device ? cfg->device : "cpu");
    memcpy(stats->host, me.host, sizeof me.host);
    memcpy(stats->device, me.device, sizeof me.device);
    if (mpi_check(MPI_Gather(&me, sizeof me, MPI_BYTE, NULL, 0, MPI_BYTE, 0, cfg->comm),
                  "gather of identities") != FQ_OK)
        return FQ_ERR;
    double retry = cfg->wait_retry_s > 0 ? cfg->wait_retry_s : 0.05;
    report_state rs = {cfg->comm, cfg->report_every_s > 0 ? cfg->report_every_s : 1.0, 0};
    for (;;) {
        double t_ask = progress_monotonic_seconds();
        int dummy = 0;
        sched_reply r;
        if (mpi_check(MPI_Send(&dummy, 1, MPI_INT, 0, SCHED_TAG_REQUEST, cfg->comm),
                      "request") != FQ_OK ||
            mpi_check(MPI_Recv(&r, sizeof r, MPI_BYTE, 0, SCHED_TAG_REPLY, cfg->comm,
                               MPI_STATUS_IGNORE),
                      "receive reply") != FQ_OK)
            return FQ_ERR;
        if (r.kind == SCHED_REPLY_WAIT)
            sleep_seconds(retry);
        stats->idle_s += progress_monotonic_seconds() - t_ask;
        if (r.kind == SCHED_REPLY_STOP)
            return mpi_check(MPI_Send(stats, sizeof *stats, MPI_BYTE, 0, SCHED_TAG_STATS,
                                      cfg->comm),
                             "send stats");
        if (r.kind != SCHED_REPLY_TASK)
            continue;
        layer_task task = {.layer = r.layer, .outdir = cfg->outdir, .loss = NAN,
                           .report = send_progress, .report_ctx = &rs};
        double t0 = progress_monotonic_seconds();
        int rc = layer_result_path(cfg->outdir, r.layer, task.result_path,
                                   sizeof task.result_path);
        if (rc == FQ_OK)
            rc = cfg->run_layer(cfg->run_ctx, &task);
        sched_done done = {.layer = r.layer, .loss = task.loss,
                           .cache_read_s = task.cache_read_s};
        if (rc == FQ_OK)
            rc = file_sha256_hex(task.result_path, done.sha256);
        double dt = progress_monotonic_seconds() - t0;
        stats->busy_s += dt;
        stats->cache_read_s += task.cache_read_s;
        if (rc != FQ_OK) {
            sched_fail f = {.layer = r.layer};
            snprintf(f.message, sizeof f.message, "%.511s", fq_errmsg());
            /* The coordinator ends the job on FAIL; this rank stops here too. */
            MPI_Send(&f, sizeof f, MPI_BYTE, 0, SCHED_TAG_FAIL, cfg->comm);
            return fq_error("worker rank %d: layer %d failed: %s", rank, r.layer, f.message);
        }
        stats->layers++;
        done.seconds = dt;
        if (mpi_check(MPI_Send(&done, sizeof done, MPI_BYTE, 0, SCHED_TAG_DONE, cfg->comm),
                      "send done") != FQ_OK)
            return FQ_ERR;
    }
}
