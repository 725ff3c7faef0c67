/* Internals shared by the manufacturing report's aggregation (mreport.c) and
 * its HTML/SVG page (mreport_html.c). Not part of any API. */
#ifndef DN_SERVE_MREPORT_INT_H
#define DN_SERVE_MREPORT_INT_H
#include "core/tz.h"
#include "serve/mreport.h"
#include "trust/compare.h"

typedef struct {
    char *key;
    int64_t total, defects, uncertain, unknown;
    double conf_sum;
    int64_t *counts; /* [capcls] */
} rgroup;

/* string-keyed rows with a hash index */
typedef struct {
    rgroup *g;
    int n, cap;
    int *slot;       /* [nslot] row index + 1, 0 = empty */
    int nslot;
} rtable;

#define DN_MREPORT_RECENT 12  /* thumbnails of the most recent defects with stored images */
#define DN_MREPORT_PLINES 8   /* p-charts drawn (lines with most predictions) */

typedef struct {
    double time;
    char *cls, *line, *path;
    char *heat;                     /* Grad-CAM overlay of the prediction, NULL = none */
    float confidence;
} recent_defect;

struct dn_mreport {
    char group_by[16];
    char *ok_classes, *title, *line;
    int ok_default;                 /* no --ok-classes: ok = a name meaning a good part (eval/policy.h) */
    dn_tz tz;
    int shift_start[8], nshift;
    double from, to, tmin, tmax;
    char **classes;
    int ncls, capcls;
    rtable groups, lines;
    rtable s_day, s_hour, p_day, p_hour; /* counts over time; per line x time ("line\x1f" bucket) */
    rtable *series, *pchart;             /* the chosen bucket size (after build) */
    char series_unit[8];                 /* "hour" (data within 48 h), "day" or "shift" */
    int64_t total, defects, uncertain, unknown;
    int64_t *class_counts;               /* [capcls] */
    struct dn_compare *shadow;          /* live vs shadow model (trust/compare.h); NULL before schema v4 */
    recent_defect recent[DN_MREPORT_RECENT];
    int nrecent;
    int oom;
};

/* Control limits of one p-chart point: n predictions, pbar the line's rate. */
void dn_pchart_limits(double pbar, int64_t n, double *lcl, double *ucl);
int dn_mreport_is_ok_class(const dn_mreport *r, const char *cls);
/* Defect classes by count, descending (ties by name); caller frees. */
int *dn_mreport_pareto(const dn_mreport *r, int *n);
/* The p-chart rows of one line (keys "line\x1fbucket"), NULL-terminated pointer list; caller frees. */
const rgroup **dn_mreport_line_points(const dn_mreport *r, const char *line, int *n);
void dn_mreport_fmt_time(const dn_mreport *r, double t, char *buf, size_t n);
void dn_mreport_render_html(const dn_mreport *r, dn_sb *b);

static inline double mr_rate(int64_t a, int64_t b) { return b ? (double)a / (double)b : 0.0; }

#endif
