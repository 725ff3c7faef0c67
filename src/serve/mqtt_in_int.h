/* Internal to MQTT ingestion (mqtt_in.c: queue, handlers, reader, lifecycle;
 * mqtt_conn.c: packet I/O on the socket, TCP connect, CONNECT/CONNACK). Not API. */
#ifndef DN_SERVE_MQTT_IN_INT_H
#define DN_SERVE_MQTT_IN_INT_H
#include "serve/mqtt_in.h"
#include "serve/mqtt_payload.h"
#include "serve/pipeline.h"
#include <limits.h>
#include <pthread.h>
#include <stdint.h>

typedef struct msg {
    struct msg *next;
    uint64_t gen;             /* connection generation it arrived on */
    dn_mqtt_publish p;        /* topic, packet id, QoS, metadata (owned) */
    int oversized;
    uint8_t *payload;
    size_t len;
} msg;

struct dn_mqtt_in {
    dn_pipeline *s;
    dn_mqtt_in_config c;
    char host[256];
    int port;
    char *sub;                /* the filter actually subscribed ("$share/G/F" or F) */
    char *fields[DN_MQTT_MAX_FIELDS]; /* names of the '+' levels (NULL = unnamed) */
    int nfields;
    char root[PATH_MAX];      /* resolved file_root ("" = none) */

    pthread_mutex_t mu;       /* queue, stats, gen */
    pthread_cond_t cv;
    msg *head, *tail;
    int stop;
    uint64_t gen;

    pthread_mutex_t wmu;      /* socket writes */
    int fd;                   /* -1 when disconnected (guarded by wmu for writers) */
    double last_send;

    int stop_pipe[2];
    pthread_t reader;
    int reader_started;
    pthread_t *handlers;
    int nhandlers;
    dn_mqtt_in_stats st;
};

/* packet I/O and connection (mqtt_conn.c); 0 ok, -1 failed */
int mq_send_packet(dn_mqtt_in *m, unsigned type, unsigned flags, const dn_mqtt_wbuf *body);
int mq_read_exact(dn_mqtt_in *m, int fd, uint8_t *buf, size_t n, int timeout_s);
int mq_read_header(dn_mqtt_in *m, int fd, uint8_t *b0, size_t *rem, int timeout_s);
int mq_tcp_connect(dn_mqtt_in *m);
int mq_send_on(dn_mqtt_in *m, int fd, unsigned type, unsigned flags, dn_mqtt_wbuf *body);
int mq_handshake(dn_mqtt_in *m, int fd, char *why, size_t whyn);

#endif
