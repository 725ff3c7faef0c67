/* dn_model_load / dn_model_save and the metadata contract (see modelfile.h and
 * docs/model-format.md). */
#include "io/modelfile.h"
#include "core/core.h"
#include "core/json.h"
#include "core/sha256.h"
#include "io/pth.h"
#include "io/safetensors.h"
#include "ood/ood.h"
#include "nn/quant_int8.h"
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define DN_MODEL_MAX_FILE ((size_t)8 << 30)

dn_weight_format dn_weights_detect(const uint8_t *buf, size_t len) {
    switch (dn_pth_detect(buf, len)) {
    case DN_PTH_ZIP: return DN_WFMT_PTH_ZIP;
    case DN_PTH_LEGACY: return DN_WFMT_PTH_LEGACY;
    default: break;
    }
    return dn_safetensors_detect(buf, len) ? DN_WFMT_SAFETENSORS : DN_WFMT_UNKNOWN;
}

const char *dn_weight_format_name(dn_weight_format f) {
    switch (f) {
    case DN_WFMT_PTH_ZIP: return "torch .pth (zip)";
    case DN_WFMT_PTH_LEGACY: return "torch .pth (legacy)";
    case DN_WFMT_SAFETENSORS: return "safetensors";
    default: return "unknown";
    }
}

int dn_meta_key_reserved(const char *k) {
    static const char *r[] = {DN_META_FORMAT, DN_META_FORMAT_VERSION, DN_META_ARCH, DN_META_CLASSES, DN_META_PREPROCESS,
                              DN_META_SOURCE_SHA256, DN_META_TEMPERATURE, DN_META_THRESHOLD};
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        if (!strcmp(k, r[i])) return 1;
    return !strcmp(k, "ood"); /* written from m->ood (src/ood/ood.h) */
}

/* dn_weights_load on bytes in memory; path only names them in messages. */
static dn_status weights_from_buf(const uint8_t *buf, size_t len, const char *path, dn_tensors *ts, dn_meta *meta,
                                  dn_weight_format *format, char *sha256_hex) {
    dn_status st;
    memset(ts, 0, sizeof *ts);
    if (meta) memset(meta, 0, sizeof *meta);
    if (format) *format = DN_WFMT_UNKNOWN;
    if (sha256_hex) {
        uint8_t d[32];
        dn_sha256(buf, len, d);
        dn_sha256_hex(d, sha256_hex);
    }
    dn_weight_format f = dn_weights_detect(buf, len);
    if (format) *format = f;
    switch (f) {
    case DN_WFMT_PTH_ZIP:
    case DN_WFMT_PTH_LEGACY: st = dn_pth_load_mem(buf, len, path, ts); break;
    case DN_WFMT_SAFETENSORS: st = dn_safetensors_load_mem(buf, len, path, ts, meta); break;
    default:
        st = dn_fail(DN_ERR_FORMAT, "%s: not a model file (%s; expected torch .pth zip/legacy or safetensors)", path,
                     len == 0 ? "empty" : "unrecognised content");
    }
    return st;
}

/* The whole file, mapped read-only where possible (hashing and parsing then
 * read the page cache directly: no read() copy and no fresh pages for a 45 MB
 * buffer), else read into memory like dn_read_file. The parsers may rely on a
 * NUL after the data: a mapping has one (the rest of the last page is zero)
 * unless the size is a whole number of pages, which is read instead.
 * *mapped: 1 = release with munmap, 0 = free. (A file truncated by another
 * process while it is mapped would fault; models are replaced by rename.) */
static dn_status weights_bytes(const char *path, uint8_t **buf, size_t *len, int *mapped) {
    *mapped = 0;
    FILE *f;
    size_t fsize;
    dn_status st = dn_open_regular(path, &f, &fsize);
    if (st) return st;
    long page = sysconf(_SC_PAGESIZE);
    if (fsize > 0 && fsize <= DN_MODEL_MAX_FILE && page > 0 && fsize % (size_t)page != 0) {
        void *p = mmap(NULL, fsize, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fileno(f), 0);
        if (p != MAP_FAILED) {
            fclose(f);
            *buf = p;
            *len = fsize;
            *mapped = 1;
            return DN_OK;
        }
    }
    fclose(f);
    return dn_read_file(path, DN_MODEL_MAX_FILE, buf, len);
}

dn_status dn_weights_load(const char *path, dn_tensors *ts, dn_meta *meta, dn_weight_format *format, char *sha256_hex) {
    uint8_t *buf;
    size_t len;
    int mapped;
    memset(ts, 0, sizeof *ts);
    if (meta) memset(meta, 0, sizeof *meta);
    if (format) *format = DN_WFMT_UNKNOWN;
    dn_status st = weights_bytes(path, &buf, &len, &mapped);
    if (st) return st;
    st = weights_from_buf(buf, len, path, ts, meta, format, sha256_hex);
    if (mapped) munmap(buf, len);
    else free(buf);
    return st;
}

/* ------------------------------------------------------------ metadata */

static dn_status put_float(dn_meta *meta, const char *key, float v) {
    char b[48];
    snprintf(b, sizeof b, "%.9g", (double)v);
    return dn_meta_set(meta, key, b);
}

dn_status dn_model_meta_build(const dn_model *m, dn_meta *meta) {
    memset(meta, 0, sizeof *meta);
    dn_sb b = {0};
    dn_status st;
    if ((st = dn_meta_set(meta, DN_META_FORMAT, "defectnet")) || (st = dn_meta_set(meta, DN_META_FORMAT_VERSION, "1")) ||
        (st = dn_meta_set(meta, DN_META_ARCH, m->arch)))
        goto fail;
    dn_sb_puts(&b, "[");
    for (int i = 0; i < m->num_classes; i++) {
        if (i) dn_sb_puts(&b, ",");
        dn_sb_json_str(&b, m->class_names && m->class_names[i] ? m->class_names[i] : "");
    }
    dn_sb_puts(&b, "]");
    if (b.oom) { st = dn_fail(DN_ERR_NOMEM, "model metadata: out of memory"); goto fail; }
    if ((st = dn_meta_set(meta, DN_META_CLASSES, b.s))) goto fail;
    dn_sb_free(&b);
    const dn_preproc *pp = &m->pp;
    dn_sb_printf(&b, "{\"resize\":%d,\"crop\":%d,\"mean\":[%.9g,%.9g,%.9g],\"std\":[%.9g,%.9g,%.9g],"
                     "\"channel_order\":\"%s\",\"interpolation\":\"bilinear_antialias\"}",
                 pp->resize, pp->crop, (double)pp->mean[0], (double)pp->mean[1], (double)pp->mean[2], (double)pp->std[0],
                 (double)pp->std[1], (double)pp->std[2], pp->bgr ? "BGR" : "RGB");
    if (b.oom) { st = dn_fail(DN_ERR_NOMEM, "model metadata: out of memory"); goto fail; }
    if ((st = dn_meta_set(meta, DN_META_PREPROCESS, b.s))) goto fail;
    dn_sb_free(&b);
    if ((st = dn_meta_set(meta, DN_META_SOURCE_SHA256, m->source_sha256)) ||
        (st = put_float(meta, DN_META_TEMPERATURE, m->temperature)) || (st = put_float(meta, DN_META_THRESHOLD, m->threshold)))
        goto fail;
    for (int i = 0; i < m->meta.n; i++)
        if (!dn_meta_key_reserved(m->meta.keys[i]) && (st = dn_meta_set(meta, m->meta.keys[i], m->meta.vals[i]))) goto fail;
    return DN_OK;
fail:
    dn_sb_free(&b);
    dn_meta_free(meta);
    return st;
}

static int parse_float(const char *s, float *out) {
    char *end;
    double v = strtod(s, &end);
    /* a double beyond float range would become inf (or be undefined behaviour) when narrowed */
    if (end == s || *end || !isfinite(v) || fabs(v) > FLT_MAX) return 0;
    *out = (float)v;
    return 1;
}

static int is_hex64(const char *s) {
    if (strlen(s) != 64) return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

static dn_status apply_preprocess(dn_preproc *pp, const char *txt, const char *label) {
    char err[160];
    dn_json *j = dn_json_parse(txt, strlen(txt), err, sizeof err);
    if (!j) return dn_fail(DN_ERR_FORMAT, "%s: metadata 'preprocess' is not valid JSON: %s", label, err);
    dn_status st = DN_OK;
    dn_preproc p = *pp;
    const dn_json *mean = dn_json_get(j, "mean"), *sd = dn_json_get(j, "std");
    double rs = dn_json_num(dn_json_get(j, "resize"), -1), cr = dn_json_num(dn_json_get(j, "crop"), -1);
    const char *order = dn_json_str(dn_json_get(j, "channel_order"), "RGB");
    const char *interp = dn_json_str(dn_json_get(j, "interpolation"), "bilinear_antialias");
    if (dn_json_type_of(j) != DN_JSON_OBJ || !(rs >= 0 && rs <= 16384 && rs == (int)rs) || !(cr >= 1 && cr <= 16384 && cr == (int)cr) ||
        dn_json_len(mean) != 3 || dn_json_len(sd) != 3) {
        st = dn_fail(DN_ERR_FORMAT, "%s: metadata 'preprocess' needs integer resize >= 0, crop >= 1, mean[3], std[3]", label);
        goto done;
    }
    p.resize = (int)rs;
    p.crop = (int)cr;
    for (int c = 0; c < 3; c++) {
        double mv = dn_json_num(dn_json_at(mean, (size_t)c), NAN), sv = dn_json_num(dn_json_at(sd, (size_t)c), NAN);
        /* checked as the floats they become: 1e300 is a finite double but an infinite
         * float, which the model would then write back as "inf" (not JSON) when saved */
        float mf = (float)mv, sf = (float)sv;
        if (!isfinite(mv) || !isfinite(sv) || !isfinite(mf) || !isfinite(sf) || !(sf > 0)) {
            st = dn_fail(DN_ERR_FORMAT, "%s: metadata 'preprocess': mean/std must be numbers in float range, std > 0", label);
            goto done;
        }
        p.mean[c] = mf;
        p.std[c] = sf;
    }
    if (!strcmp(order, "RGB")) p.bgr = 0;
    else if (!strcmp(order, "BGR")) p.bgr = 1;
    else { st = dn_fail(DN_ERR_FORMAT, "%s: metadata 'preprocess': channel_order '%s' is not RGB or BGR", label, order); goto done; }
    if (strcmp(interp, "bilinear_antialias")) {
        st = dn_fail(DN_ERR_UNSUPPORTED, "%s: metadata 'preprocess': interpolation '%s' not supported (bilinear_antialias)", label, interp);
        goto done;
    }
    *pp = p;
done:
    dn_json_free(j);
    return st;
}

static dn_status apply_classes(dn_model *m, const char *txt, const char *label) {
    char err[160];
    dn_json *j = dn_json_parse(txt, strlen(txt), err, sizeof err);
    if (!j) return dn_fail(DN_ERR_FORMAT, "%s: metadata 'classes' is not valid JSON: %s", label, err);
    dn_status st = DN_OK;
    if (dn_json_type_of(j) != DN_JSON_ARR) { st = dn_fail(DN_ERR_FORMAT, "%s: metadata 'classes' is not a JSON array", label); goto done; }
    if ((int)dn_json_len(j) != m->num_classes) {
        st = dn_fail(DN_ERR_SHAPE, "%s: metadata lists %zu classes but fc has %d outputs", label, dn_json_len(j), m->num_classes);
        goto done;
    }
    for (int i = 0; i < m->num_classes; i++) {
        const char *s = dn_json_str(dn_json_at(j, (size_t)i), NULL);
        if (!s || !*s) { st = dn_fail(DN_ERR_FORMAT, "%s: metadata 'classes'[%d] is not a non-empty string", label, i); goto done; }
        for (int k = 0; k < i; k++) /* classes are matched by name (eval, serve rules): no duplicates */
            if (!strcmp(s, dn_json_str(dn_json_at(j, (size_t)k), ""))) {
                st = dn_fail(DN_ERR_FORMAT, "%s: metadata 'classes' names '%s' twice", label, s);
                goto done;
            }
        char *d = dn_strdup(s);
        if (!d) { st = DN_ERR_NOMEM; goto done; }
        free(m->class_names[i]);
        m->class_names[i] = d;
    }
done:
    dn_json_free(j);
    return st;
}

dn_status dn_model_meta_apply(dn_model *m, const dn_meta *meta, const char *label) {
    dn_status st;
    const char *v;
    if ((v = dn_meta_get(meta, DN_META_FORMAT)) && strcmp(v, "defectnet"))
        return dn_fail(DN_ERR_FORMAT, "%s: metadata format '%s' is not 'defectnet'", label, v);
    if ((v = dn_meta_get(meta, DN_META_FORMAT_VERSION)) && strcmp(v, "1"))
        return dn_fail(DN_ERR_UNSUPPORTED, "%s: model format_version '%s' is newer than this build supports (1)", label, v);
    if ((v = dn_meta_get(meta, DN_META_ARCH)) && strcmp(v, m->arch))
        return dn_fail(DN_ERR_SHAPE, "%s: metadata says arch '%s' but the tensors describe '%s'", label, v, m->arch);
    /* a backbone loaded without its head (num_classes 0) has no use for the class list */
    if ((v = dn_meta_get(meta, DN_META_CLASSES)) && m->num_classes > 0 && (st = apply_classes(m, v, label))) return st;
    if ((v = dn_meta_get(meta, DN_META_PREPROCESS)) && (st = apply_preprocess(&m->pp, v, label))) return st;
    if ((v = dn_meta_get(meta, DN_META_SOURCE_SHA256))) {
        if (*v && !is_hex64(v)) return dn_fail(DN_ERR_FORMAT, "%s: metadata source_sha256 is not 64 lower-case hex digits", label);
        snprintf(m->source_sha256, sizeof m->source_sha256, "%s", v);
    }
    if ((v = dn_meta_get(meta, DN_META_TEMPERATURE)) && (!parse_float(v, &m->temperature) || !(m->temperature > 0)))
        return dn_fail(DN_ERR_FORMAT, "%s: metadata temperature '%s' is not a positive number", label, v);
    if ((v = dn_meta_get(meta, DN_META_THRESHOLD)) && (!parse_float(v, &m->threshold) || m->threshold < 0 || m->threshold > 1))
        return dn_fail(DN_ERR_FORMAT, "%s: metadata threshold '%s' is not a number in [0, 1]", label, v);
    for (int i = 0; i < meta->n; i++)
        if (!dn_meta_key_reserved(meta->keys[i]) && (st = dn_meta_set(&m->meta, meta->keys[i], meta->vals[i]))) return st;
    return DN_OK;
}

/* ------------------------------------------------------------ load / save */

/* Model from a file's bytes (buf != NULL) or from the file at path (buf == NULL);
 * path names the model in messages either way. */
static dn_status model_load(const uint8_t *buf, size_t len, const char *path, int skip_fc, dn_model **out) {
    *out = NULL;
    if (!path) return dn_fail(DN_ERR_ARG, "dn_model_load: NULL path");
    dn_tensors ts;
    dn_meta meta;
    dn_weight_format f;
    char sha[65];
    dn_model *m = NULL;
    dn_ood *ood = NULL;
    dn_status st = buf ? weights_from_buf(buf, len, path, &ts, &meta, &f, sha) : dn_weights_load(path, &ts, &meta, &f, sha);
    if (st) goto done;
    { /* unknown-input detection data (ood.* tensors) is taken out before the model builder sees the keys */
        const dn_tensor *fw = skip_fc ? NULL : dn_tensors_find(&ts, "fc.weight");
        int fdim = fw && fw->ndim == 2 ? (int)fw->shape[1] : 0, ncls = fw && fw->ndim == 2 ? (int)fw->shape[0] : 0;
        if ((st = dn_ood_take(&ts, f == DN_WFMT_SAFETENSORS ? &meta : NULL, fdim, ncls, path, &ood))) goto done;
    }
    if ((st = dn_model_from_tensors(&ts, skip_fc, &m))) {
        dn_fail_prefix(st, "%s", path);
        goto done;
    }
    m->ood = ood;
    ood = NULL;
    snprintf(m->sha256, sizeof m->sha256, "%s", sha);
    if (f == DN_WFMT_SAFETENSORS && dn_meta_get(&meta, DN_META_FORMAT)) {
        if ((st = dn_model_meta_apply(m, &meta, path))) goto done;
        if ((st = dn_int8_check(&m->meta, path))) goto done; /* int8 activation scales (nn/quant_int8.h) */
        if (skip_fc) m->temperature = 1.0f, m->threshold = 0.0f; /* calibration belongs to the dropped head */
    } else {
        /* torchvision weights (.pth, or a plain safetensors state_dict without defectnet
         * metadata): defaults (class_0.., torchvision eval preprocessing), provenance =
         * this file; foreign metadata keys are still carried along */
        snprintf(m->source_sha256, sizeof m->source_sha256, "%s", sha);
        for (int i = 0; i < meta.n; i++)
            if (!dn_meta_key_reserved(meta.keys[i]) && (st = dn_meta_set(&m->meta, meta.keys[i], meta.vals[i]))) goto done;
    }
    *out = m;
    m = NULL;
done:
    dn_ood_free(ood);
    dn_model_free(m);
    dn_tensors_free(&ts);
    dn_meta_free(&meta);
    return st;
}

dn_status dn_model_load_ex(const char *path, int skip_fc, dn_model **out) { return model_load(NULL, 0, path, skip_fc, out); }

dn_status dn_model_load(const char *path, dn_model **out) { return dn_model_load_ex(path, 0, out); }

dn_status dn_model_load_memory(const void *bytes, size_t len, const char *label, dn_model **out) {
    if (!out) return dn_fail(DN_ERR_ARG, "dn_model_load_memory: NULL output");
    *out = NULL;
    if (!bytes && len) return dn_fail(DN_ERR_ARG, "dn_model_load_memory: NULL bytes");
    if (len > DN_MODEL_MAX_FILE) return dn_fail(DN_ERR_NOMEM, "%s: %zu bytes exceed the model size limit", label ? label : "memory", len);
    return model_load(bytes ? bytes : (const void *)"", len, label ? label : "memory", 0, out);
}

dn_status dn_model_save(const dn_model *m, const char *path) {
    if (!m || !path) return dn_fail(DN_ERR_ARG, "dn_model_save: NULL %s", m ? "path" : "model");
    dn_tensors ts = {0};
    dn_meta meta = {0};
    dn_status st = dn_model_to_tensors(m, &ts);
    if (st) goto done;
    if ((st = dn_model_meta_build(m, &meta))) goto done;
    if ((st = dn_ood_to_tensors(m->ood, &ts, &meta))) goto done;
    st = dn_safetensors_save(path, &ts, &meta);
done:
    dn_tensors_free(&ts);
    dn_meta_free(&meta);
    return st;
}
