/* defectnet command line: dispatches to one subcommand per file.
 *   defectnet CMD [options]        defectnet help [CMD] = defectnet CMD --help
 *   defectnet --version | -V       defectnet --help | -h */
#include "cli/args.h"
#include "commands.h"
#include "core/core.h"
#include <stdio.h>
#include <string.h>

typedef struct { const char *name; int (*fn)(int, char **); const char *help; } command;
#define DN_ENTRY(name, help) {#name, cmd_##name, help},
static const command commands[] = { DN_COMMANDS(DN_ENTRY) };
#undef DN_ENTRY
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f) {
    fprintf(f, "usage: defectnet <command> [options]   (defectnet help <command> for its options)\n"
               "       defectnet --version | -V\n\ncommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\noptions take --opt VALUE or --opt=VALUE; common short forms: -m model, -d data, -o out,\n"
               "-f format, -h help.\n" DN_EXIT_HELP);
}

static const command *find(const char *name) {
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (!strcmp(name, commands[i].name)) return &commands[i];
    return NULL;
}

int cmd_version(int argc, char **argv) {
    static const dn_opt opts[] = {{0}};
    dn_args a;
    dn_args_init(&a, "version", argc, argv, opts);
    for (int c; (c = dn_args_next(&a)) != -1;) {
        if (c == 'h') {
            printf("usage: defectnet version   (also: defectnet --version, -V)\n"
                   "  prints the version, the library version and the CPU features the kernels use.\n" DN_EXIT_HELP);
            return 0;
        }
        return DN_EXIT_USAGE;
    }
    if (dn_args_npos(&a)) return dn_usage_error("version", "unexpected argument '%s'", dn_args_pos(&a, 0));
    unsigned f = dn_cpu_features();
    printf("defectnet %s (library %s)\ncpu:%s%s%s%s%s\n", DN_VERSION, dn_version(), f & DN_CPU_AVX2 ? " avx2" : "",
           f & DN_CPU_AVX512F ? " avx512f" : "", f & DN_CPU_AVX512VNNI ? " avx512vnni" : "",
           f & DN_CPU_AVX512BF16 ? " avx512bf16" : "", f ? "" : " (scalar reference kernels)");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return DN_EXIT_USAGE; }
    const char *c = argv[1];
    if (!strcmp(c, "-h") || !strcmp(c, "--help") || (!strcmp(c, "help") && argc == 2)) { usage(stdout); return 0; }
    if (!strcmp(c, "-V") || !strcmp(c, "--version")) return cmd_version(1, argv + 1);
    char help_opt[] = "--help";
    char *help_argv[] = {argv[0], NULL, help_opt, NULL};
    if (!strcmp(c, "help")) { /* help CMD == CMD --help */
        if (argc > 3) { fprintf(stderr, "defectnet help: expected one command name\n"); return DN_EXIT_USAGE; }
        const command *cm = find(argv[2]);
        if (!cm) {
            fprintf(stderr, "defectnet help: unknown command '%s'\n", argv[2]);
            usage(stderr);
            return DN_EXIT_USAGE;
        }
        help_argv[1] = argv[2];
        argc = 3;
        argv = help_argv;
        c = argv[1];
    }
    const command *cm = find(c);
    if (!cm) {
        fprintf(stderr, "defectnet: unknown command '%s'\n", c);
        usage(stderr);
        return DN_EXIT_USAGE;
    }
    int rc = cm->fn(argc - 1, argv + 1);
    /* A result that never reached stdout (full disk, closed pipe) is a failure. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "defectnet %s: cannot write to standard output\n", c);
        if (rc == 0) rc = DN_EXIT_DATA;
    }
    return rc;
}
