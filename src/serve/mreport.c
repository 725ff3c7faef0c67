/* Manufacturing report aggregation, CSV and JSON (see mreport.h; the HTML page is
 * mreport_html.c).
 *
 * One pass over the matching predictions fills string-keyed tables: the requested
 * grouping, lines, counts over time (local hours and days, or shifts) and the same
 * per line for the p-charts. Every row keeps per-class counts. The newest defects
 * whose image copy was stored are kept for thumbnails. Rendering never trusts
 * stored strings: names are escaped for HTML/SVG, JSON and CSV (with a leading
 * quote against spreadsheet formula injection). */
#include "core/core.h"
#include "eval/policy.h"
#include "serve/mreport_int.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *DEFAULT_OK = "ok,good,pass,normal,clean,no_defect";
static const char *const GROUPS[] = {"day", "line", "station", "camera", "shift", "model_version", "decision", "class"};
#define NGROUPS ((int)(sizeof GROUPS / sizeof GROUPS[0]))

/* ------------------------------------------------------------------ tables */

static int grow_counts(int64_t **c, int oldcap, int newcap) {
    int64_t *n = dn_realloc(*c, (size_t)newcap * sizeof *n);
    if (!n) return -1;
    memset(n + oldcap, 0, (size_t)(newcap - oldcap) * sizeof *n);
    *c = n;
    return 0;
}

static rtable *all_tables(dn_mreport *r, int i) {
    rtable *ts[6] = {&r->groups, &r->lines, &r->s_day, &r->s_hour, &r->p_day, &r->p_hour};
    return i < 6 ? ts[i] : NULL;
}

static int class_index(dn_mreport *r, const char *cls) {
    for (int i = 0; i < r->ncls; i++)
        if (!strcmp(r->classes[i], cls)) return i;
    if (r->ncls == r->capcls) {
        int nc = r->capcls ? r->capcls * 2 : 8;
        char **ncl = dn_realloc(r->classes, (size_t)nc * sizeof *ncl);
        if (!ncl) return -1;
        r->classes = ncl;
        if (grow_counts(&r->class_counts, r->capcls, nc)) return -1;
        for (int k = 0; k < 6; k++) {
            rtable *t = all_tables(r, k);
            for (int i = 0; i < t->n; i++)
                if (grow_counts(&t->g[i].counts, r->capcls, nc)) return -1;
        }
        r->capcls = nc;
    }
    r->classes[r->ncls] = dn_strdup(cls);
    if (!r->classes[r->ncls]) return -1;
    return r->ncls++;
}

static uint32_t hash_str(const char *s) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static int rehash(rtable *t, int nslot) {
    int *s = dn_calloc((size_t)nslot, sizeof *s);
    if (!s) return -1;
    for (int i = 0; i < t->n; i++) {
        uint32_t k = hash_str(t->g[i].key) & (uint32_t)(nslot - 1);
        while (s[k]) k = (k + 1) & (uint32_t)(nslot - 1);
        s[k] = i + 1;
    }
    free(t->slot);
    t->slot = s;
    t->nslot = nslot;
    return 0;
}

static rgroup *table_get(dn_mreport *r, rtable *t, const char *key) {
    uint32_t h = hash_str(key);
    if (t->nslot) {
        for (uint32_t k = h & (uint32_t)(t->nslot - 1); t->slot[k]; k = (k + 1) & (uint32_t)(t->nslot - 1))
            if (!strcmp(t->g[t->slot[k] - 1].key, key)) return &t->g[t->slot[k] - 1];
    }
    if (t->n == t->cap) {
        int nc = t->cap ? t->cap * 2 : 16;
        rgroup *ng = dn_realloc(t->g, (size_t)nc * sizeof *ng);
        if (!ng) return NULL;
        t->g = ng;
        t->cap = nc;
    }
    rgroup *g = &t->g[t->n];
    memset(g, 0, sizeof *g);
    g->key = dn_strdup(key);
    g->counts = dn_calloc((size_t)(r->capcls ? r->capcls : 1), sizeof *g->counts);
    if (!g->key || !g->counts) { free(g->key); free(g->counts); return NULL; }
    t->n++;
    if (2 * t->n > t->nslot) { /* keep the load under one half */
        if (rehash(t, t->nslot ? 2 * t->nslot : 64)) { t->n--; free(g->key); free(g->counts); return NULL; }
    } else {
        uint32_t k = h & (uint32_t)(t->nslot - 1);
        while (t->slot[k]) k = (k + 1) & (uint32_t)(t->nslot - 1);
        t->slot[k] = t->n;
    }
    return &t->g[t->n - 1];
}

static void table_free(rtable *t) {
    for (int i = 0; i < t->n; i++) { free(t->g[i].key); free(t->g[i].counts); }
    free(t->g);
    free(t->slot);
}

static int cmp_group_key(const void *a, const void *b) {
    return strcmp(((const rgroup *)a)->key, ((const rgroup *)b)->key);
}

/* sorted keys; the hash index is dropped (lookups after the build are by scan) */
static void table_sort(rtable *t) {
    if (t->n > 1) qsort(t->g, (size_t)t->n, sizeof(rgroup), cmp_group_key);
    free(t->slot);
    t->slot = NULL;
    t->nslot = 0;
}

/* ------------------------------------------------------------------ keys */

int dn_mreport_is_ok_class(const dn_mreport *r, const char *cls) {
    if (r->ok_default) return dn_good_class_name_is_good(cls); /* the rule eval's good class uses */
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

/* local broken-down time of UTC t */
static void local_tm(const dn_mreport *r, double t, struct tm *tm) {
    time_t tt = (time_t)floor(t) + dn_tz_offset(&r->tz, t);
    gmtime_r(&tt, tm);
}

void dn_mreport_fmt_time(const dn_mreport *r, double t, char *buf, size_t n) {
    if (t <= 0) { snprintf(buf, n, "-"); return; }
    struct tm tm;
    local_tm(r, t, &tm);
    int32_t off = dn_tz_offset(&r->tz, t);
    if (!off) { strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm); return; }
    char d[32];
    strftime(d, sizeof d, "%Y-%m-%dT%H:%M:%S", &tm);
    int a = off < 0 ? -off : off;
    snprintf(buf, n, "%s%c%02d:%02d", d, off < 0 ? '-' : '+', a / 3600, a / 60 % 60);
}

/* "YYYY-MM-DD SN HH:00" where the date is the local day the shift started. */
static void shift_key(const dn_mreport *r, double t, char *buf, size_t n) {
    time_t tt = (time_t)floor(t) + dn_tz_offset(&r->tz, t);
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
    snprintf(buf, n, "%.10s S%d %02d:00", d, (idx + 1) % 10, r->shift_start[idx] % 24);
}

static void keep_recent(dn_mreport *r, const dn_pred_row *row, const char *cls, const char *line) {
    if (!row->image_copy || !*row->image_copy) return;
    int slot = r->nrecent;
    if (slot == DN_MREPORT_RECENT) { /* replace the oldest if this one is newer */
        slot = 0;
        for (int i = 1; i < r->nrecent; i++)
            if (r->recent[i].time < r->recent[slot].time) slot = i;
        if (r->recent[slot].time > row->time) return;
        free(r->recent[slot].cls); free(r->recent[slot].line); free(r->recent[slot].path); free(r->recent[slot].heat);
    } else {
        r->nrecent++;
    }
    recent_defect *d = &r->recent[slot];
    d->time = row->time;
    d->confidence = row->confidence;
    d->cls = dn_strdup(cls);
    d->line = dn_strdup(line);
    d->path = dn_strdup(row->image_copy);
    d->heat = row->heatmap ? dn_strdup(row->heatmap) : NULL;
    if (!d->cls || !d->line || !d->path || (row->heatmap && !d->heat)) r->oom = 1;
}

static const char *or_none(const char *s) { return s && *s ? s : "(none)"; }

static int add_row(void *ctx, const dn_pred_row *row) {
    dn_mreport *r = ctx;
    int ci = class_index(r, row->cls ? row->cls : "?");
    if (ci < 0) { r->oom = 1; return 1; }
    int unc = row->decision && !strcmp(row->decision, "uncertain");
    int unk = row->decision && !strcmp(row->decision, "unknown");
    int def = !dn_mreport_is_ok_class(r, r->classes[ci]);
    const char *line = or_none(row->line);
    struct tm tm;
    local_tm(r, row->time, &tm);
    char key[160], day[16], hour[24], shift[32], pday[160], phour[160];
    strftime(day, sizeof day, "%Y-%m-%d", &tm);
    strftime(hour, sizeof hour, "%Y-%m-%d %H:00", &tm);
    int by_shift = !strcmp(r->group_by, "shift");
    if (by_shift) shift_key(r, row->time, shift, sizeof shift);
    const char *g = r->group_by;
    if (!strcmp(g, "day")) snprintf(key, sizeof key, "%s", day);
    else if (by_shift) snprintf(key, sizeof key, "%s", shift);
    else if (!strcmp(g, "line")) snprintf(key, sizeof key, "%.150s", line);
    else if (!strcmp(g, "station")) snprintf(key, sizeof key, "%.150s", or_none(row->station));
    else if (!strcmp(g, "camera")) snprintf(key, sizeof key, "%.150s", or_none(row->camera));
    else if (!strcmp(g, "model_version")) snprintf(key, sizeof key, "%.150s", or_none(row->model_version));
    else if (!strcmp(g, "decision")) snprintf(key, sizeof key, "%.150s", or_none(row->decision));
    else snprintf(key, sizeof key, "%.150s", r->classes[ci]);
    snprintf(pday, sizeof pday, "%.120s\x1f%s", line, by_shift ? shift : day);
    snprintf(phour, sizeof phour, "%.120s\x1f%s", line, hour);
    rgroup *gs[6] = {table_get(r, &r->groups, key), table_get(r, &r->lines, line),
                     table_get(r, &r->s_day, by_shift ? shift : day), table_get(r, &r->s_hour, hour),
                     table_get(r, &r->p_day, pday), table_get(r, &r->p_hour, phour)};
    for (int i = 0; i < 6; i++) {
        if (!gs[i]) { r->oom = 1; return 1; }
        gs[i]->total++;
        gs[i]->defects += def;
        gs[i]->uncertain += unc;
        gs[i]->unknown += unk;
        gs[i]->conf_sum += row->confidence;
        gs[i]->counts[ci]++;
    }
    if (def) keep_recent(r, row, r->classes[ci], line);
    r->total++;
    r->defects += def;
    r->uncertain += unc;
    r->unknown += unk;
    r->class_counts[ci]++;
    if (r->total == 1 || row->time < r->tmin) r->tmin = row->time;
    if (r->total == 1 || row->time > r->tmax) r->tmax = row->time;
    return r->oom;
}

/* ------------------------------------------------------------------ build */

void dn_mreport_free(dn_mreport *r) {
    if (!r) return;
    for (int i = 0; i < r->ncls; i++) free(r->classes[i]);
    free(r->classes);
    free(r->class_counts);
    for (int k = 0; k < 6; k++) table_free(all_tables(r, k));
    for (int i = 0; i < r->nrecent; i++) {
        free(r->recent[i].cls); free(r->recent[i].line); free(r->recent[i].path); free(r->recent[i].heat);
    }
    dn_tz_free(&r->tz);
    free(r->ok_classes);
    free(r->title);
    free(r->line);
    free(r->shadow);
    free(r);
}

static dn_status parse_shifts(int *start, int *nshift, const char *s) {
    *nshift = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long h = strtol(p, &end, 10);
        if (end == p || h < 0 || h > 23 || *nshift == 8 || (*end && *end != ','))
            return dn_fail(DN_ERR_ARG, "report: --shifts '%s': expected up to 8 comma-separated hours 0-23", s);
        if (*nshift && h <= start[*nshift - 1])
            return dn_fail(DN_ERR_ARG, "report: --shifts '%s': start hours must be increasing", s);
        start[(*nshift)++] = (int)h;
        p = *end ? end + 1 : end;
    }
    if (!*nshift) return dn_fail(DN_ERR_ARG, "report: --shifts is empty");
    return DN_OK;
}

dn_status dn_mreport_check(const dn_mreport_opts *o) {
    const char *gb = o->group_by && *o->group_by ? o->group_by : "day";
    int ok = 0;
    for (int i = 0; i < NGROUPS; i++) ok |= !strcmp(gb, GROUPS[i]);
    if (!ok)
        return dn_fail(DN_ERR_ARG, "report: group-by '%.40s' is not one of line, station, camera, shift, day, "
                                   "model_version, decision, class", gb);
    int st[8], n;
    dn_status rc = parse_shifts(st, &n, o->shifts ? o->shifts : "6,14,22");
    if (rc) return rc;
    if (o->from > 0 && o->to > 0 && o->to <= o->from) return dn_fail(DN_ERR_ARG, "report: --to must be after --from");
    dn_tz tz;
    if ((rc = dn_tz_load(o->tz, &tz))) return dn_fail_prefix(rc, "report: --tz");
    dn_tz_free(&tz);
    return DN_OK;
}

dn_status dn_mreport_build(dn_store *s, const dn_mreport_opts *o, dn_mreport **out) {
    *out = NULL;
    dn_status rc;
    if ((rc = dn_mreport_check(o))) return rc;
    dn_mreport *r = dn_calloc(1, sizeof *r);
    if (!r) return DN_ERR_NOMEM;
    snprintf(r->group_by, sizeof r->group_by, "%s", o->group_by && *o->group_by ? o->group_by : "day");
    if ((rc = parse_shifts(r->shift_start, &r->nshift, o->shifts ? o->shifts : "6,14,22"))) goto fail;
    if ((rc = dn_tz_load(o->tz, &r->tz))) goto fail;
    r->ok_classes = dn_strdup(o->ok_classes ? o->ok_classes : DEFAULT_OK);
    r->ok_default = !o->ok_classes;
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
    if (dn_store_schema_version(s) >= 4) { /* the shadow section (docs/review.md) */
        if (!(r->shadow = dn_calloc(1, sizeof *r->shadow))) { rc = DN_ERR_NOMEM; goto fail; }
        if ((rc = dn_compare_store(s, o->from, o->to, r->shadow))) goto fail;
    }
    if (r->oom) { rc = dn_fail(DN_ERR_NOMEM, "report: out of memory aggregating predictions"); goto fail; }
    /* over time: per hour when the data spans at most 48 hours, else per day (or shift) */
    int hourly = strcmp(r->group_by, "shift") && r->total && r->tmax - r->tmin <= 48 * 3600.0;
    snprintf(r->series_unit, sizeof r->series_unit, "%s", hourly ? "hour" : strcmp(r->group_by, "shift") ? "day" : "shift");
    r->series = hourly ? &r->s_hour : &r->s_day;
    r->pchart = hourly ? &r->p_hour : &r->p_day;
    /* time-like keys sort chronologically as strings; names alphabetically */
    for (int k = 0; k < 6; k++) table_sort(all_tables(r, k));
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

void dn_pchart_limits(double pbar, int64_t n, double *lcl, double *ucl) {
    double sd = n > 0 ? sqrt(pbar * (1 - pbar) / (double)n) : 0;
    *lcl = pbar - 3 * sd < 0 ? 0 : pbar - 3 * sd;
    *ucl = pbar + 3 * sd > 1 ? 1 : pbar + 3 * sd;
}

const rgroup **dn_mreport_line_points(const dn_mreport *r, const char *line, int *n) {
    size_t ll = strlen(line);
    const rgroup **v = dn_malloc((size_t)(r->pchart->n + 1) * sizeof *v);
    *n = 0;
    if (!v) return NULL;
    for (int i = 0; i < r->pchart->n; i++) {
        const char *k = r->pchart->g[i].key;
        if (!strncmp(k, line, ll) && k[ll] == '\x1f') v[(*n)++] = &r->pchart->g[i];
    }
    v[*n] = NULL;
    return v;
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

/* Pareto order: defect classes by count, descending (ties by name). */
int *dn_mreport_pareto(const dn_mreport *r, int *n) {
    int *idx = dn_malloc((size_t)(r->ncls ? r->ncls : 1) * sizeof *idx);
    *n = 0;
    if (!idx) return NULL;
    for (int i = 0; i < r->ncls; i++)
        if (!dn_mreport_is_ok_class(r, r->classes[i]) && r->class_counts[i] > 0) idx[(*n)++] = i;
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

/* ------------------------------------------------------------------ CSV */

static void render_csv(const dn_mreport *r, dn_sb *b) {
    dn_sb_puts(b, r->group_by);
    dn_sb_puts(b, ",total,defects,defect_rate,uncertain,uncertain_rate,mean_confidence,unknown,unknown_rate");
    for (int c = 0; c < r->ncls; c++) {
        dn_sb_puts(b, ",");
        csv_field(b, r->classes[c]);
    }
    dn_sb_puts(b, "\n");
    for (int i = 0; i < r->groups.n; i++) {
        const rgroup *g = &r->groups.g[i];
        csv_field(b, g->key);
        dn_sb_printf(b, ",%lld,%lld,%.6f,%lld,%.6f,%.6f", (long long)g->total, (long long)g->defects,
                     mr_rate(g->defects, g->total), (long long)g->uncertain, mr_rate(g->uncertain, g->total),
                     g->total ? g->conf_sum / (double)g->total : 0.0);
        dn_sb_printf(b, ",%lld,%.6f", (long long)g->unknown, mr_rate(g->unknown, g->total));
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
                        "\"uncertain_rate\":%.6f,\"unknown\":%lld,\"unknown_rate\":%.6f,\"counts\":{",
                     (long long)g->total, (long long)g->defects, mr_rate(g->defects, g->total),
                     (long long)g->uncertain, mr_rate(g->uncertain, g->total), (long long)g->unknown,
                     mr_rate(g->unknown, g->total));
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

static void json_time(const dn_mreport *r, dn_sb *b, const char *name, double t) {
    char s[40];
    dn_mreport_fmt_time(r, t, s, sizeof s);
    dn_sb_printf(b, ",\"%s\":", name);
    if (t > 0) dn_sb_json_str(b, s);
    else dn_sb_puts(b, "null");
}

static void json_pcharts(const dn_mreport *r, dn_sb *b) {
    dn_sb_puts(b, ",\"pchart\":[");
    for (int i = 0; i < r->lines.n; i++) {
        const rgroup *l = &r->lines.g[i];
        double pbar = mr_rate(l->defects, l->total);
        dn_sb_puts(b, i ? ",{\"line\":" : "{\"line\":");
        dn_sb_json_str(b, l->key);
        dn_sb_printf(b, ",\"p_bar\":%.6f,\"points\":[", pbar);
        int n = 0;
        const rgroup **pts = dn_mreport_line_points(r, l->key, &n);
        if (!pts) b->oom = 1;
        for (int k = 0; k < n; k++) {
            double lcl, ucl, p = mr_rate(pts[k]->defects, pts[k]->total);
            dn_pchart_limits(pbar, pts[k]->total, &lcl, &ucl);
            dn_sb_puts(b, k ? ",{\"bucket\":" : "{\"bucket\":");
            dn_sb_json_str(b, strchr(pts[k]->key, '\x1f') + 1);
            dn_sb_printf(b, ",\"n\":%lld,\"defects\":%lld,\"p\":%.6f,\"lcl\":%.6f,\"ucl\":%.6f,\"out_of_control\":%s,"
                            "\"estimated_accuracy\":%.6f}",
                         (long long)pts[k]->total, (long long)pts[k]->defects, p, lcl, ucl,
                         p > ucl + 1e-12 || p < lcl - 1e-12 ? "true" : "false", pts[k]->conf_sum / (double)pts[k]->total);
        }
        free(pts);
        dn_sb_puts(b, "]}");
    }
    dn_sb_puts(b, "]");
}

static void render_json(const dn_mreport *r, dn_sb *b) {
    dn_sb_puts(b, "{\"title\":");
    dn_sb_json_str(b, r->title);
    dn_sb_puts(b, ",\"group_by\":");
    dn_sb_json_str(b, r->group_by);
    dn_sb_puts(b, ",\"tz\":");
    dn_sb_json_str(b, r->tz.name);
    json_time(r, b, "from", r->from);
    json_time(r, b, "to", r->to);
    dn_sb_puts(b, ",\"line\":");
    if (r->line) dn_sb_json_str(b, r->line); else dn_sb_puts(b, "null");
    dn_sb_puts(b, ",\"ok_classes\":");
    dn_sb_json_str(b, r->ok_classes);
    dn_sb_printf(b, ",\"total\":%lld,\"defects\":%lld,\"defect_rate\":%.6f,\"uncertain\":%lld,\"uncertain_rate\":%.6f",
                 (long long)r->total, (long long)r->defects, mr_rate(r->defects, r->total), (long long)r->uncertain,
                 mr_rate(r->uncertain, r->total));
    dn_sb_printf(b, ",\"unknown\":%lld,\"unknown_rate\":%.6f", (long long)r->unknown, mr_rate(r->unknown, r->total));
    dn_sb_puts(b, ",\"classes\":{");
    for (int c = 0; c < r->ncls; c++) {
        if (c) dn_sb_puts(b, ",");
        dn_sb_json_str(b, r->classes[c]);
        dn_sb_printf(b, ":%lld", (long long)r->class_counts[c]);
    }
    dn_sb_puts(b, "},\"pareto\":[");
    int np = 0;
    int *po = dn_mreport_pareto(r, &np);
    int64_t cum = 0;
    for (int i = 0; po && i < np; i++) {
        cum += r->class_counts[po[i]];
        dn_sb_puts(b, i ? ",{\"class\":" : "{\"class\":");
        dn_sb_json_str(b, r->classes[po[i]]);
        dn_sb_printf(b, ",\"count\":%lld,\"cumulative_pct\":%.3f}", (long long)r->class_counts[po[i]],
                     100.0 * mr_rate(cum, r->defects));
    }
    free(po);
    dn_sb_puts(b, "],\"groups\":");
    json_table(r, &r->groups, b);
    dn_sb_puts(b, ",\"lines\":");
    json_table(r, &r->lines, b);
    dn_sb_printf(b, ",\"series_unit\":\"%s\",\"series\":", r->series_unit);
    json_table(r, r->series, b);
    json_pcharts(r, b);
    if (r->shadow && r->shadow->n) {
        dn_sb_puts(b, ",\"shadow\":");
        dn_compare_json(r->shadow, b);
    }
    dn_sb_puts(b, ",\"recent_defects\":[");
    for (int i = 0; i < r->nrecent; i++) {
        const recent_defect *d = &r->recent[i];
        dn_sb_puts(b, i ? ",{\"class\":" : "{\"class\":");
        dn_sb_json_str(b, d->cls);
        dn_sb_puts(b, ",\"line\":");
        dn_sb_json_str(b, d->line);
        dn_sb_puts(b, ",\"image\":");
        dn_sb_json_str(b, d->path);
        dn_sb_puts(b, ",\"heatmap\":");
        if (d->heat) dn_sb_json_str(b, d->heat);
        else dn_sb_puts(b, "null");
        json_time(r, b, "time", d->time);
        dn_sb_printf(b, ",\"confidence\":%.4f}", d->confidence);
    }
    dn_sb_puts(b, "]}\n");
}

dn_status dn_mreport_render(const dn_mreport *r, const char *format, dn_sb *out) {
    if (!format || !strcmp(format, "json")) render_json(r, out);
    else if (!strcmp(format, "csv")) render_csv(r, out);
    else if (!strcmp(format, "html")) dn_mreport_render_html(r, out);
    else return dn_fail(DN_ERR_ARG, "report: format '%.20s' is not one of csv, json, html", format);
    if (out->oom) return dn_fail(DN_ERR_NOMEM, "report: out of memory rendering %s", format ? format : "json");
    return DN_OK;
}
