/* progress.h — what rank 0 shows while the job runs.
 *
 * On a terminal: one live bar redrawn in place (layers done/total, the current
 * per-layer loss, rate and ETA); events that matter (a worker joined, a layer done, a
 * failure) are printed above it. Elsewhere (Slurm logs, pipes): one plain line per
 * event and no per-step chatter, so a log reads as a history of the job. Rate and ETA
 * count only layers computed in this run, so a resumed job does not look faster than it
 * is. The clock is injectable for tests.
 */
#ifndef FQ_PROGRESS_H
#define FQ_PROGRESS_H

#include <stdio.h>

#include "error.h"

typedef struct progress {
    FILE *out;
    int tty;        /* 1: live bar, 0: plain lines */
    int total;      /* layers in the job */
    int done;       /* layers finished, resumed ones included */
    int done_here;  /* layers finished by this run */
    double t0;      /* clock at init */
    double loss;    /* latest per-layer loss seen (NaN before any) */
    int loss_layer; /* which layer it belongs to (-1 before any) */
    double (*clock)(void);
} progress;

/* tty: 1 or 0 to force, -1 for auto (FLATQ_PROGRESS=bar|plain, else a real terminal
 * outside Slurm). already_done: resumed layers. */
void progress_init(progress *p, FILE *out, int total, int already_done, int tty);
/* A worker joined: rank, host, and its accelerator ("cpu" or the GPU's name). */
void progress_worker(progress *p, int rank, const char *host, const char *device);
void progress_layer_started(progress *p, int layer, int rank, const char *host);
/* An optimizer step's loss; redraws the bar on a tty, prints nothing otherwise. */
void progress_layer_loss(progress *p, int layer, int step, int nsteps, double loss);
void progress_layer_done(progress *p, int layer, int rank, const char *host, double seconds,
                         double loss);
/* Any other event, one line. */
void progress_note(progress *p, const char *fmt, ...) FQ_PRINTF(2, 3);
/* Layers per second over this run and seconds left; 0 when unknown yet. */
int progress_rate_eta(const progress *p, double *rate, double *eta);
/* Finish the bar line (tty) so later output starts on a fresh line. */
void progress_end(progress *p);

double progress_monotonic_seconds(void);

#endif
