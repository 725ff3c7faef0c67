/* `defectnet compare --db DB`: how a candidate model run with `serve --shadow` agrees
 * with the live model on the same images (docs/review.md). */
#include "cli/args.h"
#include "core/core.h"
#include "serve/mreport.h"
#include "trust/compare.h"
#include <stdio.h>
#include <string.h>

static void compare_usage(FILE *f) {
    fprintf(f, "usage: defectnet compare --db sqlite:FILE|postgres://... [--from T] [--to T] [-f|--format table|json]\n"
               "  Live vs shadow model (serve --shadow M2) on every image both classified: how often they give\n"
               "  the same class and the same decision, and per class how many each predicted and how many of\n"
               "  the live model's predictions the candidate kept. Classes are matched by name.\n"
               "  T: unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]Z (UTC); from <= t < to.\n"
               "  Exit 2 when there are no shadow predictions in the range.\n" DN_EXIT_HELP);
}

int cmd_compare(int argc, char **argv) {
    const char *db = NULL, *format = NULL;
    double from = 0, to = 0;
    enum { O_DB = 256, O_FROM, O_TO };
    static const dn_opt opts[] = {{"db", O_DB, DN_ARG_REQ, NULL},     {"from", O_FROM, DN_ARG_REQ, NULL},
                                  {"to", O_TO, DN_ARG_REQ, NULL},     {"format", 'f', DN_ARG_REQ, NULL},
                                  {0}};
    dn_args a;
    dn_args_init(&a, "compare", argc, argv, opts);
    for (int c; (c = dn_args_next(&a)) != -1;) {
        switch (c) {
        case 'h': compare_usage(stdout); return 0;
        case O_DB: db = a.val; break;
        case 'f': format = a.val; break;
        case O_FROM:
        case O_TO:
            if (dn_parse_time(a.val, a.name, c == O_FROM ? &from : &to)) return dn_usage_error("compare", "%s", dn_last_error());
            break;
        default: return DN_EXIT_USAGE;
        }
    }
    if (dn_args_npos(&a)) return dn_usage_error("compare", "unexpected argument '%s'", dn_args_pos(&a, 0));
    if (!db) return dn_usage_error("compare", "--db is required (see defectnet compare --help)");
    int fmt = DN_FMT_TABLE;
    if (format && dn_format_parse("compare", format, DN_FMT_TABLE | DN_FMT_JSON, &fmt)) return DN_EXIT_USAGE;
    dn_store *s = NULL;
    dn_compare c;
    memset(&c, 0, sizeof c);
    dn_status st = dn_store_open_readonly(db, &s); /* a missing database is refused, never created */
    if (!st && dn_store_schema_version(s) >= 4) st = dn_compare_store(s, from, to, &c); /* v4: shadow table */
    dn_store_close(s);
    if (st) return dn_cli_fail("compare", st);
    if (fmt == DN_FMT_JSON) {
        dn_sb b = {0};
        dn_compare_json(&c, &b);
        if (b.oom) { dn_sb_free(&b); return dn_cli_fail("compare", DN_ERR_NOMEM); }
        printf("%s\n", b.s);
        dn_sb_free(&b);
    } else {
        dn_compare_print(&c, stdout);
    }
    if (!c.n) {
        fprintf(stderr, "defectnet compare: %s: no shadow predictions%s (run serve with --shadow CANDIDATE)\n", db,
                from > 0 || to > 0 ? " in the time range" : "");
        return DN_EXIT_DATA;
    }
    return 0;
}
