/* msg_escape.c — escape untrusted text for one-line error messages (see msg_escape.h). */
#include "msg_escape.h"

#include <string.h>

const char *fq_msg_escape(const char *s, char *out, size_t cap)
{
    if (!out || cap < 16)
        return "";
    if (!s)
        s = "(null)";
    static const char hex[] = "0123456789abcdef";
    /* Room for one 4-byte escape plus "..." and the NUL after the last copied byte. */
    const size_t keep = cap - 8;
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (o >= keep) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (*p < 0x20 || *p == 0x7f) {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        } else {
            out[o++] = (char)*p;
        }
    }
    out[o] = '\0';
    return out;
}
