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
#include "serve/rules.h"
#include "nn/model.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static inline void fz_cleanup(void) {
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
