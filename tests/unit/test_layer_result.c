/* test_layer_result.c — finished layers count only when their digest verifies; the job
 * fingerprint refuses a changed recipe or model and says which. The digest of a known
 * file is checked against sha256 of the same bytes computed in memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coordinator/layer_result.h"
#include "error.h"
#include "sha256.h"

static const char *fa = "1111111111111111111111111111111111111111111111111111111111111111";
static const char *fb = "2222222222222222222222222222222222222222222222222222222222222222";

static char *make_dir(void)
{
    char *t = strdup("/tmp/fq_result_test.XXXXXX");
    assert_non_null(mkdtemp(t));
    return t;
}

static void cleanup(char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(dir);
}

static void test_commit_mark_verify_corrupt(void **state)
{
    (void)state;
    char *dir = make_dir(), path[4096], hex[65], want[65];
    unsigned char bytes[3000];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (unsigned char)(i * 7);
    uint8_t d[32];
    sha256(bytes, sizeof bytes, d);
    sha256_hex(d, want);
    assert_int_equal(layer_result_path(dir, 2, path, sizeof path), FQ_OK);
    assert_non_null(strstr(path, "/layer_002.safetensors"));
    assert_int_equal(layer_result_verified(dir, 2), 0); /* nothing yet */
    assert_int_equal(result_file_commit(path, bytes, sizeof bytes), FQ_OK);
    assert_int_equal(file_sha256_hex(path, hex), FQ_OK);
    assert_string_equal(hex, want);
    assert_int_equal(layer_result_verified(dir, 2), 0); /* file without sidecar: not done */
    assert_int_equal(layer_result_mark_done(dir, 2, hex), FQ_OK);
    assert_int_equal(layer_result_verified(dir, 2), 1);
    uint8_t done[4];
    int ndone;
    assert_int_equal(layer_result_scan(dir, 4, done, &ndone), FQ_OK);
    assert_int_equal(ndone, 1);
    assert_int_equal(done[2], 1);
    assert_int_equal(done[0], 0);
    /* flip one byte of the result: not done any more, and the message says why */
    FILE *f = fopen(path, "r+b");
    fseek(f, 1234, SEEK_SET);
    fputc(0xff ^ bytes[1234], f);
    fclose(f);
    assert_int_equal(layer_result_verified(dir, 2), 0);
    assert_non_null(strstr(fq_errmsg(), "layer_002.safetensors: checksum mismatch"));
    assert_int_equal(layer_result_forget(dir, 2), FQ_OK);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(layer_result_mark_done(dir, 2, "nothex"), FQ_ERR);
    cleanup(dir);
}

static void test_fingerprint_resume_and_refusal(void **state)
{
    (void)state;
    char *dir = make_dir(), out[4200];
    snprintf(out, sizeof out, "%s/out", dir);
    assert_int_equal(job_fingerprint_check(out, fa, fa), FQ_OK); /* creates it */
    assert_int_equal(job_fingerprint_check(out, fa, fa), FQ_OK); /* same job: resume */
    assert_int_equal(job_fingerprint_check(out, fb, fa), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "different recipe ("));
    assert_int_equal(job_fingerprint_check(out, fa, fb), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "different model ("));
    assert_int_equal(job_fingerprint_check(out, fb, fb), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "recipe and model"));
    assert_int_equal(job_fingerprint_check(out, "xyz", fa), FQ_ERR);
    /* a directory with finished layers but no fingerprint is not adopted */
    char other[4200], fpfile[4300];
    snprintf(other, sizeof other, "%s/other", dir);
    assert_int_equal(job_fingerprint_check(other, fa, fa), FQ_OK);
    assert_int_equal(layer_result_mark_done(other, 0, fa), FQ_OK);
    snprintf(fpfile, sizeof fpfile, "%s/job.fingerprint", other);
    assert_int_equal(unlink(fpfile), 0);
    assert_int_equal(job_fingerprint_check(other, fa, fa), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "unknown job"));
    /* combined fingerprint: depends on both, 64 hex */
    char c1[65], c2[65], c3[65];
    job_fingerprint_combine(fa, fb, c1);
    job_fingerprint_combine(fb, fa, c2);
    job_fingerprint_combine(fa, fb, c3);
    assert_int_equal(strlen(c1), 64);
    assert_string_not_equal(c1, c2);
    assert_string_equal(c1, c3);
    cleanup(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit_mark_verify_corrupt),
        cmocka_unit_test(test_fingerprint_resume_and_refusal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
