/* Helpers shared by the eval report writers (report.c: table + JSON,
 * report_html.c: HTML + SVG). Internal to src/eval. */
#ifndef DN_EVAL_REPORT_INT_H
#define DN_EVAL_REPORT_INT_H
#include "eval/report.h"
#include <stdio.h>

/* class name i of the report's model ("?" if out of range) */
const char *dn_rep_cname(const dn_eval_report *r, int i);
/* quoted, escaped JSON string / HTML-escaped text written to f */
void dn_rep_json_str(FILE *f, const char *s);
void dn_rep_html_str(FILE *f, const char *s);
/* JSON number, null when not finite */
void dn_rep_json_num(FILE *f, double v);
/* last path component / "parent/name" */
const char *dn_rep_base_name(const char *p);
const char *dn_rep_short_name(const char *p);
/* a summary card: value (id) over its label; warn colours it */
void dn_rep_card(FILE *f, const char *id, const char *value, const char *label, int warn);
/* report_decisions.c: the escape / false-reject / ordinal cards and section */
void dn_rep_html_quality_cards(const dn_eval_report *r, FILE *f);
void dn_rep_html_decisions(const dn_eval_report *r, FILE *f);
/* report_ood.c: the unknown-input section (table + score histograms); nothing without r->ood */
void dn_rep_html_ood(const dn_eval_report *r, FILE *f);

#endif
