/* The pipeline's bounded job queue (submitters reserve a slot, push, wait or get a
 * callback) and its worker threads: take what is waiting up to a batch, decode and
 * preprocess, one batched forward, then each image to pipeline_commit.c. */
#include "serve/pipeline_int.h"

void dn_pipeline_queue(dn_pipeline *p, int *depth, int *capacity) {
    pthread_mutex_lock(&p->mu);
    *depth = p->qlen;
    pthread_mutex_unlock(&p->mu);
    *capacity = p->qcap;
}

/* Grad-CAM for prediction pr of the image at x (preprocessed, in the worker's session
 * input) when the pipeline wants one for its kind; best effort (logged). */
static void make_heatmap(worker *w, dn_gen *g, dn_job *j, const dn_prediction *pr, const float *x) {
    dn_pipeline *p = w->p;
    unsigned mask = atomic_load(&p->heat_mask), kind;
    if (!mask) return;
    if (pr->decision == DN_DECISION_UNKNOWN) kind = HEAT_UNKNOWN;
    else if (pr->uncertain || pr->decision == DN_DECISION_UNCERTAIN) kind = HEAT_UNCERTAIN;
    else kind = g->policy.good >= 0 && pr->cls == g->policy.good ? HEAT_GOOD : HEAT_DEFECT;
    if (!(mask & kind)) return;
    if (dn_gradcam_png(g->model, w->sess, x, 4, pr->cls, &j->heat_png, &j->heat_len, NULL, NULL))
        dn_pipeline_log(p, "heatmap not made: %s", dn_last_error());
}

/* (Re)creates the worker's session when the model generation changed. */
static int ensure_session(worker *w, dn_gen *g, char *msg, size_t mn) {
    if (w->sess && w->sess_serial == g->serial) return 0;
    if (w->sess) { /* the last session of a replaced generation takes its plan along */
        dn_session_free(w->sess);
        w->sess = NULL;
        dn_gen_give_back_memory();
    }
    free(w->probs);
    free(w->preds);
    int nc = dn_model_num_classes(g->model);
    w->probs = dn_malloc(sizeof(float) * (size_t)nc * (size_t)w->p->batch);
    w->preds = dn_malloc(sizeof(dn_prediction) * (size_t)w->p->batch);
    dn_status rc = DN_ERR_NOMEM;
    if (w->probs && w->preds) rc = dn_gen_session(g, w->p->batch, w->p->session_threads, &w->sess);
    if (rc) {
        snprintf(msg, mn, "inference session: %s", w->probs && w->preds ? dn_last_error() : "out of memory");
        return -1;
    }
    w->sess_serial = g->serial;
    return 0;
}

/* Runs up to p->batch jobs on a worker: decode + preprocess each, one batched
 * forward, then store/actions/answer each. Sets every job's code/body. */
static void run_batch(worker *w, dn_job **jobs, int n) {
    dn_pipeline *p = w->p;
    dn_gen *g = dn_gen_acquire(&p->gens);
    char msg[1200];
    int idx[DN_SERVE_MAX_BATCH], m = 0;
    if (ensure_session(w, g, msg, sizeof msg)) {
        for (int i = 0; i < n; i++) dn_job_fail(jobs[i], 500, msg);
        goto done;
    }
    const dn_preproc *pp = dn_model_preproc(g->model);
    int ih = 0, iw = 0;
    dn_session_input_size(w->sess, &ih, &iw);
    size_t per = (size_t)3 * (size_t)ih * (size_t)iw;
    float *x = dn_session_input(w->sess);
    for (int i = 0; i < n; i++) {
        dn_image img = {0};
        dn_status rc = dn_image_decode(jobs[i]->req.data, jobs[i]->req.len, "image", &img);
        if (!rc) rc = dn_preprocess(&img, pp, x + (size_t)m * per);
        dn_image_free(&img);
        if (rc) {
            snprintf(msg, sizeof msg, "%s", dn_last_error());
            dn_job_fail(jobs[i], rc == DN_ERR_NOMEM ? 413 : 400, msg);
            continue;
        }
        idx[m++] = i;
    }
    if (m && dn_session_classify_batch(w->sess, x, m, w->preds, w->probs)) {
        snprintf(msg, sizeof msg, "classification failed: %s", dn_last_error());
        for (int k = 0; k < m; k++) dn_job_fail(jobs[idx[k]], 500, msg);
        goto done;
    }
    int nc = dn_model_num_classes(g->model);
    for (int k = 0; k < m; k++) {
        int good = 0;
        if (g->policy.good_threshold > 0) /* the stored policy: reject unless confidently good */
            good = dn_policy_decide(&g->policy, dn_model_threshold(g->model), w->probs + (size_t)k * nc, nc, &w->preds[k]);
        else if (g->policy.good >= 0)
            good = w->preds[k].cls == g->policy.good && !w->preds[k].uncertain && w->preds[k].decision != DN_DECISION_UNKNOWN;
        jobs[idx[k]]->accepted_good = g->policy.good >= 0 ? good : -1;
        make_heatmap(w, g, jobs[idx[k]], &w->preds[k], x + (size_t)k * per);
        dn_pipeline_finish_job(w, g, jobs[idx[k]], &w->preds[k], w->probs + (size_t)k * nc,
                               dn_session_last_features(w->sess) + (size_t)k * g->model->feat_dim);
    }
done:
    dn_gen_release(&p->gens, g);
}

void *dn_pipeline_worker_main(void *arg) {
    worker *w = arg;
    dn_pipeline *p = w->p;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->qhead && !p->stopping_workers) pthread_cond_wait(&p->qcond, &p->mu);
        if (!p->qhead) { pthread_mutex_unlock(&p->mu); break; }
        /* take what is waiting, up to a batch: no waiting for more (latency first) */
        dn_job *jobs[DN_SERVE_MAX_BATCH];
        int n = 0;
        while (p->qhead && n < p->batch) {
            dn_job *j = p->qhead;
            p->qhead = j->next;
            if (!p->qhead) p->qtail = NULL;
            p->qlen--;
            jobs[n++] = j;
        }
        pthread_cond_broadcast(&p->space);
        pthread_mutex_unlock(&p->mu);
        run_batch(w, jobs, n);
        pthread_mutex_lock(&p->mu);
        for (int i = 0; i < n; i++) {
            dn_job *j = jobs[i];
            j->done = 1;
            /* After the callback the submitter may free j: do not touch it again. */
            if (j->done_fn) j->done_fn(j->done_ctx);
        }
        pthread_cond_broadcast(&p->donecond);
        pthread_mutex_unlock(&p->mu);
    }
    dn_session_free(w->sess);
    free(w->probs);
    free(w->preds);
    w->sess = NULL;
    w->probs = NULL;
    w->preds = NULL;
    return NULL;
}

dn_job *dn_job_new(const dn_classify_req *req, dn_job_done_fn done, void *ctx) {
    dn_job *j = dn_calloc(1, sizeof *j);
    if (!j) return NULL;
    j->req = *req;
    j->done_fn = done;
    j->done_ctx = ctx;
    return j;
}

void dn_job_free(dn_job *j) {
    if (!j) return;
    free(j->heat_png);
    free(j->body);
    free(j);
}

int dn_pipeline_reserve(dn_pipeline *p) {
    pthread_mutex_lock(&p->mu);
    int ok = p->qlen + p->qreserved < p->qcap && !p->stopping_workers;
    if (ok) p->qreserved++;
    pthread_mutex_unlock(&p->mu);
    return ok ? 0 : -1;
}

/* Queue a job into a reserved slot (p->mu held). */
static void push_locked(dn_pipeline *p, dn_job *j) {
    p->qreserved--;
    j->next = NULL;
    if (p->qtail) p->qtail->next = j;
    else p->qhead = j;
    p->qtail = j;
    p->qlen++;
    pthread_cond_signal(&p->qcond);
}

void dn_pipeline_push(dn_pipeline *p, dn_job *j) {
    pthread_mutex_lock(&p->mu);
    push_locked(p, j);
    pthread_mutex_unlock(&p->mu);
}

int dn_job_finished(dn_pipeline *p, const dn_job *j) {
    pthread_mutex_lock(&p->mu);
    int done = j->done;
    pthread_mutex_unlock(&p->mu);
    return done;
}

void dn_job_result(dn_job *j, dn_classify_res *res) {
    memset(res, 0, sizeof *res);
    res->http_code = j->code;
    res->id = j->id;
    snprintf(res->cls, sizeof res->cls, "%s", j->cls);
    res->json = j->body;
    j->body = NULL;
}

dn_status dn_pipeline_classify(dn_pipeline *p, const dn_classify_req *req, dn_classify_res *res) {
    memset(res, 0, sizeof *res);
    dn_job j = {0};
    j.req = *req;
    pthread_mutex_lock(&p->mu);
    while (p->qlen + p->qreserved >= p->qcap && !p->stopping_workers) pthread_cond_wait(&p->space, &p->mu);
    if (p->stopping_workers) {
        pthread_mutex_unlock(&p->mu);
        return dn_fail(DN_ERR_ARG, "server is shutting down");
    }
    p->qreserved++;
    push_locked(p, &j);
    while (!j.done) pthread_cond_wait(&p->donecond, &p->mu);
    pthread_mutex_unlock(&p->mu);
    dn_job_result(&j, res);
    return DN_OK;
}
