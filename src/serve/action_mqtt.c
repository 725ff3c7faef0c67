/* MQTT transport (see transport.h): publishes the prediction JSON to the action's
 * topic (expanded per prediction by the executor) with its QoS and retain flag; success
 * is the PUBACK/PUBCOMP within the timeout (QoS 0: handed to the socket). One libmosquitto
 * client per target, created by the first send and driven by libmosquitto's own network
 * thread (mosquitto_loop_start), which reconnects with backoff after a disconnect; the
 * callbacks below run on that thread and share the state under mmu/mcv. */
#include "serve/transport.h"
#include "core/core.h"
#include <errno.h>
#include <mosquitto.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct mqtt {
    dn_transport base;        /* first: a dn_transport * is an mqtt * */
    struct mosquitto *mosq;   /* NULL until the first send */
    int loop_started;
    /* mmu/mcv guard the fields below; written from libmosquitto's thread */
    pthread_mutex_t mmu;
    pthread_cond_t mcv;
    int connected, conn_rc;
    unsigned conn_events;     /* +1 per CONNACK / disconnect: lets a waiter see a refusal */
    int acked[16];
    unsigned nacked;
    char mqtt_err[160];
} mqtt;

static void on_connect(struct mosquitto *m, void *ud, int rc) {
    mqtt *w = ud;
    pthread_mutex_lock(&w->mmu);
    w->connected = rc == 0;
    w->conn_rc = rc;
    w->conn_events++;
    if (rc) snprintf(w->mqtt_err, sizeof w->mqtt_err, "broker refused the connection: %s",
                     mosquitto_connack_string(rc));
    pthread_cond_broadcast(&w->mcv);
    pthread_mutex_unlock(&w->mmu);
}

static void on_disconnect(struct mosquitto *m, void *ud, int rc) {
    mqtt *w = ud;
    pthread_mutex_lock(&w->mmu);
    w->connected = 0;
    w->conn_events++;
    if (w->conn_rc == 0) /* after a refused CONNACK keep the refusal as the reason */
        snprintf(w->mqtt_err, sizeof w->mqtt_err, "connection lost: %s", mosquitto_strerror(rc));
    pthread_cond_broadcast(&w->mcv);
    pthread_mutex_unlock(&w->mmu);
}

static void on_publish(struct mosquitto *m, void *ud, int mid) {
    mqtt *w = ud;
    pthread_mutex_lock(&w->mmu);
    w->acked[w->nacked++ % 16] = mid;
    pthread_cond_broadcast(&w->mcv);
    pthread_mutex_unlock(&w->mmu);
}

static int mid_acked(const mqtt *w, int mid) {
    for (unsigned i = 0; i < 16 && i < w->nacked; i++)
        if (w->acked[i] == mid) return 1;
    return 0;
}

/* Waits on w->mcv (w->mmu held) until pred or the absolute monotonic deadline. */
static void mqtt_wait(mqtt *w, double deadline) {
    double left = deadline - dn_now();
    if (left <= 0) return;
    if (left > 0.05) left = 0.05; /* re-check stop deadline */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* mcv uses the default (realtime) clock */
    double t = ts.tv_sec + ts.tv_nsec * 1e-9 + left;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    pthread_cond_timedwait(&w->mcv, &w->mmu, &ts);
}

/* Is anything accepting TCP connections at host:port? Non-blocking connect bounded by the
 * absolute monotonic deadline. 0 if yes, else -1 with the reason in err. */
static int tcp_probe(const char *host, int port, double deadline, char *err, size_t cap) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g) {
        snprintf(err, cap, "%s", gai_strerror(g));
        return -1;
    }
    int ok = -1;
    snprintf(err, cap, "no address");
    for (struct addrinfo *ai = res; ai && ok; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) { snprintf(err, cap, "socket: %s", strerror(errno)); continue; }
        int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (rc == 0) ok = 0;
        else if (errno == EINPROGRESS) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            int ms = (int)((deadline - dn_now()) * 1000);
            if (ms < 1) ms = 1;
            int pr = poll(&pf, 1, ms);
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (pr == 0) snprintf(err, cap, "connect timed out");
            else if (pr < 0) snprintf(err, cap, "poll: %s", strerror(errno));
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0) ok = 0;
            else snprintf(err, cap, "connect: %s", strerror(soerr ? soerr : errno));
        } else
            snprintf(err, cap, "connect: %s", strerror(errno));
        close(fd);
    }
    freeaddrinfo(res);
    return ok;
}

static int mqtt_send(dn_transport *t, const dn_action_call *c, char *detail, size_t cap) {
    mqtt *w = (mqtt *)t;
    const dn_action_def *act = c->act;
    const char *topic = c->topic;
    double deadline = dn_now() + act->timeout_s;
    if (!w->mosq) {
        w->mosq = mosquitto_new(act->client_id, true, w);
        if (!w->mosq) {
            snprintf(detail, cap, "mosquitto_new: %s", strerror(errno));
            return 0;
        }
        mosquitto_int_option(w->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
        if (act->username) mosquitto_username_pw_set(w->mosq, act->username, act->password);
        mosquitto_connect_callback_set(w->mosq, on_connect);
        mosquitto_disconnect_callback_set(w->mosq, on_disconnect);
        mosquitto_publish_callback_set(w->mosq, on_publish);
        mosquitto_reconnect_delay_set(w->mosq, 1, 4, true);
        int rc = mosquitto_connect_async(w->mosq, act->host, act->port, act->keepalive_s);
        if (rc != MOSQ_ERR_SUCCESS) { /* the network thread keeps retrying */
            pthread_mutex_lock(&w->mmu);
            snprintf(w->mqtt_err, sizeof w->mqtt_err, "connect: %s",
                     rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
            pthread_mutex_unlock(&w->mmu);
            if (rc == MOSQ_ERR_INVAL) {
                snprintf(detail, cap, "connect %s:%d: invalid parameters", act->host, act->port);
                mosquitto_destroy(w->mosq);
                w->mosq = NULL;
                return 0;
            }
        }
        rc = mosquitto_loop_start(w->mosq);
        if (rc != MOSQ_ERR_SUCCESS) {
            snprintf(detail, cap, "mosquitto_loop_start: %s", mosquitto_strerror(rc));
            mosquitto_destroy(w->mosq);
            w->mosq = NULL;
            return 0;
        }
        w->loop_started = 1;
    }
    pthread_mutex_lock(&w->mmu);
    int connected = w->connected;
    pthread_mutex_unlock(&w->mmu);
    if (!connected) {
        /* libmosquitto's thread reconnects silently in the background; without this probe an
         * attempt against a dead broker would always wait its whole timeout for a CONNACK */
        char perr[160];
        if (tcp_probe(act->host, act->port, deadline, perr, sizeof perr)) {
            snprintf(detail, cap, "broker %s:%d unreachable: %s", act->host, act->port, perr);
            return 0;
        }
    }
    pthread_mutex_lock(&w->mmu);
    unsigned ev0 = w->conn_events;
    /* until connected, or the broker refused us (bad credentials: no point waiting) */
    while (!w->connected && !(w->conn_events != ev0 && w->conn_rc != 0) && dn_now() < deadline &&
           !c->should_stop(c->stop_ctx))
        mqtt_wait(w, deadline);
    if (!w->connected && w->conn_events != ev0 && w->conn_rc != 0) {
        snprintf(detail, cap, "%s:%d: %s", act->host, act->port, w->mqtt_err);
        pthread_mutex_unlock(&w->mmu);
        return 0;
    }
    if (!w->connected) {
        snprintf(detail, cap, "not connected to %s:%d within %.3g s (%s)", act->host, act->port,
                 act->timeout_s, w->mqtt_err[0] ? w->mqtt_err : "no CONNACK");
        pthread_mutex_unlock(&w->mmu);
        return 0;
    }
    pthread_mutex_unlock(&w->mmu);
    int mid = 0;
    const char *payload = c->ev->json;
    int rc = mosquitto_publish(w->mosq, &mid, topic, (int)strlen(payload), payload, act->qos, act->retain != 0);
    if (rc != MOSQ_ERR_SUCCESS) {
        snprintf(detail, cap, "publish: %s", rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        return 0;
    }
    if (act->qos == 0) {
        snprintf(detail, cap, "published (qos 0, no acknowledgement)");
        return 1;
    }
    pthread_mutex_lock(&w->mmu);
    while (!mid_acked(w, mid) && dn_now() < deadline && !c->should_stop(c->stop_ctx)) mqtt_wait(w, deadline);
    int ok = mid_acked(w, mid);
    if (ok) snprintf(detail, cap, "%s received (mid %d)", act->qos == 1 ? "PUBACK" : "PUBCOMP", mid);
    else snprintf(detail, cap, "no %s for mid %d within %.3g s%s%s", act->qos == 1 ? "PUBACK" : "PUBCOMP",
                  mid, act->timeout_s, w->connected ? "" : ": ", w->connected ? "" : w->mqtt_err);
    pthread_mutex_unlock(&w->mmu);
    return ok;
}

static void mqtt_describe(const dn_action_call *c, char *detail, size_t cap) {
    const dn_action_def *act = c->act;
    snprintf(detail, cap, "would publish the prediction JSON (%zu bytes) to topic '%s' on %s:%d, qos %d, retain %s",
             strlen(c->ev->json), c->topic, act->host, act->port, act->qos, act->retain ? "true" : "false");
}

static void mqtt_close(dn_transport *t) {
    mqtt *w = (mqtt *)t;
    if (w->mosq) {
        pthread_mutex_lock(&w->mmu);
        int connected = w->connected;
        pthread_mutex_unlock(&w->mmu);
        mosquitto_disconnect(w->mosq);
        /* While disconnected, libmosquitto's thread reconnects with a blocking connect(),
         * which can hang for minutes on a firewalled host: cancel it instead of waiting. */
        if (w->loop_started) mosquitto_loop_stop(w->mosq, !connected);
        mosquitto_destroy(w->mosq);
    }
    pthread_mutex_destroy(&w->mmu);
    pthread_cond_destroy(&w->mcv);
    free(w);
}

dn_transport *dn_transport_mqtt_new(void) {
    mqtt *w = dn_calloc(1, sizeof *w);
    if (!w) return NULL;
    pthread_mutex_init(&w->mmu, NULL);
    pthread_cond_init(&w->mcv, NULL);
    w->base.send = mqtt_send;
    w->base.describe = mqtt_describe;
    w->base.close = mqtt_close;
    return &w->base;
}
