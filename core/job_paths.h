/* job_paths.h — the string and file helpers of job loading: ${ENV} expansion,
 * path resolution, bounded reading of a job file. Errors carry no location: the
 * caller prefixes FILE:LINE:COL and the key (fq_error_wrap). */
#ifndef FQ_JOB_PATHS_H
#define FQ_JOB_PATHS_H

#include <stddef.h>

/* Expand ${NAME} and ${NAME:-default} (default used when NAME is unset or empty);
 * "$${" is a literal "${"; a lone '$' is literal. *env_first is set to 1 when the
 * result starts with the value of an environment variable (not a default). */
int job_expand_env(const char *in, char **out, int *env_first);

/* Absolute, lexically normalised path: P itself when absolute, else BASE_DIR/P
 * (BASE_DIR NULL or relative: against the current directory; an existing BASE_DIR is
 * canonicalised first so symlinked job directories behave). */
int job_resolve_path(const char *base_dir, const char *p, char **out);

/* Directory part of a path ("." when it has none). Caller frees. */
char *job_dirname(const char *path);

/* Read a regular file of at most MAX bytes (NUL-terminated). */
int job_read_file(const char *path, size_t max, char **buf, size_t *len);

#endif
