/* job.h — a flatq job: what to quantize, how, and how to evaluate it, fully resolved.
 *
 * A job file is YAML (configs/README.md is the reference of every key). Loading goes
 * file → includes (recipes, merged under the file) → --set overrides → typed struct →
 * validation. Every error is one line naming FILE:LINE:COLUMN (or the --set argument),
 * the key path and what was expected. Paths in the struct are absolute: relative ones
 * were resolved against the directory of the file they were written in (--set values
 * and values that start with an environment variable: against the current directory).
 *
 * The struct is plain data: char* strings, char** + count lists, numbers and enums,
 * all heap-owned by the job and released by job_free().
 */
#ifndef FQ_JOB_H
#define FQ_JOB_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum { JOB_DEVICE_CPU = 0, JOB_DEVICE_CUDA } job_device;
typedef enum { JOB_CACHE_BF16 = 0, JOB_CACHE_FP16, JOB_CACHE_FP32 } job_cache_dtype;
/* Quantization methods; JOB_METHOD_FP (no quantization) is valid only in eval.methods. */
typedef enum {
    JOB_METHOD_FP = 0,
    JOB_METHOD_RTN,
    JOB_METHOD_QUAROT,
    JOB_METHOD_SMOOTHROT,
    JOB_METHOD_FLATQUANT,
    JOB_METHOD_COUNT
} job_method;
typedef enum { JOB_SCALE_SQ_STYLE = 0, JOB_SCALE_ONE_STYLE } job_scale_init;
typedef enum { JOB_INIT_RANDOM = 0, JOB_INIT_IDENTITY, JOB_INIT_HADAMARD, JOB_INIT_SMOOTHROT } job_init;
typedef enum { JOB_WQ_RTN = 0, JOB_WQ_GPTQ } job_weight_quantizer;
/* GEMM math of the CUDA calibration backend for the linears and attention */
typedef enum { JOB_GPU_MATH_TF32 = 0, JOB_GPU_MATH_FP32, JOB_GPU_MATH_BF16 } job_gpu_math;

/* Bits value meaning "not quantized" (W4A16 = a_bits 16). */
#define JOB_BITS_NONE 16

/* Where a key's value came from: "FILE:LINE:COL", "--set 'k=v'" or "default". */
typedef struct {
    char *key;
    char *where;
} job_origin;

typedef struct job {
    char *path;       /* the job file as given (or the label of job_load_string) */
    char *model;      /* model directory (Hugging Face layout) */
    char *output;     /* output directory */
    job_device device;
    int tp;           /* tensor-parallel degree the calibration is made for */
    bool has_seed;    /* global `seed` given (it is the default of the seeds below) */
    uint64_t seed;

    struct job_cache {
        char *dir;                /* default OUTPUT/cache */
        job_cache_dtype dtype;    /* default bf16 */
        bool delete_consumed;     /* delete boundaries no pending layer needs */
    } cache;

    bool calibrate;   /* the job has a calibration section (false: eval-only job) */
    struct job_calibration {
        char **text;  /* text files (>= 1 when calibrate) */
        int n_text;
        int nsamples, seqlen, batch;
        uint64_t seed;            /* window sampling */
    } calibration;

    struct job_quantization {
        job_method method;        /* never JOB_METHOD_FP */
        int w_bits, a_bits, kv_bits;   /* 2..8, or 16 = not quantized */
        bool w_sym, a_sym, kv_sym;
        int kv_group;             /* 0 = one group per head vector */
        int epochs, warmup_steps;
        int restarts;             /* trainings per layer (seeds seed, seed+1, ...); the lowest loss is kept */
        double lr, clip_lr, lr_min, weight_decay;
        double alpha, clip_init, smooth_alpha, quarot_act_clip, quarot_kv_clip;
        job_scale_init scale_init;
        job_init init;
        job_weight_quantizer weight_quantizer;
        job_gpu_math gpu_math;
        double gptq_damp;         /* fraction of mean(diag H) */
        int gptq_block;
        int gptq_nsamples;        /* windows the GPTQ pass uses (the first ones); 0 = all */
        bool gptq_act_order;      /* columns by descending diag H (core/gptq.h) */
        bool gptq_clip_search;    /* per-row scale searched against diag H (core/gptq.h) */
        bool direct_inv, separate_vtrans, share_act_clip;
        uint64_t seed;            /* transform initialisation RNG */
    } quantization;

    bool evaluate;    /* the job has an eval section */
    struct job_eval {
        char **text;
        int n_text;
        int seqlen;
        job_method methods[JOB_METHOD_COUNT];
        int n_methods;
        int max_windows;          /* 0 = all */
    } eval;

    struct job_report {
        char *dir;                /* default OUTPUT */
    } report;

    job_origin *origins;          /* see job_where() */
    int n_origins;
} job;

/* Load PATH, its includes, then the --set overrides ("key.path=value", the value a
 * YAML scalar or flow list), validate, and fill *out (job_free it, also on error). */
int job_load(const char *path, const char *const *sets, int n_sets, job *out);
/* The same from a string; `label` names it in errors; includes and relative paths
 * resolve against the current directory. */
int job_load_string(const char *yaml, size_t len, const char *label, job *out);
/* All defaults, no model/output/texts (for the CLI's non-job mode). */
int job_defaults(job *j);
void job_free(job *j);

/* Range and cross-field checks (job_load runs them; call again after editing a job). */
int job_validate(const job *j);
/* Checks that need the model's shape: kv_group divides head_dim, tp divides the
 * intermediate size (shard-local down transform, ALGORITHM.md §7). */
int job_check_model(const job *j, int head_dim, int hidden, int intermediate);
/* Where KEY ("quantization.w_bits") was set; "default" when it was not. */
const char *job_where(const job *j, const char *key);

/* The fully resolved job as YAML that job_load_string accepts again. */
int job_print(const job *j, FILE *out);
/* The canonical text of everything that changes calibration results (not output,
 * cache or report dirs, eval keys, device, delete_consumed); caller frees *text. */
int job_canonical(const job *j, char **text);
/* sha256 of job_canonical(), lower-case hex. */
int job_fingerprint(const job *j, char hex[65]);

/* Names of enum values as the job file spells them. */
const char *job_method_name(job_method m);
const char *job_device_name(job_device d);
const char *job_cache_dtype_name(job_cache_dtype d);

#endif
