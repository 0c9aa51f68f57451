/* fileio.c — whole-file reads with one-line errors naming the path. */
#include "fileio.h"
#include "error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fq_read_file(const char *path, char **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        fq_error("%s: cannot open (%s; expected a readable file)", path, strerror(e));
        errno = e; /* callers tell "absent" (ENOENT) from other failures */
        return FQ_ERR;
    }
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *nb = realloc(b, cap * 2 + 1);
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!b)
        return fq_error("%s: out of memory reading the file", path);
    if (err) {
        free(b);
        return fq_error("%s: read error (expected a readable file)", path);
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return FQ_OK;
}
