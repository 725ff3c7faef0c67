/* Fuzz entry points shared by the libFuzzer drivers (tests/fuzz/fuzz_<target>.c,
 * built by tests/fuzz/build.sh) and the regression replayer
 * (tests/test_fuzz_regress.c, built by the normal Makefile, so CI replays every
 * committed input in tests/fuzz/corpus/<target>/ under plain and SAN builds).
 *
 * Each fz_<target>(data, size) feeds one input through the library's real parser
 * and returns 0 when the input behaved, or a negative code when it broke a
 * contract that a crash detector would not notice by itself:
 *   -1  a failure without a one-line message (empty, or containing a newline)
 *   -2  a failure message that does not name the input ("fuzzinput" label)
 *   -3  a success whose result is inconsistent (checked per target)
 * The libFuzzer drivers abort() on a negative code so such inputs are saved like
 * crashes. Memory errors and leaks are found by ASan/LSan in both builds.
 *
 * Temporary files: targets that only take a path (manifest CSV, model files) write
 * the input into a private directory made once per process under $TMPDIR (or /tmp)
 * and remove that file again after each input; fz_cleanup() removes the directory.
 * Nothing returned by these functions needs freeing. */
#ifndef DN_FUZZ_TARGETS_H
#define DN_FUZZ_TARGETS_H
#include "core/core.h"
#include "core/json.h"
#include "io/dataset.h"
#include "io/modelfile.h"
#include "io/pickle.h"
#include "io/pth.h"
#include "io/safetensors.h"
#include "io/zip.h"
#include "serve/actions.h"
#include "serve/multipart.h"
#include "serve/rules.h"
#include "nn/model.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/utf8.h"
#include "serve/mqtt_payload.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#define FZ_LABEL "fuzzinput"

/* Checks the error contract after a failing call. need_label: the message must
 * name the input (parsers given a label); 0 for APIs that take no label. */
static inline int fz_check_error(int need_label, const char *label) {
    const char *e = dn_last_error();
    if (!e || !*e || strchr(e, '\n')) return -1;
    if (need_label && !strstr(e, label)) return -2;
    return 0;
}

static char fz_dir[256];

/* Private temp directory holding two small files (a.png, b.png) that manifest
 * rows may name, so the manifest reader gets past its existence check. */
static inline const char *fz_tmpdir(void) {
    if (fz_dir[0]) return fz_dir;
    const char *t = getenv("TMPDIR");
    snprintf(fz_dir, sizeof fz_dir, "%s/dnfuzz.XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(fz_dir)) { fz_dir[0] = 0; return NULL; }
    const char *names[] = {"a.png", "b.png"};
    for (int i = 0; i < 2; i++) {
        char p[320];
        snprintf(p, sizeof p, "%s/%s", fz_dir, names[i]);
        FILE *f = fopen(p, "wb");
        if (f) { fputs("x", f); fclose(f); }
    }
    return fz_dir;
}

static inline void fz_http_stop(void);
static inline void fz_cleanup(void) {
    fz_http_stop();
    if (!fz_dir[0]) return;
    char p[320];
    const char *names[] = {"a.png", "b.png", FZ_LABEL};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", fz_dir, names[i]);
        unlink(p);
    }
    rmdir(fz_dir);
    fz_dir[0] = 0;
}

/* Writes the input to <tmpdir>/fuzzinput; path receives its name. 0 on success. */
static inline int fz_write_tmp(const uint8_t *data, size_t size, char *path, size_t cap) {
    const char *d = fz_tmpdir();
    if (!d) return -1;
    snprintf(path, cap, "%s/%s", d, FZ_LABEL);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = size ? fwrite(data, 1, size, f) : 0;
    int bad = fclose(f) != 0 || w != size;
    return bad ? -1 : 0;
}

/* ---------------------------------------------------------------- images */
static inline int fz_image(const uint8_t *data, size_t size) {
    dn_image img = {0};
    dn_status st = dn_image_decode(data, size, FZ_LABEL, &img);
    if (st) return img.data ? -3 : fz_check_error(1, FZ_LABEL);
    int rc = 0;
    if (img.w <= 0 || img.h <= 0 || !img.data || (uint64_t)img.w * (uint64_t)img.h > DN_IMAGE_MAX_PIXELS)
        rc = -3;
    /* Small decoded images also go through the default preprocessing (resize,
     * crop, normalise) since odd sizes are where resampling code goes wrong. */
    if (!rc && (uint64_t)img.w * (uint64_t)img.h <= 4096) {
        dn_preproc pp;
        dn_preproc_default(&pp);
        pp.resize = 20;
        pp.crop = 16;
        float out[3 * 16 * 16];
        if (dn_preprocess(&img, &pp, out)) rc = fz_check_error(0, NULL);
    }
    dn_image_free(&img);
    return rc;
}

/* ------------------------------------------------------------------- zip */
static inline int fz_zip(const uint8_t *data, size_t size) {
    dn_zip *z = NULL;
    if (dn_zip_open(data, size, FZ_LABEL, &z)) return fz_check_error(1, FZ_LABEL);
    int rc = 0;
    for (int i = 0; i < dn_zip_count(z) && !rc; i++) {
        const dn_zip_entry *e = dn_zip_entry_at(z, i);
        if (!e || !e->name || dn_zip_find(z, e->name) < 0) { rc = -3; break; }
        uint8_t *buf = NULL;
        size_t len = 0;
        if (dn_zip_read(z, i, &buf, &len)) { /* a bad entry; the others are still tried */
            rc = buf ? -3 : fz_check_error(1, FZ_LABEL);
            free(buf);
            continue;
        }
        if (len != e->usize) rc = -3;
        free(buf);
        const uint8_t *view = NULL;
        uint8_t *owned = NULL;
        if (!rc && dn_zip_view(z, i, &view, &len, &owned)) rc = -3; /* read succeeded, view must too */
        free(owned);
    }
    dn_zip_close(z);
    return rc;
}

/* ---------------------------------------------------------------- pickle */
static inline int fz_pickle(const uint8_t *data, size_t size) {
    dn_pickle *p = NULL;
    size_t used = 0;
    if (dn_pickle_load(data, size, FZ_LABEL, &p, &used)) return p ? -3 : fz_check_error(1, FZ_LABEL);
    int rc = (!dn_pickle_root(p) || used > size) ? -3 : 0;
    dn_dtype dt;
    (void)dn_pickle_storage_dtype(p, "0", &dt);
    (void)dn_pk_dict_get(dn_pickle_root(p), "fc.weight");
    dn_pickle_free(p);
    return rc;
}

/* ------------------------------------------------------------------- pth */
static inline int fz_pth(const uint8_t *data, size_t size) {
    dn_tensors ts = {0};
    int rc = 0;
    if (dn_pth_load_mem(data, size, FZ_LABEL, &ts)) {
        rc = ts.n ? -3 : fz_check_error(1, FZ_LABEL);
    } else {
        for (int i = 0; i < ts.n && !rc; i++)
            if (!ts.t[i].name || dn_tensor_numel(&ts.t[i]) < 0) rc = -3;
    }
    dn_tensors_free(&ts);
    return rc;
}

/* ----------------------------------------------------------- safetensors */
/* Parses from memory; inputs that parse are also loaded as a model file from
 * disk (format detection, ResNet binding, metadata contract). */
static inline int fz_safetensors(const uint8_t *data, size_t size) {
    dn_tensors ts = {0};
    dn_meta meta = {0};
    dn_status st = dn_safetensors_load_mem(data, size, FZ_LABEL, &ts, &meta);
    int rc = st ? (ts.n ? -3 : fz_check_error(1, FZ_LABEL)) : 0;
    dn_tensors_free(&ts);
    dn_meta_free(&meta);
    if (st || rc) return rc;
    char path[320];
    if (fz_write_tmp(data, size, path, sizeof path)) return 0; /* no temp space: skip the file stage */
    dn_model *m = NULL;
    if (dn_model_load(path, &m)) {
        rc = m ? -3 : fz_check_error(1, FZ_LABEL);
    } else {
        if (dn_model_num_classes(m) <= 0 || !dn_model_class_name(m, 0) || !dn_model_preproc(m)) rc = -3;
        dn_model_free(m);
    }
    unlink(path);
    return rc;
}

/* ------------------------------------------------------------ model meta */
/* Model metadata as a model file carries it, applied to a real narrow ResNet
 * (tests/fixtures/resnet/r18n.pth, 5 classes, read once per process from the
 * repository root). Input: lines "key=value" (value up to the newline). Metadata
 * that applies must survive save -> load: dn_model_meta_build of the result,
 * applied to a fresh copy, must succeed and give the same classes, preprocessing
 * and calibration; class names are distinct and the temperature finite. */
static dn_model *fz_base_model;

static inline void fz_model_release(void) {
    dn_model_free(fz_base_model);
    fz_base_model = NULL;
}

static inline int fz_model_meta(const uint8_t *data, size_t size) {
    if (!fz_base_model) {
        dn_tensors ts = {0};
        if (dn_pth_load("tests/fixtures/resnet/r18n.pth", &ts) || dn_model_from_tensors(&ts, 0, &fz_base_model)) {
            fprintf(stderr, "fz_model_meta: cannot load the base model (run from the repository root): %s\n",
                    dn_last_error());
            abort();
        }
        dn_tensors_free(&ts);
    }
    dn_meta meta = {0};
    int rc = 0;
    char *txt = malloc(size + 1);
    if (!txt) return 0;
    memcpy(txt, data, size);
    txt[size] = 0;
    for (char *line = txt, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        char *eq = strchr(line, '=');
        if (!eq) continue;
        *eq = 0;
        if (dn_meta_set(&meta, line, eq + 1)) { rc = fz_check_error(0, NULL); break; }
    }
    free(txt);
    dn_model *m = NULL, *m2 = NULL;
    dn_meta built = {0};
    if (rc || dn_model_clone(fz_base_model, &m)) goto done;
    if (dn_model_meta_apply(m, &meta, FZ_LABEL)) { rc = fz_check_error(1, FZ_LABEL); goto done; }
    if (dn_model_meta_build(m, &built) || dn_model_clone(fz_base_model, &m2)) goto done;
    if (dn_model_meta_apply(m2, &built, "rebuilt")) { rc = -3; goto done; }
    for (int i = 0; i < m->num_classes && !rc; i++) {
        if (strcmp(dn_model_class_name(m, i), dn_model_class_name(m2, i))) rc = -3;
        for (int j = 0; j < i; j++) /* classes are looked up by name (eval, serve): distinct */
            if (!strcmp(dn_model_class_name(m, i), dn_model_class_name(m, j))) rc = -3;
    }
    if (memcmp(dn_model_preproc(m), dn_model_preproc(m2), sizeof(dn_preproc)) || m->temperature != m2->temperature ||
        m->threshold != m2->threshold || !(m->temperature > 0) || !isfinite(m->temperature))
        rc = -3;
done:
    dn_model_free(m);
    dn_model_free(m2);
    dn_meta_free(&meta);
    dn_meta_free(&built);
    return rc;
}

/* ----------------------------------------------------------------- rules */
/* Action rules files (serve): parse only; nothing is run. */
static inline int fz_rules(const uint8_t *data, size_t size) {
    dn_rules *r = NULL;
    if (dn_rules_parse((const char *)data, size, FZ_LABEL, &r)) return r ? -3 : fz_check_error(1, FZ_LABEL);
    int rc = r->n < 0 ? -3 : 0;
    dn_rules_free(r);
    return rc;
}

/* ------------------------------------------------------------------ json */
static inline void fz_json_walk(const dn_json *v, int depth) {
    if (depth > DN_JSON_MAX_DEPTH + 1) abort(); /* the parser promised a depth limit */
    size_t n = dn_json_len(v);
    for (size_t i = 0; i < n; i++) {
        if (dn_json_type_of(v) == DN_JSON_OBJ) (void)dn_json_get(v, dn_json_key_at(v, i));
        fz_json_walk(dn_json_at(v, i), depth + 1);
    }
    (void)dn_json_str(v, NULL);
    (void)dn_json_num(v, 0);
}

static inline int fz_json(const uint8_t *data, size_t size) {
    char err[200];
    err[0] = 0;
    dn_json *j = dn_json_parse((const char *)data, size, err, sizeof err);
    if (!j) return (!err[0] || strchr(err, '\n')) ? -1 : fz_check_error(0, NULL);
    fz_json_walk(j, 0);
    /* A parsed string value re-serialised and parsed again must give the same text. */
    int rc = 0;
    const char *s = dn_json_str(j, NULL);
    if (s) {
        dn_sb b = {0};
        dn_sb_json_str(&b, s);
        dn_json *k = b.oom ? NULL : dn_json_parse(b.s, b.len, NULL, 0);
        if (!b.oom && (!k || strcmp(dn_json_str(k, ""), s))) rc = -3;
        dn_json_free(k);
        dn_sb_free(&b);
    }
    dn_json_free(j);
    return rc;
}

/* -------------------------------------------------------------- manifest */
static inline int fz_manifest(const uint8_t *data, size_t size) {
    char path[320];
    if (fz_write_tmp(data, size, path, sizeof path)) return 0;
    dn_dataset *ds = NULL;
    int rc = 0;
    if (dn_dataset_load_manifest(path, &ds)) {
        rc = ds ? -3 : fz_check_error(1, FZ_LABEL);
    } else {
        if (ds->nclasses < 2 || ds->n < 1) rc = -3;
        for (int i = 0; i < ds->n && !rc; i++)
            if (ds->items[i].label < 0 || ds->items[i].label >= ds->nclasses) rc = -3;
        dn_dataset_free(ds);
    }
    unlink(path);
    return rc;
}

/* ------------------------------------------------- UTF-8 gate (watched file names) */
/* Reference decoder written from RFC 3629 section 4 (code point ranges, not byte
 * tables): length of the valid sequence at p, 0 if invalid. */
static inline size_t fz_utf8_ref(const unsigned char *p) {
    unsigned c = p[0];
    if (c < 0x80) return c ? 1 : 0;
    size_t n = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (!n) return 0;
    uint32_t cp = c & (0x7F >> n);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    static const uint32_t minv[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < minv[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

/* 1 if the valid sequence of length k at p is a control character (C0, DEL, C1). */
static inline int fz_utf8_ref_control(const unsigned char *p, size_t k) {
    if (k == 1) return p[0] < 0x20 || p[0] == 0x7f;
    return k == 2 && (((unsigned)(p[0] & 0x1F) << 6) | (p[1] & 0x3Fu)) < 0xA0; /* U+0080..U+009F */
}

/* The one UTF-8 check (core/utf8.h): the watcher takes a dropped file only when
 * dn_utf8_printable(name) (else it is skipped and logged escaped); metadata values go
 * through dn_meta_problem; MQTT topics, user properties and envelopes through
 * dn_utf8_text on length-delimited bytes. All are checked against the reference above:
 * on the input as a NUL-terminated name, and as length-delimited bytes (a NUL in them,
 * or a sequence cut by the end, is not text). */
static inline int fz_names(const uint8_t *data, size_t size) {
    if (size > 4096) return 0;
    char name[4097];
    memcpy(name, data, size);
    name[size] = 0;
    int ref_ok = 1;
    for (const unsigned char *p = (const unsigned char *)name; *p && ref_ok;) {
        size_t k = fz_utf8_ref(p);
        size_t got = dn_utf8_seq_len(p);
        if (k != got) return -3;
        if (!k || fz_utf8_ref_control(p, k)) ref_ok = 0;
        else p += k;
    }
    if (dn_utf8_printable(name) != ref_ok) return -3;
    /* length-delimited: the bytes in their own allocation so ASan sees a read past the end */
    unsigned char *b = malloc(size ? size : 1);
    if (!b) return 0;
    memcpy(b, data, size);
    int ref_text = 1;
    for (size_t i = 0; i < size && ref_text;) {
        unsigned char q[4] = {0, 0, 0, 0}; /* the reference reads a padded copy */
        memcpy(q, b + i, size - i < 4 ? size - i : 4);
        size_t k = fz_utf8_ref(q);
        if (k > size - i) k = 0;
        if (dn_utf8_seq_len_n(b + i, size - i) != k) { free(b); return -3; }
        if (!k || fz_utf8_ref_control(q, k)) ref_text = 0;
        else i += k;
    }
    int got_text = dn_utf8_text((const char *)b, size);
    const char *why = dn_utf8_problem((const char *)b, size);
    free(b);
    if (got_text != ref_text || (why == NULL) != ref_text) return -3;
    const char *pb = dn_meta_problem(name);
    size_t l = strlen(name);
    int meta_ok = ref_ok && l > 0 && l <= DN_META_MAX;
    if ((pb == NULL) != meta_ok) return -3;
    return 0;
}

/* ------------------------------------------------- multipart/form-data body */
/* Input: the Content-Type header value, a newline, then the body. */
static inline int fz_multipart(const uint8_t *data, size_t size) {
    const uint8_t *nl = memchr(data, '\n', size < 1024 ? size : 1024);
    if (!nl) return 0;
    char ctype[1025];
    size_t cl = (size_t)(nl - data);
    memcpy(ctype, data, cl);
    ctype[cl] = 0;
    if (strlen(ctype) != cl) return 0; /* headers cannot hold NUL */
    const uint8_t *body = nl + 1;
    size_t blen = size - cl - 1;
    /* the body in its own allocation so ASan sees any read past its end */
    uint8_t *b = malloc(blen ? blen : 1);
    if (!b) return 0;
    memcpy(b, body, blen);
    dn_req_meta m;
    memset(&m, 0, sizeof m);
    const uint8_t *img = NULL;
    size_t n = 0;
    char err[256] = "";
    int rc = 0;
    if (dn_multipart_image(ctype, b, blen, &m, &img, &n, err, sizeof err)) {
        if (!err[0] || strchr(err, '\n')) rc = -1;
    } else {
        if (!img || img < b || n > blen || (size_t)(img - b) > blen - n) rc = -3;
        for (int i = 0; i < DN_META_N && !rc; i++)
            if (m.has[i] && dn_meta_problem(m.v[i])) rc = -3;
    }
    free(b);
    return rc;
}

/* ------------------------------------------------- HTTP request through libmicrohttpd */
/* A real libmicrohttpd daemon whose handler does what serve's does with a request
 * before classification: dn_meta_collect (query string + headers) and, for a
 * multipart POST, dn_multipart_image on the buffered body. In process and without
 * TCP: the daemon has no listen socket (MHD_USE_NO_LISTEN_SOCKET) and no thread of
 * its own; each input is written as raw bytes into one end of a socketpair(AF_UNIX),
 * the other end handed to the daemon with MHD_add_connection, the writing end
 * half-closed, and MHD_run driven from this thread until the daemon closes the
 * connection (the answer is read and dropped as it comes). */
typedef struct { size_t n; int over; uint8_t b[1 << 16]; } fz_hbody;
static struct MHD_Daemon *fz_httpd;
static atomic_int fz_http_broken;

static inline void fz_http_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t) {
    (void)cls; (void)c; (void)t;
    free(*con_cls);
    *con_cls = NULL;
}

static inline enum MHD_Result fz_http_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                              const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)cls; (void)url; (void)version;
    if (!*con_cls) {
        fz_hbody *hb = calloc(1, sizeof *hb);
        if (!hb) return MHD_NO;
        *con_cls = hb;
        return MHD_YES;
    }
    fz_hbody *hb = *con_cls;
    if (*upload_size) {
        size_t k = *upload_size;
        if (k > sizeof hb->b - hb->n) { k = sizeof hb->b - hb->n; hb->over = 1; }
        memcpy(hb->b + hb->n, upload, k);
        hb->n += k;
        *upload_size = 0;
        return MHD_YES;
    }
    dn_req_meta m;
    memset(&m, 0, sizeof m);
    char err[256] = "";
    unsigned code = 200;
    if (dn_meta_collect(c, &m, err, sizeof err)) {
        code = 400;
        if (!err[0] || strchr(err, '\n')) atomic_store(&fz_http_broken, -1);
    } else if (!strcmp(method, "POST") && !hb->over) {
        const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        const uint8_t *img = NULL;
        size_t n = 0;
        if (ct && !strncasecmp(ct, "multipart/form-data", 19)) {
            if (dn_multipart_image(ct, hb->b, hb->n, &m, &img, &n, err, sizeof err)) {
                code = 400;
                if (!err[0] || strchr(err, '\n')) atomic_store(&fz_http_broken, -1);
            } else if (!img || img < hb->b || n > hb->n || (size_t)(img - hb->b) > hb->n - n) {
                atomic_store(&fz_http_broken, -3);
            }
        }
    }
    for (int i = 0; i < DN_META_N; i++)
        if (m.has[i] && dn_meta_problem(m.v[i])) atomic_store(&fz_http_broken, -3);
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(err), err, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static inline void fz_http_stop(void) {
    if (fz_httpd) MHD_stop_daemon(fz_httpd);
    fz_httpd = NULL;
}

static inline int fz_http(const uint8_t *data, size_t size) {
    if (!fz_httpd) {
        fz_httpd = MHD_start_daemon(MHD_USE_NO_LISTEN_SOCKET, 0, NULL, NULL, fz_http_handler, NULL,
                                    MHD_OPTION_NOTIFY_COMPLETED, fz_http_done, NULL, MHD_OPTION_CONNECTION_TIMEOUT,
                                    (unsigned)2, MHD_OPTION_END);
        if (!fz_httpd) return 0;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) return 0;
    /* room for the whole input and the answer, so writing never waits for the daemon */
    int bufsz = 1 << 18;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof bufsz);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof bufsz);
    atomic_store(&fz_http_broken, 0);
    size_t off = 0;
    while (off < size) {
        ssize_t w = send(sv[0], data + off, size - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w <= 0) break;
        off += (size_t)w;
    }
    shutdown(sv[0], SHUT_WR);
    struct sockaddr_in peer; /* what the daemon records as the client's address */
    memset(&peer, 0, sizeof peer);
    peer.sin_family = AF_INET;
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (MHD_add_connection(fz_httpd, sv[1], (struct sockaddr *)&peer, sizeof peer) != MHD_YES) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    /* the daemon owns sv[1] now; drive it until it closes the connection (EOF here) */
    char buf[4096];
    for (int spins = 0; spins < 5256; spins++) { /* ~5 s at most: the daemon's own timeout is 2 s */
        MHD_run(fz_httpd);
        ssize_t r = recv(sv[0], buf, sizeof buf, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) break;
        if (r < 0) {
            struct pollfd pfd = {sv[0], POLLIN, 0};
            /* nothing yet: most inputs need a few more MHD_run calls (no sleep); after 256 the
             * daemon is waiting for its timeout, so wait in 1 ms steps (sleeping from the 8th spin
             * on put 90% of the campaign's http time in poll once the corpus grew) */
            poll(&pfd, 1, spins < 256 ? 0 : 1);
        }
    }
    close(sv[0]);
    MHD_run(fz_httpd); /* lets it notice a connection it has not closed yet */
    return atomic_load(&fz_http_broken);
}

/* ------------------------------------------------- MQTT packets (serve --mqtt-in) */
/* 1 if v is a metadata value as promised: text of 1..DN_MQTT_META_MAX bytes. */
static inline int fz_meta_ok(const char *v) {
    return v && *v && strlen(v) <= DN_MQTT_META_MAX && dn_utf8_printable(v);
}

/* Input: one packet as the broker sends it (first byte, remaining length, body; the
 * body may be shorter than announced: the reader then holds what arrived). PUBLISH,
 * CONNACK and SUBACK are decoded as mqtt_in.c does. A decoded PUBLISH must be
 * consistent (payload offset inside the bytes read, metadata values text of
 * 1..128 bytes, topic_text = the UTF-8 check of the wire topic) and must survive
 * re-encoding: the same topic, packet id and metadata written back as a PUBLISH
 * decode to the same values. */
static inline int fz_mqtt_packet(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t rem = 0, used = 0;
    if (dn_mqtt_remaining_len(data + 1, size - 1, &rem, &used) != 1) return 0;
    if (rem > 268435455u) return -3; /* four length bytes cannot say more */
    size_t avail = size - 1 - used, n = rem < avail ? rem : avail;
    if (n > DN_MQTT_HEAD_MAX) n = DN_MQTT_HEAD_MAX;
    uint8_t *h = malloc(n ? n : 1); /* own allocation: ASan sees a read past the end */
    if (!h) return 0;
    memcpy(h, data + 1 + used, n);
    unsigned type = data[0] >> 4, code = 0;
    int rc = 0;
    if (type == DN_MQTT_CONNACK) {
        (void)dn_mqtt_decode_connack(h, n, &code); /* bounds: ASan */
    } else if (type == DN_MQTT_SUBACK) {
        (void)dn_mqtt_decode_suback(h, n, &code);
    } else if (type == DN_MQTT_PUBLISH) {
        dn_mqtt_publish p;
        dn_status st = dn_mqtt_decode_publish(data[0], h, n, &p);
        if (st) {
            rc = st == DN_ERR_NOMEM ? 0 : fz_check_error(0, NULL);
        } else {
            if (p.head > n || !p.topic || strlen(p.topic) > p.topic_len || p.qos > 2 ||
                p.topic_text != dn_utf8_text((const char *)h + 2, p.topic_len))
                rc = -3;
            for (int i = 0; i < DN_MQTT_NF && !rc; i++)
                if (p.meta.v[i] && !fz_meta_ok(p.meta.v[i])) rc = -3;
            if (!rc && p.topic_text) { /* re-encode and decode again */
                dn_mqtt_wbuf b = {0}, pr = {0};
                dn_mqtt_put_str(&b, p.topic);
                if (p.qos) dn_mqtt_put_u16(&b, p.pid);
                for (int i = 0; i < DN_MQTT_NF; i++) {
                    if (!p.meta.v[i]) continue;
                    dn_mqtt_put_u8(&pr, 0x26);
                    dn_mqtt_put_str(&pr, dn_mqtt_field_name(i));
                    dn_mqtt_put_str(&pr, p.meta.v[i]);
                }
                dn_mqtt_put_varint(&b, pr.n);
                dn_mqtt_put(&b, pr.p, pr.n);
                dn_mqtt_wbuf pk = {0};
                dn_mqtt_publish q;
                if (!dn_mqtt_frame(&pk, DN_MQTT_PUBLISH, (unsigned)p.qos << 1, &b)) {
                    size_t r2 = 0, u2 = 0;
                    if (dn_mqtt_remaining_len(pk.p + 1, pk.n - 1, &r2, &u2) != 1 || r2 != b.n || 1 + u2 + r2 != pk.n) {
                        rc = -3;
                    } else if ((st = dn_mqtt_decode_publish(pk.p[0], pk.p + 1 + u2, r2, &q)) == DN_OK) {
                        if (strcmp(q.topic, p.topic) || q.pid != p.pid || q.qos != p.qos || q.head != r2) rc = -3;
                        for (int i = 0; i < DN_MQTT_NF && !rc; i++)
                            if ((p.meta.v[i] == NULL) != (q.meta.v[i] == NULL) ||
                                (p.meta.v[i] && strcmp(p.meta.v[i], q.meta.v[i])))
                                rc = -3;
                        dn_mqtt_publish_free(&q);
                    } else if (st != DN_ERR_NOMEM) {
                        rc = -3; /* what we wrote must decode */
                    }
                }
                free(b.p);
                free(pr.p);
                free(pk.p);
            }
            dn_mqtt_publish_free(&p);
        }
    }
    free(h);
    return rc;
}

/* ------------------------------------------------- MQTT message interpretation */
/* Input: the topic up to the first newline, then the payload; a payload starting
 * with byte 0x01 is sent with content type application/json (the byte dropped), one
 * starting with 0x02 carries user properties first: lines "name=value" up to an
 * empty line. Interpreted on the route "plant/+/+/+/#" with the '+' levels named
 * line, camera, id (as `serve --mqtt-topic plant/+/+/+/# --mqtt-fields line,camera,id`).
 * Accepted: every metadata value is text of 1..128 bytes, an id is present, an
 * envelope's file is relative text without "..", a plain payload is not empty.
 * Rejected: a one-line problem and no file. */
static inline int fz_mqtt(const uint8_t *data, size_t size) {
    const uint8_t *nl = memchr(data, '\n', size);
    if (!nl) return 0;
    dn_mqtt_publish p;
    memset(&p, 0, sizeof p);
    p.topic_len = (size_t)(nl - data);
    p.topic = dn_strndup((const char *)data, p.topic_len);
    if (!p.topic) return 0;
    p.topic_text = dn_utf8_text((const char *)data, p.topic_len);
    const uint8_t *pl = nl + 1;
    size_t len = size - p.topic_len - 1;
    if (len && pl[0] == 1) {
        p.meta.ctype = dn_strdup("application/json");
        pl++, len--;
    } else if (len && pl[0] == 2) { /* user properties, checked as the decoder does */
        pl++, len--;
        for (;;) {
            const uint8_t *e = memchr(pl, '\n', len);
            if (!e || e == pl) { if (e) { len -= 1; pl += 1; } break; }
            const uint8_t *eq = memchr(pl, '=', (size_t)(e - pl));
            if (eq) {
                dn_mqtt_wbuf b = {0};
                dn_mqtt_put_u8(&b, 0); /* topic "" */
                dn_mqtt_put_u8(&b, 0);
                size_t kl = (size_t)(eq - pl), vl = (size_t)(e - eq - 1);
                dn_mqtt_put_varint(&b, 5 + kl + vl);
                dn_mqtt_put_u8(&b, 0x26);
                dn_mqtt_put_u16(&b, (unsigned)kl);
                dn_mqtt_put(&b, pl, kl);
                dn_mqtt_put_u16(&b, (unsigned)vl);
                dn_mqtt_put(&b, eq + 1, vl);
                dn_mqtt_publish u;
                if (!b.oom && kl < 65536 && vl < 65536 && dn_mqtt_decode_publish(0x30, b.p, b.n, &u) == DN_OK) {
                    for (int i = 0; i < DN_MQTT_NF; i++)
                        if (u.meta.v[i]) { free(p.meta.v[i]); p.meta.v[i] = u.meta.v[i]; u.meta.v[i] = NULL; }
                    p.meta.bad |= u.meta.bad;
                    dn_mqtt_publish_free(&u);
                }
                free(b.p);
            }
            len -= (size_t)(e - pl) + 1;
            pl = e + 1;
        }
    }
    uint8_t *payload = malloc(len ? len : 1); /* own allocation for ASan */
    if (!payload) { dn_mqtt_publish_free(&p); return 0; }
    memcpy(payload, pl, len);
    static char *const names[3] = {"line", "camera", "id"};
    dn_mqtt_route r = {"plant/+/+/+/#", names, 3};
    char problem[512] = "", *file = NULL;
    int rc = 0;
    const char *bad = dn_mqtt_interpret(&r, &p, payload, len, &file, problem, sizeof problem);
    if (bad) {
        if (!*bad || strchr(bad, '\n') || file) rc = -1;
    } else {
        if (!p.meta.v[DN_MQTT_ID]) rc = -3;
        for (int i = 0; i < DN_MQTT_NF && !rc; i++)
            if (p.meta.v[i] && !fz_meta_ok(p.meta.v[i])) rc = -3;
        if (file) {
            if (!*file || file[0] == '/' || strlen(file) > 1024 || !dn_utf8_printable(file)) rc = -3;
            for (const char *q = file; *q && !rc;) {
                size_t l = strcspn(q, "/");
                if (l == 2 && q[0] == '.' && q[1] == '.') rc = -3;
                q += l;
                if (*q == '/') q++;
            }
        } else if (!len || dn_mqtt_is_envelope(p.meta.ctype, payload, len)) {
            rc = -3;
        }
    }
    free(file);
    free(payload);
    dn_mqtt_publish_free(&p);
    return rc;
}

typedef int (*fz_fn)(const uint8_t *, size_t);

/* Body of a libFuzzer driver for one target: a contract break (negative code)
 * aborts with the message so libFuzzer saves the input as a crash. */
#define FZ_DRIVER(fn)                                                              \
    int LLVMFuzzerInitialize(int *argc, char ***argv);                             \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);                  \
    int LLVMFuzzerInitialize(int *argc, char ***argv) {                            \
        (void)argc; (void)argv;                                                    \
        atexit(fz_cleanup);                                                        \
        atexit(fz_model_release);                                                  \
        return 0;                                                                  \
    }                                                                              \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {                 \
        int rc = fn(data, size);                                                   \
        if (rc < 0) {                                                              \
            fprintf(stderr, "%s: contract broken (%d): [%s]\n", #fn, rc, dn_last_error()); \
            abort();                                                               \
        }                                                                          \
        return 0;                                                                  \
    }
#endif
