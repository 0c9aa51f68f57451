/* eval_model.h — open "a model to score" for any evaluation method, behind one interface.
 *
 * fp: the checkpoint as it is. rtn/quarot/smoothrot without a checkpoint: built in memory
 * from the FP model (baselines need no calibration). A quantized checkpoint directory
 * (written by `flatq calibrate`): loaded as it is. Every kind then scores windows through
 * the same perplexity protocol.
 */
#ifndef FQ_EVAL_MODEL_H
#define FQ_EVAL_MODEL_H

#include "job.h"
#include "llama_model.h"
#include "perplexity.h"
#include "qmodel.h"

typedef struct {
    int quantized;
    llama_model fp;
    llama_runner fr;
    qmodel qm;
    qmodel_runner qr;
    int vocab;
} eval_model;

/* The job's quantization settings as the quantized forward needs them. */
void qconfig_from_job(const job *j, job_method method, qconfig *qc);

/* dir holds an FP checkpoint (method FP, RTN, ...) or a quantized one (any method: then
 * its quantization_config rules and `method` must be JOB_METHOD_COUNT meaning "as saved"). */
/* j (may be NULL) supplies the baselines' options and, for smoothrot, the calibration
 * windows its statistics come from. */
int eval_model_open(eval_model *e, const char *dir, job_method method, const qconfig *qc,
                    const job *j, int seqlen);
int eval_model_ppl(eval_model *e, const int32_t *ids, size_t n, int seqlen, size_t max_windows,
                   ppl_result *out);
void eval_model_close(eval_model *e);

#endif
