/* Datasets, second half: stratified splits, manifest writing, duplicate
 * detection, queries, prepare. Scanning and manifest loading: dataset.c. */
#include "io/dataset.h"
#include "io/dataset_priv.h"
#include "core/core.h"
#include "core/sha256.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ split */

void dn_split_cfg_default(dn_split_cfg *c) {
    c->train = 0.70;
    c->val = 0.15;
    c->test = 0.15;
    c->seed = 42;
}

static int idx_path_cmp(const void *a, const void *b, void *ctx) {
    const dn_dataset *ds = ctx;
    return strcmp(ds->items[*(const int *)a].path, ds->items[*(const int *)b].path);
}

static int round_frac(int n, double f) { return (int)(n * f + 0.5); }

dn_status dn_dataset_split(dn_dataset *ds, const dn_split_cfg *cfg) {
    dn_split_cfg def;
    if (!cfg) { dn_split_cfg_default(&def); cfg = &def; }
    double sum = cfg->train + cfg->val + cfg->test;
    if (!(cfg->train > 0) || cfg->val < 0 || cfg->test < 0 || !(sum > 0))
        return dn_fail(DN_ERR_ARG, "split fractions %.3g/%.3g/%.3g: train must be > 0, val and test >= 0",
                       cfg->train, cfg->val, cfg->test);
    int official = ds->has_split;
    double fv = cfg->val / sum, ft = cfg->test / sum;
    if (official) { /* carve val from train only */
        fv = cfg->val / (cfg->train + cfg->val);
        ft = 0;
        for (int i = 0; i < ds->n; i++)
            if (ds->items[i].split == DN_SPLIT_VAL) return DN_OK; /* official val exists: keep all */
    }
    int *idx = dn_malloc(sizeof(int) * (size_t)(ds->n ? ds->n : 1));
    if (!idx) return DN_ERR_NOMEM;
    for (int c = 0; c < ds->nclasses; c++) {
        int m = 0;
        for (int i = 0; i < ds->n; i++)
            if (ds->items[i].label == c && (!official || ds->items[i].split == DN_SPLIT_TRAIN)) idx[m++] = i;
        if (!m) continue;
        qsort_r(idx, (size_t)m, sizeof(int), idx_path_cmp, ds);
        dn_rng r;
        dn_rng_seed(&r, cfg->seed * 1000003u + (uint64_t)c);
        for (int i = m - 1; i > 0; i--) {
            int j = (int)dn_rng_below(&r, (uint32_t)i + 1);
            int t = idx[i]; idx[i] = idx[j]; idx[j] = t;
        }
        int nt = round_frac(m, ft), nv = round_frac(m, fv);
        if (m >= 3) {
            if (ft > 0 && nt == 0) nt = 1;
            if (fv > 0 && nv == 0) nv = 1;
        }
        while (nt + nv >= m && (nt > 0 || nv > 0)) { /* keep >= 1 train image */
            if (nt >= nv && nt > 0) nt--;
            else nv--;
        }
        for (int i = 0; i < m; i++)
            ds->items[idx[i]].split = i < nt ? DN_SPLIT_TEST : i < nt + nv ? DN_SPLIT_VAL : DN_SPLIT_TRAIN;
    }
    free(idx);
    ds->has_split = 1;
    return DN_OK;
}

/* --------------------------------------------------------- manifest write */

/* Path of target relative to the folder base (both made absolute); falls back
 * to the absolute path. Caller frees. */
static char *relative_to(const char *base, const char *target) {
    char rb[PATH_MAX], rt[PATH_MAX];
    if (!realpath(base, rb) || !realpath(target, rt)) return dn_strdup(target);
    /* Longest common prefix ending on a component boundary. */
    size_t common = 0, i = 0;
    for (;; i++) {
        int eb = rb[i] == '/' || rb[i] == 0, et = rt[i] == '/' || rt[i] == 0;
        if (eb && et) common = i;
        if (!rb[i] || !rt[i] || rb[i] != rt[i]) break;
    }
    if (!strcmp(rb, "/")) common = 0;
    int ups = 0;
    for (size_t k = common; rb[k]; k++)
        if (rb[k] == '/') ups++;
    const char *rest = rt + common;
    if (*rest == '/') rest++;
    char *out = dn_malloc((size_t)ups * 3 + strlen(rest) + 1);
    if (!out) return NULL;
    out[0] = 0;
    for (int k = 0; k < ups; k++) strcat(out, "../");
    strcat(out, rest);
    return out;
}

static void csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\n\r") && s[0] != ' ') { fputs(s, f); return; }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

dn_status dn_dataset_write_manifest(const dn_dataset *ds, const char *csv) {
    char *dir = dn_ds_dir_of(csv);
    size_t n = strlen(csv) + 8;
    char *tmp = dn_malloc(n);
    if (!dir || !tmp) { free(dir); free(tmp); return DN_ERR_NOMEM; }
    snprintf(tmp, n, "%s.tmp", csv);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        dn_status st = dn_fail(DN_ERR_IO, "%s: cannot write: %s", csv, strerror(errno));
        free(dir); free(tmp);
        return st;
    }
    fputs("path,label,split\n", f);
    for (int i = 0; i < ds->n; i++) {
        char *rel = relative_to(dir, ds->items[i].path);
        csv_field(f, rel ? rel : ds->items[i].path);
        free(rel);
        fputc(',', f);
        csv_field(f, ds->classes[ds->items[i].label]);
        fputc(',', f);
        fputs(dn_split_name(ds->items[i].split), f);
        fputc('\n', f);
    }
    int bad = ferror(f);
    if (fclose(f) != 0) bad = 1;
    dn_status st = DN_OK;
    if (bad) st = dn_fail(DN_ERR_IO, "%s: write failed", csv);
    else if (rename(tmp, csv) != 0) st = dn_fail(DN_ERR_IO, "%s: cannot write: %s", csv, strerror(errno));
    if (st) unlink(tmp);
    free(dir);
    free(tmp);
    return st;
}

/* ------------------------------------------------------------- duplicates */

typedef struct { uint8_t h[32]; int idx; } hashed;

static int split_rank(int s) { return s == DN_SPLIT_NONE ? -1 : s; }

static int hashed_cmp(const void *a, const void *b, void *ctx) {
    const dn_dataset *ds = ctx;
    const hashed *x = a, *y = b;
    int c = memcmp(x->h, y->h, 32);
    if (c) return c;
    const dn_item *p = &ds->items[x->idx], *q = &ds->items[y->idx];
    if (split_rank(p->split) != split_rank(q->split)) return split_rank(p->split) < split_rank(q->split) ? -1 : 1;
    return strcmp(p->path, q->path);
}

static dn_status hash_file(const char *path, uint8_t out[32]) {
    FILE *f = fopen(path, "rb");
    if (!f) return dn_fail(DN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    dn_sha256_ctx c;
    dn_sha256_init(&c);
    uint8_t buf[65536];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, f)) > 0) dn_sha256_update(&c, buf, r);
    int err = ferror(f);
    fclose(f);
    if (err) return dn_fail(DN_ERR_IO, "%s: read failed", path);
    dn_sha256_final(&c, out);
    return DN_OK;
}

dn_status dn_dataset_dedup(dn_dataset *ds, int drop, FILE *log, int *cross, int *within, int *dropped) {
    int ncross = 0, nwithin = 0, ndrop = 0;
    hashed *hs = dn_malloc(sizeof(hashed) * (size_t)(ds->n ? ds->n : 1));
    char *gone = dn_calloc((size_t)(ds->n ? ds->n : 1), 1);
    dn_status st = DN_OK;
    if (!hs || !gone) { st = DN_ERR_NOMEM; goto done; }
    for (int i = 0; i < ds->n; i++) {
        hs[i].idx = i;
        if ((st = hash_file(ds->items[i].path, hs[i].h))) goto done;
    }
    qsort_r(hs, (size_t)ds->n, sizeof(hashed), hashed_cmp, ds);
    for (int g = 0; g < ds->n;) {
        int e = g + 1;
        while (e < ds->n && !memcmp(hs[e].h, hs[g].h, 32)) e++;
        const dn_item *first = &ds->items[hs[g].idx];
        for (int k = g + 1; k < e; k++) {
            const dn_item *it = &ds->items[hs[k].idx];
            int xsplit = it->split != first->split, xlabel = it->label != first->label;
            if (xsplit || xlabel) {
                ncross++;
                if (log) {
                    fprintf(log, "warning: duplicate content: %s (%s%s%s) == %s (%s%s%s)%s\n", first->path,
                            first->split >= 0 ? dn_split_name(first->split) : "", first->split >= 0 ? ", " : "",
                            ds->classes[first->label], it->path, it->split >= 0 ? dn_split_name(it->split) : "",
                            it->split >= 0 ? ", " : "", ds->classes[it->label],
                            drop && xsplit ? "; dropped the second copy" : "");
                }
                if (drop && xsplit) {
                    gone[hs[k].idx] = 1;
                    ndrop++;
                }
            } else {
                nwithin++;
            }
        }
        g = e;
    }
    if (ndrop) {
        int w = 0;
        for (int i = 0; i < ds->n; i++) {
            if (gone[i]) free(ds->items[i].path);
            else ds->items[w++] = ds->items[i];
        }
        ds->n = w;
    }
done:
    free(hs);
    free(gone);
    if (cross) *cross = ncross;
    if (within) *within = nwithin;
    if (dropped) *dropped = ndrop;
    return st;
}

/* ---------------------------------------------------------------- queries */

int dn_dataset_count(const dn_dataset *ds, int split, int *counts) {
    if (counts) memset(counts, 0, sizeof(int) * (size_t)ds->nclasses);
    int n = 0;
    for (int i = 0; i < ds->n; i++) {
        if (split != DN_SPLIT_NONE && ds->items[i].split != split) continue;
        n++;
        if (counts) counts[ds->items[i].label]++;
    }
    return n;
}

dn_status dn_dataset_select(const dn_dataset *ds, int split, const char ***paths, int **labels, int *n) {
    int m = dn_dataset_count(ds, split, NULL);
    *paths = dn_malloc(sizeof(char *) * (size_t)(m ? m : 1));
    *labels = dn_malloc(sizeof(int) * (size_t)(m ? m : 1));
    if (!*paths || !*labels) {
        free(*paths); free(*labels);
        *paths = NULL; *labels = NULL; *n = 0;
        return DN_ERR_NOMEM;
    }
    int k = 0;
    for (int i = 0; i < ds->n; i++) {
        if (split != DN_SPLIT_NONE && ds->items[i].split != split) continue;
        (*paths)[k] = ds->items[i].path;
        (*labels)[k] = ds->items[i].label;
        k++;
    }
    *n = k;
    return DN_OK;
}

int dn_dataset_class_index(const dn_dataset *ds, const char *name) {
    for (int i = 0; i < ds->nclasses; i++)
        if (!strcmp(ds->classes[i], name)) return i;
    return -1;
}

/* ---------------------------------------------------------------- prepare */

dn_status dn_dataset_prepare(const char *data, const char *split_manifest, const dn_split_cfg *cfg,
                             int drop_dups, FILE *log, dn_dataset **out) {
    *out = NULL;
    dn_dataset *ds = NULL;
    dn_status st;
    if (split_manifest && dn_ds_is_file(split_manifest)) {
        if ((st = dn_dataset_load_manifest(split_manifest, &ds))) return st;
        if (!ds->has_split) {
            dn_dataset_free(ds);
            return dn_fail(DN_ERR_FORMAT, "%s: split manifest has no 'split' column values", split_manifest);
        }
        /* A hand-written manifest may leak images across splits: check it too. */
        int cross = 0, within = 0, dropped = 0;
        if ((st = dn_dataset_dedup(ds, drop_dups, log, &cross, &within, &dropped))) goto fail;
        if (log)
            fprintf(log, "using split manifest %s: %d images, %d classes: train %d, val %d, test %d; "
                         "duplicates: %d across splits/labels (%d dropped), %d within a split\n",
                    split_manifest, ds->n, ds->nclasses, dn_dataset_count(ds, DN_SPLIT_TRAIN, NULL),
                    dn_dataset_count(ds, DN_SPLIT_VAL, NULL), dn_dataset_count(ds, DN_SPLIT_TEST, NULL), cross,
                    dropped, within);
        *out = ds;
        return DN_OK;
    }
    if (!data) return dn_fail(DN_ERR_ARG, "no data given and split manifest %s does not exist",
                              split_manifest ? split_manifest : "(none)");
    if ((st = dn_dataset_open(data, &ds))) return st;
    int preset = ds->has_split;
    if ((st = dn_dataset_split(ds, cfg))) goto fail;
    int cross = 0, within = 0, dropped = 0;
    if ((st = dn_dataset_dedup(ds, drop_dups, log, &cross, &within, &dropped))) goto fail;
    if (log) {
        fprintf(log, "%s: %d images, %d classes, %s split: train %d, val %d, test %d", data, ds->n, ds->nclasses,
                preset ? "official" : "stratified", dn_dataset_count(ds, DN_SPLIT_TRAIN, NULL),
                dn_dataset_count(ds, DN_SPLIT_VAL, NULL), dn_dataset_count(ds, DN_SPLIT_TEST, NULL));
        fprintf(log, "; duplicates: %d across splits/labels (%d dropped), %d within a split\n", cross, dropped,
                within);
    }
    if (split_manifest) {
        if ((st = dn_dataset_write_manifest(ds, split_manifest))) goto fail;
        if (log) fprintf(log, "wrote split manifest %s\n", split_manifest);
    }
    *out = ds;
    return DN_OK;
fail:
    dn_dataset_free(ds);
    return st;
}
