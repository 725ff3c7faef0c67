/* MQTT ingestion: the wire and the connection (see mqtt_in_int.h): fixed-header
 * packets written under the write lock, reads with a deadline that a stop request
 * interrupts, TCP connect with TCP_NODELAY, and the MQTT 5 CONNECT/CONNACK exchange. */
#include "serve/mqtt_in_int.h"
#include "core/core.h"
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------------------ wire */

/* Sends fixed header (type, flags) + body as one packet. Caller holds wmu. */
int mq_send_packet(dn_mqtt_in *m, unsigned type, unsigned flags, const dn_mqtt_wbuf *body) {
    if (m->fd < 0) return -1;
    dn_mqtt_wbuf h = {0};
    if (dn_mqtt_frame(&h, type, flags, body)) { free(h.p); return -1; }
    size_t off = 0;
    int rc = 0;
    while (off < h.n) {
        ssize_t w = send(m->fd, h.p + off, h.n - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { rc = -1; break; }
        off += (size_t)w;
    }
    free(h.p);
    if (!rc) m->last_send = dn_now();
    else shutdown(m->fd, SHUT_RDWR); /* the reader notices and reconnects */
    return rc;
}

/* Reads exactly n bytes (buf may be NULL: discard). 0 ok, -1 error/closed/stop. */
int mq_read_exact(dn_mqtt_in *m, int fd, uint8_t *buf, size_t n, int timeout_s) {
    uint8_t scratch[4096];
    double deadline = dn_now() + timeout_s;
    while (n) {
        struct pollfd pf[2] = {{fd, POLLIN, 0}, {m->stop_pipe[0], POLLIN, 0}};
        int left = (int)((deadline - dn_now()) * 1000);
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
int mq_read_header(dn_mqtt_in *m, int fd, uint8_t *b0, size_t *rem, int timeout_s) {
    if (mq_read_exact(m, fd, b0, 1, timeout_s)) return -1;
    uint8_t d[4];
    for (size_t i = 0; i < 4; i++) {
        size_t used;
        if (mq_read_exact(m, fd, &d[i], 1, timeout_s)) return -1;
        int k = dn_mqtt_remaining_len(d, i + 1, rem, &used);
        if (k) return k > 0 ? 0 : -1; /* -1: malformed */
    }
    return -1;
}

/* ------------------------------------------------------------------ connection */

int mq_tcp_connect(dn_mqtt_in *m) {
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

/* Sends one packet on fd before the connection is published to the handlers. */
int mq_send_on(dn_mqtt_in *m, int fd, unsigned type, unsigned flags, dn_mqtt_wbuf *body) {
    pthread_mutex_lock(&m->wmu);
    m->fd = fd;
    int rc = mq_send_packet(m, type, flags, body);
    m->fd = -1;
    pthread_mutex_unlock(&m->wmu);
    free(body->p);
    return rc;
}

/* CONNECT + CONNACK + SUBSCRIBE on a fresh socket. 0 on success. The broker may send
 * (redelivered) PUBLISHes before the SUBACK: the caller's read loop handles both. */
int mq_handshake(dn_mqtt_in *m, int fd, char *why, size_t whyn) {
    dn_mqtt_wbuf b = {0};
    dn_mqtt_connect_body(&b, m->c.client_id, m->c.username, m->c.password, m->c.keepalive,
                         (uint32_t)m->c.session_expiry, (unsigned)m->c.inflight);
    if (mq_send_on(m, fd, DN_MQTT_CONNECT, 0, &b)) { snprintf(why, whyn, "cannot send CONNECT"); return -1; }
    uint8_t b0;
    size_t rem;
    uint8_t buf[512];
    unsigned code = 0;
    if (mq_read_header(m, fd, &b0, &rem, 10) || (b0 >> 4) != DN_MQTT_CONNACK || rem > sizeof buf ||
        mq_read_exact(m, fd, buf, rem, 10) || dn_mqtt_decode_connack(buf, rem, &code)) {
        snprintf(why, whyn, "no CONNACK");
        return -1;
    }
    if (code) {
        snprintf(why, whyn, "broker refused the connection (reason code 0x%02x)", code);
        return -1;
    }
    dn_mqtt_wbuf s = {0};
    dn_mqtt_subscribe_body(&s, 1, m->sub, 1);
    if (mq_send_on(m, fd, DN_MQTT_SUBSCRIBE, 2, &s)) { snprintf(why, whyn, "cannot send SUBSCRIBE"); return -1; }
    return 0;
}

