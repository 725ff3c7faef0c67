/* Action rules and the action executor (issue 5 item 5).
 *
 * A rules file (JSON, see docs/rules.md) lists rules; each rule has AND-combined
 * conditions on a prediction (class set, confidence bounds, uncertain, decision, line/station,
 * "N of the last M on the same line", "rate above X per hour") and one or more actions
 * (run a command, HTTP webhook POST, MQTT publish). The executor evaluates every
 * submitted prediction against the rules and runs the fired actions on its own threads,
 * off the caller's path, reporting every outcome through a callback.
 *
 * Ownership: dn_rules_load returns a rules object owned by the caller (dn_rules_free).
 * A dn_rules is immutable; dn_actions_new / dn_actions_set_rules take a private
 * reference-counted copy, so the caller may free its dn_rules right after the call.
 * dn_actions_new returns an executor owned by the caller (dn_actions_free).
 * Thread-safety: dn_actions_submit, dn_actions_set_rules and dn_actions_pending may be
 * called from any number of threads concurrently. */
#ifndef DN_SERVE_ACTIONS_H
#define DN_SERVE_ACTIONS_H

#include "defectnet.h"
#include <stddef.h>
#include <stdint.h>

/* A prediction as seen by rules/actions. All strings owned by the caller; copied by dn_actions_submit. */
typedef struct dn_pred_event {
    int64_t id;             /* prediction id in the store */
    double time;            /* unix seconds */
    const char *line, *station, *camera, *part;   /* may be NULL */
    const char *cls;        /* predicted class name */
    float confidence;
    int uncertain;          /* 1 if below the model's threshold */
    const char *json;       /* the full prediction as a JSON object (sent to commands/webhooks/MQTT) */
    int decision;           /* dn_decision; DN_DECISION_UNKNOWN wins, else uncertain above decides */
    float ood_score;        /* NAN when the model has no unknown-input detector */
    /* drift signals (PSI per trust/drift.h signal) of this line/camera's window right before
     * and right after this prediction joined it; NAN = not ready; NULL = no drift monitor */
    const float *drift_prev, *drift_now;
} dn_pred_event;

/* The event's decision: unknown if ev->decision says so, else uncertain if either
 * ev->decision or ev->uncertain says so, else accepted (dn_decision). */
int dn_pred_event_decision(const dn_pred_event *ev);

typedef struct dn_rules dn_rules;          /* parsed rules file (immutable) */
dn_status dn_rules_load(const char *path, dn_rules **out);   /* one-line error naming file, rule and problem */
/* Same as dn_rules_load from a buffer; name is used in error messages (e.g. the file name). */
dn_status dn_rules_parse(const char *text, size_t len, const char *name, dn_rules **out);
void dn_rules_free(dn_rules *r);
int dn_rules_count(const dn_rules *r);
/* Name of rule i (0 <= i < count); owned by r. */
const char *dn_rules_name(const dn_rules *r, int i);

/* Outcome of one action attempt sequence, reported from an action thread. */
typedef struct dn_action_outcome {
    int64_t prediction_id; const char *rule, *kind /* "command"|"webhook"|"mqtt" */, *target;
    const char *status /* "ok"|"failed"|"dry-run" */; int attempts; const char *detail; double time;
} dn_action_outcome;
/* Called from an executor thread, or from the thread calling dn_actions_submit for actions that
 * could not be queued (status "failed", detail "queue full"): it must not take a lock the
 * submitter holds across dn_actions_submit. Calls are serialised (never two at once).
 * All strings in *o are valid only during the call. Must not call dn_actions_* functions. */
typedef void (*dn_outcome_fn)(void *ctx, const dn_action_outcome *o);

typedef struct dn_actions dn_actions;      /* executor: owns its threads and queues */
dn_status dn_actions_new(const dn_rules *rules, int dry_run, dn_outcome_fn cb, void *ctx, dn_actions **out);
/* Evaluates every rule against ev (keeping per-line history for "N of last M" and rate windows) and
 * enqueues the actions that fire; never blocks on a target. Returns the number of actions fired. */
int dn_actions_submit(dn_actions *a, const dn_pred_event *ev);
/* Swap in new rules (hot reload); in-flight actions finish with the old ones. */
dn_status dn_actions_set_rules(dn_actions *a, const dn_rules *rules);
size_t dn_actions_pending(const dn_actions *a);
void dn_actions_free(dn_actions *a);   /* stops after finishing or failing queued actions within a bounded time */

#endif
