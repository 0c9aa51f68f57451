/* fuzz_safetensors.c — libFuzzer target: any byte string given to st_parse_buffer must
 * give FQ_OK or FQ_ERR with a one-line message; never a crash, leak or hang. On success
 * every tensor must lie inside the buffer, and be looked up by its name. */
#include "error.h"
#include "safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    st_file f;
    if (st_parse_buffer(data, size, "fuzz", &f) != FQ_OK) {
        if (strchr(fq_errmsg(), '\n') || fq_errmsg()[0] == '\0')
            abort(); /* errors are one non-empty line */
        return 0;
    }
    for (size_t i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        if (t->data < data || t->data + t->nbytes > data + size)
            abort();
        if (st_file_find(&f, t->name) != t)
            abort();
        if (t->nbytes && t->nbytes <= 4096 &&
            (t->dtype == FQ_F32 || t->dtype == FQ_F16 || t->dtype == FQ_BF16 ||
             t->dtype == FQ_F64)) {
            float *out = malloc(t->nelem * sizeof *out);
            if (out && st_tensor_to_f32(t, out, t->nelem) != FQ_OK)
                abort();
            free(out);
        }
    }
    st_file_close(&f);
    return 0;
}
