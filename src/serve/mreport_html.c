/* The manufacturing report as one self-contained HTML page: summary cards,
 * p-charts of the defect rate per line over time, counts per class over time,
 * a Pareto chart, rates per group as a table with meters, and thumbnails of the
 * newest defects whose images were stored. Same stylesheet and palette as the
 * eval report (src/eval/style.h); inline SVG, no scripts, no external assets. */
#include "core/core.h"
#include "eval/report.h"
#include "eval/style.h"
#include "serve/mreport_int.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define W 1000 /* chart width: the page's content width */

static const char *MONTHS[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* Axis label of a time bucket key: "Jan 5" (day), "Jan 5 07h" / "07h" (hour),
 * "Jan 5 S2" (shift). full: include the date for hours. */
static void bucket_label(const char *key, const char *unit, int full, char *buf, size_t n) {
    int Y, M, D, h = 0, s = 0;
    if (sscanf(key, "%d-%d-%d", &Y, &M, &D) != 3 || M < 1 || M > 12) { snprintf(buf, n, "%.24s", key); return; }
    if (!strcmp(unit, "hour") && sscanf(key + 10, " %d", &h) == 1) {
        if (full) snprintf(buf, n, "%s %d %02dh", MONTHS[M - 1], D, h);
        else snprintf(buf, n, "%02dh", h);
    } else if (!strcmp(unit, "shift") && sscanf(key + 10, " S%d", &s) == 1) {
        snprintf(buf, n, "%s %d S%d", MONTHS[M - 1], D, s);
    } else {
        snprintf(buf, n, "%s %d", MONTHS[M - 1], D);
    }
}

/* Horizontal grid + value labels of a y axis from 0 to ymax; pct: "%" labels. */
static void y_axis(dn_sb *b, int L, int T, double pw, double ph, double ymax, int pct, const char *title) {
    for (int k = 0; k <= 4; k++) {
        double y = T + ph - ph * k / 4.0, v = ymax * k / 4.0;
        dn_sb_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e7ebf0\"/>", L, y, L + pw, y);
        if (pct) dn_sb_printf(b, "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" fill=\"%s\" text-anchor=\"end\">%.*f%%</text>\n",
                              L - 5, y + 4, DN_COL_MUTED, 100 * ymax < 4 ? 1 : 0, 100 * v);
        else dn_sb_printf(b, "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" fill=\"%s\" text-anchor=\"end\">%g</text>\n",
                          L - 5, y + 4, DN_COL_MUTED, v);
    }
    dn_sb_printf(b, "<text transform=\"translate(13,%.1f) rotate(-90)\" font-size=\"11\" fill=\"%s\" "
                    "text-anchor=\"middle\">%s</text>\n", T + ph / 2, DN_COL_MUTED, title);
}

/* Bucket labels under the x axis, thinned so that none overlap (about 6.5 px per
 * character); the date is shown on the first hour label and where the day changes. */
static void x_labels(dn_sb *b, const rtable *t, const char *unit, int L, double bw, double y) {
    int maxc = 4;
    char lab[48];
    for (int i = 0; i < t->n; i++) {
        bucket_label(t->g[i].key, unit, 1, lab, sizeof lab);
        if ((int)strlen(lab) > maxc) maxc = (int)strlen(lab);
    }
    int every = (int)ceil((maxc * 6.5 + 12) / (bw > 0 ? bw : 1));
    if (every < 1) every = 1;
    for (int i = 0; i < t->n; i += every) {
        int full = i == 0 || strncmp(t->g[i].key, t->g[i - every].key, 10);
        bucket_label(t->g[i].key, unit, full, lab, sizeof lab);
        dn_sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#9aa5b1\"/>"
                        "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"%s\" text-anchor=\"middle\">",
                     L + (i + 0.5) * bw, y, L + (i + 0.5) * bw, y + 4, L + (i + 0.5) * bw, y + 16, DN_COL_MUTED);
        dn_sb_html(b, lab);
        dn_sb_puts(b, "</text>\n");
    }
}

static int bucket_index(const rtable *series, const char *bucket) {
    int lo = 0, hi = series->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(series->g[mid].key, bucket);
        if (!c) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

/* One p-chart: the line's defect rate per bucket (points; red outside the limits),
 * centre line p-bar and the 3-sigma limits as steps. Returns out-of-control points. */
static int svg_pchart(const dn_mreport *r, const rgroup *line, int idx, dn_sb *b) {
    const int H = 220, L = 58, R = 16, T = 12, B = 40;
    double pw = W - L - R, ph = H - T - B, pbar = mr_rate(line->defects, line->total);
    int n = 0, nout = 0;
    const rgroup **pts = dn_mreport_line_points(r, line->key, &n);
    if (!pts) { b->oom = 1; return 0; }
    /* the axis covers every point and the limits of a typical (median-sized) bucket;
     * the wider limits of a nearly empty bucket are clipped at the top */
    double top = pbar;
    int64_t *ns = dn_malloc((size_t)(n ? n : 1) * sizeof *ns);
    for (int k = 0; k < n; k++) {
        double p = mr_rate(pts[k]->defects, pts[k]->total);
        if (p > top) top = p;
        if (ns) ns[k] = pts[k]->total;
    }
    if (ns && n) {
        for (int i = 1; i < n; i++) /* insertion sort: one point per bucket */
            for (int j = i; j > 0 && ns[j] < ns[j - 1]; j--) { int64_t x = ns[j]; ns[j] = ns[j - 1]; ns[j - 1] = x; }
        double lcl, ucl;
        dn_pchart_limits(pbar, ns[n / 2], &lcl, &ucl);
        if (ucl > top) top = ucl;
    }
    free(ns);
    double ymax = dn_nice_max(top * 1.08 > 0.01 ? top * 1.08 : 0.01);
    if (ymax > 1) ymax = 1;
    const rtable *S = r->series;
    double bw = S->n ? pw / S->n : pw;
    dn_sb_printf(b, "<svg class=\"chart pchart\" id=\"pchart-%d\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
                    "height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"p-chart of the defect rate of line ",
                 idx, W, H, W, H);
    dn_sb_html(b, line->key);
    dn_sb_puts(b, "\">\n");
    y_axis(b, L, T, pw, ph, ymax, 1, "defect rate");
#define YV(v) (T + ph - ph * ((v) > ymax ? ymax : (v)) / ymax)
    /* limits as steps over each bucket that has data */
    dn_sb ucl_d = {0}, lcl_d = {0}, pts_d = {0};
    for (int k = 0; k < n; k++) {
        int i = bucket_index(S, strchr(pts[k]->key, '\x1f') + 1);
        if (i < 0) continue;
        double lcl, ucl, x0 = L + i * bw, x1 = x0 + bw;
        dn_pchart_limits(pbar, pts[k]->total, &lcl, &ucl);
        dn_sb_printf(&ucl_d, "M%.1f %.1fH%.1f", x0, YV(ucl), x1);
        dn_sb_printf(&lcl_d, "M%.1f %.1fH%.1f", x0, YV(lcl), x1);
        dn_sb_printf(&pts_d, "%s%.1f,%.1f", k ? " " : "", x0 + bw / 2, YV(mr_rate(pts[k]->defects, pts[k]->total)));
    }
    dn_sb_printf(b, "<line class=\"centre\" x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"1.5\"/>\n",
                 L, YV(pbar), L + pw, YV(pbar), DN_COL_OK);
    if (ucl_d.s) dn_sb_printf(b, "<path class=\"ucl\" d=\"%s\" stroke=\"%s\" stroke-dasharray=\"5 3\" fill=\"none\"/>\n", ucl_d.s, DN_COL_BAD);
    if (lcl_d.s) dn_sb_printf(b, "<path class=\"lcl\" d=\"%s\" stroke=\"%s\" stroke-dasharray=\"5 3\" fill=\"none\"/>\n", lcl_d.s, DN_COL_BAD);
    if (pts_d.s) dn_sb_printf(b, "<polyline points=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\"/>\n", pts_d.s, DN_COL_INK);
    if (ucl_d.oom || lcl_d.oom || pts_d.oom) b->oom = 1;
    dn_sb_free(&ucl_d);
    dn_sb_free(&lcl_d);
    dn_sb_free(&pts_d);
    for (int k = 0; k < n; k++) {
        const char *bucket = strchr(pts[k]->key, '\x1f') + 1;
        int i = bucket_index(S, bucket);
        if (i < 0) continue;
        double lcl, ucl, p = mr_rate(pts[k]->defects, pts[k]->total);
        dn_pchart_limits(pbar, pts[k]->total, &lcl, &ucl);
        int out = p > ucl + 1e-12 || p < lcl - 1e-12;
        nout += out;
        dn_sb_printf(b, "<circle class=\"%s\" cx=\"%.1f\" cy=\"%.1f\" r=\"%s\" fill=\"%s\"><title>",
                     out ? "point out" : "point", L + (i + 0.5) * bw, YV(p), out ? "4.5" : "3", out ? DN_COL_BAD : DN_COL_INK);
        dn_sb_html(b, bucket);
        dn_sb_printf(b, ": %lld of %lld defective (%.1f%%), limits %.1f%%..%.1f%%%s</title></circle>\n",
                     (long long)pts[k]->defects, (long long)pts[k]->total, 100 * p, 100 * lcl, 100 * ucl,
                     out ? ", out of control" : "");
    }
#undef YV
    free(pts);
    dn_sb_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#9aa5b1\"/>\n", L, T + ph, L + pw, T + ph);
    x_labels(b, S, r->series_unit, L, bw, T + ph);
    dn_sb_puts(b, "</svg>\n");
    return nout;
}

/* Drift over time (docs/drift.md): each line's estimated accuracy per bucket, i.e. the
 * mean calibrated top probability of its stored predictions (no labels, no reference
 * needed), one polyline per line for the busiest lines (order[0..n)). */
static void svg_drift(const dn_mreport *r, const int *order, int nl, dn_sb *b) {
    const int H = 220, L = 58, R = 16, T = 12, B = 40;
    double pw = W - L - R, ph = H - T - B, lo = 1;
    const rtable *S = r->series;
    double bw = S->n ? pw / S->n : pw;
    for (int i = 0; i < nl; i++) {
        const rgroup *l = &r->lines.g[order[i]];
        if (l->total && l->conf_sum / l->total < lo) lo = l->conf_sum / l->total;
    }
    double ymin = floor((lo - 0.05) * 10) / 10; /* the axis starts a little below the lowest line mean */
    if (ymin < 0) ymin = 0;
    if (ymin > 0.9) ymin = 0.9;
    dn_sb_printf(b, "<svg class=\"chart\" id=\"chart-drift\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                    "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"estimated accuracy per line over time\">\n", W, H, W, H);
    for (int k = 0; k <= 4; k++) {
        double y = T + ph - ph * k / 4.0, v = ymin + (1 - ymin) * k / 4.0;
        dn_sb_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e7ebf0\"/><text x=\"%d\" y=\"%.1f\" "
                        "font-size=\"11\" fill=\"%s\" text-anchor=\"end\">%.1f%%</text>\n", L, y, L + pw, y, L - 5, y + 4,
                     DN_COL_MUTED, 100 * v);
    }
    dn_sb_printf(b, "<text transform=\"translate(13,%.1f) rotate(-90)\" font-size=\"11\" fill=\"%s\" "
                    "text-anchor=\"middle\">estimated accuracy</text>\n", T + ph / 2, DN_COL_MUTED);
    for (int i = 0; i < nl; i++) {
        const rgroup *l = &r->lines.g[order[i]];
        int n = 0;
        const rgroup **pts = dn_mreport_line_points(r, l->key, &n);
        if (!pts) { b->oom = 1; break; }
        const char *col = dn_palette(i);
        dn_sb_puts(b, "<g class=\"drift-line\"><title>line ");
        dn_sb_html(b, l->key);
        dn_sb_printf(b, "</title><polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", col);
        for (int k = 0; k < n; k++) {
            int x = bucket_index(S, strchr(pts[k]->key, '\x1f') + 1);
            double v = pts[k]->conf_sum / (double)pts[k]->total;
            if (x >= 0) dn_sb_printf(b, "%s%.1f,%.1f", k ? " " : "", L + (x + 0.5) * bw, T + ph - ph * (v - ymin) / (1 - ymin));
        }
        dn_sb_puts(b, "\"/>");
        for (int k = 0; k < n; k++) { /* points too: a single bucket draws no line */
            int x = bucket_index(S, strchr(pts[k]->key, '\x1f') + 1);
            double v = pts[k]->conf_sum / (double)pts[k]->total;
            if (x < 0) continue;
            dn_sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"><title>", L + (x + 0.5) * bw,
                         T + ph - ph * (v - ymin) / (1 - ymin), col);
            dn_sb_html(b, strchr(pts[k]->key, '\x1f') + 1);
            dn_sb_printf(b, ": %.1f%% over %lld predictions</title></circle>", 100 * v, (long long)pts[k]->total);
        }
        dn_sb_puts(b, "</g>\n");
        free(pts);
    }
    dn_sb_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#9aa5b1\"/>\n", L, T + ph, L + pw, T + ph);
    x_labels(b, S, r->series_unit, L, bw, T + ph);
    dn_sb_puts(b, "</svg>\n<div class=\"legend\">");
    for (int i = 0; i < nl; i++) {
        dn_sb_printf(b, "<b style=\"background:%s\"></b>", dn_palette(i));
        dn_sb_html(b, r->lines.g[order[i]].key);
    }
    dn_sb_puts(b, "</div>\n");
}

/* Stacked bars of per-class counts for each time bucket, legend on the right. */
static void svg_series(const dn_mreport *r, dn_sb *b) {
    const rtable *t = r->series;
    const int H = 290, L = 58, R = 170, T = 12, B = 40;
    double pw = W - L - R, ph = H - T - B;
    int64_t mx = 0;
    for (int i = 0; i < t->n; i++) if (t->g[i].total > mx) mx = t->g[i].total;
    double ymax = dn_nice_max((double)mx);
    dn_sb_printf(b, "<svg class=\"chart\" id=\"chart-series\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                    "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"predictions per class over time\">\n", W, H, W, H);
    y_axis(b, L, T, pw, ph, ymax, 0, "predictions");
    double bw = t->n ? pw / t->n : pw;
    for (int i = 0; i < t->n; i++) {
        const rgroup *g = &t->g[i];
        double x = L + i * bw + bw * 0.12, y = T + ph;
        for (int c = 0; c < r->ncls; c++) {
            if (!g->counts[c]) continue;
            double h = ph * (double)g->counts[c] / ymax;
            y -= h;
            dn_sb_printf(b, "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>",
                         x, y, bw * 0.76, h, dn_palette(c));
            dn_sb_html(b, g->key);
            dn_sb_puts(b, " ");
            dn_sb_html(b, r->classes[c]);
            dn_sb_printf(b, ": %lld</title></rect>\n", (long long)g->counts[c]);
        }
    }
    dn_sb_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#9aa5b1\"/>\n", L, T + ph, L + pw, T + ph);
    x_labels(b, t, r->series_unit, L, bw, T + ph);
    for (int c = 0; c < r->ncls; c++) {
        double y = T + 16.0 * c;
        dn_sb_printf(b, "<rect x=\"%d\" y=\"%.1f\" width=\"11\" height=\"11\" fill=\"%s\"/>"
                        "<text x=\"%d\" y=\"%.1f\" font-size=\"12\">", W - R + 14, y, dn_palette(c), W - R + 30, y + 10);
        char nm[40];
        snprintf(nm, sizeof nm, "%.22s%s", r->classes[c], strlen(r->classes[c]) > 22 ? "\xe2\x80\xa6" : "");
        dn_sb_html(b, nm);
        dn_sb_puts(b, "</text>\n");
    }
    dn_sb_puts(b, "</svg>\n");
}

/* Pareto: defect classes by count (bars) and the cumulative share (line, right axis). */
static void svg_pareto(const dn_mreport *r, dn_sb *b) {
    const int H = 280, L = 58, R = 50, T = 12, B = 46;
    double pw = W - L - R, ph = H - T - B;
    int np = 0;
    int *po = dn_mreport_pareto(r, &np);
    double ymax = dn_nice_max(np && po ? (double)r->class_counts[po[0]] : 1);
    dn_sb_printf(b, "<svg class=\"chart\" id=\"chart-pareto\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                    "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"Pareto chart of defect classes\">\n", W, H, W, H);
    y_axis(b, L, T, pw, ph, ymax, 0, "defects");
    for (int k = 0; k <= 4; k++)
        dn_sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"%s\">%d%%</text>\n", L + pw + 5,
                     T + ph - ph * k / 4.0 + 4, DN_COL_MUTED, 25 * k);
    double bw = np ? pw / np : pw;
    if (bw > 120) bw = 120;
    int64_t cum = 0;
    dn_sb b2 = {0};
    for (int i = 0; po && i < np; i++) {
        int c = po[i];
        double h = ph * (double)r->class_counts[c] / ymax, x = L + i * bw + bw * 0.15;
        dn_sb_printf(b, "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>",
                     x, T + ph - h, bw * 0.7, h, dn_palette(c));
        dn_sb_html(b, r->classes[c]);
        dn_sb_printf(b, ": %lld</title></rect>\n<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">",
                     (long long)r->class_counts[c], L + (i + 0.5) * bw, T + ph + 16);
        char nm[40];
        int maxc = (int)(bw / 6.5) > 3 ? (int)(bw / 6.5) : 3;
        snprintf(nm, sizeof nm, "%.*s%s", maxc, r->classes[c], (int)strlen(r->classes[c]) > maxc ? "\xe2\x80\xa6" : "");
        dn_sb_html(b, nm);
        dn_sb_puts(b, "</text>\n");
        cum += r->class_counts[c];
        dn_sb_printf(&b2, "%s%.1f,%.1f", i ? " " : "", L + (i + 0.5) * bw, T + ph - ph * mr_rate(cum, r->defects));
    }
    if (b2.s) dn_sb_printf(b, "<polyline class=\"cumulative\" points=\"%s\" fill=\"none\" stroke=\"#333\" stroke-width=\"2\"/>\n", b2.s);
    if (b2.oom) b->oom = 1;
    dn_sb_free(&b2);
    if (!np) dn_sb_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"14\">no defects</text>\n", L + 20, T + 40);
    free(po);
    dn_sb_puts(b, "</svg>\n");
}

static void meter(dn_sb *b, double v, const char *col) {
    dn_sb_printf(b, "%.1f%%<span class=\"meter\"><i style=\"width:%.1f%%;background:%s\"></i></span>", 100 * v,
                 100 * (v > 1 ? 1 : v), col);
}

static void table_groups(const dn_mreport *r, dn_sb *b) {
    dn_sb_printf(b, "<table id=\"groups\"><tr><th class=\"l\">%s</th><th>predictions</th><th>defects</th>"
                    "<th class=\"l\">defect rate</th><th class=\"l\">uncertain rate</th><th class=\"l\">unknown rate</th>",
                 r->group_by);
    for (int c = 0; c < r->ncls; c++) {
        dn_sb_puts(b, "<th>");
        dn_sb_html(b, r->classes[c]);
        dn_sb_puts(b, "</th>");
    }
    dn_sb_puts(b, "</tr>\n");
    for (int i = 0; i < r->groups.n; i++) {
        const rgroup *g = &r->groups.g[i];
        dn_sb_puts(b, "<tr><td class=\"l\">");
        dn_sb_html(b, g->key);
        dn_sb_printf(b, "</td><td>%lld</td><td>%lld</td><td class=\"l\">", (long long)g->total, (long long)g->defects);
        meter(b, mr_rate(g->defects, g->total), DN_COL_BAD);
        dn_sb_puts(b, "</td><td class=\"l\">");
        meter(b, mr_rate(g->uncertain, g->total), DN_COL_WARN);
        dn_sb_puts(b, "</td><td class=\"l\">");
        meter(b, mr_rate(g->unknown, g->total), DN_COL_WARN);
        dn_sb_puts(b, "</td>");
        for (int c = 0; c < r->ncls; c++) dn_sb_printf(b, "<td>%lld</td>", (long long)g->counts[c]);
        dn_sb_puts(b, "</tr>\n");
    }
    dn_sb_puts(b, "</table>\n");
}

/* "parent/name" of a path */
static const char *short_path(const char *p) {
    const char *last = strrchr(p, '/');
    if (!last) return p;
    const char *prev = last;
    while (prev > p && prev[-1] != '/') prev--;
    return prev;
}

static int cmp_recent(const void *a, const void *b) {
    double x = ((const recent_defect *)a)->time, y = ((const recent_defect *)b)->time;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Thumbnails of the newest stored defect images (unreadable copies are named instead). */
static void gallery(const dn_mreport *r, dn_sb *b) {
    recent_defect v[DN_MREPORT_RECENT];
    memcpy(v, r->recent, (size_t)r->nrecent * sizeof v[0]);
    qsort(v, (size_t)r->nrecent, sizeof v[0], cmp_recent);
    dn_sb_puts(b, "<div class=\"gallery\" id=\"recent-defects\">\n");
    for (int i = 0; i < r->nrecent; i++) {
        dn_image img = {0};
        char *b64 = NULL, when[40];
        struct tm tm;
        if (dn_image_load(v[i].path, &img) == DN_OK) dn_thumb_png_base64(&img, DN_THUMB_SIDE, &b64);
        dn_image_free(&img);
        time_t tt = (time_t)floor(v[i].time) + dn_tz_offset(&r->tz, v[i].time);
        gmtime_r(&tt, &tm);
        snprintf(when, sizeof when, "%s %d %02d:%02d", MONTHS[tm.tm_mon % 12], tm.tm_mday, tm.tm_hour, tm.tm_min);
        dn_sb_puts(b, "<figure>");
        if (b64) dn_sb_printf(b, "<img alt=\"defect\" src=\"data:image/png;base64,%s\">", b64);
        else dn_sb_puts(b, "<div class=\"note\">image not readable</div>");
        free(b64);
        b64 = NULL;
        if (v[i].heat) { /* the Grad-CAM overlay the service stored beside the copy (serve --heatmaps) */
            dn_image hm = {0};
            if (dn_image_load(v[i].heat, &hm) == DN_OK) dn_thumb_png_base64(&hm, DN_THUMB_SIDE, &b64);
            dn_image_free(&hm);
            if (b64) dn_sb_printf(b, "<img class=\"heatmap\" alt=\"heatmap\" src=\"data:image/png;base64,%s\">", b64);
            else dn_sb_puts(b, "<div class=\"note\">heatmap not readable</div>");
            free(b64);
        }
        dn_sb_puts(b, "<div class=\"p\">");
        dn_sb_html(b, v[i].cls);
        dn_sb_printf(b, " %.0f%%</div><div class=\"n\">line ", 100.0 * v[i].confidence);
        dn_sb_html(b, v[i].line);
        dn_sb_printf(b, ", %s</div><div class=\"n\">", when);
        dn_sb_html(b, short_path(v[i].path));
        dn_sb_puts(b, "</div></figure>\n");
    }
    dn_sb_puts(b, "</div>\n");
}

static void card(dn_sb *b, const char *id, const char *value, const char *label, int warn) {
    dn_sb_printf(b, "<div class=\"card%s\"><div class=\"v\" id=\"%s\">%s</div><div class=\"l\">%s</div></div>\n",
                 warn ? " warn" : "", id, value, label);
}

void dn_mreport_render_html(const dn_mreport *r, dn_sb *b) {
    char f[40], t[40], lo[40], hi[40], v[64];
    dn_mreport_fmt_time(r, r->from, f, sizeof f);
    dn_mreport_fmt_time(r, r->to, t, sizeof t);
    dn_mreport_fmt_time(r, r->total ? r->tmin : 0, lo, sizeof lo);
    dn_mreport_fmt_time(r, r->total ? r->tmax : 0, hi, sizeof hi);
    dn_sb_puts(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>");
    dn_sb_html(b, r->title);
    dn_sb_printf(b, "</title>\n<style>%s</style>\n</head><body>\n<h1>", dn_report_css());
    dn_sb_html(b, r->title);
    dn_sb_puts(b, "</h1>\n<p class=\"sub\">");
    dn_sb_puts(b, r->from > 0 ? f : "From the beginning");
    dn_sb_puts(b, " to ");
    dn_sb_puts(b, r->to > 0 ? t : "now");
    dn_sb_printf(b, " (data %s to %s), times in ", lo, hi);
    dn_sb_html(b, r->tz.name);
    dn_sb_puts(b, ". Line: ");
    dn_sb_html(b, r->line ? r->line : "all");
    dn_sb_puts(b, ". Not defects: ");
    dn_sb_html(b, r->ok_classes);
    dn_sb_puts(b, ".</p>\n<div class=\"cards\">\n");
    /* p-charts first (they count the out-of-control points for the card) */
    dn_sb charts = {0};
    int nout = 0, shown = 0;
    int *order = dn_malloc((size_t)(r->lines.n ? r->lines.n : 1) * sizeof *order);
    if (!order) { b->oom = 1; return; }
    for (int i = 0; i < r->lines.n; i++) order[i] = i;
    for (int i = 1; i < r->lines.n; i++) /* most predictions first, stable */
        for (int j = i; j > 0 && r->lines.g[order[j]].total > r->lines.g[order[j - 1]].total; j--) {
            int x = order[j]; order[j] = order[j - 1]; order[j - 1] = x;
        }
    for (int i = 0; i < r->lines.n && i < DN_MREPORT_PLINES; i++, shown++) {
        const rgroup *l = &r->lines.g[order[i]];
        dn_sb_puts(&charts, "<h3>line ");
        dn_sb_html(&charts, l->key);
        dn_sb_printf(&charts, " \xe2\x80\x94 %lld predictions, p\xcc\x84 = %.2f%%</h3>\n", (long long)l->total,
                     100 * mr_rate(l->defects, l->total));
        nout += svg_pchart(r, l, i, &charts);
    }
    dn_sb drift = {0};
    if (shown) {
        dn_sb_printf(&drift, "<h2>Drift over time: estimated accuracy per line</h2>\n<p class=\"note\">Mean calibrated "
                             "confidence of the stored predictions per %s (what the accuracy would be on images like the "
                             "model's calibration data; a falling line is an early warning; live PSI per camera: GET "
                             "/v1/drift, docs/drift.md).</p>\n", r->series_unit);
        svg_drift(r, order, shown, &drift);
    }
    free(order);
    if (charts.oom) b->oom = 1;
    snprintf(v, sizeof v, "%lld", (long long)r->total);
    card(b, "kpi-total", v, "predictions", 0);
    snprintf(v, sizeof v, "%.1f%%", 100 * mr_rate(r->defects, r->total));
    card(b, "kpi-defect-rate", v, "defect rate", 0);
    snprintf(v, sizeof v, "%lld", (long long)r->defects);
    card(b, "kpi-defects", v, "defects", 0);
    snprintf(v, sizeof v, "%.1f%%", 100 * mr_rate(r->uncertain, r->total));
    card(b, "kpi-uncertain", v, "uncertain (sent to review)", 0);
    snprintf(v, sizeof v, "%.1f%%", 100 * mr_rate(r->unknown, r->total));
    card(b, "kpi-unknown", v, "unknown inputs (unlike the training data)", r->unknown > 0);
    snprintf(v, sizeof v, "%d", r->lines.n);
    card(b, "kpi-lines", v, "lines", 0);
    snprintf(v, sizeof v, "%d", nout);
    card(b, "kpi-out", v, "points out of control", nout > 0);
    dn_sb_puts(b, "</div>\n<h2>Defect rate per line over time (p-chart)</h2>\n");
    dn_sb_printf(b, "<div class=\"legend\">per %s;<b style=\"background:%s\"></b>defect rate"
                    "<b style=\"background:%s\"></b>p\xcc\x84 (the line's overall rate)"
                    "<b style=\"background:%s\"></b>control limits p\xcc\x84 \xc2\xb1 3\xcf\x83 for each bucket's count;"
                    " red points are out of control</div>\n",
                 r->series_unit, DN_COL_INK, DN_COL_OK, DN_COL_BAD);
    if (charts.s) dn_sb_puts(b, charts.s);
    else dn_sb_puts(b, "<p class=\"note\">no predictions</p>\n");
    dn_sb_free(&charts);
    if (r->lines.n > shown)
        dn_sb_printf(b, "<p class=\"note\">%d more lines in the table below (p-charts for the %d busiest).</p>\n",
                     r->lines.n - shown, shown);
    if (drift.s) dn_sb_puts(b, drift.s);
    if (drift.oom) b->oom = 1;
    dn_sb_free(&drift);
    dn_sb_printf(b, "<h2>Predictions per class per %s</h2>\n", r->series_unit);
    svg_series(r, b);
    dn_sb_puts(b, "<h2>Pareto of defect classes</h2>\n");
    svg_pareto(r, b);
    dn_sb_printf(b, "<h2>Defect and uncertain rate per %s</h2>\n", r->group_by);
    table_groups(r, b);
    if (r->shadow && r->shadow->n) dn_compare_html(r->shadow, b);
    if (r->nrecent) {
        dn_sb_puts(b, "<h2>Most recent defects</h2>\n");
        gallery(r, b);
    }
    dn_sb_puts(b, "<p class=\"note\">defectnet ");
    dn_sb_puts(b, DN_VERSION);
    dn_sb_puts(b, " manufacturing report</p>\n</body></html>\n");
}
