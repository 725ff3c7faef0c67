/* Live vs shadow agreement (see compare.h). */
#include "trust/compare.h"
#include "serve/pipeline.h"
#include "eval/style.h"
#include "serve/store_review.h"
#include <string.h>

static dn_compare_class *class_of(dn_compare *c, const char *name) {
    if (!name) name = "";
    for (int i = 0; i < c->ncls; i++)
        if (!strcmp(c->cls[i].name, name)) return &c->cls[i];
    if (c->ncls == DN_COMPARE_MAX_CLASSES) { c->truncated = 1; return NULL; }
    dn_compare_class *k = &c->cls[c->ncls++];
    snprintf(k->name, sizeof k->name, "%s", name);
    return k;
}

static int add_pair(void *ctx, const dn_shadow_pair *p) {
    dn_compare *c = ctx;
    if (!c->n || p->time < c->first) c->first = p->time;
    if (p->time > c->last) c->last = p->time;
    c->n++;
    int same = p->live_cls && p->shadow_cls && !strcmp(p->live_cls, p->shadow_cls);
    c->agree += same;
    c->decision_agree += p->live_decision && p->shadow_decision && !strcmp(p->live_decision, p->shadow_decision);
    c->live_unsure += p->live_decision && strcmp(p->live_decision, "accepted");
    c->shadow_unsure += p->shadow_decision && strcmp(p->shadow_decision, "accepted");
    dn_compare_class *a = class_of(c, p->live_cls), *b = class_of(c, p->shadow_cls);
    if (a) a->live++;
    if (b) b->shadow++;
    if (a && same) a->both++;
    snprintf(c->live_version, sizeof c->live_version, "%s", p->live_version ? p->live_version : "");
    snprintf(c->shadow_version, sizeof c->shadow_version, "%s", p->shadow_version ? p->shadow_version : "");
    return 0;
}

dn_status dn_compare_store(dn_store *st, double from, double to, dn_compare *out) {
    memset(out, 0, sizeof *out);
    return dn_store_shadow_scan(st, from, to, add_pair, out);
}

void dn_compare_print(const dn_compare *c, FILE *f) {
    if (!c->n) {
        fprintf(f, "no shadow predictions (run serve with --shadow CANDIDATE)\n");
        return;
    }
    fprintf(f, "live:   %s\nshadow: %s\n", c->live_version, c->shadow_version);
    fprintf(f, "pairs %ld: same class %ld (%.2f%%), same decision %ld (%.2f%%); not accepted: live %ld, shadow %ld\n",
            c->n, c->agree, 100.0 * c->agree / c->n, c->decision_agree, 100.0 * c->decision_agree / c->n,
            c->live_unsure, c->shadow_unsure);
    fprintf(f, "%-24s %8s %8s %8s %9s\n", "class", "live", "shadow", "both", "kept");
    for (int i = 0; i < c->ncls; i++) {
        const dn_compare_class *k = &c->cls[i];
        char kept[16] = "-";
        if (k->live) snprintf(kept, sizeof kept, "%.1f%%", 100.0 * k->both / k->live);
        fprintf(f, "%-24s %8ld %8ld %8ld %9s\n", k->name, k->live, k->shadow, k->both, kept);
    }
    if (c->truncated) fprintf(f, "(more than %d class names: the rest are left out of the table)\n", DN_COMPARE_MAX_CLASSES);
}

void dn_compare_json(const dn_compare *c, dn_sb *b) {
    dn_sb_printf(b, "{\"pairs\":%ld,\"same_class\":%ld,\"same_decision\":%ld,\"agreement\":%.6g,"
                    "\"live_not_accepted\":%ld,\"shadow_not_accepted\":%ld,\"first\":%.6f,\"last\":%.6f",
                 c->n, c->agree, c->decision_agree, c->n ? (double)c->agree / c->n : 0.0, c->live_unsure,
                 c->shadow_unsure, c->first, c->last);
    dn_json_opt_str(b, "live_model", c->n ? c->live_version : NULL, 1);
    dn_json_opt_str(b, "shadow_model", c->n ? c->shadow_version : NULL, 1);
    dn_sb_puts(b, ",\"classes\":[");
    for (int i = 0; i < c->ncls; i++) {
        const dn_compare_class *k = &c->cls[i];
        dn_sb_puts(b, i ? ",{" : "{");
        dn_json_opt_str(b, "class", k->name, 0);
        dn_sb_printf(b, ",\"live\":%ld,\"shadow\":%ld,\"both\":%ld}", k->live, k->shadow, k->both);
    }
    dn_sb_printf(b, "],\"truncated\":%s}", c->truncated ? "true" : "false");
}

void dn_compare_html(const dn_compare *c, dn_sb *b) {
    dn_sb_puts(b, "<h2>Shadow model</h2>\n<p class=\"note\">candidate ");
    dn_sb_html(b, c->shadow_version);
    dn_sb_puts(b, " beside live ");
    dn_sb_html(b, c->live_version);
    dn_sb_printf(b, ": %ld images, same class %.2f%%, same decision %.2f%%; not accepted: live %ld, shadow %ld "
                    "(<code>defectnet compare</code>)</p>\n<table><tr><th>class</th><th>live</th><th>shadow</th>"
                    "<th>both</th><th>kept</th></tr>\n",
                 c->n, c->n ? 100.0 * c->agree / c->n : 0.0, c->n ? 100.0 * c->decision_agree / c->n : 0.0,
                 c->live_unsure, c->shadow_unsure);
    for (int i = 0; i < c->ncls; i++) {
        const dn_compare_class *k = &c->cls[i];
        dn_sb_puts(b, "<tr><td>");
        dn_sb_html(b, k->name);
        dn_sb_printf(b, "</td><td>%ld</td><td>%ld</td><td>%ld</td><td>", k->live, k->shadow, k->both);
        if (k->live) dn_sb_printf(b, "%.1f%%", 100.0 * k->both / k->live);
        else dn_sb_puts(b, "-");
        dn_sb_puts(b, "</td></tr>\n");
    }
    dn_sb_puts(b, "</table>\n");
}
