/* job_paths.c — ${ENV} expansion, path resolution and bounded file reading for job
 * loading.
 *
 * Paths are made absolute and normalised lexically ("a/b/../c" → "a/c") after the
 * directory they are relative to has been canonicalised with realpath(): the printed
 * job then shows paths that work from any directory (sbatch jobs start anywhere), and
 * the fingerprint does not change with the directory the job was launched from. The
 * lexical step does not follow symlinks inside the user's relative path; that is the
 * usual shell behaviour for "..". Files are opened non-blocking and must be regular,
 * so an include of a FIFO or /dev/zero fails instead of hanging.
 */
#include "job_paths.h"

#include "error.h"

#include <ctype.h>
#include <stdio.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char *p;
    size_t n, cap;
} strbuf;

static int sb_add(strbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return fq_error("out of memory building a string");
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return FQ_OK;
}

int job_expand_env(const char *in, char **out, int *env_first)
{
    strbuf b = {0};
    *out = NULL;
    if (env_first)
        *env_first = 0;
    if (sb_add(&b, "", 0) != FQ_OK)
        return FQ_ERR;
    for (const char *s = in; *s;) {
        if (s[0] == '$' && s[1] == '$' && s[2] == '{') {
            if (sb_add(&b, "${", 2) != FQ_OK)
                goto fail;
            s += 3;
            continue;
        }
        if (!(s[0] == '$' && s[1] == '{')) {
            if (sb_add(&b, s, 1) != FQ_OK)
                goto fail;
            s++;
            continue;
        }
        const char *name = s + 2, *e = name;
        while (isalnum((unsigned char)*e) || *e == '_')
            e++;
        size_t nlen = (size_t)(e - name);
        if (nlen == 0 || isdigit((unsigned char)*name) || nlen > 255 ||
            !(*e == '}' || (e[0] == ':' && e[1] == '-'))) {
            fq_error("bad variable reference near '%.20s' (expected ${NAME} or "
                     "${NAME:-default}, or $${ for a literal ${)", s);
            goto fail;
        }
        char var[256];
        memcpy(var, name, nlen);
        var[nlen] = '\0';
        const char *val = getenv(var), *def = NULL, *end = e;
        size_t dlen = 0;
        if (*e == ':') {
            def = e + 2;
            end = strchr(def, '}');
            if (!end) {
                fq_error("unterminated ${%s:-...} (expected a closing '}')", var);
                goto fail;
            }
            dlen = (size_t)(end - def);
        }
        int use_env = val && (*val || !def);
        if (!use_env && !def) {
            fq_error("environment variable %s is not set (expected it set, or a default: "
                     "${%s:-VALUE})", var, var);
            goto fail;
        }
        if (env_first && b.n == 0 && use_env && *val)
            *env_first = 1;
        if (use_env ? sb_add(&b, val, strlen(val)) : sb_add(&b, def, dlen))
            goto fail;
        s = end + 1;
    }
    *out = b.p;
    return FQ_OK;
fail:
    free(b.p);
    return FQ_ERR;
}

char *job_dirname(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return fq_strdup(".");
    if (slash == path)
        return fq_strdup("/");
    size_t n = (size_t)(slash - path);
    char *d = fq_malloc(n + 1, "directory name");
    if (d) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

/* Normalise an absolute path in place: drop "." and empty segments, apply "..". */
static void normalise_abs(char *p)
{
    char *w = p; /* write cursor; p[0] == '/' */
    const char *r = p;
    while (*r) {
        while (*r == '/')
            r++;
        const char *seg = r;
        while (*r && *r != '/')
            r++;
        size_t n = (size_t)(r - seg);
        if (n == 0 || (n == 1 && seg[0] == '.'))
            continue;
        if (n == 2 && seg[0] == '.' && seg[1] == '.') {
            while (w > p && *(w - 1) != '/')
                w--;
            if (w > p)
                w--; /* the '/' before the dropped segment */
            continue;
        }
        *w++ = '/';
        memmove(w, seg, n);
        w += n;
    }
    if (w == p)
        *w++ = '/';
    *w = '\0';
}

int job_resolve_path(const char *base_dir, const char *p, char **out)
{
    *out = NULL;
    if (!p || !*p)
        return fq_error("empty path (expected a file or directory name)");
    strbuf b = {0};
    if (p[0] != '/') {
        char *base = NULL;
        if (base_dir)
            base = realpath(base_dir, NULL);
        if (!base) {
            char cwd[PATH_MAX];
            if (!getcwd(cwd, sizeof cwd))
                return fq_error("cannot read the current directory: %s", strerror(errno));
            if (sb_add(&b, cwd, strlen(cwd)) != FQ_OK)
                return FQ_ERR;
            if (base_dir && base_dir[0] == '/') {
                b.n = 0; /* absolute base that does not exist yet */
                if (sb_add(&b, base_dir, strlen(base_dir)) != FQ_OK)
                    goto fail;
            } else if (base_dir && (sb_add(&b, "/", 1) || sb_add(&b, base_dir, strlen(base_dir))))
                goto fail;
        } else {
            int rc = sb_add(&b, base, strlen(base));
            free(base);
            if (rc != FQ_OK)
                goto fail;
        }
        if (sb_add(&b, "/", 1) != FQ_OK)
            goto fail;
    }
    if (sb_add(&b, p, strlen(p)) != FQ_OK)
        goto fail;
    normalise_abs(b.p);
    *out = b.p;
    return FQ_OK;
fail:
    free(b.p);
    return FQ_ERR;
}

int job_read_file(const char *path, size_t max, char **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return fq_error("%s: cannot open: %s (expected a readable job file)", path,
                        strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fq_error("%s: not a regular file (expected a YAML job file)", path);
    }
    if ((size_t)st.st_size > max) {
        close(fd);
        return fq_error("%s: %lld bytes (expected a job file of at most %zu bytes)", path,
                        (long long)st.st_size, max);
    }
    char *p = fq_malloc((size_t)st.st_size + 1, "job file");
    if (!p) {
        close(fd);
        return FQ_ERR;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, p + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    p[got] = '\0';
    *buf = p;
    *len = got;
    return FQ_OK;
}

void job_one_line(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    if (cap == 0)
        return;
    for (const unsigned char *p = (const unsigned char *)s; *p && o + 5 < cap; p++) {
        if (*p == '\n' || *p == '\t' || *p == '\r') {
            out[o++] = '\\';
            out[o++] = *p == '\n' ? 'n' : *p == '\t' ? 't' : 'r';
        } else if (*p < 0x20 || *p == 0x7f) {
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", *p);
        } else {
            out[o++] = (char)*p;
        }
    }
    out[o] = '\0';
}

int job_error_one_line(void)
{
    char clean[4096];
    job_one_line(fq_errmsg(), clean, sizeof clean);
    return fq_error("%s", clean);
}
