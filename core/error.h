/* error.h — how flatq reports failure.
 *
 * Every library function returns an int status (FQ_OK = 0, FQ_ERR = -1) and, on
 * failure, leaves one human-readable line in a thread-local buffer. The line has the
 * shape the users see after "flatq: ": "FILE:where: what is wrong (expected …)".
 * Callers may prepend context with fq_error_wrap(). Only main() prints and exits.
 */
#ifndef FQ_ERROR_H
#define FQ_ERROR_H

#include <stddef.h>

enum { FQ_OK = 0, FQ_ERR = -1 };

#if defined(__GNUC__)
#define FQ_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define FQ_PRINTF(a, b)
#endif

/* Record an error message (printf-style); always returns FQ_ERR. */
int fq_error(const char *fmt, ...) FQ_PRINTF(1, 2);
/* Prepend context ("PREFIX: " + old message); always returns FQ_ERR. */
int fq_error_wrap(const char *fmt, ...) FQ_PRINTF(1, 2);
/* The last recorded message ("" if none). */
const char *fq_errmsg(void);
void fq_error_clear(void);

/* Allocation that records an error naming what was being allocated. */
void *fq_malloc(size_t n, const char *what);
void *fq_calloc(size_t count, size_t size, const char *what);
char *fq_strdup(const char *s);

#endif
