/* `defectnet report`: manufacturing report from the prediction store. */
#include "core/core.h"
#include "serve/mreport.h"
#include "serve/store.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>

static void report_usage(FILE *f) {
    fprintf(f, "usage: defectnet report --db sqlite:FILE|postgres://... [--from T] [--to T] [--line L]\n"
               "         [--group-by line|class|shift|day] [--format csv|json|html] [--out FILE]\n"
               "         [--ok-classes a,b] [--shifts 6,14,22] [--title TEXT]\n"
               "  T: unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]Z (UTC); from <= t < to.\n"
               "  --format defaults to the --out extension (.csv/.json/.html), else csv.\n"
               "  Classes listed in --ok-classes (default ok,good,pass,normal,clean,no_defect) are not defects.\n");
}

int cmd_report(int argc, char **argv) {
    const char *db = NULL, *out = NULL, *format = NULL;
    dn_mreport_opts o = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { report_usage(stdout); return 0; }
        if (i + 1 >= argc) {
            fprintf(stderr, "defectnet report: %s: unknown option or missing value\n", a);
            report_usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--db")) db = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--format")) format = v;
        else if (!strcmp(a, "--group-by")) o.group_by = v;
        else if (!strcmp(a, "--line")) o.line = v;
        else if (!strcmp(a, "--ok-classes")) o.ok_classes = v;
        else if (!strcmp(a, "--shifts")) o.shifts = v;
        else if (!strcmp(a, "--title")) o.title = v;
        else if (!strcmp(a, "--from") || !strcmp(a, "--to")) {
            if (dn_parse_time(v, a, !strcmp(a, "--from") ? &o.from : &o.to)) {
                fprintf(stderr, "defectnet report: %s\n", dn_last_error());
                return 2;
            }
        } else {
            fprintf(stderr, "defectnet report: unknown option %s\n", a);
            report_usage(stderr);
            return 2;
        }
    }
    if (!db) {
        fprintf(stderr, "defectnet report: --db is required\n");
        report_usage(stderr);
        return 2;
    }
    if (!format) {
        const char *dot = out ? strrchr(out, '.') : NULL;
        format = dot && dn_mreport_mime(dot + 1) ? dot + 1 : "csv";
    }
    if (!dn_mreport_mime(format)) {
        fprintf(stderr, "defectnet report: --format '%s' is not one of csv, json, html\n", format);
        return 2;
    }
    int rc = 1;
    dn_store *s = NULL;
    dn_mreport *r = NULL;
    dn_sb b = {0};
    FILE *f = NULL;
    if (dn_store_open(db, &s) || dn_mreport_build(s, &o, &r) || dn_mreport_render(r, format, &b)) {
        fprintf(stderr, "defectnet report: %s\n", dn_last_error());
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
