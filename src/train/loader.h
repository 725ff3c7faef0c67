/* Threaded data loader: decode + augment + preprocess in worker threads,
 * overlapped with the caller's compute (a ring of DN_LOADER_SLOTS batches is
 * prepared ahead while the caller works on the current one).
 *
 * Determinism: every sample's augmentation RNG is seeded from
 * (cfg.seed, pass_id, item index, position in the pass), so the tensors of a
 * pass are identical whatever the number of workers or their timing.
 *
 * Unreadable images: the sample is dropped from its batch (a batch may come
 * out shorter than cfg.batch) and counted once per item (dn_loader_skipped);
 * the first such error message is kept. With cfg.strict the pass fails
 * instead and dn_loader_next returns that error.
 *
 * Ownership: the loader BORROWS cfg.paths / cfg.labels (they must outlive it)
 * and owns its batch buffers; pointers returned by dn_loader_next are valid
 * until the next dn_loader_next / dn_loader_start / dn_loader_free.
 * One consumer thread drives a loader. */
#ifndef DN_LOADER_H
#define DN_LOADER_H
#include "core/core.h"
#include "train/augment.h"

#define DN_LOADER_SLOTS 3

typedef struct dn_loader_cfg {
    const char *const *paths; /* n image paths (borrowed) */
    const int *labels;        /* n labels (borrowed) */
    int n;
    dn_preproc pp;            /* output: 3 x pp.crop x pp.crop floats per sample */
    dn_aug aug;               /* used by passes started with augment = 1 */
    int batch;                /* >= 1 */
    int workers;              /* decode threads, >= 1 */
    uint64_t seed;
    int strict;
    int cache_decoded;        /* keep decoded images in memory across passes */
    const uint64_t *item_salt;/* optional [n] (borrowed): when set, a sample's seed is
                               * (seed, pass_id, item_salt[item]) only, e.g. a content
                               * hash, so a file gets the same augmented view whatever
                               * its position (the feature cache relies on this) */
} dn_loader_cfg;

typedef struct dn_loader dn_loader;

dn_status dn_loader_new(const dn_loader_cfg *cfg, dn_loader **out);
void dn_loader_free(dn_loader *L);

/* Begins a pass over the items order[0..count) (copied; an item may repeat).
 * augment = 0: eval transform (pp only); 1: cfg.aug then pp. pass_id (epoch,
 * view number, ...) selects the random stream. Abandons any pass in progress. */
dn_status dn_loader_start(dn_loader *L, const int *order, int count, int augment, uint64_t pass_id);
/* Next batch of the pass: *x = n x 3 x crop x crop, labels[n], items[n] (item
 * indices). *n == 0 once the pass is done. */
dn_status dn_loader_next(dn_loader *L, const float **x, const int **labels, const int **items, int *n);

int dn_loader_skipped(const dn_loader *L);         /* distinct items that failed to load */
const char *dn_loader_first_error(const dn_loader *L); /* "" if none */
int dn_loader_item_failed(const dn_loader *L, int item);

/* The per-sample transform the workers run (exposed for tests and for the
 * feature cache): loads paths[item] (or uses img if non-NULL), augments with
 * rng when aug != NULL, preprocesses into out. */
dn_status dn_loader_transform(const dn_image *img, const dn_preproc *pp, const dn_aug *aug, dn_rng *rng,
                              float *out);
/* The per-sample seed used by the loader (salt = item_salt[item] if given,
 * else item and pos are mixed in). */
uint64_t dn_loader_sample_seed(uint64_t seed, uint64_t pass_id, uint64_t salt, int pos);
#endif
