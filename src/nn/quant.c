/* Reduced-precision choice + accuracy guard (see quant.h). */
#include "nn/quant.h"
#include "core/json.h"
#include "nn/engine.h"
#include "nn/arch.h"
#include "nn/quant_int8.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int dn_quant_conv_count(const dn_model *m) { return dn_arch_count(m); }

void dn_quant_conv_name(const dn_model *m, int i, char *buf, size_t n) {
    dn_arch_conv l;
    snprintf(buf, n, "%s", dn_arch_at(m, i, &l) ? "?" : l.conv);
}

static int in_list(const char *list, const char *name) {
    size_t ln = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == ln && !strncmp(p, name, l)) return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

/* The conv parameters behind a name (NULL if none). */
static const dn_conv_p *find_conv(const dn_model *m, const char *name) {
    dn_arch_conv l;
    return dn_arch_find(m, name, &l) ? NULL : l.conv_p;
}

int dn_quant_mode_valid(const char *mode) {
    return mode && (!strcmp(mode, "fp32") || !strcmp(mode, "bf16") || !strcmp(mode, "winograd") ||
                    !strcmp(mode, "bf16+winograd") || !strcmp(mode, "int8"));
}

dn_conv_impl dn_quant_conv_impl(const dn_model *m, const char *conv_name, dn_conv_impl requested) {
    if (requested != DN_CONV_AUTO || !m) return requested;
    const char *mode = dn_meta_get(&m->meta, DN_META_QUANT_MODE);
    if (!mode || !strcmp(mode, "fp32") || !dn_quant_mode_valid(mode)) return requested;
    if (in_list(dn_meta_get(&m->meta, DN_META_QUANT_FP32), conv_name)) return requested;
    const dn_conv_p *c = find_conv(m, conv_name);
    int w3 = c && c->k == 3 && c->stride == 1;
    if (!strcmp(mode, "bf16")) return DN_CONV_BF16;
    if (!strcmp(mode, "int8")) return DN_CONV_INT8; /* convs without a calibrated scale (the stem) run fp32 */
    if (!strcmp(mode, "winograd")) return w3 ? DN_CONV_WINOGRAD : requested;
    return w3 ? DN_CONV_WINOGRAD_BF16 : DN_CONV_BF16; /* bf16+winograd */
}

/* logits of all nval images with the model's current quant metadata. */
static dn_status run_all(const dn_model *m, const float *x, int nval, const dn_quant_opts *o, float *logits) {
    dn_session *s = NULL;
    dn_session_opts so = {o->batch, o->threads, 0, 0, DN_CONV_AUTO};
    dn_status st = dn_session_new_ex(m, &so, &s);
    if (st) return st;
    size_t per = (size_t)3 * m->pp.crop * m->pp.crop;
    for (int i = 0; i < nval && !st; i += o->batch) {
        int nb = nval - i < o->batch ? nval - i : o->batch;
        st = dn_session_forward(s, x + (size_t)i * per, nb, logits + (size_t)i * m->num_classes);
    }
    dn_session_free(s);
    return st;
}

static int argmax(const float *v, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) if (v[i] > v[b]) b = i;
    return b;
}

static double agreement(const float *a, const float *b, int n, int c) {
    int same = 0;
    for (int i = 0; i < n; i++) same += argmax(a + (size_t)i * c, c) == argmax(b + (size_t)i * c, c);
    return n ? (double)same / n : 1.0;
}

/* Sets quant.fp32_layers to the names with keep[i] != 0. */
static dn_status set_fp32_layers(dn_model *m, const int *keep, int nconv) {
    dn_sb b = {0};
    char name[64];
    for (int i = 0, first = 1; i < nconv; i++) {
        if (!keep[i]) continue;
        dn_quant_conv_name(m, i, name, sizeof name);
        dn_sb_printf(&b, "%s%s", first ? "" : ",", name);
        first = 0;
    }
    dn_status st = b.oom ? dn_fail(DN_ERR_NOMEM, "quantize: out of memory") : dn_meta_set(&m->meta, DN_META_QUANT_FP32, b.s ? b.s : "");
    dn_sb_free(&b);
    return st;
}

typedef struct { int idx; double err; } sens;
static int sens_cmp(const void *a, const void *b) {
    double x = ((const sens *)a)->err, y = ((const sens *)b)->err;
    return x < y ? 1 : x > y ? -1 : ((const sens *)a)->idx - ((const sens *)b)->idx;
}

dn_status dn_quantize(dn_model *m, const float *x, const int *labels, int nval, const dn_quant_opts *o,
                      dn_quant_result *r) {
    dn_status st = DN_OK;
    float *l32 = NULL, *lq = NULL;
    int *keep = NULL;
    sens *sv = NULL;
    memset(r, 0, sizeof *r);
    if (!m || !x || !o || nval < 1 || o->batch < 1) return dn_fail(DN_ERR_ARG, "quantize: no validation images");
    if (m->num_classes < 1) return dn_fail(DN_ERR_ARG, "quantize: model has no classification head");
    if (!dn_quant_mode_valid(o->mode) || !strcmp(o->mode, "fp32"))
        return dn_fail(DN_ERR_ARG, "quantize: mode '%s' unknown (bf16, winograd, bf16+winograd, int8)", o->mode ? o->mode : "");
    const int C = m->num_classes, nconv = dn_quant_conv_count(m);
    size_t nl = (size_t)nval * C;
    if (!(l32 = dn_malloc(nl * sizeof(float))) || !(lq = dn_malloc(nl * sizeof(float))) ||
        !(keep = dn_calloc((size_t)nconv, sizeof(int))) || !(sv = dn_calloc((size_t)nconv, sizeof(sens)))) {
        st = DN_ERR_NOMEM;
        goto done;
    }
    r->nval = nval;
    r->nconv = nconv;
    /* fp32 reference */
    if ((st = dn_meta_set(&m->meta, DN_META_QUANT_MODE, "fp32")) || (st = run_all(m, x, nval, o, l32))) goto done;
    if (!strcmp(o->mode, "int8") && !dn_meta_get(&m->meta, DN_META_QUANT_INT8)) {
        if (o->log) fprintf(o->log, "quantize: no int8 calibration in the model: calibrating on the validation images\n");
        if ((st = dn_int8_calibrate(m, x, nval, DN_CALIB_DEFAULT, DN_CALIB_DEFAULT_PCT, o->batch, o->threads, NULL)))
            goto done;
    }
    /* everything reduced */
    if ((st = dn_meta_set(&m->meta, DN_META_QUANT_MODE, o->mode)) || (st = set_fp32_layers(m, keep, nconv))) goto done;
    if (strstr(o->mode, "bf16")) {
        /* probe that the CPU can run it before measuring */
        dn_conv_desc d = {1, 1, 1, 1, 1, 0};
        float w1 = 1;
        dn_conv_op *probe = dn_conv_op_new(&d, &w1, NULL, DN_CONV_BF16);
        if (!probe) { st = dn_fail_prefix(DN_ERR_UNSUPPORTED, "quantize"); goto done; }
        dn_conv_op_free(probe);
    }
    if ((st = run_all(m, x, nval, o, lq))) goto done;
    r->agreement = agreement(l32, lq, nval, C);
    if (o->log) fprintf(o->log, "quantize: %s everywhere: top-1 agreement %.4f on %d images\n", o->mode, r->agreement, nval);
    if (r->agreement < o->min_agreement && o->fallback) {
        /* sensitivity of each conv alone in bf16, on a small subset (mean |dlogit|) */
        int ns = nval < 32 ? nval : 32;
        for (int i = 0; i < nconv; i++) {
            for (int j = 0; j < nconv; j++) keep[j] = j != i;
            if ((st = set_fp32_layers(m, keep, nconv)) || (st = run_all(m, x, ns, o, lq))) goto done;
            double e = 0;
            for (size_t k = 0; k < (size_t)ns * C; k++) e += fabs((double)lq[k] - l32[k]);
            sv[i].idx = i;
            sv[i].err = e / ((double)ns * C);
        }
        qsort(sv, (size_t)nconv, sizeof *sv, sens_cmp);
        /* greedy: return the most sensitive convs to fp32 until the guard holds */
        memset(keep, 0, (size_t)nconv * sizeof(int));
        for (int t = 0; t < nconv && r->agreement < o->min_agreement; t++) {
            keep[sv[t].idx] = 1;
            r->n_fp32_layers = t + 1;
            if ((st = set_fp32_layers(m, keep, nconv)) || (st = run_all(m, x, nval, o, lq))) goto done;
            r->agreement = agreement(l32, lq, nval, C);
            if (o->log) {
                char name[64];
                dn_quant_conv_name(m, sv[t].idx, name, sizeof name);
                fprintf(o->log, "quantize: %s back to fp32 (sensitivity %.3g): agreement %.4f\n", name, sv[t].err,
                        r->agreement);
            }
        }
    }
    r->ok = r->agreement >= o->min_agreement && r->n_fp32_layers < nconv;
    /* accuracy per class, labelled images only */
    {
        int *cnt = dn_calloc((size_t)C * 3, sizeof(int));
        if (!cnt) { st = DN_ERR_NOMEM; goto done; }
        int nlab = 0, c32 = 0, cq = 0;
        for (int i = 0; i < nval; i++) {
            int y = labels ? labels[i] : -1;
            if (y < 0 || y >= C) continue;
            int a = argmax(l32 + (size_t)i * C, C) == y, b = argmax(lq + (size_t)i * C, C) == y;
            nlab++; c32 += a; cq += b;
            cnt[y * 3] += 1; cnt[y * 3 + 1] += a; cnt[y * 3 + 2] += b;
        }
        r->acc_fp32 = nlab ? (double)c32 / nlab : 0;
        r->acc_q = nlab ? (double)cq / nlab : 0;
        dn_sb b = {0};
        dn_sb_puts(&b, "{");
        int first = 1;
        for (int c = 0; c < C; c++) {
            if (!cnt[c * 3]) continue;
            double dpt = 100.0 * (cnt[c * 3 + 2] - cnt[c * 3 + 1]) / cnt[c * 3];
            if (-dpt > r->max_class_drop_pt) r->max_class_drop_pt = -dpt;
            if (!first) dn_sb_puts(&b, ",");
            first = 0;
            dn_sb_json_str(&b, m->class_names ? m->class_names[c] : "?");
            dn_sb_printf(&b, ":%.2f", dpt);
        }
        dn_sb_puts(&b, "}");
        char v[128];
        if (b.oom) st = dn_fail(DN_ERR_NOMEM, "quantize: out of memory");
        if (!st) st = dn_meta_set(&m->meta, DN_META_QUANT_CLASS, b.s);
        dn_sb_free(&b);
        free(cnt);
        if (st) goto done;
        snprintf(v, sizeof v, "%.6f", r->agreement);
        if ((st = dn_meta_set(&m->meta, DN_META_QUANT_AGREE, v))) goto done;
        snprintf(v, sizeof v, "%d", nval);
        if ((st = dn_meta_set(&m->meta, DN_META_QUANT_NVAL, v))) goto done;
        if (nlab) snprintf(v, sizeof v, "fp32 %.4f -> %s %.4f (%d labelled images)", r->acc_fp32, o->mode, r->acc_q, nlab);
        else snprintf(v, sizeof v, "n/a (no labelled images)");
        if ((st = dn_meta_set(&m->meta, DN_META_QUANT_ACC, v))) goto done;
        snprintf(v, sizeof v, "%.2f", r->max_class_drop_pt);
        if ((st = dn_meta_set(&m->meta, DN_META_QUANT_DROP, v))) goto done;
    }
    if (!r->ok) { /* the guard refuses: the model stays fp32, figures kept for the record */
        memset(keep, 0, (size_t)nconv * sizeof(int));
        if ((st = dn_meta_set(&m->meta, DN_META_QUANT_MODE, "fp32")) || (st = set_fp32_layers(m, keep, nconv))) goto done;
    }
done:
    free(l32); free(lq); free(keep); free(sv);
    return st;
}
