/* msg_escape.h — make untrusted text safe to quote inside a one-line error message.
 *
 * Error messages (core/error.h) are one line, but they often quote text from the input
 * (a tensor name, a JSON parser's "near '...'" excerpt, an architecture string). Such
 * text can hold newlines or terminal control bytes. fq_msg_escape copies it with control
 * bytes written as \xNN and long text cut with "...", so the message stays one readable
 * line whatever the input holds.
 */
#ifndef FQ_MSG_ESCAPE_H
#define FQ_MSG_ESCAPE_H

#include <stddef.h>

/* Escaped, shortened copy of s in out[cap] (cap >= 16); returns out for use as an
 * argument of fq_error. A NULL s gives "(null)". */
const char *fq_msg_escape(const char *s, char *out, size_t cap);

#endif
