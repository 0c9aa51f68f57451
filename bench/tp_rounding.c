/* tp_rounding.c — what tensor parallelism's all-reduce does to a W4A4KV4 checkpoint's
 * perplexity, on the CPU: the runtime's layer composed from its kernels' C references
 * (core/w4a4_layer_ref.c) with o_proj and down_proj summed as TP ranks would
 * (fq_w4a4_gemm_rowpar): partials rounded to bf16 and summed in bf16 (what the runtime's
 * bf16 all-reduce does), or summed in fp32 and rounded once (the alternative). Each
 * ppl is compared with the TP = 1 composition; the GPU's TP = 2 vs 1 difference on the
 * same checkpoint is the number to set beside it (bench/NOTES.md, session 4).
 *   build/bench/tp_rounding MODEL_DIR TEXT [SEQLEN [WINDOWS [TP...]]]
 * Defaults: seqlen 2048, 4 windows, TP 2. */
#include "error.h"
#include "perplexity.h"
#include "tokenizer.h"
#include "w4a4_layer_ref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_DIR TEXT [SEQLEN [WINDOWS [TP...]]]\n", argv[0]);
        return 2;
    }
    int seqlen = argc > 3 ? atoi(argv[3]) : 2048, windows = argc > 4 ? atoi(argv[4]) : 4;
    w4a4_ref_model m;
    tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    if (w4a4_ref_model_load(&m, argv[1], seqlen) != FQ_OK || tokenizer_load(argv[1], &tok) != FQ_OK ||
        tokenizer_encode_file(tok, argv[2], 1, &ids, &n) != FQ_OK) {
        fprintf(stderr, "tp_rounding: %s\n", fq_errmsg());
        return 1;
    }
    int tps[8] = {2}, ntp = 0;
    for (int i = 5; i < argc && ntp < 8; i++)
        tps[ntp++] = atoi(argv[i]);
    if (ntp == 0)
        ntp = 1;
    printf("%s, %d windows of %d, tp_blocks %d\n", argv[1], windows, seqlen, m.q.qc.tp_blocks);
    printf("%-4s %-14s %14s %12s\n", "TP", "all-reduce", "ppl", "vs TP 1");
    ppl_result r1;
    if (perplexity_eval(ids, n, seqlen, m.q.cfg.vocab, (size_t)windows, w4a4_ref_window_logits,
                        &m, &r1) != FQ_OK) {
        fprintf(stderr, "tp_rounding: %s\n", fq_errmsg());
        return 1;
    }
    printf("%-4d %-14s %14.6f %12s\n", 1, "-", r1.ppl, "-");
    for (int k = 0; k < ntp; k++)
        for (int bf = 1; bf >= 0; bf--) {
            m.ws.tp = tps[k];
            m.ws.reduce_bf16 = bf;
            ppl_result r;
            if (perplexity_eval(ids, n, seqlen, m.q.cfg.vocab, (size_t)windows,
                                w4a4_ref_window_logits, &m, &r) != FQ_OK) {
                fprintf(stderr, "tp_rounding: TP %d: %s\n", tps[k], fq_errmsg());
                return 1;
            }
            printf("%-4d %-14s %14.6f %12.2e\n", tps[k], bf ? "bf16 partials" : "fp32 partials",
                   r.ppl, fabs(r.ppl / r1.ppl - 1));
        }
    free(ids);
    tokenizer_free(tok);
    w4a4_ref_model_free(&m);
    return 0;
}
