/* Manufacturing reports over the prediction store: defect rate per line over time
 * as a p-chart with 3-sigma control limits, counts per class over time, a Pareto
 * chart of defect classes, defect and uncertain rate per group, thumbnails of the
 * most recent defects whose images were stored; as CSV, JSON or one
 * self-contained HTML page with inline SVG in the eval report's style (no
 * scripts, no external assets). Used by `defectnet report` and GET /v1/report.
 *
 * Definitions (documented in docs/serve.md):
 *  - a prediction is a "defect" when its class is not one of ok_classes
 *    (comma-separated; default: every class whose name means a good part by
 *    the good-class rule of nn/policy.h: ok, good, pass, normal, clean,
 *    no_defect, ...);
 *  - "uncertain" = decision uncertain (confidence below the model's threshold,
 *    or a good-class prediction below the stored decision policy's
 *    good_threshold); a defect or an uncertain good-class part is what
 *    /metrics counts as "rejected" (escape / false reject: eval/policy.h words);
 *  - time buckets are local days (tz: an IANA zone read from the system's zoneinfo,
 *    UTC, or a fixed offset like +02:00; default UTC); shifts are given by their
 *    local start hours (default 6,14,22); a shift that starts before midnight keeps
 *    the date it started on;
 *  - p-chart per line: p = defects / predictions per bucket (hour when the data spans
 *    at most 48 h, else day; shift when grouping by shift), centre line p-bar = the
 *    line's overall defect rate, limits p-bar +- 3 sqrt(p-bar (1 - p-bar) / n) per
 *    bucket (clipped to [0, 1]); a point outside them is "out of control".
 *
 * Ownership: dn_mreport_build returns a report owned by the caller (dn_mreport_free);
 * dn_mreport_render appends to a caller-owned dn_sb. */
#ifndef DN_SERVE_MREPORT_H
#define DN_SERVE_MREPORT_H
#include "core/json.h"
#include "serve/store.h"

typedef struct dn_mreport_opts {
    double from, to;            /* unix seconds, 0 = unbounded; from <= t < to */
    const char *line;           /* only this line (NULL = all) */
    const char *group_by;       /* "day" (default), "line", "station", "camera", "shift",
                                   "model_version", "decision", "class" */
    const char *ok_classes;     /* NULL = default list */
    const char *shifts;         /* "6,14,22" local start hours, NULL = default */
    const char *tz;             /* "Europe/Berlin", "UTC", "+05:30"; NULL = UTC */
    const char *title;          /* NULL = "defectnet manufacturing report" */
} dn_mreport_opts;

typedef struct dn_mreport dn_mreport;

/* Checks opts (group_by, shifts, tz, range) without touching any store. */
dn_status dn_mreport_check(const dn_mreport_opts *o);
/* Checks opts and aggregates every matching prediction. */
dn_status dn_mreport_build(dn_store *s, const dn_mreport_opts *o, dn_mreport **out);
void dn_mreport_free(dn_mreport *r);
/* format: "csv" | "json" | "html". */
dn_status dn_mreport_render(const dn_mreport *r, const char *format, dn_sb *out);
/* Content-Type for a format ("text/csv; charset=utf-8", ...); NULL if unknown. */
const char *dn_mreport_mime(const char *format);

/* Parses a time given as unix seconds ("1700000000.5"), a UTC date "YYYY-MM-DD", or
 * "YYYY-MM-DDTHH:MM[:SS][Z]" (UTC). DN_ERR_ARG naming `what` otherwise. */
dn_status dn_parse_time(const char *s, const char *what, double *t);

/* Totals (for callers and tests). */
int64_t dn_mreport_total(const dn_mreport *r);
int64_t dn_mreport_class_count(const dn_mreport *r, const char *cls);

#endif
