/* cmd_run_gpu.c — `flatq run MODEL_DIR --device cuda`: generation and the throughput
 * bench on the GPU runtime (runtime/), one GPU per MPI rank.
 *
 * Generation: one prefill forward over the prompt, then one decode forward per token with
 * the KV cache; every rank receives the same all-gathered logits and draws the same token
 * with the same seeded generator, so the ranks never need to exchange token ids, and
 * rank 0 streams the text. Sampling runs on the host through run_next_token, exactly as
 * the CPU path, because a vocabulary-sized sort per token is cheap there and keeps the two
 * devices' token choices identical.
 *
 * Bench: B random prompts of P tokens (seeded, the same on every rank), one untimed
 * warm-up prefill, then a timed prefill and G timed greedy decode steps (argmax on the
 * GPU). All-reduce time comes from CUDA events around each collective; the share printed
 * is all-reduce time over wall time, which includes waiting for the slower peer.
 */
#include "coordinator/commands.h"
#include "coordinator/progress.h"
#include "coordinator/run_common.h"
#include "error.h"
#include "tokenizer.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef FLATQ_HAVE_CUDA
#include "runtime/gpu_session.h"
#include "runtime/rt_ops.h"

/* One forward and its wait; on the host, the last-token logits of sequence 0 (gen). */
static int step(gpu_session *s, const int32_t *ids, int B, int n, const int *pos0,
                float *host_row)
{
    const float *d = NULL;
    if (gpu_model_forward(&s->m, ids, B, n, pos0, 0, &d) != FQ_OK ||
        tp_comm_wait(&s->comm, &s->ctx) != FQ_OK)
        return FQ_ERR;
    return host_row ? rt_download(&s->ctx, host_row, d, sizeof(float) * s->m.cfg.vocab) : FQ_OK;
}

static int generate(gpu_session *s, const run_args *a, const tokenizer *tok, const int32_t *ids,
                    int n, int rank)
{
    int V = s->m.cfg.vocab, cap = n + (int)a->max_new, rc = FQ_ERR;
    float *row = fq_malloc(sizeof(float) * (size_t)V, "logits");
    run_cand *work = fq_malloc(sizeof(run_cand) * (size_t)V, "sampling");
    int32_t *all = fq_malloc(sizeof(int32_t) * (size_t)cap, "tokens");
    if (!row || !work || !all)
        goto done;
    memcpy(all, ids, sizeof(int32_t) * (size_t)n);
    rng_state rng;
    rng_seed(&rng, (uint64_t)a->seed);
    int eos = tokenizer_eos_id(tok), len = n, pos0 = 0;
    size_t printed = 0;
    if (rank == 0) {
        printf("%s", a->prompt);
        fflush(stdout);
    }
    if (step(s, all, 1, n, &pos0, row) != FQ_OK)
        goto done;
    for (long k = 0; k < a->max_new; k++) {
        if (k > 0) {
            pos0 = len - 1;
            if (step(s, all + len - 1, 1, 1, &pos0, row) != FQ_OK)
                goto done;
        }
        int next = run_next_token(row, V, a, &rng, work);
        all[len++] = next;
        if (rank == 0) {
            run_print_new_text(tok, all + n, (size_t)(len - n), &printed);
        }
        if (next == eos)
            break;
    }
    if (rank == 0)
        printf("\n");
    rc = FQ_OK;
done:
    free(row);
    free(work);
    free(all);
    return rc;
}

/* Tokens per prefill forward: larger batches are prefilled in chunks along the sequence
 * (the cache makes a chunk see the earlier ones), which bounds the activation memory. */
#define BENCH_PREFILL_TOKENS 16384

static long prefill_chunk(long B, long P)
{
    long c = BENCH_PREFILL_TOKENS / B;
    return c < 1 ? 1 : c > P ? P : c;
}

/* prefill of ids [B, P] in chunks, then argmax of each sequence's last logits into ids[0..B) */
static int bench_prefill(gpu_session *s, int32_t *ids, int B, int P, int *pos)
{
    int chunk = (int)prefill_chunk(B, P), V = s->m.cfg.vocab;
    int32_t *part = fq_malloc(sizeof(int32_t) * (size_t)B * chunk, "prompt chunk");
    if (!part)
        return FQ_ERR;
    const float *d = NULL;
    int rc = FQ_OK;
    for (int p0 = 0; p0 < P && rc == FQ_OK; p0 += chunk) {
        int n = P - p0 < chunk ? P - p0 : chunk;
        for (int b = 0; b < B; b++) {
            pos[b] = p0;
            memcpy(part + (size_t)b * n, ids + (size_t)b * P + p0, sizeof(int32_t) * n);
        }
        rc = gpu_model_forward(&s->m, part, B, n, pos, 0, &d);
    }
    free(part);
    if (rc != FQ_OK || rt_argmax(&s->ctx, s->m.ids_d, d, B, V) != FQ_OK ||
        tp_comm_wait(&s->comm, &s->ctx) != FQ_OK)
        return FQ_ERR;
    return rt_download(&s->ctx, ids, s->m.ids_d, sizeof(int32_t) * (size_t)B);
}

/* Rank 0's time per op: prefill (ms for the whole prompt) and decode (ms per step), with
 * each op's share of the GPU time the marks cover. */
static void print_profile(const gpu_model *m, int B, int P, int G, const double *pre,
                          const double *dec)
{
    double tp = 0, td = 0;
    for (int op = RTP_START + 1; op < RTP_NOPS; op++)
        tp += pre[op], td += dec[op];
    printf("profile     %s, batch %d: prefill of %d tokens (ms), decode (ms per step)\n",
           m->quantized ? "W4A4KV4" : "BF16", B, P);
    for (int op = RTP_START + 1; op < RTP_NOPS; op++) {
        if (pre[op] == 0 && dec[op] == 0)
            continue;
        printf("  %-22s %10.3f %5.1f%%   %8.4f %5.1f%%\n", rt_prof_name(op), pre[op],
               tp > 0 ? 100 * pre[op] / tp : 0, dec[op] / G, td > 0 ? 100 * dec[op] / td : 0);
        printf("PROFILE|%s|batch=%d|%s|prefill_ms=%.4f|decode_ms_per_step=%.5f\n",
               m->quantized ? "w4a4" : "bf16", B, rt_prof_name(op), pre[op], dec[op] / G);
    }
    printf("  %-22s %10.3f          %8.4f\n", "sum of ops", tp, td / G);
}

static int bench_one(gpu_session *s, const run_args *a, int B, int rank)
{
    int P = (int)a->prompt_len, G = (int)a->gen_len, V = s->m.cfg.vocab;
    int *pos = fq_malloc(sizeof(int) * (size_t)B, "positions");
    int32_t *ids = fq_malloc(sizeof(int32_t) * (size_t)B * P, "prompt ids");
    int rc = FQ_ERR;
    if (!pos || !ids)
        goto done;
    rng_state rng;
    rng_seed(&rng, (uint64_t)a->seed);
    for (size_t i = 0; i < (size_t)B * P; i++)
        ids[i] = (int32_t)(rng_next_u64(&rng) % (uint64_t)V);
    /* warm-up: one whole prefill of the same shapes, so that first-use costs (cuBLAS
     * heuristics, lazy loading of the kernels each GEMM shape picks, first touch of the
     * caches) stay out of the timed one. A 64-token prefix did not do it: the prefill
     * transforms of more than 64 tokens take other kernels (cuBLAS) than 64 tokens do, and
     * their first use cost ~80 ms inside the timed batch-1 prefill (bench/NOTES.md,
     * session 9). */
    rc = bench_prefill(s, ids, B, P, pos);
    /* the warm-up's marks are not the measurement (bench_prefill ended synchronised) */
    if (rc == FQ_OK && s->m.prof && (rc = rt_prof_flush(s->m.prof)) == FQ_OK)
        rt_prof_reset(s->m.prof);
    if (rc != FQ_OK)
        goto done;
    rc = FQ_ERR;
    MPI_Barrier(MPI_COMM_WORLD);
    s->comm.timing = 1;
    s->comm.allreduce_ms = 0;
    double t0 = progress_monotonic_seconds();
    if (bench_prefill(s, ids, B, P, pos) != FQ_OK)
        goto done;
    double t_pre = progress_monotonic_seconds() - t0, ar_pre = s->comm.allreduce_ms / 1e3;
    double prof_pre[RTP_NOPS] = {0};
    if (s->m.prof) {
        if (rt_prof_flush(s->m.prof) != FQ_OK)
            goto done;
        memcpy(prof_pre, s->m.prof->ms, sizeof prof_pre);
        rt_prof_reset(s->m.prof);
    }
    s->comm.allreduce_ms = 0;
    const float *d = NULL;
    t0 = progress_monotonic_seconds();
    for (int g = 0; g < G; g++) {
        for (int b = 0; b < B; b++)
            pos[b] = P + g;
        if (gpu_model_forward(&s->m, ids, B, 1, pos, 0, &d) != FQ_OK ||
            rt_argmax(&s->ctx, s->m.ids_d, d, B, V) != FQ_OK ||
            tp_comm_wait(&s->comm, &s->ctx) != FQ_OK ||
            rt_download(&s->ctx, ids, s->m.ids_d, sizeof(int32_t) * (size_t)B) != FQ_OK ||
            rt_prof_flush(s->m.prof) != FQ_OK)
            goto done;
    }
    double t_dec = progress_monotonic_seconds() - t0, ar_dec = s->comm.allreduce_ms / 1e3;
    s->comm.timing = 0;
    if (rank == 0) {
        const gpu_model *m = &s->m;
        /* the cache for this batch: the model holds it for the largest batch */
        double kv = (double)m->kv_bytes * B / (double)m->max_batch;
        printf("batch %-4d  prefill %d x %d tokens (chunks of %ld) in %.4f s: %.0f tokens/s, "
               "all-reduce %.1f%%\n", B, B, P, prefill_chunk(B, P), t_pre,
               (double)B * P / t_pre, 100 * ar_pre / t_pre);
        printf("            decode %d x %d tokens in %.4f s: %.1f tokens/s, %.3f ms/step, "
               "all-reduce %.1f%%; KV cache %.3f GiB\n", B, G, t_dec, (double)B * G / t_dec,
               1e3 * t_dec / G, 100 * ar_dec / t_dec, kv / 1073741824.0);
        printf("BENCH|%s|tp=%d|layers=%d|batch=%d|prompt=%d|gen=%d|prefill_tps=%.1f|"
               "decode_tps=%.2f|step_ms=%.4f|ar_prefill=%.2f|ar_decode=%.2f|weights_gib=%.4f|"
               "kv_gib=%.4f\n", m->quantized ? "w4a4" : "bf16", s->comm.tp, m->cfg.n_layers, B, P,
               G, (double)B * P / t_pre, (double)B * G / t_dec, 1e3 * t_dec / G,
               100 * ar_pre / t_pre, 100 * ar_dec / t_dec, m->weight_bytes / 1073741824.0,
               kv / 1073741824.0);
        if (m->prof)
            print_profile(m, B, P, G, prof_pre, m->prof->ms);
        fflush(stdout);
    }
    rc = FQ_OK;
done:
    free(pos);
    free(ids);
    return rc;
}

static int bench(gpu_session *s, const run_args *a, int rank)
{
    if (rank == 0) {
        char name[256] = "?";
        fq_cuda_device_name(&s->ctx, name, sizeof name);
        const gpu_model *m = &s->m;
        printf("device      %s, tensor parallel %d\n", name, s->comm.tp);
        printf("model       %s (%s, %d layers)\n", a->model, m->quantized ? "W4A4KV4" : "BF16",
               m->cfg.n_layers);
        printf("memory      rank 0: weights %.3f GiB, KV cache %.3f GiB (batch %ld, context "
               "%ld), activations %.3f GiB\n", m->weight_bytes / 1073741824.0,
               m->kv_bytes / 1073741824.0, a->batch, a->prompt_len + a->gen_len,
               m->scratch_bytes / 1073741824.0);
    }
    rt_profile *prof = NULL;
    if (a->profile) {
        prof = fq_malloc(sizeof *prof, "op profile");
        if (!prof || rt_prof_init(prof, &s->ctx) != FQ_OK) {
            free(prof);
            return FQ_ERR;
        }
        s->m.prof = prof;
    }
    int rc = FQ_OK;
    for (int i = 0; i < a->n_batches && rc == FQ_OK; i++) {
        rt_prof_reset(prof);
        rc = bench_one(s, a, (int)a->batches[i], rank);
    }
    s->m.prof = NULL;
    rt_prof_free(prof);
    free(prof);
    return rc;
}

int cmd_run_gpu(const run_args *a)
{
    int init = 0, rank = 0, tp = 1;
    MPI_Initialized(&init);
    if (!init)
        MPI_Init(NULL, NULL);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &tp);
    tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    gpu_session s;
    int opened = 0, rc = 1, print = 1;
    if (!a->bench && (tokenizer_load(a->model, &tok) != FQ_OK ||
                      tokenizer_encode(tok, a->prompt, strlen(a->prompt), 1, &ids, &n) != FQ_OK))
        goto fail;
    long ctx = a->bench ? a->prompt_len + a->gen_len : (long)n + a->max_new;
    long toks = a->bench ? a->batch * prefill_chunk(a->batch, a->prompt_len) : (long)n;
    if (ctx > (1L << 30) || toks > (1L << 30)) {
        fq_error("run: a context of %ld tokens and %ld prompt tokens (expected fewer)", ctx, toks);
        goto fail;
    }
    if (gpu_session_open(&s, MPI_COMM_WORLD, a->model, a->bench ? (int)a->batch : 1, (int)ctx, (int)toks,
                         a->bench ? (int)a->batch : 1) != FQ_OK) {
        print = s.print_error;
        goto fail;
    }
    opened = 1;
    if ((a->bench ? bench(&s, a, rank) : generate(&s, a, tok, ids, (int)n, rank)) != FQ_OK) {
        fq_error_wrap("rank %d", rank);
        goto fail;
    }
    rc = 0;
    goto done;
fail:
    if (print)
        cli_fail();
    if (tp > 1 && opened) /* a peer may sit in a collective that will never complete */
        MPI_Abort(MPI_COMM_WORLD, 1);
done:
    if (opened)
        gpu_session_close(&s);
    free(ids);
    tokenizer_free(tok);
    MPI_Finalize();
    return rc;
}

#else

int cmd_run_gpu(const run_args *a)
{
    (void)a;
    fq_error("run: --device cuda: flatq was built without the CUDA backend (expected a build "
             "with nvcc; the CPU path is --device cpu)");
    return cli_fail();
}

#endif
