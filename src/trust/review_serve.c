/* Review queue hook and endpoints of `defectnet serve` (see review_serve.h). */
#include "trust/review_serve.h"
#include "nn/model.h"
#include "serve/store_review.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

dn_status dn_review_after_commit(const dn_review_policy *policy, dn_store *st, const dn_model *m, int64_t id,
                                 const dn_prediction *pr, double time, const float *feat) {
    if (!policy || !dn_review_policy_active(policy)) return DN_OK;
    const char *cls = pr->cls >= 0 && pr->cls < m->num_classes ? m->class_names[pr->cls] : NULL;
    const char *reason = dn_review_reason(policy, id, pr->decision, cls);
    if (!reason) return DN_OK;
    dn_sb nb = {0};
    if (feat) {
        dn_review_nb v[DN_REVIEW_NEIGHBOURS];
        int n = 0;
        dn_review_neighbours(m, feat, DN_REVIEW_NEIGHBOURS, v, &n);
        if (n) {
            dn_sb_puts(&nb, "[");
            for (int i = 0; i < n; i++) {
                dn_sb_printf(&nb, "%s{\"row\":%d,\"class\":", i ? "," : "", v[i].row);
                if (v[i].cls >= 0 && v[i].cls < m->num_classes) dn_sb_json_str(&nb, m->class_names[v[i].cls]);
                else dn_sb_puts(&nb, "null");
                dn_sb_printf(&nb, ",\"distance\":%.6g}", (double)v[i].distance);
            }
            dn_sb_puts(&nb, "]");
        }
    }
    dn_status rc = nb.oom ? dn_fail(DN_ERR_NOMEM, "review queue: out of memory")
                          : dn_store_review_enqueue(st, id, reason, nb.s, time, policy->cap_per_hour, NULL);
    dn_sb_free(&nb);
    return rc;
}

/* ------------------------------------------------------------ routing */

int dn_review_route(const char *url, int *post_ok) {
    *post_ok = 0;
    if (!strcmp(url, "/review") || !strcmp(url, "/review/")) return 1;
    if (strcmp(url, "/v1/review") && strncmp(url, "/v1/review/", 11)) return 0;
    const char *t = url + 10;
    if (*t == '/') {
        t++;
        char *e;
        errno = 0;
        long long id = strtoll(t, &e, 10);
        /* /v1/review/{id} takes a label post */
        if (e != t && !errno && id > 0 && !*e && *t >= '0' && *t <= '9') *post_ok = 1;
    }
    return 2;
}

static void answer_err(dn_review_http *h, int code, const char *msg) {
    dn_sb_free(&h->out);
    h->code = code;
    h->ctype = "application/json";
    dn_json_error(&h->out, code, msg);
}

/* {"label":..,"reviewer":..,"time":..} items of a labels array */
typedef struct { dn_sb *b; int n; } labels_acc;
static int label_json(void *ctx, const char *label, const char *reviewer, double time) {
    labels_acc *a = ctx;
    dn_sb_puts(a->b, a->n++ ? ",{" : "{");
    dn_json_opt_str(a->b, "label", label, 0);
    dn_json_opt_str(a->b, "reviewer", reviewer, 1);
    dn_sb_printf(a->b, ",\"time\":%.6f}", time);
    return 0;
}

/* The three highest scores of a {"class":p,...} object as [{"class":..,"p":..}]. */
static void top_scores(dn_sb *b, const char *scores) {
    dn_sb_puts(b, "[");
    dn_json *j = scores ? dn_json_parse(scores, strlen(scores), NULL, 0) : NULL;
    size_t n = dn_json_len(j);
    int used[3] = {-1, -1, -1};
    for (int k = 0; k < 3 && k < (int)n; k++) {
        int best = -1;
        double bv = -1;
        for (size_t i = 0; i < n; i++) {
            if ((int)i == used[0] || (int)i == used[1]) continue;
            double v = dn_json_num(dn_json_at(j, i), -1);
            if (v > bv) { bv = v; best = (int)i; }
        }
        if (best < 0) break;
        used[k] = best;
        dn_sb_puts(b, k ? ",{\"class\":" : "{\"class\":");
        dn_sb_json_str(b, dn_json_key_at(j, (size_t)best));
        dn_sb_printf(b, ",\"p\":%.6g}", bv);
    }
    dn_json_free(j);
    dn_sb_puts(b, "]");
}

/* The Grad-CAM overlay serve --heatmaps writes beside the image copy,
 * <copy without extension>.<model sha256[0:12]>.cam.png, when that file exists. */
static int heatmap_path(const char *copy, const char *model_sha, char *out, size_t n) {
    if (!copy || !model_sha) return 0;
    const char *dot = strrchr(copy, '.'), *slash = strrchr(copy, '/');
    size_t stem = dot && (!slash || dot > slash) ? (size_t)(dot - copy) : strlen(copy);
    if ((size_t)snprintf(out, n, "%.*s.%.12s.cam.png", (int)stem, copy, model_sha) >= n) return 0;
    struct stat sb;
    return stat(out, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* One item as a JSON object. DN_OK or the store's failure. */
static dn_status item_json(dn_store *st, const dn_review_item *it, dn_sb *b) {
    dn_pred_row row;
    int found = 0;
    dn_status rc = dn_store_get(st, it->id, &row, &found);
    if (rc) return rc;
    if (!found) return dn_fail(DN_ERR_DB, "review item %lld: its prediction is missing", (long long)it->id);
    char hm[1300];
    dn_sb_printf(b, "{\"id\":%lld", (long long)it->id);
    dn_json_opt_str(b, "reason", it->reason, 1);
    dn_sb_printf(b, ",\"queued_at\":%.6f,\"status\":\"%s\"", it->queued_at, it->final ? "final" : "open");
    dn_json_opt_str(b, "label", it->final ? it->label : NULL, 1);
    if (row.image_copy) dn_sb_printf(b, ",\"image_url\":\"/v1/review/%lld/image\"", (long long)it->id);
    else dn_sb_puts(b, ",\"image_url\":null");
    if (heatmap_path(row.image_copy, row.model_sha256, hm, sizeof hm)) dn_sb_printf(b, ",\"heatmap_url\":\"/v1/review/%lld/heatmap\"", (long long)it->id);
    else dn_sb_puts(b, ",\"heatmap_url\":null");
    dn_sb_puts(b, ",\"top\":");
    top_scores(b, row.scores_json);
    if (it->neighbours) dn_sb_printf(b, ",\"neighbours\":%s", it->neighbours);
    dn_sb_puts(b, ",\"prediction\":");
    dn_pred_row_json_open(b, &row);
    dn_pred_row_clear(&row);
    dn_sb_puts(b, "},\"labels\":[");
    labels_acc a = {b, 0};
    if ((rc = dn_store_review_labels(st, it->id, label_json, &a))) return rc;
    dn_sb_puts(b, "]}");
    return DN_OK;
}

static void classes_json(dn_pipeline *p, dn_sb *b) {
    dn_gen *g = dn_pipeline_gen_acquire(p);
    dn_sb_puts(b, "[");
    for (int i = 0; i < dn_model_num_classes(g->model); i++) {
        if (i) dn_sb_puts(b, ",");
        dn_sb_json_str(b, dn_model_class_name(g->model, i));
    }
    dn_sb_puts(b, "]");
    dn_pipeline_gen_release(p, g);
}

static void handle_next(dn_pipeline *p, dn_review_http *h) {
    int n = 10;
    if (h->q_n) {
        char *e;
        errno = 0;
        long v = strtol(h->q_n, &e, 10);
        if (errno || e == h->q_n || *e || v < 1 || v > 100) return answer_err(h, 400, "n: expected an integer 1..100");
        n = (int)v;
    }
    if (h->q_reviewer && (!*h->q_reviewer || strlen(h->q_reviewer) > 64))
        return answer_err(h, 400, "reviewer: expected 1..64 characters");
    dn_store *st = dn_pipeline_store(p);
    dn_review_item *items = NULL;
    size_t cnt = 0;
    if (dn_store_review_next(st, n, h->q_reviewer, &items, &cnt)) return answer_err(h, 503, dn_last_error());
    const dn_review_policy *pol = dn_pipeline_review(p);
    dn_sb *b = &h->out;
    dn_sb_printf(b, "{\"agree\":%d,\"classes\":", pol ? pol->agree : 1);
    classes_json(p, b);
    dn_sb_puts(b, ",\"items\":[");
    for (size_t i = 0; i < cnt; i++) {
        if (i) dn_sb_puts(b, ",");
        if (item_json(st, &items[i], b)) {
            dn_review_items_free(items, cnt);
            return answer_err(h, 503, dn_last_error());
        }
    }
    dn_review_items_free(items, cnt);
    dn_sb_puts(b, "]}\n");
    h->code = 200;
}

static void handle_disagreements(dn_pipeline *p, dn_review_http *h) {
    dn_store *st = dn_pipeline_store(p);
    int64_t *ids = NULL;
    size_t cnt = 0;
    if (dn_store_review_disagreements(st, 100, &ids, &cnt)) return answer_err(h, 503, dn_last_error());
    dn_sb *b = &h->out;
    dn_sb_puts(b, "{\"items\":[");
    int shown = 0;
    for (size_t i = 0; i < cnt; i++) {
        dn_review_item it;
        int found = 0;
        dn_status rc = dn_store_review_get(st, ids[i], &it, &found);
        if (!rc && found) { /* an item finalised meanwhile is still shown */
            if (shown++) dn_sb_puts(b, ",");
            rc = item_json(st, &it, b);
            free(it.neighbours);
        }
        if (rc) {
            free(ids);
            return answer_err(h, 503, dn_last_error());
        }
    }
    free(ids);
    dn_sb_puts(b, "]}\n");
    h->code = 200;
}

/* The stored image copy (or its heatmap) of a queued item. */
static void handle_file(dn_pipeline *p, dn_review_http *h, int64_t id, int heatmap) {
    dn_store *st = dn_pipeline_store(p);
    dn_review_item it;
    int found = 0;
    if (dn_store_review_get(st, id, &it, &found)) return answer_err(h, 503, dn_last_error());
    free(it.neighbours);
    char msg[160];
    if (!found) {
        snprintf(msg, sizeof msg, "no review item %lld", (long long)id);
        return answer_err(h, 404, msg);
    }
    dn_pred_row row;
    if (dn_store_get(st, id, &row, &found)) return answer_err(h, 503, dn_last_error());
    char path[1300];
    int have = found && row.image_copy;
    if (have) snprintf(path, sizeof path, "%s", row.image_copy);
    if (have && heatmap) have = heatmap_path(row.image_copy, row.model_sha256, path, sizeof path);
    dn_pred_row_clear(&row);
    if (!have) {
        snprintf(msg, sizeof msg, heatmap ? "review item %lld has no heatmap"
                                          : "review item %lld has no stored image (serve runs without --store-images)",
                 (long long)id);
        return answer_err(h, 404, msg);
    }
    uint8_t *d = NULL;
    size_t n = 0;
    if (dn_read_file(path, (size_t)256 << 20, &d, &n)) return answer_err(h, 404, dn_last_error());
    dn_sb_putn(&h->out, (const char *)d, n);
    free(d);
    const char *ext = strrchr(path, '.');
    h->ctype = !ext ? "application/octet-stream" : !strcmp(ext, ".png") ? "image/png" : !strcmp(ext, ".jpg") ? "image/jpeg"
             : !strcmp(ext, ".bmp") ? "image/bmp" : !strcmp(ext, ".pnm") ? "image/x-portable-anymap" : "application/octet-stream";
    h->code = 200;
}

static void handle_one(dn_pipeline *p, dn_review_http *h, int64_t id) {
    dn_store *st = dn_pipeline_store(p);
    dn_review_item it;
    int found = 0;
    if (dn_store_review_get(st, id, &it, &found)) return answer_err(h, 503, dn_last_error());
    if (!found) {
        char msg[80];
        snprintf(msg, sizeof msg, "no review item %lld", (long long)id);
        return answer_err(h, 404, msg);
    }
    dn_status rc = item_json(st, &it, &h->out);
    free(it.neighbours);
    if (rc) return answer_err(h, 503, dn_last_error());
    dn_sb_puts(&h->out, "\n");
    h->code = 200;
}

static void handle_label(dn_pipeline *p, dn_review_http *h, int64_t id) {
    char label[DN_REVIEW_MAX_LABEL], reviewer[DN_REVIEW_MAX_LABEL], err[200], msg[300];
    dn_gen *g = dn_pipeline_gen_acquire(p);
    dn_status rc = dn_review_parse_post(h->body, h->len, g->model, label, reviewer, err, sizeof err);
    dn_pipeline_gen_release(p, g);
    if (rc) return answer_err(h, 400, err);
    const dn_review_policy *pol = dn_pipeline_review(p);
    int agree = pol ? pol->agree : 1;
    dn_review_outcome o;
    if (dn_store_review_label(dn_pipeline_store(p), id, label, reviewer, dn_wall_now(), agree, &o))
        return answer_err(h, 503, dn_last_error());
    if (!o.found) {
        snprintf(msg, sizeof msg, "no review item %lld", (long long)id);
        return answer_err(h, 404, msg);
    }
    if (o.was_final) {
        snprintf(msg, sizeof msg, "review item %lld is already final (label %.100s)", (long long)id, o.label);
        return answer_err(h, 409, msg);
    }
    dn_sb *b = &h->out;
    dn_sb_printf(b, "{\"id\":%lld", (long long)id);
    dn_json_opt_str(b, "label", label, 1);
    dn_json_opt_str(b, "reviewer", reviewer, 1);
    dn_sb_printf(b, ",\"final\":%s", o.final ? "true" : "false");
    dn_json_opt_str(b, "final_label", o.final ? o.label : NULL, 1);
    dn_sb_printf(b, ",\"votes\":%d,\"agree\":%d,\"disagreement\":%s}\n", o.votes, agree,
                 !o.final && o.distinct > 1 ? "true" : "false");
    dn_pipeline_log(p, "review: item %lld labelled %s by %s%s", (long long)id, label, reviewer, o.final ? " (final)" : "");
    h->code = 200;
}

void dn_review_handle(dn_pipeline *p, dn_review_http *h) {
    memset(&h->out, 0, sizeof h->out);
    h->code = 500;
    h->ctype = "application/json";
    int post_ok = 0, kind = dn_review_route(h->url, &post_ok);
    if (!kind) return answer_err(h, 404, "no such endpoint");
    if (kind == 1) {
        if (h->post) return answer_err(h, 405, "method not allowed: use GET");
        dn_sb_puts(&h->out, dn_review_page_html);
        h->ctype = "text/html; charset=utf-8";
        h->code = 200;
        return;
    }
    if (h->post && !post_ok) return answer_err(h, 405, "method not allowed: use GET");
    const char *t = h->url + 10; /* after /v1/review */
    if (!*t) return handle_next(p, h);
    t++;
    if (!strcmp(t, "disagreements")) return handle_disagreements(p, h);
    char *e;
    errno = 0;
    long long id = strtoll(t, &e, 10);
    if (e == t || errno || id < 1 || *t < '0' || *t > '9') return answer_err(h, 404, "no such endpoint");
    if (!*e) return h->post ? handle_label(p, h, id) : handle_one(p, h, id);
    if (h->post) return answer_err(h, 405, "method not allowed: use GET");
    if (!strcmp(e, "/image")) return handle_file(p, h, id, 0);
    if (!strcmp(e, "/heatmap")) return handle_file(p, h, id, 1);
    answer_err(h, 404, "no such endpoint");
}
