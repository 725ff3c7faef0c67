/* Optional export of committed predictions to Kafka (librdkafka), towards the plant's
 * data platform. An idempotent producer (enable.idempotence=true: acks=all, no
 * duplicates or reordering from the producer's own retries); the key is "line/camera"
 * so one camera's predictions stay in one partition, in order; the value is the
 * prediction JSON (with its "id", so a consumer can drop the copy a redelivered MQTT
 * message produces after a node restart: delivery to Kafka is at least once).
 *
 * dn_kafka_export waits for the delivery report (the broker acknowledged the record
 * to all in-sync replicas), so the MQTT ingestion acknowledges its input only after
 * the export. A poller thread serves librdkafka's callbacks.
 *
 * Ownership: dn_kafka_start returns an exporter owned by the caller (dn_kafka_stop
 * flushes for up to 5 s and frees). Thread-safety: any thread may export. */
#ifndef DN_SERVE_KAFKA_H
#define DN_SERVE_KAFKA_H
#include "defectnet.h"
#include <stddef.h>

typedef struct dn_kafka dn_kafka;

/* brokers: "host:port[,host:port...]"; topic: the topic records go to. */
dn_status dn_kafka_start(const char *brokers, const char *topic, dn_kafka **out);
void dn_kafka_stop(dn_kafka *k);
/* Produces one record (key may be NULL) and waits up to timeout_ms for its delivery. */
dn_status dn_kafka_export(dn_kafka *k, const char *key, const char *value, size_t len, int timeout_ms);
/* One committed prediction: key "line/camera" ("_" for a missing part), value the
 * prediction JSON without its trailing newlines (NULL json = "{}"). */
dn_status dn_kafka_export_prediction(dn_kafka *k, const char *line, const char *camera, const char *json,
                                     int timeout_ms);
/* Records delivered so far (for tests and /healthz). */
long dn_kafka_delivered(dn_kafka *k);

#endif
