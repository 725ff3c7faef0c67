/* Internals of the prediction pipeline shared by its files (not an API; see pipeline.h):
 *   pipeline.c         open/configure/reload/close, logging, accessors, action outcomes -> store
 *   pipeline_queue.c   the bounded job queue (submit, reserve, wait) and the worker threads
 *                      (take a batch, decode + preprocess, one batched forward)
 *   pipeline_commit.c  one classified image: image copy, commit to the store, actions, metrics,
 *                      results bus, the JSON answer */
#ifndef DN_SERVE_PIPELINE_INT_H
#define DN_SERVE_PIPELINE_INT_H
#include "serve/pipeline.h"
#include "serve/bus.h"
#include "serve/kafka.h"
#include <stdatomic.h>
#include "core/sha256.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "ood/gradcam.h"
#include "ood/ood.h"
#include "serve/actions.h"
#include "serve/metrics.h"
#include "serve/multipart.h"
#include "trust/review_serve.h"
#include "trust/shadow.h"
#include "trust/drift.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct dn_job {
    struct dn_job *next;
    dn_classify_req req;            /* strings and bytes owned by the submitter until done */
    /* result */
    int code;
    char *body;
    int64_t id;
    char cls[128];
    int accepted_good;              /* 1 accepted as good, 0 rejected, -1 the model has no good class */
    uint8_t *heat_png;              /* Grad-CAM overlay (PNG) to write beside the image copy, or NULL */
    size_t heat_len;
    /* completion: a callback (HTTP resumes its connection) or a waiting thread */
    dn_job_done_fn done_fn;
    void *done_ctx;
    int done;
};

typedef struct worker {
    struct dn_pipeline *p;
    pthread_t th;
    dn_session *sess;
    int sess_serial;
    float *probs;                   /* batch x num_classes */
    dn_prediction *preds;           /* batch */
} worker;

struct dn_pipeline {
    char *model_path, *db_url, *rules_path, *store_images, *good_class;
    int nworkers, qcap, session_threads, batch, dry_run, quiet;

    dn_store *store;
    dn_metrics *metrics;
    dn_actions *actions;
    dn_review_policy review;        /* what goes into the review queue (trust/review.h) */
    dn_shadow *shadow;              /* candidate model in shadow, NULL = none */
    dn_drift *drift;                /* drift windows per line/camera (trust/drift.h) */
    dn_gen_slot gens;
    int gens_init;

    pthread_mutex_t mu;             /* queue, done flags */
    pthread_cond_t qcond;           /* workers wait for jobs */
    pthread_cond_t space;           /* blocking submitters wait for queue space */
    pthread_cond_t donecond;        /* blocking submitters wait for their job */
    dn_job *qhead, *qtail;
    int qlen, qreserved;            /* queued + slots reserved by HTTP before suspend */
    int stopping_workers;
    pthread_mutex_t reload_mu;
    worker *workers;
    int nstarted, drained;
    _Atomic(struct dn_bus *) bus;   /* results bus for HTTP/watch predictions (dn_pipeline_set_bus) */
    _Atomic(struct dn_kafka *) kafka; /* Kafka export for them (dn_pipeline_set_kafka) */
    atomic_long bus_failures;
    atomic_uint heat_mask;          /* heatmaps for these kinds of prediction (HEAT_*), 0 = none */
};

enum { HEAT_UNKNOWN = 1, HEAT_UNCERTAIN = 2, HEAT_DEFECT = 4, HEAT_GOOD = 8 };

/* Sets the job's answer to a JSON error (pipeline_commit.c). */
void dn_job_fail(dn_job *j, int code, const char *msg);
/* After classification of one image: copy, commit, actions, answer (pipeline_commit.c). */
void dn_pipeline_finish_job(worker *w, dn_gen *g, dn_job *j, const dn_prediction *pr, const float *probs, const float *feat);
/* A worker thread: takes batches off the queue until drained (pipeline_queue.c). */
void *dn_pipeline_worker_main(void *arg);

#endif
