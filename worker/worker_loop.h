/* worker_loop.h — a worker rank's life: ask the coordinator for a layer, calibrate it,
 * report, repeat until told to stop.
 *
 * The calibration itself is a function pointer (run_layer) so the job machinery can be
 * built and tested without the FlatQuant math; the real per-layer calibration plugs in
 * through the same layer_task. The worker writes the layer's result file itself (to the
 * shared output directory) and sends only its sha256, so results never travel through
 * MPI and the coordinator can verify exactly what is on disk.
 *
 * Liveness: run_layer calls task->report() every optimizer step or so; each call (rate
 * limited to one message per second) carries the current loss for the progress bar and
 * doubles as the heartbeat by which the coordinator tells a slow worker from a dead one.
 * A run_layer that goes longer than the coordinator's heartbeat timeout without reporting
 * is taken for dead.
 */
#ifndef FQ_WORKER_LOOP_H
#define FQ_WORKER_LOOP_H

#include <mpi.h>

typedef struct layer_task {
    int layer;               /* in: which decoder layer */
    const char *outdir;      /* in: shared output directory */
    char result_path[4096];  /* in: where run_layer must commit its result atomically */
    double loss;             /* out: final loss of the layer (NaN when none) */
    double cache_read_s;     /* out: seconds spent reading the activation cache */
    /* in (never NULL): call during the layer with the step and loss (heartbeat). */
    void (*report)(struct layer_task *task, int step, int nsteps, double loss);
    void *report_ctx;        /* private to the scheduler/worker loop */
} layer_task;

/* Calibrate one layer: read its cache, learn, write task->result_path (e.g. with
 * result_file_commit). FQ_OK or FQ_ERR with fq_error() set. */
typedef int (*run_layer_fn)(void *ctx, layer_task *task);

/* What a worker did, sent to the coordinator at STOP (for the report and bench/). */
typedef struct {
    int rank;
    char host[64];
    char device[64];
    int layers;         /* layers calibrated */
    double busy_s;      /* inside run_layer */
    double idle_s;      /* waiting for work */
    double cache_read_s;
} worker_stats;

typedef struct {
    MPI_Comm comm;
    const char *outdir;
    run_layer_fn run_layer;
    void *run_ctx;
    const char *device;     /* "cpu" or the GPU's name, shown by the coordinator */
    double wait_retry_s;    /* pause after a WAIT before asking again (default 0.05) */
    double report_every_s;  /* least seconds between progress messages (default 1) */
} worker_config;

/* Run on ranks >= 1 until the coordinator says STOP. FQ_ERR on a communication failure
 * (a failed layer is reported to the coordinator, which ends the job). */
int worker_loop(const worker_config *cfg, worker_stats *stats);

#endif
