/* Feature cache for the head-only fast path: with a frozen backbone the pooled
 * features of an image never change, so they are computed once — for the
 * original image (view 0, eval transform) and for K fixed augmented views
 * (views 1..K) — and the head is trained on the cache.
 *
 * Computation runs through the inference engine (dn_session_features) with
 * decoding + augmentation in loader threads overlapped with it.
 *
 * On-disk cache (optional, dir != NULL): one file per (code version, model
 * sha256, preprocessing, augmentation config, seed, feature dim) in dir, named by the
 * sha256 of that description; each record is keyed by sha256(file content
 * sha256, view) and holds feat_dim floats. Augmented views are seeded from the
 * file's content hash, so a file's view v is the same whatever the dataset
 * around it; a record found in the file is reused, missing ones are computed
 * and appended (written atomically: temp file + rename). A damaged cache file
 * is ignored with a warning on stderr and rebuilt.
 *
 * Ownership: dn_featcache owns its arrays (dn_featcache_free). */
#ifndef DN_FEATCACHE_H
#define DN_FEATCACHE_H
#include "core/core.h"
#include "nn/engine.h"
#include "train/augment.h"

typedef struct dn_featcache {
    int dim;         /* values per row: feat_dim for stage 5, C*H*W of the stage otherwise */
    int stage;       /* engine stage the rows were taken after (nn/engine.h) */
    int64_t n;       /* rows */
    float *x;        /* n x dim */
    int *y;          /* [n] labels */
    int *item;       /* [n] index into the caller's item list */
    int *view;       /* [n] 0 = original, 1..K augmented */
} dn_featcache;

typedef struct dn_featcache_cfg {
    const char *const *paths; /* the caller's items (borrowed) */
    const int *labels;
    const int *subset;        /* indices of the items to cache (borrowed) */
    int nsubset;
    int views;                /* K augmented views per image (0 = originals only) */
    int stage;                /* engine stage to cache: 5 = pooled features (0 means 5), 0..4 = after that stage */
    dn_preproc pp;            /* must match the session's input size */
    dn_aug aug;               /* augmentation for views 1..K */
    uint64_t seed;
    int batch;                /* forward batch (<= session max batch) */
    int workers;              /* loader threads */
    int strict;               /* unreadable image fatal */
    const char *dir;          /* on-disk cache directory or NULL */
    const char *model_sha256; /* identity of the backbone weights (required with dir) */
    int verbose;              /* progress lines on stderr */
} dn_featcache_cfg;

typedef struct dn_featcache_stats {
    int64_t computed, reused;  /* rows computed now / read from the disk cache */
    int skipped;               /* unreadable images (not in the cache) */
    double seconds;
} dn_featcache_stats;

/* Builds the cache of cfg->subset (rows ordered view-major: all view-0 rows,
 * then view 1, ...; unreadable images are left out and counted). */
/* The description the disk cache file is named after (sha256 of it): code
 * version and revision, model sha256, preprocessing, augmentation, seed, dim,
 * stage. Returns snprintf's length. */
int dn_featcache_describe(const dn_featcache_cfg *cfg, int dim, char *desc, size_t n);

dn_status dn_featcache_build(dn_session *s, const dn_featcache_cfg *cfg, dn_featcache *out,
                             dn_featcache_stats *stats);
void dn_featcache_free(dn_featcache *c);
#endif
