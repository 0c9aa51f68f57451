/* cmd_calibrate.c — `flatq calibrate JOB.yaml [--set key=value ...]`: the MPI job.
 *
 * Every rank loads the job and opens the model (a shared filesystem is assumed, as on a
 * Slurm cluster). Rank 0 checks everything that can be checked before work starts (model
 * shape against the recipe, output directory, resume fingerprints, calibration text
 * length) and broadcasts go/no-go, so a bad job fails on all ranks at once with one line.
 * Then rank 0 runs the FP pass and the scheduler (coordinator/scheduler.h) while ranks ≥ 1
 * run the worker loop; with one rank, rank 0 calibrates every layer itself. At the end
 * rank 0 writes the head shard, the index and config.json, runs the eval section and
 * prints where the results are. With `weight_quantizer: gptq`, rank 0 runs the sequential
 * GPTQ pass (coordinator/gptq_pass.h) between the last layer and the head shard.
 */
#include "coordinator/calib_data.h"
#include "coordinator/commands.h"
#include "coordinator/eval_job.h"
#include "coordinator/eval_model.h"
#include "coordinator/fp_pass.h"
#include "coordinator/fp_pass_cuda.h"
#include "coordinator/gpu_bind.h"
#include "coordinator/gptq_pass.h"
#include "coordinator/inspect.h"
#include "coordinator/report.h"
#include "coordinator/layer_result.h"
#include "coordinator/progress.h"
#include "coordinator/scheduler.h"
#include "error.h"
#include "fileio.h"
#include "job.h"
#include "qformat.h"
#include "sha256.h"
#include "tokenizer.h"
#include "worker/baseline_quarot.h"
#include "worker/layer_task.h"
#include "worker/worker_loop.h"

#include <errno.h>
#include <jansson.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void calibrate_usage(FILE *out)
{
    fprintf(out,
            "usage: [mpirun -np N] flatq calibrate JOB.yaml [--set key=value ...]\n"
            "  Quantizes the job's model: rank 0 coordinates (FP pass, activation cache,\n"
            "  scheduling, checkpoint, eval, report), ranks >= 1 calibrate layers. With one\n"
            "  rank the coordinator does everything itself. Rerunning the same command\n"
            "  resumes: verified cache files and finished layers are reused.\n"
            "  configs/README.md documents every job key.\n");
}

/* mkdir -p */
static int make_dirs(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return fq_error("%s: bad directory name", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++)
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return fq_error("%s: cannot create directory (%s)", buf, strerror(errno));
            buf[i] = c;
        }
    if (access(path, W_OK) != 0)
        return fq_error("%s: output directory is not writable (%s)", path, strerror(errno));
    return FQ_OK;
}

/* sha256 over config.json and each shard's name and size: "the model" for resume. */
static int model_fingerprint(const st_checkpoint *ck, const char *dir, char hex[65])
{
    char path[4096], *buf;
    size_t n;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (fq_read_file(path, &buf, &n) != FQ_OK)
        return FQ_ERR;
    sha256_ctx h;
    sha256_init(&h);
    sha256_update(&h, buf, n);
    free(buf);
    for (size_t i = 0; i < ck->n_files; i++) {
        const char *base = strrchr(ck->files[i].path, '/');
        base = base ? base + 1 : ck->files[i].path;
        char line[512];
        int k = snprintf(line, sizeof line, "%s %zu\n", base, ck->files[i].map_size);
        sha256_update(&h, line, (size_t)k);
    }
    uint8_t d[32];
    sha256_final(&h, d);
    sha256_hex(d, hex);
    return FQ_OK;
}

/* The cache depends on the model and the calibration data only. */
static void data_fingerprint(const job *j, const char *model_fp, char hex[65])
{
    sha256_ctx h;
    sha256_init(&h);
    char line[512];
    int k = snprintf(line, sizeof line, "flatq-cache-v2 %s n=%d s=%d seed=%llu dtype=%s\n",
                     model_fp, j->calibration.nsamples, j->calibration.seqlen,
                     (unsigned long long)j->calibration.seed, job_cache_dtype_name(j->cache.dtype));
    sha256_update(&h, line, (size_t)k);
    for (int i = 0; i < j->calibration.n_text; i++)
        sha256_update(&h, j->calibration.text[i], strlen(j->calibration.text[i]) + 1);
    uint8_t d[32];
    sha256_final(&h, d);
    sha256_hex(d, hex);
}

static layer_cache_dtype cache_dtype(job_cache_dtype t)
{
    return t == JOB_CACHE_FP32 ? LAYER_CACHE_F32 : t == JOB_CACHE_FP16 ? LAYER_CACHE_F16
                                                                        : LAYER_CACHE_BF16;
}

typedef struct {
    job j;
    llama_config cfg;
    st_checkpoint ck;
    char model_fp[65], recipe_fp[65], data_fp[65];
    int32_t *ids;
    size_t text_tokens;
    double t_start;
} calib_setup;

/* Everything rank 0 checks before any rank starts work. */
static int coordinator_prepare(calib_setup *cs, int nranks)
{
    job *j = &cs->j;
    tokenizer *tok = NULL;
    if (!j->calibrate)
        return fq_error("%s: no calibration section (expected calibration.text etc.; for an "
                        "eval-only job use flatq eval)", j->path);
    if (job_check_model(j, cs->cfg.head_dim, cs->cfg.hidden, cs->cfg.intermediate) != FQ_OK)
        return FQ_ERR;
    if (make_dirs(j->output) != FQ_OK || make_dirs(j->cache.dir) != FQ_OK)
        return FQ_ERR;
    if (job_fingerprint_check(j->output, cs->recipe_fp, cs->model_fp) != FQ_OK)
        return FQ_ERR;
    if (tokenizer_load(j->model, &tok) != FQ_OK)
        return FQ_ERR;
    int rc = calib_windows_sample(tok, j->calibration.text, j->calibration.n_text,
                                  j->calibration.nsamples, j->calibration.seqlen,
                                  j->calibration.seed, &cs->ids, &cs->text_tokens);
    tokenizer_free(tok);
    if (rc != FQ_OK)
        return FQ_ERR;
    if (nranks - 1 > cs->cfg.n_layers)
        fprintf(stderr, "flatq: note: %d workers for %d layers; %d will stay idle\n", nranks - 1,
                cs->cfg.n_layers, nranks - 1 - cs->cfg.n_layers);
    return FQ_OK;
}

static void print_plan(const calib_setup *cs, int nranks)
{
    const job *j = &cs->j;
    const llama_config *c = &cs->cfg;
    double boundary_mb = (double)j->calibration.nsamples * j->calibration.seqlen * c->hidden *
                         (j->cache.dtype == JOB_CACHE_FP32 ? 4 : 2) / 1048576.0;
    printf("plan: %d layers of %s (hidden %d, intermediate %d, %d heads, %d kv heads)\n",
           c->n_layers, j->model, c->hidden, c->intermediate, c->n_heads, c->n_kv_heads);
    printf("plan: method %s W%dA%dKV%d, %d ranks (%s), calibration %d × %d tokens from %zu\n",
           job_method_name(j->quantization.method), j->quantization.w_bits,
           j->quantization.a_bits, j->quantization.kv_bits, nranks,
           nranks == 1 ? "the coordinator calibrates" : "1 coordinator + workers",
           j->calibration.nsamples, j->calibration.seqlen, cs->text_tokens);
    printf("plan: activation cache %s: %d boundaries × %.1f MiB (%s)%s\n", j->cache.dir,
           c->n_layers + 1, boundary_mb, job_cache_dtype_name(j->cache.dtype),
           j->cache.delete_consumed ? ", consumed boundaries deleted" : "");
    printf("plan: output %s; the time estimate follows the first finished layer\n", j->output);
    fflush(stdout);
}

static int release_boundary(void *ctx, int boundary)
{
    calib_setup *cs = ctx;
    return layer_cache_remove(cs->j.cache.dir, boundary);
}

/* Per-layer facts from the result files' metadata (written by worker/layer_task.c). */
static json_t *report_layers(const calib_setup *cs)
{
    json_t *arr = json_array();
    for (int i = 0; i < cs->cfg.n_layers; i++) {
        char path[4096];
        st_file f;
        if (layer_result_path(cs->j.output, i, path, sizeof path) != FQ_OK ||
            st_file_open(path, &f) != FQ_OK)
            continue;
        const char *keys[] = {"loss_before", "loss_after"};
        json_t *o = json_pack("{s:i}", "layer", i);
        for (int k = 0; k < 2; k++) {
            const char *v = st_file_meta(&f, keys[k]);
            json_object_set_new(o, keys[k], v ? json_real(strtod(v, NULL)) : json_null());
        }
        char spath[4200];
        snprintf(spath, sizeof spath, "%s.stats.json", path);
        json_t *stats = json_load_file(spath, 0, NULL);
        json_object_set(o, "seconds", json_object_get(stats, "seconds"));
        json_object_set(o, "rank", json_object_get(stats, "rank"));
        json_decref(stats);
        const char *ep = st_file_meta(&f, "epoch_loss");
        json_t *ej = ep ? json_loads(ep, 0, NULL) : NULL;
        if (json_is_array(ej))
            json_object_set_new(o, "epoch_loss", ej);
        else
            json_decref(ej);
        json_array_append_new(arr, o);
        st_file_close(&f);
    }
    return arr;
}

static json_t *report_ranks(const scheduler_report *rep)
{
    json_t *arr = json_array();
    for (int r = 0; r < rep->nranks; r++) {
        const worker_stats *w = &rep->workers[r];
        json_array_append_new(arr, json_pack("{s:i, s:s, s:s, s:f, s:f, s:f, s:i}", "rank",
                                             w->rank, "host", w->host, "device", w->device,
                                             "busy_s", w->busy_s, "idle_s", w->idle_s,
                                             "cache_read_s", w->cache_read_s, "layers",
                                             w->layers));
    }
    return arr;
}

static int write_report(const calib_setup *cs, const scheduler_report *rep, double fp_s,
                        double wall_s, json_t *eval_rows)
{
    const job *j = &cs->j;
    const llama_config *c = &cs->cfg;
    const char *name = strrchr(j->model, '/') ? strrchr(j->model, '/') + 1 : j->model;
    char when[64];
    time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    json_t *r = json_pack(
        "{s:{s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:s}, "
        "s:{s:s, s:i, s:i, s:i, s:i, s:i}, s:o, s:o, s:O, s:f, s:f, s:s}",
        "job", "path", j->path, "model", j->model, "output", j->output, "method",
        job_method_name(j->quantization.method), "w_bits", j->quantization.w_bits, "a_bits",
        j->quantization.a_bits, "kv_bits", j->quantization.kv_bits, "nsamples",
        j->calibration.nsamples, "seqlen", j->calibration.seqlen, "epochs",
        j->quantization.epochs, "fingerprint", cs->recipe_fp, "model", "name", name, "layers",
        c->n_layers, "hidden", c->hidden, "intermediate", c->intermediate, "heads", c->n_heads,
        "kv_heads", c->n_kv_heads, "ranks", report_ranks(rep), "layers", report_layers(cs),
        "eval", eval_rows ? eval_rows : json_array(), "wall_seconds", wall_s,
        "fp_pass_seconds", fp_s, "finished_at", when);
    if (!r)
        return fq_error("report: out of memory");
    /* the difficulty chart: a short FP pass over the first eval text */
    json_t *doc = NULL;
    if (j->evaluate && j->eval.n_text > 0 &&
        inspect_document(j->model, j->eval.text[0], j->eval.seqlen < 512 ? j->eval.seqlen : 512,
                         2, &doc) == FQ_OK)
        json_object_set(r, "difficulty", json_object_get(doc, "difficulty"));
    json_decref(doc);
    int rc = report_write(j->report.dir, r);
    json_decref(r);
    if (rc == FQ_OK)
        printf("report: %s/report.html (also report.md, report.json)\n", j->report.dir);
    return rc;
}

/* After the last layer: head shard, index, config.json, then eval. */
static int coordinator_finish(calib_setup *cs, json_t **eval_rows)
{
    const llama_config *c = &cs->cfg;
    real *embed = NULL, *norm = NULL, *head = NULL;
    int64_t se[2] = {c->vocab, c->hidden}, sn[1] = {c->hidden};
    int tied = c->tie_embeddings && !st_checkpoint_find(&cs->ck, "lm_head.weight");
    int rc = FQ_ERR;
    if (llama_tensor_load(&cs->ck, "model.embed_tokens.weight", 2, se, &embed) != FQ_OK ||
        llama_tensor_load(&cs->ck, "model.norm.weight", 1, sn, &norm) != FQ_OK ||
        (!tied && llama_tensor_load(&cs->ck, "lm_head.weight", 2, se, &head) != FQ_OK))
        goto done;
    qconfig qc;
    qconfig_from_job(&cs->j, cs->j.quantization.method, &qc);
    job_method m = cs->j.quantization.method;
    if (m == JOB_METHOD_QUAROT || m == JOB_METHOD_SMOOTHROT) {
        /* the residual stream is rotated: embeddings and lm_head follow (same seed as the
         * workers' rotations), the final norm is folded into lm_head */
        llama_model view = {0};
        view.cfg = *c;
        view.embed = embed;
        view.final_norm = norm;
        view.lm_head = head ? head : embed;
        quarot_opts o = quarot_opts_from_job(&cs->j);
        quarot_rotations rot;
        real *re = NULL, *rn = NULL, *rh = NULL;
        if (quarot_rotations_init(&rot, c, &qc, o.seed) != FQ_OK)
            goto done;
        char note[256];
        if (quarot_random_note(&rot, note, sizeof note) == 1)
            printf("note: %s\n", note);
        int rrc = quarot_rotate_head(&view, &rot, &re, &rn, &rh);
        quarot_rotations_free(&rot);
        if (rrc != FQ_OK)
            goto done;
        free(embed);
        free(norm);
        free(head);
        embed = re;
        norm = rn;
        head = rh; /* never tied after rotation: lm_head carries the folded final norm */
    }
    if (qcheckpoint_write_head(cs->j.output, c, embed, norm, head) != FQ_OK ||
        qcheckpoint_finish(cs->j.output, cs->j.model, c, &qc) != FQ_OK)
        goto done;
    printf("checkpoint: %s (config.json with quantization_config, %d layer shards)\n",
           cs->j.output, c->n_layers);
    fflush(stdout);
    *eval_rows = NULL;
    if (cs->j.evaluate && cs->j.eval.n_text > 0) {
        printf("eval:\n");
        if (eval_job_run(&cs->j, MPI_COMM_SELF, stdout, eval_rows) != FQ_OK)
            goto done;
    }
    rc = FQ_OK;
done:
    free(embed);
    free(norm);
    free(head);
    return rc;
}

static int run_coordinator(calib_setup *cs, layer_task_ctx *lt)
{
    const job *j = &cs->j;
    fp_pass fp = {.cfg = &cs->cfg, .ck = &cs->ck, .cache_dir = j->cache.dir,
                  .fingerprint = cs->data_fp, .dtype = cache_dtype(j->cache.dtype),
                  .ids = cs->ids, .nsamples = j->calibration.nsamples,
                  .seqlen = j->calibration.seqlen, .batch = j->calibration.batch};
    if (fp_pass_init(&fp) != FQ_OK)
        return FQ_ERR;
    /* each boundary's cache write beside the next boundary's compute (issue 6: at 4 GPUs the
     * serial write held back every worker's first layer by ~10 s per boundary) */
    fp.async_commit = 1;
    int gptq = j->quantization.weight_quantizer == JOB_WQ_GPTQ, forgotten = 0;
    if (gptq && gptq_pass_prepare(j->output, j->cache.dir, cs->cfg.n_layers, &forgotten) != FQ_OK) {
        fp_pass_free(&fp);
        return FQ_ERR;
    }
    if (forgotten)
        printf("resume: %d finished layers lost their merged weights (cache removed) and are "
               "calibrated again for GPTQ\n", forgotten);
    /* device: cuda: the FP pass runs its layers on this rank's GPU (gpu_bind: device 0 of
     * the node, before that GPU's worker has work) */
    fp_pass_cuda gfp;
    memset(&gfp, 0, sizeof gfp);
    if (lt->cuda && fp_pass_cuda_init(&gfp, &fp, lt->cuda->device) != FQ_OK) {
        fp_pass_free(&fp);
        return FQ_ERR;
    }
    gfp.tf32 = j->quantization.gpu_math != JOB_GPU_MATH_FP32 && fp.dtype != LAYER_CACHE_F32;
    uint8_t *done = fq_calloc((size_t)cs->cfg.n_layers, 1, "layer flags");
    int ndone = 0;
    if (!done || layer_result_scan(j->output, cs->cfg.n_layers, done, &ndone) != FQ_OK) {
        free(done);
        fp_pass_cuda_free(&gfp);
        fp_pass_free(&fp);
        return FQ_ERR;
    }
    free(done);
    if (ndone)
        printf("resume: %d of %d layers already finished and verified in %s\n", ndone,
               cs->cfg.n_layers, j->output);
    progress prog;
    progress_init(&prog, stdout, cs->cfg.n_layers, ndone, -1);
    scheduler_config sc = {.comm = MPI_COMM_WORLD, .nlayers = cs->cfg.n_layers,
                           .outdir = j->output,
                           .produce_next_boundary = lt->cuda ? fp_pass_produce_cuda : fp_pass_produce,
                           .produce_ctx = lt->cuda ? (void *)&gfp : (void *)&fp,
                           .flush_boundaries = lt->cuda ? fp_pass_flush_cuda : fp_pass_flush,
                           /* LLaMA layers cost the same: no layer_cost */
                           .release_boundary = j->cache.delete_consumed ? release_boundary : NULL,
                           .release_ctx = cs, .run_layer = layer_task_run, .run_ctx = lt,
                           .device = lt->device_desc, .heartbeat_timeout_s = 600,
                           .announce_on_sigterm = 1, .progress = &prog};
    scheduler_report rep = {0};
    int rc = scheduler_run(&sc, &rep);
    progress_end(&prog);
    if (rc == FQ_OK) {
        printf("calibration: %d layers run, %d reused; FP pass %.1f s (%d boundaries computed, "
               "%d reused), cache writes %.1f s (on a writer thread; the FP pass spent %.1f s "
               "encoding and waiting for it)\n", rep.layers_run, rep.layers_skipped,
               fp.seconds, fp.produced, fp.reused, fp.write_s, fp.commit_s);
        if (lt->cuda)
            printf("  FP pass on the GPU: upload %.1f s, layers %.1f s, download %.1f s\n",
                   gfp.upload_s, gfp.compute_s, gfp.download_s);
        for (int r = 0; r < rep.nranks; r++)
            printf("  rank %d (%s, %s): %d layers, busy %.1f s, idle %.1f s, cache reads %.2f s\n",
                   rep.workers[r].rank, rep.workers[r].host, rep.workers[r].device,
                   rep.workers[r].layers, rep.workers[r].busy_s, rep.workers[r].idle_s,
                   rep.workers[r].cache_read_s);
    }
    if (rc == FQ_OK && gptq) {
        /* quantization.gptq_nsamples: the Hessians from the first windows only (they are a
         * random sample already); the pass's cost is its forwards, linear in windows */
        int ns = j->calibration.nsamples, gn = j->quantization.gptq_nsamples;
        gptq_pass gp = {.j = j, .cuda = lt->cuda, .cfg = &cs->cfg, .ck = &cs->ck, .ids = cs->ids,
                        .nsamples = gn > 0 && gn < ns ? gn : ns,
                        .seqlen = j->calibration.seqlen};
        rc = gptq_pass_run(&gp);
        if (rc == FQ_OK)
            printf("gptq: %d layers quantized, %d reused, %.1f s\n", gp.layers_run,
                   gp.layers_reused, gp.seconds);
    }
    json_t *rows = NULL;
    if (rc == FQ_OK)
        rc = coordinator_finish(cs, &rows);
    if (rc == FQ_OK && make_dirs(j->report.dir) == FQ_OK)
        rc = write_report(cs, &rep, fp.seconds, progress_monotonic_seconds() - cs->t_start, rows);
    json_decref(rows);
    free(rep.workers);
    fp_pass_cuda_free(&gfp);
    fp_pass_free(&fp);
    return rc;
}

int cmd_calibrate(int argc, char **argv)
{
    if (cli_wants_help(argc, argv) || argc < 2) {
        calibrate_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sets[64];
    int n_sets = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--set") == 0 && i + 1 < argc && n_sets < 64) {
            sets[n_sets++] = argv[++i];
        } else {
            fprintf(stderr, "flatq: calibrate: unknown argument '%s' (expected --set key=value)\n",
                    argv[i]);
            return 2;
        }
    }
    /* FUNNELED: rank 0 runs the FP pass on a second thread (coordinator/scheduler.c) that
     * makes no MPI call */
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    int rank, nranks;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    if (rank == 0 && provided < MPI_THREAD_FUNNELED)
        fprintf(stderr, "flatq: note: this MPI gives thread level %d, below "
                        "MPI_THREAD_FUNNELED; the FP pass thread makes no MPI call\n", provided);
    calib_setup cs;
    memset(&cs, 0, sizeof cs);
    cs.t_start = progress_monotonic_seconds();
    int ok = job_load(argv[1], sets, n_sets, &cs.j) == FQ_OK;
    char cfg_path[4096];
    if (ok) {
        snprintf(cfg_path, sizeof cfg_path, "%s/config.json", cs.j.model);
        ok = llama_config_load(cfg_path, &cs.cfg) == FQ_OK &&
             st_checkpoint_open(cs.j.model, &cs.ck) == FQ_OK &&
             model_fingerprint(&cs.ck, cs.j.model, cs.model_fp) == FQ_OK &&
             job_fingerprint(&cs.j, cs.recipe_fp) == FQ_OK;
    }
    if (ok)
        data_fingerprint(&cs.j, cs.model_fp, cs.data_fp);
    if (rank == 0 && ok) {
        printf("flatq calibrate %s (%d rank%s)\n", argv[1], nranks, nranks == 1 ? "" : "s");
        job_print(&cs.j, stdout);
        ok = coordinator_prepare(&cs, nranks) == FQ_OK;
        if (ok)
            print_plan(&cs, nranks);
    }
    /* One line per distinct failure: rank 0 speaks for a bad job (every rank would say the
     * same); another rank speaks only when its own failure is not rank 0's. */
    int ok0 = ok, all_ok = ok;
    MPI_Bcast(&ok0, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!ok && rank == 0)
        fprintf(stderr, "flatq: %s\n", fq_errmsg());
    else if (!ok && ok0)
        fprintf(stderr, "flatq: rank %d: %s\n", rank, fq_errmsg());
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    int rc = 1;
    layer_task_ctx lt = {.j = &cs.j, .cfg = &cs.cfg, .ck = &cs.ck, .cache_dir = cs.j.cache.dir,
                         .fingerprint = cs.data_fp, .rank = rank};
    fq_cuda_ctx cuda;
    memset(&cuda, 0, sizeof cuda);
    if (all_ok) {
        qconfig_from_job(&cs.j, cs.j.quantization.method, &lt.qc);
        gethostname(lt.host, sizeof lt.host - 1);
        snprintf(lt.device_desc, sizeof lt.device_desc, "%s", job_device_name(cs.j.device));
        if (cs.j.device == JOB_DEVICE_CUDA) {
            /* workers take the node's GPUs in order; a lone rank 0 is its own worker */
            int counts = rank != 0 || nranks == 1;
            int bound = gpu_bind_rank(MPI_COMM_WORLD, counts, &cuda, lt.device_desc,
                                      sizeof lt.device_desc) == FQ_OK;
            if (!bound)
                fprintf(stderr, "flatq: rank %d: %s\n", rank, fq_errmsg());
            MPI_Allreduce(&bound, &all_ok, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
            if (bound)
                lt.cuda = &cuda;
        }
    }
    if (all_ok) {
        if (rank == 0) {
            rc = run_coordinator(&cs, &lt) == FQ_OK ? 0 : 1;
            if (rc) {
                fprintf(stderr, "flatq: %s\n", fq_errmsg());
                fflush(stderr);
                if (nranks > 1)
                    MPI_Abort(MPI_COMM_WORLD, 1); /* workers may be mid-layer */
            }
        } else {
            worker_config wc = {.comm = MPI_COMM_WORLD, .outdir = cs.j.output,
                                .run_layer = layer_task_run, .run_ctx = &lt,
                                .device = lt.device_desc};
            worker_stats ws;
            rc = worker_loop(&wc, &ws) == FQ_OK ? 0 : 1;
            if (rc)
                fprintf(stderr, "flatq: rank %d: %s\n", rank, fq_errmsg());
        }
    }
    if (lt.cuda)
        gpu_unbind(lt.cuda);
    free(cs.ids);
    if (cs.ck.files)
        st_checkpoint_close(&cs.ck);
    job_free(&cs.j);
    MPI_Finalize();
    return rc;
}
