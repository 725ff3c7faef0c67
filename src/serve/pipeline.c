/* The prediction pipeline (see pipeline.h): open, configure, reload and close; the log;
 * accessors; action outcomes into the store. The queue and workers are in
 * pipeline_queue.c, what happens to one classified image in pipeline_commit.c. */
#include "serve/pipeline_int.h"
#include "serve/rules.h"

/* Copies in to out as one line of valid UTF-8: control characters, DEL and bytes that
 * are not part of a valid UTF-8 sequence become \xNN (and '\' itself \\), so a file
 * name or a client's string can neither forge a log line nor break a UTF-8 reader. */
static void log_escape(const char *in, char *out, size_t cap) {
    size_t k = 0;
    const unsigned char *p = (const unsigned char *)in;
    while (*p && k + 5 < cap) {
        size_t n = dn_utf8_seq_len(p);
        if (n > 1) {
            memcpy(out + k, p, n);
            k += n;
            p += n;
        } else if (n == 1 && *p >= 0x20 && *p != 0x7f && *p != '\\') {
            out[k++] = (char)*p++;
        } else {
            if (*p == '\\') k += (size_t)snprintf(out + k, cap - k, "\\\\");
            else k += (size_t)snprintf(out + k, cap - k, "\\x%02X", *p);
            p++;
        }
    }
    out[k] = 0;
}

void dn_pipeline_log(const dn_pipeline *p, const char *fmt, ...) {
    if (p->quiet) return;
    char buf[1024], esc[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_escape(buf, esc, sizeof esc);
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(stderr, "%s serve: %s\n", ts, esc);
}

int dn_pipeline_log_enabled(const dn_pipeline *p) { return !p->quiet; }

dn_store *dn_pipeline_store(dn_pipeline *p) { return p->store; }

struct dn_metrics *dn_pipeline_metrics(dn_pipeline *p) { return p->metrics; }
const dn_review_policy *dn_pipeline_review(dn_pipeline *p) { return &p->review; }
struct dn_drift *dn_pipeline_drift(dn_pipeline *p) { return p->drift; }
struct dn_shadow *dn_pipeline_shadow(dn_pipeline *p) { return p->shadow; }

/* The shadow thread's failures go to the serve log. */
static void shadow_log(void *ctx, const char *line) { dn_pipeline_log(ctx, "%s", line); }

dn_gen *dn_pipeline_gen_acquire(dn_pipeline *p) { return dn_gen_acquire(&p->gens); }

void dn_pipeline_gen_release(dn_pipeline *p, dn_gen *g) { dn_gen_release(&p->gens, g); }

int dn_pipeline_workers(const dn_pipeline *p) { return p->nworkers; }

int dn_pipeline_has_rules(const dn_pipeline *p) { return p->actions != NULL; }

int dn_pipeline_dry_run(const dn_pipeline *p) { return p->dry_run; }

dn_status dn_pipeline_set_heatmaps(dn_pipeline *p, const char *list) {
    static const char *const words[] = {"unknown", "uncertain", "defect", "good"};
    unsigned mask = 0;
    const char *s = list ? list : "";
    while (*s) {
        size_t l = strcspn(s, ",");
        unsigned bit = 0;
        if (l == 3 && !strncmp(s, "all", 3)) bit = HEAT_UNKNOWN | HEAT_UNCERTAIN | HEAT_DEFECT | HEAT_GOOD;
        for (int i = 0; i < 4 && !bit; i++)
            if (strlen(words[i]) == l && !strncmp(s, words[i], l)) bit = 1u << i;
        if (!bit)
            return dn_fail(DN_ERR_ARG, "--heatmaps: unknown kind '%.*s' (known: unknown, uncertain, defect, good, all)",
                           (int)(l < 64 ? l : 64), s);
        mask |= bit;
        s += l;
        if (*s == ',') s++;
    }
    if (mask && !p->store_images)
        return dn_fail(DN_ERR_ARG, "--heatmaps needs --store-images (heatmaps are written beside the image copies)");
    atomic_store(&p->heat_mask, mask);
    return DN_OK;
}

void dn_pipeline_set_bus(dn_pipeline *p, struct dn_bus *bus) {
    if (p) atomic_store(&p->bus, bus);
}

void dn_pipeline_set_kafka(dn_pipeline *p, struct dn_kafka *k) {
    if (p) atomic_store(&p->kafka, k);
}

long dn_pipeline_bus_failures(const dn_pipeline *p) {
    return p ? atomic_load(&((dn_pipeline *)p)->bus_failures) : 0;
}

static void outcome_cb(void *ctx, const dn_action_outcome *o) {
    dn_pipeline *p = ctx;
    dn_outcome_row r = {o->prediction_id, o->rule, o->kind, o->target, o->status, o->detail, o->attempts,
                        o->time > 0 ? o->time : dn_wall_now()};
    if (dn_store_add_outcome(p->store, &r))
        dn_pipeline_log(p, "could not record action outcome for prediction %lld: %s", (long long)o->prediction_id,
                        dn_last_error());
    dn_metrics_action(p->metrics, o->kind, o->status);
    dn_pipeline_log(p, "action %s/%s for prediction %lld -> %s after %d attempt(s)%s%s", o->rule ? o->rule : "?",
                    o->kind ? o->kind : "?", (long long)o->prediction_id, o->status ? o->status : "?", o->attempts,
                    o->detail ? ": " : "", o->detail ? o->detail : "");
}

dn_status dn_pipeline_reload(dn_pipeline *p) {
    pthread_mutex_lock(&p->reload_mu);
    dn_gen *g = NULL;
    dn_rules *rules = NULL;
    dn_status rc = dn_gen_load(p->model_path, &g);
    if (!rc && p->good_class) rc = dn_policy_override_good(g->model, p->good_class, &g->policy);
    if (!rc && p->rules_path) rc = dn_rules_load(p->rules_path, &rules);
    if (!rc && p->actions) rc = dn_actions_set_rules(p->actions, rules);
    dn_rules_free(rules);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", dn_last_error());
        dn_gen_free(g);
        dn_metrics_reload(p->metrics, 0);
        dn_pipeline_log(p, "reload failed, keeping the current model and rules: %s", msg);
        pthread_mutex_unlock(&p->reload_mu);
        return dn_fail(rc, "reload: %s", msg);
    }
    dn_gen_slot_swap(&p->gens, g);
    dn_metrics_reload(p->metrics, 1);
    dn_metrics_expected(p->metrics, g->expected_escape, g->expected_false_reject);
    dn_metrics_ood_threshold(p->metrics, g->model->ood ? g->model->ood->threshold : NAN);
    dn_pipeline_log(p, "reloaded model %s sha256=%s%s", g->version, g->sha, p->rules_path ? " and rules" : "");
    pthread_mutex_unlock(&p->reload_mu);
    return DN_OK;
}

static char *dup_opt(const char *s, int *oom) {
    if (!s) return NULL;
    char *d = dn_strdup(s);
    if (!d) *oom = 1;
    return d;
}

/* Copies and checks the config (no files opened yet). */
static dn_status configure(dn_pipeline *p, const dn_pipeline_config *c) {
    int oom = 0;
    p->model_path = dup_opt(c->model_path, &oom);
    p->db_url = dup_opt(c->db_url ? c->db_url : "sqlite:defectnet.db", &oom);
    p->rules_path = dup_opt(c->rules_path, &oom);
    p->store_images = dup_opt(c->store_images, &oom);
    p->good_class = dup_opt(c->good_class, &oom);
    p->metrics = dn_metrics_new();
    if (oom || !p->metrics) return dn_fail(DN_ERR_NOMEM, "serve: out of memory");
    dn_drift_cfg dc;
    dn_status st = dn_drift_window_parse(c->drift_window ? c->drift_window : "500", &dc);
    if (st || (st = dn_drift_new(&dc, &p->drift))) return st;
    if ((st = dn_review_policy_parse(c->review, "--review", &p->review))) return st;
    if (c->review_agree) {
        if (c->review_agree < 1 || c->review_agree > 9) return dn_fail(DN_ERR_ARG, "--review-agree: expected 1..9");
        p->review.agree = c->review_agree;
    }
    p->nworkers = c->workers > 0 ? c->workers : dn_num_cpus();
    if (p->nworkers > 256) p->nworkers = 256;
    p->qcap = c->queue > 0 ? c->queue : 4 * p->nworkers;
    p->session_threads = c->session_threads > 0 ? c->session_threads : 1;
    p->batch = c->batch > 0 ? (c->batch < DN_SERVE_MAX_BATCH ? c->batch : DN_SERVE_MAX_BATCH) : 4;
    p->dry_run = c->dry_run;
    p->quiet = c->quiet;
    if (p->store_images) {
        struct stat st;
        if (stat(p->store_images, &st) || !S_ISDIR(st.st_mode))
            return dn_fail(DN_ERR_IO, "%s: --store-images is not a directory", p->store_images);
    }
    return DN_OK;
}

dn_status dn_pipeline_open(const dn_pipeline_config *c, dn_pipeline **out) {
    *out = NULL;
    if (!c->model_path) return dn_fail(DN_ERR_ARG, "serve: --model is required");
    dn_pipeline *p = dn_calloc(1, sizeof *p);
    if (!p) return DN_ERR_NOMEM;
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->reload_mu, NULL);
    pthread_cond_init(&p->qcond, NULL);
    pthread_cond_init(&p->space, NULL);
    pthread_cond_init(&p->donecond, NULL);
    dn_status rc;
    if ((rc = configure(p, c))) goto fail;
    dn_gen *g = NULL;
    if ((rc = dn_gen_load(p->model_path, &g))) goto fail;
    if (p->good_class && (rc = dn_policy_override_good(g->model, p->good_class, &g->policy))) {
        char msg[600]; /* a copy: dn_fail rewrites the message buffer it would read from */
        snprintf(msg, sizeof msg, "%s", dn_last_error());
        dn_gen_free(g);
        rc = dn_fail(rc, "--good-class: %s", msg);
        goto fail;
    }
    dn_gen_slot_init(&p->gens, g);
    p->gens_init = 1;
    if (p->metrics) dn_metrics_expected(p->metrics, g->expected_escape, g->expected_false_reject);
    if (p->metrics) dn_metrics_ood_threshold(p->metrics, g->model->ood ? g->model->ood->threshold : NAN);
    if (c->shadow_model && (rc = dn_shadow_open(c->shadow_model, &p->shadow))) goto fail;
    if ((rc = dn_store_open(p->db_url, &p->store))) goto fail;
    if (p->shadow && (rc = dn_shadow_start(p->shadow, p->store, 0, shadow_log, p))) goto fail;
    if (p->rules_path) {
        dn_rules *rules = NULL;
        if ((rc = dn_rules_load(p->rules_path, &rules))) goto fail;
        /* the rules file's "review" policy, read at start (--review wins) */
        if (!c->review && rules->review) rc = dn_review_policy_parse(rules->review, p->rules_path, &p->review);
        if (!rc && c->review_agree) p->review.agree = c->review_agree;
        if (!rc) rc = dn_actions_new(rules, p->dry_run, outcome_cb, p, &p->actions);
        dn_rules_free(rules);
        if (rc) goto fail;
    }
    if ((rc = dn_review_policy_check(&p->review, g->model, c->review || !p->rules_path ? "--review" : p->rules_path)))
        goto fail;
    p->workers = dn_calloc((size_t)p->nworkers, sizeof *p->workers);
    if (!p->workers) { rc = DN_ERR_NOMEM; goto fail; }
    for (int i = 0; i < p->nworkers; i++) {
        p->workers[i].p = p;
        if (pthread_create(&p->workers[i].th, NULL, dn_pipeline_worker_main, &p->workers[i])) {
            rc = dn_fail(DN_ERR_NOMEM, "serve: cannot start worker thread");
            goto fail;
        }
        p->nstarted++;
    }
    *out = p;
    return DN_OK;
fail:;
    char keep[1024];
    snprintf(keep, sizeof keep, "%s", dn_last_error());
    dn_pipeline_close(p);
    return dn_fail(rc, "%s", keep);
}

void dn_pipeline_drain(dn_pipeline *p) {
    if (!p || p->drained) return;
    pthread_mutex_lock(&p->mu);
    p->stopping_workers = 1;
    pthread_cond_broadcast(&p->qcond);
    pthread_cond_broadcast(&p->space);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nstarted; i++) pthread_join(p->workers[i].th, NULL);
    p->drained = 1;
}

void dn_pipeline_close(dn_pipeline *p) {
    if (!p) return;
    dn_pipeline_drain(p);
    dn_shadow_stop(p->shadow); /* classifies what is queued while the store is open */
    /* actions finish or fail (bounded, inside dn_actions_free); outcomes still reach the store */
    dn_actions_free(p->actions);
    dn_store_close(p->store);
    if (p->gens_init) dn_gen_slot_destroy(&p->gens);
    dn_metrics_free(p->metrics);
    dn_shadow_free(p->shadow);
    dn_review_policy_free(&p->review);
    dn_drift_free(p->drift);
    free(p->workers);
    free(p->model_path);
    free(p->db_url);
    free(p->rules_path);
    free(p->store_images);
    free(p->good_class);
    pthread_cond_destroy(&p->qcond);
    pthread_cond_destroy(&p->space);
    pthread_cond_destroy(&p->donecond);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->reload_mu);
    free(p);
}
