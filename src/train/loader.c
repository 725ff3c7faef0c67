/* Threaded loader (see loader.h).
 *
 * Workers claim sample positions of the current pass in order (next_pos++);
 * position p belongs to batch p / batch, prepared in slot (p / batch) % SLOTS.
 * A worker whose batch is SLOTS or more ahead of the consumer waits, so at
 * most SLOTS batches exist at once. The consumer waits until every sample of
 * its batch is done, then compacts out failed samples. A pass generation
 * counter lets dn_loader_start / dn_loader_free abandon a pass: workers that
 * finish a sample of an old generation drop it. */
#include "train/loader.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot {
    float *x;
    int *labels, *items;
    unsigned char *ok;
    int done;      /* samples finished (ok or failed) */
} slot;

struct dn_loader {
    dn_loader_cfg cfg;
    size_t sample_floats;
    slot slots[DN_LOADER_SLOTS];
    pthread_t *threads;
    int nthreads;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    int quit;
    uint64_t gen;
    /* current pass */
    int *order;
    int count, augment;
    uint64_t pass_id;
    int next_pos;      /* next position a worker will claim */
    int consumed;      /* batches handed to the consumer and released */
    int cur;           /* batch currently held by the consumer (-1 none) */
    int failed_pass;   /* strict: a sample failed in this pass */
    /* results */
    unsigned char *item_failed;
    int skipped;
    char first_error[512];
    dn_image *decoded; /* cache_decoded: n images (data NULL until loaded) */
    /* compacted output of the current batch */
    int inflight;      /* samples claimed and not yet reported */
};

uint64_t dn_loader_sample_seed(uint64_t seed, uint64_t pass_id, uint64_t salt, int pos) {
    uint64_t z = seed ^ (pass_id * 0x9E3779B97F4A7C15ull) ^ (salt * 0xD6E8FEB86659FD93ull) ^ (uint32_t)pos;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

dn_status dn_loader_transform(const dn_image *img, const dn_preproc *pp, const dn_aug *aug, dn_rng *rng,
                              float *out) {
    if (!aug || !aug->flags) return dn_preprocess(img, pp, out);
    dn_aug a = *aug;
    dn_preproc p = *pp;
    if (a.flags & DN_AUG_RRC) {
        /* the crop is resized straight to the network input; the eval resize
         * and centre crop then have nothing left to do */
        a.out_size = pp->crop;
        p.resize = pp->crop;
    }
    dn_image t = {0};
    dn_status st = dn_augment(img, &a, rng, &t);
    if (st) return st;
    st = dn_preprocess(&t, &p, out);
    dn_image_free(&t);
    return st;
}

static int batch_size_of(const dn_loader *L, int b) {
    int start = b * L->cfg.batch, rem = L->count - start;
    return rem < L->cfg.batch ? rem : L->cfg.batch;
}

/* Loads (or fetches from the decode cache) item's image; *img borrowed from
 * the cache when *owned == 0. */
static dn_status get_image(dn_loader *L, int item, dn_image *img, int *owned) {
    if (L->decoded) {
        pthread_mutex_lock(&L->mu);
        dn_image c = L->decoded[item];
        pthread_mutex_unlock(&L->mu);
        if (c.data) {
            *img = c;
            *owned = 0;
            return DN_OK;
        }
    }
    dn_status st = dn_image_load(L->cfg.paths[item], img);
    if (st) return st;
    *owned = 1;
    if (L->decoded) {
        pthread_mutex_lock(&L->mu);
        if (!L->decoded[item].data) {
            L->decoded[item] = *img;
            *owned = 0;
        }
        pthread_mutex_unlock(&L->mu);
    }
    return DN_OK;
}

static void *worker(void *arg) {
    dn_loader *L = arg;
    pthread_mutex_lock(&L->mu);
    for (;;) {
        while (!L->quit && (!L->order || L->next_pos >= L->count || L->failed_pass ||
                            L->next_pos / L->cfg.batch >= L->consumed + DN_LOADER_SLOTS))
            pthread_cond_wait(&L->cv_work, &L->mu);
        if (L->quit) break;
        int pos = L->next_pos++;
        L->inflight++;
        uint64_t gen = L->gen;
        int item = L->order[pos], augment = L->augment;
        uint64_t pass_id = L->pass_id;
        int b = pos / L->cfg.batch, j = pos % L->cfg.batch;
        slot *s = &L->slots[b % DN_LOADER_SLOTS];
        float *dst = s->x + (size_t)j * L->sample_floats;
        pthread_mutex_unlock(&L->mu);

        dn_image img = {0};
        int owned = 0;
        dn_status st = get_image(L, item, &img, &owned);
        if (!st) {
            dn_rng rng;
            if (L->cfg.item_salt)
                dn_rng_seed(&rng, dn_loader_sample_seed(L->cfg.seed, pass_id, L->cfg.item_salt[item], 0));
            else
                dn_rng_seed(&rng, dn_loader_sample_seed(L->cfg.seed, pass_id, (uint64_t)item + 1, pos));
            st = dn_loader_transform(&img, &L->cfg.pp, augment ? &L->cfg.aug : NULL, &rng, dst);
            if (owned) dn_image_free(&img);
        }
        char msg[512];
        if (st) snprintf(msg, sizeof msg, "%s", dn_last_error());

        pthread_mutex_lock(&L->mu);
        L->inflight--;
        if (gen != L->gen) { /* pass abandoned meanwhile */
            pthread_cond_broadcast(&L->cv_done);
            continue;
        }
        s->labels[j] = L->cfg.labels[item];
        s->items[j] = item;
        s->ok[j] = st == DN_OK;
        if (st) {
            if (!L->item_failed[item]) {
                L->item_failed[item] = 1;
                L->skipped++;
            }
            if (!L->first_error[0]) snprintf(L->first_error, sizeof L->first_error, "%s", msg);
            if (L->cfg.strict) L->failed_pass = 1;
        }
        s->done++;
        pthread_cond_broadcast(&L->cv_done);
    }
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

dn_status dn_loader_new(const dn_loader_cfg *cfg, dn_loader **out) {
    *out = NULL;
    if (cfg->n < 0 || cfg->batch < 1 || cfg->workers < 1 || cfg->pp.crop < 1)
        return dn_fail(DN_ERR_ARG, "loader: bad configuration (n %d, batch %d, workers %d, crop %d)", cfg->n,
                       cfg->batch, cfg->workers, cfg->pp.crop);
    dn_loader *L = dn_calloc(1, sizeof *L);
    if (!L) return DN_ERR_NOMEM;
    L->cfg = *cfg;
    L->sample_floats = (size_t)3 * cfg->pp.crop * cfg->pp.crop;
    L->cur = -1;
    pthread_mutex_init(&L->mu, NULL);
    pthread_cond_init(&L->cv_work, NULL);
    pthread_cond_init(&L->cv_done, NULL);
    dn_status st = DN_ERR_NOMEM;
    for (int i = 0; i < DN_LOADER_SLOTS; i++) {
        slot *s = &L->slots[i];
        s->x = dn_alloc_aligned(L->sample_floats * cfg->batch * sizeof(float));
        s->labels = dn_calloc((size_t)cfg->batch, sizeof(int));
        s->items = dn_calloc((size_t)cfg->batch, sizeof(int));
        s->ok = dn_calloc((size_t)cfg->batch, 1);
        if (!s->x || !s->labels || !s->items || !s->ok) goto fail;
    }
    L->item_failed = dn_calloc((size_t)cfg->n + 1, 1);
    if (!L->item_failed) goto fail;
    if (cfg->cache_decoded && !(L->decoded = dn_calloc((size_t)cfg->n + 1, sizeof(dn_image)))) goto fail;
    L->threads = dn_calloc((size_t)cfg->workers, sizeof(pthread_t));
    if (!L->threads) goto fail;
    for (int i = 0; i < cfg->workers; i++) {
        if (pthread_create(&L->threads[i], NULL, worker, L) != 0) {
            st = dn_fail(DN_ERR_NOMEM, "loader: cannot start worker thread");
            goto fail;
        }
        L->nthreads++;
    }
    *out = L;
    return DN_OK;
fail:
    dn_loader_free(L);
    return st;
}

void dn_loader_free(dn_loader *L) {
    if (!L) return;
    pthread_mutex_lock(&L->mu);
    L->quit = 1;
    L->gen++;
    pthread_cond_broadcast(&L->cv_work);
    pthread_mutex_unlock(&L->mu);
    for (int i = 0; i < L->nthreads; i++) pthread_join(L->threads[i], NULL);
    free(L->threads);
    for (int i = 0; i < DN_LOADER_SLOTS; i++) {
        dn_free_aligned(L->slots[i].x);
        free(L->slots[i].labels);
        free(L->slots[i].items);
        free(L->slots[i].ok);
    }
    if (L->decoded)
        for (int i = 0; i < L->cfg.n; i++) dn_image_free(&L->decoded[i]);
    free(L->decoded);
    free(L->item_failed);
    free(L->order);
    pthread_mutex_destroy(&L->mu);
    pthread_cond_destroy(&L->cv_work);
    pthread_cond_destroy(&L->cv_done);
    free(L);
}

dn_status dn_loader_start(dn_loader *L, const int *order, int count, int augment, uint64_t pass_id) {
    if (count < 0) return dn_fail(DN_ERR_ARG, "loader: negative pass length");
    for (int i = 0; i < count; i++)
        if (order[i] < 0 || order[i] >= L->cfg.n)
            return dn_fail(DN_ERR_ARG, "loader: item %d out of range [0,%d)", order[i], L->cfg.n);
    int *copy = dn_malloc((size_t)(count ? count : 1) * sizeof(int));
    if (!copy) return DN_ERR_NOMEM;
    if (count) memcpy(copy, order, (size_t)count * sizeof(int));
    pthread_mutex_lock(&L->mu);
    /* Abandon the old pass: stop new claims, then wait for workers still
     * transforming a claimed sample, since they write pixels into slot memory
     * the new pass will reuse. */
    L->next_pos = L->count;
    while (L->inflight > 0) pthread_cond_wait(&L->cv_done, &L->mu);
    L->gen++;
    free(L->order);
    L->order = copy;
    L->count = count;
    L->augment = augment;
    L->pass_id = pass_id;
    L->next_pos = 0;
    L->consumed = 0;
    L->cur = -1;
    L->failed_pass = 0;
    for (int i = 0; i < DN_LOADER_SLOTS; i++) L->slots[i].done = 0;
    pthread_cond_broadcast(&L->cv_work);
    pthread_mutex_unlock(&L->mu);
    return DN_OK;
}

dn_status dn_loader_next(dn_loader *L, const float **x, const int **labels, const int **items, int *n) {
    *n = 0;
    pthread_mutex_lock(&L->mu);
    if (!L->order) {
        pthread_mutex_unlock(&L->mu);
        return dn_fail(DN_ERR_ARG, "loader: no pass started");
    }
    if (L->cur >= 0) { /* release the batch the consumer held */
        L->slots[L->cur % DN_LOADER_SLOTS].done = 0;
        L->consumed++;
        L->cur = -1;
        pthread_cond_broadcast(&L->cv_work);
    }
    int nbatches = (L->count + L->cfg.batch - 1) / L->cfg.batch;
    for (;;) {
        int b = L->consumed;
        if (b >= nbatches) break;
        slot *s = &L->slots[b % DN_LOADER_SLOTS];
        int want = batch_size_of(L, b);
        while (s->done < want && !L->failed_pass) pthread_cond_wait(&L->cv_done, &L->mu);
        if (L->failed_pass) {
            dn_status st = dn_fail(DN_ERR_IO, "%s", L->first_error);
            pthread_mutex_unlock(&L->mu);
            return st;
        }
        /* compact failed samples out */
        int m = 0;
        for (int j = 0; j < want; j++) {
            if (!s->ok[j]) continue;
            if (m != j) {
                memmove(s->x + (size_t)m * L->sample_floats, s->x + (size_t)j * L->sample_floats,
                        L->sample_floats * sizeof(float));
                s->labels[m] = s->labels[j];
                s->items[m] = s->items[j];
            }
            m++;
        }
        L->cur = b;
        if (m == 0) { /* whole batch failed: skip it */
            s->done = 0;
            L->consumed++;
            L->cur = -1;
            pthread_cond_broadcast(&L->cv_work);
            continue;
        }
        *x = s->x;
        *labels = s->labels;
        *items = s->items;
        *n = m;
        break;
    }
    pthread_mutex_unlock(&L->mu);
    return DN_OK;
}

int dn_loader_skipped(const dn_loader *L) { return L->skipped; }
const char *dn_loader_first_error(const dn_loader *L) { return L->first_error; }
int dn_loader_item_failed(const dn_loader *L, int item) {
    return item >= 0 && item < L->cfg.n && L->item_failed[item];
}
