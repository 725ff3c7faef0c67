/* Datasets: image lists for predict, ImageFolder scans, CSV manifests,
 * stratified train/val/test splits written as reusable manifests, and
 * exact-duplicate detection across splits.
 *
 * Class order. Class names are always sorted NATURALLY (dn_natural_cmp:
 * "1" < "2" < "10", digit runs compared by value, everything else bytewise as
 * Python's sorted()), and a label is an index into that order. Every tool
 * that needs class order (train, eval, the model metadata) uses it.
 *
 * Ownership. A dn_dataset owns its items, their path strings and the class
 * names; release everything with dn_dataset_free. Pointers into a dataset stay
 * valid until the dataset is modified (dn_dataset_split, *_dedup) or freed.
 * Functions returning arrays (dn_collect_images, dn_dataset_select) hand them
 * to the caller, who frees them as documented per function.
 *
 * Split manifest CSV: header "path,label,split", one row per image, label =
 * class name, split = train|val|test (or empty). Paths are written relative
 * to the manifest's own folder when possible; relative paths read from any
 * manifest are resolved against the manifest's folder. Fields containing ','
 * or '"' are quoted CSV-style. */
#ifndef DN_DATASET_H
#define DN_DATASET_H
#include "core/core.h"

enum { DN_SPLIT_NONE = -1, DN_SPLIT_TRAIN = 0, DN_SPLIT_VAL = 1, DN_SPLIT_TEST = 2 };

/* "train", "val", "test", or "" for DN_SPLIT_NONE. */
const char *dn_split_name(int split);
/* Parses train|val|test (also valid/validation); -1 if none of them. */
int dn_split_parse(const char *s);

/* Natural order: <0, 0, >0 like strcmp. */
int dn_natural_cmp(const char *a, const char *b);

/* 1 if the file name has an image extension (.jpg .jpeg .png .bmp .pgm .ppm
 * .pnm, any case). */
int dn_is_image_name(const char *path);

/* Expands files and directories (recursively, hidden entries skipped) into
 * image paths: a file argument is kept as given whatever its extension, a
 * directory contributes its image files in natural order. Fails naming the
 * first argument that does not exist. *out is a malloc'ed array of malloc'ed
 * strings; release with dn_paths_free(*out, *n). */
dn_status dn_collect_images(const char *const *inputs, int ninputs, char ***out, int *n);
void dn_paths_free(char **paths, int n);

typedef struct dn_item {
    char *path;  /* owned by the dataset */
    int label;   /* index into classes */
    int split;   /* DN_SPLIT_* */
} dn_item;

typedef struct dn_dataset {
    dn_item *items;
    int n, cap;
    char **classes; /* nclasses names, natural order, owned */
    int nclasses;
    char *source;   /* folder or manifest the data came from, owned */
    int has_split;  /* 1 if items carry a split (official folders or manifest) */
} dn_dataset;

void dn_dataset_free(dn_dataset *ds);

/* ImageFolder: one sub-folder per class (images found recursively inside).
 * If dir has train/ and test/ (and optionally val/) sub-folders, each is an
 * ImageFolder and items take that official split (has_split = 1).
 * Errors (one line each): missing/unreadable folder, no images, a class folder
 * without images, fewer than two classes. */
dn_status dn_dataset_scan(const char *dir, dn_dataset **out);

/* CSV manifest: header with columns path,label[,split] (any order, extra
 * columns ignored). Errors name the manifest and line: missing columns, a
 * listed file that does not exist (with the count of missing files), empty
 * manifest, fewer than two classes. */
dn_status dn_dataset_load_manifest(const char *csv, dn_dataset **out);

/* A directory -> dn_dataset_scan, a file -> dn_dataset_load_manifest. */
dn_status dn_dataset_open(const char *path, dn_dataset **out);
/* Appends the images of path (an ImageFolder or a manifest, as dn_dataset_open, but one
 * class is enough) to ds with the given split, mapping labels by class name: a class ds
 * lacks is an error naming it (ds unchanged). *added = images appended. */
dn_status dn_dataset_add(dn_dataset *ds, const char *path, int split, int *added);

typedef struct dn_split_cfg {
    double train, val, test; /* fractions (normalised by their sum) */
    uint64_t seed;
} dn_split_cfg;
void dn_split_cfg_default(dn_split_cfg *c); /* 0.70 / 0.15 / 0.15, seed 42 */

/* Assigns splits, stratified per class and deterministic for cfg->seed
 * (independent of item order: each class is sorted by path before the seeded
 * shuffle). If the dataset already has official train/test splits they are
 * kept and a validation part is carved from each class's train items with
 * fraction val / (train + val). Per class: test = round(n * test), val =
 * round(n * val), train the rest; with n >= 3 every non-zero fraction gets at
 * least one image. */
dn_status dn_dataset_split(dn_dataset *ds, const dn_split_cfg *cfg);

/* Writes the manifest CSV (path,label,split). */
dn_status dn_dataset_write_manifest(const dn_dataset *ds, const char *csv);

/* Exact duplicates by content sha256. For every group of byte-identical files
 * that spans more than one split (or more than one label) a warning line
 * naming both files is written to log (may be NULL):
 *   "warning: duplicate content: A (train) == B (test)"
 * With drop = 1 the copies in later splits (train < val < test) are removed
 * so no image is both trained and evaluated on. Outputs (may be NULL): the
 * number of cross-split duplicate copies, of same-split duplicate copies, and
 * of removed items. Unreadable files fail naming the file. */
dn_status dn_dataset_dedup(dn_dataset *ds, int drop, FILE *log, int *cross, int *within, int *dropped);

/* Number of items in split (DN_SPLIT_NONE = all items); counts, if non-NULL,
 * receives nclasses per-class counts. */
int dn_dataset_count(const dn_dataset *ds, int split, int *counts);

/* Arrays of the items of split (DN_SPLIT_NONE = all), in dataset order, for
 * dn_loader_cfg: *paths borrows the dataset's strings; the caller frees the
 * two arrays (free(*paths), free(*labels)). */
dn_status dn_dataset_select(const dn_dataset *ds, int split, const char ***paths, int **labels, int *n);

/* Index of a class name, -1 if absent. */
int dn_dataset_class_index(const dn_dataset *ds, const char *name);

/* One-call data preparation for train/eval:
 *  - split_manifest names an existing file: load it (it must carry splits)
 *    and ignore data, so the same unseen images are evaluated every time;
 *    duplicates are checked (and dropped with drop_dups) as below;
 *  - otherwise open data, split it with cfg, check duplicates (dropping
 *    cross-split copies when drop_dups) and, if split_manifest is non-NULL,
 *    write it there for later runs.
 * data may be NULL when split_manifest exists. */
dn_status dn_dataset_prepare(const char *data, const char *split_manifest, const dn_split_cfg *cfg,
                             int drop_dups, FILE *log, dn_dataset **out);

#endif
