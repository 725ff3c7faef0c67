/* Good class and decision policy of a model (see policy.h). */
#include "nn/policy.h"
#include "core/core.h"
#include "core/json.h"
#include <ctype.h>
#include <math.h>
#include <string.h>

int dn_good_class_name_is_good(const char *name) {
    static const char *words[] = {"ok",       "okay",      "good",       "free",         "normal",
                                  "pass",     "passed",    "clean",      "nodefect",     "nodefects",
                                  "defectfree", "nondefective", "flawless"};
    char n[64];
    size_t l = 0;
    for (const char *s = name; s && *s; s++) {
        if (*s == ' ' || *s == '_' || *s == '-' || *s == '.') continue;
        if (l + 1 >= sizeof n) return 0;
        n[l++] = (char)tolower((unsigned char)*s);
    }
    n[l] = 0;
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (!strcmp(n, words[i])) return 1;
    return 0;
}

int dn_good_class_detect(const char *const *names, int k) {
    int found = -1;
    for (int c = 0; c < k; c++)
        if (dn_good_class_name_is_good(names[c])) {
            if (found >= 0) return -1; /* ambiguous */
            found = c;
        }
    return found;
}

int dn_model_class_index(const dn_model *m, const char *name) {
    for (int c = 0; c < m->num_classes; c++)
        if (!strcmp(m->class_names[c], name)) return c;
    return -1;
}

dn_status dn_model_good_class(const dn_model *m, dn_good_class *out) {
    out->index = -1;
    out->auto_detected = out->stored = 0;
    const char *v = dn_meta_get(&m->meta, "good_class");
    if (!v) {
        out->index = dn_good_class_detect((const char *const *)m->class_names, m->num_classes);
        out->auto_detected = out->index >= 0;
        return DN_OK;
    }
    dn_json *j = dn_json_parse(v, strlen(v), NULL, 0);
    const char *name = dn_json_str(dn_json_get(j, "name"), NULL);
    int idx = name ? dn_model_class_index(m, name) : -1;
    out->auto_detected = !strcmp(dn_json_str(dn_json_get(j, "source"), ""), "auto-detected");
    dn_json_free(j);
    if (idx < 0)
        return dn_fail(DN_ERR_FORMAT, "model metadata good_class '%s' does not name a class of the model", v);
    out->index = idx;
    out->stored = 1;
    return DN_OK;
}

/* DN_ERR_ARG naming the class and listing the model's */
static dn_status not_a_class(const dn_model *m, const char *name) {
    dn_sb b = {0};
    for (int c = 0; c < m->num_classes && c < 12; c++) dn_sb_printf(&b, "%s%s", c ? ", " : "", m->class_names[c]);
    if (m->num_classes > 12) dn_sb_puts(&b, ", ...");
    dn_status st = dn_fail(DN_ERR_ARG, "good class '%s' is not a class of the model (classes: %s)", name, b.s ? b.s : "");
    dn_sb_free(&b);
    return st;
}

dn_status dn_policy_override_good(const dn_model *m, const char *name, dn_policy *pol) {
    int idx = dn_model_class_index(m, name);
    if (idx < 0) return not_a_class(m, name);
    if (idx != pol->good) pol->good_threshold = 0; /* the stored threshold was chosen for another class */
    pol->good = idx;
    return DN_OK;
}

dn_status dn_model_set_good_class(dn_model *m, const char *name) {
    int idx, detected = !name;
    if (name) {
        if ((idx = dn_model_class_index(m, name)) < 0) return not_a_class(m, name);
    } else if ((idx = dn_good_class_detect((const char *const *)m->class_names, m->num_classes)) < 0) {
        return DN_OK;
    }
    dn_sb b = {0};
    dn_sb_puts(&b, "{\"name\":");
    dn_sb_json_str(&b, m->class_names[idx]);
    dn_sb_printf(&b, ",\"source\":\"%s\"}", detected ? "auto-detected" : "given");
    dn_status st = b.oom ? dn_fail(DN_ERR_NOMEM, "good class: out of memory") : dn_meta_set(&m->meta, "good_class", b.s);
    dn_sb_free(&b);
    return st;
}

dn_status dn_model_policy(const dn_model *m, dn_policy *out) {
    dn_good_class g;
    out->good = -1;
    out->good_threshold = 0;
    dn_status st = dn_model_good_class(m, &g);
    if (st) return st;
    out->good = g.index;
    const char *v = dn_meta_get(&m->meta, "decision_policy");
    if (!v || g.index < 0) return DN_OK;
    dn_json *j = dn_json_parse(v, strlen(v), NULL, 0);
    double t = dn_json_num(dn_json_get(j, "good_threshold"), NAN);
    const char *gname = dn_json_str(dn_json_get(j, "good_class"), NULL);
    int same = gname && !strcmp(gname, m->class_names[g.index]);
    dn_json_free(j);
    if (!(t >= 0 && t <= 1) || !same)
        return dn_fail(DN_ERR_FORMAT, "model metadata decision_policy needs good_threshold in [0, 1] and the "
                                      "model's good class '%s'", m->class_names[g.index]);
    out->good_threshold = (float)t;
    return DN_OK;
}

int dn_policy_decide(const dn_policy *pol, float threshold, const float *p, int k, dn_prediction *out) {
    int b = 0, unknown = out->decision == DN_DECISION_UNKNOWN;
    for (int j = 1; j < k; j++) if (p[j] > p[b]) b = j;
    out->cls = b;
    out->confidence = p[b];
    out->uncertain = p[b] < threshold;
    int g = pol ? pol->good : -1;
    if (g >= 0 && g < k && pol->good_threshold > 0) {
        if (p[g] >= pol->good_threshold) {
            out->cls = g;
            out->confidence = p[g];
            out->uncertain = 0;
        } else if (b == g) {
            out->uncertain = 1; /* good, but not confidently: not accepted */
        }
    }
    if (!unknown) out->decision = out->uncertain ? DN_DECISION_UNCERTAIN : DN_DECISION_ACCEPTED;
    return g >= 0 && g < k && out->cls == g && !out->uncertain && !unknown;
}
