/* cmd_tokenize.c — `flatq tokenize --model DIR FILE [--no-special]`: print the ids of a
 * text file as one JSON array, as Hugging Face encodes it (BOS first unless
 * --no-special). A debugging and checking aid: its output can be diffed against the
 * Python/Node tokenizers directly. */
#include "coordinator/commands.h"
#include "error.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: flatq tokenize --model DIR FILE [--no-special]\n"
    "  Encode FILE (UTF-8 text) with DIR/tokenizer.json and print the token ids as one\n"
    "  JSON array on stdout.\n"
    "  --model DIR     a Hugging Face model directory (or a tokenizer.json path)\n"
    "  --no-special    do not apply the post-processor (no BOS)\n";

int cmd_tokenize(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return 0;
    }
    const char *model = NULL, *file = NULL;
    int add_special = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
            model = argv[++i];
        else if (strncmp(argv[i], "--model=", 8) == 0)
            model = argv[i] + 8;
        else if (strcmp(argv[i], "--no-special") == 0)
            add_special = 0;
        else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fq_error("tokenize: unknown option '%s' (expected --model DIR, --no-special or "
                     "--help)", argv[i]);
            return cli_fail();
        } else if (!file)
            file = argv[i];
        else {
            fq_error("tokenize: extra argument '%s' (expected one FILE)", argv[i]);
            return cli_fail();
        }
    }
    if (!model || !file) {
        fq_error("tokenize: missing %s (expected: flatq tokenize --model DIR FILE)",
                 !model ? "--model DIR" : "FILE");
        return cli_fail();
    }
    tokenizer *t;
    if (tokenizer_load(model, &t) != FQ_OK)
        return cli_fail();
    int32_t *ids;
    size_t n;
    if (tokenizer_encode_file(t, file, add_special, &ids, &n) != FQ_OK) {
        tokenizer_free(t);
        return cli_fail();
    }
    tokenizer_free(t);
    putchar('[');
    for (size_t i = 0; i < n; i++)
        printf(i ? ", %d" : "%d", (int)ids[i]);
    fputs("]\n", stdout);
    free(ids);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fq_error("tokenize: cannot write to stdout");
        return cli_fail();
    }
    return 0;
}
