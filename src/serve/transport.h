/* The one interface between the action executor (actions.c: queues, retries, rule
 * history) and the ways an action reaches its target, one file each:
 *   action_command.c  run a program with the prediction JSON on stdin
 *   action_webhook.c  HTTP(S) POST of the prediction JSON (libcurl)
 *   action_mqtt.c     MQTT publish of the prediction JSON (libmosquitto)
 *
 * The executor creates one transport per target queue (actions with the same key share
 * it) and uses it from that queue's worker thread only: send() is never called
 * concurrently on one transport, and close() runs on the same thread after the last
 * send(). A transport may keep connections between sends (webhook keep-alive, the MQTT
 * session). Retrying, backoff and outcome reporting are the executor's, not the
 * transport's: send() makes exactly one attempt bounded by act->timeout_s. */
#ifndef DN_SERVE_TRANSPORT_H
#define DN_SERVE_TRANSPORT_H
#include "serve/rules.h"
#include <stddef.h>

/* One attempt of one action for one prediction. Everything is borrowed for the call. */
typedef struct dn_action_call {
    const dn_action_def *act;
    const char *rule;                /* rule name */
    const dn_pred_event *ev;         /* the prediction; ev->json is the payload */
    const char *topic;               /* MQTT: topic expanded for ev; NULL otherwise */
    /* non-zero once the executor's shutdown deadline has passed: give up at once */
    int (*should_stop)(void *ctx);
    void *stop_ctx;
} dn_action_call;

typedef struct dn_transport dn_transport;
struct dn_transport {
    /* One attempt: 1 = delivered, 0 = failed; detail: one line for the outcome. */
    int (*send)(dn_transport *t, const dn_action_call *c, char *detail, size_t cap);
    /* What send would do (--dry-run), one line into detail. */
    void (*describe)(const dn_action_call *c, char *detail, size_t cap);
    /* Closes connections and frees t. */
    void (*close)(dn_transport *t);
};

/* NULL when out of memory. */
dn_transport *dn_transport_command_new(void);
dn_transport *dn_transport_webhook_new(void);
dn_transport *dn_transport_mqtt_new(void);

/* Appends n bytes of s to buf (capacity cap, *len used) as one line: newlines and tabs
 * become spaces, the rest is cut off. For command output and response bodies in details. */
void dn_transport_snip(char *buf, size_t cap, size_t *len, const char *s, size_t n);

#endif
