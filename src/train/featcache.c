/* Feature cache (see featcache.h). */
#include "train/featcache.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "train/loader.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FC_MAGIC "DNFCACH1"
/* What a cached row holds depends on code as well as on configuration: image
 * decoding, resizing (e.g. the antialiased random-resized-crop of 0.1.0+aa),
 * augmentation and the forward pass. The cache file name includes the library
 * version and this revision; bump it whenever such code changes the values a
 * row would get, so old caches are never reused silently. */
#define FC_CODE_REVISION 2

void dn_featcache_free(dn_featcache *c) {
    if (!c) return;
    dn_free_aligned(c->x);
    free(c->y);
    free(c->item);
    free(c->view);
    memset(c, 0, sizeof *c);
}

typedef struct rec { uint8_t key[32]; const float *feat; } rec;

static int rec_cmp(const void *a, const void *b) { return memcmp(((const rec *)a)->key, ((const rec *)b)->key, 32); }

static void record_key(const char *file_hex, int view, uint8_t key[32]) {
    char buf[96];
    int n = snprintf(buf, sizeof buf, "%s:%d", file_hex, view);
    dn_sha256(buf, (size_t)n, key);
}

int dn_featcache_describe(const dn_featcache_cfg *cfg, int dim, char *desc, size_t n) {
    char aug[64];
    dn_aug_format(cfg->aug.flags, aug, sizeof aug);
    return snprintf(desc, n,
                    "code=%s.r%d|model=%s|pp=%d,%d,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%d|aug=%s,%.4g,%.4g,%.4g|seed=%llu|dim=%d|stage=%d",
                    DN_VERSION, FC_CODE_REVISION, cfg->model_sha256 ? cfg->model_sha256 : "", cfg->pp.resize,
                    cfg->pp.crop, cfg->pp.mean[0], cfg->pp.mean[1], cfg->pp.mean[2], cfg->pp.std[0], cfg->pp.std[1],
                    cfg->pp.std[2], cfg->pp.bgr, aug, cfg->aug.scale_min, cfg->aug.jitter_b, cfg->aug.jitter_c,
                    (unsigned long long)cfg->seed, dim, cfg->stage > 0 && cfg->stage < 5 ? cfg->stage : 5);
}

static void cache_path(const dn_featcache_cfg *cfg, int dim, char *path, size_t n) {
    char desc[600], hex[65];
    uint8_t d[32];
    int len = dn_featcache_describe(cfg, dim, desc, sizeof desc);
    if (len < 0 || (size_t)len >= sizeof desc) len = (int)strlen(desc);
    dn_sha256(desc, (size_t)len, d);
    dn_sha256_hex(d, hex);
    snprintf(path, n, "%s/%.32s.dnfc", cfg->dir, hex);
}

/* Reads a cache file: *blob holds the records, *recs sorted index into it.
 * A missing file is not an error (0 records); a malformed one is reported on
 * stderr and treated as empty. */
static void read_cache(const char *path, int dim, uint8_t **blob, rec **recs, int64_t *nrec) {
    *blob = NULL;
    *recs = NULL;
    *nrec = 0;
    uint8_t *data;
    size_t len;
    if (access(path, F_OK) != 0) return;
    if (dn_read_file(path, (size_t)1 << 36, &data, &len) != DN_OK) {
        fprintf(stderr, "warning: feature cache %s unreadable (%s); rebuilding\n", path, dn_last_error());
        return;
    }
    size_t rsz = 32 + (size_t)dim * 4;
    uint32_t fdim;
    uint64_t count;
    if (len < 24 || memcmp(data, FC_MAGIC, 8) != 0) goto bad;
    memcpy(&fdim, data + 8, 4);
    memcpy(&count, data + 16, 8);
    if ((int)fdim != dim || count > (len - 24) / rsz || 24 + count * rsz != len) goto bad;
    rec *r = dn_malloc((size_t)(count ? count : 1) * sizeof *r);
    if (!r) { free(data); return; }
    for (uint64_t i = 0; i < count; i++) {
        memcpy(r[i].key, data + 24 + i * rsz, 32);
        r[i].feat = (const float *)(data + 24 + i * rsz + 32);
    }
    qsort(r, (size_t)count, sizeof *r, rec_cmp);
    *blob = data;
    *recs = r;
    *nrec = (int64_t)count;
    return;
bad:
    fprintf(stderr, "warning: feature cache %s is damaged or from another model layout; rebuilding\n", path);
    free(data);
}

static dn_status write_cache(const char *path, int dim, const rec *old, int64_t nold, const uint8_t (*keys)[32],
                             const float *feats, int64_t nnew) {
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return dn_fail(DN_ERR_IO, "%s: cannot write feature cache: %s", tmp, strerror(errno));
    uint32_t d = (uint32_t)dim, z = 0;
    uint64_t count = (uint64_t)(nold + nnew);
    int ok = fwrite(FC_MAGIC, 1, 8, f) == 8 && fwrite(&d, 4, 1, f) == 1 && fwrite(&z, 4, 1, f) == 1 &&
             fwrite(&count, 8, 1, f) == 1;
    for (int64_t i = 0; ok && i < nold; i++)
        ok = fwrite(old[i].key, 1, 32, f) == 32 && fwrite(old[i].feat, 4, (size_t)dim, f) == (size_t)dim;
    for (int64_t i = 0; ok && i < nnew; i++)
        ok = fwrite(keys[i], 1, 32, f) == 32 && fwrite(feats + (size_t)i * dim, 4, (size_t)dim, f) == (size_t)dim;
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return dn_fail(DN_ERR_IO, "%s: cannot write feature cache", path);
    }
    return DN_OK;
}

/* Validates cfg against the session; the cached stage (5 = pooled features)
 * and its per-image feature count. */
static dn_status check_cfg(dn_session *s, const dn_featcache_cfg *cfg, int *stage_out, int *dim_out) {
    int stage = cfg->stage > 0 && cfg->stage < 5 ? cfg->stage : 5;
    if (cfg->stage < 0 || cfg->stage > 5) return dn_fail(DN_ERR_ARG, "feature cache: stage %d out of range", cfg->stage);
    int ch, hh, ww, ih, iw;
    dn_session_stage_shape(s, stage, &ch, &hh, &ww);
    dn_session_input_size(s, &ih, &iw);
    if (ih != cfg->pp.crop || iw != cfg->pp.crop)
        return dn_fail(DN_ERR_ARG, "feature cache: session input %dx%d does not match preprocessing crop %d", ih, iw,
                       cfg->pp.crop);
    if (cfg->views < 0 || cfg->nsubset < 0 || cfg->batch < 1 || cfg->batch > dn_session_max_batch(s))
        return dn_fail(DN_ERR_ARG, "feature cache: bad configuration (views %d, batch %d)", cfg->views, cfg->batch);
    if (cfg->dir && (!cfg->model_sha256 || !cfg->model_sha256[0]))
        return dn_fail(DN_ERR_ARG, "feature cache: a disk cache needs the model's sha256");
    *stage_out = stage;
    *dim_out = ch * hh * ww;
    return DN_OK;
}

/* Hashes the subset's files (fhex; salt seeds each item's augmentation), reads
 * the disk cache into blob/recs/nrec and copies every cached row into out,
 * marking it in have. Returns -1 when out of memory. */
static int reuse_cached(const char **paths, int ns, int64_t rows, int dim, char (*fhex)[65], uint64_t *salt,
                        const char *cpath, uint8_t **blob, rec **recs, int64_t *nrec, dn_featcache *out, unsigned char *have, dn_featcache_stats *stats) {
    unsigned char *bad = dn_calloc((size_t)ns + 1, 1);
    if (!bad) return -1;
    for (int i = 0; i < ns; i++) {
        if (dn_sha256_file(paths[i], fhex[i]) != DN_OK) {
            /* unreadable: leave it to the loader to report/count */
            snprintf(fhex[i], 65, "unreadable-%d", i);
            bad[i] = 1;
        }
        uint64_t v = 0;
        for (int k = 0; k < 16 && fhex[i][k]; k++) v = v * 131 + (unsigned char)fhex[i][k];
        salt[i] = v;
    }
    read_cache(cpath, dim, blob, recs, nrec);
    for (int64_t r = 0; r < rows && *nrec; r++) {
        if (bad[r % ns]) continue;
        rec key;
        record_key(fhex[r % ns], (int)(r / ns), key.key);
        rec *hit = bsearch(&key, *recs, (size_t)*nrec, sizeof **recs, rec_cmp);
        if (hit) {
            memcpy(out->x + (size_t)r * dim, hit->feat, (size_t)dim * sizeof(float));
            have[r] = 1;
            stats->reused++;
        }
    }
    free(bad);
    return 0;
}

/* Drops the rows not marked in have (images the loader could not read). */
static void drop_missing_rows(dn_featcache *out, const unsigned char *have, int64_t rows, int dim) {
    int64_t m = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (!have[r]) continue;
        if (m != r) {
            memcpy(out->x + (size_t)m * dim, out->x + (size_t)r * dim, (size_t)dim * sizeof(float));
            out->y[m] = out->y[r];
            out->item[m] = out->item[r];
            out->view[m] = out->view[r];
        }
        m++;
    }
    out->n = m;
}

dn_status dn_featcache_build(dn_session *s, const dn_featcache_cfg *cfg, dn_featcache *out,
                             dn_featcache_stats *stats) {
    memset(out, 0, sizeof *out);
    memset(stats, 0, sizeof *stats);
    double t0 = dn_now();
    int stage = 5, dim = 0;
    dn_status cst = check_cfg(s, cfg, &stage, &dim);
    if (cst) return cst;
    int ns = cfg->nsubset, nv = cfg->views + 1;
    int64_t rows = (int64_t)ns * nv;
    dn_status st = DN_ERR_NOMEM;
    const char **paths = dn_calloc((size_t)ns + 1, sizeof *paths);
    int *labels = dn_calloc((size_t)ns + 1, sizeof *labels);
    int *order = dn_calloc((size_t)ns + 1, sizeof *order);
    uint64_t *salt = NULL;
    char (*fhex)[65] = NULL;
    unsigned char *have = dn_calloc((size_t)rows + 1, 1);
    uint8_t (*newkeys)[32] = NULL;
    float *newfeat = NULL, *fbuf = NULL;
    int64_t nnew = 0;
    uint8_t *blob = NULL;
    rec *recs = NULL;
    int64_t nrec = 0;
    dn_loader *L = NULL;
    char cpath[1100] = "";
    out->dim = dim;
    out->stage = stage;
    out->x = dn_alloc_aligned((size_t)(rows ? rows : 1) * dim * sizeof(float));
    out->y = dn_calloc((size_t)rows + 1, sizeof(int));
    out->item = dn_calloc((size_t)rows + 1, sizeof(int));
    out->view = dn_calloc((size_t)rows + 1, sizeof(int));
    fbuf = dn_alloc_aligned((size_t)cfg->batch * dim * sizeof(float));
    if (!paths || !labels || !order || !have || !out->x || !out->y || !out->item || !out->view || !fbuf) goto fail;
    for (int i = 0; i < ns; i++) {
        paths[i] = cfg->paths[cfg->subset[i]];
        labels[i] = cfg->labels[cfg->subset[i]];
    }
    for (int64_t r = 0; r < rows; r++) {
        out->y[r] = labels[r % ns];
        out->item[r] = cfg->subset[r % ns];
        out->view[r] = (int)(r / ns);
    }
    if (cfg->dir) {
        salt = dn_calloc((size_t)ns + 1, sizeof *salt);
        fhex = dn_calloc((size_t)ns + 1, sizeof *fhex);
        newkeys = dn_calloc((size_t)rows + 1, 32);
        newfeat = dn_alloc_aligned((size_t)(rows ? rows : 1) * dim * sizeof(float));
        if (!salt || !fhex || !newkeys || !newfeat) goto fail;
        cache_path(cfg, dim, cpath, sizeof cpath);
        if (reuse_cached(paths, ns, rows, dim, fhex, salt, cpath, &blob, &recs, &nrec, out, have, stats))
            goto fail;
    }
    dn_loader_cfg lc;
    memset(&lc, 0, sizeof lc);
    lc.paths = paths;
    lc.labels = labels;
    lc.n = ns;
    lc.pp = cfg->pp;
    lc.aug = cfg->aug;
    lc.batch = cfg->batch;
    lc.workers = cfg->workers > 0 ? cfg->workers : 1;
    lc.seed = cfg->seed;
    lc.strict = cfg->strict;
    lc.cache_decoded = cfg->views > 0; /* every view decodes the same files */
    lc.item_salt = salt;
    if ((st = dn_loader_new(&lc, &L))) goto fail;
    long todo = 0; /* one progress line with ETA over all views (terminal only, core/progress.h) */
    for (int64_t r = 0; r < rows; r++) todo += !have[r];
    dn_progress pg;
    dn_progress_start(&pg, stage == 5 ? "features" : "stage outputs", todo);
    pg.on = pg.on && cfg->verbose;
    for (int v = 0; v < nv; v++) {
        int cnt = 0;
        for (int i = 0; i < ns; i++)
            if (!have[(int64_t)v * ns + i] && !dn_loader_item_failed(L, i)) order[cnt++] = i;
        if (!cnt) continue;
        dn_progress_clear(&pg);
        if (cfg->verbose) fprintf(stderr, "features: view %d/%d, %d images\n", v, nv - 1, cnt);
        if ((st = dn_loader_start(L, order, cnt, v > 0, (uint64_t)v))) goto fail;
        for (;;) {
            const float *x;
            const int *lab, *it;
            int n;
            dn_progress_update(&pg, (long)stats->computed);
            if ((st = dn_loader_next(L, &x, &lab, &it, &n))) { dn_progress_end(&pg); goto fail; }
            if (!n) break;
            if ((st = stage == 5 ? dn_session_features(s, x, n, fbuf) : dn_session_forward_to(s, x, n, stage, fbuf))) {
                dn_progress_end(&pg);
                goto fail;
            }
            for (int j = 0; j < n; j++) {
                int64_t r = (int64_t)v * ns + it[j];
                memcpy(out->x + (size_t)r * dim, fbuf + (size_t)j * dim, (size_t)dim * sizeof(float));
                have[r] = 1;
                stats->computed++;
                if (cfg->dir) {
                    record_key(fhex[it[j]], v, newkeys[nnew]);
                    memcpy(newfeat + (size_t)nnew * dim, fbuf + (size_t)j * dim, (size_t)dim * sizeof(float));
                    nnew++;
                }
            }
        }
    }
    dn_progress_end(&pg);
    stats->skipped = dn_loader_skipped(L);
    drop_missing_rows(out, have, rows, dim);
    if (cfg->dir && nnew) {
        st = write_cache(cpath, dim, recs, nrec, (const uint8_t(*)[32])newkeys, newfeat, nnew);
        if (st) fprintf(stderr, "warning: %s (features kept in memory only)\n", dn_last_error());
    }
    st = DN_OK;
    stats->seconds = dn_now() - t0;
    goto done;
fail:
    dn_featcache_free(out);
done:
    dn_loader_free(L);
    free(paths);
    free(labels);
    free(order);
    free(salt);
    free(fhex);
    free(have);
    free(newkeys);
    dn_free_aligned(newfeat);
    dn_free_aligned(fbuf);
    free(blob);
    free(recs);
    return st;
}
