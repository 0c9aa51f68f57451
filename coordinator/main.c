/* main.c — bin/flatq: dispatch to a subcommand. The only place that decides the
 * process exit code; libraries return error codes and a message (core/error.h). */
#include "coordinator/commands.h"
#include "coordinator/version.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"calibrate", cmd_calibrate, "quantize a model: the MPI calibration job (JOB.yaml)"},
    {"eval", cmd_eval, "perplexity of a model (FP or quantized) on a text"},
    {"inspect", cmd_inspect, "per-layer quantization difficulty before/after each transform"},
    {"run", cmd_run, "generate text from a prompt (FP or quantized checkpoint)"},
    {"synth", cmd_synth, "write a synthetic LLaMA-shaped checkpoint (benchmarks)"},
    {"tokenize", cmd_tokenize, "print the token ids of a text file as JSON"},
    {"version", cmd_version, "print the version and the compiled backends"},
};

static void usage(FILE *out)
{
    fprintf(out, "flatq %s — FlatQuant W4A4KV4 quantization of LLaMA models\n\n"
                 "usage: flatq COMMAND [ARGS]   (flatq COMMAND --help for details)\n\n"
                 "commands:\n", FLATQ_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "flatq: unknown command '%s' (expected one of:", argv[1]);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(stderr, " %s", commands[i].name);
    fprintf(stderr, ")\n");
    return 2;
}
