/* Model generations and the current-generation slot (see generation.h). */
#include "serve/generation.h"
#include "core/core.h"
#include "core/sha256.h"
#include "nn/model.h"
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dn_gen_give_back_memory(void) {
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

void dn_gen_free(dn_gen *g) {
    if (!g) return;
    dn_plan_release(g->plan);
    pthread_mutex_destroy(&g->plan_mu);
    dn_model_free(g->model);
    free(g);
    dn_gen_give_back_memory();
}

dn_status dn_gen_load(const char *model_path, dn_gen **out) {
    *out = NULL;
    dn_gen *g = dn_calloc(1, sizeof *g);
    if (!g) return DN_ERR_NOMEM;
    pthread_mutex_init(&g->plan_mu, NULL);
    dn_status rc = dn_model_load(model_path, &g->model);
    if (rc) { dn_gen_free(g); return rc; }
    if (dn_model_num_classes(g->model) < 1) {
        dn_gen_free(g);
        return dn_fail(DN_ERR_FORMAT, "%s: model has no classification head", model_path);
    }
    if ((rc = dn_model_policy(g->model, &g->policy))) {
        dn_gen_free(g);
        return dn_fail(rc, "%s: %s", model_path, dn_last_error());
    }
    dn_model_expected_rates(g->model, &g->expected_escape, &g->expected_false_reject);
    if (g->model->sha256[0]) snprintf(g->sha, sizeof g->sha, "%s", g->model->sha256);
    else if ((rc = dn_sha256_file(model_path, g->sha))) { dn_gen_free(g); return rc; }
    const char *v = dn_meta_get(&g->model->meta, "version");
    const char *base = strrchr(model_path, '/');
    base = base ? base + 1 : model_path;
    if (v) snprintf(g->version, sizeof g->version, "%.80s (%.60s)", v, base);
    else snprintf(g->version, sizeof g->version, "%.150s", base);
    g->refs = 1;
    *out = g;
    return DN_OK;
}

dn_status dn_gen_session(dn_gen *g, int max_batch, int threads, dn_session **out) {
    *out = NULL;
    dn_status rc;
    pthread_mutex_lock(&g->plan_mu);
    if (g->plan) {
        rc = dn_session_new_on_plan(g->plan, max_batch, threads, out);
    } else if (!(rc = dn_session_new(g->model, max_batch, threads, out))) {
        g->plan = dn_plan_retain(dn_session_plan(*out));
    }
    pthread_mutex_unlock(&g->plan_mu);
    if (rc) {
        dn_session_free(*out);
        *out = NULL;
    } else {
        dn_session_set_policy(*out, &g->policy); /* the served policy (--good-class), not only the model's */
    }
    return rc;
}

void dn_gen_slot_init(dn_gen_slot *s, dn_gen *first) {
    pthread_mutex_init(&s->mu, NULL);
    s->cur = first;
    s->serial = 0;
    if (first) first->serial = ++s->serial;
}

void dn_gen_slot_destroy(dn_gen_slot *s) {
    dn_gen_free(s->cur);
    s->cur = NULL;
    pthread_mutex_destroy(&s->mu);
}

dn_gen *dn_gen_acquire(dn_gen_slot *s) {
    pthread_mutex_lock(&s->mu);
    dn_gen *g = s->cur;
    g->refs++;
    pthread_mutex_unlock(&s->mu);
    return g;
}

void dn_gen_release(dn_gen_slot *s, dn_gen *g) {
    if (!g) return;
    pthread_mutex_lock(&s->mu);
    int last = --g->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (last) dn_gen_free(g);
}

void dn_gen_slot_swap(dn_gen_slot *s, dn_gen *g) {
    pthread_mutex_lock(&s->mu);
    dn_gen *old = s->cur;
    g->serial = ++s->serial;
    s->cur = g;
    pthread_mutex_unlock(&s->mu);
    dn_gen_release(s, old);
}
