/* sched_protocol.h — the messages between the coordinator (rank 0) and the workers.
 *
 * Plain fixed-size structs sent as MPI_BYTE: every rank runs the same binary on the
 * same architecture (one mpirun/srun job), so no marshalling layer is needed.
 *
 *   worker → coordinator: REQUEST, PROGRESS (loss + heartbeat), DONE(layer, sha256),
 *                         FAIL(layer, message), STATS (after STOP)
 *   coordinator → worker: REPLY = TASK(layer) | WAIT | STOP
 * At start every rank takes part in one MPI_Gather of its identity (host, device).
 */
#ifndef FQ_SCHED_PROTOCOL_H
#define FQ_SCHED_PROTOCOL_H

enum {
    SCHED_TAG_REQUEST = 701,
    SCHED_TAG_REPLY,
    SCHED_TAG_PROGRESS,
    SCHED_TAG_DONE,
    SCHED_TAG_FAIL,
    SCHED_TAG_STATS,
};

enum { SCHED_REPLY_TASK = 1, SCHED_REPLY_WAIT = 2, SCHED_REPLY_STOP = 3 };

typedef struct {
    char host[64];
    char device[64];
} sched_identity;

typedef struct {
    int kind;
    int layer;
} sched_reply;

typedef struct {
    int layer;
    int step, nsteps;
    double loss;
} sched_progress;

typedef struct {
    int layer;
    double seconds, loss, cache_read_s;
    char sha256[65];
} sched_done;

typedef struct {
    int layer;
    char message[512];
} sched_fail;

#endif
