/* fuzz_config.c — libFuzzer target: any text given to llama_config_parse must give a
 * validated config or FQ_ERR with a one-line message; never a crash, leak or hang. */
#include "error.h"
#include "llama_config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    llama_config c;
    if (llama_config_parse((const char *)data, size, "config.json", &c) != FQ_OK) {
        if (strchr(fq_errmsg(), '\n') || fq_errmsg()[0] == '\0')
            abort();
        return 0;
    }
    /* What the parser promises to its callers. */
    if (c.hidden <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.head_dim <= 0 ||
        c.n_heads % c.n_kv_heads != 0 || !(c.rms_eps > 0) || !(c.rope_theta > 0) ||
        c.bos_id >= c.vocab || c.eos_id >= c.vocab)
        abort();
    return 0;
}
