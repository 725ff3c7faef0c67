/* Fine-tuning driver (see trainer.h): data, the stages, the final evaluation
 * and the model's metadata. The parts live in train_run.h's files. */
#include "train/trainer.h"
#include "core/json.h"
#include "core/sha256.h"
#include "io/modelfile.h"
#include "nn/engine.h"
#include "ood/ood.h"
#include "train/featcache.h"
#include "train/loader.h"
#include "train/loss.h"
#include "train/net.h"
#include "train/train_run.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------ evaluation */

/* Metrics of model m (eval mode, through the inference engine) on items. */
static dn_status eval_items(run *r, const dn_model *m, const char **paths, const int *labels, int n, unsigned char *bad,
                            dn_eval_metrics *out) {
    const dn_train_cfg *c = r->cfg;
    memset(out, 0, sizeof *out);
    int k = m->num_classes;
    dn_session *s = NULL;
    dn_loader *L = NULL;
    float *probs = dn_malloc((size_t)(n ? n : 1) * k * sizeof(float));
    int *y = dn_malloc((size_t)(n ? n : 1) * sizeof(int)), *order = dn_malloc((size_t)(n ? n : 1) * sizeof(int));
    dn_status st = DN_ERR_NOMEM;
    if (!probs || !y || !order) goto done;
    dn_session_opts so = {c->batch, c->threads, c->image_size, c->image_size, -1};
    if ((st = dn_session_new_ex(m, &so, &s))) goto done;
    dn_loader_cfg lc;
    memset(&lc, 0, sizeof lc);
    lc.paths = paths;
    lc.labels = labels;
    lc.n = n;
    lc.pp = m->pp;
    lc.batch = c->batch;
    lc.workers = c->workers > 0 ? c->workers : 1;
    lc.seed = c->seed;
    lc.strict = c->strict;
    if ((st = dn_loader_new(&lc, &L))) goto done;
    for (int i = 0; i < n; i++) order[i] = i;
    if ((st = dn_loader_start(L, order, n, 0, 0))) goto done;
    int got = 0;
    for (;;) {
        const float *x;
        const int *lab, *it;
        int nb;
        if ((st = dn_loader_next(L, &x, &lab, &it, &nb))) goto done;
        if (!nb) break;
        if ((st = dn_session_forward(s, x, nb, probs + (size_t)got * k))) goto done;
        for (int j = 0; j < nb; j++) {
            dn_softmax_row(probs + (size_t)(got + j) * k, k, probs + (size_t)(got + j) * k);
            y[got + j] = lab[j];
        }
        got += nb;
    }
    for (int i = 0; i < n && dn_loader_skipped(L); i++)
        if (dn_loader_item_failed(L, i)) tr_note_skipped(r, (const char *const *)paths, bad, i);
    st = dn_eval_metrics_compute(k, got, y, probs, NULL, k < 5 ? k : 5, out);
done:
    dn_loader_free(L);
    dn_session_free(s);
    free(probs);
    free(y);
    free(order);
    return st;
}

/* ------------------------------------------------------------ cached activations */

/* Names the items of `subset` that have no original-view row in fc (unreadable). */
static void note_uncached(run *r, const dn_featcache *fc, const char **paths, unsigned char *bad, int n) {
    unsigned char *seen = dn_calloc((size_t)(n ? n : 1), 1);
    if (!seen) return;
    for (int64_t i = 0; i < fc->n; i++)
        if (fc->view[i] == 0 && fc->item[i] >= 0 && fc->item[i] < n) seen[fc->item[i]] = 1;
    for (int i = 0; i < n; i++)
        if (!seen[i]) tr_note_skipped(r, (const char *const *)paths, bad, i);
    free(seen);
}

/* Cached activations after engine stage `stage` (5 = pooled features, 3 =
 * layer3 outputs) of the training images + their fixed augmented views, and
 * of the validation images. */
static dn_status build_caches(run *r, int stage, dn_featcache *tr, dn_featcache *va, double *feat_s) {
    const dn_train_cfg *c = r->cfg;
    dn_session *s = NULL;
    dn_featcache_stats fs;
    dn_status st;
    int *sub = dn_malloc((size_t)(r->ntr > r->nva ? r->ntr : r->nva) * sizeof(int) + sizeof(int));
    if (!sub) return DN_ERR_NOMEM;
    dn_session_opts so = {c->batch, c->threads, c->image_size, c->image_size, -1};
    if ((st = dn_session_new_ex(r->m, &so, &s))) goto done;
    dn_featcache_cfg fc;
    memset(&fc, 0, sizeof fc);
    fc.pp = r->m->pp;
    fc.aug = c->aug;
    fc.seed = c->seed;
    fc.batch = c->batch;
    fc.workers = c->workers;
    fc.strict = c->strict;
    fc.stage = stage;
    /* the backbone's identity is the weights file (the conv impl does not matter: fp32 exact);
     * random weights: nothing to key a disk cache on */
    fc.dir = r->src_sha[0] ? c->cache_dir : NULL;
    fc.model_sha256 = r->src_sha[0] ? r->src_sha : "random-init";
    fc.verbose = !c->quiet;
    for (int i = 0; i < r->ntr; i++) sub[i] = i;
    fc.paths = r->tr_paths;
    fc.labels = r->tr_labels;
    fc.subset = sub;
    fc.nsubset = r->ntr;
    fc.views = c->aug.flags ? c->views : 0;
    double t0 = dn_now();
    if ((st = dn_featcache_build(s, &fc, tr, &fs))) goto done;
    note_uncached(r, tr, r->tr_paths, r->tr_bad, r->ntr);
    *feat_s += fs.seconds;
    tr_log(r, "%s: %lld rows (%lld computed, %lld from disk cache) in %.1fs", stage == DN_STAGE_LAYER3 ? "layer3 outputs" : "features",
           (long long)tr->n, (long long)fs.computed, (long long)fs.reused, fs.seconds);
    for (int i = 0; i < r->nva; i++) sub[i] = i;
    fc.paths = r->va_paths;
    fc.labels = r->va_labels;
    fc.nsubset = r->nva;
    fc.views = 0;
    if ((st = dn_featcache_build(s, &fc, va, &fs))) goto done;
    note_uncached(r, va, r->va_paths, r->va_bad, r->nva);
    *feat_s += fs.seconds;
    tr_clock_add(r, tr_cache_units(r, stage == DN_STAGE_LAYER3 ? DN_STAGE_LAYER4 : DN_STAGE_HEAD,
                                   (long)r->ntr * (1 + fc.views) + r->nva),
                 dn_now() - t0);
done:
    free(sub);
    dn_session_free(s);
    return st;
}

/* ------------------------------------------------------------ stages */

static const char *stage_name(int first) {
    return first == 0 ? "everything" : first == 4 ? "layer4 + head" : first == 5 ? "head only" : "upper layers";
}

typedef struct head_report_ctx { run *r; int stage, epochs; double best_f1, best_loss; } head_report_ctx;
static void head_report(void *vctx, int ep, double loss, const dn_eval_metrics *val, double val_loss, double secs,
                        int improved) {
    head_report_ctx *h = vctx;
    run *r = h->r;
    (void)improved;
    /* "best" in the log means better than every epoch so far, earlier stages included */
    int global_better = val && dn_train_better(val->macro_f1, val_loss, h->best_f1, h->best_loss);
    if (global_better) { h->best_f1 = val->macro_f1; h->best_loss = val_loss; }
    double ips = secs > 0 ? (double)r->ntr * (1 + r->cfg->views) / secs : 0;
    tr_epoch_report(r, h->stage, ep, h->epochs, loss, val, val_loss, secs, ips, global_better);
    tr_clock_add(r, tr_epoch_units(r, h->stage, r->ntr, r->nva, DN_STAGE_HEAD), secs);
    r->gep++;
}

static dn_status stage_head(run *r, int si, double *feat_s) {
    const dn_train_cfg *c = r->cfg;
    dn_featcache tr = {0}, va = {0};
    dn_status st;
    tr_log(r, "stage %d: head only, computing features of %d training images x %d views", si + 1, r->ntr,
           1 + (c->aug.flags ? c->views : 0));
    if ((st = build_caches(r, DN_STAGE_HEAD, &tr, &va, feat_s))) goto done;
    int ep_base = r->gep;
    head_report_ctx hc = {r, si, c->stages[si].epochs, r->best_f1, r->best_loss};
    dn_head_fit_result hr;
    if ((st = dn_head_fit(r->m, &tr, &va, c, r->class_w, c->stages[si].epochs, &r->rng, head_report, &hc, &hr))) goto done;
    tr_clock_skip(r, (c->stages[si].epochs - hr.epochs_run) * tr_epoch_units(r, si, r->ntr, r->nva, DN_STAGE_HEAD));
    /* dn_head_fit restored its best head; keep it if it beats earlier stages */
    if (r->best_epoch < 0 || dn_train_better(hr.best_f1, hr.best_loss, r->best_f1, r->best_loss)) {
        r->best_f1 = hr.best_f1;
        r->best_loss = hr.best_loss;
        r->best_epoch = ep_base + hr.best_epoch;
        tr_model_copy_params(r->best, r->m);
        if ((st = tr_save_model_atomic(r->best, c->out, r->out_tmp))) goto done;
    } else {
        tr_model_copy_params(r->m, r->best);
    }
    tr_log(r, "head training: %d epochs in %.3fs (%.2f ms/epoch over %lld cached rows)", hr.epochs_run, hr.seconds,
           1e3 * hr.seconds / (hr.epochs_run ? hr.epochs_run : 1), (long long)tr.n);
    st = tr_save_checkpoint(r, si, c->stages[si].epochs, 0, NULL);
done:
    dn_featcache_free(&tr);
    dn_featcache_free(&va);
    return st;
}

/* The optimizer of a network stage: its trainable parameters, stepping on the net's
 * threads (same result as one thread), and, when resuming inside this stage, the
 * saved optimizer state and epoch counters. */
static dn_status net_optim(const dn_train_cfg *c, dn_net *net, const resume_state *rs, int si, dn_optim **o,
                           int *start_ep, int *bad) {
    int np;
    const dn_param *params = dn_net_params(net, &np);
    dn_status st = tr_make_optim(c, params, np, o);
    if (st) return st;
    dn_optim_set_pool(*o, dn_net_pool(net));
    *start_ep = 0;
    *bad = 0;
    if (rs && rs->active && rs->stage == si) {
        *start_ep = rs->stage_epochs_done;
        *bad = rs->bad_epochs;
        if (*start_ep > 0 && (st = dn_optim_state_load(*o, &rs->ts))) return dn_fail_prefix(st, "%s", c->resume);
    }
    return DN_OK;
}

/* A network stage: layer4 + head on cached layer3 outputs (cached = 1), or the
 * net from its first trainable stage on freshly augmented images every epoch. */
static dn_status stage_net(run *r, int si, int cached, resume_state *rs, double *feat_s) {
    const dn_train_cfg *c = r->cfg;
    int first = c->stages[si].first_trainable;
    dn_net *net = NULL;
    dn_optim *o = NULL;
    dn_loader *Ltr = NULL, *Lva = NULL;
    dn_featcache ctr = {0}, cva = {0};
    tr_batches tb = {0}, vb = {0};
    dn_status st;
    if (cached) {
        tr_log(r, "stage %d: layer4 + head on cached layer3 outputs of %d training images x %d views", si + 1, r->ntr,
               1 + (c->aug.flags ? c->views : 0));
        if ((st = build_caches(r, DN_STAGE_LAYER3, &ctr, &cva, feat_s))) goto done;
        tb = (tr_batches){&ctr, NULL, ctr.y, (int)ctr.n, DN_STAGE_LAYER4, NULL, NULL};
        vb = (tr_batches){&cva, NULL, cva.y, (int)cva.n, DN_STAGE_LAYER4, NULL, NULL};
    } else {
        dn_loader_cfg lc;
        memset(&lc, 0, sizeof lc);
        lc.paths = r->tr_paths;
        lc.labels = r->tr_labels;
        lc.n = r->ntr;
        lc.pp = r->m->pp;
        lc.aug = c->aug;
        lc.batch = c->batch;
        lc.workers = c->workers > 0 ? c->workers : 1;
        lc.seed = c->seed;
        lc.strict = c->strict;
        lc.cache_decoded = 1;
        if ((st = dn_loader_new(&lc, &Ltr))) goto done;
        lc.paths = r->va_paths;
        lc.labels = r->va_labels;
        lc.n = r->nva;
        if ((st = dn_loader_new(&lc, &Lva))) goto done;
        tb = (tr_batches){NULL, Ltr, r->tr_labels, r->ntr, 0, (const char *const *)r->tr_paths, r->tr_bad};
        vb = (tr_batches){NULL, Lva, r->va_labels, r->nva, 0, (const char *const *)r->va_paths, r->va_bad};
    }
    if ((st = dn_net_new(r->m, cached ? DN_STAGE_LAYER4 : first, c->batch, c->image_size, c->image_size, c->threads, &net)))
        goto done;
    int start_ep = 0, bad = 0, np;
    if ((st = net_optim(c, net, rs, si, &o, &start_ep, &bad))) goto done;
    dn_net_params(net, &np);
    if (!cached)
        tr_log(r, "stage %d: %s trainable, %d epochs, %d trainable tensors", si + 1, stage_name(first),
               c->stages[si].epochs, np);
    st = tr_run_epochs(r, si, net, o, &tb, &vb, start_ep, bad);
done:
    dn_featcache_free(&ctr);
    dn_featcache_free(&cva);
    dn_loader_free(Ltr);
    dn_loader_free(Lva);
    dn_optim_free(o);
    dn_net_free(net);
    return st;
}

/* layer4 + head stages train on cached layer3 outputs (layers up to layer3 are
 * frozen, so their output for the original image and the K fixed views is
 * computed once) when the cache fits DN_TRAIN_CACHE_MAX_MB (default 6000). */
static size_t cache_budget(void) {
    const char *e = getenv("DN_TRAIN_CACHE_MAX_MB");
    long mb = e && *e ? atol(e) : 6000;
    return (size_t)(mb > 0 ? mb : 0) << 20;
}

int tr_l4_cached(const run *r, int si) {
    const dn_train_cfg *c = r->cfg;
    if (c->stages[si].first_trainable != DN_STAGE_LAYER4 || c->no_cache) return 0;
    int ch = r->m ? r->m->widths[2] : 256, h = c->image_size;
    /* stem /4, layer2 /2, layer3 /2 */
    for (int i = 0; i < 4; i++) h = (h + 1) / 2;
    size_t per = (size_t)ch * h * h * sizeof(float);
    size_t rows = (size_t)r->ntr * (1 + (c->aug.flags ? c->views : 0)) + (size_t)r->nva;
    return per * rows <= cache_budget();
}

/* ------------------------------------------------------------ run */

static dn_status metrics_str(const dn_eval_metrics *m, const dn_model *md, char **out) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return dn_fail(DN_ERR_NOMEM, "out of memory formatting metrics");
    dn_eval_metrics_json(m, (const char *const *)md->class_names, f);
    fclose(f);
    *out = buf;
    return DN_OK;
}

/* The split (written or reused), the three parts, class weights. */
static dn_status prepare_data(run *r, const char *split_path, dn_train_result *res) {
    const dn_train_cfg *c = r->cfg;
    dn_status st;
    if ((st = dn_dataset_prepare(c->data, split_path, &c->split, c->drop_dups, c->quiet ? NULL : stderr, &r->ds))) return st;
    if (c->add_data) { /* training split only: val/test stay what the previous model was measured on */
        int added = 0, cross = 0, within = 0, dropped = 0;
        if ((st = dn_dataset_add(r->ds, c->add_data, DN_SPLIT_TRAIN, &added)) ||
            (st = dn_dataset_dedup(r->ds, c->drop_dups, c->quiet ? NULL : stderr, &cross, &within, &dropped)))
            return dn_fail_prefix(st, "--add-data");
        if (!c->quiet) fprintf(stderr, "--add-data %s: %d images added to the training split\n", c->add_data, added);
    }
    r->k = r->ds->nclasses;
    if ((st = dn_dataset_select(r->ds, DN_SPLIT_TRAIN, &r->tr_paths, &r->tr_labels, &r->ntr))) return st;
    if ((st = dn_dataset_select(r->ds, DN_SPLIT_VAL, &r->va_paths, &r->va_labels, &r->nva))) return st;
    if ((st = dn_dataset_select(r->ds, DN_SPLIT_TEST, &r->te_paths, &r->te_labels, &r->nte))) return st;
    if (r->ntr < 1) return dn_fail(DN_ERR_ARG, "%s: no training images in the split", split_path);
    if (r->nva < 1) return dn_fail(DN_ERR_ARG, "%s: no validation images in the split (needed for early stopping)", split_path);
    r->tr_bad = dn_calloc((size_t)r->ntr, 1);
    r->va_bad = dn_calloc((size_t)r->nva, 1);
    r->te_bad = dn_calloc((size_t)(r->nte ? r->nte : 1), 1);
    int *cnt = dn_calloc((size_t)r->k, sizeof(int));
    if (!cnt || !r->tr_bad || !r->va_bad || !r->te_bad) { free(cnt); return DN_ERR_NOMEM; }
    dn_dataset_count(r->ds, DN_SPLIT_TRAIN, cnt);
    int present = 0;
    for (int i = 0; i < r->k; i++) present += cnt[i] > 0;
    if (present < 2) {
        free(cnt);
        return dn_fail(DN_ERR_ARG, "%s: the training split holds %d class(es); need at least 2", split_path, present);
    }
    if (c->class_weights) {
        r->class_w = dn_calloc((size_t)r->k, sizeof(float));
        if (!r->class_w) { free(cnt); return DN_ERR_NOMEM; }
        dn_train_class_weights(c, cnt, r->k, r->class_w);
    }
    free(cnt);
    res->nclasses = r->k;
    res->classes = dn_calloc((size_t)r->k, sizeof(char *));
    if (!res->classes) return DN_ERR_NOMEM;
    for (int i = 0; i < r->k; i++)
        if (!(res->classes[i] = dn_strdup(r->ds->classes[i]))) return DN_ERR_NOMEM;
    res->ntrain = r->ntr;
    res->nval = r->nva;
    res->ntest = r->nte;
    tr_log(r, "data: %d classes, %d train / %d val / %d test images; split manifest %s", r->k, r->ntr, r->nva, r->nte,
           split_path);
    return DN_OK;
}

/* Provenance and results into the kept model's metadata, then the final save. */
static dn_status save_final(run *r, const dn_train_result *res, const char *split_path) {
    const dn_train_cfg *c = r->cfg;
    dn_sb b = {0};
    tr_recipe_json(c, r->src_sha, &b);
    char *vj = NULL, *tj = NULL, hex[65] = "";
    dn_sha256_file(split_path, hex);
    dn_status st = b.oom ? DN_ERR_NOMEM : dn_meta_set(&r->best->meta, "train_recipe", b.s);
    if (!st && !(st = metrics_str(&res->val, r->best, &vj))) st = dn_meta_set(&r->best->meta, "train_val_metrics", vj);
    if (!st && r->nte > 0 && !(st = metrics_str(&res->test, r->best, &tj)))
        st = dn_meta_set(&r->best->meta, "train_test_metrics", tj);
    if (!st) st = dn_meta_set(&r->best->meta, "split_manifest_sha256", hex);
    const char *base = strrchr(split_path, '/');
    if (!st) st = dn_meta_set(&r->best->meta, "split_manifest", base ? base + 1 : split_path);
    char num[32];
    snprintf(num, sizeof num, "%d", r->skipped);
    if (!st) st = dn_meta_set(&r->best->meta, "train_skipped_images", num);
    free(vj);
    free(tj);
    dn_sb_free(&b);
    if (!st && r->src_sha[0]) memcpy(r->best->source_sha256, r->src_sha, sizeof r->best->source_sha256);
    if (!st && r->nva > 0) { /* unknown-input detector + Grad-CAM colour scale (docs/ood.md); a failure only warns */
        int sk;
        if (dn_ood_calibrate_files(r->best, r->tr_paths, r->tr_labels, r->ntr, r->va_paths, r->nva, NULL, 32, c->threads, &sk))
            tr_log(r, "warning: unknown-input detector not fitted: %s", dn_last_error());
        else
            tr_log(r, "unknown-input detector: threshold %.4g on %d val images", (double)r->best->ood->threshold, r->nva);
    }
    if (!st) st = tr_save_model_atomic(r->best, c->out, r->out_tmp);
    return st;
}

dn_status dn_train_run(const dn_train_cfg *c, dn_train_result *res) {
    memset(res, 0, sizeof *res);
    run R;
    memset(&R, 0, sizeof R);
    run *r = &R;
    r->cfg = c;
    r->t_start = dn_now();
    r->clock.t0 = r->t_start;
    r->best_f1 = -1;
    r->best_loss = INFINITY;
    r->best_epoch = -1;
    resume_state rs;
    memset(&rs, 0, sizeof rs);
    dn_status st;
    double feat_s = 0;
    if ((st = tr_check_cfg(c))) return st;
    /* inputs before outputs: nothing (split manifest, checkpoint) is written or removed
     * until the weights load and a checkpoint to resume from is readable */
    if ((st = tr_open_weights(r))) return st;
    if (c->resume && access(c->resume, R_OK) != 0) {
        st = dn_fail(DN_ERR_IO, "%s: cannot read the checkpoint to resume from", c->resume);
        goto done;
    }
    dn_rng_seed(&r->rng, c->seed);
    snprintf(r->ckpt, sizeof r->ckpt, "%s", c->checkpoint ? c->checkpoint : "");
    if (!c->checkpoint) snprintf(r->ckpt, sizeof r->ckpt, "%s.ckpt", c->out);
    snprintf(r->out_tmp, sizeof r->out_tmp, "%s.tmp.%d", c->out, (int)getpid());
    char split_path[1024];
    if (c->split_manifest) snprintf(split_path, sizeof split_path, "%s", c->split_manifest);
    else {
        /* The default split file belongs to this --out: a resumed run reuses it,
         * a fresh run re-splits (it may have other data) and overwrites it. */
        snprintf(split_path, sizeof split_path, "%s.split.csv", c->out);
        if (!c->resume && c->data) unlink(split_path);
    }
    snprintf(res->split_manifest, sizeof res->split_manifest, "%s", split_path);
    if ((st = prepare_data(r, split_path, res))) goto done;

    /* model */
    if ((st = tr_attach_head(r))) goto done;
    if ((st = dn_model_clone(r->m, &r->best))) goto done;
    if (c->resume && (st = tr_load_resume(r, &rs))) goto done;
    if (!rs.active) {
        /* a fresh run must not silently continue someone else's checkpoint */
        unlink(r->ckpt);
    }
    tr_clock_plan(r, rs.active ? rs.stage : 0, rs.active ? rs.stage_epochs_done : 0);
    for (int si = rs.active ? rs.stage : 0; si < c->nstages; si++) {
        int done_eps = rs.active && rs.stage == si ? rs.stage_epochs_done : 0;
        if (done_eps >= c->stages[si].epochs) continue;
        /* each stage starts from the best model so far */
        if (r->best_epoch >= 0) tr_model_copy_params(r->m, r->best);
        int before = r->best_epoch;
        if (c->stages[si].first_trainable == DN_STAGE_HEAD) st = stage_head(r, si, &feat_s);
        else st = stage_net(r, si, tr_l4_cached(r, si), &rs, &feat_s);
        if (st) goto done;
        if (before >= 0 && r->best_epoch == before) {
            res->warnings |= DN_TRAIN_WARN_STAGE_DISCARDED;
            tr_warn(r, "stage %d (%s, %d epochs) never beat the model it started from (validation macro-F1 %.4f, loss %.4f "
                       "at epoch %d); it was discarded", si + 1, stage_name(c->stages[si].first_trainable),
                    c->stages[si].epochs, r->best_f1, r->best_loss, r->best_epoch + 1);
        }
    }
    res->epochs_run = r->gep;
    res->best_epoch = r->best_epoch;
    res->best_val_f1 = r->best_f1;

    /* final evaluation of the kept model */
    if ((st = eval_items(r, r->best, r->va_paths, r->va_labels, r->nva, r->va_bad, &res->val))) goto done;
    if (r->nte > 0 && (st = eval_items(r, r->best, r->te_paths, r->te_labels, r->nte, r->te_bad, &res->test))) goto done;
    if (res->val.ece > DN_TRAIN_ECE_WARN) {
        res->warnings |= DN_TRAIN_WARN_POOR_CALIBRATION;
        tr_warn(r, "the kept model is poorly calibrated: validation ECE %.3f (> %.2f); its confidences overstate or "
                   "understate accuracy (calibrate with eval before using confidence thresholds)", res->val.ece,
                DN_TRAIN_ECE_WARN);
    }
    if (r->skipped) res->warnings |= DN_TRAIN_WARN_SKIPPED;
    res->skipped = r->skipped;
    res->feature_seconds = feat_s;
    res->seconds = dn_now() - r->t_start;
    if ((st = save_final(r, res, split_path))) goto done;
    if (!c->keep_checkpoint) unlink(r->ckpt);
done:
    dn_tensors_free(&rs.ts);
    free(r->class_w);
    free(r->tr_paths); free(r->tr_labels); free(r->tr_bad);
    free(r->va_paths); free(r->va_labels); free(r->va_bad);
    free(r->te_paths); free(r->te_labels); free(r->te_bad);
    dn_model_free(r->m);
    dn_model_free(r->best);
    dn_dataset_free(r->ds);
    if (st) dn_train_result_free(res);
    return st;
}
