/* safetensors.h — read and write Hugging Face safetensors files and checkpoints.
 *
 * Format: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"k": "v"}}, then the data section. The reader mmaps the file and
 * treats the header as hostile: length sane and inside the file, dtype known,
 * shape x dtype size == byte span, spans inside the data section and non-overlapping.
 * A checkpoint is a directory holding model.safetensors, or shards listed by
 * model.safetensors.index.json ("weight_map": name -> shard file).
 * The writer builds a file in memory order and commits it atomically
 * (temp file in the same directory, fsync, rename, fsync of the directory).
 */
#ifndef FQ_SAFETENSORS_H
#define FQ_SAFETENSORS_H

#include "dtype.h"

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    fq_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t nelem;
    size_t nbytes;
    const uint8_t *data; /* points into the mapping; unaligned in general */
} st_tensor;

typedef struct {
    char *path;
    uint8_t *map;
    size_t map_size;
    size_t n_tensors;
    st_tensor *tensors;  /* in file order of the header */
    size_t n_meta;
    char **meta_keys;
    char **meta_values;
} st_file;

/* Open and validate one file. On error *f is left zeroed and the message names path. */
int st_file_open(const char *path, st_file *f);
/* Validate a header + data held in memory (used by the reader and by the fuzzer).
 * buf is not copied; tensors point into it. `label` names the source in errors. */
int st_parse_buffer(const uint8_t *buf, size_t size, const char *label, st_file *f);
void st_file_close(st_file *f);
const st_tensor *st_file_find(const st_file *f, const char *name);
const char *st_file_meta(const st_file *f, const char *key);

typedef struct {
    char *dir;
    size_t n_files;
    st_file *files;
} st_checkpoint;

/* Open a checkpoint directory (single file or sharded via the index). Every tensor the
 * index names must exist in the shard it names; a name in two shards is an error. */
int st_checkpoint_open(const char *dir, st_checkpoint *ck);
void st_checkpoint_close(st_checkpoint *ck);
const st_tensor *st_checkpoint_find(const st_checkpoint *ck, const char *name);

/* Widen a floating tensor to fp32; `n` must equal t->nelem. */
int st_tensor_to_f32(const st_tensor *t, float *dst, size_t n);

/* ---- writer ---- */
typedef struct st_writer st_writer;

st_writer *st_writer_new(void);
/* Add a tensor; the data is copied. Names must be unique. */
int st_writer_add(st_writer *w, const char *name, fq_dtype dtype, int ndim,
                  const int64_t *shape, const void *data);
int st_writer_set_meta(st_writer *w, const char *key, const char *value);
/* Write atomically to path: tmp + fsync + rename. Tensors are laid out in the order
 * they were added, header keys sorted by name (as the Python library writes). */
int st_writer_commit(st_writer *w, const char *path);
void st_writer_free(st_writer *w);

#endif
