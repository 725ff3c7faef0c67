/* From logits to a filled evaluation report (see evaluate.h). */
#include "eval/evaluate.h"
#include "core/core.h"
#include "core/json.h"
#include "nn/engine.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Confidence (max probability) and correctness of each row. */
static void correct_flags(const float *probs, const int *y, int64_t n, int k, float *conf, uint8_t *ok) {
    for (int64_t i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * k;
        int b = 0;
        for (int j = 1; j < k; j++) if (p[j] > p[b]) b = j;
        conf[i] = p[b];
        ok[i] = b == y[i];
    }
}

/* The temperature: the model's, or fitted on the fitting images (with ECE
 * there before and after). vprob is scratch of nv*k floats. */
static dn_status fit_temperature(const dn_eval_input *in, dn_eval_report *r, float *vprob) {
    const dn_model *m = r->model;
    r->temperature = m->temperature > 0 ? m->temperature : 1.0;
    r->temp_source = m->temperature != 1.0f ? "stored in model" : "none (model uncalibrated)";
    r->n_fit = in->nv;
    if (!in->fit_temperature) return DN_OK;
    dn_status st = dn_calib_fit_temperature(in->vlogits, in->vy, in->nv, in->k, &r->fit);
    if (st) return st;
    snprintf(r->temp_desc, sizeof r->temp_desc, "fitted on %s", r->fit_split);
    r->fitted = 1;
    r->temperature = r->fit.temperature;
    r->temp_source = r->temp_desc;
    if (r->fit.at_bound && r->fit.temperature < 1) {
        /* Perfectly separated calibration data: NLL keeps falling as T -> 0, so the
         * "optimum" only says the set had no mistakes. Sharpening on that evidence
         * would make every future mistake look certain; stay uncalibrated instead. */
        r->separated = 1;
        r->temperature = 1.0;
        r->fit.temperature = 1.0;
        r->fit.nll_after = r->fit.nll_before;
    }
    dn_eval_metrics vm;
    dn_softmax_t(in->vlogits, (int)in->nv, in->k, 1.0f, vprob);
    if ((st = dn_eval_metrics_compute(in->k, in->nv, in->vy, vprob, NULL, in->topk, &vm))) return st;
    r->fit_ece_before = vm.ece;
    dn_eval_metrics_free(&vm);
    dn_softmax_t(in->vlogits, (int)in->nv, in->k, (float)r->temperature, vprob);
    if ((st = dn_eval_metrics_compute(in->k, in->nv, in->vy, vprob, NULL, in->topk, &vm))) return st;
    r->fit_ece_after = vm.ece;
    dn_eval_metrics_free(&vm);
    return DN_OK;
}

/* The threshold (given, chosen on the fitting images for the target, or the
 * model's) and its coverage/accuracy there and on the evaluated images. */
static dn_status choose_threshold(const dn_eval_input *in, dn_eval_report *r, const float *conf, const uint8_t *ok,
                                  float *vprob, float *vconf, uint8_t *vok) {
    r->threshold = r->model->threshold;
    r->thr_source = "stored in model";
    if (in->nv > 0) {
        dn_softmax_t(in->vlogits, (int)in->nv, in->k, (float)r->temperature, vprob);
        correct_flags(vprob, in->vy, in->nv, in->k, vconf, vok);
    }
    if (in->threshold >= 0) {
        r->threshold = (float)in->threshold;
        r->thr_source = "given";
    } else if (in->target > 0) {
        dn_threshold_pick pick;
        dn_status st = dn_calib_choose_threshold(vconf, vok, in->nv, in->target, &pick);
        if (st) return st;
        snprintf(r->thr_desc, sizeof r->thr_desc, "chosen on %s", r->fit_split);
        r->threshold = pick.at.threshold;
        r->target = in->target;
        r->reached = pick.reached;
        r->thr_source = r->thr_desc;
    }
    if (in->nv > 0) {
        r->thr_fit = dn_calib_at_threshold(vconf, vok, in->nv, r->threshold);
        r->has_thr_fit = 1;
    }
    r->thr_eval = dn_calib_at_threshold(conf, ok, in->n, r->threshold);
    if (!(r->uncertain_by_class = dn_calloc((size_t)in->k, sizeof *r->uncertain_by_class))) return DN_ERR_NOMEM;
    for (int64_t i = 0; i < in->n; i++) r->uncertain_by_class[in->y[i]] += conf[i] < r->threshold;
    return dn_calib_coverage_curve(conf, ok, in->n, &r->curve, &r->ncurve);
}

static int cmp_miss(const void *a, const void *b) {
    const dn_eval_miss *x = a, *y = b;
    if (x->conf != y->conf) return x->conf < y->conf ? 1 : -1;
    return strcmp(x->path, y->path);
}

/* Every misclassified image with its top scores, most confident first. */
static dn_status list_mistakes(const dn_eval_input *in, dn_eval_report *r, const float *pcal, const float *conf,
                               const uint8_t *ok) {
    int k = in->k;
    int64_t nm = 0;
    for (int64_t i = 0; i < in->n; i++) nm += !ok[i];
    if (!(r->miss = dn_calloc((size_t)nm + 1, sizeof *r->miss))) return DN_ERR_NOMEM;
    for (int64_t i = 0; i < in->n; i++) {
        if (ok[i]) continue;
        dn_eval_miss *x = &r->miss[r->nmiss];
        const float *p = pcal + (size_t)i * k;
        if (!(x->path = dn_strdup(in->paths[i]))) return DN_ERR_NOMEM;
        r->nmiss++;
        x->truth = in->y[i];
        x->conf = conf[i];
        x->p_true = p[in->y[i]];
        x->ntop = k < DN_REPORT_TOP ? k : DN_REPORT_TOP;
        for (int j = 0; j < x->ntop; j++) {
            int best = -1;
            for (int c = 0; c < k; c++) {
                int used = 0;
                for (int u = 0; u < j; u++) used |= x->top[u] == c;
                if (!used && (best < 0 || p[c] > p[best])) best = c;
            }
            x->top[j] = best;
            x->top_p[j] = p[best];
        }
        x->pred = x->top[0];
    }
    qsort(r->miss, (size_t)r->nmiss, sizeof *r->miss, cmp_miss);
    return DN_OK;
}

dn_status dn_eval_analyse(const dn_eval_input *in, dn_eval_report *r) {
    int k = in->k;
    int64_t n = in->n, nv = in->nv;
    if (!r->model || k < 2 || n < 1 || nv < 0 || ((in->fit_temperature || in->target > 0) && nv < 1))
        return dn_fail(DN_ERR_ARG, "eval: needs a model, >= 2 classes, >= 1 image (and fitting images to calibrate)");
    dn_status st = DN_ERR_NOMEM;
    float *praw = dn_malloc((size_t)n * k * sizeof *praw), *pcal = dn_malloc((size_t)n * k * sizeof *pcal);
    float *conf = dn_malloc((size_t)n * sizeof *conf), *vprob = dn_malloc(((size_t)nv + 1) * k * sizeof *vprob);
    float *vconf = dn_malloc(((size_t)nv + 1) * sizeof *vconf);
    uint8_t *ok = dn_malloc((size_t)n), *vok = dn_malloc((size_t)nv + 1);
    if (!praw || !pcal || !conf || !vprob || !vconf || !ok || !vok) goto done;
    if ((st = fit_temperature(in, r, vprob))) goto done;
    dn_softmax_t(in->logits, (int)n, k, 1.0f, praw);
    dn_softmax_t(in->logits, (int)n, k, (float)r->temperature, pcal);
    if ((st = dn_eval_metrics_compute(k, n, in->y, praw, NULL, in->topk, &r->raw)) ||
        (st = dn_eval_metrics_compute(k, n, in->y, pcal, NULL, in->topk, &r->cal)))
        goto done;
    correct_flags(pcal, in->y, n, k, conf, ok);
    if ((st = choose_threshold(in, r, conf, ok, vprob, vconf, vok))) goto done;
    st = list_mistakes(in, r, pcal, conf, ok);
done:
    free(praw); free(pcal); free(conf); free(vprob); free(vconf); free(ok); free(vok);
    return st;
}

void dn_eval_thumbnails(dn_eval_report *r, FILE *log, const char *prefix) {
    for (int64_t i = 0; i < r->nmiss && i < DN_GALLERY_MAX; i++) {
        dn_image img = {0};
        if (dn_image_load(r->miss[i].path, &img) || dn_thumb_png_base64(&img, DN_THUMB_SIDE, &r->miss[i].thumb_b64))
            fprintf(log, "%swarning: no thumbnail for %s: %s\n", prefix, r->miss[i].path, dn_last_error());
        dn_image_free(&img);
    }
}

dn_status dn_eval_save_model(dn_model *m, dn_eval_report *r, const char *cal_data, int cal_all, const char *path) {
    float old_t = m->temperature, old_thr = m->threshold;
    m->temperature = (float)r->temperature;
    m->threshold = r->threshold;
    dn_sb b = {0};
    dn_sb_puts(&b, "{\"data\":");
    dn_sb_json_str(&b, cal_data);
    dn_sb_printf(&b, ",\"split\":\"%s\",\"images\":%lld,\"temperature_fitted\":%s,\"nll_before\":%.6f,"
                 "\"nll_after\":%.6f,\"ece_before\":%.6f,\"ece_after\":%.6f,\"threshold_source\":",
                 cal_all ? "all" : "val", (long long)r->n_fit, r->fitted ? "true" : "false", r->fit.nll_before,
                 r->fit.nll_after, r->fit_ece_before, r->fit_ece_after);
    dn_sb_json_str(&b, r->thr_source);
    dn_sb_printf(&b, ",\"target_accuracy\":%.6g,\"val_coverage\":%.6f,\"val_accuracy\":%.6f}", r->target,
                 r->thr_fit.coverage, r->thr_fit.accuracy);
    dn_status st = b.oom ? dn_fail(DN_ERR_NOMEM, "%s: out of memory", path) : dn_meta_set(&m->meta, "calibration", b.s);
    dn_sb_free(&b);
    if (!st) st = dn_model_save(m, path);
    /* the report describes the model as it was evaluated */
    m->temperature = old_t;
    m->threshold = old_thr;
    if (!st) r->written_model = path;
    return st;
}
