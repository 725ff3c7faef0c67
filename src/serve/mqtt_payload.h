/* The MQTT 5 wire format and message interpretation of `serve --mqtt-in` (mqtt_in.c),
 * as pure functions: bytes in, packets / metadata / a one-line problem out. No sockets,
 * no files, no global state (thread-safe on distinct arguments), so each piece can be
 * fuzzed on its own (tests/fuzz/fuzz_mqtt.c, fuzz_mqtt_packet.c).
 *
 *   - encoding: a growable buffer with the MQTT integer/string/variable-length
 *     primitives, and the fixed header that frames a packet body;
 *   - decoding: the remaining length of the fixed header, a PUBLISH's variable header
 *     (topic, packet id, properties: content type and the user properties id, line,
 *     station, camera, part), a SUBACK's reason code;
 *   - interpretation (see mqtt_in.h for the message format): the topic filter and the
 *     names of its '+' levels, metadata from topic levels, and the JSON envelope
 *     {"id":..,"file":"rel/path",..} whose file mqtt_in.c then reads under its root.
 * Every metadata value that comes out is text (core/utf8.h) of 1..DN_MQTT_META_MAX bytes. */
#ifndef DN_SERVE_MQTT_PAYLOAD_H
#define DN_SERVE_MQTT_PAYLOAD_H
#include "defectnet.h"
#include <stddef.h>
#include <stdint.h>

#define DN_MQTT_META_MAX 128       /* bytes per metadata value */
#define DN_MQTT_HEAD_MAX (64u << 10) /* topic + properties of one PUBLISH */
#define DN_MQTT_MAX_FIELDS 16      /* named '+' levels */

enum { DN_MQTT_CONNECT = 1, DN_MQTT_CONNACK = 2, DN_MQTT_PUBLISH = 3, DN_MQTT_PUBACK = 4, DN_MQTT_SUBSCRIBE = 8,
       DN_MQTT_SUBACK = 9, DN_MQTT_PINGREQ = 12, DN_MQTT_PINGRESP = 13, DN_MQTT_DISCONNECT = 14, DN_MQTT_AUTH = 15 };
/* Metadata fields, in the order of dn_mqtt_field_name. */
enum { DN_MQTT_LINE, DN_MQTT_STATION, DN_MQTT_CAMERA, DN_MQTT_PART, DN_MQTT_ID, DN_MQTT_NF };
/* "line", "station", "camera", "part", "id". */
const char *dn_mqtt_field_name(int f);

/* ------------------------------------------------------------------ encoding */
/* A growable byte buffer; on allocation failure oom is set and later puts do nothing.
 * Zero-initialise; release p with free(). */
typedef struct dn_mqtt_wbuf { uint8_t *p; size_t n, cap; int oom; } dn_mqtt_wbuf;
void dn_mqtt_put(dn_mqtt_wbuf *b, const void *d, size_t n);
void dn_mqtt_put_u8(dn_mqtt_wbuf *b, unsigned v);
void dn_mqtt_put_u16(dn_mqtt_wbuf *b, unsigned v);
void dn_mqtt_put_u32(dn_mqtt_wbuf *b, uint32_t v);
void dn_mqtt_put_str(dn_mqtt_wbuf *b, const char *s);   /* u16 length + bytes */
void dn_mqtt_put_varint(dn_mqtt_wbuf *b, size_t v);     /* variable byte integer */
/* out = fixed header (type << 4 | flags, remaining length) + body (NULL: empty).
 * 0, or -1 when out or body ran out of memory. */
int dn_mqtt_frame(dn_mqtt_wbuf *out, unsigned type, unsigned flags, const dn_mqtt_wbuf *body);
/* The body of our CONNECT (MQTT 5, clean start 0, session expiry, receive maximum,
 * user name / password when not NULL) and of a one-filter SUBSCRIBE. */
void dn_mqtt_connect_body(dn_mqtt_wbuf *b, const char *client_id, const char *user, const char *pass, int keepalive,
                          uint32_t session_expiry, unsigned receive_max);
void dn_mqtt_subscribe_body(dn_mqtt_wbuf *b, unsigned pid, const char *filter, unsigned qos);

/* ------------------------------------------------------------------ decoding */
/* The remaining length that follows the fixed header's first byte, from the n bytes
 * at b: 1 = complete (*value, *used bytes), 0 = needs more bytes, -1 = malformed
 * (a fifth length byte). */
int dn_mqtt_remaining_len(const uint8_t *b, size_t n, size_t *value, size_t *used);

/* Metadata of one message; strings owned (dn_mqtt_meta_free). */
typedef struct dn_mqtt_meta {
    char *v[DN_MQTT_NF];  /* text, 1..DN_MQTT_META_MAX bytes, or NULL */
    char *ctype;          /* content type property (any bytes up to a NUL), or NULL */
    int bad;              /* a user property id/line/... was empty, too long or not text */
} dn_mqtt_meta;
void dn_mqtt_meta_free(dn_mqtt_meta *m);

typedef struct dn_mqtt_publish {
    int qos, dup;
    uint16_t pid;         /* packet id (QoS >= 1), else 0 */
    char *topic;          /* owned copy, NUL-terminated (a NUL inside ends it early) */
    size_t topic_len;     /* length on the wire */
    int topic_text;       /* the wire topic is text (core/utf8.h) */
    dn_mqtt_meta meta;
    size_t head;          /* bytes of the variable header: the payload starts at h + head */
} dn_mqtt_publish;
/* Decodes a PUBLISH's variable header from h[0..n), the first n bytes after the fixed
 * header whose first byte is b0 (n = the remaining length, or DN_MQTT_HEAD_MAX when
 * that is larger). DN_OK with out filled (dn_mqtt_publish_free); DN_ERR_FORMAT when
 * the packet is malformed (QoS 3, truncated, unknown property: the connection must be
 * dropped); DN_ERR_NOMEM. On error nothing is left to free. */
dn_status dn_mqtt_decode_publish(unsigned b0, const uint8_t *h, size_t n, dn_mqtt_publish *out);
void dn_mqtt_publish_free(dn_mqtt_publish *p);
/* A CONNACK body b[0..n): 0 with its reason code in *code, -1 if malformed. */
int dn_mqtt_decode_connack(const uint8_t *b, size_t n, unsigned *code);
/* A SUBACK body b[0..n): 0 with the first reason code in *code, -1 if malformed. */
int dn_mqtt_decode_suback(const uint8_t *b, size_t n, unsigned *code);

/* ------------------------------------------------------------------ interpretation */
/* Parses "mqtt://HOST[:PORT]" (also "tcp://"); host is copied into host[hn]. */
dn_status dn_mqtt_parse_url(const char *url, char *host, size_t hn, int *port);
/* 1 if f is a topic filter we subscribe to: text, 1..1024 bytes, '+' and '#' only as
 * whole levels ('#' last), not itself a "$share/" filter. */
int dn_mqtt_filter_valid(const char *f);
/* Names of the filter's '+' levels from fields ("line,camera"; "_" = unnamed), at most
 * DN_MQTT_MAX_FIELDS and no more than the filter has '+' levels. names (that many slots,
 * may be NULL when only checking) receive copies, NULL for "_"; the caller frees them. */
dn_status dn_mqtt_parse_fields(const char *filter, const char *fields, char **names, int *n);

/* A subscription's view of messages: the filter and the names of its '+' levels. */
typedef struct dn_mqtt_route {
    const char *filter;
    char *const *names;   /* nnames entries, NULL = unnamed level */
    int nnames;
} dn_mqtt_route;
/* 1 if the message is a JSON envelope: content type application/json, or a payload
 * whose first non-blank byte is '{'. */
int dn_mqtt_is_envelope(const char *ctype, const uint8_t *payload, size_t len);
/* Completes p->meta for a message on route r with payload[0..len): metadata from the
 * '+' levels of the topic (a user property wins) and, for an envelope, its fields (the
 * user properties and topic win) and its "file" (checked: relative, no "..", at most
 * 1024 bytes, text) copied into *file (caller frees; NULL when not an envelope).
 * Returns NULL, or the problem (in problem[pn] or a constant) when the message must be
 * rejected: topic not text, bad user property, bad topic level, bad envelope, no id,
 * empty payload; or dn_mqtt_out_of_memory (compare the pointer) when an allocation
 * failed: the message itself may be fine. Does not read the file. */
extern const char dn_mqtt_out_of_memory[];
const char *dn_mqtt_interpret(const dn_mqtt_route *r, dn_mqtt_publish *p, const uint8_t *payload, size_t len,
                              char **file, char *problem, size_t pn);

#endif
