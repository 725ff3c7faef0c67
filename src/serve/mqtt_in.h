/* MQTT 5 ingestion for `defectnet serve --mqtt-in`: images arrive as MQTT messages
 * (QoS 1), go through the prediction pipeline (pipeline.h) (same queue, store, actions as
 * HTTP), and a message is acknowledged (PUBACK) only AFTER its prediction has been
 * committed to the store.
 *
 * Why a client of our own: libmosquitto 2.0 and Paho C 1.3 both send the PUBACK of
 * an incoming QoS 1 message when it arrives, before the application's callback
 * returns (measured against mosquitto 2.0.11, see docs/fleet.md), so a node killed
 * between PUBACK and commit would lose that image. This file speaks the small part
 * of MQTT 5 a subscriber needs (CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH in,
 * PUBACK out, PINGREQ/PINGRESP, DISCONNECT) over one TCP connection and sends the
 * PUBACK from the handler once dn_pipeline_classify has returned a committed result.
 *
 * Load sharing: with a group the subscription is "$share/GROUP/FILTER", so the
 * broker hands each message to one member of the group. The session is persistent
 * (clean start = 0, session expiry > 0, client id = the node id): a node that is
 * killed and restarts gets its unacknowledged messages again from the broker.
 * Receive Maximum = the number of handler threads bounds the messages in flight.
 *
 * Message format (docs/fleet.md):
 *   - payload = image bytes; metadata in MQTT 5 user properties id, line, station,
 *     camera, part, and/or in the topic levels matched by '+' (fields names them in
 *     order, e.g. topic "plant/+/+/image" with fields "line,camera");
 *   - or payload = JSON envelope {"id":..,"file":"rel/path.png","line":..,...}
 *     (content type application/json or a payload starting with '{'), the file read
 *     from under file_root (relative path, no "..", symlinks resolved and checked).
 *   The message id (user property "id" or the envelope's "id") is required: it is
 *   the store's idempotency key (request_id), so a redelivered message is answered
 *   from the store and never recorded twice.
 * Bad messages (no id, bad metadata, oversized, not an image, file outside the root)
 * are logged with their topic, counted (defectnet_mqtt_messages_total{result=
 * "rejected"}; the other results are classified, duplicate = answered from the store,
 * failed = not committed, and redelivered = arrived with the DUP flag, also counted
 * under its outcome), optionally republished to the dead-letter topic, and acknowledged.
 * A message whose prediction could not be committed (database down) is NOT
 * acknowledged: its handler retries with backoff while the connection lasts; after
 * a reconnect the broker redelivers it.
 *
 * The packet encoding/decoding and the message interpretation (topic levels, user
 * properties, JSON envelope) are the pure functions of mqtt_payload.h; this file owns
 * the connection, the queue and the handler threads.
 *
 * Ownership: dn_mqtt_in_start returns an object owned by the caller; dn_mqtt_in_stop
 * must be called before the pipeline is drained. Config strings are copied. */
#ifndef DN_SERVE_MQTT_IN_H
#define DN_SERVE_MQTT_IN_H
#include "core/json.h"
#include "defectnet.h"
#include "serve/mqtt_payload.h" /* wire format, message interpretation, dn_mqtt_parse_url */
#include <stddef.h>

struct dn_pipeline;
struct dn_bus;
struct dn_kafka;
typedef struct dn_mqtt_in dn_mqtt_in;

typedef struct dn_mqtt_in_config {
    const char *url;          /* "mqtt://HOST[:PORT]" (port 1883 by default); required */
    const char *topic;        /* topic filter, e.g. "plant/+/+/image"; required */
    const char *group;        /* shared subscription group; NULL = plain subscription */
    const char *fields;       /* names of the '+' levels in order ("line,station,camera");
                                 "_" skips one; NULL = none */
    const char *client_id;    /* session id, unique per node; required */
    const char *file_root;    /* directory JSON envelopes may refer into; NULL = envelopes refused */
    const char *dead_letter;  /* topic for rejected messages (needs bus); NULL = none */
    size_t max_payload;       /* bytes; 0 = 16 MiB */
    int inflight;             /* handler threads = Receive Maximum; <= 0: 4 */
    int session_expiry;       /* seconds the broker keeps the session offline; <= 0: 86400 */
    int keepalive;            /* seconds; <= 0: 30 */
    const char *username;     /* broker credentials (NULL = anonymous) */
    const char *password;     /* NULL = none */
    struct dn_bus *bus;       /* results/dead letters are published here (may be NULL; not owned) */
    struct dn_kafka *kafka;   /* committed predictions are exported here (may be NULL; not owned) */
} dn_mqtt_in_config;

typedef struct dn_mqtt_in_stats {
    long received;            /* PUBLISH packets taken in (redeliveries included) */
    long redelivered;         /* of those, with the DUP flag (sent before, not acknowledged) */
    long classified;          /* new predictions committed */
    long duplicates;          /* redeliveries answered from the store */
    long rejected;            /* bad messages acknowledged without a prediction */
    long acked;               /* PUBACKs sent */
    long commit_failures;     /* attempts that could not be committed (not acknowledged) */
    long connects;            /* successful CONNACKs */
    int connected;            /* currently connected and subscribed */
} dn_mqtt_in_stats;

/* Checks c (URL, topic filter, group, client id, fields, file root) without
 * connecting, so a command can refuse a bad option before it starts anything. */
dn_status dn_mqtt_in_check(const dn_mqtt_in_config *c);
dn_status dn_mqtt_in_start(struct dn_pipeline *p, const dn_mqtt_in_config *c, dn_mqtt_in **out);
void dn_mqtt_in_stop(dn_mqtt_in *m);
void dn_mqtt_in_stats_get(dn_mqtt_in *m, dn_mqtt_in_stats *st);
/* /healthz reporter (dn_health_fn, ctx = the dn_mqtt_in): appends
 * ,"mqtt_in":{"broker":"connected"|"disconnected",...}; non-zero when disconnected. */
int dn_mqtt_in_health(void *m, dn_sb *b);

#endif
