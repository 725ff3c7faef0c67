/* Review policy, label posts and bank neighbours (see review.h). */
#include "trust/review.h"
#include "core/json.h"
#include "nn/model.h"
#include "ood/ood.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dn_review_policy_free(dn_review_policy *p) {
    if (!p) return;
    for (int i = 0; i < p->nclasses; i++) free(p->classes[i]);
    p->nclasses = 0;
}

int dn_review_policy_active(const dn_review_policy *p) {
    return p && (p->decisions || p->nclasses || p->sample > 0);
}

/* One term of the spec (t is NUL-terminated, trimmed). */
static dn_status parse_term(const char *t, const char *who, dn_review_policy *p) {
    char *e;
    if (!strcmp(t, "accepted")) p->decisions |= 1 << DN_DECISION_ACCEPTED;
    else if (!strcmp(t, "uncertain")) p->decisions |= 1 << DN_DECISION_UNCERTAIN;
    else if (!strcmp(t, "unknown")) p->decisions |= 1 << DN_DECISION_UNKNOWN;
    else if (!strncmp(t, "class:", 6)) {
        if (!t[6]) return dn_fail(DN_ERR_ARG, "%s: 'class:' needs a class name", who);
        if (strlen(t + 6) >= DN_REVIEW_MAX_LABEL) return dn_fail(DN_ERR_ARG, "%s: class name too long", who);
        if (p->nclasses == DN_REVIEW_MAX_CLASSES)
            return dn_fail(DN_ERR_ARG, "%s: more than %d class: terms", who, DN_REVIEW_MAX_CLASSES);
        if (!(p->classes[p->nclasses] = dn_strdup(t + 6))) return DN_ERR_NOMEM;
        p->nclasses++;
    } else if (!strncmp(t, "sample:", 7)) {
        errno = 0;
        double v = strtod(t + 7, &e);
        if (errno || e == t + 7 || *e || !(v > 0 && v <= 1))
            return dn_fail(DN_ERR_ARG, "%s: '%s': sample rate must be a number in (0, 1]", who, t);
        p->sample = v;
    } else if (!strncmp(t, "cap:", 4)) {
        errno = 0;
        long v = strtol(t + 4, &e, 10);
        if (errno || e == t + 4 || strcmp(e, "/h") || v < 1 || v > 1000000)
            return dn_fail(DN_ERR_ARG, "%s: '%s': expected cap:N/h with N in 1..1000000", who, t);
        p->cap_per_hour = (int)v;
    } else if (!strncmp(t, "agree:", 6)) {
        errno = 0;
        long v = strtol(t + 6, &e, 10);
        if (errno || e == t + 6 || *e || v < 1 || v > 9)
            return dn_fail(DN_ERR_ARG, "%s: '%s': expected agree:N with N in 1..9", who, t);
        p->agree = (int)v;
    } else {
        return dn_fail(DN_ERR_ARG,
                       "%s: unknown term '%.60s' (expected unknown, uncertain, accepted, class:NAME, "
                       "sample:RATE, cap:N/h, agree:N)", who, t);
    }
    return DN_OK;
}

dn_status dn_review_policy_parse(const char *spec, const char *who, dn_review_policy *p) {
    memset(p, 0, sizeof *p);
    p->agree = 1;
    if (!spec) return DN_OK;
    if (strlen(spec) > 8192) return dn_fail(DN_ERR_ARG, "%s: policy longer than 8192 bytes", who);
    const char *s = spec;
    while (*s) {
        const char *c = strchr(s, ',');
        size_t n = c ? (size_t)(c - s) : strlen(s);
        while (n && (*s == ' ' || *s == '\t')) { s++; n--; }
        while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
        char t[DN_REVIEW_MAX_LABEL + 16];
        if (!n) {
            dn_review_policy_free(p);
            return dn_fail(DN_ERR_ARG, "%s: empty term in '%.80s'", who, spec);
        }
        if (n >= sizeof t) {
            dn_review_policy_free(p);
            return dn_fail(DN_ERR_ARG, "%s: term '%.40s...' too long", who, s);
        }
        memcpy(t, s, n);
        t[n] = 0;
        dn_status rc = parse_term(t, who, p);
        if (rc) { dn_review_policy_free(p); return rc; }
        if (!c) break;
        s = c + 1;
        if (!*s) {
            dn_review_policy_free(p);
            return dn_fail(DN_ERR_ARG, "%s: empty term at the end of '%.80s'", who, spec);
        }
    }
    return DN_OK;
}

static int class_index(const dn_model *m, const char *name) {
    for (int i = 0; i < m->num_classes; i++)
        if (!strcmp(m->class_names[i], name)) return i;
    return -1;
}

dn_status dn_review_policy_check(const dn_review_policy *p, const dn_model *m, const char *who) {
    for (int i = 0; i < p->nclasses; i++)
        if (class_index(m, p->classes[i]) < 0)
            return dn_fail(DN_ERR_ARG, "%s: class '%s' is not a class of the model", who, p->classes[i]);
    return DN_OK;
}

/* splitmix64: a well-mixed hash of the prediction id for sampling. */
static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

const char *dn_review_reason(const dn_review_policy *p, int64_t id, int decision, const char *cls) {
    if (!p) return NULL;
    if (decision >= 0 && decision <= DN_DECISION_UNKNOWN && (p->decisions & (1 << decision)))
        return dn_decision_name(decision);
    for (int i = 0; cls && i < p->nclasses; i++)
        if (!strcmp(p->classes[i], cls)) return "class";
    if (p->sample > 0 && decision == DN_DECISION_ACCEPTED &&
        (double)(mix64((uint64_t)id) >> 11) * 0x1.0p-53 < p->sample)
        return "sample";
    return NULL;
}

static int err_out(char *err, size_t en, const char *fmt, const char *a) {
    snprintf(err, en, fmt, a);
    return DN_ERR_ARG;
}

dn_status dn_review_parse_post(const char *body, size_t len, const dn_model *m, char label[DN_REVIEW_MAX_LABEL],
                               char reviewer[DN_REVIEW_MAX_LABEL], char *err, size_t errn) {
    label[0] = reviewer[0] = 0;
    if (!body || !len) return err_out(err, errn, "%sempty body: expected {\"label\":...,\"reviewer\":...}", "");
    if (len > DN_REVIEW_MAX_POST) return err_out(err, errn, "%sbody larger than 4096 bytes", "");
    char perr[160];
    dn_json *j = dn_json_parse(body, len, perr, sizeof perr);
    if (!j) return err_out(err, errn, "bad JSON: %s", perr);
    dn_status rc = DN_ERR_ARG;
    if (dn_json_type_of(j) != DN_JSON_OBJ) { err_out(err, errn, "%sexpected a JSON object", ""); goto done; }
    for (size_t i = 0; i < dn_json_len(j); i++) {
        const char *k = dn_json_key_at(j, i);
        if (strcmp(k, "label") && strcmp(k, "reviewer")) {
            err_out(err, errn, "unknown key '%.40s' (expected label, reviewer)", k);
            goto done;
        }
    }
    const dn_json *jl = dn_json_get(j, "label"), *jr = dn_json_get(j, "reviewer");
    if (!jl) { err_out(err, errn, "%slabel: missing", ""); goto done; }
    if (dn_json_type_of(jl) != DN_JSON_STR) { err_out(err, errn, "%slabel: expected a string", ""); goto done; }
    if (!jr) { err_out(err, errn, "%sreviewer: missing", ""); goto done; }
    if (dn_json_type_of(jr) != DN_JSON_STR) { err_out(err, errn, "%sreviewer: expected a string", ""); goto done; }
    const char *l = dn_json_str(jl, ""), *r = dn_json_str(jr, "");
    if (class_index(m, l) < 0) { err_out(err, errn, "label '%.60s' is not a class of the model", l); goto done; }
    size_t rl = strlen(r);
    if (rl < 1 || rl > 64) { err_out(err, errn, "%sreviewer: expected 1..64 characters", ""); goto done; }
    for (const unsigned char *q = (const unsigned char *)r; *q; q++)
        if (*q < 0x20 || *q == 0x7f) { err_out(err, errn, "%sreviewer: control characters", ""); goto done; }
    snprintf(label, DN_REVIEW_MAX_LABEL, "%s", l);
    snprintf(reviewer, DN_REVIEW_MAX_LABEL, "%s", r);
    rc = DN_OK;
done:
    dn_json_free(j);
    return rc;
}

void dn_review_neighbours(const dn_model *m, const float *feat, int k, dn_review_nb *nb, int *n) {
    *n = 0;
    const dn_ood *o = m->ood;
    if (!o || !o->bank || o->nbank < 1 || o->dim != m->feat_dim || k < 1) return;
    if (k > DN_REVIEW_MAX_NEIGHBOURS) k = DN_REVIEW_MAX_NEIGHBOURS;
    if (k > o->nbank) k = o->nbank;
    double nn = 0;
    for (int i = 0; i < o->dim; i++) nn += (double)feat[i] * feat[i];
    double inv = nn > 0 ? 1.0 / sqrt(nn) : 0;
    int have = 0;
    for (int r = 0; r < o->nbank; r++) {
        const uint16_t *b = o->bank + (size_t)r * o->dim; /* fp16 rows */
        double dot = 0;
        for (int i = 0; i < o->dim; i++) dot += (double)feat[i] * dn_f16_to_f32(b[i]);
        float d = (float)(1.0 - dot * inv);
        if (have == k && d >= nb[k - 1].distance) continue;
        int at = have < k ? have++ : k - 1;
        while (at > 0 && nb[at - 1].distance > d) { nb[at] = nb[at - 1]; at--; }
        nb[at].row = r;
        nb[at].cls = o->bank_y ? o->bank_y[r] : -1;
        nb[at].distance = d;
    }
    *n = have;
}
