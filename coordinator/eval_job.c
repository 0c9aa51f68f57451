/* eval_job.c — see eval_job.h. */
#include "coordinator/eval_job.h"
#include "coordinator/eval_model.h"
#include "error.h"
#include "qformat.h"
#include "runtime/gpu_session.h"
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

const char *eval_job_model_dir(const job *j, job_method m)
{
    if (j->calibrate && m == j->quantization.method)
        return j->output;
    return j->model;
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

int eval_job_run(const job *j, MPI_Comm mpi, FILE *out, json_t **rows)
{
    *rows = json_array();
    tokenizer *tok = NULL;
    if (!*rows || tokenizer_load(j->model, &tok) != FQ_OK)
        return FQ_ERR;
    int rc = FQ_OK;
    if (out)
        fprintf(out, "%-10s %-28s %7s %12s %10s %8s\n", "method", "text", "seqlen", "ppl", "nll",
                "windows");
    for (int t = 0; t < j->eval.n_text && rc == FQ_OK; t++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (tokenizer_encode_file(tok, j->eval.text[t], 1, &ids, &n) != FQ_OK) {
            rc = FQ_ERR;
            break;
        }
        for (int k = 0; k < j->eval.n_methods && rc == FQ_OK; k++) {
            job_method m = j->eval.methods[k];
            qconfig qc;
            qconfig_from_job(j, m, &qc);
            eval_model e;
            ppl_result res;
            const char *dir = eval_job_model_dir(j, m);
            qconfig saved;
            /* device cuda: the FP model and a checkpoint on disk run on the GPU runtime;
             * baselines built in memory have nothing to load there and stay on the CPU */
            int on_gpu = j->device == JOB_DEVICE_CUDA &&
                         (m == JOB_METHOD_FP || qconfig_load(dir, &saved) == 1);
            memset(&e, 0, sizeof e);
            if (on_gpu) {
                int nranks = 1; /* MPI is initialised whenever the device is cuda */
                MPI_Comm_size(mpi, &nranks);
                int print;
                if (gpu_ppl(mpi, dir, ids, n, j->eval.seqlen, (size_t)j->eval.max_windows, &res,
                            &print) != FQ_OK) {
                    fq_error_wrap("eval %s on %s (cuda)", job_method_name(m), j->eval.text[t]);
                    if (nranks > 1)
                        rc = FQ_ERR;
                    else {
                        /* one rank: a checkpoint the kernels refuse (a shape they do not
                         * take) is still scored, by the fake-quant CPU forward, loudly */
                        fprintf(stderr, "flatq: note: %s; scoring it on the CPU instead\n",
                                fq_errmsg());
                        on_gpu = 0;
                    }
                }
            }
            if (rc == FQ_OK && !on_gpu &&
                (eval_model_open(&e, dir, m, &qc, j, j->eval.seqlen) != FQ_OK ||
                 eval_model_ppl(&e, ids, n, j->eval.seqlen, (size_t)j->eval.max_windows,
                                &res) != FQ_OK)) {
                fq_error_wrap("eval %s on %s", job_method_name(m), j->eval.text[t]);
                rc = FQ_ERR;
            }
            eval_model_close(&e);
            if (rc != FQ_OK)
                break;
            if (out) {
                fprintf(out, "%-10s %-28s %7d %12.4f %10.6f %8zu\n", job_method_name(m),
                        base_name(j->eval.text[t]), j->eval.seqlen, res.ppl, res.nll, res.windows);
                fflush(out);
            }
            json_array_append_new(
                *rows, json_pack("{s:s, s:s, s:i, s:f, s:f, s:I, s:I, s:I, s:f, s:s}", "method",
                                 job_method_name(m), "text", j->eval.text[t], "seqlen",
                                 j->eval.seqlen, "ppl", res.ppl, "nll", res.nll, "tokens",
                                 (json_int_t)res.tokens, "windows", (json_int_t)res.windows,
                                 "predicted", (json_int_t)res.predicted, "seconds", res.seconds,
                                 "device", on_gpu ? "cuda" : "cpu"));
        }
        free(ids);
    }
    tokenizer_free(tok);
    return rc;
}
