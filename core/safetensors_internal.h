/* safetensors_internal.h — helpers shared by the safetensors reader, writer and
 * checkpoint code; not part of the public API. */
#ifndef FQ_SAFETENSORS_INTERNAL_H
#define FQ_SAFETENSORS_INTERNAL_H

#include <stddef.h>

/* Copy `name` into out[cap] for an error message: control bytes escaped as \xNN and
 * long names cut with "...", so the message stays one readable line. */
void st_name_for_msg(const char *name, char *out, size_t cap);

#endif
