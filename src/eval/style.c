/* Shared look of the HTML reports; see style.h. */
#include "eval/style.h"
#include <math.h>

static const char *CSS =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;color:#1c2430;"
    "margin:0 auto;max-width:1080px;padding:24px 28px;background:#fff}"
    "h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;padding-bottom:4px;"
    "border-bottom:2px solid #e3e8ef}h3{font-size:14px;margin:10px 0 6px;color:#3d4a5c}"
    ".sub{color:#5b6778;margin:0 0 16px}.cards{display:flex;flex-wrap:wrap;gap:10px}"
    ".card{border:1px solid #d9e0e8;border-radius:8px;padding:10px 14px;min-width:130px;background:#f8fafc}"
    ".card .v{font-size:22px;font-weight:600}.card .l{color:#5b6778;font-size:12px}"
    ".card.warn{border-color:#e0a040;background:#fff8ec}"
    "table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px;border-bottom:1px solid #e7ebf0;"
    "text-align:right;vertical-align:top}th{background:#f1f4f8;font-weight:600}td.l,th.l{text-align:left}"
    "table.kv td{text-align:left}table.kv td:first-child{color:#5b6778;white-space:nowrap}"
    "code,.mono{font-family:'DejaVu Sans Mono',monospace;font-size:12px;word-break:break-all}"
    ".row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}"
    ".gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}"
    ".gallery figure{margin:0;border:1px solid #d9e0e8;border-radius:6px;padding:6px;font-size:12px;"
    "break-inside:avoid;background:#fbfcfd}.gallery img{display:block;margin:0 auto 4px;max-width:100%;"
    "image-rendering:auto}.gallery .t{color:#1f6f3f}.gallery .p{color:#b02a2a;font-weight:600}"
    ".gallery.cams{grid-template-columns:repeat(auto-fill,minmax(250px,1fr))}"
    ".gallery .pair{display:flex;gap:4px;justify-content:center;align-items:flex-start}"
    ".gallery .pair img{margin:0 0 4px;max-width:calc(50% - 2px);height:auto}"
    "table.compact td,table.compact th{padding:3px 6px;font-size:12px}table.compact th[colspan]{text-align:center}"
    ".scroll{overflow-x:auto}"
    ".gallery .n{color:#5b6778;word-break:break-all}.note{color:#5b6778;font-size:12px}"
    "svg text{font-family:system-ui,'DejaVu Sans',sans-serif}"
    ".meter{display:inline-block;vertical-align:middle;width:90px;height:9px;background:#eef1f5;"
    "border-radius:2px;margin-left:6px;overflow:hidden}.meter i{display:block;height:100%}"
    ".legend{font-size:12px;color:#5b6778;margin:2px 0 6px}.legend b{display:inline-block;width:18px;height:3px;"
    "vertical-align:middle;margin:0 4px 0 12px}"
    "@media print{body{padding:0;max-width:none}h2{break-after:avoid}svg,table,.card{break-inside:avoid}}";

const char *dn_report_css(void) { return CSS; }

static const char *const PALETTE[DN_PALETTE_N] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
                                                  "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#d62728"};

const char *dn_palette(int i) { return PALETTE[(i % DN_PALETTE_N + DN_PALETTE_N) % DN_PALETTE_N]; }

const char *dn_html_entity(char c) {
    switch (c) {
    case '&': return "&amp;";
    case '<': return "&lt;";
    case '>': return "&gt;";
    case '"': return "&quot;";
    case '\'': return "&#39;";
    default: return NULL;
    }
}

void dn_sb_html(dn_sb *b, const char *s) {
    for (; s && *s; s++) {
        const char *e = dn_html_entity(*s);
        if (e) dn_sb_puts(b, e);
        else dn_sb_putn(b, s, 1);
    }
}

void dn_fput_html(FILE *f, const char *s) {
    for (; s && *s; s++) {
        const char *e = dn_html_entity(*s);
        if (e) fputs(e, f);
        else fputc(*s, f);
    }
}

double dn_nice_max(double v) {
    if (!(v > 0)) return 1;
    /* four grid steps of 1, 2, 2.5 or 5 x 10^k: labels stay short (0 25 50 75 100) */
    double q = v / 4, p = pow(10, floor(log10(q))), m = q / p;
    double step = m <= 1 + 1e-9 ? 1 : m <= 2 + 1e-9 ? 2 : m <= 2.5 + 1e-9 ? 2.5 : m <= 5 + 1e-9 ? 5 : 10;
    return 4 * step * p;
}
