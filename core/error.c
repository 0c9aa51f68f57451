/* error.c — thread-local last-error buffer (see error.h). */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char fq_err_buf[2048];

int fq_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fq_err_buf, sizeof fq_err_buf, fmt, ap);
    va_end(ap);
    return FQ_ERR;
}

int fq_error_wrap(const char *fmt, ...)
{
    char prefix[1024], old[sizeof fq_err_buf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, fq_err_buf, sizeof old);
    /* Truncation of an over-long message is acceptable: it stays one line. */
    size_t np = strlen(prefix);
    if (np > sizeof fq_err_buf - 3)
        np = sizeof fq_err_buf - 3;
    memcpy(fq_err_buf, prefix, np);
    memcpy(fq_err_buf + np, ": ", 2);
    size_t room = sizeof fq_err_buf - np - 3, no = strlen(old);
    if (no > room)
        no = room;
    memcpy(fq_err_buf + np + 2, old, no);
    fq_err_buf[np + 2 + no] = '\0';
    return FQ_ERR;
}

const char *fq_errmsg(void) { return fq_err_buf; }

void fq_error_clear(void) { fq_err_buf[0] = '\0'; }

void *fq_malloc(size_t n, const char *what)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        fq_error("out of memory allocating %zu bytes for %s", n, what ? what : "?");
    return p;
}

void *fq_calloc(size_t count, size_t size, const char *what)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        fq_error("out of memory allocating %zu x %zu bytes for %s", count, size,
                 what ? what : "?");
    return p;
}

char *fq_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = fq_malloc(n, "string");
    if (p)
        memcpy(p, s, n);
    return p;
}
