/* synth_model.h — synthetic LLaMA-shaped checkpoints for benchmarks (issues 6 and 8).
 *
 * Real 70B weights never travel to the GPU machine; what a calibration or inference
 * benchmark needs is the right SHAPES and activation statistics that look like LLaMA's.
 * This generator writes a Hugging Face directory (config.json, sharded bf16 safetensors
 * with model.safetensors.index.json, tokenizer files) that every flatq loader accepts, and
 * optionally flatq's quantized format of the same weights (core/FORMAT.md).
 *
 * Values. Every element is a function of (seed, tensor, row, column) only: each row draws
 * from its own xoshiro stream seeded by (seed, tensor id, row), so bytes do not depend on
 * the number of threads, the shard limit or the order of writing. Samples are Irwin–Hall
 * sums of four 16-bit uniforms scaled to unit variance (one 64-bit draw per value, about
 * ten times cheaper than Box–Muller; tails end at ±3.46σ, which is fine for weights).
 *   - linear weights [out, in]: std 1/sqrt(in);
 *   - embeddings and lm_head [V, d]: std 1/sqrt(d);
 *   - RMSNorm weights: 1 + 0.05·z.
 * Outliers: SYNTH_OUTLIERS residual channels (drawn from the seed) each get a gain in
 * [20, 100] (log-uniform). The embedding columns of those channels, the matching input
 * columns of q/k/v/gate/up, and the matching output rows of o_proj/down_proj are multiplied
 * by it. The first two make per-token activation ranges look like LLaMA's (a few channels
 * 20–100× the median, weights with outlier columns); the third keeps the outliers alive in
 * the residual stream layer after layer, as LLaMA's massive activations are. Trade-off: the
 * stream's magnitude grows with depth faster than a trained model's (the MLP is dominated
 * by the outlier channels); the FP pass caches it in bf16 when fp16 would overflow.
 *
 * Speed: shards are written with pwrite by a pool of threads working on row chunks of the
 * current tensor (no tensor is ever whole in memory); the quantized writer quantizes row
 * chunks in the same pool (row-wise RTN, so chunking changes nothing).
 */
#ifndef FQ_SYNTH_MODEL_H
#define FQ_SYNTH_MODEL_H

#include "llama_config.h"
#include "llama_model.h"

#include <stddef.h>
#include <stdint.h>

#define SYNTH_OUTLIERS 4
#define SYNTH_SHARD_BYTES 5000000000ull

typedef struct {
    const char *name;
    int hidden, n_heads, n_kv_heads, head_dim, intermediate, vocab, max_pos;
    double rope_theta;
    int rope_llama3; /* LLaMA-3.1 scaling: factor 8, low 1, high 4, original 8192 */
    int tie_embeddings;
} synth_shape;

typedef struct {
    synth_shape shape;
    int n_layers;
    uint64_t seed;
    int bos_id, eos_id;       /* written to config.json */
    int outlier_ch[SYNTH_OUTLIERS];
    float outlier_gain[SYNTH_OUTLIERS];
    int threads;              /* ≥ 1 */
    uint64_t shard_bytes;     /* shard size limit (SYNTH_SHARD_BYTES by default) */
} synth_spec;

/* The known shapes: llama-3-70b, llama-3-8b, flatq-16m, stories260k. */
const synth_shape *synth_shape_find(const char *name);
/* "llama-3-70b, llama-3-8b, ..." for error messages. */
const char *synth_shape_list(void);

/* Fill spec for shape `name`, n_layers ≥ 1, seed (outlier channels and gains drawn from
 * it); threads = online CPUs; bos/eos 1/2. */
int synth_spec_init(synth_spec *s, const char *shape, int n_layers, uint64_t seed);
/* The llama_config a loader will read from the config.json this spec writes. */
void synth_spec_config(const synth_spec *s, llama_config *c);

/* The tensors in checkpoint order: embed, per layer the 9 of llama_layer, norm, lm_head
 * (absent when tied). */
int synth_tensor_count(const synth_spec *s);
/* Name (cap bytes), rows and cols (cols = 0 for 1-D tensors, rows = their length). */
int synth_tensor_info(const synth_spec *s, int t, char *name, size_t cap, int64_t *rows,
                      int64_t *cols);
/* Rows [row0, row0 + nrows) of tensor t as fp32 (exactly representable in bf16, so the
 * bf16 checkpoint holds these very values). */
int synth_tensor_rows(const synth_spec *s, int t, int64_t row0, int64_t nrows, float *out);

/* Layer i's weights in memory (what llama_layer_load would read from the checkpoint). */
int synth_layer_generate(const synth_spec *s, int i, llama_layer *l);

/* Write dir/config.json, the bf16 shards and model.safetensors.index.json (dir is created
 * if missing). Each file is written atomically. */
int synth_write_checkpoint(const synth_spec *s, const char *dir);
/* Copy tokenizer.json (and tokenizer_config.json when present) from tok (a directory or a
 * tokenizer.json path) into dir. */
int synth_copy_tokenizer(const char *tok, const char *dir);
/* Write flatq's quantized format of the same weights into qdir: identity transforms,
 * W4 RTN per output row, every clip ratio 0.98, method "rtn", W4A4KV4; tokenizer and
 * config copied from src_dir (a checkpoint synth_write_checkpoint wrote). */
int synth_write_quantized(const synth_spec *s, const char *src_dir, const char *qdir,
                          int tp_blocks);

#endif
