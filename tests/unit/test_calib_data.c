/* test_calib_data.c — the calibration text is built as the reference builds it from the
 * WikiText rows: every line stripped like Python's str.strip() (ASCII and Unicode
 * whitespace, CRLF), blank lines kept as empty rows, rows joined with "\n\n", several
 * files continuing one row list. Expected strings are written out by hand from that rule
 * (Python: "\n\n".join(l.strip() for l in text.split("\n")[:-1 if text.endswith("\n") else None])). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "coordinator/calib_data.h"
#include "error.h"

static char *join(const char *const *texts, int n, size_t *len)
{
    char *all = NULL;
    size_t rows = 0;
    *len = 0;
    for (int i = 0; i < n; i++)
        assert_int_equal(calib_text_rows(texts[i], strlen(texts[i]), &all, len, &rows), FQ_OK);
    char *z = malloc(*len + 1);
    assert_non_null(z);
    if (*len)
        memcpy(z, all, *len);
    z[*len] = '\0';
    free(all);
    return z;
}

static void expect(const char *const *texts, int n, const char *want)
{
    size_t len;
    char *got = join(texts, n, &len);
    assert_int_equal(len, strlen(want));
    assert_string_equal(got, want);
    free(got);
}

static void test_wikitext_rows(void **state)
{
    (void)state;
    /* WikiText's own shape: " = Title = ", blank " " lines, leading-space paragraphs */
    const char *t1[] = {" = Valkyria = \n \n Senjō no Valkyria 3 . \n"};
    expect(t1, 1, "= Valkyria =\n\n\n\nSenjō no Valkyria 3 .");
    /* no final newline: the last line is still a row; CRLF and tabs stripped */
    const char *t2[] = {"a\t\r\n  b"};
    expect(t2, 1, "a\n\nb");
    /* Unicode whitespace at the ends (NBSP, ideographic space) goes, inside stays */
    const char *t3[] = {"\xc2\xa0x\xc2\xa0y\xe3\x80\x80\n"};
    expect(t3, 1, "x\xc2\xa0y");
    /* a multi-byte non-space character at the end is kept whole */
    const char *t4[] = {"caf\xc3\xa9 \n"};
    expect(t4, 1, "caf\xc3\xa9");
}

static void test_several_files(void **state)
{
    (void)state;
    const char *t[] = {"", "one\n", "\n", "two \n"};
    /* the empty file has no rows; "\n" is one empty row */
    expect(t, 4, "one\n\n\n\ntwo");
    const char *only_blank[] = {"\n\n"};
    expect(only_blank, 1, "\n\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wikitext_rows),
        cmocka_unit_test(test_several_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
