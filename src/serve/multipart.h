/* Request metadata and multipart/form-data parsing for POST /v1/predict.
 *
 * Metadata (line, station, camera, part, request id) comes from the query string
 * (?line=&station=&camera=&part= or serial=&request_id=), else from headers (X-Line,
 * X-Station, X-Camera, X-Part or X-Serial, X-Request-Id), and for multipart bodies from
 * form fields of those names when neither set it. Every value is checked by
 * dn_meta_problem. All functions are pure (no global state): thread-safe on distinct
 * arguments. Errors are returned as a one-line message for a 400 answer. */
#ifndef DN_SERVE_MULTIPART_H
#define DN_SERVE_MULTIPART_H
#include "core/utf8.h" /* dn_utf8_*: the UTF-8 check used here */
#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>

#define DN_META_MAX 128 /* bytes per metadata value */
enum { DN_META_LINE, DN_META_STATION, DN_META_CAMERA, DN_META_PART, DN_META_REQUEST_ID, DN_META_N };

typedef struct dn_req_meta {
    char v[DN_META_N][DN_META_MAX + 1];
    int has[DN_META_N];
} dn_req_meta;

/* NULL if v is an acceptable metadata value (1..DN_META_MAX bytes, text as
 * dn_utf8_problem defines it: valid UTF-8, no C0/DEL/C1 control characters), else what is wrong with it ("is empty", ...). */
const char *dn_meta_problem(const char *v);
/* Value i of m, or NULL when it was not given. */
const char *dn_meta_get_value(const dn_req_meta *m, int i);
/* Fills m from the query string and headers of c. 0, or -1 with the problem in err. */
int dn_meta_collect(struct MHD_Connection *c, dn_req_meta *m, char *err, size_t en);
/* Finds the image in a multipart/form-data body (ctype: the Content-Type with its
 * boundary): the first part with a filename, or named "image"/"file". Form fields named
 * like the metadata set the ones not given yet. 0 with img and n pointing into body, or -1
 * with the problem in err. */
int dn_multipart_image(const char *ctype, const uint8_t *body, size_t len, dn_req_meta *m, const uint8_t **img,
                       size_t *n, char *err, size_t en);

#endif
