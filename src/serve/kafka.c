/* Kafka export through librdkafka (see kafka.h).
 *
 * Each record carries a small heap "ticket" as its opaque: the delivery-report
 * callback (on the poller thread) fills in the result and wakes the exporter. The
 * ticket is shared by the two sides (reference count 2) so a waiter that times out
 * can leave and the late callback still writes into live memory. */
#include "serve/kafka.h"
#include "core/core.h"
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct dn_kafka {
    rd_kafka_t *rk;
    rd_kafka_topic_t *topic;
    char *topic_name;
    pthread_t poller;
    int poller_started;
    atomic_int stop;
    atomic_long delivered;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

typedef struct {
    int refs;      /* under k->mu */
    int done;
    rd_kafka_resp_err_t err;
} ticket;

static void ticket_unref(dn_kafka *k, ticket *t) {
    pthread_mutex_lock(&k->mu);
    int last = --t->refs == 0;
    pthread_mutex_unlock(&k->mu);
    if (last) free(t);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    dn_kafka *k = opaque;
    ticket *t = m->_private;
    if (!t) return;
    if (!m->err) atomic_fetch_add(&k->delivered, 1);
    pthread_mutex_lock(&k->mu);
    t->done = 1;
    t->err = m->err;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
    ticket_unref(k, t);
}

static void *poll_main(void *arg) {
    dn_kafka *k = arg;
    while (!atomic_load(&k->stop)) rd_kafka_poll(k->rk, 100);
    return NULL;
}

long dn_kafka_delivered(dn_kafka *k) { return atomic_load(&k->delivered); }

dn_status dn_kafka_start(const char *brokers, const char *topic, dn_kafka **out) {
    *out = NULL;
    if (!brokers || !*brokers) return dn_fail(DN_ERR_ARG, "kafka: no bootstrap servers");
    if (!topic || !*topic || strlen(topic) > 249 || strspn(topic, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != strlen(topic))
        return dn_fail(DN_ERR_ARG, "kafka topic '%s': 1..249 characters of [a-zA-Z0-9._-]", topic ? topic : "");
    dn_kafka *k = dn_calloc(1, sizeof *k);
    if (!k) return DN_ERR_NOMEM;
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    char err[512];
    dn_status rc;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *kv[][2] = {{"bootstrap.servers", brokers},
                           {"enable.idempotence", "true"},
                           {"linger.ms", "2"},
                           {"message.timeout.ms", "30000"},
                           {"client.id", "defectnet"}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
        if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], err, sizeof err) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            rc = dn_fail(DN_ERR_ARG, "kafka: %s: %s", kv[i][0], err);
            goto fail;
        }
    }
    rd_kafka_conf_set_opaque(conf, k);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err); /* takes conf on success */
    if (!k->rk) {
        rd_kafka_conf_destroy(conf);
        rc = dn_fail(DN_ERR_ARG, "kafka %s: %s", brokers, err);
        goto fail;
    }
    k->topic_name = dn_strdup(topic);
    k->topic = rd_kafka_topic_new(k->rk, topic, NULL);
    if (!k->topic_name || !k->topic) { rc = dn_fail(DN_ERR_NOMEM, "kafka topic %s: cannot create handle", topic); goto fail; }
    if (pthread_create(&k->poller, NULL, poll_main, k)) { rc = dn_fail(DN_ERR_IO, "kafka: cannot start poller"); goto fail; }
    k->poller_started = 1;
    *out = k;
    return DN_OK;
fail:
    dn_kafka_stop(k);
    return rc;
}

dn_status dn_kafka_export(dn_kafka *k, const char *key, const char *value, size_t len, int timeout_ms) {
    ticket *t = dn_calloc(1, sizeof *t);
    if (!t) return DN_ERR_NOMEM;
    t->refs = 2;
    if (rd_kafka_produce(k->topic, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, (void *)value, len, key,
                         key ? strlen(key) : 0, t) == -1) {
        rd_kafka_resp_err_t e = rd_kafka_last_error();
        free(t);
        return dn_fail(DN_ERR_IO, "kafka %s: %s", k->topic_name, rd_kafka_err2str(e));
    }
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) { dl.tv_sec++; dl.tv_nsec -= 1000000000L; }
    pthread_mutex_lock(&k->mu);
    while (!t->done && pthread_cond_timedwait(&k->cv, &k->mu, &dl) == 0) {}
    int done = t->done;
    rd_kafka_resp_err_t e = t->err;
    pthread_mutex_unlock(&k->mu);
    ticket_unref(k, t);
    if (!done) return dn_fail(DN_ERR_IO, "kafka %s: no delivery report within %d ms", k->topic_name, timeout_ms);
    if (e) return dn_fail(DN_ERR_IO, "kafka %s: %s", k->topic_name, rd_kafka_err2str(e));
    return DN_OK;
}

void dn_kafka_stop(dn_kafka *k) {
    if (!k) return;
    if (k->rk) rd_kafka_flush(k->rk, 5000); /* delivery reports run here or on the poller */
    atomic_store(&k->stop, 1);
    if (k->poller_started) pthread_join(k->poller, NULL);
    if (k->topic) rd_kafka_topic_destroy(k->topic);
    if (k->rk) {
        /* records still queued get their delivery report (failed) on destroy's purge */
        rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(k->rk, 0);
        rd_kafka_destroy(k->rk);
    }
    free(k->topic_name);
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
    free(k);
}

dn_status dn_kafka_export_prediction(dn_kafka *k, const char *line, const char *camera, const char *json,
                                     int timeout_ms) {
    char key[600];
    snprintf(key, sizeof key, "%s/%s", line ? line : "_", camera ? camera : "_");
    const char *v = json ? json : "{}";
    size_t vl = strlen(v);
    while (vl && v[vl - 1] == '\n') vl--;
    return dn_kafka_export(k, key, v, vl, timeout_ms);
}
