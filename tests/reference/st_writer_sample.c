/* st_writer_sample.c — write the sample file that check_safetensors_writer.py reads with
 * the Python safetensors library: mixed dtypes, a scalar, an empty tensor, a name that
 * needs JSON escaping, metadata. Element i of each tensor is the f(i) of that script.
 * Build: mpicc -std=c11 -D_GNU_SOURCE -Icore tests/reference/st_writer_sample.c \
 *        build/libflatq.a -ljansson -lm -o build/st_writer_sample */
#include "dtype.h"
#include "error.h"
#include "safetensors.h"

#include <stdio.h>
#include <string.h>

static double fval(int i) { return (i - 2) * 0.375; }

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: st_writer_sample OUT.safetensors\n");
        return 2;
    }
    st_writer *w = st_writer_new();
    float f[24];
    uint16_t h[24];
    double d = fval(0);
    uint8_t u[11];
    int64_t i64[4];
    int32_t i32[3];
    for (int i = 0; i < 24; i++)
        f[i] = (float)fval(i);
    for (int i = 0; i < 11; i++)
        u[i] = (uint8_t)((7 * i + 3) % 256);
    for (int i = 0; i < 4; i++)
        i64[i] = -1000 * i + 7;
    for (int i = 0; i < 3; i++)
        i32[i] = -1000 * i + 7;
    const int64_t s_a[2] = {3, 5}, s_b[1] = {7}, s_c[3] = {2, 3, 4}, s_e[1] = {11},
                  s_f[2] = {2, 2}, s_g[2] = {0, 4}, s_z[1] = {3};
    int rc = 0;
    /* Deliberately not in name order, so data order differs from header order. */
    rc |= st_writer_add(w, "z \"quoted\" \xc3\xbcn\xc3\xaf", FQ_I32, 1, s_z, i32);
    rc |= st_writer_add(w, "c.f32", FQ_F32, 3, s_c, f);
    fq_convert_from_f32(f, 15, FQ_BF16, h);
    rc |= st_writer_add(w, "a.bf16", FQ_BF16, 2, s_a, h);
    rc |= st_writer_add(w, "e.u8", FQ_U8, 1, s_e, u);
    fq_convert_from_f32(f, 7, FQ_F16, h);
    rc |= st_writer_add(w, "b.f16", FQ_F16, 1, s_b, h);
    rc |= st_writer_add(w, "d.f64", FQ_F64, 0, NULL, &d);
    rc |= st_writer_add(w, "f.i64", FQ_I64, 2, s_f, i64);
    rc |= st_writer_add(w, "g.empty", FQ_F32, 2, s_g, NULL);
    rc |= st_writer_set_meta(w, "writer", "flatq");
    rc |= st_writer_set_meta(w, "format", "pt");
    rc |= st_writer_commit(w, argv[1]);
    st_writer_free(w);
    if (rc) {
        fprintf(stderr, "flatq: %s\n", fq_errmsg());
        return 1;
    }
    return 0;
}
