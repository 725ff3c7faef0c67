/* Request metadata and multipart/form-data parsing (see multipart.h). */
#include "serve/multipart.h"
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *const META_Q[DN_META_N] = {"line", "station", "camera", "part", "request_id"};
static const char *const META_H[DN_META_N] = {"X-Line", "X-Station", "X-Camera", "X-Part", "X-Request-Id"};

const char *dn_meta_problem(const char *v) {
    size_t n = strlen(v);
    if (n == 0) return "is empty";
    if (n > DN_META_MAX) return "is longer than 128 bytes";
    return dn_utf8_problem(v, n);
}

const char *dn_meta_get_value(const dn_req_meta *m, int i) { return m->has[i] ? m->v[i] : NULL; }

/* Sets value i of m from v (field: its name for messages). 0 or -1 with err set. */
static int set_meta(dn_req_meta *m, int i, const char *v, const char *field, char *err, size_t en) {
    const char *pb = dn_meta_problem(v);
    if (pb) {
        snprintf(err, en, "bad metadata: %s %s", field, pb);
        return -1;
    }
    snprintf(m->v[i], sizeof m->v[i], "%s", v);
    m->has[i] = 1;
    return 0;
}

int dn_meta_collect(struct MHD_Connection *c, dn_req_meta *m, char *err, size_t en) {
    for (int i = 0; i < DN_META_N; i++) {
        const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, META_Q[i]);
        if (!v && i == DN_META_PART) v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "serial");
        const char *field = META_Q[i];
        if (!v) {
            v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, META_H[i]);
            if (!v && i == DN_META_PART) v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Serial");
            field = META_H[i];
        }
        if (v && set_meta(m, i, v, field, err, en)) return -1;
    }
    return 0;
}

/* The boundary of a multipart Content-Type as the delimiter "\r\n--<boundary>" in bnd
 * (>= 80 bytes). Returns its length, or 0 with err set. */
static size_t boundary(const char *ctype, char *bnd, char *err, size_t en) {
    const char *bp = strcasestr(ctype, "boundary=");
    if (!bp) { snprintf(err, en, "multipart body without boundary"); return 0; }
    bp += 9;
    size_t bl = 0;
    int quoted = *bp == '"';
    if (quoted) bp++;
    while (bp[bl] && bl < 70 && (quoted ? bp[bl] != '"' : (bp[bl] != ';' && bp[bl] != ' '))) bl++;
    if (!bl || bl >= 70) { snprintf(err, en, "multipart boundary missing or too long"); return 0; }
    memcpy(bnd, "\r\n--", 4);
    memcpy(bnd + 4, bp, bl);
    bnd[bl + 4] = 0;
    return bl + 4;
}

/* A form field (not the image) of a multipart body: sets the metadata it names. */
static int form_field(dn_req_meta *m, const char *name, const uint8_t *content, size_t clen, char *err, size_t en) {
    int idx = !strcmp(name, "serial") ? DN_META_PART : -1;
    for (int i = 0; i < DN_META_N; i++)
        if (!strcmp(name, META_Q[i])) idx = i;
    if (idx < 0 || m->has[idx]) return 0;
    char v[DN_META_MAX + 2];
    if (clen > DN_META_MAX) { snprintf(err, en, "bad metadata: multipart field is longer than 128 bytes"); return -1; }
    memcpy(v, content, clen);
    v[clen] = 0;
    if (strlen(v) != clen) { snprintf(err, en, "bad metadata: multipart field contains NUL"); return -1; }
    return set_meta(m, idx, v, name, err, en);
}

int dn_multipart_image(const char *ctype, const uint8_t *body, size_t len, dn_req_meta *m, const uint8_t **img,
                       size_t *n, char *err, size_t en) {
    char bnd[80];
    size_t bl = boundary(ctype, bnd, err, en);
    if (!bl) return -1;
    if (!body) { snprintf(err, en, "empty multipart body"); return -1; }
    const uint8_t *end = body + len;
    /* the first delimiter may lack the leading CRLF */
    const uint8_t *p = memmem(body, len, bnd + 2, bl - 2);
    *img = NULL;
    while (p) {
        p += bl - 2;
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') break; /* final delimiter */
        const uint8_t *h = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!h || h - p > 4096) { snprintf(err, en, "malformed multipart part headers"); return -1; }
        char hdr[4100];
        memcpy(hdr, p, (size_t)(h - p));
        hdr[h - p] = 0;
        const uint8_t *content = h + 4;
        const uint8_t *next = memmem(content, (size_t)(end - content), bnd, bl);
        if (!next) { snprintf(err, en, "truncated multipart body"); return -1; }
        size_t clen = (size_t)(next - content);
        char name[64] = "";
        const char *nm = strcasestr(hdr, " name=\"");
        if (!nm) nm = strcasestr(hdr, ";name=\"");
        if (nm) {
            nm += 7;
            size_t k = 0;
            while (nm[k] && nm[k] != '"' && k < sizeof name - 1) { name[k] = nm[k]; k++; }
            name[k] = 0;
        }
        int is_file = strcasestr(hdr, "filename=") != NULL || !strcmp(name, "image") || !strcmp(name, "file");
        if (is_file && !*img) {
            *img = content;
            *n = clen;
        } else if (!is_file && form_field(m, name, content, clen, err, en)) {
            return -1;
        }
        p = next + 2; /* at "--boundary" */
    }
    if (!*img) { snprintf(err, en, "multipart body has no image part (a file field, or a field named image)"); return -1; }
    return 0;
}
