/* Action executor: evaluates rules against predictions and runs the fired actions on
 * worker threads, one bounded queue, thread and transport (transport.h: command,
 * webhook, MQTT, one file each) per distinct target, so a slow or dead target only
 * delays its own queue. Retries with backoff, dry-run and outcome reporting are here;
 * one delivery attempt is the transport's.
 *
 * Concurrency
 *  - a->mu guards the current rules, the per-rule history (N of last M, rate windows,
 *    cooldowns) and the worker lists. dn_actions_submit holds it while evaluating and
 *    enqueueing (both cheap); it never waits on a target, and reports "queue full"
 *    outcomes only after releasing it.
 *  - Each worker has its own mutex/condvar guarding its ring queue. Enqueueing never
 *    blocks: a full queue yields an immediate "failed" outcome ("queue full").
 *  - Outcome callbacks are serialised by a->cb_mu.
 *  - A reload keeps the workers of targets still in use; the others are retired (they
 *    drain their queue and exit; joined at the next reload or at free). Since enqueueing
 *    happens under a->mu, no job reaches a retired worker. Each job holds a reference to
 *    the rules object it was fired from, so in-flight actions finish with the old rules.
 *  - Worker threads start with every signal blocked (SIGPIPE from a command that does
 *    not read its stdin becomes EPIPE; SIGHUP/SIGTERM stay with the service's threads).
 *  - A worker's transport is used by that worker's thread only, and closed by it when it
 *    exits (its MQTT session / keep-alive connection closes with it). */
#include "serve/actions.h"
#include "serve/rules.h"
#include "serve/transport.h"
#include "core/core.h"
#include "core/json.h"
#include <curl/curl.h>
#include <mosquitto.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DN_ACTIONS_MAX_WORKERS 256
#define DN_ACTIONS_MAX_LINES 4096   /* per-rule history entries (distinct lines) before eviction */
#define DN_ACTIONS_DETAIL 512

/* ------------------------------------------------------------ events and jobs */

typedef struct ev_copy {
    atomic_int refs;
    dn_pred_event ev;      /* strings below are owned copies */
    char *line, *station, *camera, *part, *cls, *json;
} ev_copy;

static void ev_release(ev_copy *e) {
    if (!e || atomic_fetch_sub(&e->refs, 1) != 1) return;
    free(e->line); free(e->station); free(e->camera); free(e->part); free(e->cls); free(e->json);
    free(e);
}

static char *dup_or_null(const char *s, int *oom) {
    if (!s) return NULL;
    char *d = dn_strdup(s);
    if (!d) *oom = 1;
    return d;
}

static ev_copy *ev_copy_new(const dn_pred_event *src, double t) {
    ev_copy *e = dn_calloc(1, sizeof *e);
    if (!e) return NULL;
    atomic_init(&e->refs, 1);
    int oom = 0;
    e->line = dup_or_null(src->line, &oom);
    e->station = dup_or_null(src->station, &oom);
    e->camera = dup_or_null(src->camera, &oom);
    e->part = dup_or_null(src->part, &oom);
    e->cls = dup_or_null(src->cls, &oom);
    if (src->json) e->json = dup_or_null(src->json, &oom);
    else { /* callers should pass the full prediction; this keeps actions useful without it */
        dn_sb b = {0};
        dn_sb_printf(&b, "{\"id\":%lld,\"time\":%.3f,\"class\":", (long long)src->id, t);
        dn_sb_json_str(&b, src->cls ? src->cls : "");
        dn_sb_printf(&b, ",\"confidence\":%.6g,\"uncertain\":%s", (double)src->confidence,
                     src->uncertain ? "true" : "false");
        const char *names[4] = {"line", "station", "camera", "part"};
        const char *vals[4] = {src->line, src->station, src->camera, src->part};
        for (int i = 0; i < 4; i++)
            if (vals[i]) { dn_sb_printf(&b, ",\"%s\":", names[i]); dn_sb_json_str(&b, vals[i]); }
        dn_sb_puts(&b, "}");
        if (b.oom) { dn_sb_free(&b); oom = 1; }
        else e->json = b.s;
    }
    e->ev = *src;
    e->ev.time = t;
    e->ev.line = e->line; e->ev.station = e->station; e->ev.camera = e->camera;
    e->ev.part = e->part; e->ev.cls = e->cls; e->ev.json = e->json;
    if (oom) { ev_release(e); return NULL; }
    return e;
}

typedef struct job {
    ev_copy *ev;
    dn_rules *rules;          /* reference held for the job's lifetime */
    const dn_rule *rule;      /* inside rules */
    const dn_action_def *act; /* inside rules */
} job;

/* ------------------------------------------------------------ workers */

typedef struct worker {
    struct dn_actions *owner;
    char *key;
    dn_act_kind kind;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job **q;
    int cap, head, count;
    int done;                 /* thread has exited its loop (guarded by mu) */
    int retire;               /* no rule uses this target any more: drain and exit (guarded by mu) */
    dn_transport *tr;         /* used and closed by the worker's thread only */
} worker;

typedef struct line_hist {
    char *line;               /* "" for predictions without a line */
    uint8_t *ring;            /* n of last m: 1 = matched */
    int pos, filled, count;
    double *ts;               /* rate: ring of the last rate_keep matching times */
    int ts_head, ts_n;
    int has_fired;            /* cooldown_per_line */
    double last_fire;
    uint64_t used;            /* LRU stamp for eviction */
} line_hist;

typedef struct rule_state {
    const dn_rule *rule;
    line_hist *h;
    int nh;
    line_hist global;         /* rate window when !rate_per_line */
    int has_fired;
    double last_fire;
    worker **workers;         /* one per action */
} rule_state;

struct dn_actions {
    pthread_mutex_t mu;
    dn_rules *rules;
    rule_state *st;
    int nst;
    uint64_t tick;
    worker **workers;         /* targets of the current rules (and not yet retired) */
    int nworkers;
    worker **retired;         /* targets dropped by a reload: draining, joined once done */
    int nretired;
    int dry_run;
    dn_outcome_fn cb;
    void *ctx;
    pthread_mutex_t cb_mu;
    atomic_size_t pending;
    atomic_int stopping;
    _Atomic double stop_deadline;
};

static void report(dn_actions *a, const job *j, const char *target, const char *status, int attempts,
                   const char *detail) {
    dn_action_outcome o = {
        .prediction_id = j->ev->ev.id, .rule = j->rule->name, .kind = j->act->kind_name,
        .target = target ? target : j->act->target, .status = status, .attempts = attempts,
        .detail = detail, .time = dn_wall_now(),
    };
    if (!a->cb) return;
    pthread_mutex_lock(&a->cb_mu);
    a->cb(a->ctx, &o);
    pthread_mutex_unlock(&a->cb_mu);
}

static void job_free(job *j) {
    if (!j) return;
    ev_release(j->ev);
    dn_rules_free(j->rules);
    free(j);
}

/* Sleep up to secs on the worker's condvar; returns early when the executor stops. */
static void worker_sleep(worker *w, double secs) {
    double until = dn_now() + secs;
    pthread_mutex_lock(&w->mu);
    while (!atomic_load(&w->owner->stopping)) {
        double left = until - dn_now();
        if (left <= 0) break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double t = ts.tv_sec + ts.tv_nsec * 1e-9 + left;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    }
    pthread_mutex_unlock(&w->mu);
}

static int past_stop_deadline(const dn_actions *a) {
    return atomic_load(&a->stopping) && dn_now() > atomic_load(&a->stop_deadline);
}

/* ------------------------------------------------------------ job loop */

static int stop_now(void *ctx) { return past_stop_deadline(ctx); }

static void run_job(worker *w, job *j) {
    dn_actions *a = w->owner;
    const dn_action_def *act = j->act;
    char detail[2048], last[DN_ACTIONS_DETAIL] = ""; /* detail: room for last + context */
    char topic[1024] = "", target[1200];
    const char *tgt = NULL;
    if (act->kind == DN_ACT_MQTT) {
        dn_rule_expand_topic(act->topic, j->rule, &j->ev->ev, topic, sizeof topic);
        snprintf(target, sizeof target, "mqtt://%s:%d %s", act->host, act->port, topic);
        tgt = target;
    }
    dn_action_call call = {act, j->rule->name, &j->ev->ev, act->kind == DN_ACT_MQTT ? topic : NULL, stop_now, a};
    if (a->dry_run) {
        w->tr->describe(&call, detail, sizeof detail);
        report(a, j, tgt, "dry-run", 0, detail);
        return;
    }
    double backoff = act->backoff_s;
    int attempts = 0;
    for (;;) {
        if (past_stop_deadline(a)) {
            if (attempts) snprintf(detail, sizeof detail, "shutdown after %d attempts: %s", attempts, last);
            else snprintf(detail, sizeof detail, "shutdown before the action could run");
            report(a, j, tgt, "failed", attempts, detail);
            return;
        }
        attempts++;
        int ok = w->tr->send(w->tr, &call, last, sizeof last);
        if (ok) { report(a, j, tgt, "ok", attempts, last); return; }
        if (attempts > act->retries) {
            snprintf(detail, sizeof detail, "%s (after %d attempt%s)", last, attempts, attempts > 1 ? "s" : "");
            report(a, j, tgt, "failed", attempts, detail);
            return;
        }
        if (atomic_load(&a->stopping)) { /* no more backoff waits while shutting down */
            snprintf(detail, sizeof detail, "shutdown after %d attempt%s: %s", attempts, attempts > 1 ? "s" : "", last);
            report(a, j, tgt, "failed", attempts, detail);
            return;
        }
        worker_sleep(w, backoff);
        backoff *= 2;
        if (backoff > act->backoff_max_s) backoff = act->backoff_max_s;
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    dn_actions *a = w->owner;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (w->count == 0 && !w->retire && !atomic_load(&a->stopping)) pthread_cond_wait(&w->cv, &w->mu);
        if (w->count == 0) {
            w->done = 1;
            pthread_mutex_unlock(&w->mu);
            break;
        }
        job *j = w->q[w->head];
        w->q[w->head] = NULL;
        w->head = (w->head + 1) % w->cap;
        w->count--;
        pthread_mutex_unlock(&w->mu);
        run_job(w, j);
        job_free(j);
        atomic_fetch_sub(&a->pending, 1);
    }
    w->tr->close(w->tr);
    w->tr = NULL;
    return NULL;
}

static void worker_free(worker *w) {
    if (!w) return;
    if (w->tr) w->tr->close(w->tr); /* its thread never ran */
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->q);
    free(w->key);
    free(w);
}

/* Creates and starts a worker thread (all signals blocked in it). a->mu held. */
static worker *worker_start(dn_actions *a, const dn_action_def *act, int cap) {
    if (a->nworkers >= DN_ACTIONS_MAX_WORKERS) {
        dn_fail(DN_ERR_ARG, "actions: too many distinct action targets (limit %d)", DN_ACTIONS_MAX_WORKERS);
        return NULL;
    }
    worker *w = dn_calloc(1, sizeof *w);
    if (!w) return NULL;
    w->owner = a;
    w->kind = act->kind;
    w->cap = cap;
    w->q = dn_calloc((size_t)cap, sizeof *w->q);
    w->key = dn_strdup(act->key);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    w->tr = act->kind == DN_ACT_COMMAND ? dn_transport_command_new()
          : act->kind == DN_ACT_WEBHOOK ? dn_transport_webhook_new() : dn_transport_mqtt_new();
    if (!w->q || !w->key || !w->tr) { worker_free(w); return NULL; }
    worker **nw = dn_realloc(a->workers, (size_t)(a->nworkers + 1) * sizeof *nw);
    if (!nw) { worker_free(w); dn_fail(DN_ERR_NOMEM, "actions: out of memory"); return NULL; }
    a->workers = nw;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&w->th, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        worker_free(w);
        dn_fail(DN_ERR_NOMEM, "actions: cannot start a worker thread: %s", strerror(rc));
        return NULL;
    }
    a->workers[a->nworkers++] = w;
    return w;
}

/* ------------------------------------------------------------ history */

static void hist_clear(line_hist *h) {
    free(h->line); free(h->ring); free(h->ts);
    memset(h, 0, sizeof *h);
}

static void state_clear(rule_state *s) {
    for (int i = 0; i < s->nh; i++) hist_clear(&s->h[i]);
    free(s->h);
    hist_clear(&s->global);
    free(s->workers);
    memset(s, 0, sizeof *s);
}

static int hist_init(line_hist *h, const dn_rule *r, const char *line) {
    memset(h, 0, sizeof *h);
    h->line = dn_strdup(line);
    if (r->m) h->ring = dn_calloc((size_t)r->m, 1);
    if (r->rate_above >= 0) h->ts = dn_calloc((size_t)r->rate_keep, sizeof *h->ts);
    if (!h->line || (r->m && !h->ring) || (r->rate_above >= 0 && !h->ts)) { hist_clear(h); return -1; }
    return 0;
}

/* History of rule s for line (NULL -> ""); evicts the least recently used line when full. */
static line_hist *hist_get(dn_actions *a, rule_state *s, const char *line) {
    if (!line) line = "";
    for (int i = 0; i < s->nh; i++)
        if (!strcmp(s->h[i].line, line)) { s->h[i].used = ++a->tick; return &s->h[i]; }
    int slot;
    if (s->nh < DN_ACTIONS_MAX_LINES) {
        line_hist *nh = dn_realloc(s->h, (size_t)(s->nh + 1) * sizeof *nh);
        if (!nh) return NULL;
        s->h = nh;
        slot = s->nh;
        if (hist_init(&s->h[slot], s->rule, line)) return NULL;
        s->nh++;
    } else {
        slot = 0;
        for (int i = 1; i < s->nh; i++)
            if (s->h[i].used < s->h[slot].used) slot = i;
        line_hist fresh;
        if (hist_init(&fresh, s->rule, line)) return NULL;
        hist_clear(&s->h[slot]);
        s->h[slot] = fresh;
    }
    s->h[slot].used = ++a->tick;
    return &s->h[slot];
}

static void rate_push(line_hist *h, int keep, double t) {
    if (h->ts_n == keep) { h->ts_head = (h->ts_head + 1) % keep; h->ts_n--; }
    h->ts[(h->ts_head + h->ts_n) % keep] = t;
    h->ts_n++;
}

static void rate_prune(line_hist *h, int keep, double t, double window) {
    while (h->ts_n && h->ts[h->ts_head] <= t - window) { h->ts_head = (h->ts_head + 1) % keep; h->ts_n--; }
}

/* Builds states for rules r, carrying history over from old states of rules with the same
 * name and the same history parameters. a->mu held. */
static dn_status build_states(dn_actions *a, dn_rules *r, rule_state **out) {
    dn_status code = DN_ERR_NOMEM;
    rule_state *st = dn_calloc(r->n ? (size_t)r->n : 1, sizeof *st);
    if (!st) return DN_ERR_NOMEM;
    for (int i = 0; i < r->n; i++) {
        const dn_rule *ru = &r->rules[i];
        rule_state *s = &st[i];
        s->rule = ru;
        if (!(s->workers = dn_calloc((size_t)ru->nactions, sizeof *s->workers))) goto nomem;
        for (int k = 0; k < ru->nactions; k++) {
            const dn_action_def *act = &ru->actions[k];
            worker *w = NULL;
            for (int q = 0; q < a->nworkers && !w; q++)
                if (!strcmp(a->workers[q]->key, act->key)) w = a->workers[q];
            if (!w && !(w = worker_start(a, act, r->queue_capacity))) {
                code = DN_ERR_ARG; /* worker_start recorded the message */
                goto fail;
            }
            s->workers[k] = w;
        }
        if (ru->rate_above >= 0 && !ru->rate_per_line && hist_init(&s->global, ru, "")) goto nomem;
    }
    /* only once nothing can fail any more: the old states lose what they hand over */
    for (int i = 0; i < r->n; i++) {
        const dn_rule *ru = &r->rules[i];
        rule_state *s = &st[i];
        for (int o = 0; o < a->nst; o++) {
            rule_state *os = &a->st[o];
            const dn_rule *or_ = os->rule;
            if (strcmp(or_->name, ru->name) || or_->n != ru->n || or_->m != ru->m ||
                or_->rate_above != ru->rate_above || or_->rate_window_s != ru->rate_window_s ||
                or_->rate_per_line != ru->rate_per_line || or_->cooldown_per_line != ru->cooldown_per_line)
                continue;
            /* same history parameters: move the history over */
            hist_clear(&s->global);
            s->global = os->global;
            memset(&os->global, 0, sizeof os->global);
            s->h = os->h; s->nh = os->nh;
            os->h = NULL; os->nh = 0;
            s->has_fired = os->has_fired;
            s->last_fire = os->last_fire;
            break;
        }
    }
    *out = st;
    return DN_OK;
nomem:
    code = dn_fail(DN_ERR_NOMEM, "actions: out of memory");
fail:
    for (int i = 0; i < r->n; i++) state_clear(&st[i]);
    free(st);
    return code;
}

/* ------------------------------------------------------------ public API */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_init_ok;
static void global_init(void) {
    g_init_ok = curl_global_init(CURL_GLOBAL_ALL) == CURLE_OK && mosquitto_lib_init() == MOSQ_ERR_SUCCESS;
}

/* Workers no rule of the current states uses are told to drain their queue and exit (their
 * MQTT connection / keep-alive connection closes with them). a->mu held; submit enqueues
 * under a->mu too, so nothing can be queued to a worker after it left a->workers. */
static void retire_unused(dn_actions *a) {
    for (int q = 0; q < a->nworkers;) {
        worker *w = a->workers[q];
        int used = 0;
        for (int i = 0; i < a->nst && !used; i++)
            for (int k = 0; k < a->st[i].rule->nactions && !used; k++) used = a->st[i].workers[k] == w;
        if (used) { q++; continue; }
        worker **nr = dn_realloc(a->retired, (size_t)(a->nretired + 1) * sizeof *nr);
        if (!nr) { q++; continue; } /* keep it active; retried at the next reload */
        a->retired = nr;
        a->retired[a->nretired++] = w;
        a->workers[q] = a->workers[--a->nworkers];
        pthread_mutex_lock(&w->mu);
        w->retire = 1;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
    }
}

/* Joins and frees retired workers whose thread has left its loop (all = 1: every one,
 * waiting for them; only at shutdown). a->mu held or executor stopping. */
static void reap_retired(dn_actions *a, int all) {
    for (int q = 0; q < a->nretired;) {
        worker *w = a->retired[q];
        pthread_mutex_lock(&w->mu);
        int done = w->done;
        pthread_mutex_unlock(&w->mu);
        if (!done && !all) { q++; continue; }
        pthread_join(w->th, NULL); /* after done: only closing its connections is left */
        worker_free(w);
        a->retired[q] = a->retired[--a->nretired];
    }
}

dn_status dn_actions_set_rules(dn_actions *a, const dn_rules *rules) {
    if (!a || !rules) return dn_fail(DN_ERR_ARG, "actions: NULL rules");
    dn_rules *r = dn_rules_retain(rules);
    pthread_mutex_lock(&a->mu);
    rule_state *st = NULL;
    dn_status s = build_states(a, r, &st);
    if (s) {
        pthread_mutex_unlock(&a->mu);
        dn_rules_free(r);
        return dn_fail_prefix(s, "%s", rules->name);
    }
    for (int i = 0; i < a->nst; i++) state_clear(&a->st[i]);
    free(a->st);
    dn_rules *old = a->rules;
    a->st = st;
    a->nst = r->n;
    a->rules = r;
    retire_unused(a);
    reap_retired(a, 0);
    pthread_mutex_unlock(&a->mu);
    dn_rules_free(old);
    return DN_OK;
}

dn_status dn_actions_new(const dn_rules *rules, int dry_run, dn_outcome_fn cb, void *ctx, dn_actions **out) {
    *out = NULL;
    if (!rules) return dn_fail(DN_ERR_ARG, "actions: NULL rules");
    pthread_once(&g_once, global_init);
    if (!g_init_ok) return dn_fail(DN_ERR_NET, "actions: libcurl/libmosquitto initialisation failed");
    dn_actions *a = dn_calloc(1, sizeof *a);
    if (!a) return DN_ERR_NOMEM;
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->cb_mu, NULL);
    atomic_init(&a->pending, 0);
    atomic_init(&a->stopping, 0);
    atomic_init(&a->stop_deadline, 0.0);
    a->dry_run = dry_run;
    a->cb = cb;
    a->ctx = ctx;
    dn_status st = dn_actions_set_rules(a, rules);
    if (st) { dn_actions_free(a); return st; }
    *out = a;
    return DN_OK;
}

size_t dn_actions_pending(const dn_actions *a) { return a ? atomic_load(&a->pending) : 0; }

typedef struct { worker *w; const dn_rule *rule; const dn_action_def *act; } fired;

int dn_actions_submit(dn_actions *a, const dn_pred_event *ev) {
    if (!a || !ev || atomic_load(&a->stopping)) return 0;
    double t = ev->time > 0 ? ev->time : dn_wall_now();
    fired stackbuf[32], *f = stackbuf;
    int nf = 0, capf = 32;
    dn_rules *rules;
    pthread_mutex_lock(&a->mu);
    rules = dn_rules_retain(a->rules);
    for (int i = 0; i < a->nst; i++) {
        rule_state *s = &a->st[i];
        const dn_rule *r = s->rule;
        if (!r->enabled) continue;
        int base = dn_rule_match_event(r, ev), ok = base;
        line_hist *h = NULL;
        int per_line_cool = r->cooldown_s > 0 && r->cooldown_per_line;
        if (r->m || (r->rate_above >= 0 && r->rate_per_line) || per_line_cool) {
            if (!(h = hist_get(a, s, ev->line))) continue; /* out of memory: rule cannot be judged */
        }
        if (r->m) {
            if (h->filled == r->m) h->count -= h->ring[h->pos];
            else h->filled++;
            h->ring[h->pos] = (uint8_t)base;
            h->count += base;
            h->pos = (h->pos + 1) % r->m;
            ok = ok && h->count >= r->n;
        }
        if (r->rate_above >= 0) {
            line_hist *rh = r->rate_per_line ? h : &s->global;
            if (base) rate_push(rh, r->rate_keep, t);
            rate_prune(rh, r->rate_keep, t, r->rate_window_s);
            ok = ok && rh->ts_n >= r->rate_keep;
        }
        if (!ok) continue;
        int *has_fired = per_line_cool ? &h->has_fired : &s->has_fired;
        double *last_fire = per_line_cool ? &h->last_fire : &s->last_fire;
        if (r->cooldown_s > 0 && *has_fired && t - *last_fire < r->cooldown_s) continue;
        *has_fired = 1;
        *last_fire = t;
        for (int k = 0; k < r->nactions; k++) {
            if (nf == capf) {
                fired *nfb = dn_malloc((size_t)capf * 2 * sizeof *nfb);
                if (!nfb) break;
                memcpy(nfb, f, (size_t)nf * sizeof *f);
                if (f != stackbuf) free(f);
                f = nfb;
                capf *= 2;
            }
            f[nf++] = (fired){s->workers[k], r, &r->actions[k]};
        }
    }
    /* enqueue under a->mu (cheap, never waits on a target) so a reload cannot retire a
     * worker between choosing it and queueing to it; outcomes are reported after unlocking */
    ev_copy *ec = nf ? ev_copy_new(ev, t) : NULL;
    job *rejected_stack[32], **rejected = nf <= 32 ? rejected_stack : dn_malloc((size_t)nf * sizeof *rejected);
    int nrej = 0, oom_unreported = 0;
    for (int i = 0; i < nf; i++) {
        job *j = ec ? dn_calloc(1, sizeof *j) : NULL;
        if (!j) { oom_unreported++; continue; }
        atomic_fetch_add(&ec->refs, 1);
        j->ev = ec;
        j->rules = dn_rules_retain(rules);
        j->rule = f[i].rule;
        j->act = f[i].act;
        worker *w = f[i].w;
        int queued = 0;
        pthread_mutex_lock(&w->mu);
        if (w->count < w->cap && !w->done) {
            w->q[(w->head + w->count) % w->cap] = j;
            w->count++;
            atomic_fetch_add(&a->pending, 1);
            queued = 1;
            pthread_cond_signal(&w->cv);
        }
        pthread_mutex_unlock(&w->mu);
        if (!queued) {
            if (rejected) rejected[nrej++] = j;
            else { job_free(j); oom_unreported++; }
        }
    }
    pthread_mutex_unlock(&a->mu);
    for (int i = 0; i < nrej; i++) {
        report(a, rejected[i], NULL, "failed", 0, "queue full");
        job_free(rejected[i]);
    }
    if (oom_unreported) {
        /* cannot even record the event: one outcome against a minimal stand-in */
        job tmp = {.rule = f[0].rule, .act = f[0].act};
        ev_copy stand = {.ev = *ev};
        tmp.ev = &stand;
        char d[64];
        snprintf(d, sizeof d, "out of memory (%d action%s not run)", oom_unreported, oom_unreported > 1 ? "s" : "");
        report(a, &tmp, NULL, "failed", 0, d);
    }
    if (rejected != rejected_stack) free(rejected);
    ev_release(ec);
    if (f != stackbuf) free(f);
    dn_rules_free(rules);
    return nf;
}

void dn_actions_free(dn_actions *a) {
    if (!a) return;
    pthread_mutex_lock(&a->mu);
    double drain = a->rules ? a->rules->drain_s : 0;
    pthread_mutex_unlock(&a->mu);
    atomic_store(&a->stop_deadline, dn_now() + drain);
    atomic_store(&a->stopping, 1);
    pthread_mutex_lock(&a->mu);
    for (int i = 0; i < a->nworkers + a->nretired; i++) {
        worker *w = i < a->nworkers ? a->workers[i] : a->retired[i - a->nworkers];
        pthread_mutex_lock(&w->mu);
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
    }
    pthread_mutex_unlock(&a->mu);
    /* workers drain their queues (no backoff waits; after the drain deadline every
     * remaining job is reported failed without running) and exit */
    for (int i = 0; i < a->nworkers; i++) pthread_join(a->workers[i]->th, NULL);
    for (int i = 0; i < a->nworkers; i++) worker_free(a->workers[i]);
    free(a->workers);
    reap_retired(a, 1);
    free(a->retired);
    for (int i = 0; i < a->nst; i++) state_clear(&a->st[i]);
    free(a->st);
    dn_rules_free(a->rules);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->cb_mu);
    free(a);
}
