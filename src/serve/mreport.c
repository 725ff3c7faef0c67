/* Manufacturing report aggregation and rendering (see mreport.h).
 *
 * One pass over the matching predictions fills three tables keyed by string:
 * the requested grouping, lines (defect/uncertain rate per line) and time buckets
 * (UTC days, or shifts when grouping by shift) for the counts-over-time chart.
 * Every table row keeps per-class counts. Rendering never trusts stored strings:
 * class/line names are escaped for HTML/SVG, JSON and CSV (with a leading quote
 * against spreadsheet formula injection). */
#include "serve/mreport.h"
#include "core/core.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    char *key;
    int64_t total, defects, uncertain;
    double conf_sum;
    int64_t *counts; /* [capcls] */
} rgroup;

typedef struct {
    rgroup *g;
    int n, cap, last;
} rtable;

struct dn_mreport {
    char group_by[16];
    char *ok_classes, *title, *line;
    int shift_start[8], nshift;
    double from, to, tmin, tmax;
    char **classes;
    int ncls, capcls;
    rtable groups, lines, series, hours;
    char series_unit[8];        /* "hour" (data within 48 h), "day" or "shift" */
    int64_t total, defects, uncertain;
    int64_t *class_counts; /* [capcls] */
    int oom;
};

static const char *DEFAULT_OK = "ok,good,pass,normal,clean,no_defect";

/* ------------------------------------------------------------------ tables */

static int grow_counts(int64_t **c, int oldcap, int newcap) {
    int64_t *n = realloc(*c, (size_t)newcap * sizeof *n);
    if (!n) return -1;
    memset(n + oldcap, 0, (size_t)(newcap - oldcap) * sizeof *n);
    *c = n;
    return 0;
}

static int class_index(dn_mreport *r, const char *cls) {
    for (int i = 0; i < r->ncls; i++)
        if (!strcmp(r->classes[i], cls)) return i;
    if (r->ncls == r->capcls) {
        int nc = r->capcls ? r->capcls * 2 : 8;
        char **ncl = realloc(r->classes, (size_t)nc * sizeof *ncl);
        if (!ncl) return -1;
        r->classes = ncl;
        if (grow_counts(&r->class_counts, r->capcls, nc)) return -1;
        rtable *ts[4] = {&r->groups, &r->lines, &r->series, &r->hours};
        for (int t = 0; t < 4; t++)
            for (int i = 0; i < ts[t]->n; i++)
                if (grow_counts(&ts[t]->g[i].counts, r->capcls, nc)) return -1;
        r->capcls = nc;
    }
    r->classes[r->ncls] = strdup(cls);
    if (!r->classes[r->ncls]) return -1;
    return r->ncls++;
}

static rgroup *table_get(dn_mreport *r, rtable *t, const char *key) {
    if (t->last >= 0 && t->last < t->n && !strcmp(t->g[t->last].key, key)) return &t->g[t->last];
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->g[i].key, key)) { t->last = i; return &t->g[i]; }
    if (t->n == t->cap) {
        int nc = t->cap ? t->cap * 2 : 16;
        rgroup *ng = realloc(t->g, (size_t)nc * sizeof *ng);
        if (!ng) return NULL;
        t->g = ng;
        t->cap = nc;
    }
    rgroup *g = &t->g[t->n];
    memset(g, 0, sizeof *g);
    g->key = strdup(key);
    g->counts = calloc((size_t)(r->capcls ? r->capcls : 1), sizeof *g->counts);
    if (!g->key || !g->counts) { free(g->key); free(g->counts); return NULL; }
    t->last = t->n++;
    return g;
}

static void table_free(rtable *t) {
    for (int i = 0; i < t->n; i++) { free(t->g[i].key); free(t->g[i].counts); }
    free(t->g);
}

static int cmp_group_key(const void *a, const void *b) {
    return strcmp(((const rgroup *)a)->key, ((const rgroup *)b)->key);
}

/* ------------------------------------------------------------------ keys */

static int is_ok_class(const dn_mreport *r, const char *cls) {
    size_t n = strlen(cls);
    for (const char *p = r->ok_classes; *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && !strncmp(p, cls, n)) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

static void hour_key(double t, char *buf, size_t n) {
    time_t tt = (time_t)floor(t);
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, n, "%Y-%m-%d %H:00", &tm);
}

static void day_key(double t, char *buf, size_t n) {
    time_t tt = (time_t)floor(t);
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, n, "%Y-%m-%d", &tm);
}

/* "YYYY-MM-DD shift N (HH:00)" where the date is the day the shift started. */
static void shift_key(const dn_mreport *r, double t, char *buf, size_t n) {
    time_t tt = (time_t)floor(t);
    struct tm tm;
    gmtime_r(&tt, &tm);
    int h = tm.tm_hour, idx = -1;
    for (int i = 0; i < r->nshift; i++)
        if (h >= r->shift_start[i]) idx = i;
    if (idx < 0) { /* before the first shift start: the previous day's last shift */
        tt -= 86400;
        gmtime_r(&tt, &tm);
        idx = r->nshift - 1;
    }
    char d[16];
    strftime(d, sizeof d, "%Y-%m-%d", &tm);
    snprintf(buf, n, "%s S%d %02d:00", d, idx + 1, r->shift_start[idx]);
}

static int add_row(void *ctx, const dn_pred_row *row) {
    dn_mreport *r = ctx;
    int ci = class_index(r, row->cls ? row->cls : "?");
    if (ci < 0) { r->oom = 1; return 1; }
    int unc = row->decision && !strcmp(row->decision, "uncertain");
    int def = !is_ok_class(r, r->classes[ci]);
    char key[128], skey[64], hkey[64];
    const char *line = row->line && *row->line ? row->line : "(none)";
    if (!strcmp(r->group_by, "day")) day_key(row->time, key, sizeof key);
    else if (!strcmp(r->group_by, "shift")) shift_key(r, row->time, key, sizeof key);
    else if (!strcmp(r->group_by, "line")) snprintf(key, sizeof key, "%s", line);
    else snprintf(key, sizeof key, "%s", r->classes[ci]);
    if (!strcmp(r->group_by, "shift")) shift_key(r, row->time, skey, sizeof skey);
    else day_key(row->time, skey, sizeof skey);
    int shift = !strcmp(r->group_by, "shift");
    if (!shift) hour_key(row->time, hkey, sizeof hkey);
    rgroup *gs[4] = {table_get(r, &r->groups, key), table_get(r, &r->lines, line),
                     table_get(r, &r->series, skey), shift ? NULL : table_get(r, &r->hours, hkey)};
    for (int i = 0; i < 4 - shift; i++) {
        if (!gs[i]) { r->oom = 1; return 1; }
        gs[i]->total++;
        gs[i]->defects += def;
        gs[i]->uncertain += unc;
        gs[i]->conf_sum += row->confidence;
        gs[i]->counts[ci]++;
    }
    r->total++;
    r->defects += def;
    r->uncertain += unc;
    r->class_counts[ci]++;
    if (r->total == 1 || row->time < r->tmin) r->tmin = row->time;
    if (r->total == 1 || row->time > r->tmax) r->tmax = row->time;
    return 0;
}

/* ------------------------------------------------------------------ build */

void dn_mreport_free(dn_mreport *r) {
    if (!r) return;
    for (int i = 0; i < r->ncls; i++) free(r->classes[i]);
    free(r->classes);
    free(r->class_counts);
    table_free(&r->groups);
    table_free(&r->lines);
    table_free(&r->series);
    table_free(&r->hours);
    free(r->ok_classes);
    free(r->title);
    free(r->line);
    free(r);
}

static dn_status parse_shifts(dn_mreport *r, const char *s) {
    r->nshift = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long h = strtol(p, &end, 10);
        if (end == p || h < 0 || h > 23 || r->nshift == 8 || (*end && *end != ','))
            return dn_fail(DN_ERR_ARG, "report: --shifts '%s': expected up to 8 comma-separated hours 0-23", s);
        if (r->nshift && h <= r->shift_start[r->nshift - 1])
            return dn_fail(DN_ERR_ARG, "report: --shifts '%s': start hours must be increasing", s);
        r->shift_start[r->nshift++] = (int)h;
        p = *end ? end + 1 : end;
    }
    if (!r->nshift) return dn_fail(DN_ERR_ARG, "report: --shifts is empty");
    return DN_OK;
}

dn_status dn_mreport_build(dn_store *s, const dn_mreport_opts *o, dn_mreport **out) {
    *out = NULL;
    dn_status rc;
    dn_mreport *r = dn_calloc(1, sizeof *r);
    if (!r) return DN_ERR_NOMEM;
    r->groups.last = r->lines.last = r->series.last = r->hours.last = -1;
    const char *gb = o->group_by && *o->group_by ? o->group_by : "day";
    if (strcmp(gb, "day") && strcmp(gb, "line") && strcmp(gb, "class") && strcmp(gb, "shift")) {
        rc = dn_fail(DN_ERR_ARG, "report: group-by '%.40s' is not one of line, class, shift, day", gb);
        goto fail;
    }
    snprintf(r->group_by, sizeof r->group_by, "%s", gb);
    if ((rc = parse_shifts(r, o->shifts ? o->shifts : "6,14,22"))) goto fail;
    if (o->from > 0 && o->to > 0 && o->to <= o->from) {
        rc = dn_fail(DN_ERR_ARG, "report: --to must be after --from");
        goto fail;
    }
    r->ok_classes = dn_strdup(o->ok_classes ? o->ok_classes : DEFAULT_OK);
    r->title = dn_strdup(o->title ? o->title : "defectnet manufacturing report");
    r->line = o->line ? dn_strdup(o->line) : NULL;
    if (!r->ok_classes || !r->title || (o->line && !r->line)) { rc = DN_ERR_NOMEM; goto fail; }
    r->from = o->from;
    r->to = o->to;
    dn_pred_filter f = {0};
    f.no_scores = 1; /* the score vectors are not aggregated */
    f.from = o->from;
    f.to = o->to;
    f.line = o->line;
    if ((rc = dn_store_scan(s, &f, add_row, r))) goto fail;
    if (r->oom) { rc = dn_fail(DN_ERR_NOMEM, "report: out of memory aggregating predictions"); goto fail; }
    /* time-like keys sort chronologically as strings; lines/classes alphabetically */
    /* counts over time: per hour when the data spans at most 48 hours, else per day */
    snprintf(r->series_unit, sizeof r->series_unit, "%s", !strcmp(r->group_by, "shift") ? "shift" : "day");
    if (strcmp(r->group_by, "shift") && r->total && r->tmax - r->tmin <= 48 * 3600.0) {
        rtable t = r->series;
        r->series = r->hours;
        r->hours = t;
        snprintf(r->series_unit, sizeof r->series_unit, "hour");
    }
    rtable *ts[3] = {&r->groups, &r->lines, &r->series};
    for (int i = 0; i < 3; i++)
        if (ts[i]->n > 1) qsort(ts[i]->g, (size_t)ts[i]->n, sizeof(rgroup), cmp_group_key);
    r->groups.last = r->lines.last = r->series.last = -1;
    *out = r;
    return DN_OK;
fail:
    dn_mreport_free(r);
    return rc;
}

int64_t dn_mreport_total(const dn_mreport *r) { return r->total; }
int64_t dn_mreport_class_count(const dn_mreport *r, const char *cls) {
    for (int i = 0; i < r->ncls; i++)
        if (!strcmp(r->classes[i], cls)) return r->class_counts[i];
    return 0;
}

const char *dn_mreport_mime(const char *format) {
    if (!format) return NULL;
    if (!strcmp(format, "csv")) return "text/csv; charset=utf-8";
    if (!strcmp(format, "json")) return "application/json";
    if (!strcmp(format, "html")) return "text/html; charset=utf-8";
    return NULL;
}

/* ------------------------------------------------------------------ helpers */

dn_status dn_parse_time(const char *s, const char *what, double *t) {
    char *end;
    if (!s || !*s) return dn_fail(DN_ERR_ARG, "%s: empty time", what);
    double v = strtod(s, &end);
    if (*end == 0 && end != s && strchr(s, '-') == NULL) {
        if (!(v >= 0 && v < 1e11)) return dn_fail(DN_ERR_ARG, "%s: time '%.40s' out of range", what, s);
        *t = v;
        return DN_OK;
    }
    int Y, M, D, h = 0, m = 0, sec = 0, n = 0;
    char tail[8] = "";
    int k = sscanf(s, "%4d-%2d-%2d%n", &Y, &M, &D, &n);
    if (k == 3 && s[n] == 'T') {
        int n2 = 0;
        k = sscanf(s + n, "T%2d:%2d%n", &h, &m, &n2);
        if (k != 2) goto bad;
        n += n2;
        if (s[n] == ':') {
            if (sscanf(s + n, ":%2d%n", &sec, &n2) != 1) goto bad;
            n += n2;
        }
        snprintf(tail, sizeof tail, "%.7s", s + n);
        if (strcmp(tail, "") && strcmp(tail, "Z")) goto bad;
    } else if (k != 3 || s[n]) {
        goto bad;
    }
    if (Y < 1970 || Y > 9999 || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60) goto bad;
    struct tm tm = {0};
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = sec;
    *t = (double)timegm(&tm);
    return DN_OK;
bad:
    return dn_fail(DN_ERR_ARG, "%s: cannot parse time '%.40s' (use unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]Z)", what, s);
}

static double rate(int64_t a, int64_t b) { return b ? (double)a / (double)b : 0.0; }

static void fmt_time(double t, char *buf, size_t n) {
    if (t <= 0) { snprintf(buf, n, "-"); return; }
    time_t tt = (time_t)floor(t);
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Pareto order: defect classes by count, descending (ties by name). */
static int *pareto_order(const dn_mreport *r, int *n) {
    int *idx = malloc((size_t)(r->ncls ? r->ncls : 1) * sizeof *idx);
    *n = 0;
    if (!idx) return NULL;
    for (int i = 0; i < r->ncls; i++)
        if (!is_ok_class(r, r->classes[i]) && r->class_counts[i] > 0) idx[(*n)++] = i;
    for (int i = 1; i < *n; i++) /* insertion sort: few classes */
        for (int j = i; j > 0; j--) {
            int a = idx[j - 1], b = idx[j];
            if (r->class_counts[a] > r->class_counts[b] ||
                (r->class_counts[a] == r->class_counts[b] && strcmp(r->classes[a], r->classes[b]) <= 0))
                break;
            idx[j - 1] = b;
            idx[j] = a;
        }
    return idx;
}

static void csv_field(dn_sb *b, const char *s) {
    int quote = strpbrk(s, ",\"\r\n") != NULL;
    int formula = s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@';
    if (!quote && !formula) { dn_sb_puts(b, s); return; }
    dn_sb_putn(b, "\"", 1);
    if (formula) dn_sb_putn(b, "'", 1);
    for (const char *p = s; *p; p++) {
        if (*p == '"') dn_sb_putn(b, "\"", 1);
        dn_sb_putn(b, p, 1);
    }
    dn_sb_putn(b, "\"", 1);
}

static void html_esc(dn_sb *b, const char *s) {
    for (const char *p = s; *p; p++) {
        switch (*p) {
        case '&': dn_sb_puts(b, "&amp;"); break;
        case '<': dn_sb_puts(b, "&lt;"); break;
        case '>': dn_sb_puts(b, "&gt;"); break;
        case '"': dn_sb_puts(b, "&quot;"); break;
        case '\'': dn_sb_puts(b, "&#39;"); break;
        default: dn_sb_putn(b, p, 1);
        }
    }
}

/* ------------------------------------------------------------------ CSV */

static void render_csv(const dn_mreport *r, dn_sb *b) {
    dn_sb_puts(b, r->group_by);
    dn_sb_puts(b, ",total,defects,defect_rate,uncertain,uncertain_rate,mean_confidence");
    for (int c = 0; c < r->ncls; c++) {
        dn_sb_puts(b, ",");
        csv_field(b, r->classes[c]);
    }
    dn_sb_puts(b, "\n");
    for (int i = 0; i < r->groups.n; i++) {
        const rgroup *g = &r->groups.g[i];
        csv_field(b, g->key);
        dn_sb_printf(b, ",%lld,%lld,%.6f,%lld,%.6f,%.6f", (long long)g->total, (long long)g->defects,
                     rate(g->defects, g->total), (long long)g->uncertain, rate(g->uncertain, g->total),
                     g->total ? g->conf_sum / (double)g->total : 0.0);
        for (int c = 0; c < r->ncls; c++) dn_sb_printf(b, ",%lld", (long long)g->counts[c]);
        dn_sb_puts(b, "\n");
    }
}

/* ------------------------------------------------------------------ JSON */

static void json_table(const dn_mreport *r, const rtable *t, dn_sb *b) {
    dn_sb_puts(b, "[");
    for (int i = 0; i < t->n; i++) {
        const rgroup *g = &t->g[i];
        dn_sb_puts(b, i ? ",{\"key\":" : "{\"key\":");
        dn_sb_json_str(b, g->key);
        dn_sb_printf(b, ",\"total\":%lld,\"defects\":%lld,\"defect_rate\":%.6f,\"uncertain\":%lld,"
                        "\"uncertain_rate\":%.6f,\"counts\":{",
                     (long long)g->total, (long long)g->defects, rate(g->defects, g->total),
                     (long long)g->uncertain, rate(g->uncertain, g->total));
        int first = 1;
        for (int c = 0; c < r->ncls; c++) {
            if (!g->counts[c]) continue;
            if (!first) dn_sb_puts(b, ",");
            first = 0;
            dn_sb_json_str(b, r->classes[c]);
            dn_sb_printf(b, ":%lld", (long long)g->counts[c]);
        }
        dn_sb_puts(b, "}}");
    }
    dn_sb_puts(b, "]");
}

static void render_json(const dn_mreport *r, dn_sb *b) {
    char f[32], t[32];
    fmt_time(r->from, f, sizeof f);
    fmt_time(r->to, t, sizeof t);
    dn_sb_puts(b, "{\"title\":");
    dn_sb_json_str(b, r->title);
    dn_sb_puts(b, ",\"group_by\":");
    dn_sb_json_str(b, r->group_by);
    dn_sb_puts(b, ",\"from\":");
    if (r->from > 0) dn_sb_json_str(b, f); else dn_sb_puts(b, "null");
    dn_sb_puts(b, ",\"to\":");
    if (r->to > 0) dn_sb_json_str(b, t); else dn_sb_puts(b, "null");
    dn_sb_puts(b, ",\"line\":");
    if (r->line) dn_sb_json_str(b, r->line); else dn_sb_puts(b, "null");
    dn_sb_puts(b, ",\"ok_classes\":");
    dn_sb_json_str(b, r->ok_classes);
    dn_sb_printf(b, ",\"total\":%lld,\"defects\":%lld,\"defect_rate\":%.6f,\"uncertain\":%lld,\"uncertain_rate\":%.6f",
                 (long long)r->total, (long long)r->defects, rate(r->defects, r->total), (long long)r->uncertain,
                 rate(r->uncertain, r->total));
    dn_sb_puts(b, ",\"classes\":{");
    for (int c = 0; c < r->ncls; c++) {
        if (c) dn_sb_puts(b, ",");
        dn_sb_json_str(b, r->classes[c]);
        dn_sb_printf(b, ":%lld", (long long)r->class_counts[c]);
    }
    dn_sb_puts(b, "},\"pareto\":[");
    int np = 0;
    int *po = pareto_order(r, &np);
    int64_t cum = 0;
    for (int i = 0; po && i < np; i++) {
        cum += r->class_counts[po[i]];
        dn_sb_puts(b, i ? ",{\"class\":" : "{\"class\":");
        dn_sb_json_str(b, r->classes[po[i]]);
        dn_sb_printf(b, ",\"count\":%lld,\"cumulative_pct\":%.3f}", (long long)r->class_counts[po[i]],
                     100.0 * rate(cum, r->defects));
    }
    free(po);
    dn_sb_puts(b, "],\"groups\":");
    json_table(r, &r->groups, b);
    dn_sb_puts(b, ",\"lines\":");
    json_table(r, &r->lines, b);
    dn_sb_printf(b, ",\"series_unit\":\"%s\",\"series\":", r->series_unit);
    json_table(r, &r->series, b);
    dn_sb_puts(b, "}\n");
}

/* ------------------------------------------------------------------ HTML + SVG */

static const char *const PALETTE[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
                                      "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#d62728"};
#define NPAL ((int)(sizeof PALETTE / sizeof PALETTE[0]))

static double nice_max(double v) {
    if (v <= 0) return 1;
    double p = pow(10, floor(log10(v))), m = v / p;
    double n = m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10;
    return n * p;
}

/* Stacked bars of per-class counts for each time bucket. */
static void svg_series(const dn_mreport *r, dn_sb *b) {
    const rtable *t = &r->series;
    const int W = 760, H = 300, L = 50, R = 150, T = 20, B = 70;
    double pw = W - L - R, ph = H - T - B;
    int64_t mx = 0;
    for (int i = 0; i < t->n; i++) if (t->g[i].total > mx) mx = t->g[i].total;
    double ymax = nice_max((double)mx);
    dn_sb_printf(b, "<svg class=\"chart\" id=\"chart-series\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                    "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"predictions per class over time\">\n", W, H, W, H);
    for (int k = 0; k <= 4; k++) {
        double y = T + ph - ph * k / 4.0;
        dn_sb_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                        "<text x=\"%d\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%g</text>\n",
                     L, y, L + pw, y, L - 4, y + 3, ymax * k / 4.0);
    }
    double bw = t->n ? pw / t->n : pw;
    int every = t->n > 16 ? (t->n + 15) / 16 : 1;
    for (int i = 0; i < t->n; i++) {
        const rgroup *g = &t->g[i];
        double x = L + i * bw + bw * 0.1, y = T + ph;
        for (int c = 0; c < r->ncls; c++) {
            if (!g->counts[c]) continue;
            double h = ph * (double)g->counts[c] / ymax;
            y -= h;
            dn_sb_printf(b, "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>",
                         x, y, bw * 0.8, h, PALETTE[c % NPAL]);
            html_esc(b, g->key);
            dn_sb_puts(b, " ");
            html_esc(b, r->classes[c]);
            dn_sb_printf(b, ": %lld</title></rect>\n", (long long)g->counts[c]);
        }
        if (i % every == 0) {
            dn_sb_printf(b, "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" transform=\"rotate(45 %.1f %d)\">",
                         x + bw * 0.4, T + (int)ph + 12, x + bw * 0.4, T + (int)ph + 12);
            html_esc(b, g->key);
            dn_sb_puts(b, "</text>\n");
        }
    }
    for (int c = 0; c < r->ncls; c++) {
        double y = T + 14.0 * c;
        dn_sb_printf(b, "<rect x=\"%d\" y=\"%.1f\" width=\"10\" height=\"10\" fill=\"%s\"/><text x=\"%d\" y=\"%.1f\" font-size=\"11\">",
                     W - R + 10, y, PALETTE[c % NPAL], W - R + 24, y + 9);
        html_esc(b, r->classes[c]);
        dn_sb_puts(b, "</text>\n");
    }
    dn_sb_puts(b, "</svg>\n");
}

/* Pareto: defect classes by count (bars) and the cumulative share (line, right axis). */
static void svg_pareto(const dn_mreport *r, dn_sb *b) {
    const int W = 760, H = 300, L = 50, R = 50, T = 20, B = 80;
    double pw = W - L - R, ph = H - T - B;
    int np = 0;
    int *po = pareto_order(r, &np);
    double ymax = nice_max(np && po ? (double)r->class_counts[po[0]] : 1);
    dn_sb_printf(b, "<svg class=\"chart\" id=\"chart-pareto\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                    "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"Pareto chart of defect classes\">\n", W, H, W, H);
    for (int k = 0; k <= 4; k++) {
        double y = T + ph - ph * k / 4.0;
        dn_sb_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                        "<text x=\"%d\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%g</text>"
                        "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\">%d%%</text>\n",
                     L, y, L + pw, y, L - 4, y + 3, ymax * k / 4.0, L + pw + 4, y + 3, 25 * k);
    }
    double bw = np ? pw / np : pw;
    int64_t cum = 0;
    dn_sb b2 = {0};
    for (int i = 0; po && i < np; i++) {
        int c = po[i];
        double h = ph * (double)r->class_counts[c] / ymax, x = L + i * bw + bw * 0.1;
        dn_sb_printf(b, "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>",
                     x, T + ph - h, bw * 0.8, h, PALETTE[c % NPAL]);
        html_esc(b, r->classes[c]);
        dn_sb_printf(b, ": %lld</title></rect>\n", (long long)r->class_counts[c]);
        dn_sb_printf(b, "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" transform=\"rotate(30 %.1f %d)\">",
                     x, T + (int)ph + 12, x, T + (int)ph + 12);
        html_esc(b, r->classes[c]);
        dn_sb_puts(b, "</text>\n");
        cum += r->class_counts[c];
        dn_sb_printf(&b2, "%s%.1f,%.1f", i ? " " : "", L + i * bw + bw * 0.5, T + ph - ph * rate(cum, r->defects));
    }
    if (b2.s) dn_sb_printf(b, "<polyline class=\"cumulative\" points=\"%s\" fill=\"none\" stroke=\"#333\" stroke-width=\"2\"/>\n", b2.s);
    if (b2.oom) b->oom = 1;
    dn_sb_free(&b2);
    if (!np) dn_sb_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"14\">no defects</text>\n", L + 20, T + 40);
    free(po);
    dn_sb_puts(b, "</svg>\n");
}

/* Horizontal bars of a rate (0..1) per table row: defect rate per line, uncertain rate per group. */
static void svg_rates(const dn_mreport *r, const rtable *t, int uncertain, const char *id, const char *label, dn_sb *b) {
    const int W = 760, L = 170, R = 60, T = 10, RH = 22;
    int H = T * 2 + RH * (t->n ? t->n : 1) + 16;
    double pw = W - L - R;
    dn_sb_printf(b, "<svg class=\"chart\" id=\"%s\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                    "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"%s\">\n", id, W, H, W, H, label);
    for (int k = 0; k <= 4; k++) {
        double x = L + pw * k / 4.0;
        dn_sb_printf(b, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#ddd\"/>"
                        "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%d%%</text>\n",
                     x, T, x, H - 16, x, H - 4, 25 * k);
    }
    for (int i = 0; i < t->n; i++) {
        const rgroup *g = &t->g[i];
        double v = rate(uncertain ? g->uncertain : g->defects, g->total);
        double y = T + i * RH;
        dn_sb_printf(b, "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">", L - 6, y + 15);
        html_esc(b, g->key);
        dn_sb_printf(b, "</text><rect class=\"bar\" x=\"%d\" y=\"%.1f\" width=\"%.1f\" height=\"%d\" fill=\"%s\"><title>",
                     L, y + 3, pw * v, RH - 6, uncertain ? "#edc948" : "#e15759");
        html_esc(b, g->key);
        dn_sb_printf(b, ": %.1f%% of %lld</title></rect><text x=\"%.1f\" y=\"%.1f\" font-size=\"10\">%.1f%%</text>\n",
                     100 * v, (long long)g->total, L + pw * v + 4, y + 15, 100 * v);
    }
    dn_sb_puts(b, "</svg>\n");
}

static void render_html(const dn_mreport *r, dn_sb *b) {
    char f[32], t[32], lo[32], hi[32];
    fmt_time(r->from, f, sizeof f);
    fmt_time(r->to, t, sizeof t);
    fmt_time(r->total ? r->tmin : 0, lo, sizeof lo);
    fmt_time(r->total ? r->tmax : 0, hi, sizeof hi);
    dn_sb_puts(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>");
    html_esc(b, r->title);
    dn_sb_puts(b, "</title>\n<style>body{font-family:sans-serif;margin:24px;color:#222}"
                  "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
                  "th:first-child,td:first-child{text-align:left}.kpi{display:inline-block;margin-right:32px}"
                  ".kpi b{font-size:1.6em;display:block}svg.chart{display:block;margin:8px 0 24px}</style>\n</head><body>\n<h1>");
    html_esc(b, r->title);
    dn_sb_puts(b, "</h1>\n<p>Range: ");
    dn_sb_puts(b, r->from > 0 ? f : "the beginning");
    dn_sb_puts(b, " to ");
    dn_sb_puts(b, r->to > 0 ? t : "now");
    dn_sb_puts(b, " (UTC; data from ");
    dn_sb_puts(b, lo);
    dn_sb_puts(b, " to ");
    dn_sb_puts(b, hi);
    dn_sb_puts(b, "). Line: ");
    html_esc(b, r->line ? r->line : "all");
    dn_sb_puts(b, ". Grouped by ");
    dn_sb_puts(b, r->group_by);
    dn_sb_puts(b, ". Non-defect classes: ");
    html_esc(b, r->ok_classes);
    dn_sb_puts(b, ".</p>\n");
    dn_sb_printf(b, "<div class=\"kpi\" id=\"kpi-total\">predictions<b>%lld</b></div>"
                    "<div class=\"kpi\" id=\"kpi-defects\">defects<b>%lld (%.1f%%)</b></div>"
                    "<div class=\"kpi\" id=\"kpi-uncertain\">uncertain<b>%lld (%.1f%%)</b></div>\n",
                 (long long)r->total, (long long)r->defects, 100 * rate(r->defects, r->total),
                 (long long)r->uncertain, 100 * rate(r->uncertain, r->total));
    dn_sb_printf(b, "<h2>Predictions per class per %s (UTC)</h2>\n", r->series_unit);
    svg_series(r, b);
    dn_sb_puts(b, "<h2>Pareto of defect classes</h2>\n");
    svg_pareto(r, b);
    dn_sb_puts(b, "<h2>Defect rate per line</h2>\n");
    svg_rates(r, &r->lines, 0, "chart-line-defects", "defect rate per line", b);
    dn_sb_printf(b, "<h2>Uncertain rate per %s</h2>\n", r->group_by);
    svg_rates(r, &r->groups, 1, "chart-uncertain", "uncertain rate", b);
    dn_sb_printf(b, "<h2>Counts per %s</h2>\n<table id=\"groups\"><tr><th>%s</th><th>total</th><th>defects</th>"
                    "<th>defect rate</th><th>uncertain</th>", r->group_by, r->group_by);
    for (int c = 0; c < r->ncls; c++) {
        dn_sb_puts(b, "<th>");
        html_esc(b, r->classes[c]);
        dn_sb_puts(b, "</th>");
    }
    dn_sb_puts(b, "</tr>\n");
    for (int i = 0; i < r->groups.n; i++) {
        const rgroup *g = &r->groups.g[i];
        dn_sb_puts(b, "<tr><td>");
        html_esc(b, g->key);
        dn_sb_printf(b, "</td><td>%lld</td><td>%lld</td><td>%.1f%%</td><td>%lld</td>", (long long)g->total,
                     (long long)g->defects, 100 * rate(g->defects, g->total), (long long)g->uncertain);
        for (int c = 0; c < r->ncls; c++) dn_sb_printf(b, "<td>%lld</td>", (long long)g->counts[c]);
        dn_sb_puts(b, "</tr>\n");
    }
    dn_sb_puts(b, "</table>\n</body></html>\n");
}

dn_status dn_mreport_render(const dn_mreport *r, const char *format, dn_sb *out) {
    if (!format || !strcmp(format, "json")) render_json(r, out);
    else if (!strcmp(format, "csv")) render_csv(r, out);
    else if (!strcmp(format, "html")) render_html(r, out);
    else return dn_fail(DN_ERR_ARG, "report: format '%.20s' is not one of csv, json, html", format);
    if (out->oom) return dn_fail(DN_ERR_NOMEM, "report: out of memory rendering %s", format ? format : "json");
    return DN_OK;
}
