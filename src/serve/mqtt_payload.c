/* MQTT 5 wire format and message interpretation, pure functions (see mqtt_payload.h). */
#include "serve/mqtt_payload.h"
#include "core/core.h"
#include "core/json.h"
#include "core/utf8.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const FIELD_NAMES[DN_MQTT_NF] = {"line", "station", "camera", "part", "id"};

const char dn_mqtt_out_of_memory[] = "out of memory";

const char *dn_mqtt_field_name(int f) { return f >= 0 && f < DN_MQTT_NF ? FIELD_NAMES[f] : NULL; }

/* ------------------------------------------------------------------ encoding */

void dn_mqtt_put(dn_mqtt_wbuf *b, const void *d, size_t n) {
    if (b->oom || !n) return;
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
void dn_mqtt_put_u8(dn_mqtt_wbuf *b, unsigned v) { uint8_t x = (uint8_t)v; dn_mqtt_put(b, &x, 1); }
void dn_mqtt_put_u16(dn_mqtt_wbuf *b, unsigned v) {
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    dn_mqtt_put(b, x, 2);
}
void dn_mqtt_put_u32(dn_mqtt_wbuf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    dn_mqtt_put(b, x, 4);
}
void dn_mqtt_put_str(dn_mqtt_wbuf *b, const char *s) {
    size_t l = strlen(s);
    dn_mqtt_put_u16(b, (unsigned)l);
    dn_mqtt_put(b, s, l);
}
void dn_mqtt_put_varint(dn_mqtt_wbuf *b, size_t v) {
    do {
        unsigned d = v % 128;
        v /= 128;
        dn_mqtt_put_u8(b, v ? d | 128 : d);
    } while (v);
}

int dn_mqtt_frame(dn_mqtt_wbuf *out, unsigned type, unsigned flags, const dn_mqtt_wbuf *body) {
    dn_mqtt_put_u8(out, type << 4 | flags);
    dn_mqtt_put_varint(out, body ? body->n : 0);
    if (body) dn_mqtt_put(out, body->p, body->n);
    return out->oom || (body && body->oom) ? -1 : 0;
}

void dn_mqtt_connect_body(dn_mqtt_wbuf *b, const char *client_id, const char *user, const char *pass, int keepalive,
                          uint32_t session_expiry, unsigned receive_max) {
    dn_mqtt_put_str(b, "MQTT");
    dn_mqtt_put_u8(b, 5);
    /* flags: clean start = 0 (resume the session); user name / password when set */
    dn_mqtt_put_u8(b, (user ? 0x80u : 0u) | (pass ? 0x40u : 0u));
    dn_mqtt_put_u16(b, (unsigned)keepalive);
    dn_mqtt_put_varint(b, 8);     /* property length: */
    dn_mqtt_put_u8(b, 0x11);      /* session expiry interval */
    dn_mqtt_put_u32(b, session_expiry);
    dn_mqtt_put_u8(b, 0x21);      /* receive maximum */
    dn_mqtt_put_u16(b, receive_max);
    dn_mqtt_put_str(b, client_id);
    if (user) dn_mqtt_put_str(b, user);
    if (pass) dn_mqtt_put_str(b, pass);
}

void dn_mqtt_subscribe_body(dn_mqtt_wbuf *b, unsigned pid, const char *filter, unsigned qos) {
    dn_mqtt_put_u16(b, pid);
    dn_mqtt_put_u8(b, 0);         /* no properties */
    dn_mqtt_put_str(b, filter);
    dn_mqtt_put_u8(b, qos);       /* no-local 0, as shared subscriptions require */
}

/* ------------------------------------------------------------------ decoding */

int dn_mqtt_remaining_len(const uint8_t *b, size_t n, size_t *value, size_t *used) {
    size_t v = 0, mul = 1;
    for (size_t i = 0; i < 4; i++) {
        if (i >= n) return 0;
        v += (size_t)(b[i] & 127) * mul;
        if (!(b[i] & 128)) {
            *value = v;
            *used = i + 1;
            return 1;
        }
        mul *= 128;
    }
    return -1;
}

/* Cursor over a received buffer; bad is set (and sticks) when a read runs past n. */
typedef struct { const uint8_t *p; size_t n, i; int bad; } rd;
static unsigned rd_u8(rd *r) {
    if (r->i + 1 > r->n) { r->bad = 1; return 0; }
    return r->p[r->i++];
}
static unsigned rd_u16(rd *r) {
    if (r->i + 2 > r->n) { r->bad = 1; return 0; }
    unsigned v = (unsigned)r->p[r->i] << 8 | r->p[r->i + 1];
    r->i += 2;
    return v;
}
static size_t rd_varint(rd *r) {
    size_t v = 0, used = 0;
    int k = dn_mqtt_remaining_len(r->p + r->i, r->n - r->i, &v, &used);
    if (k != 1) { r->bad = 1; return 0; }
    r->i += used;
    return v;
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
static void rd_skip(rd *r, size_t n) {
    if (r->i + n > r->n) r->bad = 1;
    else r->i += n;
}

/* Skips or interprets one property block; PUBLISH user properties and the content
 * type go into x (when not NULL). -1 on allocation failure. */
static int rd_props(rd *r, dn_mqtt_meta *x) {
    size_t len = rd_varint(r);
    if (r->bad || len > r->n - r->i) { r->bad = 1; return 0; }
    rd sub = {r->p + r->i, len, 0, 0};
    r->i += len;
    int oom = 0;
    while (sub.i < sub.n && !sub.bad && !oom) {
        unsigned id = (unsigned)rd_varint(&sub);
        size_t l1 = 0, l2 = 0;
        const char *a, *b;
        switch (id) {
        case 0x01: case 0x17: case 0x19: case 0x24: case 0x25: case 0x28: case 0x29: case 0x2a:
            rd_skip(&sub, 1); break;
        case 0x13: case 0x21: case 0x22: case 0x23: rd_skip(&sub, 2); break;
        case 0x02: case 0x11: case 0x18: case 0x27: rd_skip(&sub, 4); break;
        case 0x0b: rd_varint(&sub); break;
        case 0x03: /* content type */
            a = rd_str(&sub, &l1);
            if (x && a && !x->ctype && !(x->ctype = dn_strndup(a, l1))) oom = 1;
            break;
        case 0x08: case 0x09: case 0x12: case 0x15: case 0x16: case 0x1a: case 0x1c: case 0x1f:
            rd_str(&sub, &l1); break;
        case 0x26: /* user property */
            a = rd_str(&sub, &l1);
            b = rd_str(&sub, &l2);
            if (!x || sub.bad) break;
            for (int f = 0; f < DN_MQTT_NF; f++) {
                if (strlen(FIELD_NAMES[f]) != l1 || memcmp(a, FIELD_NAMES[f], l1)) continue;
                if (l2 == 0 || l2 > DN_MQTT_META_MAX || !dn_utf8_text(b, l2)) { x->bad = 1; break; }
                char *v = dn_strndup(b, l2);
                if (!v) { oom = 1; break; }
                free(x->v[f]);
                x->v[f] = v;
            }
            break;
        default: sub.bad = 1;
        }
    }
    if (sub.bad) r->bad = 1;
    return oom ? -1 : 0;
}

void dn_mqtt_meta_free(dn_mqtt_meta *m) {
    for (int i = 0; i < DN_MQTT_NF; i++) free(m->v[i]);
    free(m->ctype);
    memset(m, 0, sizeof *m);
}

void dn_mqtt_publish_free(dn_mqtt_publish *p) {
    if (!p) return;
    free(p->topic);
    dn_mqtt_meta_free(&p->meta);
    memset(p, 0, sizeof *p);
}

dn_status dn_mqtt_decode_publish(unsigned b0, const uint8_t *h, size_t n, dn_mqtt_publish *out) {
    memset(out, 0, sizeof *out);
    out->qos = (b0 >> 1) & 3;
    out->dup = (b0 >> 3) & 1;
    if (out->qos > 2) return dn_fail(DN_ERR_FORMAT, "mqtt: PUBLISH with QoS 3");
    rd r = {h, n, 0, 0};
    size_t tl = 0;
    const char *t = rd_str(&r, &tl);
    if (out->qos) out->pid = (uint16_t)rd_u16(&r);
    if (!r.bad && rd_props(&r, &out->meta)) goto oom;
    if (r.bad || !t) {
        dn_mqtt_publish_free(out);
        return dn_fail(DN_ERR_FORMAT, "mqtt: malformed PUBLISH (truncated or unknown property)");
    }
    if (!(out->topic = dn_strndup(t, tl))) goto oom;
    out->topic_len = tl;
    out->topic_text = dn_utf8_text(t, tl);
    out->head = r.i;
    return DN_OK;
oom:
    dn_mqtt_publish_free(out);
    return DN_ERR_NOMEM;
}

int dn_mqtt_decode_connack(const uint8_t *b, size_t n, unsigned *code) {
    if (n < 2) return -1;
    *code = b[1];
    return 0;
}

int dn_mqtt_decode_suback(const uint8_t *b, size_t n, unsigned *code) {
    rd r = {b, n, 0, 0};
    rd_u16(&r);
    if (!r.bad) rd_props(&r, NULL);
    *code = rd_u8(&r);
    return r.bad ? -1 : 0;
}

/* ------------------------------------------------------------------ interpretation */

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

int dn_mqtt_filter_valid(const char *f) {
    if (!*f || strlen(f) > 1024 || !dn_utf8_printable(f) || !strncmp(f, "$share/", 7)) return 0;
    for (const char *p = f; *p;) {
        size_t l = strcspn(p, "/");
        if (memchr(p, '+', l) && l != 1) return 0;
        if (memchr(p, '#', l) && (l != 1 || p[l])) return 0;
        p += l;
        if (*p == '/') p++;
    }
    return 1;
}

dn_status dn_mqtt_parse_fields(const char *filter, const char *fields, char **names, int *n) {
    *n = 0;
    if (!fields || !*fields) return DN_OK;
    int plus = 0;
    for (const char *p = filter; *p; p++) plus += *p == '+';
    for (const char *p = fields; *p;) {
        size_t l = strcspn(p, ",");
        if (*n >= DN_MQTT_MAX_FIELDS) return dn_fail(DN_ERR_ARG, "mqtt fields '%s': too many", fields);
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)(l < 31 ? l : 31), p);
        int known = !strcmp(name, "_");
        for (int i = 0; i < DN_MQTT_NF; i++) known |= !strcmp(name, FIELD_NAMES[i]);
        if (!known || l > 31)
            return dn_fail(DN_ERR_ARG, "mqtt fields '%s': '%s' is not one of line, station, camera, part, id, _", fields,
                           name);
        if (names) {
            names[*n] = NULL;
            if (strcmp(name, "_") && !(names[*n] = dn_strdup(name))) return DN_ERR_NOMEM;
        }
        (*n)++;
        p += l;
        if (*p == ',') p++;
    }
    if (*n > plus)
        return dn_fail(DN_ERR_ARG, "mqtt fields '%s': %d names for %d '+' levels in '%s'", fields, *n, plus, filter);
    return DN_OK;
}

int dn_mqtt_is_envelope(const char *ctype, const uint8_t *payload, size_t len) {
    if (ctype && !strncmp(ctype, "application/json", 16)) return 1;
    size_t k = 0;
    while (k < len && (payload[k] == ' ' || payload[k] == '\n' || payload[k] == '\r' || payload[k] == '\t')) k++;
    return k < len && payload[k] == '{';
}

/* Topic levels matched by '+' in the filter, named by the route. NULL or the problem. */
static const char *topic_fields(const dn_mqtt_route *r, dn_mqtt_publish *p, char *problem, size_t pn) {
    const char *f = r->filter, *t = p->topic;
    int k = 0;
    while (*f && *t) {
        size_t fl = strcspn(f, "/"), tl = strcspn(t, "/");
        if (fl == 1 && *f == '+') {
            const char *name = k < r->nnames ? r->names[k] : NULL;
            k++;
            for (int i = 0; name && i < DN_MQTT_NF; i++) {
                if (strcmp(name, FIELD_NAMES[i]) || p->meta.v[i]) continue; /* a user property wins */
                if (!tl || tl > DN_MQTT_META_MAX || !dn_utf8_text(t, tl)) {
                    snprintf(problem, pn, "topic level %d is not a valid %s", k, name);
                    return problem;
                }
                if (!(p->meta.v[i] = dn_strndup(t, tl))) return dn_mqtt_out_of_memory;
            }
        } else if (fl == 1 && *f == '#') {
            return NULL;
        }
        f += fl;
        t += tl;
        if (*f == '/') f++;
        if (*t == '/') t++;
    }
    return NULL;
}

/* The JSON envelope's metadata (where not set yet) and its checked "file". */
static const char *envelope(dn_mqtt_publish *p, const uint8_t *payload, size_t len, char **file, char *problem,
                            size_t pn) {
    char err[160];
    dn_json *j = dn_json_parse((const char *)payload, len, err, sizeof err);
    if (!j) {
        if (strstr(err, "out of memory")) return dn_mqtt_out_of_memory; /* the parser's own allocations */
        snprintf(problem, pn, "JSON envelope: %s", err);
        return problem;
    }
    const char *out = NULL;
    if (dn_json_type_of(j) != DN_JSON_OBJ) { out = "JSON envelope is not an object"; goto done; }
    for (int i = 0; i < DN_MQTT_NF; i++) {
        const dn_json *v = dn_json_get(j, FIELD_NAMES[i]);
        if (!v) continue;
        const char *s = dn_json_str(v, NULL);
        if (!s || !*s || strlen(s) > DN_MQTT_META_MAX || !dn_utf8_printable(s)) {
            snprintf(problem, pn,
                     "JSON envelope: \"%s\" must be a non-empty string of at most %d bytes without control characters",
                     FIELD_NAMES[i], DN_MQTT_META_MAX);
            out = problem;
            goto done;
        }
        if (!p->meta.v[i] && !(p->meta.v[i] = dn_strdup(s))) { out = dn_mqtt_out_of_memory; goto done; }
    }
    const char *f = dn_json_str(dn_json_get(j, "file"), NULL);
    if (!f || !*f) { out = "JSON envelope: \"file\" (a path relative to the file root) is required"; goto done; }
    if (f[0] == '/' || strlen(f) > 1024) { out = "JSON envelope: \"file\" must be a relative path"; goto done; }
    if (!dn_utf8_printable(f)) { out = "JSON envelope: \"file\" must be UTF-8 without control characters"; goto done; }
    for (const char *q = f; *q;) { /* no ".." component */
        size_t l = strcspn(q, "/");
        if (l == 2 && q[0] == '.' && q[1] == '.') { out = "JSON envelope: \"file\" must not contain '..'"; goto done; }
        q += l;
        if (*q == '/') q++;
    }
    if (!(*file = dn_strdup(f))) out = dn_mqtt_out_of_memory;
done:
    dn_json_free(j);
    return out;
}

const char *dn_mqtt_interpret(const dn_mqtt_route *r, dn_mqtt_publish *p, const uint8_t *payload, size_t len,
                              char **file, char *problem, size_t pn) {
    *file = NULL;
    if (!p->topic_text || !p->topic_len) return "the topic is not UTF-8 text";
    if (p->meta.bad)
        return "a user property (id/line/station/camera/part) is empty, longer than 128 bytes or not printable UTF-8";
    const char *bad = topic_fields(r, p, problem, pn);
    if (!bad && dn_mqtt_is_envelope(p->meta.ctype, payload, len)) bad = envelope(p, payload, len, file, problem, pn);
    if (!bad && !p->meta.v[DN_MQTT_ID])
        bad = "no message id (user property \"id\" or the envelope's \"id\"): needed to record it exactly once";
    if (!bad && !*file && !len) bad = "empty payload";
    if (bad) {
        free(*file);
        *file = NULL;
    }
    return bad;
}
