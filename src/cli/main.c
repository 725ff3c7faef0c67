/* defectnet command line: dispatches to one subcommand per file. */
#include "commands.h"
#include "core/core.h"
#include <stdio.h>
#include <string.h>

typedef struct { const char *name; int (*fn)(int, char **); const char *help; } command;
#define DN_ENTRY(name, help) {#name, cmd_##name, help},
static const command commands[] = { DN_COMMANDS(DN_ENTRY) };
#undef DN_ENTRY

static void usage(FILE *f) {
    fprintf(f, "usage: defectnet <command> [options]   (defectnet <command> --help for details)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
}

int cmd_version(int argc, char **argv) {
    (void)argc; (void)argv;
    unsigned f = dn_cpu_features();
    printf("defectnet %s\ncpu:%s%s%s%s%s\n", DN_VERSION, f & DN_CPU_AVX2 ? " avx2" : "",
           f & DN_CPU_AVX512F ? " avx512f" : "", f & DN_CPU_AVX512VNNI ? " avx512vnni" : "",
           f & DN_CPU_AVX512BF16 ? " avx512bf16" : "", f ? "" : " (scalar reference kernels)");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) {
            int rc = commands[i].fn(argc - 1, argv + 1);
            /* A result that never reached stdout (full disk, closed pipe) is a failure. */
            if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, "defectnet %s: cannot write to standard output\n", argv[1]);
                if (rc == 0) rc = 1;
            }
            return rc;
        }
    fprintf(stderr, "defectnet: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
