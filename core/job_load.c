/* job_load.c — job file → resolved job: includes, --set overrides, typed conversion.
 *
 * Three stages over one tree (yaml_tree.h) whose nodes remember their file and line:
 *  1. load the file and, depth first, the recipes it includes; each included tree is
 *     the base the including file is merged over (later includes override earlier);
 *  2. apply --set overrides as one more layer (their nodes name the --set argument);
 *  3. walk the schema (job_schema.c), then the range checks of job_validate (job.c).
 * Include files are looked for next to the including file, then in $FLATQ_CONFIGS, then
 * in a configs/ folder beside the including file or up to two levels above it (so
 * jobs/x.yaml finds configs/), then in the configs/ of the flatq tree the running
 * binary lives in, then in ./configs; a name without .yaml/.yml also matches NAME.yaml.
 */
#include "job.h"

#include "error.h"
#include "job_paths.h"
#include "job_schema.h"
#include "yaml_tree.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define JOB_MAX_FILE (1u << 20)
#define JOB_MAX_INCLUDE_DEPTH 16

typedef struct {
    yt_source *sources;
    char *stack_real[JOB_MAX_INCLUDE_DEPTH + 1]; /* canonical paths being loaded */
    const char *stack_label[JOB_MAX_INCLUDE_DEPTH + 1];
    int depth;
} loader;

/* "WHERE: KEY: message" at a node. */
static int at(const yt_node *n, const char *key, const char *fmt, ...) FQ_PRINTF(3, 4);
static int at(const yt_node *n, const char *key, const char *fmt, ...)
{
    char where[1200], msg[1024];
    yt_where(n, where, sizeof where);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fq_error("%s: %s: %s", where, key, msg);
}

/* ---------------------------------------------------------------- includes */

static int is_regular(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int has_yaml_suffix(const char *s)
{
    size_t n = strlen(s);
    return (n > 5 && !strcmp(s + n - 5, ".yaml")) || (n > 4 && !strcmp(s + n - 4, ".yml"));
}

/* Try DIR/NAME and DIR/NAME.yaml; on success *found is the path (caller frees). */
static int try_dir(const char *dir, const char *name, char **found)
{
    for (int ext = 0; ext < 2; ext++) {
        if (ext && has_yaml_suffix(name))
            break;
        size_t n = (dir ? strlen(dir) + 1 : 0) + strlen(name) + 6;
        char *p = fq_malloc(n, "include path");
        if (!p)
            return FQ_ERR;
        snprintf(p, n, "%s%s%s%s", dir ? dir : "", dir ? "/" : "", name, ext ? ".yaml" : "");
        if (is_regular(p)) {
            *found = p;
            return FQ_OK;
        }
        free(p);
    }
    return FQ_OK;
}

static int find_include(const char *name, const yt_node *at_node, char **found)
{
    *found = NULL;
    if (name[0] == '/')
        return try_dir(NULL, name, found);
    const char *dir = at_node->src->dir;
    if (try_dir(dir && strcmp(dir, ".") ? dir : NULL, name, found) != FQ_OK || *found)
        return FQ_OK;
    const char *env = getenv("FLATQ_CONFIGS");
    if (env && *env && (try_dir(env, name, found) != FQ_OK || *found))
        return FQ_OK;
    /* the configs/ of the tree the including file sits in (jobs/x.yaml → configs/) */
    char up_dir[PATH_MAX];
    snprintf(up_dir, sizeof up_dir, "%s", dir ? dir : ".");
    for (int up = 0; up < 3; up++) {
        size_t n = strlen(up_dir);
        if (n + 12 >= sizeof up_dir)
            break;
        strcpy(up_dir + n, "/configs");
        if (try_dir(up_dir, name, found) != FQ_OK || *found)
            return FQ_OK;
        strcpy(up_dir + n, "/..");
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 16);
    if (n > 0) {
        exe[n] = '\0';
        for (int up = 0; up < 3; up++) {
            char *slash = strrchr(exe, '/');
            if (!slash || slash == exe)
                break;
            strcpy(slash, "/configs"); /* room: exe is at least "/x" long here */
            if (try_dir(exe, name, found) != FQ_OK || *found)
                return FQ_OK;
            *slash = '\0';
        }
    }
    return try_dir("configs", name, found);
}

static int load_tree(loader *L, const char *label, const char *dir, const char *text,
                     size_t len, yt_node **out);

static int load_include(loader *L, const yt_node *name_node, yt_node **out)
{
    *out = NULL;
    if (name_node->kind != YT_SCALAR || yt_is_null(name_node))
        return at(name_node, "include", "expected a recipe file name, got %s",
                  yt_kind_name(name_node));
    char *name = NULL, *path = NULL, *real = NULL, *text = NULL;
    size_t len = 0;
    int rc = FQ_ERR;
    if (job_expand_env(name_node->text, &name, NULL) != FQ_OK) {
        char w[1200];
        yt_where(name_node, w, sizeof w);
        return fq_error_wrap("%s: include", w);
    }
    if (find_include(name, name_node, &path) != FQ_OK)
        goto done;
    if (!path) {
        at(name_node, "include", "cannot find '%s' (looked next to %s, in $FLATQ_CONFIGS and "
                                 "in the configs/ folders of its tree and of flatq; expected "
                                 "an existing recipe file)",
           name, name_node->src->label);
        goto done;
    }
    real = realpath(path, NULL);
    if (!real) {
        at(name_node, "include", "cannot resolve '%s': %s", path, strerror(errno));
        goto done;
    }
    for (int i = 0; i < L->depth; i++)
        if (strcmp(L->stack_real[i], real) == 0) {
            char chain[1024] = "";
            size_t off = 0;
            for (int k = i; k < L->depth && off < sizeof chain; k++)
                off += (size_t)snprintf(chain + off, sizeof chain - off, "%s -> ",
                                        L->stack_label[k]);
            if (off < sizeof chain)
                snprintf(chain + off, sizeof chain - off, "%s", path);
            at(name_node, "include", "include cycle %s (expected includes without cycles)",
               chain);
            goto done;
        }
    if (L->depth >= JOB_MAX_INCLUDE_DEPTH) {
        at(name_node, "include", "includes nested more than %d deep (expected fewer)",
           JOB_MAX_INCLUDE_DEPTH);
        goto done;
    }
    if (job_read_file(path, JOB_MAX_FILE, &text, &len) != FQ_OK) {
        char w[1200];
        yt_where(name_node, w, sizeof w);
        fq_error_wrap("%s: include", w);
        goto done;
    }
    L->stack_real[L->depth] = real;
    L->stack_label[L->depth] = path;
    L->depth++;
    char *dir = job_dirname(path);
    rc = dir ? load_tree(L, path, dir, text, len, out) : FQ_ERR;
    free(dir);
    L->depth--;
done:
    free(name);
    free(path);
    free(real);
    free(text);
    return rc;
}

/* Parse one file (already read; DIR: where its relative paths point, NULL = the
 * current directory) and merge its includes under it. */
static int load_tree(loader *L, const char *label, const char *dir, const char *text,
                     size_t len, yt_node **out)
{
    *out = NULL;
    yt_source *src = yt_source_add(&L->sources, label, dir, 1);
    if (!src)
        return FQ_ERR;
    yt_node *root = NULL;
    if (yt_parse(text, len, src, &root) != FQ_OK)
        return FQ_ERR;
    if (!root)
        return fq_error("%s:1:1: empty file (expected a mapping of job keys such as model, "
                        "output, quantization)", label);
    if (root->kind != YT_MAP) {
        int rc = at(root, "(top level)", "expected a mapping of job keys, got %s",
                    yt_kind_name(root));
        yt_free(root);
        return rc;
    }
    yt_node *inc = yt_map_take(root, "include");
    if (!inc || yt_is_null(inc)) {
        yt_free(inc);
        *out = root;
        return FQ_OK;
    }
    if (inc->kind == YT_MAP) {
        int rc = at(inc, "include", "expected a recipe file name or a list of them, got a "
                                    "mapping");
        yt_free(inc);
        yt_free(root);
        return rc;
    }
    yt_node *base = yt_new(YT_MAP, src, root->line, root->col, NULL);
    int rc = base ? FQ_OK : FQ_ERR;
    size_t count = inc->kind == YT_SEQ ? inc->n : 1;
    for (size_t i = 0; i < count && rc == FQ_OK; i++) {
        yt_node *sub = NULL;
        rc = load_include(L, inc->kind == YT_SEQ ? inc->items[i] : inc, &sub);
        if (rc == FQ_OK)
            rc = yt_merge(base, sub);
    }
    yt_free(inc);
    if (rc != FQ_OK) {
        yt_free(base);
        yt_free(root);
        return FQ_ERR;
    }
    if (yt_merge(base, root) != FQ_OK) {
        yt_free(base);
        return FQ_ERR;
    }
    *out = base;
    return FQ_OK;
}

/* ---------------------------------------------------------------- --set */

static int valid_key_path(const char *k, size_t n)
{
    if (n == 0 || k[0] == '.' || k[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)k[i]) || k[i] == '_' || (k[i] == '.' && k[i + 1] != '.')))
            return 0;
    return 1;
}

static int apply_set(loader *L, yt_node *root, const char *arg)
{
    char label[600];
    snprintf(label, sizeof label, "--set '%.500s'", arg ? arg : "(null)");
    if (!arg)
        return fq_error("%s: expected key.path=value", label);
    const char *eq = strchr(arg, '=');
    if (!eq || !valid_key_path(arg, (size_t)(eq - arg)))
        return fq_error("%s: expected key.path=value with keys of letters, digits and '_' "
                        "(e.g. calibration.nsamples=16)", label);
    size_t klen = (size_t)(eq - arg);
    char key[256];
    if (klen >= sizeof key)
        return fq_error("%s: key path too long (expected at most 255 characters)", label);
    memcpy(key, arg, klen);
    key[klen] = '\0';
    if (strcmp(key, "include") == 0 || strncmp(key, "include.", 8) == 0)
        return fq_error("%s: include: cannot be set on the command line (expected it in the "
                        "job file)", label);
    yt_source *src = yt_source_add(&L->sources, label, NULL, 0);
    if (!src)
        return FQ_ERR;
    yt_node *val = NULL;
    if (yt_parse(eq + 1, strlen(eq + 1), src, &val) != FQ_OK)
        return FQ_ERR;
    if (!val && !(val = yt_new(YT_SCALAR, src, 0, 0, "")))
        return FQ_ERR;
    int bad = val->kind == YT_MAP;
    for (size_t i = 0; val->kind == YT_SEQ && i < val->n; i++)
        bad |= val->items[i]->kind != YT_SCALAR;
    if (bad) {
        yt_free(val);
        return fq_error("%s: %s: expected a value or a [list] of values, got a mapping or a "
                        "nested list", label, key);
    }
    yt_node *cur = root;
    char *seg = key;
    for (char *dot; (dot = strchr(seg, '.')); seg = dot + 1) {
        *dot = '\0';
        yt_node *next = yt_map_get(cur, seg, NULL);
        if (next && next->kind != YT_MAP) {
            if (!yt_is_null(next)) {
                *dot = '.';
                yt_free(val);
                return fq_error("%s: %.*s: expected a section to set a key in, got a value",
                                label, (int)(dot - key), key);
            }
            /* "cache:" with nothing under it: make it a section */
            next->kind = YT_MAP;
            free(next->text);
            next->text = NULL;
        }
        if (!next) {
            yt_node *k = yt_new(YT_SCALAR, src, 0, 0, seg);
            next = yt_new(YT_MAP, src, 0, 0, NULL);
            if (!k || !next || yt_append(cur, k) != FQ_OK) {
                yt_free(k);
                yt_free(next);
                yt_free(val);
                return FQ_ERR;
            }
            if (yt_append(cur, next) != FQ_OK) {
                yt_free(cur->items[--cur->n]);
                yt_free(next);
                yt_free(val);
                return FQ_ERR;
            }
        }
        *dot = '.';
        cur = next;
    }
    yt_node *layer = yt_new(YT_MAP, src, 0, 0, NULL);
    yt_node *k = yt_new(YT_SCALAR, src, 0, 0, seg);
    if (!layer || !k || yt_append(layer, k) != FQ_OK) {
        yt_free(layer);
        yt_free(k);
        yt_free(val);
        return FQ_ERR;
    }
    if (yt_append(layer, val) != FQ_OK) {
        yt_free(layer);
        yt_free(val);
        return FQ_ERR;
    }
    return yt_merge(cur, layer);
}

/* ---------------------------------------------------------------- entry points */

static int job_load_common(const char *label, const char *text, size_t len, int from_file,
                           const char *const *sets, int n_sets, job *out)
{
    loader L;
    memset(&L, 0, sizeof L);
    yt_node *root = NULL;
    char *real = NULL, *dir = NULL;
    int rc = FQ_ERR;
    if (job_defaults(out) != FQ_OK || !(out->path = fq_strdup(label)))
        goto done;
    if (from_file) {
        /* the job file itself is the bottom of the include stack (cycles back to it) */
        real = realpath(label, NULL);
        if (real) {
            L.stack_real[0] = real;
            L.stack_label[0] = label;
            L.depth = 1;
        }
        if (!(dir = job_dirname(label)))
            goto done;
    }
    rc = load_tree(&L, label, dir, text, len, &root);
    for (int i = 0; i < n_sets && rc == FQ_OK; i++)
        rc = apply_set(&L, root, sets[i]);
    if (rc == FQ_OK)
        rc = job_from_tree(root, out);
    if (rc == FQ_OK)
        rc = job_validate(out);
done:
    free(real);
    free(dir);
    yt_free(root);
    yt_sources_free(L.sources);
    if (rc != FQ_OK) {
        job_error_one_line(); /* values quoted in the message may hold newlines */
        job_free(out);
    }
    return rc;
}

int job_load(const char *path, const char *const *sets, int n_sets, job *out)
{
    if (!path || !out || n_sets < 0 || (n_sets > 0 && !sets)) {
        if (out)
            memset(out, 0, sizeof *out);
        return fq_error("job_load: bad arguments (expected a path, an output job and "
                        "n_sets >= 0 overrides)");
    }
    char *text = NULL;
    size_t len = 0;
    if (job_read_file(path, JOB_MAX_FILE, &text, &len) != FQ_OK) {
        memset(out, 0, sizeof *out);
        return FQ_ERR;
    }
    int rc = job_load_common(path, text, len, 1, sets, n_sets, out);
    free(text);
    return rc;
}

int job_load_string(const char *yaml, size_t len, const char *label, job *out)
{
    if (!yaml || !out) {
        if (out)
            memset(out, 0, sizeof *out);
        return fq_error("job_load_string: NULL argument (expected YAML text and a job)");
    }
    return job_load_common(label ? label : "<string>", yaml, len, 0, NULL, 0, out);
}
