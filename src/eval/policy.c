/* Expected rates of a stored decision policy and mistake costs (see policy.h). */
#include "eval/policy.h"
#include "core/core.h"
#include "core/json.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void dn_model_expected_rates(const dn_model *m, double *escape, double *false_reject) {
    *escape = *false_reject = -1;
    const char *v = dn_meta_get(&m->meta, "decision_policy");
    dn_json *j = v ? dn_json_parse(v, strlen(v), NULL, 0) : NULL;
    const dn_json *e = dn_json_get(j, "expected");
    double a = dn_json_num(dn_json_get(e, "escape"), -1), b = dn_json_num(dn_json_get(e, "false_reject"), -1);
    if (a >= 0 && a <= 1) *escape = a;
    if (b >= 0 && b <= 1) *false_reject = b;
    dn_json_free(j);
}

/* ------------------------------------------------------------ costs */

static int parse_cost_value(const char *v, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(x) || x < 0) return -1;
    *out = x;
    return 0;
}

dn_status dn_cost_parse(const char *s, const dn_model *m, dn_cost *out) {
    memset(out, 0, sizeof *out);
    int k = m->num_classes;
    char *copy = dn_strdup(s ? s : "");
    out->escape = dn_calloc((size_t)k + 1, sizeof *out->escape);
    if (!copy || !out->escape) { free(copy); dn_cost_free(out); return DN_ERR_NOMEM; }
    out->k = k;
    out->false_reject = 1;
    double dflt = 1;
    int *given = dn_calloc((size_t)k + 1, sizeof *given);
    dn_status st = given ? DN_OK : DN_ERR_NOMEM;
    if (!*copy) st = dn_fail(DN_ERR_ARG, "--cost: empty (expected escape=N,false_reject=N[,escape:CLASS=N])");
    for (char *rest = copy, *tok; !st && (tok = strsep(&rest, ",")) != NULL;) {
        char *eq = strchr(tok, '=');
        double x;
        if (!eq || parse_cost_value(eq + 1, &x)) {
            st = dn_fail(DN_ERR_ARG, "--cost: '%s' is not NAME=COST with a finite cost >= 0", tok);
            break;
        }
        *eq = 0;
        if (!strcmp(tok, "escape")) dflt = x;
        else if (!strcmp(tok, "false_reject")) out->false_reject = x;
        else if (!strncmp(tok, "escape:", 7)) {
            int c = dn_model_class_index(m, tok + 7);
            if (c < 0) st = dn_fail(DN_ERR_ARG, "--cost: escape:%s: no class '%s' in the model", tok + 7, tok + 7);
            else out->escape[c] = x, given[c] = 1;
        } else {
            st = dn_fail(DN_ERR_ARG, "--cost: unknown cost '%s' (escape, false_reject, escape:CLASS)", tok);
        }
    }
    for (int c = 0; !st && c < k; c++)
        if (!given[c]) out->escape[c] = dflt;
    free(given);
    free(copy);
    if (st) dn_cost_free(out);
    return st;
}

void dn_cost_free(dn_cost *c) {
    free(c->escape);
    c->escape = NULL;
    c->k = 0;
}
