/* scheduler.h — rank 0's side of the calibration job: run the full-precision pass
 * boundary by boundary and hand ready layers to workers as they ask.
 *
 * Layer i is ready once boundaries i and i+1 exist. The coordinator interleaves the
 * FP pass (produce_next_boundary, one boundary per call) with draining worker messages,
 * so workers start on layer 0 while later boundaries are still being computed.
 * Scheduling is dynamic: a worker REQUESTs, gets TASK(layer) — the costliest ready layer
 * when layer_cost says layers differ, else the lowest — or WAIT, or STOP when nothing is
 * left for it. With a single rank the coordinator runs the layers itself, right after
 * the boundaries they need appear.
 *
 * Resume: layers whose result verifies (layer_result.h) are skipped and boundaries past
 * the last pending layer are not produced. Each finished layer is verified (sha256 of the
 * file on disk against the worker's) and recorded before it counts.
 *
 * Failure, decided by what Open MPI 4.1 really does here: when a rank is killed,
 * mpirun's default is to SIGTERM every other rank within a second or two, rank 0
 * included. So rank 0 keeps a one-line summary of the job state (what is in flight on
 * which rank and host, how many layers are safely finished) up to date at every event,
 * and its SIGTERM handler writes that line before dying. When the job runs with
 * `mpirun --enable-recovery` (ranks survive a peer's death) the coordinator itself
 * notices: a busy worker silent for heartbeat_timeout_s is declared dead, and
 * scheduler_run fails with "worker rank R (host H) died while calibrating layer L ...".
 * Either way finished layers are on disk with their sidecars and a rerun resumes.
 * A FAIL from a worker ends the job the same way (fail fast, nothing finished lost).
 */
#ifndef FQ_SCHEDULER_H
#define FQ_SCHEDULER_H

#include <mpi.h>

#include "coordinator/progress.h"
#include "worker/worker_loop.h"

typedef struct {
    MPI_Comm comm;
    int nlayers;
    const char *outdir; /* shared output directory (layer results + sidecars) */
    /* The FP pass: make boundary b (called for b = 0, 1, ... in order, only as far as
     * pending layers need). Reusing a valid cache file is the callback's business. */
    int (*produce_next_boundary)(void *ctx, int boundary);
    void *produce_ctx;
    /* Optional: when set, produce_next_boundary(b) may return while boundary b is still
     * being written (all before it are complete), and this waits for the rest (called
     * with produce_ctx). With workers the FP pass then computes b + 1 while b is written,
     * and b is released to the workers once the next call returns. */
    int (*flush_boundaries)(void *ctx);
    /* Optional: relative cost of a layer, for largest-first dispatch. */
    double (*layer_cost)(void *ctx, int layer);
    void *cost_ctx;
    /* Optional ("delete boundaries no pending layer needs"): called once per boundary
     * when neither layer that reads it is pending and the FP pass has moved past it. */
    int (*release_boundary)(void *ctx, int boundary);
    void *release_ctx;
    /* The layer calibration, used by rank 0 itself when it is the only rank. */
    run_layer_fn run_layer;
    void *run_ctx;
    const char *device;          /* rank 0's device name for the progress lines */
    double heartbeat_timeout_s;  /* silence after which a busy worker is dead (default 600) */
    int announce_on_sigterm;     /* install the SIGTERM state line (1 for real jobs) */
    progress *progress;          /* may be NULL: no output */
} scheduler_config;

typedef struct {
    int nranks;
    worker_stats *workers; /* nranks entries, [0] = rank 0; free() it */
    int layers_skipped;    /* verified results from an earlier run */
    int layers_run;        /* computed by this run */
    int boundaries_produced;
} scheduler_report;

/* Run on rank 0 until every layer is done (FQ_OK) or the job fails (FQ_ERR with a
 * one-line message; the caller should then MPI_Abort, since workers may be busy). */
int scheduler_run(const scheduler_config *cfg, scheduler_report *rep);

#endif
