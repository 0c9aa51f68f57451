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

/* Escape control characters (\n, \t, others as \xNN) of S into OUT (always
 * NUL-terminated, truncated to CAP): user text quoted in an error stays on one line. */
void job_one_line(const char *s, char *out, size_t cap);
/* Re-record the current error message through job_one_line; returns FQ_ERR. */
int job_error_one_line(void);

/* Read a regular file of at most MAX bytes (NUL-terminated). */
int job_read_file(const char *path, size_t max, char **buf, size_t *len);

#endif
