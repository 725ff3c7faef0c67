/* Unknown-input detection measured against unknown image sets (see ood_eval.h). */
#include "ood/ood_eval.h"
#include "core/json.h"
#include "io/dataset.h"
#include "nn/engine.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *dn_ood_measure_name(int j) {
    if (j >= 0 && j < DN_OOD_NKINDS) return dn_ood_kind_name(j);
    return j == DN_OOD_MSP ? "msp" : "?";
}

void dn_ood_rows_free(dn_ood_rows *r) {
    free(r->s);
    r->s = NULL;
    r->n = 0;
}

dn_status dn_ood_rows_make(const dn_model *m, const float *feat, const float *logits, int n, float T, dn_ood_rows *out) {
    memset(out, 0, sizeof *out);
    if (!m->ood) return dn_fail(DN_ERR_ARG, "model has no OOD data (run defectnet calibrate)");
    int C = m->num_classes;
    size_t rows = (size_t)(n > 0 ? n : 1);
    float *lg = dn_malloc(rows * C * sizeof(float)), *sc = dn_malloc(rows * DN_OOD_NKINDS * sizeof(float));
    out->s = dn_malloc(rows * DN_OOD_NMEASURES * sizeof(float));
    dn_status st = DN_OK;
    if (!lg || !sc || !out->s) { st = dn_fail(DN_ERR_NOMEM, "ood scores: out of memory"); goto done; }
    if (logits) memcpy(lg, logits, (size_t)n * C * sizeof(float));
    else dn_ood_logits(m, feat, n, lg);
    if (n > 0 && (st = dn_ood_scores(m->ood, feat, lg, n, sc))) goto done;
    dn_softmax_t(lg, n, C, T, lg);
    for (int i = 0; i < n; i++) {
        float best = 0, *row = out->s + (size_t)i * DN_OOD_NMEASURES;
        for (int c = 0; c < C; c++) if (lg[(size_t)i * C + c] > best) best = lg[(size_t)i * C + c];
        memcpy(row, sc + (size_t)i * DN_OOD_NKINDS, DN_OOD_NKINDS * sizeof(float));
        row[DN_OOD_MSP] = -best;
    }
    out->n = n;
done:
    free(lg);
    free(sc);
    if (st) dn_ood_rows_free(out);
    return st;
}

dn_status dn_ood_rows_files(const dn_model *m, const char *const *paths, int n, float T, int batch, int threads,
                            const char *who, dn_ood_rows *out, int *skipped) {
    memset(out, 0, sizeof *out);
    *skipped = 0;
    if (!m->ood) return dn_fail(DN_ERR_ARG, "model has no OOD data (run defectnet calibrate)");
    int d = m->feat_dim;
    float *feat = dn_malloc((size_t)(n > 0 ? n : 1) * d * sizeof(float));
    unsigned char *ok = dn_malloc((size_t)(n > 0 ? n : 1));
    dn_status st = DN_OK;
    if (!feat || !ok) { st = dn_fail(DN_ERR_NOMEM, "ood scores: out of memory"); goto done; }
    if ((st = dn_ood_features(m, paths, n, batch, threads, feat, ok, skipped, who))) goto done;
    int k = 0; /* readable rows only */
    for (int i = 0; i < n; i++)
        if (ok[i]) memmove(feat + (size_t)k++ * d, feat + (size_t)i * d, (size_t)d * sizeof(float));
    st = dn_ood_rows_make(m, feat, NULL, k, T, out);
done:
    free(feat);
    free(ok);
    return st;
}

dn_status dn_ood_eval_list(dn_ood_eval *e, const char *const *sets, int n) {
    if (n > DN_OOD_MAX_SETS) return dn_fail(DN_ERR_ARG, "--ood: at most %d sets (%d given)", DN_OOD_MAX_SETS, n);
    for (int s = 0; s < n; s++) {
        dn_ood_set *o = &e->sets[s];
        memset(o, 0, sizeof *o);
        e->nsets = s + 1;
        if (!(o->name = dn_strdup(sets[s]))) return dn_fail(DN_ERR_NOMEM, "--ood: out of memory");
        if (dn_collect_images(sets + s, 1, &o->paths, &o->npaths)) {
            char err[512]; /* a copy: dn_fail rewrites the thread's message buffer */
            snprintf(err, sizeof err, "%s", dn_last_error());
            return dn_fail(DN_ERR_ARG, "--ood %s", err); /* "--ood X: cannot access: ..." */
        }
        if (o->npaths == 0) return dn_fail(DN_ERR_ARG, "--ood %s: no image files", sets[s]);
    }
    return DN_OK;
}

static int count_flagged(const dn_ood_rows *r, int kind, float thr) {
    int k = 0;
    for (int i = 0; i < r->n; i++) k += r->s[(size_t)i * DN_OOD_NMEASURES + kind] > thr;
    return k;
}

void dn_ood_eval_set_in(dn_ood_eval *e, const dn_model *m, dn_ood_rows *in, const char *split) {
    const dn_ood *o = m->ood;
    e->kind = o->kind;
    e->k = o->k;
    e->nbank = o->nbank;
    e->threshold = o->threshold;
    snprintf(e->in_split, sizeof e->in_split, "%s", split);
    dn_ood_rows_free(&e->in);
    e->in = *in;
    memset(in, 0, sizeof *in);
    e->in_flagged = count_flagged(&e->in, e->kind, e->threshold);
}

/* column j of rows into out */
static void column(const dn_ood_rows *r, int j, float *out) {
    for (int i = 0; i < r->n; i++) out[i] = r->s[(size_t)i * DN_OOD_NMEASURES + j];
}

dn_status dn_ood_eval_sets(dn_ood_eval *e, const dn_model *m, float T, int batch, int threads, const char *who,
                           int *skipped) {
    float *a = dn_malloc((size_t)(e->in.n > 0 ? e->in.n : 1) * sizeof(float));
    float *b = NULL;
    dn_status st = DN_OK;
    if (!a) return dn_fail(DN_ERR_NOMEM, "--ood: out of memory");
    for (int s = 0; s < e->nsets && !st; s++) {
        dn_ood_set *o = &e->sets[s];
        int sk = 0;
        char w[600]; /* "defectnet eval: --ood SET: 2 unreadable image(s) skipped, first: ..." */
        snprintf(w, sizeof w, "%s: --ood %s", who ? who : "ood", o->name);
        st = dn_ood_rows_files(m, (const char *const *)o->paths, o->npaths, T, batch, threads, w, &o->rows, &sk);
        *skipped += sk;
        dn_paths_free(o->paths, o->npaths);
        o->paths = NULL;
        if (st) break;
        if (o->rows.n == 0) {
            st = dn_fail(DN_ERR_ARG, "--ood %s: no readable images (%d file(s))", o->name, o->npaths);
            break;
        }
        o->flagged = count_flagged(&o->rows, e->kind, e->threshold);
        free(b);
        if (!(b = dn_malloc((size_t)o->rows.n * sizeof(float)))) {
            st = dn_fail(DN_ERR_NOMEM, "--ood: out of memory");
            break;
        }
        for (int j = 0; j < DN_OOD_NMEASURES; j++) {
            column(&e->in, j, a);
            column(&o->rows, j, b);
            o->auroc[j] = dn_ood_auroc(a, e->in.n, b, o->rows.n);
            o->fpr95[j] = dn_ood_fpr_at_tpr(a, e->in.n, b, o->rows.n, 0.95);
        }
    }
    free(a);
    free(b);
    return st;
}

void dn_ood_eval_table(const dn_ood_eval *e, FILE *f) {
    fprintf(f, "in-distribution %s: %d images, %.1f%% flagged unknown\n", e->in_split, e->in.n,
            e->in.n ? 100.0 * e->in_flagged / e->in.n : 0.0);
    for (int s = 0; s < e->nsets; s++) {
        const dn_ood_set *o = &e->sets[s];
        fprintf(f, "\nunknown set %s: %d images, %.1f%% flagged unknown\n  %-8s %8s %12s\n", o->name, o->rows.n,
                o->rows.n ? 100.0 * o->flagged / o->rows.n : 0.0, "score", "AUROC", "FPR@95%TPR");
        for (int j = 0; j < DN_OOD_NMEASURES; j++)
            fprintf(f, "  %-8s %8.4f %12.4f%s\n", dn_ood_measure_name(j), o->auroc[j], o->fpr95[j],
                    j == e->kind ? "  (model's score)" : "");
    }
}

void dn_ood_eval_json_members(const dn_ood_eval *e, FILE *f) {
    fprintf(f, "\"score\":\"%s\",\"threshold\":%.9g,\"k\":%d,\"bank\":%d,\"in\":{\"split\":", dn_ood_kind_name(e->kind),
            (double)e->threshold, e->k, e->nbank);
    dn_json_fput_str(f, e->in_split);
    fprintf(f, ",\"n\":%d,\"flagged\":%.6f},\"sets\":[", e->in.n, e->in.n ? (double)e->in_flagged / e->in.n : 0.0);
    for (int s = 0; s < e->nsets; s++) {
        const dn_ood_set *o = &e->sets[s];
        fputs(s ? ",{\"set\":" : "{\"set\":", f);
        dn_json_fput_str(f, o->name);
        fprintf(f, ",\"n\":%d,\"flagged\":%.6f,\"scores\":{", o->rows.n, o->rows.n ? (double)o->flagged / o->rows.n : 0.0);
        for (int j = 0; j < DN_OOD_NMEASURES; j++)
            fprintf(f, "%s\"%s\":{\"auroc\":%.6f,\"fpr95\":%.6f}", j ? "," : "", dn_ood_measure_name(j), o->auroc[j],
                    o->fpr95[j]);
        fputs("}}", f);
    }
    fputc(']', f);
}

void dn_ood_eval_free(dn_ood_eval *e) {
    if (!e) return;
    dn_ood_rows_free(&e->in);
    for (int s = 0; s < e->nsets; s++) {
        free(e->sets[s].name);
        dn_paths_free(e->sets[s].paths, e->sets[s].npaths);
        dn_ood_rows_free(&e->sets[s].rows);
    }
    memset(e, 0, sizeof *e);
}
