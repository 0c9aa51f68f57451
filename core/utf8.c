/* utf8.c — see utf8.h. Table-free: the second-byte ranges that rule out overlongs and
 * surrogates (E0, ED, F0, F4) are spelled out, the rest is bit tests. */
#include "utf8.h"

#include <string.h>

/* How many continuation bytes of s (at most avail-1) are valid; sets *need to the count
 * the lead byte asks for (0 for ASCII, -1 for a byte that cannot lead). */
static size_t valid_prefix(const unsigned char *s, size_t avail, int *need)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80, hi = 0xbf;
    if (c < 0x80) {
        *need = 0;
        return 0;
    }
    if (c >= 0xc2 && c <= 0xdf)
        *need = 1;
    else if (c >= 0xe0 && c <= 0xef) {
        *need = 2;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        *need = 3;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        *need = -1;
        return 0;
    }
    size_t k = 0;
    while ((int)k < *need && k + 1 < avail) {
        unsigned char d = s[k + 1];
        if (d < lo || d > hi)
            break;
        lo = 0x80;
        hi = 0xbf;
        k++;
    }
    return k;
}

size_t utf8_seq_len(const unsigned char *s, size_t avail)
{
    if (avail == 0)
        return 0;
    int need;
    size_t k = valid_prefix(s, avail, &need);
    if (need < 0 || (int)k != need)
        return 0;
    return (size_t)need + 1;
}

size_t utf8_first_invalid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_seq_len(s + i, len - i);
        if (n == 0)
            return i;
        i += n;
    }
    return len;
}

uint32_t utf8_decode(const unsigned char *s, size_t n)
{
    switch (n) {
    case 1: return s[0];
    case 2: return (uint32_t)(s[0] & 0x1f) << 6 | (s[1] & 0x3f);
    case 3: return (uint32_t)(s[0] & 0x0f) << 12 | (uint32_t)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
    default:
        return (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3f) << 12 |
               (uint32_t)(s[2] & 0x3f) << 6 | (s[3] & 0x3f);
    }
}

size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

size_t utf8_repair(const unsigned char *s, size_t len, char *out)
{
    size_t i = 0, o = 0;
    while (i < len) {
        int need;
        size_t k = valid_prefix(s + i, len - i, &need);
        if (need >= 0 && (int)k == need) {
            memcpy(out + o, s + i, k + 1);
            o += k + 1;
            i += k + 1;
        } else {
            /* The lead byte plus the continuation bytes that were still valid form one
             * maximal subpart: one replacement character for all of them. */
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i += need < 0 ? 1 : k + 1;
        }
    }
    return o;
}

size_t utf8_prefix_bytes(const char *s, size_t len, long chars)
{
    size_t i = 0;
    for (long c = 0; c < chars && i < len; c++) {
        i++;
        while (i < len && ((unsigned char)s[i] & 0xC0) == 0x80)
            i++;
    }
    return i;
}
