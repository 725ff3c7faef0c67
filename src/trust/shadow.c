/* Shadow model of `defectnet serve --shadow` (see shadow.h). */
#include "trust/shadow.h"
#include "core/core.h"
#include "core/json.h"
#include "serve/pipeline.h"
#include "serve/store_review.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct shjob {
    struct shjob *next;
    int64_t id;
    size_t len;
    uint8_t data[];
} shjob;

struct dn_shadow {
    dn_gen *g;
    dn_store *st;
    dn_shadow_log_fn log;
    void *log_ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    shjob *head, *tail;
    int qlen, cap;
    size_t qbytes;
    int started, stopping;
    pthread_t th;
    dn_session *sess; /* the shadow thread's */
    float *probs;
    atomic_long done, dropped, failed;
};

dn_status dn_shadow_open(const char *model_path, dn_shadow **out) {
    *out = NULL;
    dn_shadow *sh = dn_calloc(1, sizeof *sh);
    if (!sh) return dn_fail(DN_ERR_NOMEM, "--shadow: out of memory");
    dn_status rc = dn_gen_load(model_path, &sh->g);
    if (rc) {
        free(sh);
        return dn_fail_prefix(rc, "--shadow");
    }
    pthread_mutex_init(&sh->mu, NULL);
    pthread_cond_init(&sh->cv, NULL);
    *out = sh;
    return DN_OK;
}

const char *dn_shadow_version(const dn_shadow *sh) { return sh->g->version; }
const char *dn_shadow_sha256(const dn_shadow *sh) { return sh->g->sha; }

/* One image through the shadow model into the store (the shadow thread). */
static dn_status classify(dn_shadow *sh, const shjob *j) {
    dn_gen *g = sh->g;
    dn_status rc;
    if (!sh->sess) {
        int nc = dn_model_num_classes(g->model);
        if (!(sh->probs = dn_malloc(sizeof(float) * (size_t)nc))) return dn_fail(DN_ERR_NOMEM, "shadow: out of memory");
        if ((rc = dn_gen_session(g, 1, 1, &sh->sess))) return dn_fail_prefix(rc, "shadow session");
    }
    dn_image img = {0};
    rc = dn_image_decode(j->data, j->len, "image", &img);
    if (!rc) rc = dn_preprocess(&img, dn_model_preproc(g->model), dn_session_input(sh->sess));
    dn_image_free(&img);
    if (rc) return dn_fail_prefix(rc, "shadow");
    dn_prediction pr;
    if ((rc = dn_session_classify_batch(sh->sess, dn_session_input(sh->sess), 1, &pr, sh->probs)))
        return dn_fail_prefix(rc, "shadow");
    dn_sb sc = {0};
    dn_pipeline_scores_json(&sc, g, sh->probs);
    if (sc.oom) { dn_sb_free(&sc); return dn_fail(DN_ERR_NOMEM, "shadow: out of memory"); }
    dn_shadow_record r = {g->sha, g->version, dn_model_class_name(g->model, pr.cls), sc.s,
                          dn_decision_name(pr.decision), pr.confidence, dn_wall_now()};
    rc = dn_store_shadow_insert(sh->st, j->id, &r);
    dn_sb_free(&sc);
    return rc;
}

static void *shadow_main(void *arg) {
    dn_shadow *sh = arg;
    /* Linux: nice applies per thread; the live workers come first when the CPU is busy
     * (failure is harmless: the queue bound still protects them). */
    (void)!setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
    for (;;) {
        pthread_mutex_lock(&sh->mu);
        while (!sh->head && !sh->stopping) pthread_cond_wait(&sh->cv, &sh->mu);
        shjob *j = sh->head;
        if (!j) { pthread_mutex_unlock(&sh->mu); break; } /* stopping and drained */
        sh->head = j->next;
        if (!sh->head) sh->tail = NULL;
        sh->qlen--;
        sh->qbytes -= j->len;
        pthread_mutex_unlock(&sh->mu);
        if (classify(sh, j)) {
            atomic_fetch_add(&sh->failed, 1);
            if (sh->log) {
                char line[1300];
                snprintf(line, sizeof line, "shadow: prediction %lld: %s", (long long)j->id, dn_last_error());
                sh->log(sh->log_ctx, line);
            }
        } else {
            atomic_fetch_add(&sh->done, 1);
        }
        free(j);
    }
    dn_session_free(sh->sess);
    free(sh->probs);
    sh->sess = NULL;
    sh->probs = NULL;
    return NULL;
}

dn_status dn_shadow_start(dn_shadow *sh, dn_store *st, int cap, dn_shadow_log_fn log, void *log_ctx) {
    if (sh->started) return dn_fail(DN_ERR_ARG, "shadow: already started");
    sh->st = st;
    sh->cap = cap > 0 ? cap : DN_SHADOW_QUEUE;
    sh->log = log;
    sh->log_ctx = log_ctx;
    sh->stopping = 0;
    if (pthread_create(&sh->th, NULL, shadow_main, sh)) return dn_fail(DN_ERR_NOMEM, "shadow: cannot start its thread");
    sh->started = 1;
    return DN_OK;
}

int dn_shadow_submit(dn_shadow *sh, const uint8_t *data, size_t len, int64_t pred_id) {
    pthread_mutex_lock(&sh->mu);
    int full = !sh->started || sh->stopping || sh->qlen >= sh->cap || len > DN_SHADOW_BYTES - sh->qbytes;
    pthread_mutex_unlock(&sh->mu);
    shjob *j = full ? NULL : dn_malloc(sizeof *j + len);
    if (j) {
        j->next = NULL;
        j->id = pred_id;
        j->len = len;
        memcpy(j->data, data, len);
        pthread_mutex_lock(&sh->mu); /* checked again: other workers may have filled it meanwhile */
        if (sh->started && !sh->stopping && sh->qlen < sh->cap && len <= DN_SHADOW_BYTES - sh->qbytes) {
            if (sh->tail) sh->tail->next = j;
            else sh->head = j;
            sh->tail = j;
            sh->qlen++;
            sh->qbytes += len;
            pthread_cond_signal(&sh->cv);
            j = NULL;
            pthread_mutex_unlock(&sh->mu);
            return 0;
        }
        pthread_mutex_unlock(&sh->mu);
        free(j);
    }
    atomic_fetch_add(&sh->dropped, 1);
    return 1;
}

void dn_shadow_get_stats(dn_shadow *sh, dn_shadow_stats *out) {
    out->done = atomic_load(&sh->done);
    out->dropped = atomic_load(&sh->dropped);
    out->failed = atomic_load(&sh->failed);
    pthread_mutex_lock(&sh->mu);
    out->queued = sh->qlen;
    pthread_mutex_unlock(&sh->mu);
}

void dn_shadow_metrics(dn_shadow *sh, dn_sb *b) {
    if (!sh) return;
    dn_shadow_stats s;
    dn_shadow_get_stats(sh, &s);
    dn_sb_printf(b,
                 "# HELP defectnet_shadow_images_total Images of the shadow model (--shadow): classified and stored, "
                 "dropped (its queue was full), failed.\n# TYPE defectnet_shadow_images_total counter\n"
                 "defectnet_shadow_images_total{result=\"done\"} %ld\ndefectnet_shadow_images_total{result=\"dropped\"} %ld\n"
                 "defectnet_shadow_images_total{result=\"failed\"} %ld\n"
                 "# HELP defectnet_shadow_queue_depth Images waiting for the shadow model.\n"
                 "# TYPE defectnet_shadow_queue_depth gauge\ndefectnet_shadow_queue_depth %ld\n",
                 s.done, s.dropped, s.failed, s.queued);
}

void dn_shadow_stop(dn_shadow *sh) {
    if (!sh || !sh->started) return;
    pthread_mutex_lock(&sh->mu);
    sh->stopping = 1;
    pthread_cond_broadcast(&sh->cv);
    pthread_mutex_unlock(&sh->mu);
    pthread_join(sh->th, NULL);
    sh->started = 0;
}

void dn_shadow_free(dn_shadow *sh) {
    if (!sh) return;
    dn_shadow_stop(sh);
    for (shjob *j = sh->head, *n; j; j = n) { /* only if never started: stop drains */
        n = j->next;
        free(j);
    }
    pthread_mutex_destroy(&sh->mu);
    pthread_cond_destroy(&sh->cv);
    dn_gen_free(sh->g);
    free(sh);
}
