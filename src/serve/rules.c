/* Rules file parser and per-prediction condition matching (format: docs/rules.md).
 * Every parse error is one line: "<file>: rule '<name>': <problem>". */
#include "serve/rules.h"
#include "core/core.h"
#include "core/json.h"
#include "trust/review.h"
#include "trust/drift.h"
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

#define DN_RULES_MAX_FILE (16u * 1024u * 1024u)

/* ------------------------------------------------------------ freeing */

static void free_strv(char **v) {
    if (!v) return;
    for (char **p = v; *p; p++) free(*p);
    free(v);
}

static void free_action(dn_action_def *a) {
    free(a->target); free(a->key);
    free_strv(a->argv);
    free(a->url); free_strv(a->headers); free(a->ca_file);
    free(a->host); free(a->topic); free(a->client_id); free(a->username); free(a->password);
}

static void free_rule(dn_rule *r) {
    free(r->name);
    free_strv(r->classes); free_strv(r->lines); free_strv(r->stations); free_strv(r->cameras);
    for (int i = 0; i < r->nactions; i++) free_action(&r->actions[i]);
    free(r->actions);
}

void dn_rules_free(dn_rules *r) {
    if (!r) return;
    if (atomic_fetch_sub(&r->refs, 1) != 1) return;
    for (int i = 0; i < r->n; i++) free_rule(&r->rules[i]);
    free(r->rules);
    free(r->name);
    free(r->review);
    free(r);
}

dn_rules *dn_rules_retain(const dn_rules *r) {
    dn_rules *m = (dn_rules *)r; /* the refcount is the only mutable field */
    atomic_fetch_add(&m->refs, 1);
    return m;
}

int dn_rules_count(const dn_rules *r) { return r ? r->n : 0; }
const char *dn_rules_name(const dn_rules *r, int i) {
    return r && i >= 0 && i < r->n ? r->rules[i].name : NULL;
}

/* ------------------------------------------------------------ parsing */

typedef struct {
    const char *file;
    char rule[160];   /* "rule 'name'" or "rule 3" */
    char where[64];   /* "" or ": action 2 (webhook)" */
} pctx;

#define PFAIL(pc, ...) pfail(pc, __VA_ARGS__)
static dn_status pfail(const pctx *pc, const char *fmt, ...) DN_PRINTF(2, 3);
static dn_status pfail(const pctx *pc, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return dn_fail(DN_ERR_FORMAT, "%s: %s%s: %s", pc->file, pc->rule, pc->where, msg);
}

static const char *type_name(dn_json_type t) {
    switch (t) {
    case DN_JSON_NULL: return "null";
    case DN_JSON_BOOL: return "a boolean";
    case DN_JSON_NUM: return "a number";
    case DN_JSON_STR: return "a string";
    case DN_JSON_ARR: return "an array";
    case DN_JSON_OBJ: return "an object";
    }
    return "?";
}

/* A string or an array of non-empty strings -> NULL-terminated set. */
static dn_status get_strset(const pctx *pc, const dn_json *v, const char *key, char ***out) {
    *out = NULL;
    size_t n = dn_json_type_of(v) == DN_JSON_STR ? 1 : dn_json_len(v);
    if (dn_json_type_of(v) != DN_JSON_STR && dn_json_type_of(v) != DN_JSON_ARR)
        return PFAIL(pc, "\"%s\" must be a string or an array of strings, not %s", key,
                     type_name(dn_json_type_of(v)));
    if (n == 0) return PFAIL(pc, "\"%s\" is an empty array", key);
    if (n > 4096) return PFAIL(pc, "\"%s\" has too many entries (%zu)", key, n);
    char **set = dn_calloc(n + 1, sizeof *set);
    if (!set) return DN_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const dn_json *e = dn_json_type_of(v) == DN_JSON_STR ? v : dn_json_at(v, i);
        if (dn_json_type_of(e) != DN_JSON_STR || !*dn_json_str(e, "")) {
            free_strv(set);
            return PFAIL(pc, "\"%s\" entry %zu must be a non-empty string", key, i + 1);
        }
        if (!(set[i] = dn_strdup(dn_json_str(e, "")))) { free_strv(set); return DN_ERR_NOMEM; }
    }
    *out = set;
    return DN_OK;
}

static dn_status get_num(const pctx *pc, const dn_json *v, const char *key, double lo, double hi,
                         double *out) {
    if (dn_json_type_of(v) != DN_JSON_NUM)
        return PFAIL(pc, "\"%s\" must be a number, not %s", key, type_name(dn_json_type_of(v)));
    double x = dn_json_num(v, 0);
    if (!(x >= lo && x <= hi)) return PFAIL(pc, "\"%s\" = %g is outside [%g, %g]", key, x, lo, hi);
    *out = x;
    return DN_OK;
}

static dn_status get_int(const pctx *pc, const dn_json *v, const char *key, int lo, int hi, int *out) {
    double x = 0;
    dn_status st = get_num(pc, v, key, lo, hi, &x);
    if (st) return st;
    if (x != floor(x)) return PFAIL(pc, "\"%s\" = %g must be an integer", key, x);
    *out = (int)x;
    return DN_OK;
}

static dn_status get_bool(const pctx *pc, const dn_json *v, const char *key, int *out) {
    if (dn_json_type_of(v) != DN_JSON_BOOL)
        return PFAIL(pc, "\"%s\" must be true or false, not %s", key, type_name(dn_json_type_of(v)));
    *out = dn_json_bool(v, 0);
    return DN_OK;
}

static dn_status get_str(const pctx *pc, const dn_json *v, const char *key, char **out) {
    if (dn_json_type_of(v) != DN_JSON_STR)
        return PFAIL(pc, "\"%s\" must be a string, not %s", key, type_name(dn_json_type_of(v)));
    const char *s = dn_json_str(v, "");
    if (!*s) return PFAIL(pc, "\"%s\" is empty", key);
    free(*out);
    *out = dn_strdup(s);
    return *out ? DN_OK : DN_ERR_NOMEM;
}

/* Known placeholders in MQTT topic templates. */
static const char *const k_fields[] = {"line", "station", "camera", "part", "class", "rule"};

static dn_status check_topic(const pctx *pc, const char *t) {
    for (const char *p = t; *p; p++) {
        if (*p == '+' || *p == '#') return PFAIL(pc, "topic \"%s\" contains the wildcard '%c'", t, *p);
        if (*p == '{') {
            const char *e = strchr(p, '}');
            if (!e) return PFAIL(pc, "topic \"%s\" has an unclosed '{'", t);
            size_t n = (size_t)(e - p - 1);
            int ok = 0;
            for (size_t k = 0; k < sizeof k_fields / sizeof *k_fields; k++)
                if (strlen(k_fields[k]) == n && !strncmp(p + 1, k_fields[k], n)) ok = 1;
            if (!ok)
                return PFAIL(pc, "topic \"%s\": unknown placeholder {%.*s} (known: {line} {station} "
                                 "{camera} {part} {class} {rule})", t, (int)n, p + 1);
            p = e;
        }
    }
    return DN_OK;
}

/* "mqtt://host[:port]" (also "tcp://") -> host, port. */
static dn_status parse_broker(const pctx *pc, const char *b, char **host, int *port) {
    const char *p = b;
    if (!strncmp(p, "mqtt://", 7)) p += 7;
    else if (!strncmp(p, "tcp://", 6)) p += 6;
    else if (strstr(p, "://"))
        return PFAIL(pc, "broker \"%s\": only mqtt://host[:port] is supported", b);
    const char *colon = strrchr(p, ':');
    const char *end = p + strlen(p);
    if (end > p && end[-1] == '/') end--;
    *port = 1883;
    if (colon && colon < end && !strchr(colon, ']')) {
        char *e;
        long v = strtol(colon + 1, &e, 10);
        if (e != end || v < 1 || v > 65535) return PFAIL(pc, "broker \"%s\": bad port", b);
        *port = (int)v;
        end = colon;
    }
    if (end == p) return PFAIL(pc, "broker \"%s\": missing host", b);
    if (*p == '[' && end[-1] == ']') { p++; end--; }
    *host = dn_strndup(p, (size_t)(end - p));
    return *host ? DN_OK : dn_fail(DN_ERR_NOMEM, "out of memory");
}

static char *join_argv(char **argv) {
    dn_sb b = {0};
    for (char **p = argv; *p; p++) {
        if (p != argv) dn_sb_puts(&b, " ");
        if (strpbrk(*p, " \t'\"\\") || !**p) dn_sb_json_str(&b, *p);
        else dn_sb_puts(&b, *p);
    }
    if (b.oom) { dn_sb_free(&b); return NULL; }
    return b.s;
}

static dn_status parse_action(pctx *pc, const dn_json *j, dn_action_def *a) {
    dn_status st = DN_OK;
    if (dn_json_type_of(j) != DN_JSON_OBJ)
        return PFAIL(pc, "must be an object, not %s", type_name(dn_json_type_of(j)));
    const dn_json *tv = dn_json_get(j, "type");
    if (!tv) return PFAIL(pc, "missing \"type\" (command, webhook or mqtt)");
    const char *type = dn_json_str(tv, "");
    if (dn_json_type_of(tv) != DN_JSON_STR) return PFAIL(pc, "\"type\" must be a string");
    if (!strcmp(type, "command")) { a->kind = DN_ACT_COMMAND; a->timeout_s = 10; }
    else if (!strcmp(type, "webhook")) { a->kind = DN_ACT_WEBHOOK; a->timeout_s = 5; }
    else if (!strcmp(type, "mqtt")) { a->kind = DN_ACT_MQTT; a->timeout_s = 5; }
    else return PFAIL(pc, "unknown action type \"%s\" (command, webhook or mqtt)", type);
    a->kind_name = a->kind == DN_ACT_COMMAND ? "command" : a->kind == DN_ACT_WEBHOOK ? "webhook" : "mqtt";
    size_t wl = strlen(pc->where);
    snprintf(pc->where + wl, sizeof pc->where - wl, " (%s)", a->kind_name);
    a->retries = 2; a->backoff_s = 0.5; a->backoff_max_s = 30;
    a->qos = 1; a->keepalive_s = 30;
    char *shell = NULL;
    for (size_t i = 0; i < dn_json_len(j) && !st; i++) {
        const char *k = dn_json_key_at(j, i);
        const dn_json *v = dn_json_at(j, i);
        if (!strcmp(k, "type")) continue;
        else if (!strcmp(k, "timeout_s")) st = get_num(pc, v, k, 0.001, 3600, &a->timeout_s);
        else if (!strcmp(k, "retries")) st = get_int(pc, v, k, 0, 100, &a->retries);
        else if (!strcmp(k, "backoff_s")) st = get_num(pc, v, k, 0, 3600, &a->backoff_s);
        else if (!strcmp(k, "backoff_max_s")) st = get_num(pc, v, k, 0, 86400, &a->backoff_max_s);
        else if (a->kind == DN_ACT_COMMAND && !strcmp(k, "argv")) {
            if (dn_json_type_of(v) != DN_JSON_ARR)
                st = PFAIL(pc, "\"argv\" must be an array of strings, not %s", type_name(dn_json_type_of(v)));
            else if ((st = get_strset(pc, v, k, &a->argv)) == DN_OK) { /* ok */ }
        } else if (a->kind == DN_ACT_COMMAND && !strcmp(k, "shell")) st = get_str(pc, v, k, &shell);
        else if (a->kind == DN_ACT_WEBHOOK && !strcmp(k, "url")) st = get_str(pc, v, k, &a->url);
        else if (a->kind == DN_ACT_WEBHOOK && !strcmp(k, "headers")) {
            if (dn_json_type_of(v) != DN_JSON_OBJ) {
                st = PFAIL(pc, "\"headers\" must be an object of strings, not %s", type_name(dn_json_type_of(v)));
                break;
            }
            size_t n = dn_json_len(v);
            if (!(a->headers = dn_calloc(n + 1, sizeof(char *)))) { st = DN_ERR_NOMEM; break; }
            for (size_t h = 0; h < n && !st; h++) {
                const char *hk = dn_json_key_at(v, h);
                const dn_json *hv = dn_json_at(v, h);
                if (!*hk || strpbrk(hk, ": \t\r\n")) st = PFAIL(pc, "bad header name \"%s\"", hk);
                else if (dn_json_type_of(hv) != DN_JSON_STR)
                    st = PFAIL(pc, "header \"%s\" must be a string, not %s", hk, type_name(dn_json_type_of(hv)));
                else if (strpbrk(dn_json_str(hv, ""), "\r\n"))
                    st = PFAIL(pc, "header \"%s\" contains a line break", hk);
                else {
                    dn_sb b = {0};
                    dn_sb_printf(&b, "%s: %s", hk, dn_json_str(hv, ""));
                    if (b.oom) { dn_sb_free(&b); st = DN_ERR_NOMEM; }
                    else a->headers[h] = b.s;
                }
            }
        } else if (a->kind == DN_ACT_WEBHOOK && !strcmp(k, "ca_file")) {
            if (!(st = get_str(pc, v, k, &a->ca_file)) && access(a->ca_file, R_OK))
                st = PFAIL(pc, "ca_file \"%s\": %s", a->ca_file, strerror(errno));
        } else if (a->kind == DN_ACT_MQTT && !strcmp(k, "broker")) {
            char *b = NULL;
            if (!(st = get_str(pc, v, k, &b))) st = parse_broker(pc, b, &a->host, &a->port);
            free(b);
        } else if (a->kind == DN_ACT_MQTT && !strcmp(k, "topic")) {
            if (!(st = get_str(pc, v, k, &a->topic))) st = check_topic(pc, a->topic);
        } else if (a->kind == DN_ACT_MQTT && !strcmp(k, "qos")) st = get_int(pc, v, k, 0, 2, &a->qos);
        else if (a->kind == DN_ACT_MQTT && !strcmp(k, "retain")) st = get_bool(pc, v, k, &a->retain);
        else if (a->kind == DN_ACT_MQTT && !strcmp(k, "keepalive_s")) st = get_int(pc, v, k, 5, 3600, &a->keepalive_s);
        else if (a->kind == DN_ACT_MQTT && !strcmp(k, "client_id")) st = get_str(pc, v, k, &a->client_id);
        else if (a->kind == DN_ACT_MQTT && !strcmp(k, "username")) st = get_str(pc, v, k, &a->username);
        else if (a->kind == DN_ACT_MQTT && !strcmp(k, "password")) st = get_str(pc, v, k, &a->password);
        else st = PFAIL(pc, "unknown %s action field \"%s\"", a->kind_name, k);
    }
    if (st) { free(shell); return st; }
    dn_sb key = {0};
    switch (a->kind) {
    case DN_ACT_COMMAND:
        if (shell && a->argv) { free(shell); return PFAIL(pc, "give either \"argv\" or \"shell\", not both"); }
        if (!shell && !a->argv) return PFAIL(pc, "missing \"argv\" (or \"shell\")");
        if (shell) {
            a->argv = dn_calloc(4, sizeof(char *));
            if (!a->argv) { free(shell); return DN_ERR_NOMEM; }
            /* all three or none: argv is freed up to its first NULL */
            char *sh = dn_strdup("/bin/sh"), *dash_c = dn_strdup("-c");
            if (!sh || !dash_c) {
                free(sh);
                free(dash_c);
                free(shell);
                return dn_fail(DN_ERR_NOMEM, "out of memory");
            }
            a->argv[0] = sh;
            a->argv[1] = dash_c;
            a->argv[2] = shell;
        }
        a->target = join_argv(a->argv);
        dn_sb_printf(&key, "command\n%s", a->target ? a->target : "");
        break;
    case DN_ACT_WEBHOOK:
        if (!a->url) return PFAIL(pc, "missing \"url\"");
        if (strncmp(a->url, "http://", 7) && strncmp(a->url, "https://", 8))
            return PFAIL(pc, "url \"%s\" must start with http:// or https://", a->url);
        a->target = dn_strdup(a->url);
        dn_sb_printf(&key, "webhook\n%s", a->url);
        break;
    case DN_ACT_MQTT:
        if (!a->host) return PFAIL(pc, "missing \"broker\" (mqtt://host:port)");
        if (!a->topic) return PFAIL(pc, "missing \"topic\"");
        {
            dn_sb t = {0};
            dn_sb_printf(&t, "mqtt://%s:%d %s", a->host, a->port, a->topic);
            a->target = t.oom ? (dn_sb_free(&t), NULL) : t.s;
        }
        /* one connection (queue) per broker + identity */
        dn_sb_printf(&key, "mqtt\n%s\n%d\n%s\n%s\n%s", a->host, a->port, a->client_id ? a->client_id : "",
                     a->username ? a->username : "", a->password ? a->password : "");
        break;
    }
    if (key.oom || !a->target) { dn_sb_free(&key); return dn_fail(DN_ERR_NOMEM, "out of memory"); }
    a->key = key.s;
    return DN_OK;
}

/* "drift": {"signal": "ood_score", "psi_above": 0.2} */
static dn_status get_drift(const pctx *pc, const dn_json *v, dn_rule *r) {
    if (dn_json_type_of(v) != DN_JSON_OBJ)
        return PFAIL(pc, "\"drift\" must be an object {\"signal\": S, \"psi_above\": X}, not %s", type_name(dn_json_type_of(v)));
    const dn_json *sv = dn_json_get(v, "signal"), *av = dn_json_get(v, "psi_above");
    if (!sv || !av || dn_json_len(v) != 2) return PFAIL(pc, "\"drift\" needs exactly \"signal\" and \"psi_above\"");
    const char *s = dn_json_str(sv, NULL);
    if (!s || (r->drift_signal = dn_drift_signal_parse(s)) < 0)
        return PFAIL(pc, "\"drift.signal\": unknown signal \"%s\" (known: %s)", s ? s : "(not a string)", dn_drift_signal_list());
    dn_status st = get_num(pc, av, "drift.psi_above", 0, 100, &r->drift_psi_above);
    if (!st && !(r->drift_psi_above > 0)) st = PFAIL(pc, "\"drift.psi_above\" must be above 0");
    return st;
}

/* "decision": "unknown" or ["unknown", "uncertain"] -> bit set over dn_decision. */
static dn_status get_decisions(const pctx *pc, const dn_json *v, unsigned *out) {
    char **set = NULL;
    dn_status st = get_strset(pc, v, "decision", &set);
    if (st) return st;
    *out = 0;
    for (char **p = set; *p && !st; p++) {
        int d = dn_decision_parse(*p);
        if (d < 0) st = PFAIL(pc, "\"decision\": unknown value \"%s\" (known: accepted, uncertain, unknown)", *p);
        else *out |= 1u << d;
    }
    free_strv(set);
    return st;
}

static dn_status parse_when(pctx *pc, const dn_json *w, dn_rule *r) {
    if (dn_json_type_of(w) != DN_JSON_OBJ)
        return PFAIL(pc, "\"when\" must be an object, not %s", type_name(dn_json_type_of(w)));
    dn_status st = DN_OK;
    for (size_t i = 0; i < dn_json_len(w) && !st; i++) {
        const char *k = dn_json_key_at(w, i);
        const dn_json *v = dn_json_at(w, i);
        if (!strcmp(k, "class")) { free_strv(r->classes); st = get_strset(pc, v, k, &r->classes); }
        else if (!strcmp(k, "line")) { free_strv(r->lines); st = get_strset(pc, v, k, &r->lines); }
        else if (!strcmp(k, "station")) { free_strv(r->stations); st = get_strset(pc, v, k, &r->stations); }
        else if (!strcmp(k, "camera")) { free_strv(r->cameras); st = get_strset(pc, v, k, &r->cameras); }
        else if (!strcmp(k, "min_confidence")) { r->has_min = 1; st = get_num(pc, v, k, 0, 1, &r->min_conf); }
        else if (!strcmp(k, "max_confidence")) { r->has_max = 1; st = get_num(pc, v, k, 0, 1, &r->max_conf); }
        else if (!strcmp(k, "uncertain")) st = get_bool(pc, v, k, &r->uncertain);
        else if (!strcmp(k, "decision")) st = get_decisions(pc, v, &r->decisions);
        else if (!strcmp(k, "drift")) st = get_drift(pc, v, r);
        else if (!strcmp(k, "n_of_last")) {
            if (dn_json_type_of(v) != DN_JSON_OBJ)
                return PFAIL(pc, "\"n_of_last\" must be an object {\"n\": N, \"m\": M}, not %s",
                             type_name(dn_json_type_of(v)));
            const dn_json *nv = dn_json_get(v, "n"), *mv = dn_json_get(v, "m");
            if (!nv || !mv || dn_json_len(v) != 2) return PFAIL(pc, "\"n_of_last\" needs exactly \"n\" and \"m\"");
            if ((st = get_int(pc, mv, "n_of_last.m", 1, DN_RULES_MAX_M, &r->m))) return st;
            if ((st = get_int(pc, nv, "n_of_last.n", 1, r->m, &r->n))) return st;
        } else if (!strcmp(k, "rate")) {
            if (dn_json_type_of(v) != DN_JSON_OBJ)
                return PFAIL(pc, "\"rate\" must be an object {\"above_per_hour\": X, ...}, not %s",
                             type_name(dn_json_type_of(v)));
            const dn_json *av = dn_json_get(v, "above_per_hour");
            if (!av) return PFAIL(pc, "\"rate\" needs \"above_per_hour\"");
            r->rate_window_s = 3600;
            r->rate_per_line = 1;
            for (size_t q = 0; q < dn_json_len(v) && !st; q++) {
                const char *rk = dn_json_key_at(v, q);
                const dn_json *rv = dn_json_at(v, q);
                if (!strcmp(rk, "above_per_hour")) st = get_num(pc, rv, "rate.above_per_hour", 0, 1e9, &r->rate_above);
                else if (!strcmp(rk, "window_s")) st = get_num(pc, rv, "rate.window_s", 1, 7 * 86400.0, &r->rate_window_s);
                else if (!strcmp(rk, "per_line")) st = get_bool(pc, rv, "rate.per_line", &r->rate_per_line);
                else st = PFAIL(pc, "unknown field \"rate.%s\"", rk);
            }
            if (st) return st;
            double keep = floor(r->rate_above * r->rate_window_s / 3600.0) + 1;
            if (keep > DN_RULES_MAX_RATE_EVENTS)
                return PFAIL(pc, "\"rate\": above_per_hour * window_s / 3600 exceeds %d events",
                             DN_RULES_MAX_RATE_EVENTS);
            r->rate_keep = (int)keep;
        } else
            st = PFAIL(pc, "unknown condition \"%s\" (known: class, min_confidence, max_confidence, "
                           "uncertain, decision, line, station, camera, n_of_last, rate, drift)", k);
    }
    if (!st && r->has_min && r->has_max && r->min_conf > r->max_conf)
        st = PFAIL(pc, "min_confidence %g > max_confidence %g (never matches)", r->min_conf, r->max_conf);
    return st;
}

static dn_status parse_rule(pctx *pc, const dn_json *j, int idx, dn_rule *r) {
    dn_status st = DN_OK;
    r->uncertain = -1;
    r->rate_above = -1;
    r->drift_signal = -1;
    r->enabled = 1;
    snprintf(pc->rule, sizeof pc->rule, "rule %d", idx + 1);
    pc->where[0] = 0;
    if (dn_json_type_of(j) != DN_JSON_OBJ)
        return PFAIL(pc, "must be an object, not %s", type_name(dn_json_type_of(j)));
    const dn_json *nv = dn_json_get(j, "name");
    if (!nv) return PFAIL(pc, "missing \"name\"");
    if ((st = get_str(pc, nv, "name", &r->name))) return st;
    snprintf(pc->rule, sizeof pc->rule, "rule '%.120s'", r->name);
    const dn_json *w = dn_json_get(j, "when"), *acts = dn_json_get(j, "actions");
    if (!w) return PFAIL(pc, "missing \"when\" (use {} to match every prediction)");
    if (!acts) return PFAIL(pc, "missing \"actions\"");
    for (size_t i = 0; i < dn_json_len(j); i++) {
        const char *k = dn_json_key_at(j, i);
        const dn_json *v = dn_json_at(j, i);
        if (!strcmp(k, "name") || !strcmp(k, "when") || !strcmp(k, "actions")) continue;
        if (!strcmp(k, "cooldown_s")) st = get_num(pc, v, k, 0, 30 * 86400.0, &r->cooldown_s);
        else if (!strcmp(k, "cooldown_per_line")) st = get_bool(pc, v, k, &r->cooldown_per_line);
        else if (!strcmp(k, "enabled")) st = get_bool(pc, v, k, &r->enabled);
        else if (!strcmp(k, "description")) {
            if (dn_json_type_of(v) != DN_JSON_STR) st = PFAIL(pc, "\"description\" must be a string");
        } else st = PFAIL(pc, "unknown rule field \"%s\" (known: name, description, when, actions, cooldown_s, cooldown_per_line, enabled)", k);
        if (st) return st;
    }
    if ((st = parse_when(pc, w, r))) return st;
    if (dn_json_type_of(acts) != DN_JSON_ARR)
        return PFAIL(pc, "\"actions\" must be an array, not %s", type_name(dn_json_type_of(acts)));
    size_t na = dn_json_len(acts);
    if (na == 0) return PFAIL(pc, "\"actions\" is empty");
    if (na > DN_RULES_MAX_ACTIONS) return PFAIL(pc, "more than %d actions", DN_RULES_MAX_ACTIONS);
    if (!(r->actions = dn_calloc(na, sizeof *r->actions))) return DN_ERR_NOMEM;
    for (size_t i = 0; i < na; i++) {
        snprintf(pc->where, sizeof pc->where, ": action %zu", i + 1);
        r->nactions = (int)i + 1;
        st = parse_action(pc, dn_json_at(acts, i), &r->actions[i]);
        if (st) return st;
    }
    pc->where[0] = 0;
    return DN_OK;
}

dn_status dn_rules_parse(const char *text, size_t len, const char *name, dn_rules **out) {
    *out = NULL;
    if (!name) name = "rules";
    char err[256];
    dn_json *root = dn_json_parse(text, len, err, sizeof err);
    if (!root) return dn_fail(DN_ERR_FORMAT, "%s: invalid JSON: %s", name, err);
    dn_status st = DN_OK;
    pctx pc = {.file = name};
    dn_rules *rs = dn_calloc(1, sizeof *rs);
    if (!rs) { dn_json_free(root); return DN_ERR_NOMEM; }
    atomic_init(&rs->refs, 1);
    rs->queue_capacity = 256;
    rs->drain_s = 5;
    if (!(rs->name = dn_strdup(name))) { st = DN_ERR_NOMEM; goto fail; }
    if (dn_json_type_of(root) != DN_JSON_OBJ) {
        st = dn_fail(DN_ERR_FORMAT, "%s: top level must be an object {\"rules\": [...]}, not %s", name,
                     type_name(dn_json_type_of(root)));
        goto fail;
    }
    const dn_json *rules = NULL;
    for (size_t i = 0; i < dn_json_len(root); i++) {
        const char *k = dn_json_key_at(root, i);
        const dn_json *v = dn_json_at(root, i);
        if (!strcmp(k, "rules")) rules = v;
        else if (!strcmp(k, "version")) {
            if (dn_json_type_of(v) != DN_JSON_NUM || dn_json_num(v, 0) != 1) {
                st = dn_fail(DN_ERR_FORMAT, "%s: unsupported \"version\" (this build reads version 1)", name);
                goto fail;
            }
        } else if (!strcmp(k, "queue_capacity")) {
            double q = dn_json_num(v, -1);
            if (dn_json_type_of(v) != DN_JSON_NUM || q != floor(q) || q < 1 || q > DN_RULES_MAX_QUEUE) {
                st = dn_fail(DN_ERR_FORMAT, "%s: \"queue_capacity\" must be an integer in [1, %d]", name,
                             DN_RULES_MAX_QUEUE);
                goto fail;
            }
            rs->queue_capacity = (int)q;
        } else if (!strcmp(k, "drain_s")) {
            double d = dn_json_num(v, -1);
            if (dn_json_type_of(v) != DN_JSON_NUM || !(d >= 0 && d <= 3600)) {
                st = dn_fail(DN_ERR_FORMAT, "%s: \"drain_s\" must be a number in [0, 3600]", name);
                goto fail;
            }
            rs->drain_s = d;
        } else if (!strcmp(k, "review")) { /* serve's review queue policy (docs/review.md) */
            char who[300];
            snprintf(who, sizeof who, "%s: \"review\"", name);
            dn_review_policy rp;
            if (dn_json_type_of(v) != DN_JSON_STR) {
                st = dn_fail(DN_ERR_FORMAT, "%s must be a string like \"uncertain,unknown,cap:100/h\"", who);
                goto fail;
            }
            if ((st = dn_review_policy_parse(dn_json_str(v, ""), who, &rp))) goto fail;
            dn_review_policy_free(&rp);
            if (!(rs->review = dn_strdup(dn_json_str(v, "")))) { st = DN_ERR_NOMEM; goto fail; }
        } else {
            st = dn_fail(DN_ERR_FORMAT, "%s: unknown top-level field \"%s\" (known: version, queue_capacity, drain_s, review, rules)",
                         name, k);
            goto fail;
        }
    }
    if (!rules || dn_json_type_of(rules) != DN_JSON_ARR) {
        st = dn_fail(DN_ERR_FORMAT, "%s: missing \"rules\" array", name);
        goto fail;
    }
    size_t n = dn_json_len(rules);
    if (n > DN_RULES_MAX_RULES) {
        st = dn_fail(DN_ERR_FORMAT, "%s: too many rules (%zu > %d)", name, n, DN_RULES_MAX_RULES);
        goto fail;
    }
    if (!(rs->rules = dn_calloc(n ? n : 1, sizeof *rs->rules))) { st = DN_ERR_NOMEM; goto fail; }
    for (size_t i = 0; i < n; i++) {
        rs->n = (int)i + 1;
        if ((st = parse_rule(&pc, dn_json_at(rules, i), (int)i, &rs->rules[i]))) goto fail;
        for (size_t k = 0; k < i; k++)
            if (!strcmp(rs->rules[k].name, rs->rules[i].name)) {
                st = PFAIL(&pc, "duplicate rule name (also rule %zu)", k + 1);
                goto fail;
            }
    }
    dn_json_free(root);
    *out = rs;
    return DN_OK;
fail:
    if (st == DN_ERR_NOMEM) dn_fail(DN_ERR_NOMEM, "%s: out of memory", name);
    dn_json_free(root);
    dn_rules_free(rs);
    return st;
}

dn_status dn_rules_load(const char *path, dn_rules **out) {
    *out = NULL;
    uint8_t *data;
    size_t len;
    dn_status st = dn_read_file(path, DN_RULES_MAX_FILE, &data, &len);
    if (st) return st;
    st = dn_rules_parse((const char *)data, len, path, out);
    free(data);
    return st;
}

/* ------------------------------------------------------------ matching */

static int in_set(char *const *set, const char *v) {
    if (!set) return 1;
    if (!v) return 0;
    for (; *set; set++)
        if (!strcmp(*set, v)) return 1;
    return 0;
}

int dn_pred_event_decision(const dn_pred_event *ev) {
    if (ev->decision == DN_DECISION_UNKNOWN) return DN_DECISION_UNKNOWN;
    return ev->uncertain || ev->decision == DN_DECISION_UNCERTAIN ? DN_DECISION_UNCERTAIN : DN_DECISION_ACCEPTED;
}

int dn_rule_match_event(const dn_rule *r, const dn_pred_event *ev) {
    if (!r->enabled) return 0;
    if (!in_set(r->classes, ev->cls)) return 0;
    if (r->has_min && !(ev->confidence >= r->min_conf)) return 0;
    if (r->has_max && !(ev->confidence <= r->max_conf)) return 0;
    if (r->uncertain >= 0 && (ev->uncertain != 0) != r->uncertain) return 0;
    if (r->decisions && !(r->decisions & (1u << dn_pred_event_decision(ev)))) return 0;
    if (!in_set(r->lines, ev->line)) return 0;
    if (!in_set(r->stations, ev->station)) return 0;
    if (!in_set(r->cameras, ev->camera)) return 0;
    if (r->drift_signal >= 0) { /* once per crossing: below (or not ready) before, above now */
        if (!ev->drift_now || !ev->drift_prev) return 0;
        float now = ev->drift_now[r->drift_signal], prev = ev->drift_prev[r->drift_signal], thr = (float)r->drift_psi_above;
        if (!(now > thr) || prev > thr) return 0; /* compared as float: the PSI values are */
    }
    return 1;
}

void dn_rule_expand_topic(const char *tmpl, const dn_rule *r, const dn_pred_event *ev, char *out, size_t cap) {
    size_t o = 0;
    if (!cap) return;
    for (const char *p = tmpl; *p && o + 1 < cap; p++) {
        const char *val = NULL;
        const char *e = *p == '{' ? strchr(p, '}') : NULL;
        if (e) {
            size_t n = (size_t)(e - p - 1);
            int known = 1;
            if (n == 4 && !strncmp(p + 1, "line", 4)) val = ev->line;
            else if (n == 7 && !strncmp(p + 1, "station", 7)) val = ev->station;
            else if (n == 6 && !strncmp(p + 1, "camera", 6)) val = ev->camera;
            else if (n == 4 && !strncmp(p + 1, "part", 4)) val = ev->part;
            else if (n == 5 && !strncmp(p + 1, "class", 5)) val = ev->cls;
            else if (n == 4 && !strncmp(p + 1, "rule", 4)) val = r->name;
            else known = 0;
            if (known) {
                if (!val || !*val) val = "none";
                for (const char *s = val; *s && o + 1 < cap; s++) {
                    unsigned char c = (unsigned char)*s;
                    out[o++] = (c == '/' || c == '+' || c == '#' || c < 0x20 || c == 0x7f) ? '_' : (char)c;
                }
                p = e;
                continue;
            }
        }
        out[o++] = *p;
    }
    out[o] = 0;
}
