/* Header deadline for the HTTP server (issue 9 row 2, slowloris): a client that trickles
 * header lines never trips libmicrohttpd's inactivity timeout, so a watchdog thread shuts
 * down every connection whose current request has not completed its headers within
 * header_timeout seconds (counted from the connection start, or from the end of the
 * previous request on a kept-alive connection); libmicrohttpd then closes it.
 *
 * Wiring (http.c): dn_connguard_notify as MHD_OPTION_NOTIFY_CONNECTION with the guard as
 * its closure; dn_connguard_headers_done from the first access-handler call of a request;
 * dn_connguard_request_done from the request-completed callback.
 *
 * Ownership: dn_connguard_start returns a guard owned by the caller; dn_connguard_stop
 * joins its thread and frees it, after the daemon was stopped (stopping it still sends
 * CLOSED notifications to the guard) and before the pipeline it logs to is closed. Thread-safety: the three hooks may run on
 * any libmicrohttpd thread; libmicrohttpd reports CLOSED before it closes the socket, so a
 * descriptor in the guard's list is always its connection's. */
#ifndef DN_SERVE_CONNGUARD_H
#define DN_SERVE_CONNGUARD_H
#include "defectnet.h"
#include <microhttpd.h>

struct dn_pipeline;
typedef struct dn_connguard dn_connguard;

/* log: where "closed N connections ..." lines go (dn_pipeline_log). */
dn_status dn_connguard_start(int header_timeout, const struct dn_pipeline *log, dn_connguard **out);
void dn_connguard_stop(dn_connguard *g);
void dn_connguard_notify(void *guard, struct MHD_Connection *c, void **socket_context,
                         enum MHD_ConnectionNotificationCode toe);
void dn_connguard_headers_done(struct MHD_Connection *c);
void dn_connguard_request_done(struct MHD_Connection *c);

#endif
