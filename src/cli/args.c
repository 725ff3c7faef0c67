/* The one CLI grammar; see args.h. */
#include "cli/args.h"
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int dn_exit_code(dn_status st) {
    if (st == DN_OK) return DN_EXIT_OK;
    return st == DN_ERR_NOMEM || st == DN_ERR_NUMERIC ? DN_EXIT_INTERNAL : DN_EXIT_DATA;
}

int dn_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "defectnet %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return DN_EXIT_USAGE;
}

int dn_cli_fail(const char *cmd, dn_status st) {
    fprintf(stderr, "defectnet %s: %s\n", cmd, dn_last_error());
    return dn_exit_code(st ? st : DN_ERR_ARG);
}

void dn_args_init(dn_args *a, const char *cmd, int argc, char **argv, const dn_opt *opts) {
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    a->argc = argc;
    a->argv = argv;
    a->opts = opts;
    size_t ns = 0, nl = 0;
    a->shorts[ns++] = ':'; /* missing values reported as ':' */
    for (const dn_opt *o = opts; o && o->name && nl < DN_ARGS_MAX; o++) {
        a->lo[nl++] = (struct option){o->name, o->arg == DN_ARG_REQ ? required_argument
                                                  : o->arg == DN_ARG_OPT ? optional_argument : no_argument,
                                      NULL, o->key};
        if (o->key > 0 && o->key < 128 && o->key != 'h' && !o->deprecated && !strchr(a->shorts, o->key)) {
            a->shorts[ns++] = (char)o->key;
            if (o->arg == DN_ARG_REQ) a->shorts[ns++] = ':';
            if (o->arg == DN_ARG_OPT) { a->shorts[ns++] = ':'; a->shorts[ns++] = ':'; }
        }
    }
    a->lo[nl++] = (struct option){"help", no_argument, NULL, 'h'};
    a->lo[nl] = (struct option){0};
    a->shorts[ns++] = 'h';
    a->shorts[ns] = 0;
    optind = 0; /* glibc: full re-initialisation */
    opterr = 0;
}

int dn_args_next(dn_args *a) {
    int li = -1;
    int c = getopt_long(a->argc, a->argv, a->shorts, a->lo, &li);
    a->val = optarg;
    a->ind = optind;
    if (c == -1) return -1;
    if (c == '?' || c == ':') {
        const char *w = optind > 0 && optind <= a->argc ? a->argv[optind - 1] : "";
        char bad[64];
        if (!strncmp(w, "--", 2)) snprintf(bad, sizeof bad, "%.*s", (int)strcspn(w, "="), w);
        else snprintf(bad, sizeof bad, "-%c", optopt > 0 && optopt < 128 ? optopt : '?');
        if (c == '?') dn_usage_error(a->cmd, "unknown option '%s' (see defectnet %s --help)", bad, a->cmd);
        else dn_usage_error(a->cmd, "option '%s' needs a value", bad);
        return '?';
    }
    if (li >= 0) {
        snprintf(a->name, sizeof a->name, "--%s", a->lo[li].name);
        const dn_opt *o = NULL;
        for (const dn_opt *p = a->opts; p && p->name; p++)
            if (!strcmp(p->name, a->lo[li].name)) o = p;
        if (o && o->deprecated)
            fprintf(stderr, "defectnet %s: warning: --%s is deprecated, use %s\n", a->cmd, o->name, o->deprecated);
        snprintf(a->canon, sizeof a->canon, "%s", a->name);
    } else {
        snprintf(a->name, sizeof a->name, "-%c", c);
        snprintf(a->canon, sizeof a->canon, "--help");
        for (const dn_opt *p = a->opts; p && p->name; p++)
            if (p->key == c && !p->deprecated) {
                snprintf(a->canon, sizeof a->canon, "--%s", p->name);
                break;
            }
    }
    return c;
}

int dn_arg_long(const dn_args *a, long long lo, long long hi, long long *out) {
    const char *v = a->val ? a->val : "";
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "defectnet %s: %s '%s': expected an integer in %lld..%lld\n", a->cmd, a->name, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

int dn_arg_int(const dn_args *a, int lo, int hi, int *out) {
    long long x;
    if (dn_arg_long(a, lo, hi, &x)) return -1;
    *out = (int)x;
    return 0;
}

int dn_arg_real(const dn_args *a, double lo, double hi, int lo_open, double *out) {
    const char *v = a->val ? a->val : "";
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x > hi || (lo_open ? !(x > lo) : !(x >= lo))) {
        fprintf(stderr, "defectnet %s: %s '%s': expected a number in %c%g, %g]\n", a->cmd, a->name, v,
                lo_open ? '(' : '[', lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static const char *const fmt_names[] = {"table", "json", "jsonl", "csv", "html"};

const char *dn_format_name(int fmt) {
    for (int i = 0; i < 5; i++)
        if (fmt == 1 << i) return fmt_names[i];
    return "?";
}

int dn_format_from_path(const char *path) {
    const char *dot = path ? strrchr(path, '.') : NULL;
    if (!dot || strchr(dot, '/')) return 0;
    if (!strcasecmp(dot, ".csv")) return DN_FMT_CSV;
    if (!strcasecmp(dot, ".json")) return DN_FMT_JSON;
    if (!strcasecmp(dot, ".jsonl") || !strcasecmp(dot, ".ndjson")) return DN_FMT_JSONL;
    if (!strcasecmp(dot, ".html") || !strcasecmp(dot, ".htm")) return DN_FMT_HTML;
    if (!strcasecmp(dot, ".txt")) return DN_FMT_TABLE;
    return 0;
}

int dn_format_parse(const char *cmd, const char *v, int allowed, int *out) {
    for (int i = 0; i < 5; i++)
        if ((allowed & (1 << i)) && !strcmp(v, fmt_names[i])) {
            *out = 1 << i;
            return 0;
        }
    char list[64] = "";
    int n = 0, k = 0;
    for (int i = 0; i < 5; i++) n += (allowed >> i) & 1;
    for (int i = 0; i < 5; i++)
        if (allowed & (1 << i)) {
            k++;
            size_t l = strlen(list);
            snprintf(list + l, sizeof list - l, "%s%s", k == 1 ? "" : k == n ? " or " : ", ", fmt_names[i]);
        }
    dn_usage_error(cmd, "--format '%s': expected %s", v, list);
    return -1;
}
