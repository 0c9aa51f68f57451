/* progress.c — live bar on a terminal, plain event lines elsewhere (progress.h). */
#include "coordinator/progress.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double progress_monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* mpirun hands rank 0 a pseudo-terminal even when its own output goes to a file, so
 * isatty() alone would draw bars into Slurm logs: FLATQ_PROGRESS=bar|plain decides,
 * else a terminal that is not "dumb" outside a Slurm job. */
static int want_bar(FILE *out)
{
    const char *mode = getenv("FLATQ_PROGRESS"), *term = getenv("TERM");
    if (mode && strcmp(mode, "bar") == 0)
        return 1;
    if (mode && strcmp(mode, "plain") == 0)
        return 0;
    return isatty(fileno(out)) && term && *term && strcmp(term, "dumb") != 0 &&
           !getenv("SLURM_JOB_ID");
}

void progress_init(progress *p, FILE *out, int total, int already_done, int tty)
{
    memset(p, 0, sizeof *p);
    p->out = out ? out : stdout;
    p->tty = tty >= 0 ? tty : want_bar(p->out);
    p->total = total;
    p->done = already_done;
    p->clock = progress_monotonic_seconds;
    p->t0 = p->clock();
    p->loss = NAN;
    p->loss_layer = -1;
}

int progress_rate_eta(const progress *p, double *rate, double *eta)
{
    double elapsed = p->clock() - p->t0;
    *rate = 0;
    *eta = 0;
    if (p->done_here <= 0 || elapsed <= 0)
        return 0;
    *rate = p->done_here / elapsed;
    *eta = (p->total - p->done) / *rate;
    return 1;
}

static void format_duration(double s, char *out, size_t cap)
{
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(out, cap, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60)
        snprintf(out, cap, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(out, cap, "%lds", t);
}

/* "3/5 layers, 0.50 layers/min, ETA 4m00s" (rate and ETA only once known). */
static void format_counts(const progress *p, char *out, size_t cap)
{
    double rate, eta;
    char eta_s[32];
    int n = snprintf(out, cap, "%d/%d layers", p->done, p->total);
    if (progress_rate_eta(p, &rate, &eta) && n > 0 && (size_t)n < cap) {
        format_duration(eta, eta_s, sizeof eta_s);
        snprintf(out + n, cap - (size_t)n, ", %.2f layers/min, ETA %s", rate * 60, eta_s);
    }
}

static void draw_bar(progress *p)
{
    enum { WIDTH = 24 };
    char bar[WIDTH + 1], counts[128];
    int filled = p->total > 0 ? p->done * WIDTH / p->total : 0;
    for (int i = 0; i < WIDTH; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[WIDTH] = '\0';
    format_counts(p, counts, sizeof counts);
    fprintf(p->out, "\r[%s] %s", bar, counts);
    if (p->loss_layer >= 0)
        fprintf(p->out, ", loss %.4g (layer %d)", p->loss, p->loss_layer);
    fputs("\x1b[K", p->out);
    fflush(p->out);
}

static void event_line(progress *p, const char *text)
{
    double t = p->clock() - p->t0;
    if (p->tty)
        fputs("\r\x1b[K", p->out);
    fprintf(p->out, "[flatq %7.1fs] %s\n", t, text);
    if (p->tty)
        draw_bar(p);
    fflush(p->out);
}

void progress_worker(progress *p, int rank, const char *host, const char *device)
{
    char line[256];
    snprintf(line, sizeof line, "rank %d on host %s, device %s", rank, host, device);
    event_line(p, line);
}

void progress_layer_started(progress *p, int layer, int rank, const char *host)
{
    char line[256];
    snprintf(line, sizeof line, "layer %d started on rank %d (%s)", layer, rank, host);
    event_line(p, line);
}

void progress_layer_loss(progress *p, int layer, int step, int nsteps, double loss)
{
    (void)step;
    (void)nsteps;
    p->loss = loss;
    p->loss_layer = layer;
    if (p->tty)
        draw_bar(p);
}

void progress_layer_done(progress *p, int layer, int rank, const char *host, double seconds,
                         double loss)
{
    char line[384], counts[128];
    p->done++;
    p->done_here++;
    if (!isnan(loss)) {
        p->loss = loss;
        p->loss_layer = layer;
    }
    format_counts(p, counts, sizeof counts);
    snprintf(line, sizeof line, "layer %d done on rank %d (%s) in %.1fs, loss %.4g; %s", layer,
             rank, host, seconds, loss, counts);
    event_line(p, line);
}

void progress_note(progress *p, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    event_line(p, line);
}

void progress_end(progress *p)
{
    if (p->tty) {
        draw_bar(p);
        fputc('\n', p->out);
    }
    fflush(p->out);
}
