/* MQTT 5 ingestion with PUBACK after commit (see mqtt_in.h).
 *
 * Threads: one reader owns the connection (connect with backoff, subscribe, read
 * packets, keepalive) and puts incoming QoS 1 messages on a queue; `inflight`
 * handlers take them, classify them through dn_pipeline_classify (which commits) and
 * then send the PUBACK. Writes to the socket are serialised by wmu. Every message
 * carries the generation of the connection it came on: a PUBACK is only sent on that
 * same connection (after a reconnect the broker redelivers what was not
 * acknowledged, and the redelivery is answered from the store). */
#include "serve/mqtt_in.h"
#include "core/core.h"
#include "core/json.h"
#include "serve/bus.h"
#include "serve/kafka.h"
#include "serve/metrics.h"
#include "serve/pipeline.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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

#define META_MAX 128          /* bytes per metadata value */
#define HEAD_MAX (64u << 10)  /* topic + properties of one PUBLISH */

enum { P_CONNECT = 1, P_CONNACK = 2, P_PUBLISH = 3, P_PUBACK = 4, P_SUBSCRIBE = 8, P_SUBACK = 9,
       P_PINGREQ = 12, P_PINGRESP = 13, P_DISCONNECT = 14, P_AUTH = 15 };
enum { F_LINE, F_STATION, F_CAMERA, F_PART, F_ID, NF };
static const char *const FIELD_NAMES[NF] = {"line", "station", "camera", "part", "id"};

typedef struct msg {
    struct msg *next;
    uint64_t gen;             /* connection generation it arrived on */
    uint16_t pid;             /* packet id (QoS 1), 0 for QoS 0 */
    int qos, dup, oversized;
    char *topic;
    char *meta[NF];           /* from user properties (owned) */
    int bad_meta;             /* a user property was not valid text / too long */
    char *ctype;              /* content type property */
    uint8_t *payload;
    size_t len;
} msg;

struct dn_mqtt_in {
    dn_pipeline *s;
    dn_mqtt_in_config c;
    char host[256];
    int port;
    char *sub;                /* the filter actually subscribed ("$share/G/F" or F) */
    char *fields[16];         /* names of the '+' levels (NULL = unnamed) */
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

/* ------------------------------------------------------------------ helpers */

static double mono(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

DN_PRINTF(2, 3) static void mlog(const dn_mqtt_in *m, const char *fmt, ...) {
    if (!dn_pipeline_log_enabled(m->s)) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "serve: mqtt: %s\n", buf);
}

int dn_mqtt_valid_text(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f) return 0;
            i++;
            continue;
        }
        int k;
        uint32_t cp;
        if ((c & 0xe0) == 0xc0) { k = 1; cp = c & 0x1f; }
        else if ((c & 0xf0) == 0xe0) { k = 2; cp = c & 0x0f; }
        else if ((c & 0xf8) == 0xf0) { k = 3; cp = c & 0x07; }
        else return 0;
        for (int j = 1; j <= k; j++) {
            if (i + j >= n || (p[i + j] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (p[i + j] & 0x3f);
        }
        /* overlong forms, surrogates, beyond U+10FFFF, C1 controls */
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000)) return 0;
        if ((cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff || (cp >= 0x80 && cp < 0xa0)) return 0;
        i += (size_t)k + 1;
    }
    return 1;
}

dn_status dn_mqtt_parse_url(const char *url, char *host, size_t hn, int *port) {
    const char *p = NULL;
    if (!url) return dn_fail(DN_ERR_ARG, "mqtt: missing broker URL");
    if (!strncmp(url, "mqtt://", 7)) p = url + 7;
    else if (!strncmp(url, "tcp://", 6)) p = url + 6;
    else return dn_fail(DN_ERR_ARG, "%s: broker URL must be mqtt://HOST[:PORT]", url);
    const char *end = p + strcspn(p, "/?");
    if (*end) return dn_fail(DN_ERR_ARG, "%s: broker URL must be mqtt://HOST[:PORT] (no path)", url);
    const char *colon = NULL;
    if (*p == '[') { /* [v6]:port */
        const char *rb = strchr(p, ']');
        if (!rb) return dn_fail(DN_ERR_ARG, "%s: unterminated IPv6 address", url);
        if ((size_t)(rb - p - 1) >= hn) return dn_fail(DN_ERR_ARG, "%s: host too long", url);
        snprintf(host, hn, "%.*s", (int)(rb - p - 1), p + 1);
        colon = rb[1] == ':' ? rb + 1 : NULL;
        if (rb[1] && !colon) return dn_fail(DN_ERR_ARG, "%s: bad broker URL", url);
    } else {
        colon = strchr(p, ':');
        size_t l = colon ? (size_t)(colon - p) : (size_t)(end - p);
        if (l >= hn) return dn_fail(DN_ERR_ARG, "%s: host too long", url);
        snprintf(host, hn, "%.*s", (int)l, p);
    }
    if (!host[0]) return dn_fail(DN_ERR_ARG, "%s: broker URL has no host", url);
    *port = 1883;
    if (colon) {
        char *e;
        long v = strtol(colon + 1, &e, 10);
        if (e == colon + 1 || *e || v < 1 || v > 65535) return dn_fail(DN_ERR_ARG, "%s: bad port", url);
        *port = (int)v;
    }
    return DN_OK;
}

static void msg_free(msg *x) {
    if (!x) return;
    free(x->topic);
    for (int i = 0; i < NF; i++) free(x->meta[i]);
    free(x->ctype);
    free(x->payload);
    free(x);
}

/* ------------------------------------------------------------------ wire */

typedef struct { uint8_t *p; size_t n, cap; int oom; } wbuf;
static void wb_put(wbuf *b, const void *d, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t c = b->cap ? b->cap * 2 : 256;
        while (c < b->n + n) c *= 2;
        uint8_t *q = dn_realloc(b->p, c);
        if (!q) { b->oom = 1; return; }
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void wb_u8(wbuf *b, unsigned v) { uint8_t x = (uint8_t)v; wb_put(b, &x, 1); }
static void wb_u16(wbuf *b, unsigned v) { uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v}; wb_put(b, x, 2); }
static void wb_u32(wbuf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    wb_put(b, x, 4);
}
static void wb_str(wbuf *b, const char *s) { size_t l = strlen(s); wb_u16(b, (unsigned)l); wb_put(b, s, l); }
static void wb_varint(wbuf *b, size_t v) {
    do {
        unsigned d = v % 128;
        v /= 128;
        wb_u8(b, v ? d | 128 : d);
    } while (v);
}

/* Sends fixed header (type, flags) + body as one packet. Caller holds wmu. */
static int send_packet(dn_mqtt_in *m, unsigned type, unsigned flags, const wbuf *body) {
    if (m->fd < 0) return -1;
    wbuf h = {0};
    wb_u8(&h, type << 4 | flags);
    wb_varint(&h, body ? body->n : 0);
    if (body) wb_put(&h, body->p, body->n);
    if (h.oom || (body && body->oom)) { free(h.p); return -1; }
    size_t off = 0;
    int rc = 0;
    while (off < h.n) {
        ssize_t w = send(m->fd, h.p + off, h.n - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { rc = -1; break; }
        off += (size_t)w;
    }
    free(h.p);
    if (!rc) m->last_send = mono();
    else shutdown(m->fd, SHUT_RDWR); /* the reader notices and reconnects */
    return rc;
}

/* Reads exactly n bytes (buf may be NULL: discard). 0 ok, -1 error/closed/stop. */
static int read_exact(dn_mqtt_in *m, int fd, uint8_t *buf, size_t n, int timeout_s) {
    uint8_t scratch[4096];
    double deadline = mono() + timeout_s;
    while (n) {
        struct pollfd pf[2] = {{fd, POLLIN, 0}, {m->stop_pipe[0], POLLIN, 0}};
        int left = (int)((deadline - mono()) * 1000);
        if (left <= 0) return -1;
        int r = poll(pf, 2, left);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0 || pf[1].revents) return -1;
        size_t want = buf ? n : (n < sizeof scratch ? n : sizeof scratch);
        ssize_t got = recv(fd, buf ? buf : scratch, want, 0);
        if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (got <= 0) return -1;
        if (buf) buf += got;
        n -= (size_t)got;
    }
    return 0;
}

/* Reads the fixed header: type/flags byte and remaining length. */
static int read_header(dn_mqtt_in *m, int fd, uint8_t *b0, size_t *rem, int timeout_s) {
    if (read_exact(m, fd, b0, 1, timeout_s)) return -1;
    size_t v = 0, mul = 1;
    for (int i = 0; i < 4; i++) {
        uint8_t d;
        if (read_exact(m, fd, &d, 1, timeout_s)) return -1;
        v += (size_t)(d & 127) * mul;
        if (!(d & 128)) { *rem = v; return 0; }
        mul *= 128;
    }
    return -1; /* malformed */
}

/* Cursor over a received buffer. */
typedef struct { const uint8_t *p; size_t n, i; int bad; } rd;
static unsigned rd_u8(rd *r) { if (r->i + 1 > r->n) { r->bad = 1; return 0; } return r->p[r->i++]; }
static unsigned rd_u16(rd *r) {
    if (r->i + 2 > r->n) { r->bad = 1; return 0; }
    unsigned v = (unsigned)r->p[r->i] << 8 | r->p[r->i + 1];
    r->i += 2;
    return v;
}
static size_t rd_varint(rd *r) {
    size_t v = 0, mul = 1;
    for (int i = 0; i < 4; i++) {
        unsigned d = rd_u8(r);
        v += (size_t)(d & 127) * mul;
        if (!(d & 128)) return v;
        mul *= 128;
    }
    r->bad = 1;
    return 0;
}
/* A length-prefixed string/binary: pointer into the buffer + length. */
static const char *rd_str(rd *r, size_t *len) {
    size_t l = rd_u16(r);
    if (r->bad || r->i + l > r->n) { r->bad = 1; return NULL; }
    const char *s = (const char *)r->p + r->i;
    r->i += l;
    *len = l;
    return s;
}
static void rd_skip(rd *r, size_t n) { if (r->i + n > r->n) r->bad = 1; else r->i += n; }

/* Skips or interprets one property block; PUBLISH user properties and content type
 * go into x (when not NULL). */
static void rd_props(rd *r, msg *x) {
    size_t len = rd_varint(r);
    if (r->bad || r->i + len > r->n) { r->bad = 1; return; }
    rd sub = {r->p + r->i, len, 0, 0};
    r->i += len;
    while (sub.i < sub.n && !sub.bad) {
        unsigned id = (unsigned)rd_varint(&sub);
        size_t l1, l2;
        const char *a, *b;
        switch (id) {
        case 0x01: case 0x17: case 0x19: case 0x24: case 0x25: case 0x28: case 0x29: case 0x2a:
            rd_skip(&sub, 1); break;
        case 0x13: case 0x21: case 0x22: case 0x23: rd_skip(&sub, 2); break;
        case 0x02: case 0x11: case 0x18: case 0x27: rd_skip(&sub, 4); break;
        case 0x0b: rd_varint(&sub); break;
        case 0x03: /* content type */
            a = rd_str(&sub, &l1);
            if (x && a && !x->ctype) x->ctype = dn_strndup(a, l1);
            break;
        case 0x08: case 0x09: case 0x12: case 0x15: case 0x16: case 0x1a: case 0x1c: case 0x1f:
            rd_str(&sub, &l1); break;
        case 0x26: /* user property */
            a = rd_str(&sub, &l1);
            b = rd_str(&sub, &l2);
            if (!x || sub.bad) break;
            for (int f = 0; f < NF; f++) {
                if (strlen(FIELD_NAMES[f]) != l1 || memcmp(a, FIELD_NAMES[f], l1)) continue;
                if (l2 == 0 || l2 > META_MAX || !dn_mqtt_valid_text(b, l2)) { x->bad_meta = 1; break; }
                free(x->meta[f]);
                x->meta[f] = dn_strndup(b, l2);
            }
            break;
        default: sub.bad = 1;
        }
    }
    if (sub.bad) r->bad = 1;
}

/* ------------------------------------------------------------------ connection */

static int tcp_connect(dn_mqtt_in *m) {
    char ps[16];
    snprintf(ps, sizeof ps, "%d", m->port);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(m->host, ps, &hints, &ai)) return -1;
    int fd = -1;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) && errno != EINPROGRESS) { close(fd); fd = -1; continue; }
        struct pollfd pf = {fd, POLLOUT, 0};
        int err = 0;
        socklen_t el = sizeof err;
        if (poll(&pf, 1, 5000) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) || err) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    }
    return fd;
}

/* CONNECT + CONNACK + SUBSCRIBE + SUBACK on a fresh socket. 0 on success. */
static int handshake(dn_mqtt_in *m, int fd, char *why, size_t whyn) {
    wbuf b = {0};
    wb_str(&b, "MQTT");
    wb_u8(&b, 5);
    /* flags: clean start = 0 (resume the session); user name / password when set */
    wb_u8(&b, (m->c.username ? 0x80u : 0u) | (m->c.password ? 0x40u : 0u));
    wb_u16(&b, (unsigned)m->c.keepalive);
    wbuf pr = {0};
    wb_u8(&pr, 0x11);                   /* session expiry interval */
    wb_u32(&pr, (uint32_t)m->c.session_expiry);
    wb_u8(&pr, 0x21);                   /* receive maximum = handlers */
    wb_u16(&pr, (unsigned)m->c.inflight);
    wb_varint(&b, pr.n);
    wb_put(&b, pr.p, pr.n);
    free(pr.p);
    wb_str(&b, m->c.client_id);
    if (m->c.username) wb_str(&b, m->c.username);
    if (m->c.password) wb_str(&b, m->c.password);
    pthread_mutex_lock(&m->wmu);
    m->fd = fd;
    int rc = send_packet(m, P_CONNECT, 0, &b);
    m->fd = -1;
    pthread_mutex_unlock(&m->wmu);
    free(b.p);
    if (rc) { snprintf(why, whyn, "cannot send CONNECT"); return -1; }
    uint8_t b0;
    size_t rem;
    uint8_t buf[512];
    if (read_header(m, fd, &b0, &rem, 10) || (b0 >> 4) != P_CONNACK || rem < 2 || rem > sizeof buf ||
        read_exact(m, fd, buf, rem, 10)) {
        snprintf(why, whyn, "no CONNACK");
        return -1;
    }
    if (buf[1]) {
        snprintf(why, whyn, "broker refused the connection (reason code 0x%02x)", buf[1]);
        return -1;
    }
    int present = buf[0] & 1;
    /* SUBSCRIBE (QoS 1, no-local 0 as shared subscriptions require) */
    wbuf s = {0};
    wb_u16(&s, 1);
    wb_u8(&s, 0);                       /* no properties */
    wb_str(&s, m->sub);
    wb_u8(&s, 1);
    pthread_mutex_lock(&m->wmu);
    m->fd = fd;
    rc = send_packet(m, P_SUBSCRIBE, 2, &s);
    m->fd = -1;
    pthread_mutex_unlock(&m->wmu);
    free(s.p);
    if (rc) { snprintf(why, whyn, "cannot send SUBSCRIBE"); return -1; }
    /* the broker may already send (redelivered) PUBLISHes before the SUBACK: the
     * caller's read loop handles them; here only wait for SUBACK when it comes first */
    (void)present;
    return 0;
}

/* ------------------------------------------------------------------ handlers */

static void enqueue(dn_mqtt_in *m, msg *x) {
    int dup = x->dup; /* x belongs to the handlers once it is on the queue */
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
    if (x->qos < 1) return;
    pthread_mutex_lock(&m->mu);
    uint64_t gen = m->gen;
    pthread_mutex_unlock(&m->mu);
    if (gen != x->gen) return; /* the broker redelivers it on the new connection */
    wbuf b = {0};
    wb_u16(&b, x->pid);
    pthread_mutex_lock(&m->wmu);
    int rc = send_packet(m, P_PUBACK, 0, &b);
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
    mlog(m, "%s: rejected: %s", x->topic, problem);
    count(m, &m->st.rejected, "rejected");
    if (m->c.dead_letter && m->c.bus) {
        /* the original payload (when it was read: not for oversized ones) */
        const char *from = dn_mqtt_valid_text(x->topic, strlen(x->topic)) ? x->topic : "?";
        if (dn_bus_dead_letter(m->c.bus, m->c.dead_letter, x->payload, x->payload ? x->len : 0, from, problem, 5000))
            mlog(m, "%s: dead letter not published: %s", x->topic, dn_last_error());
    }
    ack(m, x);
}

/* Topic levels matched by '+' in the filter, named by fields. */
static void topic_fields(dn_mqtt_in *m, msg *x, char *problem, size_t pn) {
    const char *f = m->c.topic, *t = x->topic;
    int k = 0;
    while (*f && *t) {
        size_t fl = strcspn(f, "/"), tl = strcspn(t, "/");
        if (fl == 1 && *f == '+') {
            const char *name = k < m->nfields ? m->fields[k] : NULL;
            k++;
            if (name) {
                for (int i = 0; i < NF; i++) {
                    if (strcmp(name, FIELD_NAMES[i]) || x->meta[i]) continue; /* user property wins */
                    if (!tl || tl > META_MAX || !dn_mqtt_valid_text(t, tl)) {
                        snprintf(problem, pn, "topic level %d is not a valid %s", k, name);
                        return;
                    }
                    x->meta[i] = dn_strndup(t, tl);
                }
            }
        } else if (fl == 1 && *f == '#') {
            return;
        }
        f += fl;
        t += tl;
        if (*f == '/') f++;
        if (*t == '/') t++;
    }
}

/* Reads the envelope's file into x->payload. Returns NULL or the problem. */
static const char *envelope(dn_mqtt_in *m, msg *x, char *problem, size_t pn) {
    char err[160];
    dn_json *j = dn_json_parse((const char *)x->payload, x->len, err, sizeof err);
    if (!j) { snprintf(problem, pn, "JSON envelope: %s", err); return problem; }
    const char *out = NULL;
    if (dn_json_type_of(j) != DN_JSON_OBJ) { out = "JSON envelope is not an object"; goto done; }
    for (int i = 0; i < NF; i++) {
        const dn_json *v = dn_json_get(j, FIELD_NAMES[i]);
        if (!v) continue;
        const char *s = dn_json_str(v, NULL);
        if (!s || !*s || strlen(s) > META_MAX || !dn_mqtt_valid_text(s, strlen(s))) {
            snprintf(problem, pn, "JSON envelope: \"%s\" must be a non-empty string of at most %d bytes without control characters",
                     FIELD_NAMES[i], META_MAX);
            out = problem;
            goto done;
        }
        if (!x->meta[i]) x->meta[i] = dn_strdup(s);
    }
    const char *file = dn_json_str(dn_json_get(j, "file"), NULL);
    if (!file || !*file) { out = "JSON envelope: \"file\" (a path relative to the file root) is required"; goto done; }
    if (!m->root[0]) { out = "JSON envelope refused: no file root configured (--mqtt-file-root)"; goto done; }
    if (file[0] == '/' || strlen(file) > 1024) { out = "JSON envelope: \"file\" must be a relative path"; goto done; }
    for (const char *p = file; *p;) { /* no ".." component */
        size_t l = strcspn(p, "/");
        if (l == 2 && p[0] == '.' && p[1] == '.') { out = "JSON envelope: \"file\" must not contain '..'"; goto done; }
        p += l;
        if (*p == '/') p++;
    }
    char joined[PATH_MAX + 1100], real[PATH_MAX];
    snprintf(joined, sizeof joined, "%s/%s", m->root, file);
    if (!realpath(joined, real)) { snprintf(problem, pn, "file %s: %s", file, strerror(errno)); out = problem; goto done; }
    size_t rl = strlen(m->root);
    if (strncmp(real, m->root, rl) || (real[rl] != '/' && real[rl] != 0)) {
        snprintf(problem, pn, "file %s resolves outside the file root", file);
        out = problem;
        goto done;
    }
    struct stat stt;
    if (stat(real, &stt) || !S_ISREG(stt.st_mode)) { snprintf(problem, pn, "file %s is not a regular file", file); out = problem; goto done; }
    if ((size_t)stt.st_size > m->c.max_payload) {
        snprintf(problem, pn, "file %s: %lld bytes, limit %zu", file, (long long)stt.st_size, m->c.max_payload);
        out = problem;
        goto done;
    }
    uint8_t *d = NULL;
    size_t n = 0;
    if (dn_read_file(real, m->c.max_payload, &d, &n)) { snprintf(problem, pn, "%s", dn_last_error()); out = problem; goto done; }
    free(x->payload);
    x->payload = d;
    x->len = n;
done:
    dn_json_free(j);
    return out;
}

/* The bus's view of a committed prediction: metadata of x, id/class of res, and
 * confidence/decision pulled out of the prediction JSON. */
static void make_result(const msg *x, const dn_classify_res *res, int duplicate, dn_bus_result *r) {
    memset(r, 0, sizeof *r);
    r->line = x->meta[F_LINE];
    r->station = x->meta[F_STATION];
    r->camera = x->meta[F_CAMERA];
    r->part = x->meta[F_PART];
    r->id = res->id;
    r->cls = res->cls;
    r->duplicate = duplicate;
    r->json = res->json;
    dn_json *j = res->json ? dn_json_parse(res->json, strlen(res->json), NULL, 0) : NULL;
    r->confidence = (float)dn_json_num(dn_json_get(j, "confidence"), 0);
    r->uncertain = !strcmp(dn_json_str(dn_json_get(j, "decision"), "accepted"), "uncertain");
    dn_json_free(j);
}

/* Kafka export and the result bus, before the input is acknowledged. */
static dn_status publish_result(dn_mqtt_in *m, msg *x, const dn_classify_res *res, int duplicate) {
    if (m->c.kafka) { /* key line/camera: one camera's records stay in order in one partition */
        dn_status rc = dn_kafka_export_prediction(m->c.kafka, x->meta[F_LINE], x->meta[F_CAMERA], res->json, 10000);
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
    mlog(m, "%s: prediction %lld: PLC handshake failed (%s): fail-safe verdict %s", x->topic, (long long)res->id, why, verdict);
    char detail[800];
    snprintf(detail, sizeof detail, "%s; fail-safe verdict %s", why, verdict);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    dn_outcome_row o = {res->id, "plc-handshake", "plc", x->topic, "failsafe", detail, 1, ts.tv_sec + ts.tv_nsec * 1e-9};
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
    if (x->bad_meta) {
        reject(m, x, "a user property (id/line/station/camera/part) is empty, longer than 128 bytes or not printable UTF-8");
        return;
    }
    topic_fields(m, x, problem, sizeof problem);
    if (problem[0]) { reject(m, x, problem); return; }
    size_t k = 0;
    while (k < x->len && (x->payload[k] == ' ' || x->payload[k] == '\n' || x->payload[k] == '\r' || x->payload[k] == '\t')) k++;
    int is_env = (x->ctype && !strncmp(x->ctype, "application/json", 16)) || (k < x->len && x->payload[k] == '{');
    const char *bad = is_env ? envelope(m, x, problem, sizeof problem) : NULL;
    if (bad) { reject(m, x, bad); return; }
    if (!x->meta[F_ID]) {
        reject(m, x, "no message id (user property \"id\" or the envelope's \"id\"): needed to record it exactly once");
        return;
    }
    if (!x->len) { reject(m, x, "empty payload"); return; }
    dn_classify_req rq = {0};
    rq.data = x->payload;
    rq.len = x->len;
    rq.line = x->meta[F_LINE];
    rq.station = x->meta[F_STATION];
    rq.camera = x->meta[F_CAMERA];
    rq.part = x->meta[F_PART];
    rq.request_id = x->meta[F_ID];
    rq.source = "mqtt";
    rq.source_path = x->topic;
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
            mlog(m, "%s: id %s %s; not acknowledged, retrying in %.1f s", x->topic, x->meta[F_ID], problem, backoff);
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
            mlog(m, "%s: id %s not committed, retrying in %.1f s: %s", x->topic, x->meta[F_ID], backoff,
                 res.json ? res.json : "");
            free(res.json);
        }
        double until = mono() + backoff;
        while (mono() < until) {
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
    x->qos = (b0 >> 1) & 3;
    x->dup = (b0 >> 3) & 1;
    /* the variable header (topic, packet id, properties) is small; read up to HEAD_MAX */
    size_t hn = rem < HEAD_MAX ? rem : HEAD_MAX;
    uint8_t *h = dn_malloc(hn ? hn : 1);
    if (!h || read_exact(m, fd, h, hn, 30)) { free(h); msg_free(x); return NULL; }
    rd r = {h, hn, 0, 0};
    size_t tl = 0;
    const char *t = rd_str(&r, &tl);
    if (x->qos) x->pid = (uint16_t)rd_u16(&r);
    rd_props(&r, x);
    if (r.bad || !t || x->qos > 2) { free(h); msg_free(x); return NULL; } /* malformed: drop the connection */
    x->topic = dn_strndup(t, tl);
    size_t body = rem - r.i; /* payload bytes, partly in h */
    x->len = body;
    if (body > m->c.max_payload) {
        x->oversized = 1;
        size_t inh = hn - r.i;
        if (read_exact(m, fd, NULL, body - inh, 60)) { free(h); msg_free(x); return NULL; }
    } else {
        x->payload = dn_malloc(body ? body : 1);
        if (!x->payload || !x->topic) { free(h); msg_free(x); return NULL; }
        size_t inh = hn - r.i;
        memcpy(x->payload, h + r.i, inh);
        if (read_exact(m, fd, x->payload + inh, body - inh, 60)) { free(h); msg_free(x); return NULL; }
    }
    free(h);
    if (!x->topic) { msg_free(x); return NULL; }
    return x;
}

static void set_connected(dn_mqtt_in *m, int fd, int up) {
    pthread_mutex_lock(&m->wmu);
    m->fd = up ? fd : -1;
    m->last_send = mono();
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
    if (handshake(m, fd, why, sizeof why)) {
        mlog(m, "%s:%d: %s", m->host, m->port, why);
        return 0;
    }
    set_connected(m, fd, 1);
    int subscribed = 0;
    double last_rx = mono();
    int ping_out = 0;
    for (;;) {
        struct pollfd pf[2] = {{fd, POLLIN, 0}, {m->stop_pipe[0], POLLIN, 0}};
        int r = poll(pf, 2, 1000);
        if (r < 0 && errno != EINTR) break;
        if (pf[1].revents) break;
        double now = mono();
        if (r > 0 && pf[0].revents) {
            uint8_t b0;
            size_t rem;
            if (read_header(m, fd, &b0, &rem, 30)) break;
            last_rx = now;
            unsigned type = b0 >> 4;
            if (type == P_PUBLISH) {
                msg *x = read_publish(m, fd, b0, rem);
                if (!x) { mlog(m, "malformed PUBLISH or connection lost, reconnecting"); break; }
                if (x->qos == 2) { mlog(m, "%s: QoS 2 message on a QoS 1 subscription, reconnecting", x->topic); msg_free(x); break; }
                enqueue(m, x);
            } else if (type == P_SUBACK) {
                uint8_t buf[64];
                if (rem > sizeof buf || read_exact(m, fd, buf, rem, 10)) break;
                rd rr = {buf, rem, 0, 0};
                rd_u16(&rr);
                rd_props(&rr, NULL);
                unsigned code = rd_u8(&rr);
                if (rr.bad || code > 2) {
                    mlog(m, "subscription to %s refused (reason code 0x%02x)", m->sub, code);
                    break;
                }
                if (!subscribed) mlog(m, "subscribed to %s on %s:%d as %s", m->sub, m->host, m->port, m->c.client_id);
                subscribed = 1;
            } else if (type == P_DISCONNECT) {
                uint8_t code = 0;
                if (rem && read_exact(m, fd, &code, 1, 5) == 0 && rem > 1) read_exact(m, fd, NULL, rem - 1, 5);
                mlog(m, "broker disconnected us (reason code 0x%02x)", code);
                break;
            } else {
                if (read_exact(m, fd, NULL, rem, 10)) break; /* PINGRESP, AUTH, ... */
                if (type == P_PINGRESP) ping_out = 0;
            }
        }
        /* keepalive: a PINGREQ when we have been quiet for half the interval; the
         * connection is dead when the broker is silent for 1.5 intervals */
        if (now - last_rx > 1.5 * m->c.keepalive) { mlog(m, "broker silent, reconnecting"); break; }
        pthread_mutex_lock(&m->wmu);
        if (!ping_out && mono() - m->last_send > m->c.keepalive / 2.0) {
            if (send_packet(m, P_PINGREQ, 0, NULL) == 0) ping_out = 1;
        }
        pthread_mutex_unlock(&m->wmu);
    }
    if (stopping(m)) { /* normal DISCONNECT: the session (and unacked messages) stays on the broker */
        wbuf b = {0};
        wb_u8(&b, 0);
        pthread_mutex_lock(&m->wmu);
        send_packet(m, P_DISCONNECT, 0, &b);
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
        int fd = tcp_connect(m);
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

static int valid_filter(const char *f) {
    if (!*f || strlen(f) > 1024 || !dn_mqtt_valid_text(f, strlen(f)) || !strncmp(f, "$share/", 7)) return 0;
    for (const char *p = f; *p;) {
        size_t l = strcspn(p, "/");
        if (memchr(p, '+', l) && l != 1) return 0;
        if (memchr(p, '#', l) && (l != 1 || p[l])) return 0;
        p += l;
        if (*p == '/') p++;
    }
    return 1;
}

/* Names of the '+' levels ("line,camera"; "_" = unnamed). names (16 slots, may be
 * NULL when only checking) receive copies, NULL for "_". */
static dn_status parse_fields(const char *topic, const char *fields, char **names, int *n) {
    *n = 0;
    if (!fields || !*fields) return DN_OK;
    int plus = 0;
    for (const char *p = topic; *p; p++) plus += *p == '+';
    for (const char *p = fields; *p;) {
        size_t l = strcspn(p, ",");
        if (*n >= 16) return dn_fail(DN_ERR_ARG, "mqtt fields '%s': too many", fields);
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)(l < 31 ? l : 31), p);
        int known = !strcmp(name, "_");
        for (int i = 0; i < NF; i++) known |= !strcmp(name, FIELD_NAMES[i]);
        if (!known || l > 31)
            return dn_fail(DN_ERR_ARG, "mqtt fields '%s': '%s' is not one of line, station, camera, part, id, _", fields, name);
        if (names) {
            names[*n] = NULL;
            if (strcmp(name, "_") && !(names[*n] = dn_strdup(name))) return DN_ERR_NOMEM;
        }
        (*n)++;
        p += l;
        if (*p == ',') p++;
    }
    if (*n > plus) return dn_fail(DN_ERR_ARG, "mqtt fields '%s': %d names for %d '+' levels in '%s'", fields, *n, plus, topic);
    return DN_OK;
}

dn_status dn_mqtt_in_check(const dn_mqtt_in_config *c) {
    char host[256];
    int port, nf;
    dn_status rc;
    if (!c) return dn_fail(DN_ERR_ARG, "mqtt: missing config");
    if ((rc = dn_mqtt_parse_url(c->url, host, sizeof host, &port))) return rc;
    if (!c->topic || !valid_filter(c->topic))
        return dn_fail(DN_ERR_ARG, "mqtt topic '%s': not a valid topic filter", c->topic ? c->topic : "");
    if (c->group && (!*c->group || strpbrk(c->group, "/+#") || !dn_mqtt_valid_text(c->group, strlen(c->group))))
        return dn_fail(DN_ERR_ARG, "mqtt group '%s': must be non-empty without '/', '+', '#'", c->group);
    if (!c->client_id || !*c->client_id || strlen(c->client_id) > 128 ||
        !dn_mqtt_valid_text(c->client_id, strlen(c->client_id)))
        return dn_fail(DN_ERR_ARG, "mqtt client id '%s': must be 1..128 printable characters", c->client_id ? c->client_id : "");
    if ((c->username && (strlen(c->username) > 65535 || !dn_mqtt_valid_text(c->username, strlen(c->username)))) ||
        (c->password && strlen(c->password) > 65535))
        return dn_fail(DN_ERR_ARG, "mqtt credentials: user name must be printable UTF-8, both at most 65535 bytes");
    if (c->dead_letter && (!*c->dead_letter || strpbrk(c->dead_letter, "+#")))
        return dn_fail(DN_ERR_ARG, "mqtt dead-letter topic '%s': must be a topic name without wildcards", c->dead_letter);
    if ((rc = parse_fields(c->topic, c->fields, NULL, &nf))) return rc;
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
    if ((rc = parse_fields(c->topic, c->fields, m->fields, &m->nfields))) goto fail;
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
