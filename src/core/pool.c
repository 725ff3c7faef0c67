/* A fixed thread pool with a fork-join barrier. Workers sleep on a condition
 * variable between jobs; the caller participates as worker 0 so a pool of N
 * threads spawns N-1 pthreads. */
#include "core.h"
#include <pthread.h>
#include <stdlib.h>

struct dn_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    dn_job_fn fn;
    void *arg;
    unsigned long generation;
    int pending;
    int quit;
};

typedef struct { dn_pool *p; int ith; } worker_arg;

static void *worker(void *a) {
    worker_arg *wa = a;
    dn_pool *p = wa->p;
    int ith = wa->ith;
    free(wa);
    unsigned long seen = 0;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->quit && p->generation == seen) pthread_cond_wait(&p->start, &p->mu);
        if (p->quit) { pthread_mutex_unlock(&p->mu); return NULL; }
        seen = p->generation;
        dn_job_fn fn = p->fn;
        void *arg = p->arg;
        pthread_mutex_unlock(&p->mu);
        fn(arg, ith, p->n);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->mu);
    }
}

dn_pool *dn_pool_new(int nthreads) {
    if (nthreads <= 0) nthreads = dn_num_cpus();
    if (nthreads > DN_MAX_THREADS) {
        dn_fail(DN_ERR_ARG, "thread pool: %d threads requested, at most %d supported", nthreads, DN_MAX_THREADS);
        return NULL;
    }
    dn_pool *p = dn_calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = nthreads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    if (nthreads > 1) {
        p->threads = dn_calloc((size_t)nthreads, sizeof(pthread_t));
        if (!p->threads) { dn_pool_free(p); return NULL; }
        for (int i = 1; i < nthreads; i++) {
            worker_arg *wa = dn_malloc(sizeof *wa);
            if (!wa) { p->n = i; dn_pool_free(p); dn_fail(DN_ERR_NOMEM, "thread pool: out of memory"); return NULL; }
            wa->p = p;
            wa->ith = i;
            if (pthread_create(&p->threads[i], NULL, worker, wa) != 0) {
                free(wa);
                p->n = i;
                dn_pool_free(p);
                dn_fail(DN_ERR_NOMEM, "thread pool: cannot create thread %d", i);
                return NULL;
            }
        }
    }
    return p;
}

void dn_pool_free(dn_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n && p->threads; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    free(p);
}

int dn_pool_size(const dn_pool *p) { return p ? p->n : 1; }

void dn_pool_run(dn_pool *p, dn_job_fn fn, void *arg) {
    if (!p || p->n == 1) { fn(arg, 0, 1); return; }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->pending = p->n - 1;
    p->generation++;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    fn(arg, 0, p->n);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
