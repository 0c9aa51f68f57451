/* fp_pass.h — the full-precision pass of a calibration job, one layer boundary at a time.
 *
 * Boundary 0 is the embeddings of the calibration windows; boundary b+1 is decoder layer
 * b applied to boundary b. Each boundary goes to the activation cache (coordinator/
 * layer_cache.h) and the chain continues from the values as the cache stores them (bf16
 * by default), as the reference does with its fp16 caches: a resumed job that reads a
 * boundary back then computes exactly what an uninterrupted one computed. Only one layer's
 * weights are in memory at a time.
 */
#ifndef FQ_FP_PASS_H
#define FQ_FP_PASS_H

#include "coordinator/layer_cache.h"
#include "llama_model.h"

typedef struct {
    const llama_config *cfg;
    const st_checkpoint *ck;
    const char *cache_dir;
    const char *fingerprint; /* of the calibration data (cache validity) */
    layer_cache_dtype dtype;
    const int32_t *ids;      /* nsamples · seqlen */
    int nsamples, seqlen, batch;
    float *x;                /* the boundary in memory, [nsamples, seqlen, d] */
    int x_boundary;          /* which boundary x holds (−1: none) */
    double seconds;          /* time spent computing (not reading) boundaries */
    double commit_s;         /* time the pass spent committing them (encoding, rounding x,
                              * writing, or waiting for the writer thread) */
    int produced, reused;
    /* 1: fp_pass_commit_boundary hands the cache write to a thread of its own and returns,
     * so the next boundary computes while this one is written (a 70B boundary is ~4 GB,
     * ~5 s to disk: as long as its layer on the GPU); the write of boundary b is then
     * finished by the next commit or by fp_pass_flush. 0: written before commit returns. */
    int async_commit;
    double write_s;          /* time the writer thread spent writing (async_commit) */
    void *writer;            /* its state (fp_pass.c) */
} fp_pass;

int fp_pass_init(fp_pass *p);
void fp_pass_free(fp_pass *p);
/* scheduler callback: make boundary b (b = 0, 1, ... in order). */
int fp_pass_produce(void *ctx, int boundary);

/* The pieces another backend (fp_pass_cuda.h) shares with this one, so both write the
 * same caches: make x hold boundary−1 (reading it from the cache when needed), and write x
 * as `boundary` then round x like the cache stores it (bf16/fp16/fp32). */
int fp_pass_load_input(fp_pass *p, int boundary);
int fp_pass_commit_boundary(fp_pass *p, int boundary);

/* Wait until every committed boundary is in the cache (the writer thread's result; FQ_OK
 * at once without async_commit). ctx: the fp_pass, or (fp_pass_flush_cuda) the
 * fp_pass_cuda whose pass it is — the scheduler's flush_boundaries. */
int fp_pass_flush(void *ctx);

#endif
