/* Result bus over libmosquitto (see bus.h).
 *
 * Completion of QoS 1 publishes: libmosquitto reports the broker's PUBACK through
 * on_publish(mid), possibly before mosquitto_publish has returned the mid to us. So
 * the callback records done[mid]; a waiter consumes its bit; a waiter that gives up
 * marks abandoned[mid] so the late callback does not leave a stale bit behind for
 * the next message that gets the same mid. */
#include "serve/bus.h"
#include "core/core.h"
#include "core/json.h"
#include "core/utf8.h"
#include "serve/mqtt_in.h"
#include "serve/sparkplug.h"
#include <errno.h>
#include <math.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct dn_bus {
    struct mosquitto *mq;
    char *results, *last;
    char *spb_group, *spb_node;   /* Sparkplug ids (NULL = off) */
    int64_t bdseq;
    pthread_mutex_t mu;           /* done/abandoned, connected, Sparkplug state */
    pthread_cond_t cv;
    uint8_t done[65536], abandoned[65536];
    int connected;
    int seq;                      /* next Sparkplug seq */
    char **devices;               /* devices born since the last NBIRTH */
    int ndev, cdev;
    pthread_mutex_t spmu;         /* orders Sparkplug publishes (seq order = send order) */
    int loop_started;
    /* PLC handshake (plc_topic NULL = off); waits and per-topic sequence under mu */
    char *plc_topic, *plc_sub, *plc_failsafe, *plc_ok;
    int plc_deadline_ms;
    struct plc_wait { char base[512]; long seq; int acked; struct plc_wait *next; } *waits;
    struct plc_seq { char base[512]; long seq; struct plc_seq *next; } *seqs;
};

static uint64_t now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static void spb_topic(const dn_bus *b, const char *type, const char *device, char *out, size_t n) {
    if (device) snprintf(out, n, "spBv1.0/%s/%s/%s/%s", b->spb_group, type, b->spb_node, device);
    else snprintf(out, n, "spBv1.0/%s/%s/%s", b->spb_group, type, b->spb_node);
}

static void on_publish(struct mosquitto *mq, void *obj, int mid, int rc, const mosquitto_property *p) {
    dn_bus *b = obj;
    pthread_mutex_lock(&b->mu);
    uint16_t k = (uint16_t)mid;
    if (b->abandoned[k]) b->abandoned[k] = 0;
    else b->done[k] = rc < 0x80 ? 1 : 2; /* 2: the broker refused it */
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* Publishes and (timeout_ms > 0) waits for the PUBACK. Retain/properties optional. */
static dn_status publish(dn_bus *b, const char *topic, const void *data, size_t len, int retain,
                         const mosquitto_property *props, int timeout_ms) {
    pthread_mutex_lock(&b->mu);
    int up = b->connected;
    pthread_mutex_unlock(&b->mu);
    if (!up) return dn_fail(DN_ERR_IO, "bus: %s: not connected to the broker", topic);
    int mid = 0;
    int e = mosquitto_publish_v5(b->mq, &mid, topic, (int)len, data, 1, retain, props);
    if (e != MOSQ_ERR_SUCCESS) return dn_fail(DN_ERR_IO, "bus: %s: %s", topic, mosquitto_strerror(e));
    if (timeout_ms <= 0) {
        pthread_mutex_lock(&b->mu);
        if (b->done[(uint16_t)mid]) b->done[(uint16_t)mid] = 0;
        else b->abandoned[(uint16_t)mid] = 1;
        pthread_mutex_unlock(&b->mu);
        return DN_OK;
    }
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) { dl.tv_sec++; dl.tv_nsec -= 1000000000L; }
    dn_status rc = DN_OK;
    pthread_mutex_lock(&b->mu);
    uint16_t k = (uint16_t)mid;
    while (!b->done[k]) {
        if (pthread_cond_timedwait(&b->cv, &b->mu, &dl) == ETIMEDOUT) break;
    }
    if (b->done[k] == 1) b->done[k] = 0;
    else if (b->done[k] == 2) { b->done[k] = 0; rc = dn_fail(DN_ERR_IO, "bus: %s: the broker refused the message", topic); }
    else { b->abandoned[k] = 1; rc = dn_fail(DN_ERR_IO, "bus: %s: no PUBACK from the broker within %d ms", topic, timeout_ms); }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

/* NBIRTH: bdSeq + rebirth control, seq 0. Called on every connect. */
static void publish_nbirth(dn_bus *b) {
    dn_spb_metric m[2] = {{"bdSeq", DN_SPB_INT64, b->bdseq, 0, NULL}, {"Node Control/Rebirth", DN_SPB_BOOLEAN, 0, 0, NULL}};
    uint8_t *p;
    size_t n;
    pthread_mutex_lock(&b->spmu);
    pthread_mutex_lock(&b->mu);
    b->seq = 0;
    for (int i = 0; i < b->ndev; i++) free(b->devices[i]);
    b->ndev = 0;
    pthread_mutex_unlock(&b->mu);
    if (dn_spb_encode(now_ms(), 0, m, 2, &p, &n) == DN_OK) {
        char t[512];
        spb_topic(b, "NBIRTH", NULL, t, sizeof t);
        int e = mosquitto_publish_v5(b->mq, NULL, t, (int)n, p, 1, 0, NULL);
        if (e) fprintf(stderr, "serve: bus: NBIRTH: %s\n", mosquitto_strerror(e));
        free(p);
        pthread_mutex_lock(&b->mu);
        b->seq = 1;
        pthread_mutex_unlock(&b->mu);
    }
    pthread_mutex_unlock(&b->spmu);
}

static void on_connect(struct mosquitto *mq, void *obj, int rc, int flags, const mosquitto_property *p) {
    dn_bus *b = obj;
    if (rc) return;
    pthread_mutex_lock(&b->mu);
    b->connected = 1;
    pthread_mutex_unlock(&b->mu);
    if (b->spb_group) publish_nbirth(b);
    if (b->plc_sub) mosquitto_subscribe_v5(mq, NULL, b->plc_sub, 1, 0, NULL);
}

/* A PLC acknowledgement: <base>/ack with {"seq":N}. */
static void on_message(struct mosquitto *mq, void *obj, const struct mosquitto_message *m, const mosquitto_property *p) {
    dn_bus *b = obj;
    size_t tl = strlen(m->topic);
    if (!b->plc_sub || tl < 5 || strcmp(m->topic + tl - 4, "/ack") || tl - 4 >= 512) return;
    dn_json *j = dn_json_parse(m->payload, (size_t)m->payloadlen, NULL, 0);
    double seq = dn_json_num(dn_json_get(j, "seq"), -1);
    dn_json_free(j);
    if (seq < 0) return;
    pthread_mutex_lock(&b->mu);
    for (struct plc_wait *w = b->waits; w; w = w->next)
        if (w->seq == (long)seq && strlen(w->base) == tl - 4 && !strncmp(w->base, m->topic, tl - 4)) w->acked = 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

int dn_bus_has_plc(const dn_bus *b) { return b && b->plc_topic; }

static int class_in(const char *list, const char *cls) {
    if (!list || !cls) return 0;
    size_t cl = strlen(cls);
    for (const char *p = list; *p;) {
        size_t l = strcspn(p, ",");
        if (l == cl && !strncmp(p, cls, l)) return 1;
        p += l;
        if (*p == ',') p++;
    }
    return 0;
}

/* accepted | uncertain | unknown of a result */
static const char *decision_of(const dn_bus_result *r) {
    return r->decision == DN_DECISION_UNKNOWN ? "unknown" : r->uncertain || r->decision == DN_DECISION_UNCERTAIN ? "uncertain" : "accepted";
}

int dn_bus_plc_handshake(dn_bus *b, const dn_bus_result *r, char *verdict, size_t n, char *why, size_t wn) {
    const char *v = strcmp(decision_of(r), "accepted") ? "unknown" : class_in(b->plc_ok, r->cls) ? "OK" : "NG";
    snprintf(verdict, n, "%s", v);
    why[0] = 0;
    struct plc_wait w = {{0}, 0, 0, NULL};
    if (dn_bus_topic(b->plc_topic, r, w.base, sizeof w.base - 16)) {
        snprintf(why, wn, "%s", dn_last_error());
        snprintf(verdict, n, "%s", b->plc_failsafe);
        return 1;
    }
    pthread_mutex_lock(&b->mu);
    struct plc_seq *q = b->seqs;
    while (q && strcmp(q->base, w.base)) q = q->next;
    if (!q && (q = dn_calloc(1, sizeof *q))) {
        snprintf(q->base, sizeof q->base, "%s", w.base);
        q->next = b->seqs;
        b->seqs = q;
    }
    w.seq = q ? ++q->seq : 0;
    w.next = b->waits;
    b->waits = &w;
    pthread_mutex_unlock(&b->mu);
    dn_sb j = {0};
    dn_sb_printf(&j, "{\"seq\":%ld,\"verdict\":\"%s\",\"id\":%lld,\"class\":", w.seq, v, (long long)r->id);
    dn_sb_json_str(&j, r->cls ? r->cls : "");
    dn_sb_printf(&j, ",\"confidence\":%.4f}", r->confidence);
    char t[600];
    snprintf(t, sizeof t, "%s/request", w.base);
    dn_status rc = j.oom ? DN_ERR_NOMEM : publish(b, t, j.s, j.len, 0, NULL, b->plc_deadline_ms);
    dn_sb_free(&j);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += b->plc_deadline_ms / 1000;
    dl.tv_nsec += (long)(b->plc_deadline_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) { dl.tv_sec++; dl.tv_nsec -= 1000000000L; }
    pthread_mutex_lock(&b->mu);
    if (rc) snprintf(why, wn, "request not sent: %s", dn_last_error());
    else
        while (!w.acked && pthread_cond_timedwait(&b->cv, &b->mu, &dl) == 0) {}
    int acked = !rc && w.acked;
    for (struct plc_wait **pp = &b->waits; *pp; pp = &(*pp)->next)
        if (*pp == &w) { *pp = w.next; break; }
    pthread_mutex_unlock(&b->mu);
    if (acked) return 0;
    if (!rc) snprintf(why, wn, "no acknowledgement of seq %ld on %s/ack within %d ms", w.seq, w.base, b->plc_deadline_ms);
    snprintf(verdict, n, "%s", b->plc_failsafe);
    return 1;
}

static void on_disconnect(struct mosquitto *mq, void *obj, int rc, const mosquitto_property *p) {
    dn_bus *b = obj;
    pthread_mutex_lock(&b->mu);
    b->connected = 0;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

int dn_bus_health(void *ctx, dn_sb *out) {
    int up = dn_bus_connected((dn_bus *)ctx);
    dn_sb_printf(out, ",\"bus\":{\"broker\":\"%s\"}", up ? "connected" : "disconnected");
    return !up;
}

int dn_bus_connected(dn_bus *b) {
    pthread_mutex_lock(&b->mu);
    int c = b->connected;
    pthread_mutex_unlock(&b->mu);
    return c;
}

dn_status dn_bus_topic(const char *tmpl, const dn_bus_result *r, char *out, size_t n) {
    static const char *const keys[] = {"line", "station", "camera", "part", "class", "decision"};
    const char *vals[6] = {r->line, r->station, r->camera, r->part, r->cls, decision_of(r)};
    size_t o = 0;
    for (const char *p = tmpl; *p;) {
        const char *v = NULL;
        size_t skip = 0;
        if (*p == '{') {
            for (int i = 0; i < 6; i++) {
                size_t kl = strlen(keys[i]);
                if (!strncmp(p + 1, keys[i], kl) && p[1 + kl] == '}') { v = vals[i] && *vals[i] ? vals[i] : "_"; skip = kl + 2; break; }
            }
        }
        if (v) {
            for (const char *q = v; *q; q++) {
                if (o + 1 >= n) return dn_fail(DN_ERR_ARG, "bus: topic from '%s' is too long", tmpl);
                out[o++] = (*q == '/' || *q == '+' || *q == '#') ? '_' : *q;
            }
            p += skip;
        } else {
            if (o + 1 >= n) return dn_fail(DN_ERR_ARG, "bus: topic from '%s' is too long", tmpl);
            out[o++] = *p++;
        }
    }
    out[o] = 0;
    return DN_OK;
}

/* Sparkplug DBIRTH (first time for this device since the NBIRTH) + DDATA. */
static dn_status publish_spb(dn_bus *b, const dn_bus_result *r, int timeout_ms) {
    char dev[200];
    dn_bus_result only = {0};
    only.camera = r->camera;
    if (dn_bus_topic("{camera}", &only, dev, sizeof dev)) return DN_ERR_ARG;
    dn_spb_metric m[6] = {{"class", DN_SPB_STRING, 0, 0, r->cls},
                          {"confidence", DN_SPB_FLOAT, 0, r->confidence, NULL},
                          {"decision", DN_SPB_STRING, 0, 0, decision_of(r)},
                          {"prediction_id", DN_SPB_INT64, r->id, 0, NULL}};
    int nm = 4;
    if (isfinite(r->ood_score)) m[nm++] = (dn_spb_metric){"ood_score", DN_SPB_FLOAT, 0, r->ood_score, NULL};
    if (r->part) m[nm++] = (dn_spb_metric){"part", DN_SPB_STRING, 0, 0, r->part};
    dn_status rc = DN_OK;
    uint8_t *p = NULL;
    size_t n;
    char t[512];
    pthread_mutex_lock(&b->spmu);
    pthread_mutex_lock(&b->mu);
    int born = 0;
    for (int i = 0; i < b->ndev && !born; i++) born = !strcmp(b->devices[i], dev);
    pthread_mutex_unlock(&b->mu);
    if (!born) {
        pthread_mutex_lock(&b->mu);
        int seq = b->seq;
        b->seq = (b->seq + 1) & 255;
        pthread_mutex_unlock(&b->mu);
        if ((rc = dn_spb_encode(now_ms(), seq, m, nm, &p, &n))) goto out;
        spb_topic(b, "DBIRTH", dev, t, sizeof t);
        rc = publish(b, t, p, n, 0, NULL, 0);
        free(p);
        p = NULL;
        if (rc) goto out;
        pthread_mutex_lock(&b->mu);
        if (b->ndev == b->cdev) {
            int c = b->cdev ? b->cdev * 2 : 16;
            char **d = dn_realloc(b->devices, sizeof *d * (size_t)c);
            if (d) { b->devices = d; b->cdev = c; }
        }
        if (b->ndev < b->cdev && (b->devices[b->ndev] = dn_strdup(dev))) b->ndev++;
        pthread_mutex_unlock(&b->mu);
    }
    pthread_mutex_lock(&b->mu);
    int seq = b->seq;
    b->seq = (b->seq + 1) & 255;
    pthread_mutex_unlock(&b->mu);
    if ((rc = dn_spb_encode(now_ms(), seq, m, nm, &p, &n))) goto out;
    spb_topic(b, "DDATA", dev, t, sizeof t);
    int mid = 0;
    int e = mosquitto_publish_v5(b->mq, &mid, t, (int)n, p, 1, 0, NULL);
    free(p);
    if (e) { rc = dn_fail(DN_ERR_IO, "bus: %s: %s", t, mosquitto_strerror(e)); goto out; }
    pthread_mutex_unlock(&b->spmu);
    /* wait outside spmu so other results keep flowing */
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000 + 1;
    pthread_mutex_lock(&b->mu);
    uint16_t k = (uint16_t)mid;
    while (!b->done[k] && pthread_cond_timedwait(&b->cv, &b->mu, &dl) != ETIMEDOUT) {}
    if (b->done[k]) { rc = b->done[k] == 1 ? DN_OK : dn_fail(DN_ERR_IO, "bus: %s: refused by the broker", t); b->done[k] = 0; }
    else { b->abandoned[k] = 1; rc = dn_fail(DN_ERR_IO, "bus: %s: no PUBACK from the broker", t); }
    pthread_mutex_unlock(&b->mu);
    return rc;
out:
    pthread_mutex_unlock(&b->spmu);
    return rc;
}

dn_status dn_bus_publish_result(dn_bus *b, const dn_bus_result *r, int timeout_ms) {
    char t[1024];
    dn_status rc;
    const char *json = r->json ? r->json : "{}";
    size_t jl = strlen(json);
    while (jl && json[jl - 1] == '\n') jl--;
    if (b->results) {
        if ((rc = dn_bus_topic(b->results, r, t, sizeof t))) return rc;
        if ((rc = publish(b, t, json, jl, 0, NULL, timeout_ms))) return rc;
    }
    if (b->last) {
        if ((rc = dn_bus_topic(b->last, r, t, sizeof t))) return rc;
        if ((rc = publish(b, t, json, jl, 1, NULL, timeout_ms))) return rc;
    }
    if (b->spb_group && (rc = publish_spb(b, r, timeout_ms))) return rc;
    return DN_OK;
}

dn_status dn_bus_publish(dn_bus *b, const char *topic, const void *payload, size_t len, int retain, int timeout_ms) {
    return publish(b, topic, payload, len, retain, NULL, timeout_ms);
}

dn_status dn_bus_dead_letter(dn_bus *b, const char *topic, const void *payload, size_t len, const char *from,
                             const char *error, int timeout_ms) {
    mosquitto_property *props = NULL;
    if (mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "topic", from) ||
        mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "error", error)) {
        mosquitto_property_free_all(&props);
        return dn_fail(DN_ERR_NOMEM, "bus: dead letter properties");
    }
    dn_status rc = publish(b, topic, payload, len, 0, props, timeout_ms);
    mosquitto_property_free_all(&props);
    return rc;
}

static int valid_sparkplug(const char *sp) {
    const char *sl = strchr(sp, '/');
    return sl && sl != sp && sl[1] && !strchr(sl + 1, '/') && !strpbrk(sp, "+#") && dn_utf8_printable(sp);
}

dn_status dn_bus_check(const dn_bus_config *c) {
    char host[256];
    int port;
    dn_status rc = dn_mqtt_parse_url(c->url, host, sizeof host, &port);
    if (rc) return rc;
    if (!c->client_id || !*c->client_id) return dn_fail(DN_ERR_ARG, "bus: a client id is required");
    if (c->sparkplug && !valid_sparkplug(c->sparkplug))
        return dn_fail(DN_ERR_ARG, "sparkplug '%s': expected GROUP/NODE (no '+', '#')", c->sparkplug);
    const char *t[3] = {c->results_topic, c->last_topic, c->plc_topic};
    for (int i = 0; i < 3; i++)
        if (t[i] && (!*t[i] || strpbrk(t[i], "+#") || !dn_utf8_printable(t[i])))
            return dn_fail(DN_ERR_ARG, "bus topic template '%s': must be a topic name without wildcards", t[i]);
    return DN_OK;
}

dn_status dn_bus_start(const dn_bus_config *c, dn_bus **out) {
    *out = NULL;
    char host[256];
    int port;
    dn_status rc = dn_bus_check(c);
    if (rc) return rc;
    dn_mqtt_parse_url(c->url, host, sizeof host, &port);
    dn_bus *b = dn_calloc(1, sizeof *b);
    if (!b) return DN_ERR_NOMEM;
    pthread_mutex_init(&b->mu, NULL);
    pthread_mutex_init(&b->spmu, NULL);
    pthread_cond_init(&b->cv, NULL);
    mosquitto_lib_init();
    if ((c->results_topic && !(b->results = dn_strdup(c->results_topic))) ||
        (c->last_topic && !(b->last = dn_strdup(c->last_topic)))) { rc = DN_ERR_NOMEM; goto fail; }
    if (c->sparkplug) {
        const char *sl = strchr(c->sparkplug, '/');
        b->spb_group = dn_strndup(c->sparkplug, (size_t)(sl - c->sparkplug));
        b->spb_node = dn_strdup(sl + 1);
        if (!b->spb_group || !b->spb_node) { rc = DN_ERR_NOMEM; goto fail; }
        b->bdseq = (int64_t)(now_ms() / 1000) & 255; /* differs between process starts */
    }
    if (c->plc_topic) {
        size_t l = strlen(c->plc_topic);
        b->plc_topic = dn_strdup(c->plc_topic);
        b->plc_failsafe = dn_strdup(c->plc_failsafe ? c->plc_failsafe : "reject");
        b->plc_ok = c->plc_ok_classes ? dn_strdup(c->plc_ok_classes) : NULL;
        b->plc_sub = dn_malloc(l + 8);
        if (!b->plc_topic || !b->plc_failsafe || !b->plc_sub || (c->plc_ok_classes && !b->plc_ok)) { rc = DN_ERR_NOMEM; goto fail; }
        size_t o = 0; /* the template with every {field} as '+', then /ack */
        for (const char *p = c->plc_topic; *p;) {
            const char *e = *p == '{' ? strchr(p, '}') : NULL;
            if (e) { b->plc_sub[o++] = '+'; p = e + 1; }
            else b->plc_sub[o++] = *p++;
        }
        memcpy(b->plc_sub + o, "/ack", 5);
        b->plc_deadline_ms = c->plc_deadline_ms > 0 ? c->plc_deadline_ms : 1000;
    }
    b->mq = mosquitto_new(c->client_id, true, b);
    if (!b->mq) { rc = dn_fail(DN_ERR_NOMEM, "bus: mosquitto_new failed"); goto fail; }
    mosquitto_int_option(b->mq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_connect_v5_callback_set(b->mq, on_connect);
    mosquitto_disconnect_v5_callback_set(b->mq, on_disconnect);
    mosquitto_publish_v5_callback_set(b->mq, on_publish);
    mosquitto_message_v5_callback_set(b->mq, on_message);
    mosquitto_reconnect_delay_set(b->mq, 1, 10, true);
    if (c->username && mosquitto_username_pw_set(b->mq, c->username, c->password)) {
        rc = dn_fail(DN_ERR_ARG, "bus: bad broker user name");
        goto fail;
    }
    if (b->spb_group) { /* NDEATH is the will: the broker sends it when we vanish */
        dn_spb_metric m = {"bdSeq", DN_SPB_INT64, b->bdseq, 0, NULL};
        uint8_t *p;
        size_t n;
        char t[512];
        spb_topic(b, "NDEATH", NULL, t, sizeof t);
        if ((rc = dn_spb_encode(now_ms(), -1, &m, 1, &p, &n))) goto fail;
        int e = mosquitto_will_set_v5(b->mq, t, (int)n, p, 1, false, NULL);
        free(p);
        if (e) { rc = dn_fail(DN_ERR_ARG, "bus: will: %s", mosquitto_strerror(e)); goto fail; }
    }
    int e = mosquitto_connect_async(b->mq, host, port, c->keepalive > 0 ? c->keepalive : 30);
    if (e && e != MOSQ_ERR_ERRNO) { rc = dn_fail(DN_ERR_ARG, "bus: %s: %s", c->url, mosquitto_strerror(e)); goto fail; }
    /* a broker that is down now is retried by the loop thread */
    if ((e = mosquitto_loop_start(b->mq))) { rc = dn_fail(DN_ERR_IO, "bus: %s", mosquitto_strerror(e)); goto fail; }
    b->loop_started = 1;
    if (e == MOSQ_ERR_SUCCESS && mosquitto_socket(b->mq) < 0) mosquitto_reconnect_async(b->mq);
    *out = b;
    return DN_OK;
fail:
    dn_bus_stop(b);
    return rc;
}

void dn_bus_stop(dn_bus *b) {
    if (!b) return;
    if (b->mq) {
        if (b->loop_started) {
            /* reason 0x04: "disconnect with will message" -> subscribers get NDEATH */
            mosquitto_disconnect_v5(b->mq, b->spb_group ? 4 : 0, NULL);
            mosquitto_loop_stop(b->mq, false);
        }
        mosquitto_destroy(b->mq);
    }
    for (int i = 0; i < b->ndev; i++) free(b->devices[i]);
    free(b->devices);
    free(b->results);
    free(b->last);
    free(b->spb_group);
    free(b->spb_node);
    free(b->plc_topic);
    free(b->plc_sub);
    free(b->plc_failsafe);
    free(b->plc_ok);
    while (b->seqs) {
        struct plc_seq *q = b->seqs;
        b->seqs = q->next;
        free(q);
    }
    pthread_mutex_destroy(&b->mu);
    pthread_mutex_destroy(&b->spmu);
    pthread_cond_destroy(&b->cv);
    free(b);
}
