/* The HTML report's unknown-input section (eval --ood): the table of every
 * score's AUROC and FPR at 95% TPR per unknown set with the share flagged
 * unknown, and per set a histogram of the model's ood_score, in-distribution
 * images against that set, with the threshold marked (see report.h). */
#include "eval/report.h"
#include "core/core.h"
#include "eval/report_int.h"
#include "eval/style.h"
#include "ood/ood_eval.h"
#include <math.h>
#include <string.h>

#define NBINS 30

/* share of r's rows (column j) per bin of [lo, hi]; values outside go to the end bins */
static void histogram(const dn_ood_rows *r, int j, double lo, double hi, double *share) {
    int n = 0;
    for (int b = 0; b < NBINS; b++) share[b] = 0;
    for (int i = 0; i < r->n; i++) {
        double v = r->s[(size_t)i * DN_OOD_NMEASURES + j];
        if (!isfinite(v)) continue;
        int b = (int)floor((v - lo) / (hi - lo) * NBINS);
        share[b < 0 ? 0 : b >= NBINS ? NBINS - 1 : b] += 1;
        n++;
    }
    for (int b = 0; b < NBINS && n; b++) share[b] /= n;
}

static void range(const dn_ood_rows *r, int j, double *lo, double *hi) {
    for (int i = 0; i < r->n; i++) {
        double v = r->s[(size_t)i * DN_OOD_NMEASURES + j];
        if (!isfinite(v)) continue;
        if (v < *lo) *lo = v;
        if (v > *hi) *hi = v;
    }
}

static void svg_dist(const dn_eval_report *r, int s, FILE *f) {
    const dn_ood_eval *e = r->ood;
    const dn_ood_set *o = &e->sets[s];
    int j = e->kind, W = 360, H = 230, L = 44, T = 44, PW = W - L - 14, PH = H - T - 34;
    double lo = e->threshold, hi = e->threshold, a[NBINS], b[NBINS], ymax = 0;
    range(&e->in, j, &lo, &hi);
    range(&o->rows, j, &lo, &hi);
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    double pad = (hi - lo) * 0.02;
    lo -= pad;
    hi += pad;
    histogram(&e->in, j, lo, hi, a);
    histogram(&o->rows, j, lo, hi, b);
    for (int i = 0; i < NBINS; i++) ymax = fmax(ymax, fmax(a[i], b[i]));
    ymax = dn_nice_max(ymax);
#define HX(v) (L + ((v) - lo) / (hi - lo) * PW)
#define HY(v) (T + PH - (v) / ymax * PH)
    fprintf(f, "<svg id=\"svg-ood-dist-%d\" class=\"ood-dist\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
               "height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"ood_score distribution: in-distribution "
               "versus ", s, W, H, W, H);
    dn_rep_html_str(f, o->name);
    fputs("\">\n", f);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fbfcfd\" stroke=\"#9aa5b4\"/>\n", L, T, PW, PH);
    for (int g = 0; g <= 4; g++) {
        double y = ymax * g / 4;
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e3e8ef\"/><text x=\"%d\" y=\"%.1f\" "
                   "font-size=\"10\" text-anchor=\"end\" dominant-baseline=\"middle\">%.3g%%</text>\n",
                L, HY(y), L + PW, HY(y), L - 4, HY(y), 100 * y);
        double x = lo + (hi - lo) * g / 4;
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%.3g</text>\n", HX(x), T + PH + 13, x);
    }
    double bw = (double)PW / NBINS;
    const double *sh[2] = {a, b};
    const char *col[2] = {DN_COL_INK, DN_COL_BAD};
    for (int k = 0; k < 2; k++) {
        fprintf(f, "<g fill=\"%s\" fill-opacity=\"0.45\" stroke=\"%s\" stroke-width=\"0.6\"><title>", col[k], col[k]);
        if (k) dn_rep_html_str(f, o->name);
        else fprintf(f, "in-distribution (%s)", e->in_split);
        fputs(": share of the images per ood_score bin</title>", f);
        for (int i = 0; i < NBINS; i++)
            if (sh[k][i] > 0)
                fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>", L + i * bw, HY(sh[k][i]), bw,
                        T + PH - HY(sh[k][i]));
        fputs("</g>\n", f);
    }
    fprintf(f, "<g><title>threshold %.4g: above it the decision is unknown</title><line x1=\"%.1f\" y1=\"%d\" "
               "x2=\"%.1f\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\" stroke-dasharray=\"5 3\"/></g>\n",
            (double)e->threshold, HX(e->threshold), T - 4, HX(e->threshold), T + PH, DN_COL_WARN);
    /* legend above the plot */
    char nm[40];
    snprintf(nm, sizeof nm, "%.32s%s", o->name, strlen(o->name) > 32 ? "..." : "");
    fprintf(f, "<rect x=\"%d\" y=\"6\" width=\"10\" height=\"10\" fill=\"%s\" fill-opacity=\"0.6\"/><text x=\"%d\" y=\"15\" "
               "font-size=\"11\">in-distribution %s (%d)</text>\n", L, DN_COL_INK, L + 14, e->in_split, e->in.n);
    fprintf(f, "<rect x=\"%d\" y=\"22\" width=\"10\" height=\"10\" fill=\"%s\" fill-opacity=\"0.6\"/>"
               "<text x=\"%d\" y=\"31\" font-size=\"11\">", L, DN_COL_BAD, L + 14);
    dn_rep_html_str(f, nm);
    fprintf(f, " (%d, %.1f%% flagged)</text>\n", o->rows.n, o->rows.n ? 100.0 * o->flagged / o->rows.n : 0.0);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">ood_score (%s); dashed: threshold</text>\n",
            L + PW / 2, T + PH + 28, dn_ood_kind_name(j));
    fputs("</svg>\n", f);
#undef HX
#undef HY
}

void dn_rep_html_ood(const dn_eval_report *r, FILE *f) {
    const dn_ood_eval *e = r->ood;
    if (!e) return;
    fprintf(f, "<h2 id=\"ood\">Unknown inputs</h2>\n<p class=\"note\">The model's unknown-input detector (ood_score = "
               "<b>%s</b>, threshold %.4g: a higher score is <i>unknown</i>) on the evaluated images (in-distribution) "
               "and on each <code>--ood</code> set. AUROC: the chance that an image of the set scores above an "
               "in-distribution one (1 = perfectly separated, 0.5 = chance); FPR@95%%TPR: the share of the set still "
               "accepted by the score's threshold that accepts 95%% of the in-distribution images (lower is better). "
               "msp is the max-softmax baseline (temperature %.4g).</p>\n",
            dn_ood_kind_name(e->kind), (double)e->threshold, r->temperature);
    fputs("<div class=\"scroll\"><table id=\"ood-table\" class=\"compact\"><tr><th class=\"l\" rowspan=\"2\">images</th><th rowspan=\"2\">n</th>"
          "<th rowspan=\"2\">flagged unknown</th>", f);
    for (int j = 0; j < DN_OOD_NMEASURES; j++)
        fprintf(f, "<th colspan=\"2\">%s%s</th>", dn_ood_measure_name(j), j == e->kind ? " (model)" : "");
    fputs("</tr>\n<tr>", f);
    for (int j = 0; j < DN_OOD_NMEASURES; j++) fputs("<th>AUROC</th><th>FPR@95</th>", f);
    fprintf(f, "</tr>\n<tr><td class=\"l\" style=\"white-space:nowrap\">in-distribution (%s)</td><td>%d</td>"
               "<td>%.1f%%</td>", e->in_split, e->in.n, e->in.n ? 100.0 * e->in_flagged / e->in.n : 0.0);
    for (int j = 0; j < DN_OOD_NMEASURES; j++) fputs("<td></td><td></td>", f);
    fputs("</tr>\n", f);
    for (int s = 0; s < e->nsets; s++) {
        const dn_ood_set *o = &e->sets[s];
        fputs("<tr><td class=\"l mono\">", f);
        dn_rep_html_str(f, o->name);
        fprintf(f, "</td><td>%d</td><td>%.1f%%</td>", o->rows.n, o->rows.n ? 100.0 * o->flagged / o->rows.n : 0.0);
        for (int j = 0; j < DN_OOD_NMEASURES; j++)
            fprintf(f, "<td>%s%.4f%s</td><td>%.4f</td>", j == e->kind ? "<b>" : "", o->auroc[j],
                    j == e->kind ? "</b>" : "", o->fpr95[j]);
        fputs("</tr>\n", f);
    }
    fprintf(f, "</table></div>\n<h3>Distribution of ood_score (%s)</h3>\n<p class=\"note\">Share of each set's images per "
               "score bin: in-distribution (blue) against the unknown set (red); the dashed line is the threshold, "
               "images to its right are flagged unknown.</p>\n<div class=\"row\">\n", dn_ood_kind_name(e->kind));
    for (int s = 0; s < e->nsets; s++) svg_dist(r, s, f);
    fputs("</div>\n", f);
}
