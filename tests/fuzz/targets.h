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
#include <arpa/inet.h>
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

/* The watcher takes a dropped file only when dn_utf8_printable(name) (else it is
 * skipped and logged escaped); metadata values go through dn_meta_problem. Both are
 * checked against the reference above on the input as a NUL-terminated name. */
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
        if (!k || *p < 0x20 || *p == 0x7f) ref_ok = 0;
        else p += k;
    }
    if (dn_utf8_printable(name) != ref_ok) return -3;
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
/* A real libmicrohttpd daemon on 127.0.0.1 whose handler does what serve's does with
 * a request before classification: dn_meta_collect (query string + headers) and, for
 * a multipart POST, dn_multipart_image on the buffered body. Each input is sent as
 * raw bytes on a fresh connection (then half-closed) and the answer read to EOF. */
typedef struct { size_t n; int over; uint8_t b[1 << 16]; } fz_hbody;
static struct MHD_Daemon *fz_httpd;
static uint16_t fz_http_port;
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
        struct sockaddr_in lo;
        memset(&lo, 0, sizeof lo);
        lo.sin_family = AF_INET;
        lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* port 0: any free one */
        fz_httpd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, fz_http_handler, NULL,
                                    MHD_OPTION_NOTIFY_COMPLETED, fz_http_done, NULL, MHD_OPTION_CONNECTION_TIMEOUT,
                                    (unsigned)2, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&lo, MHD_OPTION_END);
        if (!fz_httpd) return 0;
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(fz_httpd, MHD_DAEMON_INFO_BIND_PORT);
        fz_http_port = di ? di->port : 0;
        if (!fz_http_port) { fz_http_stop(); return 0; }
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(fz_http_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    atomic_store(&fz_http_broken, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        size_t off = 0;
        while (off < size) {
            ssize_t w = send(fd, data + off, size - off, MSG_NOSIGNAL);
            if (w <= 0) break;
            off += (size_t)w;
        }
        shutdown(fd, SHUT_WR);
        char buf[4096];
        struct pollfd pfd = {fd, POLLIN, 0};
        while (poll(&pfd, 1, 3000) > 0 && recv(fd, buf, sizeof buf, 0) > 0) {}
    }
    close(fd);
    return atomic_load(&fz_http_broken);
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
