/* layer_result.c — result files, done-sidecars, job fingerprint; see layer_result.h. */
#include "coordinator/layer_result.h"
#include "atomic_file.h"
#include "fileio.h"
#include "error.h"
#include "sha256.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int hex64_ok(const char *s)
{
    if (!s || strlen(s) != 64)
        return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

int layer_result_path(const char *outdir, int layer, char *out, size_t cap)
{
    if (!outdir || !*outdir || layer < 0 || layer > 999)
        return fq_error("layer_result: bad output directory or layer %d (expected 0..999)",
                        layer);
    int n = snprintf(out, cap, "%s/layer_%03d.safetensors", outdir, layer);
    if (n < 0 || (size_t)n >= cap)
        return fq_error("%s: output path too long (expected under %zu bytes)", outdir, cap);
    return FQ_OK;
}

static int sidecar_path(const char *outdir, int layer, char *out, size_t cap)
{
    if (layer_result_path(outdir, layer, out, cap) != FQ_OK)
        return FQ_ERR;
    size_t n = strlen(out);
    if (n + 8 > cap)
        return fq_error("%s: output path too long", outdir);
    memcpy(out + n, ".sha256", 8);
    return FQ_OK;
}

int result_file_commit(const char *path, const void *bytes, size_t n)
{
    if (!bytes && n > 0)
        return fq_error("%s: result_file_commit: NULL data", path ? path : "?");
    return atomic_file_put(path, bytes, n);
}

int file_sha256_hex(const char *path, char hex_out[65])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fq_error("%s: cannot open (%s)", path, strerror(errno));
    sha256_ctx c;
    sha256_init(&c);
    static _Thread_local unsigned char buf[1 << 16];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            return fq_error("%s: read failed (%s)", path, strerror(e));
        }
        if (r == 0)
            break;
        sha256_update(&c, buf, (size_t)r);
    }
    close(fd);
    uint8_t d[32];
    sha256_final(&c, d);
    sha256_hex(d, hex_out);
    return FQ_OK;
}

int layer_result_mark_done(const char *outdir, int layer, const char *sha_hex)
{
    char side[4096], line[256];
    if (sidecar_path(outdir, layer, side, sizeof side) != FQ_OK)
        return FQ_ERR;
    if (!hex64_ok(sha_hex))
        return fq_error("%s: digest must be 64 lowercase hex characters", side);
    int n = snprintf(line, sizeof line, "%s  layer_%03d.safetensors\n", sha_hex, layer);
    return atomic_file_put(side, line, (size_t)n);
}

int layer_result_verified(const char *outdir, int layer)
{
    char side[4096], path[4096], have[65];
    if (sidecar_path(outdir, layer, side, sizeof side) != FQ_OK ||
        layer_result_path(outdir, layer, path, sizeof path) != FQ_OK)
        return 0;
    char *text;
    size_t n;
    if (fq_read_file(side, &text, &n) != FQ_OK)
        return 0;
    char want[65] = {0};
    int ok = n >= 64;
    if (ok) {
        memcpy(want, text, 64);
        ok = hex64_ok(want);
    }
    free(text);
    if (!ok) {
        fq_error("%s: malformed (expected 64 hex digits, two spaces, the file name)", side);
        return 0;
    }
    if (file_sha256_hex(path, have) != FQ_OK)
        return 0;
    if (strcmp(have, want) != 0) {
        fq_error("%s: checksum mismatch (have %.12s…, recorded %.12s…): the result will be "
                 "redone", path, have, want);
        return 0;
    }
    return 1;
}

int layer_result_forget(const char *outdir, int layer)
{
    char side[4096], path[4096];
    if (sidecar_path(outdir, layer, side, sizeof side) != FQ_OK ||
        layer_result_path(outdir, layer, path, sizeof path) != FQ_OK)
        return FQ_ERR;
    if (unlink(side) != 0 && errno != ENOENT)
        return fq_error("%s: cannot remove (%s)", side, strerror(errno));
    if (unlink(path) != 0 && errno != ENOENT)
        return fq_error("%s: cannot remove (%s)", path, strerror(errno));
    return FQ_OK;
}

int layer_result_scan(const char *outdir, int nlayers, uint8_t *done, int *ndone)
{
    if (!outdir || nlayers < 0 || nlayers > 1000 || (!done && nlayers > 0) || !ndone)
        return fq_error("layer_result_scan: bad arguments (expected 0..1000 layers)");
    *ndone = 0;
    for (int i = 0; i < nlayers; i++) {
        done[i] = (uint8_t)layer_result_verified(outdir, i);
        *ndone += done[i];
    }
    fq_error_clear();
    return FQ_OK;
}

void job_fingerprint_combine(const char *recipe_fp, const char *model_fp, char out[65])
{
    sha256_ctx c;
    uint8_t d[32];
    sha256_init(&c);
    sha256_update(&c, "recipe:", 7);
    sha256_update(&c, recipe_fp, strlen(recipe_fp));
    sha256_update(&c, "\nmodel:", 7);
    sha256_update(&c, model_fp, strlen(model_fp));
    sha256_final(&c, d);
    sha256_hex(d, out);
}

static int has_layer_sidecars(const char *outdir)
{
    DIR *d = opendir(outdir);
    if (!d)
        return 0;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        found = strncmp(e->d_name, "layer_", 6) == 0 && n > 7 &&
                strcmp(e->d_name + n - 7, ".sha256") == 0;
    }
    closedir(d);
    return found;
}

int job_fingerprint_check(const char *outdir, const char *recipe_fp, const char *model_fp)
{
    char path[4096];
    if (!outdir || !*outdir)
        return fq_error("job_fingerprint_check: empty output directory");
    if (!hex64_ok(recipe_fp) || !hex64_ok(model_fp))
        return fq_error("%s: job fingerprints must be 64 lowercase hex characters", outdir);
    if (mkdir(outdir, 0755) != 0 && errno != EEXIST)
        return fq_error("%s: cannot create output directory (%s)", outdir, strerror(errno));
    if (snprintf(path, sizeof path, "%s/job.fingerprint", outdir) >= (int)sizeof path)
        return fq_error("%s: output path too long", outdir);
    char *text;
    size_t n;
    if (fq_read_file(path, &text, &n) != FQ_OK) {
        if (errno != ENOENT)
            return FQ_ERR;
        if (has_layer_sidecars(outdir))
            return fq_error("%s: missing, but %s holds finished layers of an unknown job "
                            "(expected an empty output directory or one made by this job)",
                            path, outdir);
        json_t *o = json_pack("{s:s, s:s}", "recipe", recipe_fp, "model", model_fp);
        char *s = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
        json_decref(o);
        if (!s)
            return fq_error("%s: cannot encode fingerprint JSON", path);
        size_t len = strlen(s);
        int rc = FQ_OK;
        char *line = fq_malloc(len + 2, "fingerprint");
        if (!line)
            rc = FQ_ERR;
        else {
            memcpy(line, s, len);
            line[len] = '\n';
            rc = atomic_file_put(path, line, len + 1);
        }
        free(line);
        free(s);
        return rc;
    }
    json_error_t jerr;
    json_t *o = json_loadb(text, n, 0, &jerr);
    free(text);
    const char *old_recipe = NULL, *old_model = NULL;
    if (!o || json_unpack(o, "{s:s, s:s}", "recipe", &old_recipe, "model", &old_model) != 0 ||
        !hex64_ok(old_recipe) || !hex64_ok(old_model)) {
        json_decref(o);
        return fq_error("%s: malformed (expected {\"recipe\": HEX64, \"model\": HEX64}); "
                        "delete it only if %s holds nothing you need",
                        path, outdir);
    }
    int recipe_changed = strcmp(old_recipe, recipe_fp) != 0;
    int model_changed = strcmp(old_model, model_fp) != 0;
    int rc = FQ_OK;
    if (recipe_changed || model_changed)
        rc = fq_error("%s: this output directory belongs to a job with a different %s "
                      "(%s%.12s… there, %.12s… now); refusing to reuse its results (expected "
                      "the same job to resume, or a new output directory)",
                      path,
                      recipe_changed && model_changed ? "recipe and model"
                      : recipe_changed                ? "recipe"
                                                      : "model",
                      recipe_changed ? "recipe " : "model ",
                      recipe_changed ? old_recipe : old_model,
                      recipe_changed ? recipe_fp : model_fp);
    json_decref(o);
    return rc;
}
