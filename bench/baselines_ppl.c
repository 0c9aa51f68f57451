/* baselines_ppl.c — perplexity of FP, RTN, QuaRot-RTN and smoothrot on one model and text,
 * in one run, with the papers' protocol (core/perplexity.h), at W4A4KV4.
 *
 *   build/bench/baselines_ppl --model DIR --text FILE [--seqlen N] [--max-windows K]
 *                             --calib FILE [--calib-windows C] [--seed S]
 *
 * The smoothrot statistics come from the first C windows of N tokens of the calibration
 * text (consecutive, no sampling). Before the 4-bit runs the 16-bit QuaRot model is
 * compared with the FP model on the first window, so a table is never printed for a
 * rotation that changed the function. Timings are wall-clock per method.
 */
#include "error.h"
#include "llama_model.h"
#include "perplexity.h"
#include "qmodel.h"
#include "tokenizer.h"
#include "worker/baseline_quarot.h"
#include "worker/baseline_rtn.h"
#include "worker/baseline_smoothrot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *model, *text, *calib;
    int seqlen;
    long max_windows, calib_windows;
    unsigned long long seed;
} args;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int parse(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    a->seqlen = 2048;
    a->calib_windows = 8;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--model"))
            a->model = v;
        else if (!strcmp(k, "--text"))
            a->text = v;
        else if (!strcmp(k, "--calib"))
            a->calib = v;
        else if (!strcmp(k, "--seqlen"))
            a->seqlen = atoi(v);
        else if (!strcmp(k, "--max-windows"))
            a->max_windows = atol(v);
        else if (!strcmp(k, "--calib-windows"))
            a->calib_windows = atol(v);
        else if (!strcmp(k, "--seed"))
            a->seed = strtoull(v, NULL, 10);
        else
            return fq_error("baselines_ppl: unknown argument '%s'", k);
    }
    if (argc % 2 == 0)
        return fq_error("baselines_ppl: '%s' needs a value", argv[argc - 1]);
    if (!a->model || !a->text || !a->calib || a->seqlen < 2 || a->calib_windows < 1 ||
        a->max_windows < 0)
        return fq_error("baselines_ppl: --model, --text and --calib are required; --seqlen "
                        ">= 2, --calib-windows >= 1, --max-windows >= 0");
    return FQ_OK;
}

static int score(const int32_t *ids, size_t n, const args *a, int vocab, window_logits_fn fn,
                 void *ctx, ppl_result *r)
{
    return perplexity_eval(ids, n, a->seqlen, vocab, (size_t)a->max_windows, fn, ctx, r);
}

static int score_qmodel(qmodel *m, const int32_t *ids, size_t n, const args *a,
                        ppl_result *r)
{
    qmodel_runner run;
    int rc = qmodel_runner_init(&run, m, a->seqlen);
    if (rc == FQ_OK)
        rc = score(ids, n, a, m->cfg.vocab, qmodel_window_logits, &run, r);
    qmodel_runner_free(&run);
    qmodel_free(m);
    return rc;
}

/* max |Δlogit| / max |logit| of the 16-bit QuaRot model against FP on the first window. */
static int exactness(const llama_model *fp, const int32_t *ids, int s, double *rel)
{
    qconfig qc = {.w_bits = 16, .a_bits = 16, .kv_bits = 16, .tp_blocks = 1};
    quarot_opts o = quarot_opts_default();
    quarot_model q;
    qmodel m;
    llama_runner fr;
    qmodel_runner qr;
    size_t nl = (size_t)s * fp->cfg.vocab;
    real *a = malloc(sizeof(real) * nl), *b = malloc(sizeof(real) * nl);
    int rc = FQ_ERR;
    if (!a || !b || baseline_quarot(fp, &qc, &o, NULL, &q) != FQ_OK)
        goto out;
    rc = quarot_model_to_qmodel(&q, &fp->cfg, &qc, &m);
    quarot_model_free(&q);
    if (rc != FQ_OK)
        goto out;
    rc = FQ_ERR;
    if (llama_runner_init(&fr, fp, s) == FQ_OK && qmodel_runner_init(&qr, &m, s) == FQ_OK &&
        llama_window_logits(&fr, ids, s, a) == FQ_OK &&
        qmodel_window_logits(&qr, ids, s, b) == FQ_OK) {
        double num = 0, den = 0;
        for (size_t i = 0; i < nl; i++) {
            num = fmax(num, fabs((double)a[i] - b[i]));
            den = fmax(den, fabs((double)a[i]));
        }
        *rel = num / den;
        rc = FQ_OK;
    }
    llama_runner_free(&fr);
    qmodel_runner_free(&qr);
    qmodel_free(&m);
out:
    free(a);
    free(b);
    return rc;
}

int main(int argc, char **argv)
{
    args a;
    llama_model fp;
    tokenizer *tok = NULL;
    int32_t *ids = NULL, *cal = NULL;
    size_t n = 0, ncal = 0;
    if (parse(argc, argv, &a) != FQ_OK) {
        fprintf(stderr, "%s\n", fq_errmsg());
        return 2;
    }
    if (llama_model_load(a.model, &fp) != FQ_OK || tokenizer_load(a.model, &tok) != FQ_OK ||
        tokenizer_encode_file(tok, a.text, 1, &ids, &n) != FQ_OK ||
        tokenizer_encode_file(tok, a.calib, 1, &cal, &ncal) != FQ_OK) {
        fprintf(stderr, "baselines_ppl: %s\n", fq_errmsg());
        return 1;
    }
    tokenizer_free(tok);
    if (ncal < (size_t)a.calib_windows * a.seqlen) {
        fprintf(stderr, "baselines_ppl: %s has %zu tokens (expected >= %ld windows of %d)\n",
                a.calib, ncal, a.calib_windows, a.seqlen);
        return 1;
    }
    double rel;
    if (exactness(&fp, ids, a.seqlen, &rel) != FQ_OK) {
        fprintf(stderr, "baselines_ppl: %s\n", fq_errmsg());
        return 1;
    }
    printf("16-bit QuaRot vs FP on window 0: max |Δlogit| / max |logit| = %.2e\n", rel);

    const char *names[4] = {"FP", "RTN", "QuaRot-RTN", "smoothrot"};
    ppl_result res[4];
    double secs[4];
    qconfig qc = {.w_bits = 4, .a_bits = 4, .kv_bits = 4, .tp_blocks = 1};
    quarot_opts o = quarot_opts_default();
    o.seed = a.seed;
    int rc = 1;
    for (int k = 0; k < 4; k++) {
        double t0 = now();
        int st = FQ_ERR;
        qmodel m;
        quarot_model q;
        if (k == 0) {
            llama_runner r;
            if ((st = llama_runner_init(&r, &fp, a.seqlen)) == FQ_OK)
                st = score(ids, n, &a, fp.cfg.vocab, llama_window_logits, &r, &res[k]);
            llama_runner_free(&r);
        } else if (k == 1) {
            qlayer *ls = calloc((size_t)fp.cfg.n_layers, sizeof *ls);
            st = ls ? FQ_OK : FQ_ERR;
            for (int i = 0; st == FQ_OK && i < fp.cfg.n_layers; i++)
                st = baseline_rtn_layer(&fp.layers[i], &fp.cfg, &qc, &ls[i]);
            if (st == FQ_OK && (st = qmodel_from_qlayers(&m, &fp, &qc, ls)) == FQ_OK)
                st = score_qmodel(&m, ids, n, &a, &res[k]);
            for (int i = 0; ls && i < fp.cfg.n_layers; i++)
                qlayer_free(&ls[i]);
            free(ls);
        } else {
            float *mx = NULL;
            if (k == 2)
                st = baseline_quarot(&fp, &qc, &o, NULL, &q);
            else if ((st = smooth_stats_collect(&fp, cal, (size_t)a.calib_windows, a.seqlen,
                                                &mx)) == FQ_OK)
                st = baseline_smoothrot(&fp, &qc, &o, mx, 0.5, &q);
            free(mx);
            char note[300];
            if (st == FQ_OK && k == 2 && quarot_random_note(&q.rot, note, sizeof note))
                printf("warning: %s\n", note);
            if (st == FQ_OK) {
                st = quarot_model_to_qmodel(&q, &fp.cfg, &qc, &m);
                quarot_model_free(&q);
                if (st == FQ_OK)
                    st = score_qmodel(&m, ids, n, &a, &res[k]);
            }
        }
        secs[k] = now() - t0;
        if (st != FQ_OK) {
            fprintf(stderr, "baselines_ppl: %s: %s\n", names[k], fq_errmsg());
            goto done;
        }
    }
    printf("model %s, text %s, seqlen %d, %zu windows; W4A4KV4; smoothrot stats: first %ld "
           "windows of %s\n", a.model, a.text, a.seqlen, res[0].windows, a.calib_windows,
           a.calib);
    printf("| method | ppl | × FP | seconds |\n| --- | ---: | ---: | ---: |\n");
    for (int k = 0; k < 4; k++)
        printf("| %s | %.3f | %.3f | %.1f |\n", names[k], res[k].ppl, res[k].ppl / res[0].ppl,
               secs[k]);
    rc = 0;
done:
    free(ids);
    free(cal);
    llama_model_free(&fp);
    return rc;
}
