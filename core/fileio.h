/* fileio.h — small file helpers shared by the loaders. */
#ifndef FQ_FILEIO_H
#define FQ_FILEIO_H

#include <stddef.h>

/* Read a whole file into a malloc'ed buffer (NUL-terminated; *len excludes the NUL).
 * A file that cannot be opened leaves errno as open set it (ENOENT: absent). */
int fq_read_file(const char *path, char **buf, size_t *len);

#endif
