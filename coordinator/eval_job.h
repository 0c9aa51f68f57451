/* eval_job.h — the eval section of a job: every method × every text, one ppl table.
 * Used by `flatq eval JOB.yaml` and at the end of `flatq calibrate`. */
#ifndef FQ_EVAL_JOB_H
#define FQ_EVAL_JOB_H

#include "job.h"

#include <jansson.h>
#include <mpi.h>
#include <stdio.h>

/* Runs the job's eval section; prints a table to `out` as rows finish; *rows receives a
 * JSON array of {method, text, seqlen, ppl, nll, tokens, windows, predicted, seconds}. */
/* mpi: the ranks that run a device-cuda evaluation together (tensor parallelism over
 * them); MPI_COMM_SELF where one rank evaluates alone, as the coordinator of a calibrate
 * job does while its workers have finished. */
int eval_job_run(const job *j, MPI_Comm mpi, FILE *out, json_t **rows);

/* Which directory to score for a method: the job's own method (when the job calibrates)
 * is the calibrated checkpoint in the output dir; fp and the baselines use the model. */
const char *eval_job_model_dir(const job *j, job_method m);

#endif
