/* Results onto the plant bus (MQTT through libmosquitto, MQTT 5, QoS 1).
 *
 * For every committed prediction handed to dn_bus_publish_result:
 *   - the prediction JSON (as /v1/predict answers it) on the results topic template,
 *     QoS 1, waiting for the broker's PUBACK (so the MQTT ingestion acknowledges its
 *     input only once the result is on the bus as well);
 *   - optionally a retained copy on the "last" template: a PLC gateway subscribing
 *     later reads the latest verdict per camera at once;
 *   - optionally Sparkplug B (sparkplug.h): NBIRTH on every connect, NDEATH as the
 *     MQTT will (and on clean stop), DBIRTH per device (camera) before its first
 *     DDATA, DDATA per prediction.
 * Templates may use {line}, {station}, {camera}, {part}, {class}, {decision}; a
 * missing value becomes "_", and '/', '+', '#' in values become '_' so a value can
 * never add topic levels or wildcards.
 *
 * The client reconnects by itself (libmosquitto's loop thread, backoff 1..10 s);
 * dn_bus_result fails (DN_ERR_IO) while the broker is unreachable or when no PUBACK
 * arrives in time.
 *
 * Ownership: dn_bus_start returns a bus owned by the caller (dn_bus_stop). Config
 * strings are copied. Thread-safety: any thread may publish. */
#ifndef DN_SERVE_BUS_H
#define DN_SERVE_BUS_H
#include "core/json.h"
#include "defectnet.h"
#include <stddef.h>
#include <stdint.h>

typedef struct dn_bus dn_bus;

typedef struct dn_bus_config {
    const char *url;            /* "mqtt://HOST[:PORT]"; required */
    const char *client_id;      /* required, unique per node (e.g. "<node>-bus") */
    const char *results_topic;  /* template; NULL = no JSON results */
    const char *last_topic;     /* retained template; NULL = none */
    const char *sparkplug;      /* "GROUP/NODE" (Sparkplug B); NULL = none */
    int keepalive;              /* seconds; <= 0: 30 */
    const char *username;       /* broker credentials (NULL = anonymous) */
    const char *password;
    /* PLC handshake (NULL = none): per prediction a request on <expanded plc_topic>/request
     * {"seq":N,"verdict":"OK"|"NG"|"unknown","id":..,"class":..}; the PLC answers on
     * <expanded plc_topic>/ack with {"seq":N}. N counts per topic (camera) from 1. */
    const char *plc_topic;
    int plc_deadline_ms;        /* no acknowledgement within it -> fail-safe; <= 0: 1000 */
    const char *plc_failsafe;   /* verdict applied then, e.g. "reject"; NULL = "reject" */
    const char *plc_ok_classes; /* comma list of classes that are "OK" (others "NG") */
} dn_bus_config;

/* One committed prediction. Strings may be NULL. */
typedef struct dn_bus_result {
    const char *line, *station, *camera, *part;
    int64_t id;                 /* prediction id */
    const char *cls;
    float confidence;
    int uncertain;
    int decision;               /* dn_decision (DN_DECISION_UNKNOWN wins over uncertain) */
    float ood_score;            /* NAN: the model has no unknown-input detector */
    int duplicate;              /* redelivery answered from the store */
    const char *json;           /* full prediction JSON (results topic payload) */
} dn_bus_result;

/* Checks c (URL, client id, Sparkplug ids, templates) without connecting. */
dn_status dn_bus_check(const dn_bus_config *c);
dn_status dn_bus_start(const dn_bus_config *c, dn_bus **out);
void dn_bus_stop(dn_bus *b);
/* Publishes r as configured; waits up to timeout_ms for the broker's PUBACKs. */
dn_status dn_bus_publish_result(dn_bus *b, const dn_bus_result *r, int timeout_ms);
/* Publishes one message (QoS 1), waiting up to timeout_ms for the broker's PUBACK
 * (timeout_ms = 0: queue it and return). */
dn_status dn_bus_publish(dn_bus *b, const char *topic, const void *payload, size_t len, int retain,
                         int timeout_ms);
/* The PLC handshake for r (when configured): 0 when the PLC acknowledged in time, 1
 * when it did not (or the request could not be sent) and the fail-safe verdict applies;
 * verdict[n] receives the verdict in force and why[wn] the reason. */
int dn_bus_plc_handshake(dn_bus *b, const dn_bus_result *r, char *verdict, size_t n, char *why, size_t wn);
int dn_bus_has_plc(const dn_bus *b);
/* A rejected input message, republished as is (QoS 1) with MQTT 5 user properties
 * "topic" (where it came from) and "error" (why it was rejected). */
dn_status dn_bus_dead_letter(dn_bus *b, const char *topic, const void *payload, size_t len, const char *from,
                             const char *error, int timeout_ms);
/* /healthz reporter (dn_health_fn, ctx = the dn_bus): appends
 * ,"bus":{"broker":"connected"|"disconnected"}; non-zero when disconnected. */
int dn_bus_health(void *b, dn_sb *out);
/* 1 while connected to the broker. */
int dn_bus_connected(dn_bus *b);
/* Expands a topic template (see above) into out[n]; DN_ERR_ARG if it does not fit. */
dn_status dn_bus_topic(const char *tmpl, const dn_bus_result *r, char *out, size_t n);

#endif
