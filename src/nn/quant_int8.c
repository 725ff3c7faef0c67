/* int8 activation calibration and the quant.int8 scale record (quant_int8.h). */
#include "nn/quant_int8.h"
#include "core/json.h"
#include "nn/engine.h"
#include "nn/quant.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NBINS 4096

dn_status dn_calib_method_parse(const char *s, dn_calib_method *out) {
    if (s && !strcmp(s, "minmax")) { *out = DN_CALIB_MINMAX; return DN_OK; }
    if (s && !strcmp(s, "percentile")) { *out = DN_CALIB_PERCENTILE; return DN_OK; }
    return dn_fail(DN_ERR_ARG, "calibration method '%s' unknown (minmax|percentile)", s ? s : "(null)");
}

static int scale_ok(double v) { return isfinite(v) && v >= 1e-30 && v <= 1e30; }

/* the parsed record (NULL if absent) */
static dn_status parse(const dn_meta *meta, const char *label, dn_json **out, const dn_json **scales) {
    *out = NULL;
    *scales = NULL;
    const char *txt = dn_meta_get(meta, DN_META_QUANT_INT8);
    if (!txt) return DN_OK;
    char err[160];
    dn_json *j = dn_json_parse(txt, strlen(txt), err, sizeof err);
    if (!j) return dn_fail(DN_ERR_FORMAT, "%s: metadata %s is not valid JSON: %s", label, DN_META_QUANT_INT8, err);
    const dn_json *sc = dn_json_get(j, "scales");
    if (dn_json_num(dn_json_get(j, "version"), 0) != 1 || !sc || dn_json_type_of(sc) != DN_JSON_OBJ) {
        dn_json_free(j);
        return dn_fail(DN_ERR_FORMAT, "%s: metadata %s needs version 1 and a scales object", label, DN_META_QUANT_INT8);
    }
    *out = j;
    *scales = sc;
    return DN_OK;
}

dn_status dn_int8_check(const dn_meta *meta, const char *label) {
    dn_json *j;
    const dn_json *sc;
    dn_status st = parse(meta, label, &j, &sc);
    if (st || !j) return st;
    for (size_t i = 0; i < dn_json_len(sc) && !st; i++) {
        const dn_json *v = dn_json_at(sc, i);
        if (dn_json_type_of(v) != DN_JSON_NUM || !scale_ok(dn_json_num(v, NAN)))
            st = dn_fail(DN_ERR_FORMAT, "%s: metadata %s: scale of '%s' is not a finite positive number", label,
                         DN_META_QUANT_INT8, dn_json_key_at(sc, i));
    }
    dn_json_free(j);
    return st;
}

dn_status dn_int8_scale(const dn_model *m, const char *name, float *scale) {
    *scale = 0.0f;
    dn_json *j;
    const dn_json *sc;
    dn_status st = parse(&m->meta, "model", &j, &sc);
    if (st || !j) return st;
    const dn_json *v = dn_json_get(sc, name);
    if (v) {
        double d = dn_json_num(v, NAN);
        if (dn_json_type_of(v) != DN_JSON_NUM || !scale_ok(d))
            st = dn_fail(DN_ERR_FORMAT, "model: metadata %s: scale of '%s' is not a finite positive number",
                         DN_META_QUANT_INT8, name);
        else *scale = (float)d;
    }
    dn_json_free(j);
    return st;
}

/* ------------------------------------------------------------ calibration */

typedef struct {
    int nconv, pass;     /* pass 0: maxima, pass 1: histograms over [0, max] */
    double *mx;          /* [nconv] */
    uint64_t *hist;      /* [nconv][NBINS] */
    uint64_t *count;     /* [nconv] values seen in pass 1 */
} calib;

static void observe(void *ctx, int conv, const float *x, int n, int c, int h, int w, int border) {
    calib *k = ctx;
    if (conv <= 0 || conv >= k->nconv) return; /* the stem reads the (signed) image: stays fp32 */
    const int blocked = border >= 0, b = blocked ? border : 0, hp = h + 2 * b, wp = w + 2 * b;
    const int CB = (c + 15) / 16, lanes = blocked ? 16 : 1, planes = blocked ? CB : c;
    double mx = k->mx[conv];
    uint64_t *hist = k->hist + (size_t)conv * NBINS, cnt = 0;
    const double inv = mx > 0 ? NBINS / mx : 0;
    for (long pl = 0; pl < (long)n * planes; pl++) {
        int chb = (int)(pl % planes);
        const float *p = x + (size_t)pl * hp * wp * lanes;
        int nl = blocked ? (c - chb * 16 < 16 ? c - chb * 16 : 16) : 1;
        for (int yy = 0; yy < h; yy++) {
            const float *row = p + ((size_t)(yy + b) * wp + b) * lanes;
            for (int xx = 0; xx < w; xx++)
                for (int l = 0; l < nl; l++) {
                    float v = row[(size_t)xx * lanes + l];
                    if (!(v == v)) continue; /* NaN */
                    if (k->pass == 0) {
                        if (v > mx) mx = v;
                    } else {
                        long bin = v > 0 ? (long)(v * inv) : 0;
                        hist[bin < NBINS ? (bin >= 0 ? bin : 0) : NBINS - 1]++;
                        cnt++;
                    }
                }
        }
    }
    if (k->pass == 0) k->mx[conv] = mx;
    else k->count[conv] += cnt;
}

dn_status dn_int8_calibrate(dn_model *m, const float *x, int n, dn_calib_method method, double pct, int batch,
                            int threads, FILE *log) {
    if (!m || !x || n < 1 || batch < 1) return dn_fail(DN_ERR_ARG, "calibrate int8: no calibration images");
    if (method == DN_CALIB_PERCENTILE && !(pct > 50 && pct <= 100))
        return dn_fail(DN_ERR_ARG, "calibrate int8: percentile %g outside (50, 100]", pct);
    dn_status st = DN_OK;
    calib k = {0};
    dn_session *s = NULL;
    dn_sb sb = {0};
    float *feat = NULL;
    k.nconv = dn_quant_conv_count(m);
    if (!(k.mx = dn_calloc((size_t)k.nconv, sizeof(double))) || !(k.count = dn_calloc((size_t)k.nconv, sizeof(uint64_t))) ||
        !(k.hist = dn_calloc((size_t)k.nconv * NBINS, sizeof(uint64_t))) ||
        !(feat = dn_malloc((size_t)batch * m->feat_dim * sizeof(float)))) {
        st = DN_ERR_NOMEM;
        goto done;
    }
    /* exact fp32 whatever the model's current quant.mode (an explicit impl wins) */
    dn_session_opts so = {batch, threads, 0, 0, DN_CONV_DIRECT};
    if ((st = dn_session_new_ex(m, &so, &s))) goto done;
    dn_session_observe(s, observe, &k);
    size_t per = (size_t)3 * m->pp.crop * m->pp.crop;
    for (k.pass = 0; k.pass < (method == DN_CALIB_PERCENTILE ? 2 : 1) && !st; k.pass++)
        for (int i = 0; i < n && !st; i += batch)
            st = dn_session_features(s, x + (size_t)i * per, n - i < batch ? n - i : batch, feat);
    if (st) goto done;
    dn_sb_printf(&sb, "{\"version\":1,\"method\":\"%s\",", method == DN_CALIB_MINMAX ? "minmax" : "percentile");
    if (method == DN_CALIB_PERCENTILE) dn_sb_printf(&sb, "\"percentile\":%.6g,", pct);
    dn_sb_printf(&sb, "\"images\":%d,\"scales\":{", n);
    for (int c = 1; c < k.nconv; c++) {
        double range = k.mx[c];
        if (method == DN_CALIB_PERCENTILE && k.count[c]) {
            const uint64_t *hist = k.hist + (size_t)c * NBINS;
            double target = pct / 100.0 * (double)k.count[c], cum = 0;
            int bin = 0;
            for (; bin < NBINS - 1; bin++) {
                cum += (double)hist[bin];
                if (cum >= target) break;
            }
            range = k.mx[c] * (bin + 1) / NBINS;
        }
        float scale = range > 0 && isfinite(range) ? (float)(range / 255.0) : 1.0f / 255.0f;
        if (!scale_ok(scale)) scale = 1.0f / 255.0f;
        char name[64];
        dn_quant_conv_name(m, c, name, sizeof name);
        dn_sb_printf(&sb, "%s", c > 1 ? "," : "");
        dn_sb_json_str(&sb, name);
        dn_sb_printf(&sb, ":%.9g", (double)scale);
        if (log) fprintf(log, "calibrate int8: %-24s max %.4g range %.4g scale %.4g\n", name, k.mx[c], range, (double)scale);
    }
    dn_sb_puts(&sb, "}}");
    if (sb.oom) { st = dn_fail(DN_ERR_NOMEM, "calibrate int8: out of memory"); goto done; }
    st = dn_meta_set(&m->meta, DN_META_QUANT_INT8, sb.s);
done:
    dn_session_free(s);
    dn_sb_free(&sb);
    free(k.mx); free(k.count); free(k.hist); free(feat);
    return st;
}
