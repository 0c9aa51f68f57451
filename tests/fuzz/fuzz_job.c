/* fuzz_job.c — libFuzzer target for job YAML (job_load_string).
 *
 * Besides "no crash, no leak, no hang", it checks one property on every input that
 * loads: the printed job loads again to the same canonical form (job_print is meant
 * to produce a runnable job). Includes in fuzzed text resolve against the current
 * directory; only regular files under 1 MiB are read, so they stay harmless.
 */
#include "error.h"
#include "job.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    job j;
    if (job_load_string((const char *)data, size, "fuzz", &j) != FQ_OK) {
        if (strchr(fq_errmsg(), '\n'))
            __builtin_trap(); /* errors are one line */
        return 0;
    }
    char *text = NULL, *c1 = NULL, *c2 = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    if (!f || job_print(&j, f) != FQ_OK)
        __builtin_trap();
    fclose(f);
    job back;
    if (job_load_string(text, n, "printed", &back) != FQ_OK) {
        fprintf(stderr, "printed job does not load: %s\n%s\n", fq_errmsg(), text);
        __builtin_trap();
    }
    char hex[65];
    if (job_canonical(&j, &c1) != FQ_OK || job_canonical(&back, &c2) != FQ_OK ||
        strcmp(c1, c2) != 0 || job_fingerprint(&j, hex) != FQ_OK)
        __builtin_trap();
    free(c1);
    free(c2);
    free(text);
    job_free(&back);
    job_free(&j);
    return 0;
}
