/* The visual language shared by defectnet's HTML pages (the eval report and the
 * manufacturing report): one stylesheet, one categorical palette, HTML escaping
 * and "nice" axis bounds for the inline SVG charts. */
#ifndef DN_EVAL_STYLE_H
#define DN_EVAL_STYLE_H
#include "core/json.h"
#include <stdio.h>

/* The stylesheet (without <style> tags): cards, tables, gallery, chart text. */
const char *dn_report_css(void);
/* Categorical colours for classes; index modulo DN_PALETTE_N. */
#define DN_PALETTE_N 12
const char *dn_palette(int i);
/* Status colours: ok (green), bad (red), warn (amber), ink (dark blue), muted (grey). */
#define DN_COL_OK "#2e7d4f"
#define DN_COL_BAD "#c4302b"
#define DN_COL_WARN "#e0a040"
#define DN_COL_INK "#1f5fa8"
#define DN_COL_MUTED "#5b6778"
/* The entity for an HTML-special character, or NULL. */
const char *dn_html_entity(char c);
/* HTML-escaped text into a string builder / a file. */
void dn_sb_html(dn_sb *b, const char *s);
void dn_fput_html(FILE *f, const char *s);
/* Smallest 4 x (1, 2, 2.5 or 5 x 10^k) >= v (1 for v <= 0): the top of a value axis
 * with four grid steps. */
double dn_nice_max(double v);

#endif
