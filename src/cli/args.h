/* The one command-line grammar of every defectnet subcommand (getopt_long):
 *   --opt value, --opt=value, short forms (-m model, -o out, -d data, -f format,
 *   -h help, ...), options and positionals in any order, "--" ends options.
 * Errors are one line "defectnet CMD: ..." naming the option and the problem.
 *
 * Exit codes, the same for every command (DN_EXIT_HELP prints them in --help):
 *   0 ok; 1 partial (some inputs skipped); 2 usage or data error; 3 internal error. */
#ifndef DN_CLI_ARGS_H
#define DN_CLI_ARGS_H
#include "defectnet.h"
#include <getopt.h>
#include <stdio.h>

enum { DN_EXIT_OK = 0, DN_EXIT_PARTIAL = 1, DN_EXIT_USAGE = 2, DN_EXIT_DATA = 2, DN_EXIT_INTERNAL = 3 };
#define DN_EXIT_HELP "exit status: 0 ok, 1 partial (some inputs skipped), 2 usage or data error, 3 internal error\n"

/* Exit code for a failed library call: 3 for out-of-memory / numeric trouble, else 2. */
int dn_exit_code(dn_status st);

/* One option. key: the short letter (also returned for the long form), or a
 * value >= 256 for long-only options. arg: DN_ARG_NONE / DN_ARG_REQ / DN_ARG_OPT.
 * deprecated: when set, the long name is an old spelling; using it prints
 * "warning: --NAME is deprecated, use DEPRECATED" and returns the same key. */
enum { DN_ARG_NONE = 0, DN_ARG_REQ = 1, DN_ARG_OPT = 2 };
typedef struct dn_opt {
    const char *name;
    int key;
    int arg;
    const char *deprecated;
} dn_opt;

#define DN_ARGS_MAX 80
typedef struct dn_args {
    const char *cmd;              /* "quantize": messages start "defectnet quantize: " */
    int argc;
    char **argv;
    const dn_opt *opts;
    struct option lo[DN_ARGS_MAX + 2];
    char shorts[3 * DN_ARGS_MAX + 8];
    const char *val;              /* value of the option just returned (NULL if none) */
    char name[64];                /* the option as written: "--model" or "-m" */
    char canon[64];               /* its canonical long form: "--model" for both */
    int ind;                      /* after dn_args_next returned -1: first positional */
} dn_args;

/* opts ends with {0}. -h/--help is always known and returned as 'h'. */
void dn_args_init(dn_args *a, const char *cmd, int argc, char **argv, const dn_opt *opts);
/* Next option key; -1 when options are done (positionals: argv[ind..argc)); '?' after a
 * usage error (unknown option, missing value), already reported on stderr. */
int dn_args_next(dn_args *a);
/* Remaining positionals after parsing. */
static inline int dn_args_npos(const dn_args *a) { return a->argc - a->ind; }
static inline char *dn_args_pos(const dn_args *a, int i) { return a->argv[a->ind + i]; }

/* Value checks for the option just returned; on a bad value they print
 * "defectnet CMD: --opt 'v': expected ..." and return -1. */
int dn_arg_long(const dn_args *a, long long lo, long long hi, long long *out);
int dn_arg_int(const dn_args *a, int lo, int hi, int *out);
/* Number in [lo, hi] (or (lo, hi] when lo_open). */
int dn_arg_real(const dn_args *a, double lo, double hi, int lo_open, double *out);

/* The one output-format vocabulary: table | json | jsonl | csv | html. */
enum { DN_FMT_TABLE = 1, DN_FMT_JSON = 2, DN_FMT_JSONL = 4, DN_FMT_CSV = 8, DN_FMT_HTML = 16 };
const char *dn_format_name(int fmt);
/* Checks v (or the extension of `path` when v is NULL) against the allowed set
 * and stores the DN_FMT_ value; -1 with a message naming the allowed words. */
int dn_format_parse(const char *cmd, const char *v, int allowed, int *out);
/* The format named by the extension of path (.csv .json .jsonl .html .htm .txt), 0 if none. */
int dn_format_from_path(const char *path);

/* "defectnet CMD: <message>" on stderr; returns DN_EXIT_USAGE. */
int dn_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "defectnet CMD: <dn_last_error()>" on stderr; returns dn_exit_code(st). */
int dn_cli_fail(const char *cmd, dn_status st);

#endif
