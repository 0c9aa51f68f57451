/* safetensors_ckpt.c — open a Hugging Face checkpoint directory: one
 * model.safetensors, or the shards that model.safetensors.index.json lists.
 *
 * The index is the authority on which tensors exist, so it is checked against the
 * shards, not trusted: each shard it names is opened once, every tensor it lists must be
 * in the shard it names, and a tensor present in two shards is an error (which copy
 * would win is otherwise an accident of search order). Shard names must be plain file
 * names: a crafted index must not reach files outside the checkpoint directory.
 * Tensors present in a shard but absent from the index are tolerated; the shards
 * themselves are fully validated by st_file_open.
 */
#include "safetensors.h"
#include "error.h"
#include "msg_escape.h"

#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_SINGLE_NAME "model.safetensors"

static char *path_join(const char *dir, const char *name)
{
    size_t nd = strlen(dir), nn = strlen(name);
    char *p = fq_malloc(nd + nn + 2, "checkpoint path");
    if (!p)
        return NULL;
    memcpy(p, dir, nd);
    size_t o = nd;
    if (nd && dir[nd - 1] != '/')
        p[o++] = '/';
    memcpy(p + o, name, nn + 1);
    return p;
}

static int is_regular_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

void st_checkpoint_close(st_checkpoint *ck)
{
    if (!ck)
        return;
    for (size_t i = 0; i < ck->n_files; i++)
        st_file_close(&ck->files[i]);
    free(ck->files);
    free(ck->dir);
    memset(ck, 0, sizeof *ck);
}

const st_tensor *st_checkpoint_find(const st_checkpoint *ck, const char *name)
{
    if (!ck || !name)
        return NULL;
    for (size_t i = 0; i < ck->n_files; i++) {
        const st_tensor *t = st_file_find(&ck->files[i], name);
        if (t)
            return t;
    }
    return NULL;
}

static int open_single(const char *path, st_checkpoint *ck)
{
    ck->files = fq_calloc(1, sizeof *ck->files, "checkpoint file table");
    if (!ck->files)
        return FQ_ERR;
    if (st_file_open(path, &ck->files[0]) != FQ_OK)
        return FQ_ERR;
    ck->n_files = 1;
    return FQ_OK;
}

static int valid_shard_name(const char *s)
{
    return s[0] && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

typedef struct { const char *name; size_t file; } name_in_file;

static int name_in_file_cmp(const void *a, const void *b)
{
    const name_in_file *x = a, *y = b;
    return strcmp(x->name, y->name);
}

/* A tensor in two shards: report the first such name in sorted order. */
static int check_unique_across_shards(const st_checkpoint *ck, const char *ipath)
{
    size_t total = 0;
    for (size_t i = 0; i < ck->n_files; i++)
        total += ck->files[i].n_tensors;
    name_in_file *all = fq_calloc(total, sizeof *all, "checkpoint name table");
    if (!all)
        return fq_error_wrap("%s", ipath);
    size_t k = 0;
    for (size_t i = 0; i < ck->n_files; i++)
        for (size_t j = 0; j < ck->files[i].n_tensors; j++)
            all[k++] = (name_in_file){ck->files[i].tensors[j].name, i};
    qsort(all, total, sizeof *all, name_in_file_cmp);
    int rc = FQ_OK;
    for (size_t i = 1; i < total; i++) {
        if (strcmp(all[i - 1].name, all[i].name) == 0) {
            char shown[96];
            fq_msg_escape(all[i].name, shown, sizeof shown);
            rc = fq_error("%s: tensor '%s' is in two shards, %s and %s (expected each "
                          "tensor in exactly one shard)", ipath, shown,
                          ck->files[all[i - 1].file].path, ck->files[all[i].file].path);
            break;
        }
    }
    free(all);
    return rc;
}

static int open_sharded(const char *dir, const char *ipath, st_checkpoint *ck)
{
    json_error_t jerr;
    json_t *root = json_load_file(ipath, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        char why[160];
        return fq_error("%s:%d:%d: %s (expected a JSON index with a \"weight_map\")", ipath,
                        jerr.line, jerr.column, fq_msg_escape(jerr.text, why, sizeof why));
    }
    int rc = FQ_ERR;
    const char **shards = NULL;
    size_t n_shards = 0;
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        fq_error("%s: missing, empty or non-object \"weight_map\" (expected an object "
                 "mapping tensor names to shard files)", ipath);
        goto out;
    }
    shards = fq_calloc(json_object_size(wm), sizeof *shards, "checkpoint shard list");
    if (!shards)
        goto out;
    const char *tname;
    json_t *sv;
    json_object_foreach(wm, tname, sv) {
        char shown[96];
        fq_msg_escape(tname, shown, sizeof shown);
        if (!json_is_string(sv) || !valid_shard_name(json_string_value(sv))) {
            fq_error("%s: weight_map['%s'] is not a shard file name (expected a file name "
                     "inside %s, e.g. \"model-00001-of-00002.safetensors\")", ipath, shown,
                     dir);
            goto out;
        }
        const char *s = json_string_value(sv);
        size_t i = 0;
        while (i < n_shards && strcmp(shards[i], s) != 0)
            i++;
        if (i == n_shards)
            shards[n_shards++] = s;
    }
    ck->files = fq_calloc(n_shards, sizeof *ck->files, "checkpoint file table");
    if (!ck->files)
        goto out;
    for (size_t i = 0; i < n_shards; i++) {
        char *sp = path_join(dir, shards[i]);
        if (!sp)
            goto out;
        int orc = st_file_open(sp, &ck->files[i]);
        free(sp);
        if (orc != FQ_OK) {
            char shown[96];
            fq_msg_escape(shards[i], shown, sizeof shown);
            fq_error_wrap("%s: shard '%s'", ipath, shown);
            goto out;
        }
        ck->n_files++;
    }
    json_object_foreach(wm, tname, sv) {
        const char *s = json_string_value(sv);
        size_t i = 0;
        while (strcmp(shards[i], s) != 0)
            i++;
        if (!st_file_find(&ck->files[i], tname)) {
            char shown[96], sshown[96];
            fq_msg_escape(tname, shown, sizeof shown);
            fq_msg_escape(s, sshown, sizeof sshown);
            fq_error("%s: tensor '%s' is listed in shard '%s' but that shard does not "
                     "contain it (expected every indexed tensor in its shard)", ipath,
                     shown, sshown);
            goto out;
        }
    }
    rc = check_unique_across_shards(ck, ipath);
out:
    free(shards);
    json_decref(root);
    return rc;
}

int st_checkpoint_open(const char *dir, st_checkpoint *ck)
{
    if (!ck)
        return fq_error("st_checkpoint_open: output is NULL (expected an st_checkpoint)");
    memset(ck, 0, sizeof *ck);
    if (!dir || !dir[0])
        return fq_error("st_checkpoint_open: directory is empty (expected a checkpoint "
                        "directory)");
    ck->dir = fq_strdup(dir);
    if (!ck->dir)
        return FQ_ERR;
    int rc;
    if (is_regular_file(dir)) {
        /* A single .safetensors file named directly. */
        rc = open_single(dir, ck);
    } else {
        char *ipath = path_join(dir, ST_INDEX_NAME);
        char *spath = path_join(dir, ST_SINGLE_NAME);
        if (!ipath || !spath)
            rc = FQ_ERR;
        else if (is_regular_file(ipath))
            rc = open_sharded(dir, ipath, ck);
        else if (is_regular_file(spath))
            rc = open_single(spath, ck);
        else
            rc = fq_error("%s: no %s or %s (expected a Hugging Face checkpoint directory)",
                          dir, ST_SINGLE_NAME, ST_INDEX_NAME);
        free(ipath);
        free(spath);
    }
    if (rc != FQ_OK)
        st_checkpoint_close(ck);
    return rc;
}
