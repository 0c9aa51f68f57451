/* atomic_file.h — write a file so that readers see the old state or the new one, never
 * half of one.
 *
 * The bytes go to a temporary name in the destination's directory (same filesystem, so
 * rename is atomic), are fsync'ed, renamed over the final name, and the directory is
 * fsync'ed so the rename itself survives a crash. On any error the temporary file is
 * removed and the message names the file and the errno text. The temporary name carries
 * the pid and a counter, so two processes writing the same final name never share a temp
 * file; the last rename wins, which is fine for flatq because both write equal bytes.
 */
#ifndef FQ_ATOMIC_FILE_H
#define FQ_ATOMIC_FILE_H

#include <stddef.h>
#include <sys/types.h>

typedef struct {
    int fd;
    char *path;     /* final name */
    char *tmp_path; /* where the bytes go until commit */
} atomic_file;

/* Create the temporary file for `path`; f->fd can also be used with pwrite(). */
int atomic_file_open(atomic_file *f, const char *path);
/* Append n bytes (retries short writes). */
int atomic_file_write(atomic_file *f, const void *data, size_t n);
/* Write n bytes at an absolute offset (for headers filled in last). */
int atomic_file_pwrite(atomic_file *f, const void *data, size_t n, off_t offset);
/* fsync, close, rename onto the final name, fsync the directory. Frees f. On error the
 * temporary file is removed (f is freed either way). */
int atomic_file_commit(atomic_file *f);
/* close and rename onto the final name WITHOUT the fsyncs: readers on the running system
 * still see the old file or the whole new one, but after a crash the renamed file may hold
 * garbage. Only for files that are regenerable and that every reader validates by content
 * (the layer cache: per-sample SHA-256 digests, checked on every read and before a resumed
 * job reuses a boundary): the fsync of a 4 GB cache file was most of its write time, on
 * the FP pass's critical path (bench/NOTES.md, session 9). Frees f; on error as commit. */
int atomic_file_commit_nosync(atomic_file *f);
/* Give up: close and remove the temporary file, free f. Safe on a zeroed f. */
void atomic_file_abort(atomic_file *f);

/* One-shot: the whole file from one buffer. */
int atomic_file_put(const char *path, const void *data, size_t n);


#endif
