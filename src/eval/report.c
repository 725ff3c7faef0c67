/* Evaluation reports: the terminal table and the JSON document (see
 * report.h); the HTML page is in report_html.c, thumbnails in thumb.c. */
#include "eval/report.h"
#include "core/core.h"
#include "eval/report_int.h"
#include "core/json.h"
#include "eval/style.h"
#include "ood/ood_eval.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

void dn_eval_report_free(dn_eval_report *r) {
    if (!r) return;
    dn_eval_metrics_free(&r->raw);
    dn_eval_metrics_free(&r->cal);
    free(r->curve);
    free(r->pcurve);
    r->pcurve = NULL;
    dn_quality_free(&r->quality);
    dn_quality_free(&r->policy_fit);
    free(r->uncertain_by_class);
    r->uncertain_by_class = NULL;
    for (int64_t i = 0; i < r->nmiss; i++) {
        free(r->miss[i].path);
        free(r->miss[i].thumb_b64);
        free(r->miss[i].cam_b64);
    }
    free(r->miss);
    r->curve = NULL;
    r->miss = NULL;
    r->ncurve = r->nmiss = 0;
}

const char *dn_rep_cname(const dn_eval_report *r, int i) {
    const char *s = dn_model_class_name(r->model, i);
    return s ? s : "?";
}

/* ------------------------------------------------------------ escaping */


void dn_rep_json_str(FILE *f, const char *s) { dn_json_fput_str(f, s); }

void dn_rep_html_str(FILE *f, const char *s) { dn_fput_html(f, s); }

const char *dn_rep_base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* "parent/name" of a path (the class folder usually tells which image it is) */
const char *dn_rep_short_name(const char *p) {
    const char *s = strrchr(p, '/');
    if (!s) return p;
    const char *q = s;
    while (q > p && q[-1] != '/') q--;
    return q;
}

/* JSON has no NaN: non-finite numbers are written as null. */
void dn_rep_json_num(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.6g", v);
    else fputs("null", f);
}

/* ------------------------------------------------------------ table */

static void table_rate(FILE *f, const char *label, const dn_rate *q, const char *what) {
    fprintf(f, "%-12s %.4f  (%lld of %lld %s; 95%% CI %.4f-%.4f)\n", label, q->p, (long long)q->k, (long long)q->n,
            what, q->lo, q->hi);
}

/* Good class, escape and false-reject rates, the decision policy, ordinal errors. */
static void table_quality(const dn_eval_report *r, FILE *f) {
    const dn_eval_metrics *m = &r->cal;
    if (r->ordinal)
        fprintf(f, "ordinal      mean absolute class error %.4f; off by one %lld, off by more %lld of %lld\n",
                r->ord.mae, (long long)r->ord.off_by_one, (long long)r->ord.off_by_more, (long long)m->n);
    if (!r->good_source) return;
    if (r->good < 0) {
        fprintf(f, "good class   none (%s; give one with --good-class NAME for escape/false-reject rates)\n",
                r->good_source);
        return;
    }
    fprintf(f, "good class   %s (%s)\n", dn_rep_cname(r, r->good), r->good_source);
    if (!r->has_quality) {
        fprintf(f, "             does not occur in split %s: no escape/false-reject rates\n", r->split_name);
        return;
    }
    fprintf(f, "decision     %s", r->policy.good_threshold > 0 ? "reject unless confidently good: " : "");
    if (r->policy.good_threshold > 0) fprintf(f, "p(%s) >= %.4f", dn_rep_cname(r, r->good), (double)r->policy.good_threshold);
    else fprintf(f, "good if predicted good with confidence >= %.4f", (double)r->threshold);
    fprintf(f, " (%s)\n", r->policy_source ? r->policy_source : "");
    table_rate(f, "escape rate", &r->quality.escape, "defective parts accepted as good");
    for (int c = 0; c < r->quality.k; c++)
        if (c != r->good && r->quality.escape_by_class[c].n) {
            char lab[48];
            snprintf(lab, sizeof lab, "  %.20s", dn_rep_cname(r, c));
            table_rate(f, lab, &r->quality.escape_by_class[c], "escaped");
        }
    table_rate(f, "false reject", &r->quality.false_reject, "good parts rejected or uncertain");
    if (r->has_policy_fit)
        fprintf(f, "  on %-8s escape %.4f (%lld of %lld), false reject %.4f (%lld of %lld)\n", r->fit_split,
                r->policy_fit.escape.p, (long long)r->policy_fit.escape.k, (long long)r->policy_fit.escape.n,
                r->policy_fit.false_reject.p, (long long)r->policy_fit.false_reject.k,
                (long long)r->policy_fit.false_reject.n);
}

void dn_eval_report_table(const dn_eval_report *r, FILE *f) {
    const dn_eval_metrics *m = &r->cal;
    int k = m->k, w = 12;
    for (int c = 0; c < k; c++) {
        int l = (int)strlen(dn_rep_cname(r, c));
        if (l > w) w = l;
    }
    if (w > 28) w = 28;
    fprintf(f, "model   %s (%s, %d classes)\n", r->model_path, r->model->arch, k);
    fprintf(f, "data    %s: split %s, %lld images evaluated", r->data_source, r->split_name, (long long)m->n);
    if (r->skipped) fprintf(f, ", %d unreadable skipped", r->skipped);
    if (r->dups_dropped) fprintf(f, ", %d duplicates of earlier-split images dropped", r->dups_dropped);
    fprintf(f, "\n\n%-*s %9s %9s %9s %8s\n", w + 5, "class", "precision", "recall", "f1", "support");
    for (int c = 0; c < k; c++)
        fprintf(f, "[%2d] %-*.*s %9.4f %9.4f %9.4f %8lld\n", c, w, w, dn_rep_cname(r, c), m->precision[c], m->recall[c],
                m->f1[c], (long long)m->support[c]);
    fprintf(f, "%-*s %9.4f %9.4f %9.4f %8lld\n", w + 5, "macro avg", m->macro_precision, m->macro_recall,
            m->macro_f1, (long long)m->n);
    fprintf(f, "%-*s %9.4f %9.4f %9.4f %8lld\n\n", w + 5, "weighted avg", m->weighted_precision,
            m->weighted_recall, m->weighted_f1, (long long)m->n);
    fprintf(f, "accuracy     %.4f  (%lld of %lld; 95%% CI %.4f-%.4f, Wilson)\n", m->accuracy,
            (long long)llround(m->accuracy * (double)m->n), (long long)m->n, r->acc_ci.lo, r->acc_ci.hi);
    fprintf(f, "top-%d        %.4f\n", m->topk, m->topk_accuracy);
    fprintf(f, "macro F1     %.4f  (95%% CI %.4f-%.4f, bootstrap)   weighted F1 %.4f\n", m->macro_f1, r->f1_lo,
            r->f1_hi, m->weighted_f1);
    table_quality(r, f);
    fprintf(f, "ECE          %.4f before calibration, %.4f after (T = %.4g, %s)\n", r->raw.ece, m->ece,
            r->temperature, r->temp_source);
    if (r->fitted)
        fprintf(f, "temperature  fitted on %s (%lld images): NLL %.4f -> %.4f, ECE %.4f -> %.4f%s\n", r->fit_split,
                (long long)r->n_fit, r->fit.nll_before, r->fit.nll_after, r->fit_ece_before, r->fit_ece_after,
                r->fit.at_bound ? " (at its bound: validation perfectly separated or hopeless)" : "");
    fprintf(f, "threshold    %.4f (%s", r->threshold, r->thr_source);
    if (r->target > 0) fprintf(f, " for target accuracy %.4g%s", r->target, r->reached ? "" : ", NOT reached");
    fprintf(f, ")\n");
    if (r->has_thr_fit)
        fprintf(f, "  on %-8s coverage %.4f  accuracy %.4f  (%lld of %lld accepted)\n", r->fit_split,
                r->thr_fit.coverage, r->thr_fit.accuracy, (long long)r->thr_fit.covered, (long long)r->n_fit);
    fprintf(f, "  on %-8s coverage %.4f  accuracy %.4f  (%lld of %lld accepted, %lld uncertain)\n", r->split_name,
            r->thr_eval.coverage, r->thr_eval.accuracy, (long long)r->thr_eval.covered, (long long)m->n,
            (long long)(m->n - r->thr_eval.covered));
    if (r->uncertain_by_class && r->thr_eval.covered < m->n) {
        fprintf(f, "  uncertain by true class:");
        for (int c = 0; c < k; c++)
            if (r->uncertain_by_class[c]) fprintf(f, " %s %lld", dn_rep_cname(r, c), (long long)r->uncertain_by_class[c]);
        fputc('\n', f);
    }
    fprintf(f, "\nconfusion matrix (rows = true class, columns = predicted class index)\n%-*s", w + 5, "");
    int cw = 5;
    for (int c = 0; c < k; c++) {
        for (int t = 0; t < k; t++) {
            char b[32];
            int l = snprintf(b, sizeof b, "%lld", (long long)m->cm[(size_t)c * k + t]);
            if (l + 1 > cw) cw = l + 1;
        }
    }
    for (int c = 0; c < k; c++) {
        char b[16];
        snprintf(b, sizeof b, "[%d]", c);
        fprintf(f, " %*s", cw, b);
    }
    fputc('\n', f);
    for (int t = 0; t < k; t++) {
        fprintf(f, "[%2d] %-*.*s", t, w, w, dn_rep_cname(r, t));
        for (int c = 0; c < k; c++) fprintf(f, " %*lld", cw, (long long)m->cm[(size_t)t * k + c]);
        fputc('\n', f);
    }
    if (r->nmiss) {
        int show = r->nmiss < 10 ? (int)r->nmiss : 10;
        fprintf(f, "\nmost confident mistakes (%lld misclassified):\n", (long long)r->nmiss);
        for (int i = 0; i < show; i++) {
            const dn_eval_miss *x = &r->miss[i];
            fprintf(f, "  %s: true %s, predicted %s (%.3f; true class %.3f)\n", x->path, dn_rep_cname(r, x->truth),
                    dn_rep_cname(r, x->pred), x->conf, x->p_true);
        }
    }
    if (r->ood) {
        const dn_ood_eval *o = r->ood;
        fprintf(f, "\nunknown inputs (--ood; model's score %s, threshold %.4g: above it = unknown):\n",
                dn_ood_kind_name(o->kind), (double)o->threshold);
        dn_ood_eval_table(o, f);
    }
    if (r->seconds > 0)
        fprintf(f, "\n%lld images decoded and classified in %.2f s (%.1f images/s)\n",
                (long long)(m->n + (r->has_thr_fit || r->fitted ? r->n_fit : 0)), r->seconds,
                (double)(m->n + (r->has_thr_fit || r->fitted ? r->n_fit : 0)) / r->seconds);
    if (r->written_model)
        fprintf(f, "\ncalibrated model written: %s (temperature %.6g, threshold %.6g)\n", r->written_model,
                r->temperature, r->threshold);
}

/* ------------------------------------------------------------ JSON */

static void json_bins(FILE *f, const dn_eval_metrics *m) {
    fputc('[', f);
    for (int b = 0; b < DN_ECE_BINS; b++)
        fprintf(f, "%s{\"lo\":%.6g,\"hi\":%.6g,\"count\":%lld,\"confidence\":%.6f,\"accuracy\":%.6f}", b ? "," : "",
                (double)b / DN_ECE_BINS, (double)(b + 1) / DN_ECE_BINS, (long long)m->bin_count[b], m->bin_conf[b],
                m->bin_acc[b]);
    fputc(']', f);
}

static void json_cov(FILE *f, const dn_cov_point *p) {
    fprintf(f, "{\"coverage\":%.6f,\"accuracy\":%.6f,\"accepted\":%lld}", p->coverage, p->accuracy,
            (long long)p->covered);
}

/* A curve of n points as a JSON array of at most ~200 of them (every step-th, ends kept). */
typedef void (*curve_point_fn)(FILE *f, const dn_eval_report *r, int64_t j);
static void json_curve(FILE *f, const dn_eval_report *r, int64_t n, curve_point_fn point) {
    fputc('[', f);
    int64_t step = n > 200 ? (n + 199) / 200 : 1;
    for (int64_t i = 0; i < n; i += step) {
        int64_t j = i + step >= n ? n - 1 : i;
        fputs(i ? "," : "", f);
        point(f, r, j);
        if (j == n - 1) break;
    }
    fputc(']', f);
}

static void coverage_point(FILE *f, const dn_eval_report *r, int64_t j) {
    fprintf(f, "[%.6g,%.6f,%.6f]", (double)r->curve[j].threshold, r->curve[j].coverage, r->curve[j].accuracy);
}

static void policy_point(FILE *f, const dn_eval_report *r, int64_t j) {
    fprintf(f, "[%.6g,%.6g,%.6g]", (double)r->pcurve[j].threshold, r->pcurve[j].escape, r->pcurve[j].false_reject);
}

static void json_rate(FILE *f, const char *key, const dn_rate *q) {
    fprintf(f, "\"%s\":{\"rate\":%.6g,\"count\":%lld,\"of\":%lld,\"ci95\":[%.6g,%.6g]}", key, q->p, (long long)q->k,
            (long long)q->n, q->lo, q->hi);
}

static void json_quality_rates(const dn_eval_report *r, const dn_quality *q, FILE *f) {
    json_rate(f, "escape", &q->escape);
    fputs(",\"escape_by_class\":{", f);
    int first = 1;
    for (int c = 0; c < q->k; c++) {
        if (c == r->good) continue;
        fputs(first ? "" : ",", f);
        first = 0;
        dn_rep_json_str(f, dn_rep_cname(r, c));
        fputc(':', f);
        fprintf(f, "{\"rate\":%.6g,\"count\":%lld,\"of\":%lld,\"ci95\":[%.6g,%.6g]}", q->escape_by_class[c].p,
                (long long)q->escape_by_class[c].k, (long long)q->escape_by_class[c].n, q->escape_by_class[c].lo,
                q->escape_by_class[c].hi);
    }
    fputs("},", f);
    json_rate(f, "false_reject", &q->false_reject);
}

/* "intervals", "ordinal" and "good_class" sections (each a leading comma). */
static void json_quality(const dn_eval_report *r, FILE *f) {
    fprintf(f, ",\"intervals\":{\"level\":0.95,\"accuracy\":[%.6g,%.6g],\"accuracy_method\":\"wilson\","
               "\"macro_f1\":[%.6g,%.6g],\"macro_f1_method\":\"bootstrap, %d resamples of the images\"}",
            r->acc_ci.lo, r->acc_ci.hi, r->f1_lo, r->f1_hi, DN_BOOT_REPS);
    if (r->ordinal)
        fprintf(f, ",\"ordinal\":{\"mean_abs_class_error\":%.6g,\"exact\":%lld,\"off_by_one\":%lld,\"off_by_more\":%lld}",
                r->ord.mae, (long long)r->ord.exact, (long long)r->ord.off_by_one, (long long)r->ord.off_by_more);
    if (!r->good_source) return;
    fputs(",\"good_class\":{\"name\":", f);
    if (r->good >= 0) dn_rep_json_str(f, dn_rep_cname(r, r->good));
    else fputs("null", f);
    fputs(",\"source\":", f);
    dn_rep_json_str(f, r->good_source);
    fprintf(f, ",\"in_data\":%s", r->has_quality ? "true" : "false");
    if (!r->has_quality) { fputc('}', f); return; }
    fprintf(f, ",\"decision\":{\"rule\":\"%s\",\"good_threshold\":%.9g,\"confidence_threshold\":%.9g,\"source\":",
            r->policy.good_threshold > 0 ? "reject unless confidently good" : "argmax and confidence threshold",
            (double)r->policy.good_threshold, (double)r->threshold);
    dn_rep_json_str(f, r->policy_source ? r->policy_source : "");
    if (r->cost_spec) {
        fputs(",\"cost\":", f);
        dn_rep_json_str(f, r->cost_spec);
    } else if (r->has_policy_fit) {
        fprintf(f, ",\"target_escape\":%.6g", r->target_escape);
    }
    fputs("},", f);
    json_quality_rates(r, &r->quality, f);
    if (r->has_policy_fit) {
        fputs(",\"fit\":{\"split\":", f);
        dn_rep_json_str(f, r->fit_split);
        fputc(',', f);
        json_quality_rates(r, &r->policy_fit, f);
        fputc('}', f);
    }
    /* [good threshold, escape rate, false-reject rate] of the evaluated split */
    fputs(",\"curve\":", f);
    json_curve(f, r, r->npcurve, policy_point);
    fputc('}', f);
}

void dn_eval_report_json(const dn_eval_report *r, FILE *f) {
    const dn_model *md = r->model;
    const dn_preproc *pp = &md->pp;
    fputs("{\"model\":{\"path\":", f);
    dn_rep_json_str(f, r->model_path);
    fputs(",\"sha256\":", f);
    dn_rep_json_str(f, md->sha256);
    fputs(",\"arch\":", f);
    dn_rep_json_str(f, md->arch);
    fprintf(f, ",\"parameters\":%lld,\"classes\":[", (long long)dn_model_param_count(md));
    for (int c = 0; c < md->num_classes; c++) {
        if (c) fputc(',', f);
        dn_rep_json_str(f, dn_rep_cname(r, c));
    }
    fprintf(f, "],\"preprocess\":{\"resize\":%d,\"crop\":%d,\"mean\":[%.6g,%.6g,%.6g],\"std\":[%.6g,%.6g,%.6g],"
               "\"channels\":\"%s\"},\"stored_temperature\":%.9g,\"stored_threshold\":%.9g},",
            pp->resize, pp->crop, pp->mean[0], pp->mean[1], pp->mean[2], pp->std[0], pp->std[1], pp->std[2],
            pp->bgr ? "BGR" : "RGB", (double)md->temperature, (double)md->threshold);
    fputs("\"data\":{\"source\":", f);
    dn_rep_json_str(f, r->data_source);
    fputs(",\"split\":", f);
    dn_rep_json_str(f, r->split_name);
    fprintf(f, ",\"listed\":%lld,\"evaluated\":%lld,\"skipped\":%d,\"duplicates_dropped\":%d,"
               "\"classes_absent_from_data\":%d},",
            (long long)r->listed, (long long)r->cal.n, r->skipped, r->dups_dropped, r->absent_classes);
    fputs("\"metrics\":", f);
    dn_eval_metrics_json(&r->cal, (const char *const *)md->class_names, f);
    fprintf(f, ",\"calibration\":{\"temperature\":%.9g,\"source\":", r->temperature);
    dn_rep_json_str(f, r->temp_source);
    fprintf(f, ",\"ece_before\":%.6f,\"ece_after\":%.6f,\"reliability_before\":", r->raw.ece, r->cal.ece);
    json_bins(f, &r->raw);
    fputs(",\"reliability_after\":", f);
    json_bins(f, &r->cal);
    if (r->fitted) {
        fputs(",\"fit\":{\"split\":", f);
        dn_rep_json_str(f, r->fit_split);
        fprintf(f, ",\"images\":%lld,\"nll_before\":", (long long)r->n_fit);
        dn_rep_json_num(f, r->fit.nll_before);
        fputs(",\"nll_after\":", f);
        dn_rep_json_num(f, r->fit.nll_after);
        fprintf(f, ",\"ece_before\":%.6f,\"ece_after\":%.6f,\"at_bound\":%s,\"iterations\":%d}", r->fit_ece_before,
                r->fit_ece_after, r->fit.at_bound ? "true" : "false", r->fit.iterations);
    }
    fprintf(f, "},\"threshold\":{\"value\":%.9g,\"source\":", (double)r->threshold);
    dn_rep_json_str(f, r->thr_source);
    if (r->target > 0) fprintf(f, ",\"target_accuracy\":%.6g,\"target_reached\":%s", r->target, r->reached ? "true" : "false");
    if (r->has_thr_fit) {
        fputs(",\"fit\":", f);
        json_cov(f, &r->thr_fit);
    }
    fputs(",\"evaluated\":", f);
    json_cov(f, &r->thr_eval);
    fprintf(f, ",\"uncertain\":%lld", (long long)(r->cal.n - r->thr_eval.covered));
    if (r->uncertain_by_class) {
        fputs(",\"uncertain_by_class\":{", f);
        for (int c = 0; c < r->cal.k; c++) {
            if (c) fputc(',', f);
            dn_rep_json_str(f, dn_rep_cname(r, c));
            fprintf(f, ":%lld", (long long)r->uncertain_by_class[c]);
        }
        fputc('}', f);
    }
    /* [threshold, coverage, accuracy] of the evaluated split */
    fputs(",\"coverage_curve\":", f);
    json_curve(f, r, r->ncurve, coverage_point);
    fputc('}', f);
    json_quality(r, f);
    fputs(",\"misclassified\":[", f);
    for (int64_t i = 0; i < r->nmiss; i++) {
        const dn_eval_miss *x = &r->miss[i];
        fputs(i ? ",{\"path\":" : "{\"path\":", f);
        dn_rep_json_str(f, x->path);
        fputs(",\"true\":", f);
        dn_rep_json_str(f, dn_rep_cname(r, x->truth));
        fputs(",\"predicted\":", f);
        dn_rep_json_str(f, dn_rep_cname(r, x->pred));
        fprintf(f, ",\"confidence\":%.6f,\"p_true\":%.6f,\"uncertain\":%s,\"top\":[", x->conf, x->p_true,
                x->conf < r->threshold ? "true" : "false");
        for (int j = 0; j < x->ntop; j++) {
            fputs(j ? ",{\"class\":" : "{\"class\":", f);
            dn_rep_json_str(f, dn_rep_cname(r, x->top[j]));
            fprintf(f, ",\"prob\":%.6f}", x->top_p[j]);
        }
        fputs("]}", f);
    }
    fputc(']', f);
    if (r->ood) {
        fputs(",\"ood\":{", f);
        dn_ood_eval_json_members(r->ood, f);
        fputc('}', f);
    }
    fprintf(f, ",\"seconds\":%.3f", r->seconds);
    if (r->written_model) {
        fputs(",\"written_model\":", f);
        dn_rep_json_str(f, r->written_model);
    }
    fputs("}\n", f);
}

