/* From logits to a filled evaluation report (see evaluate.h). */
#include "eval/evaluate.h"
#include "core/core.h"
#include "core/json.h"
#include "nn/engine.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Confidence (max probability), correctness and (pred may be NULL) prediction of each row. */
static void correct_flags(const float *probs, const int *y, int64_t n, int k, float *conf, uint8_t *ok, int *pred) {
    for (int64_t i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * k;
        int b = 0;
        for (int j = 1; j < k; j++) if (p[j] > p[b]) b = j;
        conf[i] = p[b];
        ok[i] = b == y[i];
        if (pred) pred[i] = b;
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
        correct_flags(vprob, in->vy, in->nv, in->k, vconf, vok, NULL);
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

static int64_t count_class(const int *y, int64_t n, int c) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) m += y[i] == c;
    return m;
}

/* Escape / false-reject figures: the policy (the model's, or chosen on the
 * fitting images), its figures there and on the evaluated images, the curve. */
static dn_status good_class_figures(const dn_eval_input *in, dn_eval_report *r, const float *pcal, float *vprob) {
    int k = in->k, g = in->good;
    const char *gname = r->model->class_names[g];
    int choose = in->cost || in->target_escape >= 0;
    if (!count_class(in->y, in->n, g)) {
        if (in->require_good || choose)
            return dn_fail(DN_ERR_ARG, "good class '%s' does not occur in the evaluated images (split %s)", gname,
                           r->split_name ? r->split_name : "?");
        return DN_OK; /* the report says so: no false-reject figures */
    }
    if (choose && !count_class(in->vy, in->nv, g))
        return dn_fail(DN_ERR_ARG, "good class '%s' does not occur in the %s images the policy is chosen on", gname,
                       r->fit_split ? r->fit_split : "fitting");
    r->policy = in->policy;
    r->policy_source = in->policy.good_threshold > 0 ? "stored in model" : "argmax and confidence threshold";
    uint8_t *acc = dn_malloc((size_t)(in->n > in->nv ? in->n : in->nv) + 1);
    if (!acc) return DN_ERR_NOMEM;
    dn_status st = DN_OK;
    if (choose) {
        dn_policy_point pt;
        dn_softmax_t(in->vlogits, (int)in->nv, k, (float)r->temperature, vprob);
        if ((st = dn_policy_choose(vprob, in->vy, in->nv, k, g, in->cost, in->target_escape, &pt))) goto done;
        r->policy.good = g;
        r->policy.good_threshold = pt.threshold > 0 ? pt.threshold : 1e-9f;
        if (in->cost)
            snprintf(r->policy_desc, sizeof r->policy_desc, "chosen on %s for least cost (%s)", r->fit_split,
                     r->cost_spec ? r->cost_spec : "given costs");
        else
            snprintf(r->policy_desc, sizeof r->policy_desc, "chosen on %s for escape rate <= %.4g", r->fit_split,
                     in->target_escape);
        r->policy_source = r->policy_desc;
        dn_policy_accepts(&r->policy, r->threshold, vprob, in->nv, k, acc);
        if ((st = dn_quality_compute(k, g, in->vy, acc, in->nv, &r->policy_fit))) goto done;
        r->has_policy_fit = 1;
    }
    dn_policy_accepts(&r->policy, r->threshold, pcal, in->n, k, acc);
    if ((st = dn_quality_compute(k, g, in->y, acc, in->n, &r->quality))) goto done;
    r->has_quality = 1;
    st = dn_policy_curve(pcal, in->y, in->n, k, g, in->cost, &r->pcurve, &r->npcurve);
done:
    free(acc);
    return st;
}

/* Intervals of accuracy (Wilson) and macro-F1 (bootstrap); ordinal errors. */
static dn_status intervals(const dn_eval_input *in, dn_eval_report *r, const int *pred) {
    int64_t right = 0;
    for (int64_t i = 0; i < in->n; i++) right += pred[i] == in->y[i];
    r->acc_ci = dn_wilson(right, in->n);
    if (in->ordinal) {
        r->ordinal = 1;
        dn_ordinal_compute(in->k, r->cal.cm, &r->ord);
    }
    return dn_bootstrap_macro_f1(in->k, in->y, pred, in->n, &r->f1_lo, &r->f1_hi);
}

dn_status dn_eval_analyse(const dn_eval_input *in, dn_eval_report *r) {
    int k = in->k;
    int64_t n = in->n, nv = in->nv;
    int choose = in->good >= 0 && (in->cost || in->target_escape >= 0);
    if (!r->model || k < 2 || n < 1 || nv < 0 || ((in->fit_temperature || in->target > 0 || choose) && nv < 1))
        return dn_fail(DN_ERR_ARG, "eval: needs a model, >= 2 classes, >= 1 image (and fitting images to calibrate)");
    dn_status st = DN_ERR_NOMEM;
    float *praw = dn_malloc((size_t)n * k * sizeof *praw), *pcal = dn_malloc((size_t)n * k * sizeof *pcal);
    float *conf = dn_malloc((size_t)n * sizeof *conf), *vprob = dn_malloc(((size_t)nv + 1) * k * sizeof *vprob);
    float *vconf = dn_malloc(((size_t)nv + 1) * sizeof *vconf);
    uint8_t *ok = dn_malloc((size_t)n), *vok = dn_malloc((size_t)nv + 1);
    int *pred = dn_malloc((size_t)n * sizeof *pred);
    if (!praw || !pcal || !conf || !vprob || !vconf || !ok || !vok || !pred) goto done;
    if ((st = fit_temperature(in, r, vprob))) goto done;
    dn_softmax_t(in->logits, (int)n, k, 1.0f, praw);
    dn_softmax_t(in->logits, (int)n, k, (float)r->temperature, pcal);
    if ((st = dn_eval_metrics_compute(k, n, in->y, praw, NULL, in->topk, &r->raw)) ||
        (st = dn_eval_metrics_compute(k, n, in->y, pcal, NULL, in->topk, &r->cal)))
        goto done;
    correct_flags(pcal, in->y, n, k, conf, ok, pred);
    if ((st = choose_threshold(in, r, conf, ok, vprob, vconf, vok)) || (st = intervals(in, r, pred))) goto done;
    r->good = in->good;
    r->target_escape = in->target_escape;
    if (in->good >= 0 && in->good < k && (st = good_class_figures(in, r, pcal, vprob))) goto done;
    st = list_mistakes(in, r, pcal, conf, ok);
done:
    free(praw); free(pcal); free(conf); free(vprob); free(vconf); free(ok); free(vok); free(pred);
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

static void sb_rate(dn_sb *b, const char *name, const dn_rate *q) {
    dn_sb_printf(b, "\"%s\":%.6g,\"%s_ci\":[%.6g,%.6g],\"%s_count\":[%lld,%lld]", name, q->p, name, q->lo, q->hi, name,
                 (long long)q->k, (long long)q->n);
}

/* The "decision_policy" metadata record: the choice, its figures on the
 * fitting images and the expected ones (those of the evaluated split). */
static dn_status policy_record(dn_model *m, const dn_eval_report *r, const char *cal_data) {
    dn_sb b = {0};
    dn_sb_puts(&b, "{\"rule\":\"reject unless confidently good\",\"good_class\":");
    dn_sb_json_str(&b, m->class_names[r->good]);
    dn_sb_printf(&b, ",\"good_threshold\":%.9g,\"chosen_by\":\"%s\"", (double)r->policy.good_threshold,
                 r->cost_spec ? "cost" : "target_escape");
    if (r->cost_spec) {
        dn_sb_puts(&b, ",\"cost\":");
        dn_sb_json_str(&b, r->cost_spec);
    } else {
        dn_sb_printf(&b, ",\"target_escape\":%.6g", r->target_escape);
    }
    dn_sb_puts(&b, ",\"validation\":{\"data\":");
    dn_sb_json_str(&b, cal_data);
    dn_sb_puts(&b, ",\"split\":");
    dn_sb_json_str(&b, r->fit_split);
    dn_sb_printf(&b, ",\"images\":%lld,", (long long)r->n_fit);
    sb_rate(&b, "escape", &r->policy_fit.escape);
    dn_sb_puts(&b, ",");
    sb_rate(&b, "false_reject", &r->policy_fit.false_reject);
    dn_sb_puts(&b, "},\"expected\":{\"data\":");
    dn_sb_json_str(&b, r->data_source);
    dn_sb_puts(&b, ",\"split\":");
    dn_sb_json_str(&b, r->split_name);
    dn_sb_printf(&b, ",\"images\":%lld,", (long long)r->cal.n);
    sb_rate(&b, "escape", &r->quality.escape);
    dn_sb_puts(&b, ",");
    sb_rate(&b, "false_reject", &r->quality.false_reject);
    dn_sb_puts(&b, "}}");
    dn_status st = b.oom ? dn_fail(DN_ERR_NOMEM, "decision policy: out of memory")
                         : dn_meta_set(&m->meta, "decision_policy", b.s);
    dn_sb_free(&b);
    return st;
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
    if (!st && r->good >= 0 && r->good < m->num_classes) st = dn_model_set_good_class(m, m->class_names[r->good]);
    if (!st && r->good >= 0 && r->good_source && strstr(r->good_source, "auto"))
        st = dn_model_set_good_class(m, NULL); /* keep "auto-detected" as its source */
    dn_policy stored;
    if (!st && r->has_policy_fit) st = policy_record(m, r, cal_data);
    else if (!st && dn_model_policy(m, &stored)) dn_meta_remove(&m->meta, "decision_policy"); /* for another good class */
    if (!st && r->ordinal) st = dn_meta_set(&m->meta, "ordinal", "true"); /* later evals report ordinal figures */
    if (!st) st = dn_model_save(m, path);
    /* the report describes the model as it was evaluated */
    m->temperature = old_t;
    m->threshold = old_thr;
    if (!st) r->written_model = path;
    return st;
}
