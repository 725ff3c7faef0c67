/* Header deadline watchdog (see connguard.h). */
#include "serve/connguard.h"
#include "core/core.h"
#include "serve/pipeline.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* One open TCP connection (libmicrohttpd's socket context). */
typedef struct conn_track {
    struct conn_track *prev, *next;
    int fd;
    _Atomic double since;           /* connection start, or end of its previous request */
    atomic_int headers_done;        /* the current request's headers are complete */
    int cut;                        /* shut down by the watchdog */
} conn_track;

struct dn_connguard {
    int header_timeout;
    const dn_pipeline *log;
    pthread_mutex_t mu;             /* guards conns, every conn_track's links and cut */
    conn_track *conns;
    pthread_t th;
    atomic_int stop;
};

static conn_track *track_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

void dn_connguard_headers_done(struct MHD_Connection *c) {
    conn_track *t = track_of(c);
    if (t) atomic_store(&t->headers_done, 1);
}

void dn_connguard_request_done(struct MHD_Connection *c) {
    conn_track *t = track_of(c);
    if (!t) return;
    atomic_store(&t->since, dn_now()); /* a next request on this connection gets its own deadline */
    atomic_store(&t->headers_done, 0);
}

void dn_connguard_notify(void *guard, struct MHD_Connection *c, void **socket_context,
                         enum MHD_ConnectionNotificationCode toe) {
    dn_connguard *g = guard;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn_track *t = ci ? dn_calloc(1, sizeof *t) : NULL;
        *socket_context = t;
        if (!t) return; /* not tracked: only the inactivity timeout applies to it */
        t->fd = ci->connect_fd;
        atomic_init(&t->since, dn_now());
        atomic_init(&t->headers_done, 0);
        pthread_mutex_lock(&g->mu);
        t->next = g->conns;
        if (g->conns) g->conns->prev = t;
        g->conns = t;
        pthread_mutex_unlock(&g->mu);
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        conn_track *t = *socket_context;
        if (!t) return;
        pthread_mutex_lock(&g->mu);
        if (t->prev) t->prev->next = t->next;
        else g->conns = t->next;
        if (t->next) t->next->prev = t->prev;
        pthread_mutex_unlock(&g->mu);
        free(t);
        *socket_context = NULL;
    }
}

static void *watchdog(void *arg) {
    dn_connguard *g = arg;
    while (!atomic_load(&g->stop)) {
        usleep(200000);
        double now = dn_now();
        int cut = 0;
        pthread_mutex_lock(&g->mu);
        for (conn_track *t = g->conns; t; t = t->next) {
            if (t->cut || atomic_load(&t->headers_done) || now - atomic_load(&t->since) <= g->header_timeout) continue;
            shutdown(t->fd, SHUT_RDWR);
            t->cut = 1;
            cut++;
        }
        pthread_mutex_unlock(&g->mu);
        if (cut) dn_pipeline_log(g->log, "closed %d connection%s without complete request headers after %d s", cut,
                                 cut > 1 ? "s" : "", g->header_timeout);
    }
    return NULL;
}

dn_status dn_connguard_start(int header_timeout, const dn_pipeline *log, dn_connguard **out) {
    *out = NULL;
    dn_connguard *g = dn_calloc(1, sizeof *g);
    if (!g) return DN_ERR_NOMEM;
    g->header_timeout = header_timeout;
    g->log = log;
    pthread_mutex_init(&g->mu, NULL);
    atomic_init(&g->stop, 0);
    if (pthread_create(&g->th, NULL, watchdog, g)) {
        pthread_mutex_destroy(&g->mu);
        free(g);
        return dn_fail(DN_ERR_NOMEM, "serve: cannot start the header watchdog thread");
    }
    *out = g;
    return DN_OK;
}

void dn_connguard_stop(dn_connguard *g) {
    if (!g) return;
    atomic_store(&g->stop, 1);
    pthread_join(g->th, NULL);
    pthread_mutex_destroy(&g->mu);
    free(g);
}
