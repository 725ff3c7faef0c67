/* The HTML report's section on good parts and decisions: escape and
 * false-reject rates with their intervals, per defect class, the decision
 * policy, the escape-vs-false-reject curve over good thresholds with the
 * chosen point, and ordinal error figures (see report.h, quality.h). */
#include "eval/report.h"
#include "core/core.h"
#include "eval/report_int.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

void dn_rep_html_quality_cards(const dn_eval_report *r, FILE *f) {
    char v[128], l[200];
    if (r->ordinal) {
        snprintf(v, sizeof v, "%.3f", r->ord.mae);
        snprintf(l, sizeof l, "mean absolute class error (%lld off by one, %lld by more)", (long long)r->ord.off_by_one,
                 (long long)r->ord.off_by_more);
        dn_rep_card(f, "ordinal-mae", v, l, 0);
    }
    if (!r->has_quality) return;
    const dn_rate *e = &r->quality.escape, *fr = &r->quality.false_reject;
    snprintf(v, sizeof v, "%.2f%%", 100 * e->p);
    snprintf(l, sizeof l, "escape rate (%lld of %lld defective accepted; 95%% CI %.2f&ndash;%.2f%%)", (long long)e->k,
             (long long)e->n, 100 * e->lo, 100 * e->hi);
    dn_rep_card(f, "escape-rate", v, l, r->has_policy_fit && e->p > r->target_escape && !r->cost_spec);
    snprintf(v, sizeof v, "%.2f%%", 100 * fr->p);
    snprintf(l, sizeof l, "false-reject rate (%lld of %lld good rejected or uncertain; 95%% CI %.2f&ndash;%.2f%%)",
             (long long)fr->k, (long long)fr->n, 100 * fr->lo, 100 * fr->hi);
    dn_rep_card(f, "false-reject-rate", v, l, 0);
}

/* Escape rate (y) against false-reject rate (x) as the good threshold moves;
 * the red point is the decision applied. */
static void svg_tradeoff(const dn_eval_report *r, FILE *f) {
    int W = 520, H = 334, L = 56, T = 44, PW = W - L - 20, PH = H - T - 48;
    double xmax = 0, ymax = 0;
    for (int64_t i = 0; i < r->npcurve; i++) {
        if (r->pcurve[i].false_reject > xmax) xmax = r->pcurve[i].false_reject;
        if (r->pcurve[i].escape > ymax) ymax = r->pcurve[i].escape;
    }
    xmax = xmax > 0 ? fmin(1, xmax * 1.05) : 1;
    ymax = ymax > 0 ? fmin(1, ymax * 1.05) : 1;
#define PX(x) (L + (x) / xmax * PW)
#define PY(y) (T + PH - (y) / ymax * PH)
    fprintf(f, "<svg id=\"svg-escape-curve\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"escape rate versus false-reject rate\">\n", W, H, W, H);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fbfcfd\" stroke=\"#9aa5b4\"/>\n", L, T, PW, PH);
    for (int g = 0; g <= 5; g++) {
        double x = xmax * g / 5, y = ymax * g / 5;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e3e8ef\"/><text x=\"%.1f\" y=\"%d\" "
                   "font-size=\"10\" text-anchor=\"middle\">%.3g%%</text>\n", PX(x), T, PX(x), T + PH, PX(x), T + PH + 13,
                100 * x);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e3e8ef\"/><text x=\"%d\" y=\"%.1f\" "
                   "font-size=\"10\" text-anchor=\"end\" dominant-baseline=\"middle\">%.3g%%</text>\n", L, PY(y), L + PW,
                PY(y), L - 4, PY(y), 100 * y);
    }
    if (r->has_policy_fit && !r->cost_spec && r->target_escape <= ymax)
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e0a040\" stroke-dasharray=\"5 3\"/>"
                   "<text x=\"%d\" y=\"%.1f\" font-size=\"10\" fill=\"#a06a10\">target escape %.4g</text>\n",
                L, PY(r->target_escape), L + PW, PY(r->target_escape), L + PW - 110, PY(r->target_escape) - 4,
                r->target_escape);
    if (r->npcurve) {
        int64_t step = r->npcurve > 600 ? (r->npcurve + 599) / 600 : 1;
        fputs("<polyline fill=\"none\" stroke=\"#4c78a8\" stroke-width=\"2\" points=\"", f);
        for (int64_t i = 0; i < r->npcurve; i += step)
            fprintf(f, "%s%.1f,%.1f", i ? " " : "", PX(r->pcurve[i].false_reject), PY(r->pcurve[i].escape));
        const dn_policy_point *z = &r->pcurve[r->npcurve - 1];
        fprintf(f, " %.1f,%.1f\"/>\n", PX(z->false_reject), PY(z->escape));
    }
    const dn_rate *e = &r->quality.escape, *fr = &r->quality.false_reject;
    fprintf(f, "<g id=\"chosen-point\"><title>decision applied: escape %.4f, false reject %.4f</title>"
               "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"#d62728\"/></g>\n", e->p, fr->p, PX(fr->p), PY(e->p));
    fprintf(f, "<line x1=\"%d\" y1=\"10\" x2=\"%d\" y2=\"10\" stroke=\"#4c78a8\" stroke-width=\"2\"/><text x=\"%d\" y=\"14\" "
               "font-size=\"11\">%s: every good threshold</text><circle cx=\"%d\" cy=\"26\" r=\"4\" fill=\"#d62728\"/>"
               "<text x=\"%d\" y=\"30\" font-size=\"11\" fill=\"#b02a2a\">decision applied: escape %.2f%%, false reject "
               "%.2f%%</text>\n", L, L + 18, L + 22, r->split_name, L + 9, L + 22, 100 * e->p, 100 * fr->p);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">false-reject rate (good parts rejected "
               "or uncertain)</text>\n", L + PW / 2, T + PH + 30);
    fprintf(f, "<text transform=\"translate(12,%d) rotate(-90)\" font-size=\"11\" text-anchor=\"middle\">escape rate "
               "(defective parts accepted)</text>\n</svg>\n", T + PH / 2);
#undef PX
#undef PY
}

static void rate_row(FILE *f, const char *name, const dn_rate *q) {
    fputs("<tr><td class=\"l\">", f);
    dn_rep_html_str(f, name);
    fprintf(f, "</td><td>%.2f%%</td><td>%lld of %lld</td><td>%.2f&ndash;%.2f%%</td></tr>\n", 100 * q->p,
            (long long)q->k, (long long)q->n, 100 * q->lo, 100 * q->hi);
}

static void decision_text(const dn_eval_report *r, FILE *f) {
    fputs("<p class=\"note\" id=\"decision\">Decision: ", f);
    if (r->policy.good_threshold > 0) {
        fputs("<b>reject unless confidently good</b>: a part is accepted only if p(", f);
        dn_rep_html_str(f, dn_rep_cname(r, r->good));
        fprintf(f, ") &ge; %.4f", (double)r->policy.good_threshold);
    } else {
        fprintf(f, "a part is accepted when it is predicted good with confidence &ge; %.4f", (double)r->threshold);
    }
    fputs(" (", f);
    dn_rep_html_str(f, r->policy_source ? r->policy_source : "");
    fputs(")", f);
    if (r->has_policy_fit)
        fprintf(f, "; on %s: escape %.2f%% (%lld of %lld), false reject %.2f%% (%lld of %lld)", r->fit_split,
                100 * r->policy_fit.escape.p, (long long)r->policy_fit.escape.k, (long long)r->policy_fit.escape.n,
                100 * r->policy_fit.false_reject.p, (long long)r->policy_fit.false_reject.k,
                (long long)r->policy_fit.false_reject.n);
    fputs(". An <i>escape</i> is a defective part accepted as good; a <i>false reject</i> a good part classified "
          "defective or uncertain. Intervals are 95% Wilson intervals.</p>\n", f);
}

void dn_rep_html_decisions(const dn_eval_report *r, FILE *f) {
    if (r->ordinal) {
        const dn_ordinal *o = &r->ord;
        int64_t n = o->exact + o->off_by_one + o->off_by_more;
        fprintf(f, "<h2>Ordered classes</h2>\n<table class=\"kv\" id=\"ordinal\"><tr><td>exact</td><td>%lld</td></tr>"
                   "<tr><td>off by one class</td><td>%lld</td></tr><tr><td>off by more</td><td>%lld</td></tr>"
                   "<tr><td>mean absolute class error</td><td>%.4f class steps over %lld images</td></tr></table>\n",
                (long long)o->exact, (long long)o->off_by_one, (long long)o->off_by_more, o->mae, (long long)n);
    }
    if (!r->good_source) return;
    fputs("<h2>Good parts, escapes and false rejects</h2>\n", f);
    if (r->good < 0) {
        fprintf(f, "<p class=\"note\">No good class (%s); give one with <code>--good-class NAME</code>.</p>\n",
                r->good_source);
        return;
    }
    fputs("<p class=\"note\">Good class: <b>", f);
    dn_rep_html_str(f, dn_rep_cname(r, r->good));
    fprintf(f, "</b> (%s).</p>\n", r->good_source);
    if (!r->has_quality) {
        fprintf(f, "<p class=\"note\">It does not occur in split %s: no escape or false-reject rates.</p>\n",
                r->split_name);
        return;
    }
    decision_text(r, f);
    fputs("<div class=\"row\"><div>\n", f);
    svg_tradeoff(r, f);
    fputs("</div><div><table id=\"escapes\"><tr><th class=\"l\">true class</th><th>rate</th><th>parts</th>"
          "<th>95% CI</th></tr>\n", f);
    rate_row(f, "escape, all defects", &r->quality.escape);
    for (int c = 0; c < r->quality.k; c++) {
        if (c == r->good || !r->quality.escape_by_class[c].n) continue;
        char nm[80];
        snprintf(nm, sizeof nm, "escape, %.60s", dn_rep_cname(r, c));
        rate_row(f, nm, &r->quality.escape_by_class[c]);
    }
    rate_row(f, "false reject", &r->quality.false_reject);
    fputs("</table></div></div>\n", f);
}
