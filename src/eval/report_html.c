/* The self-contained HTML evaluation page: summary cards, inline SVG charts
 * (confusion matrix, per-class bars, reliability, coverage), tables, the
 * gallery of mistakes, model and data info (see report.h). */
#include "eval/report.h"
#include "core/core.h"
#include "eval/report_int.h"
#include "eval/style.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>


/* the stylesheet is shared with the manufacturing report: src/eval/style.c */

/* row-normalised share v in [0,1] -> fill colour (white to blue on the diagonal, white to red off it) */
static void cell_colour(double v, int diag, char *buf, size_t n) {
    const int hi[2][3] = {{196, 48, 43}, {31, 95, 168}};
    const int *c = hi[diag ? 1 : 0];
    int r = (int)lround(255 + (c[0] - 255) * v), g = (int)lround(255 + (c[1] - 255) * v),
        b = (int)lround(255 + (c[2] - 255) * v);
    snprintf(buf, n, "#%02x%02x%02x", r, g, b);
}

static void svg_confusion(const dn_eval_report *r, FILE *f) {
    const dn_eval_metrics *m = &r->cal;
    int k = m->k, cell = k <= 4 ? 64 : k <= 8 ? 52 : k <= 16 ? 34 : 22, lab = 8;
    for (int c = 0; c < k; c++) {
        int l = (int)strlen(dn_rep_cname(r, c));
        if (l > lab) lab = l;
    }
    if (lab > 22) lab = 22;
    int left = 30 + lab * 7, top = 40 + (int)(lab * 7 * 0.72), W = left + k * cell + 20, H = top + k * cell + 40;
    if (W < left + 11 * 12 + 330) W = left + 11 * 12 + 330; /* room for the legend text */
    fprintf(f, "<svg id=\"svg-confusion\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"confusion matrix\">\n", W, H, W, H);
    fprintf(f, "<text x=\"%d\" y=\"14\" font-size=\"12\" fill=\"#5b6778\" text-anchor=\"middle\">predicted class</text>\n",
            left + k * cell / 2);
    fprintf(f, "<text transform=\"translate(12,%d) rotate(-90)\" font-size=\"12\" fill=\"#5b6778\" "
               "text-anchor=\"middle\">true class</text>\n", top + k * cell / 2);
    for (int c = 0; c < k; c++) {
        char nm[32];
        snprintf(nm, sizeof nm, "%.22s", dn_rep_cname(r, c));
        fprintf(f, "<text transform=\"translate(%d,%d) rotate(-45)\" font-size=\"11\">", left + c * cell + cell / 2,
                top - 6);
        dn_rep_html_str(f, nm);
        fputs("</text>\n", f);
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\" dominant-baseline=\"middle\">",
                left - 6, top + c * cell + cell / 2);
        dn_rep_html_str(f, nm);
        fputs("</text>\n", f);
    }
    for (int t = 0; t < k; t++) {
        int64_t row = m->support[t];
        for (int c = 0; c < k; c++) {
            int64_t cnt = m->cm[(size_t)t * k + c];
            double v = row ? (double)cnt / (double)row : 0;
            char col[16];
            cell_colour(v, t == c, col, sizeof col);
            fprintf(f, "<g><title>true ");
            dn_rep_html_str(f, dn_rep_cname(r, t));
            fputs(" \xe2\x86\x92 predicted ", f);
            dn_rep_html_str(f, dn_rep_cname(r, c));
            fprintf(f, ": %lld (%.1f%% of the row)</title><rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" "
                       "fill=\"%s\" stroke=\"#ffffff\"/>", (long long)cnt, 100 * v, left + c * cell, top + t * cell,
                    cell, cell, col);
            if (cnt || cell >= 30)
                fprintf(f, "<text class=\"cm\" x=\"%d\" y=\"%d\" font-size=\"%d\" text-anchor=\"middle\" "
                           "dominant-baseline=\"middle\" fill=\"%s\">%lld</text>",
                        left + c * cell + cell / 2, top + t * cell + cell / 2, cell >= 40 ? 13 : cell >= 30 ? 11 : 9,
                        v > 0.55 ? "#ffffff" : cnt ? "#1c2430" : "#b8c0cc", (long long)cnt);
            fputs("</g>\n", f);
        }
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#9aa5b4\"/>\n", left, top,
            k * cell, k * cell);
    /* legend */
    int ly = top + k * cell + 16;
    for (int i = 0; i <= 10; i++) {
        char c1[16], c2[16];
        cell_colour(i / 10.0, 1, c1, sizeof c1);
        cell_colour(i / 10.0, 0, c2, sizeof c2);
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"8\" fill=\"%s\"/>"
                   "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"8\" fill=\"%s\"/>\n",
                left + i * 12, ly, c1, left + i * 12, ly + 10, c2);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"10\" fill=\"#5b6778\">share of the true class: correct (blue), "
               "confused (red), 0 to 100%%</text>\n</svg>\n", left + 11 * 12 + 6, ly + 14);
}

static void svg_class_bars(const dn_eval_report *r, FILE *f) {
    const dn_eval_metrics *m = &r->cal;
    int k = m->k, lab = 8;
    for (int c = 0; c < k; c++) {
        int l = (int)strlen(dn_rep_cname(r, c));
        if (l > lab) lab = l;
    }
    if (lab > 22) lab = 22;
    int left = 16 + lab * 7, bw = 300, rowh = 40, top = 28, W = left + bw + 70, H = top + k * rowh + 10;
    const char *cols[3] = {"#4c78a8", "#f58518", "#54a24b"}, *names[3] = {"precision", "recall", "F1"};
    fprintf(f, "<svg id=\"svg-class-bars\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"per-class precision, recall and F1\">\n", W, H, W, H);
    for (int j = 0; j < 3; j++)
        fprintf(f, "<rect x=\"%d\" y=\"6\" width=\"10\" height=\"10\" fill=\"%s\"/><text x=\"%d\" y=\"15\" "
                   "font-size=\"11\">%s</text>\n", left + j * 90, cols[j], left + j * 90 + 14, names[j]);
    for (int g = 0; g <= 4; g++) {
        int x = left + bw * g / 4;
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#e3e8ef\"/>", x, top - 4, x, top + k * rowh);
    }
    fputc('\n', f);
    for (int c = 0; c < k; c++) {
        char nm[32];
        snprintf(nm, sizeof nm, "%.22s", dn_rep_cname(r, c));
        int y = top + c * rowh;
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\" dominant-baseline=\"middle\">",
                left - 6, y + rowh / 2 - 2);
        dn_rep_html_str(f, nm);
        fputs("</text>\n", f);
        double v[3] = {m->precision[c], m->recall[c], m->f1[c]};
        for (int j = 0; j < 3; j++) {
            double w = v[j] * bw;
            fprintf(f, "<g><title>%s ", names[j]);
            dn_rep_html_str(f, nm);
            fprintf(f, ": %.4f</title><rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"10\" fill=\"%s\"/>"
                       "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" dominant-baseline=\"middle\">%.3f</text></g>\n",
                    v[j], left, y + 3 + j * 11, w, cols[j], left + w + 4, y + 8 + j * 11, v[j]);
        }
    }
    fputs("</svg>\n", f);
}

static void svg_reliability(const dn_eval_metrics *m, const char *id, const char *title, FILE *f) {
    int S = 240, L = 44, T = 26, W = L + S + 16, H = T + S + 48;
    fprintf(f, "<svg id=\"%s\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "role=\"img\" aria-label=\"reliability diagram %s\">\n", id, W, H, W, H, title);
    /* the gap to the diagonal is hatched red, readable over the blue bars and in print */
    fprintf(f, "<defs><pattern id=\"%s-gap\" width=\"5\" height=\"5\" patternUnits=\"userSpaceOnUse\" "
               "patternTransform=\"rotate(45)\"><rect width=\"5\" height=\"5\" fill=\"#ffffff\" fill-opacity=\"0.55\"/>"
               "<line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"5\" stroke=\"#d62728\" stroke-width=\"2\"/></pattern></defs>\n", id);
    fprintf(f, "<text x=\"%d\" y=\"14\" font-size=\"12\" font-weight=\"600\">%s: ECE %.4f</text>\n", L, title, m->ece);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fbfcfd\" stroke=\"#9aa5b4\"/>\n", L, T, S, S);
    for (int g = 1; g < 5; g++)
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#e3e8ef\"/><line x1=\"%d\" y1=\"%d\" x2=\"%d\" "
                   "y2=\"%d\" stroke=\"#e3e8ef\"/>\n", L, T + S * g / 5, L + S, T + S * g / 5, L + S * g / 5, T,
                L + S * g / 5, T + S);
    double bw = (double)S / DN_ECE_BINS;
    int64_t maxc = 1;
    for (int b = 0; b < DN_ECE_BINS; b++) if (m->bin_count[b] > maxc) maxc = m->bin_count[b];
    for (int b = 0; b < DN_ECE_BINS; b++) {
        if (!m->bin_count[b]) continue;
        double x = L + b * bw, ya = T + S * (1 - m->bin_acc[b]), yc = T + S * (1 - m->bin_conf[b]);
        fprintf(f, "<g><title>confidence %.2f-%.2f: %lld images, accuracy %.3f, mean confidence %.3f</title>"
                   "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#4c78a8\" stroke=\"#ffffff\"/>",
                (double)b / DN_ECE_BINS, (double)(b + 1) / DN_ECE_BINS, (long long)m->bin_count[b], m->bin_acc[b],
                m->bin_conf[b], x, ya, bw, T + S - ya);
        double y0 = ya < yc ? ya : yc;
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"url(#%s-gap)\" stroke=\"#d62728\" "
                   "stroke-width=\"1\"/>", x, y0, bw, fabs(ya - yc), id);
        /* sample count as a small bar under the axis */
        double hc = 12.0 * (double)m->bin_count[b] / (double)maxc;
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#9aa5b4\"/></g>\n", x + 1,
                T + S + 30 - hc, bw - 2, hc);
    }
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#1c2430\" stroke-dasharray=\"4 3\"/>\n", L, T + S,
            L + S, T);
    for (int g = 0; g <= 5; g++) {
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%.1f</text>", L + S * g / 5,
                T + S + 13, g / 5.0);
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"end\" dominant-baseline=\"middle\">%.1f</text>\n",
                L - 4, T + S - S * g / 5, g / 5.0);
    }
    fprintf(f, "<text transform=\"translate(12,%d) rotate(-90)\" font-size=\"11\" text-anchor=\"middle\">accuracy</text>\n",
            T + S / 2);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"10\" fill=\"#5b6778\">confidence &#183; blue: accuracy, red: gap, "
               "grey: images</text>\n", L - 30, T + S + 42);
    fputs("</svg>\n", f);
}

static void svg_coverage(const dn_eval_report *r, FILE *f) {
    int W = 520, H = 310, L = 52, T = 30, PW = W - L - 20, PH = H - T - 44;
    double ymin = 1.0;
    for (int64_t i = 0; i < r->ncurve; i++) if (r->curve[i].accuracy < ymin) ymin = r->curve[i].accuracy;
    if (r->target > 0 && r->target < ymin) ymin = r->target;
    /* a round tick step giving at most 8 intervals, the axis starting one step below the lowest value */
    static const double steps[] = {0.005, 0.01, 0.02, 0.05, 0.1, 0.2};
    double step = 0.2;
    for (int i = 0; i < 6; i++)
        if ((1.0 - ymin) / steps[i] <= 7.0) { step = steps[i]; break; }
    ymin = floor(ymin / step - 1e-9) * step;
    if (ymin > 1.0 - step) ymin = 1.0 - step;
    if (ymin < 0) ymin = 0;
    double yr = 1.0 - ymin;
#define CX(c) (L + (c) * PW)
#define CY(a) (T + (1.0 - (a)) / yr * PH)
    fprintf(f, "<svg id=\"svg-coverage\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"coverage versus accuracy\">\n", W, H, W, H);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fbfcfd\" stroke=\"#9aa5b4\"/>\n", L, T, PW, PH);
    int nt = (int)lround(yr / step);
    for (int g = 0; g <= nt; g++) {
        double a = ymin + step * g;
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e3e8ef\"/><text x=\"%d\" y=\"%.1f\" "
                   "font-size=\"10\" text-anchor=\"end\" dominant-baseline=\"middle\">%.3g</text>\n",
                L, CY(a), L + PW, CY(a), L - 4, CY(a), a);
    }
    for (int g = 0; g <= 5; g++)
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%.1f</text>\n", CX(g / 5.0),
                T + PH + 13, g / 5.0);
    if (r->target > 0)
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e0a040\" stroke-dasharray=\"5 3\"/>"
                   "<text x=\"%d\" y=\"%.1f\" font-size=\"10\" fill=\"#a06a10\">target %.4g</text>\n",
                L, CY(r->target), L + PW, CY(r->target), L + 4, CY(r->target) - 4, r->target);
    if (r->ncurve) {
        /* at most ~600 vertices: every point when few, else an even subsample (ends kept) */
        int64_t step = r->ncurve > 600 ? (r->ncurve + 599) / 600 : 1;
        fputs("<polyline fill=\"none\" stroke=\"#4c78a8\" stroke-width=\"2\" points=\"", f);
        fprintf(f, "%.1f,%.1f", CX(0.0), CY(r->curve[0].accuracy));
        for (int64_t i = 0; i < r->ncurve; i += step)
            fprintf(f, " %.1f,%.1f", CX(r->curve[i].coverage), CY(r->curve[i].accuracy));
        fprintf(f, " %.1f,%.1f\"/>\n", CX(r->curve[r->ncurve - 1].coverage), CY(r->curve[r->ncurve - 1].accuracy));
    }
    const dn_cov_point *p = &r->thr_eval;
    fprintf(f, "<g><title>threshold %.4f: coverage %.4f, accuracy %.4f</title><circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" "
               "fill=\"#d62728\"/></g>\n", (double)r->threshold, p->coverage, p->accuracy, CX(p->coverage),
            CY(p->accuracy));
    /* legend above the plot, so it never covers the curve */
    fprintf(f, "<line x1=\"%d\" y1=\"10\" x2=\"%d\" y2=\"10\" stroke=\"#4c78a8\" stroke-width=\"2\"/><text x=\"%d\" "
               "y=\"14\" font-size=\"11\">%s</text><circle cx=\"%d\" cy=\"10\" r=\"4\" fill=\"#d62728\"/>"
               "<text x=\"%d\" y=\"14\" font-size=\"11\" fill=\"#b02a2a\">threshold %.3f: coverage %.1f%%, accuracy "
               "%.2f%%</text>\n", L, L + 18, L + 22, r->split_name, L + 80, L + 88, (double)r->threshold,
            100 * p->coverage, 100 * p->accuracy);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">coverage (share of images accepted, "
               "most confident first)</text>\n", L + PW / 2, T + PH + 30);
    fprintf(f, "<text transform=\"translate(12,%d) rotate(-90)\" font-size=\"11\" text-anchor=\"middle\">accuracy of "
               "accepted</text>\n</svg>\n", T + PH / 2);
#undef CX
#undef CY
}

void dn_rep_card(FILE *f, const char *id, const char *value, const char *label, int warn) {
    fprintf(f, "<div class=\"card%s\"><div class=\"v\" id=\"%s\">%s</div><div class=\"l\">%s</div></div>\n",
            warn ? " warn" : "", id, value, label);
}

/* Per-class bars and table (with uncertain counts when a threshold applies). */
static void html_per_class(const dn_eval_report *r, FILE *f) {
    const dn_eval_metrics *m = &r->cal;
    int k = m->k;
    fputs("<h2>Per-class precision, recall and F1</h2>\n<div class=\"row\"><div>\n", f);
    svg_class_bars(r, f);
    const int64_t *unc = r->uncertain_by_class;
    fprintf(f, "</div><div><table id=\"per-class\"><tr><th class=\"l\">class</th><th>precision</th><th>recall</th>"
               "<th>F1</th><th>support</th><th>predicted</th>%s</tr>\n", unc ? "<th>uncertain</th>" : "");
    for (int c = 0; c < k; c++) {
        fputs("<tr><td class=\"l\">", f);
        dn_rep_html_str(f, dn_rep_cname(r, c));
        fprintf(f, "</td><td>%.4f</td><td>%.4f</td><td>%.4f</td><td>%lld</td><td>%lld</td>", m->precision[c],
                m->recall[c], m->f1[c], (long long)m->support[c], (long long)m->predicted[c]);
        if (unc) fprintf(f, "<td>%lld</td>", (long long)unc[c]);
        fputs("</tr>\n", f);
    }
    const char *pad = unc ? "<th></th>" : "";
    fprintf(f, "<tr><th class=\"l\">macro avg</th><th>%.4f</th><th>%.4f</th><th>%.4f</th><th>%lld</th><th></th>%s</tr>\n"
               "<tr><th class=\"l\">weighted avg</th><th>%.4f</th><th>%.4f</th><th>%.4f</th><th>%lld</th><th></th>%s</tr>"
               "</table>%s</div></div>\n",
            m->macro_precision, m->macro_recall, m->macro_f1, (long long)m->n, pad, m->weighted_precision,
            m->weighted_recall, m->weighted_f1, (long long)m->n, pad,
            unc ? "<p class=\"note\">uncertain: images of the class below the confidence threshold</p>" : "");

}

/* The misclassified images, most confident first, with thumbnails. */
static void html_gallery(const dn_eval_report *r, FILE *f) {
    fprintf(f, "<h2>Misclassified images</h2>\n<p class=\"note\" id=\"miss-count\">%lld misclassified", (long long)r->nmiss);
    int64_t shown = 0;
    for (int64_t i = 0; i < r->nmiss; i++) shown += r->miss[i].thumb_b64 != NULL;
    if (r->nmiss) fprintf(f, "; the %lld most confident mistakes are shown first", (long long)shown);
    fputs(".</p>\n", f);
    int64_t cams = 0;
    for (int64_t i = 0; i < r->nmiss; i++) cams += r->miss[i].cam_b64 != NULL;
    if (cams)
        fprintf(f, "<p class=\"note\" id=\"cam-note\">Beside each thumbnail: Grad-CAM heatmap of the predicted class "
                   "at layer4 over the model's input view (after its resize and crop), blue &rarr; red, uncoloured below "
                   "5%%. %s</p>\n",
                r->cam_anchored ? "The colour scale is anchored to the model's own reference (the 99th percentile of "
                                  "its maps on calibration images), so colours compare between images."
                                : "This model has no Grad-CAM reference (run <code>defectnet calibrate</code>): each "
                                  "map is scaled to its own maximum, so compare colours within an image, not between "
                                  "images.");
    fprintf(f, "<div class=\"gallery%s\">\n", cams ? " cams" : "");
    for (int64_t i = 0; i < r->nmiss; i++) {
        const dn_eval_miss *x = &r->miss[i];
        if (!x->thumb_b64) continue;
        fputs(x->cam_b64 ? "<figure><div class=\"pair\"><img alt=\"" : "<figure><img alt=\"", f);
        dn_rep_html_str(f, dn_rep_base_name(x->path));
        fprintf(f, "\" src=\"data:image/png;base64,%s\">", x->thumb_b64);
        if (x->cam_b64) {
            fputs("<img class=\"cam\" alt=\"Grad-CAM of ", f);
            dn_rep_html_str(f, dn_rep_base_name(x->path));
            fprintf(f, "\" width=\"%d\" src=\"data:image/png;base64,%s\"></div>", DN_THUMB_SIDE, x->cam_b64);
        }
        fputs("<div class=\"t\">true: ", f);
        dn_rep_html_str(f, dn_rep_cname(r, x->truth));
        fprintf(f, " (%.3f)</div><div class=\"p\">predicted: ", x->p_true);
        dn_rep_html_str(f, dn_rep_cname(r, x->pred));
        fprintf(f, " (%.3f)%s</div><div>", x->conf, x->conf < r->threshold ? " &middot; uncertain" : "");
        for (int j = 0; j < x->ntop; j++) {
            fputs(j ? " &middot; " : "", f);
            dn_rep_html_str(f, dn_rep_cname(r, x->top[j]));
            fprintf(f, " %.3f", x->top_p[j]);
        }
        fputs("</div><div class=\"n\" title=\"", f);
        dn_rep_html_str(f, x->path);
        fputs("\">", f);
        dn_rep_html_str(f, dn_rep_short_name(x->path));
        fputs("</div></figure>\n", f);
    }
    fputs("</div>\n", f);

}

/* Model (file, sha256, architecture, classes, preprocessing, metadata) and data info. */
static void html_model_data(const dn_eval_report *r, FILE *f) {
    const dn_eval_metrics *m = &r->cal;
    const dn_model *md = r->model;
    fputs("<h2>Model</h2>\n<table class=\"kv\">\n<tr><td>file</td><td class=\"mono\">", f);
    dn_rep_html_str(f, r->model_path);
    fputs("</td></tr>\n<tr><td>sha256</td><td class=\"mono\">", f);
    dn_rep_html_str(f, md->sha256[0] ? md->sha256 : "(unknown)");
    fputs("</td></tr>\n<tr><td>architecture</td><td>", f);
    dn_rep_html_str(f, md->arch);
    fprintf(f, ", widths %d/%d/%d/%d, %lld parameters</td></tr>\n", md->widths[0], md->widths[1], md->widths[2],
            md->widths[3], (long long)dn_model_param_count(md));
    fputs("<tr><td>classes</td><td>", f);
    for (int c = 0; c < md->num_classes; c++) {
        fprintf(f, "%s%d&nbsp;", c ? ", " : "", c);
        dn_rep_html_str(f, dn_rep_cname(r, c));
    }
    const dn_preproc *pp = &md->pp;
    fprintf(f, "</td></tr>\n<tr><td>preprocessing</td><td>resize shorter side to %d, centre crop %d, mean "
               "(%.4g, %.4g, %.4g), std (%.4g, %.4g, %.4g), %s</td></tr>\n",
            pp->resize, pp->crop, pp->mean[0], pp->mean[1], pp->mean[2], pp->std[0], pp->std[1], pp->std[2],
            pp->bgr ? "BGR" : "RGB");
    fprintf(f, "<tr><td>stored calibration</td><td>temperature %.6g, threshold %.6g</td></tr>\n",
            (double)md->temperature, (double)md->threshold);
    if (md->source_sha256[0]) {
        fputs("<tr><td>source weights</td><td class=\"mono\">", f);
        dn_rep_html_str(f, md->source_sha256);
        fputs("</td></tr>\n", f);
    }
    for (int i = 0; i < md->meta.n; i++) {
        fputs("<tr><td>", f);
        dn_rep_html_str(f, md->meta.keys[i]);
        fputs("</td><td class=\"mono\">", f);
        const char *val = md->meta.vals[i];
        size_t vl = strlen(val);
        if (vl > 400) {
            char *cut = dn_strdup(val);
            if (cut) { cut[400] = 0; dn_rep_html_str(f, cut); free(cut); }
            fprintf(f, " &hellip; (%zu characters)", vl);
        } else {
            dn_rep_html_str(f, val);
        }
        fputs("</td></tr>\n", f);
    }
    if (r->written_model) {
        fputs("<tr><td>calibrated copy</td><td class=\"mono\">", f);
        dn_rep_html_str(f, r->written_model);
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n<h2>Data</h2>\n<table class=\"kv\">\n<tr><td>source</td><td class=\"mono\">", f);
    dn_rep_html_str(f, r->data_source);
    fprintf(f, "</td></tr>\n<tr><td>split</td><td>%s: %lld listed, %lld evaluated, %d unreadable skipped</td></tr>\n",
            r->split_name, (long long)r->listed, (long long)m->n, r->skipped);
    if (r->fitted || r->has_thr_fit)
        fprintf(f, "<tr><td>calibration split</td><td>%s: %lld images</td></tr>\n", r->fit_split, (long long)r->n_fit);
    if (r->dups_dropped)
        fprintf(f, "<tr><td>duplicates</td><td>%d image(s) also present in an earlier split dropped</td></tr>\n",
                r->dups_dropped);
    if (r->absent_classes)
        fprintf(f, "<tr><td>note</td><td>%d model class(es) do not occur in the data</td></tr>\n", r->absent_classes);
    fprintf(f, "<tr><td>wall time</td><td>%.2f s (decode + preprocess + forward)</td></tr>\n</table>\n", r->seconds);
    fprintf(f, "<p class=\"note\">defectnet %s &middot; self-contained report: no scripts, no external assets.</p>\n"
               "</body></html>\n", DN_VERSION);
}

void dn_eval_report_html(const dn_eval_report *r, FILE *f) {
    const dn_eval_metrics *m = &r->cal;
    int k = m->k;
    char v[128], l[160];
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>defectnet evaluation: ", f);
    dn_rep_html_str(f, dn_rep_base_name(r->model_path));
    fprintf(f, "</title>\n<style>%s</style></head><body>\n<h1>Evaluation of ", dn_report_css());
    dn_rep_html_str(f, dn_rep_base_name(r->model_path));
    fputs("</h1>\n<p class=\"sub\">", f);
    dn_rep_html_str(f, r->data_source);
    fprintf(f, " &middot; split <b>%s</b> &middot; %lld images evaluated", r->split_name, (long long)m->n);
    if (r->skipped) fprintf(f, " &middot; %d unreadable skipped", r->skipped);
    fprintf(f, " &middot; %d classes</p>\n<div class=\"cards\">\n", k);
    snprintf(v, sizeof v, "%.2f%%", 100 * m->accuracy);
    snprintf(l, sizeof l, "accuracy (%lld of %lld; 95%% CI %.1f&ndash;%.1f%%)",
             (long long)llround(m->accuracy * (double)m->n), (long long)m->n, 100 * r->acc_ci.lo, 100 * r->acc_ci.hi);
    dn_rep_card(f, "accuracy", v, l, 0);
    snprintf(v, sizeof v, "%.4f", m->macro_f1);
    snprintf(l, sizeof l, "macro F1 (95%% CI %.3f&ndash;%.3f, bootstrap)", r->f1_lo, r->f1_hi);
    dn_rep_card(f, "macro-f1", v, l, 0);
    snprintf(v, sizeof v, "%.4f", m->weighted_f1);
    dn_rep_card(f, "weighted-f1", v, "weighted F1", 0);
    snprintf(v, sizeof v, "%.2f%%", 100 * m->topk_accuracy);
    snprintf(l, sizeof l, "top-%d accuracy", m->topk);
    dn_rep_card(f, "topk", v, l, 0);
    snprintf(v, sizeof v, "%.4f &rarr; %.4f", r->raw.ece, m->ece);
    dn_rep_card(f, "ece", v, "ECE before &rarr; after calibration", 0);
    snprintf(v, sizeof v, "%.4g", r->temperature);
    snprintf(l, sizeof l, "temperature (%s)", r->temp_source);
    dn_rep_card(f, "temperature", v, l, r->fitted && r->fit.at_bound);
    snprintf(v, sizeof v, "%.4f", (double)r->threshold);
    snprintf(l, sizeof l, "threshold: coverage %.1f%%, accuracy %.2f%%", 100 * r->thr_eval.coverage,
             100 * r->thr_eval.accuracy);
    dn_rep_card(f, "threshold", v, l, r->target > 0 && !r->reached);
    dn_rep_html_quality_cards(r, f);
    fputs("</div>\n", f);

    fputs("<h2>Confusion matrix</h2>\n<p class=\"note\">Rows are true classes, columns predicted classes; each cell "
          "shows the count, its colour the share of the true class.</p>\n", f);
    svg_confusion(r, f);

    html_per_class(r, f);

    fputs("<h2>Calibration</h2>\n", f);
    fprintf(f, "<p class=\"note\">Confidence is the probability of the predicted class. Bars show the accuracy per "
               "confidence bin (%d bins); the red band is the gap to perfect calibration (dashed diagonal). "
               "Temperature scaling divides the logits by T = %.4g (%s).", DN_ECE_BINS, r->temperature,
            r->temp_source);
    if (r->fitted)
        fprintf(f, " Fitted on %s (%lld images): NLL %.4f &rarr; %.4f, ECE %.4f &rarr; %.4f%s.", r->fit_split,
                (long long)r->n_fit, r->fit.nll_before, r->fit.nll_after, r->fit_ece_before, r->fit_ece_after,
                r->fit.at_bound ? " &mdash; <b>T is at its bound</b> (validation perfectly separated or hopeless)" : "");
    fputs("</p>\n<div class=\"row\">\n", f);
    svg_reliability(&r->raw, "svg-reliability-before", "before (T = 1)", f);
    snprintf(l, sizeof l, "after (T = %.4g)", r->temperature);
    svg_reliability(m, "svg-reliability-after", l, f);
    fputs("</div>\n", f);

    fputs("<h2>Confidence threshold</h2>\n<p class=\"note\">A prediction whose calibrated confidence is below the "
          "threshold is marked <i>uncertain</i> for a human to check; coverage is the share accepted.</p>\n"
          "<div class=\"row\"><div>\n", f);
    svg_coverage(r, f);
    fputs("</div><div><table class=\"kv\">\n", f);
    fprintf(f, "<tr><td>threshold</td><td>%.6g (%s)</td></tr>\n", (double)r->threshold, r->thr_source);
    if (r->target > 0)
        fprintf(f, "<tr><td>target accuracy</td><td>%.4g%s</td></tr>\n", r->target,
                r->reached ? " (reached)" : " <b>(not reachable: best accuracy chosen)</b>");
    if (r->has_thr_fit)
        fprintf(f, "<tr><td>on %s</td><td>coverage %.2f%%, accuracy %.2f%% (%lld of %lld accepted)</td></tr>\n",
                r->fit_split, 100 * r->thr_fit.coverage, 100 * r->thr_fit.accuracy, (long long)r->thr_fit.covered,
                (long long)r->n_fit);
    fprintf(f, "<tr><td>on %s</td><td id=\"threshold-eval\">coverage %.2f%%, accuracy %.2f%% (%lld of %lld accepted, "
               "%lld uncertain)</td></tr>\n</table></div></div>\n",
            r->split_name, 100 * r->thr_eval.coverage, 100 * r->thr_eval.accuracy, (long long)r->thr_eval.covered,
            (long long)m->n, (long long)(m->n - r->thr_eval.covered));

    dn_rep_html_decisions(r, f);
    dn_rep_html_ood(r, f);

    html_gallery(r, f);
    html_model_data(r, f);
}
