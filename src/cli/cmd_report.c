/* `defectnet report`: manufacturing report from the prediction store. */
#include "cli/args.h"
#include "core/core.h"
#include "serve/mreport.h"
#include "serve/store.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void report_usage(FILE *f) {
    fprintf(f, "usage: defectnet report --db sqlite:FILE|postgres://... [--from T] [--to T] [--line L]\n"
               "         [-g|--group-by line|station|camera|shift|day|model_version|decision|class]\n"
               "         [-f|--format csv|json|html] [-o|--out FILE] [--tz ZONE] [--shifts 6,14,22]\n"
               "         [--ok-classes a,b] [--title TEXT]\n"
               "  T: unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]Z (UTC); from <= t < to.\n"
               "  --tz: IANA zone (Europe/Berlin), UTC or a fixed offset (+02:00) for days and shifts;\n"
               "  --shifts: local start hours. --format defaults to the --out extension, else csv.\n"
               "  Classes listed in --ok-classes (default ok,good,pass,normal,clean,no_defect) are not defects.\n"
               "  The database is opened read-only (SQLite mode=ro, PostgreSQL READ ONLY transactions): a report\n"
               "  never creates, migrates or writes it; a missing SQLite file is refused.\n" DN_EXIT_HELP);
}

int cmd_report(int argc, char **argv) {
    const char *db = NULL, *out = NULL, *format = NULL;
    dn_mreport_opts o = {0};
    enum { O_DB = 256, O_LINE, O_OK, O_SHIFTS, O_TITLE, O_FROM, O_TO, O_TZ };
    static const dn_opt opts[] = {
        {"db", O_DB, DN_ARG_REQ, NULL},          {"out", 'o', DN_ARG_REQ, NULL},
        {"format", 'f', DN_ARG_REQ, NULL},       {"group-by", 'g', DN_ARG_REQ, NULL},
        {"line", O_LINE, DN_ARG_REQ, NULL},      {"ok-classes", O_OK, DN_ARG_REQ, NULL},
        {"shifts", O_SHIFTS, DN_ARG_REQ, NULL},  {"title", O_TITLE, DN_ARG_REQ, NULL},
        {"from", O_FROM, DN_ARG_REQ, NULL},      {"to", O_TO, DN_ARG_REQ, NULL},
        {"tz", O_TZ, DN_ARG_REQ, NULL},          {0}};
    dn_args a;
    dn_args_init(&a, "report", argc, argv, opts);
    for (int c; (c = dn_args_next(&a)) != -1;) {
        switch (c) {
        case 'h': report_usage(stdout); return 0;
        case O_DB: db = a.val; break;
        case 'o': out = a.val; break;
        case 'f': format = a.val; break;
        case 'g': o.group_by = a.val; break;
        case O_LINE: o.line = a.val; break;
        case O_OK: o.ok_classes = a.val; break;
        case O_SHIFTS: o.shifts = a.val; break;
        case O_TITLE: o.title = a.val; break;
        case O_TZ: o.tz = a.val; break;
        case O_FROM:
        case O_TO:
            if (dn_parse_time(a.val, a.name, c == O_FROM ? &o.from : &o.to)) {
                fprintf(stderr, "defectnet report: %s\n", dn_last_error());
                return DN_EXIT_USAGE;
            }
            break;
        default: return DN_EXIT_USAGE;
        }
    }
    if (dn_args_npos(&a)) return dn_usage_error("report", "unexpected argument '%s'", dn_args_pos(&a, 0));
    if (!db) return dn_usage_error("report", "--db is required (see defectnet report --help)");
    int fmt = 0;
    if (format ? dn_format_parse("report", format, DN_FMT_CSV | DN_FMT_JSON | DN_FMT_HTML, &fmt) : 0)
        return DN_EXIT_USAGE;
    if (!fmt) {
        fmt = dn_format_from_path(out);
        if (fmt != DN_FMT_JSON && fmt != DN_FMT_HTML) fmt = DN_FMT_CSV;
    }
    dn_status st;
    if ((st = dn_mreport_check(&o))) return dn_cli_fail("report", st);
    int rc = DN_EXIT_DATA;
    dn_store *s = NULL;
    dn_mreport *r = NULL;
    dn_sb b = {0};
    FILE *f = NULL;
    /* read-only: a report never creates, migrates or writes a database; a missing one is refused */
    if ((st = dn_store_open_readonly(db, &s)) || (st = dn_mreport_build(s, &o, &r)) ||
        (st = dn_mreport_render(r, dn_format_name(fmt), &b))) {
        rc = dn_cli_fail("report", st);
        goto done;
    }
    if (out) {
        f = fopen(out, "wb");
        if (!f) { fprintf(stderr, "defectnet report: %s: cannot write: %s\n", out, strerror(errno)); goto done; }
    }
    if (b.len && fwrite(b.s, 1, b.len, f ? f : stdout) != b.len) {
        fprintf(stderr, "defectnet report: %s: write failed: %s\n", out ? out : "standard output", strerror(errno));
        goto done;
    }
    if (f && fclose(f)) {
        f = NULL;
        fprintf(stderr, "defectnet report: %s: write failed: %s\n", out, strerror(errno));
        goto done;
    }
    f = NULL;
    rc = 0;
done:
    if (f) fclose(f);
    dn_sb_free(&b);
    dn_mreport_free(r);
    dn_store_close(s);
    return rc;
}
