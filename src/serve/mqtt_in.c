/* MQTT 5 ingestion with PUBACK after commit (see mqtt_in.h).
 *
 * Threads: one reader owns the connection (connect with backoff, subscribe, read
 * packets, keepalive) and puts incoming QoS 1 messages on a queue; `inflight`
 * handlers take them, classify them through dn_pipeline_classify (which commits) and
 * then send the PUBACK. Writes to the socket are serialised by wmu. Every message
 * carries the generation of the connection it came on: a PUBACK is only sent on that
 * same connection (after a reconnect the broker redelivers what was not
 * acknowledged, and the redelivery is answered from the store). */
#include "serve/mqtt_in_int.h"
#include "core/core.h"
#include "core/json.h"
#include "core/utf8.h"
#include "serve/mqtt_payload.h"
#include "serve/bus.h"
#include "serve/kafka.h"
#include "serve/metrics.h"
#include "serve/pipeline.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ helpers */

/* One log line through the serve log (dn_pipeline_log: timestamped, and escaped, so a
 * topic or a file name from a message cannot forge a line or emit invalid UTF-8). */
DN_PRINTF(2, 3) static void mlog(const dn_mqtt_in *m, const char *fmt, ...) {
    if (!dn_pipeline_log_enabled(m->s)) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    dn_pipeline_log(m->s, "mqtt: %s", buf);
}

static void msg_free(msg *x) {
    if (!x) return;
    dn_mqtt_publish_free(&x->p);
    free(x->payload);
    free(x);
}

/* ------------------------------------------------------------------ handlers */

static void enqueue(dn_mqtt_in *m, msg *x) {
    int dup = x->p.dup; /* x belongs to the handlers once it is on the queue */
    pthread_mutex_lock(&m->mu);
    x->gen = m->gen;
    if (m->tail) m->tail->next = x;
    else m->head = x;
    m->tail = x;
    m->st.received++;
    m->st.redelivered += dup;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    dn_metrics *mt = dn_pipeline_metrics(m->s);
    if (dup && mt) dn_metrics_mqtt(mt, "redelivered");
}

/* Sends the PUBACK for x if its connection is still the current one. */
static void ack(dn_mqtt_in *m, const msg *x) {
    if (x->p.qos < 1) return;
    pthread_mutex_lock(&m->mu);
    uint64_t gen = m->gen;
    pthread_mutex_unlock(&m->mu);
    if (gen != x->gen) return; /* the broker redelivers it on the new connection */
    dn_mqtt_wbuf b = {0};
    dn_mqtt_put_u16(&b, x->p.pid);
    pthread_mutex_lock(&m->wmu);
    int rc = mq_send_packet(m, DN_MQTT_PUBACK, 0, &b);
    pthread_mutex_unlock(&m->wmu);
    free(b.p);
    if (!rc) {
        pthread_mutex_lock(&m->mu);
        m->st.acked++;
        pthread_mutex_unlock(&m->mu);
    }
}

static void count(dn_mqtt_in *m, long *field, const char *metric) {
    pthread_mutex_lock(&m->mu);
    (*field)++;
    pthread_mutex_unlock(&m->mu);
    dn_metrics *mt = dn_pipeline_metrics(m->s);
    if (mt) dn_metrics_mqtt(mt, metric);
}

/* Logs, counts, dead-letters and acknowledges a message that cannot be classified. */
static void reject(dn_mqtt_in *m, msg *x, const char *problem) {
    mlog(m, "%s: rejected: %s", x->p.topic, problem);
    count(m, &m->st.rejected, "rejected");
    if (m->c.dead_letter && m->c.bus) {
        /* the original payload (when it was read: not for oversized ones) */
        const char *from = x->p.topic_text ? x->p.topic : "?";
        if (dn_bus_dead_letter(m->c.bus, m->c.dead_letter, x->payload, x->payload ? x->len : 0, from, problem, 5000))
            mlog(m, "%s: dead letter not published: %s", x->p.topic, dn_last_error());
    }
    ack(m, x);
}

/* Reads the envelope's file (checked by dn_mqtt_interpret: relative, no "..") from
 * under the file root into x->payload. Returns NULL or the problem. */
static const char *envelope_file(dn_mqtt_in *m, msg *x, const char *file, char *problem, size_t pn) {
    if (!m->root[0]) return "JSON envelope refused: no file root configured (--mqtt-file-root)";
    char joined[PATH_MAX + 1100], real[PATH_MAX];
    snprintf(joined, sizeof joined, "%s/%s", m->root, file);
    size_t rl = strlen(m->root);
    struct stat stt;
    uint8_t *d = NULL;
    size_t n = 0;
    if (!realpath(joined, real)) snprintf(problem, pn, "file %s: %s", file, strerror(errno));
    else if (strncmp(real, m->root, rl) || (real[rl] != '/' && real[rl] != 0))
        snprintf(problem, pn, "file %s resolves outside the file root", file);
    else if (stat(real, &stt) || !S_ISREG(stt.st_mode)) snprintf(problem, pn, "file %s is not a regular file", file);
    else if ((size_t)stt.st_size > m->c.max_payload)
        snprintf(problem, pn, "file %s: %lld bytes, limit %zu", file, (long long)stt.st_size, m->c.max_payload);
    else if (dn_read_file(real, m->c.max_payload, &d, &n)) snprintf(problem, pn, "%s", dn_last_error());
    else {
        free(x->payload);
        x->payload = d;
        x->len = n;
        return n ? NULL : "empty payload";
    }
    return problem;
}

/* The bus's view of a committed prediction: metadata of x, id/class of res, and
 * confidence/decision pulled out of the prediction JSON. */
static void make_result(const msg *x, const dn_classify_res *res, int duplicate, dn_bus_result *r) {
    memset(r, 0, sizeof *r);
    r->line = x->p.meta.v[DN_MQTT_LINE];
    r->station = x->p.meta.v[DN_MQTT_STATION];
    r->camera = x->p.meta.v[DN_MQTT_CAMERA];
    r->part = x->p.meta.v[DN_MQTT_PART];
    r->id = res->id;
    r->cls = res->cls;
    r->duplicate = duplicate;
    r->json = res->json;
    dn_json *j = res->json ? dn_json_parse(res->json, strlen(res->json), NULL, 0) : NULL;
    r->confidence = (float)dn_json_num(dn_json_get(j, "confidence"), 0);
    int d = dn_decision_parse(dn_json_str(dn_json_get(j, "decision"), "accepted"));
    r->decision = d < 0 ? DN_DECISION_ACCEPTED : d;
    r->uncertain = d == DN_DECISION_UNCERTAIN;
    r->ood_score = (float)dn_json_num(dn_json_get(j, "ood_score"), NAN); /* null -> NAN */
    dn_json_free(j);
}

/* Kafka export and the result bus, before the input is acknowledged. */
static dn_status publish_result(dn_mqtt_in *m, msg *x, const dn_classify_res *res, int duplicate) {
    if (m->c.kafka) { /* key line/camera: one camera's records stay in order in one partition */
        dn_status rc = dn_kafka_export_prediction(m->c.kafka, x->p.meta.v[DN_MQTT_LINE], x->p.meta.v[DN_MQTT_CAMERA], res->json, 10000);
        if (rc) return rc;
    }
    if (!m->c.bus) return DN_OK;
    dn_bus_result r;
    make_result(x, res, duplicate, &r);
    return dn_bus_publish_result(m->c.bus, &r, 10000);
}

/* After the acknowledgement: the PLC handshake; a fail-safe verdict is logged and
 * recorded as an action outcome of the prediction (rule "plc-handshake"). */
static void plc_handshake(dn_mqtt_in *m, msg *x, const dn_classify_res *res) {
    dn_bus_result r;
    make_result(x, res, 0, &r);
    char verdict[64], why[700];
    if (!dn_bus_plc_handshake(m->c.bus, &r, verdict, sizeof verdict, why, sizeof why)) return;
    mlog(m, "%s: prediction %lld: PLC handshake failed (%s): fail-safe verdict %s", x->p.topic, (long long)res->id, why, verdict);
    char detail[800];
    snprintf(detail, sizeof detail, "%s; fail-safe verdict %s", why, verdict);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    dn_outcome_row o = {res->id, "plc-handshake", "plc", x->p.topic, "failsafe", detail, 1, ts.tv_sec + ts.tv_nsec * 1e-9};
    if (dn_store_add_outcome(dn_pipeline_store(m->s), &o)) mlog(m, "fail-safe outcome not recorded: %s", dn_last_error());
    dn_metrics *mt = dn_pipeline_metrics(m->s);
    if (mt) dn_metrics_action(mt, "plc", "failsafe");
}

static int stopping(dn_mqtt_in *m) {
    pthread_mutex_lock(&m->mu);
    int s = m->stop;
    pthread_mutex_unlock(&m->mu);
    return s;
}

static int current(dn_mqtt_in *m, const msg *x) {
    pthread_mutex_lock(&m->mu);
    int c = m->gen == x->gen && !m->stop;
    pthread_mutex_unlock(&m->mu);
    return c;
}

static void handle(dn_mqtt_in *m, msg *x) {
    char problem[512] = "";
    if (x->oversized) {
        snprintf(problem, sizeof problem, "payload of %zu bytes exceeds the limit of %zu", x->len, m->c.max_payload);
        reject(m, x, problem);
        return;
    }
    dn_mqtt_route route = {m->c.topic, m->fields, m->nfields};
    char *file = NULL;
    const char *bad = dn_mqtt_interpret(&route, &x->p, x->payload, x->len, &file, problem, sizeof problem);
    if (!bad && file) bad = envelope_file(m, x, file, problem, sizeof problem);
    free(file);
    if (bad == dn_mqtt_out_of_memory) { /* not the message's fault: not acknowledged, redelivered after a reconnect */
        count(m, &m->st.commit_failures, "failed");
        mlog(m, "%s: out of memory reading its metadata, not acknowledged", x->p.topic);
        return;
    }
    if (bad) { reject(m, x, bad); return; }
    dn_classify_req rq = {0};
    rq.data = x->payload;
    rq.len = x->len;
    rq.line = x->p.meta.v[DN_MQTT_LINE];
    rq.station = x->p.meta.v[DN_MQTT_STATION];
    rq.camera = x->p.meta.v[DN_MQTT_CAMERA];
    rq.part = x->p.meta.v[DN_MQTT_PART];
    rq.request_id = x->p.meta.v[DN_MQTT_ID];
    rq.source = "mqtt";
    rq.source_path = x->p.topic;
    double backoff = 0.2;
    for (;;) {
        dn_classify_res res = {0};
        if (dn_pipeline_classify(m->s, &rq, &res)) return; /* server shutting down: not acknowledged */
        if (res.http_code == 200) {
            int dup = res.json && strstr(res.json, "\"duplicate\":true") != NULL;
            count(m, dup ? &m->st.duplicates : &m->st.classified, dup ? "duplicate" : "classified");
            /* the result goes onto the bus before the input is acknowledged: if that
             * fails the message is retried (answered from the store) or redelivered */
            if (publish_result(m, x, &res, dup) == DN_OK) {
                ack(m, x);
                if (!dup && dn_bus_has_plc(m->c.bus)) plc_handshake(m, x, &res);
                free(res.json);
                return;
            }
            snprintf(problem, sizeof problem, "result not published: %s", dn_last_error());
            free(res.json);
            res.json = NULL;
            count(m, &m->st.commit_failures, "failed");
            mlog(m, "%s: id %s %s; not acknowledged, retrying in %.1f s", x->p.topic, x->p.meta.v[DN_MQTT_ID], problem, backoff);
        } else if (res.http_code >= 400 && res.http_code < 500) {
            dn_json *j = res.json ? dn_json_parse(res.json, strlen(res.json), NULL, 0) : NULL;
            snprintf(problem, sizeof problem, "%s", dn_json_str(dn_json_get(j, "error"), "rejected by the pipeline"));
            dn_json_free(j);
            free(res.json);
            reject(m, x, problem);
            return;
        } else {
            /* not committed (database down, ...): never acknowledged; retry while this
             * connection lasts, else the broker redelivers it after the reconnect */
            count(m, &m->st.commit_failures, "failed");
            mlog(m, "%s: id %s not committed, retrying in %.1f s: %s", x->p.topic, x->p.meta.v[DN_MQTT_ID], backoff,
                 res.json ? res.json : "");
            free(res.json);
        }
        double until = dn_now() + backoff;
        while (dn_now() < until) {
            if (!current(m, x)) return;
            usleep(50000);
        }
        if (backoff < 5) backoff *= 2;
    }
}

static void *handler_main(void *arg) {
    dn_mqtt_in *m = arg;
    for (;;) {
        pthread_mutex_lock(&m->mu);
        while (!m->head && !m->stop) pthread_cond_wait(&m->cv, &m->mu);
        if (m->stop) { pthread_mutex_unlock(&m->mu); break; }
        msg *x = m->head;
        m->head = x->next;
        if (!m->head) m->tail = NULL;
        int stale = x->gen != m->gen;
        pthread_mutex_unlock(&m->mu);
        if (!stale) handle(m, x); /* stale: the broker redelivers it on the new connection */
        msg_free(x);
    }
    return NULL;
}

/* ------------------------------------------------------------------ reader */

/* Reads one PUBLISH body (rem bytes after the fixed header). */
static msg *read_publish(dn_mqtt_in *m, int fd, uint8_t b0, size_t rem) {
    msg *x = dn_calloc(1, sizeof *x);
    if (!x) return NULL;
    /* the variable header (topic, packet id, properties) is small; read up to HEAD_MAX */
    size_t hn = rem < DN_MQTT_HEAD_MAX ? rem : DN_MQTT_HEAD_MAX;
    uint8_t *h = dn_malloc(hn ? hn : 1);
    if (!h || mq_read_exact(m, fd, h, hn, 30) || dn_mqtt_decode_publish(b0, h, hn, &x->p)) goto fail;
    size_t body = rem - x->p.head, inh = hn - x->p.head; /* payload bytes, inh of them in h */
    x->len = body;
    if (body > m->c.max_payload) {
        x->oversized = 1;
        if (mq_read_exact(m, fd, NULL, body - inh, 60)) goto fail;
    } else {
        x->payload = dn_malloc(body ? body : 1);
        if (!x->payload) goto fail;
        memcpy(x->payload, h + x->p.head, inh);
        if (mq_read_exact(m, fd, x->payload + inh, body - inh, 60)) goto fail;
    }
    free(h);
    return x;
fail: /* malformed, out of memory or connection lost: drop the connection */
    free(h);
    msg_free(x);
    return NULL;
}

static void set_connected(dn_mqtt_in *m, int fd, int up) {
    pthread_mutex_lock(&m->wmu);
    m->fd = up ? fd : -1;
    m->last_send = dn_now();
    pthread_mutex_unlock(&m->wmu);
    pthread_mutex_lock(&m->mu);
    if (up) m->st.connects++;
    else m->gen++; /* messages of the old connection are no longer acknowledged */
    m->st.connected = up;
    pthread_mutex_unlock(&m->mu);
}

/* Serves one connection until it fails or stop. Returns 1 if it got as far as a SUBACK. */
static int session(dn_mqtt_in *m, int fd) {
    char why[200];
    if (mq_handshake(m, fd, why, sizeof why)) {
        mlog(m, "%s:%d: %s", m->host, m->port, why);
        return 0;
    }
    set_connected(m, fd, 1);
    int subscribed = 0;
    double last_rx = dn_now();
    int ping_out = 0;
    for (;;) {
        struct pollfd pf[2] = {{fd, POLLIN, 0}, {m->stop_pipe[0], POLLIN, 0}};
        int r = poll(pf, 2, 1000);
        if (r < 0 && errno != EINTR) break;
        if (pf[1].revents) break;
        double now = dn_now();
        if (r > 0 && pf[0].revents) {
            uint8_t b0;
            size_t rem;
            if (mq_read_header(m, fd, &b0, &rem, 30)) break;
            last_rx = now;
            unsigned type = b0 >> 4;
            if (type == DN_MQTT_PUBLISH) {
                msg *x = read_publish(m, fd, b0, rem);
                if (!x) { mlog(m, "malformed PUBLISH or connection lost, reconnecting"); break; }
                if (x->p.qos == 2) { mlog(m, "%s: QoS 2 message on a QoS 1 subscription, reconnecting", x->p.topic); msg_free(x); break; }
                enqueue(m, x);
            } else if (type == DN_MQTT_SUBACK) {
                uint8_t buf[64];
                if (rem > sizeof buf || mq_read_exact(m, fd, buf, rem, 10)) break;
                unsigned code = 0;
                if (dn_mqtt_decode_suback(buf, rem, &code) || code > 2) {
                    mlog(m, "subscription to %s refused (reason code 0x%02x)", m->sub, code);
                    break;
                }
                if (!subscribed) mlog(m, "subscribed to %s on %s:%d as %s", m->sub, m->host, m->port, m->c.client_id);
                subscribed = 1;
            } else if (type == DN_MQTT_DISCONNECT) {
                uint8_t code = 0;
                if (rem && mq_read_exact(m, fd, &code, 1, 5) == 0 && rem > 1) mq_read_exact(m, fd, NULL, rem - 1, 5);
                mlog(m, "broker disconnected us (reason code 0x%02x)", code);
                break;
            } else {
                if (mq_read_exact(m, fd, NULL, rem, 10)) break; /* PINGRESP, AUTH, ... */
                if (type == DN_MQTT_PINGRESP) ping_out = 0;
            }
        }
        /* keepalive: a PINGREQ when we have been quiet for half the interval; the
         * connection is dead when the broker is silent for 1.5 intervals */
        if (now - last_rx > 1.5 * m->c.keepalive) { mlog(m, "broker silent, reconnecting"); break; }
        pthread_mutex_lock(&m->wmu);
        if (!ping_out && dn_now() - m->last_send > m->c.keepalive / 2.0) {
            if (mq_send_packet(m, DN_MQTT_PINGREQ, 0, NULL) == 0) ping_out = 1;
        }
        pthread_mutex_unlock(&m->wmu);
    }
    if (stopping(m)) { /* normal DISCONNECT: the session (and unacked messages) stays on the broker */
        dn_mqtt_wbuf b = {0};
        dn_mqtt_put_u8(&b, 0);
        pthread_mutex_lock(&m->wmu);
        mq_send_packet(m, DN_MQTT_DISCONNECT, 0, &b);
        pthread_mutex_unlock(&m->wmu);
        free(b.p);
    }
    set_connected(m, fd, 0);
    return subscribed;
}

static void *reader_main(void *arg) {
    dn_mqtt_in *m = arg;
    double backoff = 0.2;
    while (!stopping(m)) {
        int fd = mq_tcp_connect(m);
        if (fd >= 0) {
            if (session(m, fd)) backoff = 0.2;
            close(fd);
        } else {
            mlog(m, "%s:%d: cannot connect to the broker, retrying in %.1f s", m->host, m->port, backoff);
        }
        if (stopping(m)) break;
        struct pollfd pf = {m->stop_pipe[0], POLLIN, 0};
        poll(&pf, 1, (int)(backoff * 1000));
        if (backoff < 10) backoff *= 2;
    }
    return NULL;
}

/* ------------------------------------------------------------------ lifecycle */

int dn_mqtt_in_health(void *ctx, dn_sb *b) {
    dn_mqtt_in *m = ctx;
    dn_mqtt_in_stats st;
    dn_mqtt_in_stats_get(m, &st);
    dn_sb_printf(b, ",\"mqtt_in\":{\"broker\":\"%s\",\"url\":", st.connected ? "connected" : "disconnected");
    dn_sb_json_str(b, m->c.url);
    dn_sb_puts(b, ",\"subscription\":");
    dn_sb_json_str(b, m->sub);
    dn_sb_printf(b, ",\"received\":%ld,\"acknowledged\":%ld,\"not_committed\":%ld}", st.received, st.acked,
                 st.commit_failures);
    return !st.connected;
}

void dn_mqtt_in_stats_get(dn_mqtt_in *m, dn_mqtt_in_stats *st) {
    pthread_mutex_lock(&m->mu);
    *st = m->st;
    pthread_mutex_unlock(&m->mu);
}

dn_status dn_mqtt_in_check(const dn_mqtt_in_config *c) {
    char host[256];
    int port, nf;
    dn_status rc;
    if (!c) return dn_fail(DN_ERR_ARG, "mqtt: missing config");
    if ((rc = dn_mqtt_parse_url(c->url, host, sizeof host, &port))) return rc;
    if (!c->topic || !dn_mqtt_filter_valid(c->topic))
        return dn_fail(DN_ERR_ARG, "mqtt topic '%s': not a valid topic filter", c->topic ? c->topic : "");
    if (c->group && (!*c->group || strpbrk(c->group, "/+#") || !dn_utf8_printable(c->group)))
        return dn_fail(DN_ERR_ARG, "mqtt group '%s': must be non-empty without '/', '+', '#'", c->group);
    if (!c->client_id || !*c->client_id || strlen(c->client_id) > 128 ||
        !dn_utf8_printable(c->client_id))
        return dn_fail(DN_ERR_ARG, "mqtt client id '%s': must be 1..128 printable characters", c->client_id ? c->client_id : "");
    if ((c->username && (strlen(c->username) > 65535 || !dn_utf8_printable(c->username))) ||
        (c->password && strlen(c->password) > 65535))
        return dn_fail(DN_ERR_ARG, "mqtt credentials: user name must be printable UTF-8, both at most 65535 bytes");
    if (c->dead_letter && (!*c->dead_letter || strpbrk(c->dead_letter, "+#")))
        return dn_fail(DN_ERR_ARG, "mqtt dead-letter topic '%s': must be a topic name without wildcards", c->dead_letter);
    if ((rc = dn_mqtt_parse_fields(c->topic, c->fields, NULL, &nf))) return rc;
    if (c->file_root) {
        struct stat stt;
        if (stat(c->file_root, &stt) || !S_ISDIR(stt.st_mode))
            return dn_fail(DN_ERR_IO, "mqtt file root %s: not a directory", c->file_root);
    }
    return DN_OK;
}

dn_status dn_mqtt_in_start(dn_pipeline *s, const dn_mqtt_in_config *c, dn_mqtt_in **out) {
    *out = NULL;
    dn_status rc = dn_mqtt_in_check(c);
    if (rc) return rc;
    if (!s) return dn_fail(DN_ERR_ARG, "mqtt: missing pipeline");
    if (c->dead_letter && !c->bus) return dn_fail(DN_ERR_ARG, "mqtt dead-letter topic needs the result bus");
    dn_mqtt_in *m = dn_calloc(1, sizeof *m);
    if (!m) return DN_ERR_NOMEM;
    m->fd = -1;
    m->stop_pipe[0] = m->stop_pipe[1] = -1;
    pthread_mutex_init(&m->mu, NULL);
    pthread_mutex_init(&m->wmu, NULL);
    pthread_cond_init(&m->cv, NULL);
    if ((rc = dn_mqtt_parse_url(c->url, m->host, sizeof m->host, &m->port))) goto fail;
    m->s = s;
    m->c = *c;
    m->c.url = dn_strdup(c->url);
    m->c.topic = dn_strdup(c->topic);
    m->c.group = c->group ? dn_strdup(c->group) : NULL;
    m->c.fields = NULL;
    m->c.client_id = dn_strdup(c->client_id);
    m->c.file_root = NULL;
    m->c.dead_letter = c->dead_letter ? dn_strdup(c->dead_letter) : NULL;
    m->c.username = c->username ? dn_strdup(c->username) : NULL;
    m->c.password = c->password ? dn_strdup(c->password) : NULL;
    if ((c->username && !m->c.username) || (c->password && !m->c.password)) { rc = DN_ERR_NOMEM; goto fail; }
    if (!m->c.max_payload) m->c.max_payload = 16u << 20;
    if (m->c.inflight <= 0) m->c.inflight = 4;
    if (m->c.inflight > 256) m->c.inflight = 256;
    if (m->c.session_expiry <= 0) m->c.session_expiry = 86400;
    if (m->c.keepalive <= 0) m->c.keepalive = 30;
    size_t sl = strlen(c->topic) + (c->group ? strlen(c->group) : 0) + 16;
    m->sub = dn_malloc(sl);
    if (!m->sub || !m->c.url || !m->c.topic || !m->c.client_id || (c->group && !m->c.group) ||
        (c->dead_letter && !m->c.dead_letter)) { rc = DN_ERR_NOMEM; goto fail; }
    if (c->group) snprintf(m->sub, sl, "$share/%s/%s", c->group, c->topic);
    else snprintf(m->sub, sl, "%s", c->topic);
    if ((rc = dn_mqtt_parse_fields(c->topic, c->fields, m->fields, &m->nfields))) goto fail;
    if (c->file_root && !realpath(c->file_root, m->root)) {
        rc = dn_fail(DN_ERR_IO, "mqtt file root %s: %s", c->file_root, strerror(errno));
        goto fail;
    }
    if (pipe2(m->stop_pipe, O_CLOEXEC)) { rc = dn_fail(DN_ERR_IO, "mqtt: pipe: %s", strerror(errno)); goto fail; }
    m->handlers = dn_calloc((size_t)m->c.inflight, sizeof *m->handlers);
    if (!m->handlers) { rc = DN_ERR_NOMEM; goto fail; }
    for (int i = 0; i < m->c.inflight; i++) {
        if (pthread_create(&m->handlers[i], NULL, handler_main, m)) {
            rc = dn_fail(DN_ERR_IO, "mqtt: cannot start handler threads");
            goto fail;
        }
        m->nhandlers++;
    }
    if (pthread_create(&m->reader, NULL, reader_main, m)) { rc = dn_fail(DN_ERR_IO, "mqtt: cannot start reader"); goto fail; }
    m->reader_started = 1;
    *out = m;
    return DN_OK;
fail:
    dn_mqtt_in_stop(m);
    return rc;
}

void dn_mqtt_in_stop(dn_mqtt_in *m) {
    if (!m) return;
    /* handlers first: a message being classified is finished and acknowledged while
     * the connection is still up; then the reader disconnects (session kept) */
    pthread_mutex_lock(&m->mu);
    m->stop = 1;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    for (int i = 0; i < m->nhandlers; i++) pthread_join(m->handlers[i], NULL);
    if (m->stop_pipe[1] >= 0 && write(m->stop_pipe[1], "x", 1) < 0) { /* the reader polls it */ }
    if (m->reader_started) pthread_join(m->reader, NULL);
    while (m->head) {
        msg *x = m->head;
        m->head = x->next;
        msg_free(x);
    }
    for (int i = 0; i < m->nfields; i++) free(m->fields[i]);
    free(m->handlers);
    free(m->sub);
    free((char *)m->c.url);
    free((char *)m->c.topic);
    free((char *)m->c.group);
    free((char *)m->c.client_id);
    free((char *)m->c.dead_letter);
    free((char *)m->c.username);
    if (m->c.password) explicit_bzero((char *)m->c.password, strlen(m->c.password));
    free((char *)m->c.password);
    if (m->stop_pipe[0] >= 0) close(m->stop_pipe[0]);
    if (m->stop_pipe[1] >= 0) close(m->stop_pipe[1]);
    pthread_mutex_destroy(&m->mu);
    pthread_mutex_destroy(&m->wmu);
    pthread_cond_destroy(&m->cv);
    free(m);
}
