/* atomic_file.c — temp file + fsync + rename + fsync(dir) (or without the fsyncs for
 * self-validating caches); see atomic_file.h. */
#include "atomic_file.h"
#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static atomic_uint tmp_counter;

int atomic_file_open(atomic_file *f, const char *path)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    if (!path || !*path)
        return fq_error("atomic_file_open: empty path (expected a file name)");
    f->path = fq_strdup(path);
    size_t cap = strlen(path) + 64;
    f->tmp_path = fq_malloc(cap, "temporary file name");
    if (!f->path || !f->tmp_path) {
        atomic_file_abort(f);
        return FQ_ERR;
    }
    snprintf(f->tmp_path, cap, "%s.tmp.%ld.%u", path, (long)getpid(),
             atomic_fetch_add(&tmp_counter, 1u));
    f->fd = open(f->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        int e = errno;
        fq_error("%s: cannot create (%s; expected a writable directory)", f->tmp_path,
                 strerror(e));
        atomic_file_abort(f);
        return FQ_ERR;
    }
    return FQ_OK;
}

int atomic_file_write(atomic_file *f, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(f->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return fq_error("%s: write failed (%s)", f->path,
                            w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
    }
    return FQ_OK;
}

int atomic_file_pwrite(atomic_file *f, const void *data, size_t n, off_t offset)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = pwrite(f->fd, p, n, offset);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return fq_error("%s: write failed (%s)", f->path,
                            w < 0 ? strerror(errno) : "no progress");
        p += w;
        offset += w;
        n -= (size_t)w;
    }
    return FQ_OK;
}

static int fsync_parent_dir(const char *path)
{
    char *dir = fq_strdup(path);
    if (!dir)
        return FQ_ERR;
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = FQ_OK;
    if (fd < 0 || fsync(fd) != 0)
        rc = fq_error("%s: cannot sync directory (%s)", dir, strerror(errno));
    if (fd >= 0)
        close(fd);
    free(dir);
    return rc;
}

static int commit(atomic_file *f, int durable)
{
    if (durable && fsync(f->fd) != 0) {
        fq_error("%s: fsync failed (%s)", f->path, strerror(errno));
        atomic_file_abort(f);
        return FQ_ERR;
    }
    int fd = f->fd;
    f->fd = -1;
    if (close(fd) != 0) {
        fq_error("%s: close failed (%s)", f->path, strerror(errno));
        atomic_file_abort(f);
        return FQ_ERR;
    }
    if (rename(f->tmp_path, f->path) != 0) {
        fq_error("%s: rename from temporary file failed (%s)", f->path, strerror(errno));
        atomic_file_abort(f);
        return FQ_ERR;
    }
    int rc = durable ? fsync_parent_dir(f->path) : FQ_OK;
    free(f->tmp_path);
    free(f->path);
    f->tmp_path = f->path = NULL;
    return rc;
}

int atomic_file_commit(atomic_file *f) { return commit(f, 1); }
int atomic_file_commit_nosync(atomic_file *f) { return commit(f, 0); }

void atomic_file_abort(atomic_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    if (f->tmp_path)
        unlink(f->tmp_path);
    free(f->tmp_path);
    free(f->path);
    f->tmp_path = f->path = NULL;
}

int atomic_file_put(const char *path, const void *data, size_t n)
{
    atomic_file f;
    if (atomic_file_open(&f, path) != FQ_OK)
        return FQ_ERR;
    if (atomic_file_write(&f, data, n) != FQ_OK) {
        atomic_file_abort(&f);
        return FQ_ERR;
    }
    return atomic_file_commit(&f);
}
