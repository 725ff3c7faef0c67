/* Internal representation of a parsed rules file (docs/rules.md), shared by
 * rules.c (parser, condition matching) and actions.c (executor).
 *
 * Ownership: a dn_rules owns every string and array reachable from it. It is
 * immutable after parsing and reference counted: dn_rules_load/dn_rules_parse
 * return one reference, dn_rules_retain adds one, dn_rules_free drops one and
 * frees on the last. That lets the executor keep a rules object alive for its
 * in-flight actions while the caller frees its own reference right away. */
#ifndef DN_SERVE_RULES_H
#define DN_SERVE_RULES_H

#include "serve/actions.h"
#include <stdatomic.h>

typedef enum { DN_ACT_COMMAND, DN_ACT_WEBHOOK, DN_ACT_MQTT } dn_act_kind;

/* Limits enforced by the parser (bad files fail with a clear message). */
#define DN_RULES_MAX_RULES 1024
#define DN_RULES_MAX_ACTIONS 16       /* per rule */
#define DN_RULES_MAX_M 10000          /* "N of the last M" window */
#define DN_RULES_MAX_RATE_EVENTS 1000000 /* above_per_hour * window_s / 3600 */
#define DN_RULES_MAX_QUEUE 100000

typedef struct dn_action_def {
    dn_act_kind kind;
    const char *kind_name;  /* "command" | "webhook" | "mqtt" (static string) */
    char *target;           /* human-readable target for outcomes (argv / URL / broker+topic) */
    char *key;              /* executor queue key: actions with equal keys share one queue/thread */
    double timeout_s;       /* per attempt */
    int retries;            /* extra attempts after the first failure */
    double backoff_s, backoff_max_s; /* first retry delay, doubled up to the max */
    /* command */
    char **argv;            /* NULL-terminated; argv[0] looked up in PATH */
    /* webhook */
    char *url;
    char **headers;         /* NULL-terminated "Name: value" lines */
    char *ca_file;          /* PEM CA bundle to verify an https receiver; NULL = system CAs */
    /* mqtt */
    char *host;
    int port, qos, retain, keepalive_s;
    char *topic;            /* template: {line} {station} {camera} {part} {class} {rule} */
    char *client_id, *username, *password; /* may be NULL */
} dn_action_def;

typedef struct dn_rule {
    char *name;
    char **classes;   /* NULL-terminated set, or NULL = any class */
    char **lines;     /* NULL-terminated set, or NULL = any line */
    char **stations;  /* NULL-terminated set, or NULL = any station */
    char **cameras;   /* NULL-terminated set, or NULL = any camera */
    int has_min, has_max;
    double min_conf, max_conf;
    int uncertain;    /* -1 = don't care, 0 = must be accepted, 1 = must be uncertain */
    unsigned decisions; /* "decision" set: bit (1 << dn_decision); 0 = don't care */
    int drift_signal;   /* "drift": trust/drift.h signal whose PSI must cross drift_psi_above; -1 = none */
    double drift_psi_above;
    int n, m;         /* "n of the last m on the same line"; m == 0: no such condition */
    double rate_above;   /* per hour; < 0: no rate condition */
    double rate_window_s;
    int rate_per_line;
    int rate_keep;       /* timestamps to keep: floor(rate_above * window / 3600) + 1 */
    double cooldown_s;
    int cooldown_per_line;  /* 1: the cooldown is kept per line instead of per rule */
    int enabled;
    dn_action_def *actions;
    int nactions;
} dn_rule;

struct dn_rules {
    char *name;          /* file name used in messages */
    dn_rule *rules;
    int n;
    int queue_capacity;  /* per action queue */
    double drain_s;      /* dn_actions_free: time allowed to finish queued actions */
    char *review;        /* "review" queue policy for serve (trust/review.h), NULL = none */
    atomic_int refs;
};

dn_rules *dn_rules_retain(const dn_rules *r);
/* The conditions that look at this prediction alone (class, confidence, uncertain, decision,
 * line, station, camera, drift: its window's PSI went from at most psi_above to above it
 * with this prediction); history conditions are evaluated by the executor. */
int dn_rule_match_event(const dn_rule *r, const dn_pred_event *ev);
/* Expand a topic template for ev into out (size cap). Values are sanitised:
 * '/', '+', '#' and control characters become '_'; a missing value becomes "none". */
void dn_rule_expand_topic(const char *tmpl, const dn_rule *r, const dn_pred_event *ev, char *out, size_t cap);

#endif
