/* fuzz_tokenizer.c — libFuzzer target: a tokenizer.json from the fuzz input.
 *
 * The input is parsed with tokenizer_load_buffer; when it loads, a fixed text that
 * touches every pipeline stage (ASCII, multi-byte characters, emoji, whitespace runs,
 * special-token strings, byte-level stand-ins) is encoded with and without the
 * post-processor and decoded back. Any crash, leak, sanitizer report or hang is a bug:
 * a hostile tokenizer.json must only ever produce an error message.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

static const char probe[] =
    "Hello world's <s> <|begin_of_text|>x</s>  \t\r\n caf\xc3\xa9 \xf0\x9f\x98\x80 "
    "\xe4\xbd\xa0\xe5\xa5\xbd 12345 \xe2\x96\x81\xc4\xa0 <0x41> aaaa'LL";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20))
        return 0;
    tokenizer *t = NULL;
    if (tokenizer_load_buffer((const char *)data, size, "fuzz.json", &t) != 0)
        return 0;
    for (int special = 0; special < 2; special++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (tokenizer_encode(t, probe, sizeof probe - 1, special, &ids, &n) != 0)
            continue;
        char *text = NULL;
        size_t len = 0;
        if (tokenizer_decode(t, ids, n, &text, &len) == 0)
            free(text);
        free(ids);
    }
    (void)tokenizer_vocab_size(t);
    (void)tokenizer_bos_id(t);
    (void)tokenizer_eos_id(t);
    tokenizer_free(t);
    return 0;
}
