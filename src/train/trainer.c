/* Fine-tuning driver (see trainer.h). */
#include "train/trainer.h"
#include "core/json.h"
#include "core/sha256.h"
#include "io/modelfile.h"
#include "nn/engine.h"
#include "train/checkpoint.h"
#include "train/featcache.h"
#include "train/loader.h"
#include "train/loss.h"
#include "train/net.h"
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void dn_train_cfg_default(dn_train_cfg *c) {
    memset(c, 0, sizeof *c);
    dn_split_cfg_default(&c->split);
    c->drop_dups = 1;
    c->weights = NULL;
    c->stages[0].first_trainable = DN_STAGE_HEAD;
    c->stages[0].epochs = 30;
    c->stages[1].first_trainable = DN_STAGE_LAYER4;
    c->stages[1].epochs = 5;
    c->nstages = 2;
    c->lr = 1e-3f;
    c->backbone_lr_mult = 0.1f;
    c->weight_decay = 1e-4f;
    c->optimizer = DN_OPT_ADAMW;
    c->schedule = DN_SCHED_COSINE;
    c->warmup = 0;
    c->batch = 32;
    c->image_size = 224;
    c->views = 2;
    c->label_smoothing = 0.1f;
    c->class_weights = 1;
    c->balanced_sampler = 0;
    dn_aug_default(&c->aug);
    c->patience = 10;
    c->seed = 42;
    c->threads = 0;
    c->workers = 1;
}

dn_status dn_train_parse_stages(const char *spec, dn_train_stage *st, int *n) {
    *n = 0;
    const char *p = spec;
    while (p && *p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char item[64], name[64];
        if (len >= sizeof item) return dn_fail(DN_ERR_ARG, "--stages: entry '%.*s' too long", (int)len, p);
        memcpy(item, p, len);
        item[len] = 0;
        char *colon = strchr(item, ':');
        char *end = NULL;
        long ep = colon ? strtol(colon + 1, &end, 10) : -1;
        if (!colon || !*(colon + 1) || *end || ep < 1 || ep > 100000)
            return dn_fail(DN_ERR_ARG, "--stages: entry '%s' is not <freeze>:<epochs> with epochs >= 1", item);
        if (*n == DN_MAX_TRAIN_STAGES) return dn_fail(DN_ERR_ARG, "--stages: more than %d stages", DN_MAX_TRAIN_STAGES);
        *colon = 0;
        snprintf(name, sizeof name, "%s", !strcmp(item, "head") ? "backbone" : item);
        int first;
        if (dn_freeze_parse(name, &first)) return dn_fail(DN_ERR_ARG, "--stages: unknown stage '%s' (head, layer3, layer2, none, ...)", item);
        st[*n].first_trainable = first;
        st[*n].epochs = (int)ep;
        (*n)++;
        p += len;
        if (*p == ',') p++;
    }
    if (!*n) return dn_fail(DN_ERR_ARG, "--stages: empty");
    return DN_OK;
}

void dn_train_result_free(dn_train_result *r) {
    dn_eval_metrics_free(&r->val);
    dn_eval_metrics_free(&r->test);
    if (r->classes)
        for (int i = 0; i < r->nclasses; i++) free(r->classes[i]);
    free(r->classes);
    r->classes = NULL;
}

/* ------------------------------------------------------------ logging */

typedef struct run {
    const dn_train_cfg *cfg;
    dn_dataset *ds;
    dn_model *m;            /* the model being trained */
    dn_model *best;         /* snapshot of the best model (full-net stages) */
    int k;
    const char **tr_paths, **va_paths, **te_paths;
    int *tr_labels, *va_labels, *te_labels;
    int ntr, nva, nte;
    float *class_w;         /* [k] or NULL */
    dn_rng rng;
    int gep;                /* global epochs completed */
    double best_f1;
    int best_epoch;
    int skipped;
    char ckpt[1100], out_tmp[1100];
    char src_sha[65];
    double t_start;
} run;

static void logf_(const run *r, const char *fmt, ...) DN_PRINTF(2, 3);
static void logf_(const run *r, const char *fmt, ...) {
    if (r->cfg->quiet) return;
    va_list ap;
    va_start(ap, fmt);
    if (r->cfg->progress) fputs("\r\033[K", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void fmt_eta(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e7) { snprintf(buf, n, "?"); return; }
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%dh%02dm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, n, "%dm%02ds", t / 60, t % 60);
    else snprintf(buf, n, "%ds", t);
}

/* Progress bar line (TTY only): stage, epoch, fraction of the epoch, loss, img/s, ETA. */
static void progress(const run *r, int stage, int ep, int eps, double frac, double loss, double ips, double eta) {
    if (!r->cfg->progress || r->cfg->quiet) return;
    char bar[31], e[32];
    int filled = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < filled ? '#' : '.';
    bar[30] = 0;
    fmt_eta(eta, e, sizeof e);
    fprintf(stderr, "\r\033[Kstage %d epoch %d/%d [%s] loss %.4f  %.1f img/s  ETA %s", stage + 1, ep + 1, eps, bar, loss,
            ips, e);
    fflush(stderr);
}

static void epoch_report(const run *r, int stage, int ep, int eps, double loss, const dn_eval_metrics *val, double secs,
                         double ips, int improved) {
    const dn_train_cfg *c = r->cfg;
    if (c->json) {
        printf("{\"event\":\"epoch\",\"stage\":%d,\"first_trainable\":%d,\"epoch\":%d,\"global_epoch\":%d,"
               "\"loss\":%.6f,\"val_accuracy\":%.6f,\"val_macro_f1\":%.6f,\"seconds\":%.3f,\"img_per_s\":%.1f,"
               "\"best\":%s}\n",
               stage, c->stages[stage].first_trainable, ep, r->gep, loss, val ? val->accuracy : 0,
               val ? val->macro_f1 : 0, secs, ips, improved ? "true" : "false");
        fflush(stdout);
    }
    logf_(r, "stage %d epoch %d/%d  loss %.4f  val acc %.4f  val macro-F1 %.4f  %.2fs  %.0f img/s%s", stage + 1, ep + 1,
          eps, loss, val ? val->accuracy : 0, val ? val->macro_f1 : 0, secs, ips, improved ? "  *best" : "");
}

/* ------------------------------------------------------------ models */

typedef struct init_ctx { dn_rng *rng; } init_ctx;

/* torchvision ResNet init: conv kaiming_normal_(fan_out, relu), BN weight 1,
 * bias 0, running stats (0, 1). */
static dn_status random_resnet18(uint64_t seed, dn_model **out) {
    static const int widths[4] = {64, 128, 256, 512};
    dn_rng r;
    dn_rng_seed(&r, seed);
    dn_tensors ts = {0};
    dn_status st = DN_OK;
#define ADD(name, nd, shp, data) do { if ((st = dn_tensors_add(&ts, name, nd, shp, data))) goto fail; } while (0)
    char nm[96];
    int cin = 3;
    for (int s = -1; s < 4; s++) {
        int nb = s < 0 ? 1 : 2;
        for (int b = 0; b < nb; b++) {
            int nconv = s < 0 ? 1 : (b == 0 && s > 0 ? 3 : 2);
            int w = s < 0 ? 64 : widths[s];
            for (int c = 0; c < nconv; c++) {
                int k = s < 0 ? 7 : c == 2 ? 1 : 3;
                int ci = s < 0 ? 3 : (c == 1 ? w : (b == 0 ? cin : w));
                char cn[64], bn[64];
                if (s < 0) { snprintf(cn, sizeof cn, "conv1"); snprintf(bn, sizeof bn, "bn1"); }
                else if (c < 2) {
                    snprintf(cn, sizeof cn, "layer%d.%d.conv%d", s + 1, b, c + 1);
                    snprintf(bn, sizeof bn, "layer%d.%d.bn%d", s + 1, b, c + 1);
                } else {
                    snprintf(cn, sizeof cn, "layer%d.%d.downsample.0", s + 1, b);
                    snprintf(bn, sizeof bn, "layer%d.%d.downsample.1", s + 1, b);
                }
                int64_t shp[4] = {w, ci, k, k};
                size_t nel = (size_t)w * ci * k * k;
                float *wd = dn_malloc(nel * sizeof(float));
                if (!wd) { st = DN_ERR_NOMEM; goto fail; }
                float sd = sqrtf(2.0f / (float)(w * k * k));
                for (size_t i = 0; i < nel; i++) wd[i] = sd * dn_rng_normal(&r);
                snprintf(nm, sizeof nm, "%s.weight", cn);
                ADD(nm, 4, shp, wd);
                const char *suf[4] = {"weight", "bias", "running_mean", "running_var"};
                for (int q = 0; q < 4; q++) {
                    float *v = dn_malloc((size_t)w * sizeof(float));
                    if (!v) { st = DN_ERR_NOMEM; goto fail; }
                    for (int i = 0; i < w; i++) v[i] = (q == 0 || q == 3) ? 1.0f : 0.0f;
                    int64_t s1[1] = {w};
                    snprintf(nm, sizeof nm, "%s.%s", bn, suf[q]);
                    ADD(nm, 1, s1, v);
                }
            }
        }
        cin = s < 0 ? 64 : widths[s]; /* the stem feeds layer1 with 64 channels */
    }
#undef ADD
    st = dn_model_from_tensors(&ts, 1, out);
fail:
    dn_tensors_free(&ts);
    return st;
}

static void classes_json(const dn_model *m, dn_sb *b) {
    dn_sb_puts(b, "[");
    for (int i = 0; i < m->num_classes; i++) {
        if (i) dn_sb_puts(b, ",");
        dn_sb_json_str(b, m->class_names[i]);
    }
    dn_sb_puts(b, "]");
}

static int classes_match(const dn_model *m, const dn_dataset *ds) {
    if (m->num_classes != ds->nclasses) return 0;
    for (int i = 0; i < ds->nclasses; i++)
        if (strcmp(m->class_names[i], ds->classes[i])) return 0;
    return 1;
}

static void class_list(const char *const *names, int n, char *buf, size_t cap) {
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < n && len + 8 < cap; i++) {
        int w = snprintf(buf + len, cap - len, "%s%s", i ? "," : "", names[i]);
        if (w < 0 || (size_t)w >= cap - len) { snprintf(buf + cap - 4, 4, "..."); break; }
        len += (size_t)w;
    }
}

static dn_status load_start_model(run *r) {
    const dn_train_cfg *c = r->cfg;
    dn_status st;
    dn_model *m = NULL;
    if (!c->weights || !strcmp(c->weights, "none")) {
        if ((st = random_resnet18(c->seed, &m))) return st;
    } else {
        uint8_t head[16] = {0};
        FILE *f = fopen(c->weights, "rb");
        if (!f) return dn_fail(DN_ERR_IO, "%s: cannot open weights", c->weights);
        size_t got = fread(head, 1, sizeof head, f);
        fclose(f);
        dn_weight_format fmt = dn_weights_detect(head, got);
        int defectnet = fmt == DN_WFMT_SAFETENSORS;
        if ((st = dn_model_load_ex(c->weights, !defectnet, &m))) return st;
        snprintf(r->src_sha, sizeof r->src_sha, "%s", m->sha256);
        if (defectnet && m->num_classes > 0 && !classes_match(m, r->ds)) {
            if (!c->new_head) {
                char a[512], b[512];
                class_list((const char *const *)m->class_names, m->num_classes, a, sizeof a);
                class_list((const char *const *)r->ds->classes, r->ds->nclasses, b, sizeof b);
                dn_model_free(m);
                return dn_fail(DN_ERR_ARG,
                               "%s: model classes [%s] do not match the data's classes [%s] (use --new-head to replace the head)",
                               c->weights, a, b);
            }
        } else if (defectnet && m->num_classes > 0) {
            r->m = m; /* continue fine-tuning this model's head */
            goto pp;
        }
    }
    if ((st = dn_model_new_head(m, r->ds->nclasses, (const char *const *)r->ds->classes, c->seed ^ 0x5eed))) {
        dn_model_free(m);
        return st;
    }
    r->m = m;
pp:
    /* training preprocessing: the whole image resized to image_size (no crop loss) */
    dn_preproc_default(&r->m->pp);
    r->m->pp.resize = c->image_size;
    r->m->pp.crop = c->image_size;
    r->m->temperature = 1.0f;
    r->m->threshold = 0.0f;
    return DN_OK;
}

typedef struct copy_ctx { const dn_tensors *ts; const char *prefix; int missing; char name[160]; } copy_ctx;
static void copy_in(void *vctx, const char *name, float *data, int64_t numel, int is_buffer) {
    (void)is_buffer;
    copy_ctx *c = vctx;
    char full[160];
    snprintf(full, sizeof full, "%s%s", c->prefix, name);
    dn_tensor *t = dn_tensors_find(c->ts, full);
    if (!t || dn_tensor_numel(t) != numel) {
        if (!c->missing) snprintf(c->name, sizeof c->name, "%s", full);
        c->missing++;
        return;
    }
    memcpy(data, t->data, (size_t)numel * sizeof(float));
}
typedef struct copy_out_ctx { dn_tensors *ts; dn_status st; } copy_out_ctx;
static void copy_out(void *vctx, const char *name, float *data, int64_t numel, int is_buffer) {
    (void)is_buffer;
    copy_out_ctx *c = vctx;
    if (c->st) return;
    float *d = dn_malloc((size_t)(numel ? numel : 1) * sizeof(float));
    if (!d) { c->st = DN_ERR_NOMEM; return; }
    memcpy(d, data, (size_t)numel * sizeof(float));
    char full[160];
    snprintf(full, sizeof full, "model.%s", name);
    int64_t sh[1] = {numel};
    c->st = dn_tensors_add(c->ts, full, 1, sh, d);
}

/* Copies all parameters/buffers of src into dst (same architecture). */
static void model_copy_params(dn_model *dst, const dn_model *src) {
    dn_tensors ts = {0};
    copy_out_ctx oc = {&ts, DN_OK};
    dn_model_foreach((dn_model *)src, copy_out, &oc);
    copy_ctx ic = {&ts, "model.", 0, ""};
    if (!oc.st) dn_model_foreach(dst, copy_in, &ic);
    dn_tensors_free(&ts);
}

/* ------------------------------------------------------------ checkpoint */

static dn_status save_checkpoint(run *r, int stage, int stage_epochs_done, int bad_epochs, const void *optim) {
    dn_tensors ts = {0};
    dn_meta meta = {0};
    copy_out_ctx oc = {&ts, DN_OK};
    dn_model_foreach(r->m, copy_out, &oc);
    dn_status st = oc.st;
    if (!st && optim) st = dn_optim_state_save((const dn_optim *)optim, &ts);
    char buf[128];
    dn_sb cl = {0};
    classes_json(r->m, &cl);
    if (!st && cl.oom) st = DN_ERR_NOMEM;
#define SETI(k, v) do { snprintf(buf, sizeof buf, "%d", (int)(v)); if (!st) st = dn_meta_set(&meta, k, buf); } while (0)
    SETI("stage", stage);
    SETI("stage_epochs_done", stage_epochs_done);
    SETI("global_epoch", r->gep);
    SETI("best_epoch", r->best_epoch);
    SETI("bad_epochs", bad_epochs);
    SETI("image_size", r->cfg->image_size);
    SETI("optimizer", r->cfg->optimizer);
    snprintf(buf, sizeof buf, "%.17g", r->best_f1);
    if (!st) st = dn_meta_set(&meta, "best_f1", buf);
    snprintf(buf, sizeof buf, "%016llx%016llx%016llx%016llx", (unsigned long long)r->rng.s[0],
             (unsigned long long)r->rng.s[1], (unsigned long long)r->rng.s[2], (unsigned long long)r->rng.s[3]);
    if (!st) st = dn_meta_set(&meta, "rng", buf);
    if (!st) st = dn_meta_set(&meta, "classes", cl.s);
#undef SETI
    if (!st) st = dn_checkpoint_save(r->ckpt, &ts, &meta);
    dn_sb_free(&cl);
    dn_tensors_free(&ts);
    dn_meta_free(&meta);
    return st;
}

typedef struct resume_state {
    int active, stage, stage_epochs_done, bad_epochs;
    dn_tensors ts;
} resume_state;

static int meta_int(const dn_meta *m, const char *k, int dflt) {
    const char *v = dn_meta_get(m, k);
    return v ? atoi(v) : dflt;
}

static dn_status load_resume(run *r, resume_state *rs) {
    const char *path = r->cfg->resume;
    dn_meta meta = {0};
    dn_status st = dn_checkpoint_load(path, &rs->ts, &meta);
    if (st) return st;
    dn_sb cl = {0};
    classes_json(r->m, &cl);
    const char *ck = dn_meta_get(&meta, "classes");
    if (!ck || !cl.s || strcmp(ck, cl.s)) {
        st = dn_fail(DN_ERR_ARG, "%s: checkpoint classes %s do not match the data's classes %s", path, ck ? ck : "(none)",
                     cl.s ? cl.s : "?");
        goto done;
    }
    if (meta_int(&meta, "image_size", -1) != r->cfg->image_size) {
        st = dn_fail(DN_ERR_ARG, "%s: checkpoint was trained at image size %d, not %d", path,
                     meta_int(&meta, "image_size", -1), r->cfg->image_size);
        goto done;
    }
    copy_ctx ic = {&rs->ts, "model.", 0, ""};
    dn_model_foreach(r->m, copy_in, &ic);
    if (ic.missing) {
        st = dn_fail(DN_ERR_SHAPE, "%s: checkpoint lacks or mis-sizes %s (%d tensors); different architecture?", path,
                     ic.name, ic.missing);
        goto done;
    }
    rs->active = 1;
    rs->stage = meta_int(&meta, "stage", 0);
    rs->stage_epochs_done = meta_int(&meta, "stage_epochs_done", 0);
    rs->bad_epochs = meta_int(&meta, "bad_epochs", 0);
    r->gep = meta_int(&meta, "global_epoch", 0);
    r->best_epoch = meta_int(&meta, "best_epoch", -1);
    const char *bf = dn_meta_get(&meta, "best_f1");
    r->best_f1 = bf ? atof(bf) : -1;
    const char *rg = dn_meta_get(&meta, "rng");
    if (rg && strlen(rg) == 64)
        for (int i = 0; i < 4; i++) {
            char part[17];
            memcpy(part, rg + 16 * i, 16);
            part[16] = 0;
            r->rng.s[i] = strtoull(part, NULL, 16);
        }
    if (rs->stage < 0 || rs->stage >= r->cfg->nstages) {
        st = dn_fail(DN_ERR_ARG, "%s: checkpoint is at stage %d but --stages has %d", path, rs->stage + 1, r->cfg->nstages);
        goto done;
    }
    /* the best model so far is the one written to --out */
    dn_model *b = NULL;
    if (access(r->cfg->out, R_OK) == 0 && dn_model_load(r->cfg->out, &b) == DN_OK && classes_match(b, r->ds) &&
        b->nblocks == r->m->nblocks && b->feat_dim == r->m->feat_dim) {
        model_copy_params(r->best, b);
    } else {
        model_copy_params(r->best, r->m);
    }
    dn_model_free(b);
    logf_(r, "resuming from %s: stage %d, %d epochs done, best val macro-F1 %.4f", path, rs->stage + 1,
          rs->stage_epochs_done, r->best_f1);
done:
    dn_sb_free(&cl);
    dn_meta_free(&meta);
    return st;
}

/* ------------------------------------------------------------ sampling */

static void shuffle(int *a, int n, dn_rng *rng) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)dn_rng_below(rng, (uint32_t)i + 1);
        int t = a[i]; a[i] = a[j]; a[j] = t;
    }
}

/* Epoch order over n samples with labels y: a permutation, or with balanced
 * sampling n draws with replacement, each class equally likely. */
static void epoch_order(const int *y, int n, int k, int balanced, dn_rng *rng, int *order) {
    if (!balanced) {
        for (int i = 0; i < n; i++) order[i] = i;
        shuffle(order, n, rng);
        return;
    }
    int *cnt = calloc((size_t)k, sizeof(int)), present = 0;
    double *cum = malloc((size_t)n * sizeof(double));
    if (!cnt || !cum) { /* fall back to a permutation */
        free(cnt); free(cum);
        for (int i = 0; i < n; i++) order[i] = i;
        shuffle(order, n, rng);
        return;
    }
    for (int i = 0; i < n; i++) cnt[y[i]]++;
    for (int c = 0; c < k; c++) present += cnt[c] > 0;
    double s = 0;
    for (int i = 0; i < n; i++) { s += 1.0 / ((double)present * cnt[y[i]]); cum[i] = s; }
    for (int i = 0; i < n; i++) {
        double u = dn_rng_uniform(rng) * s;
        int lo = 0, hi = n - 1;
        while (lo < hi) { int mid = (lo + hi) / 2; if (cum[mid] > u) hi = mid; else lo = mid + 1; }
        order[i] = lo;
    }
    free(cnt);
    free(cum);
}

static dn_status make_sched(const dn_train_cfg *c, long total_steps, dn_sched *s) {
    memset(s, 0, sizeof *s);
    s->kind = c->schedule;
    s->base_lr = c->lr;
    long main_steps = total_steps - c->warmup;
    if (main_steps < 1) main_steps = 1;
    s->t_max = (int)main_steps;
    s->eta_min = 0;
    s->step_size = (int)(main_steps / 3 > 0 ? main_steps / 3 : 1);
    s->gamma = 0.1f;
    s->warmup = c->warmup;
    s->warmup_start = 1.0f / 3;
    return dn_sched_check(s);
}

static dn_status make_optim(const dn_train_cfg *c, const dn_param *p, int np, dn_optim **o) {
    dn_optim_cfg oc;
    dn_optim_cfg_default(&oc, c->optimizer);
    oc.weight_decay = c->weight_decay;
    oc.group_lr_mult[DN_PARAM_BACKBONE] = c->backbone_lr_mult;
    oc.group_lr_mult[DN_PARAM_HEAD] = 1.0f;
    oc.no_decay_norm_bias = 1;
    return dn_optim_new(&oc, p, np, o);
}

/* The optimizer of a network stage: its trainable parameters, stepping on the net's
 * threads (same result as one thread), and, when resuming inside this stage, the
 * saved optimizer state and epoch counters. */
static dn_status net_optim(const dn_train_cfg *c, dn_net *net, const resume_state *rs, int si, dn_optim **o,
                           int *start_ep, int *bad) {
    int np;
    const dn_param *params = dn_net_params(net, &np);
    dn_status st = make_optim(c, params, np, o);
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

static dn_status bad_loss(int gep, long step, float loss) {
    return dn_fail(DN_ERR_NUMERIC, "training diverged at epoch %d step %ld: loss is %s; stopping (the last checkpoint and best model are kept; try a lower --lr)",
                   gep + 1, step, isnan(loss) ? "NaN" : "Inf");
}

/* ------------------------------------------------------------ head-only fast path */

static void logits_of(const dn_model *m, const float *x, int n, float *logits) {
    int k = m->num_classes, d = m->feat_dim;
    dn_sgemm(0, 1, n, k, d, 1.0f, x, d, m->fc_w, d, 0.0f, logits, k, NULL);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < k; j++) logits[(size_t)i * k + j] += m->fc_b[j];
}

/* Metrics of the current head on cached features (probabilities via softmax). */
static dn_status head_eval(const dn_model *m, const dn_featcache *fc, dn_eval_metrics *out) {
    int k = m->num_classes;
    float *p = dn_malloc((size_t)(fc->n ? fc->n : 1) * k * sizeof(float));
    if (!p) return DN_ERR_NOMEM;
    logits_of(m, fc->x, (int)fc->n, p);
    for (int64_t i = 0; i < fc->n; i++) dn_softmax_row(p + i * k, k, p + i * k);
    dn_status st = dn_eval_metrics_compute(k, fc->n, fc->y, p, NULL, k < 5 ? k : 5, out);
    free(p);
    return st;
}

dn_status dn_head_fit(dn_model *m, const dn_featcache *tr, const dn_featcache *va, const dn_train_cfg *c,
                      const float *class_w, int epochs, dn_rng *rng, dn_epoch_fn report, void *ctx,
                      dn_head_fit_result *res) {
    memset(res, 0, sizeof *res);
    res->best_epoch = -1;
    res->best_f1 = -1;
    int k = m->num_classes, d = m->feat_dim, B = c->batch;
    if (k < 1) return dn_fail(DN_ERR_ARG, "head training: the model has no head");
    if (tr->dim != d) return dn_fail(DN_ERR_SHAPE, "head training: features have %d dims, the head expects %d", tr->dim, d);
    if (tr->n < 1) return dn_fail(DN_ERR_ARG, "head training: no training features");
    if (B < 1) return dn_fail(DN_ERR_ARG, "head training: batch must be >= 1");
    double t_start = dn_now();
    int n = (int)tr->n;
    dn_status st = DN_ERR_NOMEM;
    float *gw = dn_calloc((size_t)k * d, sizeof(float)), *gb = dn_calloc((size_t)k, sizeof(float));
    float *xb = dn_malloc((size_t)B * d * sizeof(float)), *lg = dn_malloc((size_t)B * k * sizeof(float));
    float *dl = dn_malloc((size_t)B * k * sizeof(float));
    float *bw = dn_malloc((size_t)k * d * sizeof(float)), *bb = dn_malloc((size_t)k * sizeof(float));
    int *order = dn_malloc((size_t)n * sizeof(int)), *yb = dn_malloc((size_t)B * sizeof(int));
    dn_optim *o = NULL;
    dn_eval_metrics vm = {0};
    int bad = 0;
    if (!gw || !gb || !xb || !lg || !dl || !bw || !bb || !order || !yb) goto done;
    dn_param p[2] = {{"fc.weight", m->fc_w, gw, (int64_t)k * d, DN_PARAM_HEAD, 0},
                     {"fc.bias", m->fc_b, gb, k, DN_PARAM_HEAD, 1}};
    if ((st = make_optim(c, p, 2, &o))) goto done;
    long steps_per = (n + B - 1) / B, step = 0;
    dn_sched sc;
    if ((st = make_sched(c, steps_per * epochs, &sc))) goto done;
    memcpy(bw, m->fc_w, (size_t)k * d * sizeof(float));
    memcpy(bb, m->fc_b, (size_t)k * sizeof(float));
    for (int ep = 0; ep < epochs; ep++) {
        double t0 = dn_now(), lsum = 0;
        epoch_order(tr->y, n, k, c->balanced_sampler, rng, order);
        for (int s0 = 0; s0 < n; s0 += B) {
            int nb = n - s0 < B ? n - s0 : B;
            for (int j = 0; j < nb; j++) {
                memcpy(xb + (size_t)j * d, tr->x + (size_t)order[s0 + j] * d, (size_t)d * sizeof(float));
                yb[j] = tr->y[order[s0 + j]];
            }
            logits_of(m, xb, nb, lg);
            float loss = 0;
            st = dn_ce_loss(lg, yb, nb, k, class_w, c->label_smoothing, &loss, dl);
            if (st == DN_ERR_NUMERIC || (!st && !isfinite(loss))) { st = bad_loss(ep, step, isfinite(loss) ? NAN : loss); goto done; }
            if (st) goto done;
            /* gW = dl^T xb, gb = column sums of dl */
            dn_sgemm(1, 0, k, d, nb, 1.0f, dl, k, xb, d, 0.0f, gw, d, NULL);
            for (int j = 0; j < k; j++) {
                double s = 0;
                for (int i = 0; i < nb; i++) s += dl[(size_t)i * k + j];
                gb[j] = (float)s;
            }
            if ((st = dn_optim_step(o, dn_sched_lr(&sc, step)))) goto done;
            step++;
            lsum += loss * nb;
        }
        res->epochs_run = ep + 1;
        int improved = 0;
        const dn_eval_metrics *vp = NULL;
        if (va && va->n > 0) {
            dn_eval_metrics_free(&vm);
            if ((st = head_eval(m, va, &vm))) goto done;
            vp = &vm;
            if (vm.macro_f1 > res->best_f1) {
                res->best_f1 = vm.macro_f1;
                res->best_epoch = ep;
                memcpy(bw, m->fc_w, (size_t)k * d * sizeof(float));
                memcpy(bb, m->fc_b, (size_t)k * sizeof(float));
                improved = 1;
                bad = 0;
            } else {
                bad++;
            }
        }
        if (report) report(ctx, ep, lsum / n, vp, dn_now() - t0, improved);
        if (c->patience > 0 && bad >= c->patience) break;
    }
    if (va && va->n > 0 && res->best_epoch >= 0) {
        memcpy(m->fc_w, bw, (size_t)k * d * sizeof(float));
        memcpy(m->fc_b, bb, (size_t)k * sizeof(float));
    }
    st = DN_OK;
done:
    res->seconds = dn_now() - t_start;
    dn_eval_metrics_free(&vm);
    dn_optim_free(o);
    free(gw); free(gb); free(xb); free(lg); free(dl); free(bw); free(bb); free(order); free(yb);
    return st;
}

/* ------------------------------------------------------------ evaluation */

/* Metrics of model m (eval mode, through the inference engine) on items. */
static dn_status eval_items(run *r, const dn_model *m, const char **paths, const int *labels, int n, dn_eval_metrics *out) {
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
    r->skipped += dn_loader_skipped(L);
    st = dn_eval_metrics_compute(k, got, y, probs, NULL, k < 5 ? k : 5, out);
done:
    dn_loader_free(L);
    dn_session_free(s);
    free(probs);
    free(y);
    free(order);
    return st;
}

/* ------------------------------------------------------------ stages */

static dn_status save_model_atomic(const dn_model *m, const char *out, const char *tmp) {
    dn_status st = dn_model_save(m, tmp);
    if (st) { unlink(tmp); return st; }
    if (rename(tmp, out) != 0) {
        unlink(tmp);
        return dn_fail(DN_ERR_IO, "%s: cannot rename the saved model into place", out);
    }
    return DN_OK;
}

static void note_improvement(run *r, double f1) {
    r->best_f1 = f1;
    r->best_epoch = r->gep;
    model_copy_params(r->best, r->m);
}

typedef struct head_report_ctx { run *r; int stage, epochs, ep_base; } head_report_ctx;
static void head_report(void *vctx, int ep, double loss, const dn_eval_metrics *val, double secs, int improved) {
    head_report_ctx *h = vctx;
    run *r = h->r;
    int global_better = val && val->macro_f1 > r->best_f1;
    double ips = secs > 0 ? (double)r->ntr * (1 + r->cfg->views) / secs : 0;
    (void)improved;
    if (global_better) { r->best_f1 = val->macro_f1; r->best_epoch = r->gep; }
    epoch_report(r, h->stage, ep, h->epochs, loss, val, secs, ips, global_better);
    r->gep++;
}

static dn_status stage_head(run *r, int si, double *feat_s) {
    const dn_train_cfg *c = r->cfg;
    dn_session *s = NULL;
    dn_featcache tr = {0}, va = {0};
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
    fc.dir = c->cache_dir;
    char msha[80];
    /* the backbone's identity: the weights file (+ the conv impl does not matter: fp32 exact) */
    snprintf(msha, sizeof msha, "%s", r->src_sha[0] ? r->src_sha : "random-init");
    fc.model_sha256 = msha;
    fc.verbose = !c->quiet;
    if (c->cache_dir && !r->src_sha[0]) fc.dir = NULL; /* random weights: nothing to key a disk cache on */
    for (int i = 0; i < r->ntr; i++) sub[i] = i;
    fc.paths = r->tr_paths;
    fc.labels = r->tr_labels;
    fc.subset = sub;
    fc.nsubset = r->ntr;
    fc.views = c->aug.flags ? c->views : 0;
    logf_(r, "stage %d: head only, computing features of %d training images x %d views", si + 1, r->ntr, fc.views + 1);
    if ((st = dn_featcache_build(s, &fc, &tr, &fs))) goto done;
    r->skipped += fs.skipped;
    *feat_s += fs.seconds;
    logf_(r, "features: %lld rows (%lld computed, %lld from disk cache) in %.1fs", (long long)tr.n,
          (long long)fs.computed, (long long)fs.reused, fs.seconds);
    for (int i = 0; i < r->nva; i++) sub[i] = i;
    fc.paths = r->va_paths;
    fc.labels = r->va_labels;
    fc.nsubset = r->nva;
    fc.views = 0;
    if ((st = dn_featcache_build(s, &fc, &va, &fs))) goto done;
    r->skipped += fs.skipped;
    *feat_s += fs.seconds;
    double before = r->best_f1;
    head_report_ctx hc = {r, si, c->stages[si].epochs, r->gep};
    dn_head_fit_result hr;
    if ((st = dn_head_fit(r->m, &tr, &va, c, r->class_w, c->stages[si].epochs, &r->rng, head_report, &hc, &hr))) goto done;
    /* dn_head_fit restored its best head; keep it if it beats earlier stages */
    if (hr.best_f1 > before || r->best_epoch < 0) {
        r->best_f1 = hr.best_f1;
        r->best_epoch = hc.ep_base + hr.best_epoch;
        model_copy_params(r->best, r->m);
        if ((st = save_model_atomic(r->best, c->out, r->out_tmp))) goto done;
    } else {
        r->best_f1 = before;
        model_copy_params(r->m, r->best);
    }
    logf_(r, "head training: %d epochs in %.3fs (%.2f ms/epoch over %lld cached rows)", hr.epochs_run, hr.seconds,
          1e3 * hr.seconds / (hr.epochs_run ? hr.epochs_run : 1), (long long)tr.n);
    st = save_checkpoint(r, si, c->stages[si].epochs, 0, NULL);
done:
    free(sub);
    dn_featcache_free(&tr);
    dn_featcache_free(&va);
    dn_session_free(s);
    return st;
}

static dn_status stage_full(run *r, int si, resume_state *rs) {
    const dn_train_cfg *c = r->cfg;
    int first = c->stages[si].first_trainable, epochs = c->stages[si].epochs, k = r->k;
    dn_net *net = NULL;
    dn_optim *o = NULL;
    dn_loader *Ltr = NULL, *Lva = NULL;
    dn_eval_metrics vm = {0};
    dn_status st = DN_ERR_NOMEM;
    float *logits = dn_malloc((size_t)c->batch * k * sizeof(float)), *dl = dn_malloc((size_t)c->batch * k * sizeof(float));
    float *vprobs = dn_malloc((size_t)(r->nva ? r->nva : 1) * k * sizeof(float));
    int *order = dn_malloc((size_t)(r->ntr ? r->ntr : 1) * sizeof(int)), *vy = dn_malloc((size_t)(r->nva ? r->nva : 1) * sizeof(int));
    int *vorder = dn_malloc((size_t)(r->nva ? r->nva : 1) * sizeof(int));
    if (!logits || !dl || !vprobs || !order || !vy || !vorder) goto done;
    if ((st = dn_net_new(r->m, first, c->batch, c->image_size, c->image_size, c->threads, &net))) goto done;
    int start_ep = 0, bad = 0;
    if ((st = net_optim(c, net, rs, si, &o, &start_ep, &bad))) goto done;
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
    for (int i = 0; i < r->nva; i++) vorder[i] = i;
    long steps_per = (r->ntr + c->batch - 1) / c->batch;
    dn_sched sc;
    if ((st = make_sched(c, steps_per * epochs, &sc))) goto done;
    long step = (long)start_ep * steps_per;
    int np;
    dn_net_params(net, &np);
    logf_(r, "stage %d: %s trainable, %d epochs, %d trainable tensors", si + 1,
          first == 0 ? "everything" : first == 4 ? "layer4 + head" : first == 5 ? "head" : "upper layers", epochs, np);
    for (int ep = start_ep; ep < epochs; ep++) {
        double t0 = dn_now(), lsum = 0;
        int seen = 0;
        epoch_order(r->tr_labels, r->ntr, k, c->balanced_sampler, &r->rng, order);
        if ((st = dn_loader_start(Ltr, order, r->ntr, c->aug.flags != 0, (uint64_t)r->gep + 1))) goto done;
        for (;;) {
            const float *x;
            const int *lab, *it;
            int nb;
            if ((st = dn_loader_next(Ltr, &x, &lab, &it, &nb))) goto done;
            if (!nb) break;
            dn_net_zero_grad(net);
            if ((st = dn_net_forward(net, x, nb, logits))) goto done;
            float loss = 0;
            st = dn_ce_loss(logits, lab, nb, k, r->class_w, c->label_smoothing, &loss, dl);
            if (st == DN_ERR_NUMERIC || (!st && !isfinite(loss))) { st = bad_loss(r->gep, step, isfinite(loss) ? NAN : loss); goto done; }
            if (st) goto done;
            if ((st = dn_net_backward(net, dl))) goto done;
            if ((st = dn_optim_step(o, dn_sched_lr(&sc, step)))) goto done;
            step++;
            lsum += (double)loss * nb;
            seen += nb;
            double el = dn_now() - t0, ips = seen / (el > 0 ? el : 1e-9);
            double left = (double)(r->ntr - seen) / ips + (double)(epochs - ep - 1) * r->ntr / ips;
            progress(r, si, ep, epochs, (double)seen / r->ntr, lsum / seen, ips, left);
        }
        r->skipped = dn_loader_skipped(Ltr);
        double train_s = dn_now() - t0;
        /* validation (eval mode: running statistics) */
        if ((st = dn_loader_start(Lva, vorder, r->nva, 0, 0))) goto done;
        int got = 0;
        for (;;) {
            const float *x;
            const int *lab, *it;
            int nb;
            if ((st = dn_loader_next(Lva, &x, &lab, &it, &nb))) goto done;
            if (!nb) break;
            if ((st = dn_net_eval_forward(net, 0, x, nb, vprobs + (size_t)got * k))) goto done;
            for (int j = 0; j < nb; j++) {
                dn_softmax_row(vprobs + (size_t)(got + j) * k, k, vprobs + (size_t)(got + j) * k);
                vy[got + j] = lab[j];
            }
            got += nb;
        }
        dn_eval_metrics_free(&vm);
        if ((st = dn_eval_metrics_compute(k, got, vy, vprobs, NULL, 1, &vm))) goto done;
        int improved = vm.macro_f1 > r->best_f1;
        if (improved) {
            note_improvement(r, vm.macro_f1);
            bad = 0;
            if ((st = save_model_atomic(r->best, c->out, r->out_tmp))) goto done;
        } else {
            bad++;
        }
        epoch_report(r, si, ep, epochs, seen ? lsum / seen : 0, &vm, dn_now() - t0, seen / (train_s > 0 ? train_s : 1e-9),
                     improved);
        r->gep++;
        int last = ep + 1 == epochs || (c->patience > 0 && bad >= c->patience);
        if ((st = save_checkpoint(r, si, last ? epochs : ep + 1, bad, o))) goto done;
        if (c->patience > 0 && bad >= c->patience) {
            logf_(r, "early stop: no validation macro-F1 improvement for %d epochs", bad);
            break;
        }
    }
    st = DN_OK;
done:
    dn_eval_metrics_free(&vm);
    dn_loader_free(Ltr);
    dn_loader_free(Lva);
    dn_optim_free(o);
    dn_net_free(net);
    free(logits); free(dl); free(vprobs); free(order); free(vy); free(vorder);
    return st;
}

/* layer4 + head on cached layer3 outputs: layers up to layer3 are frozen,
 * so their output for the original image and for the K fixed augmented views
 * is computed once through the engine; every epoch then only runs layer4 +
 * head forward/backward. Used when the cache fits the memory budget
 * (DN_TRAIN_CACHE_MAX_MB, default 6000). */
static size_t cache_budget(void) {
    const char *e = getenv("DN_TRAIN_CACHE_MAX_MB");
    long mb = e && *e ? atol(e) : 6000;
    return (size_t)(mb > 0 ? mb : 0) << 20;
}

static int l4_cache_fits(const run *r) {
    const dn_train_cfg *c = r->cfg;
    int ch = r->m->widths[2], h = c->image_size;
    /* stem /4, layer2 /2, layer3 /2 */
    for (int i = 0; i < 4; i++) h = (h + 1) / 2;
    size_t per = (size_t)ch * h * h * sizeof(float);
    size_t rows = (size_t)r->ntr * (1 + (c->aug.flags ? c->views : 0)) + (size_t)r->nva;
    return per * rows <= cache_budget();
}

static dn_status stage_l4_cached(run *r, int si, resume_state *rs, double *feat_s) {
    const dn_train_cfg *c = r->cfg;
    int epochs = c->stages[si].epochs, k = r->k, B = c->batch;
    dn_session *s = NULL;
    dn_net *net = NULL;
    dn_optim *o = NULL;
    dn_featcache tr = {0}, va = {0};
    dn_featcache_stats fs;
    dn_eval_metrics vm = {0};
    float *xb = NULL, *logits = NULL, *dl = NULL, *vprobs = NULL;
    int *order = NULL, *yb = NULL;
    dn_status st = DN_ERR_NOMEM;
    int *sub = dn_malloc((size_t)(r->ntr > r->nva ? r->ntr : r->nva) * sizeof(int) + sizeof(int));
    if (!sub) return DN_ERR_NOMEM;
    dn_session_opts so = {B, c->threads, c->image_size, c->image_size, -1};
    if ((st = dn_session_new_ex(r->m, &so, &s))) goto done;
    dn_featcache_cfg fc;
    memset(&fc, 0, sizeof fc);
    fc.pp = r->m->pp;
    fc.aug = c->aug;
    fc.seed = c->seed;
    fc.batch = B;
    fc.workers = c->workers;
    fc.strict = c->strict;
    fc.stage = DN_STAGE_LAYER3;
    fc.dir = r->src_sha[0] ? c->cache_dir : NULL;
    fc.model_sha256 = r->src_sha;
    fc.verbose = !c->quiet;
    for (int i = 0; i < r->ntr; i++) sub[i] = i;
    fc.paths = r->tr_paths;
    fc.labels = r->tr_labels;
    fc.subset = sub;
    fc.nsubset = r->ntr;
    fc.views = c->aug.flags ? c->views : 0;
    logf_(r, "stage %d: layer4 + head on cached layer3 outputs of %d training images x %d views", si + 1, r->ntr,
          fc.views + 1);
    if ((st = dn_featcache_build(s, &fc, &tr, &fs))) goto done;
    r->skipped += fs.skipped;
    *feat_s += fs.seconds;
    for (int i = 0; i < r->nva; i++) sub[i] = i;
    fc.paths = r->va_paths;
    fc.labels = r->va_labels;
    fc.nsubset = r->nva;
    fc.views = 0;
    if ((st = dn_featcache_build(s, &fc, &va, &fs))) goto done;
    r->skipped += fs.skipped;
    *feat_s += fs.seconds;
    dn_session_free(s);
    s = NULL;
    logf_(r, "cached %lld + %lld layer3 activations (%.0f MB) in %.1fs", (long long)tr.n, (long long)va.n,
          (double)(tr.n + va.n) * tr.dim * 4 / 1048576.0, *feat_s);
    int d = tr.dim, n = (int)tr.n;
    xb = dn_alloc_aligned((size_t)B * d * sizeof(float));
    logits = dn_malloc((size_t)B * k * sizeof(float));
    dl = dn_malloc((size_t)B * k * sizeof(float));
    vprobs = dn_malloc((size_t)(va.n ? va.n : 1) * k * sizeof(float));
    order = dn_malloc((size_t)(n ? n : 1) * sizeof(int));
    yb = dn_malloc((size_t)B * sizeof(int));
    st = DN_ERR_NOMEM;
    if (!xb || !logits || !dl || !vprobs || !order || !yb) goto done;
    if (n < 1) { st = dn_fail(DN_ERR_ARG, "no readable training images"); goto done; }
    if ((st = dn_net_new(r->m, DN_STAGE_LAYER4, B, c->image_size, c->image_size, c->threads, &net))) goto done;
    int start_ep = 0, bad = 0;
    if ((st = net_optim(c, net, rs, si, &o, &start_ep, &bad))) goto done;
    long steps_per = (n + B - 1) / B;
    dn_sched sc;
    if ((st = make_sched(c, steps_per * epochs, &sc))) goto done;
    long step = (long)start_ep * steps_per;
    for (int ep = start_ep; ep < epochs; ep++) {
        double t0 = dn_now(), lsum = 0;
        int seen = 0;
        epoch_order(tr.y, n, k, c->balanced_sampler, &r->rng, order);
        for (int s0 = 0; s0 < n; s0 += B) {
            int nb = n - s0 < B ? n - s0 : B;
            for (int j = 0; j < nb; j++) {
                memcpy(xb + (size_t)j * d, tr.x + (size_t)order[s0 + j] * d, (size_t)d * sizeof(float));
                yb[j] = tr.y[order[s0 + j]];
            }
            dn_net_zero_grad(net);
            if ((st = dn_net_forward_from(net, DN_STAGE_LAYER4, xb, nb, logits))) goto done;
            float loss = 0;
            st = dn_ce_loss(logits, yb, nb, k, r->class_w, c->label_smoothing, &loss, dl);
            if (st == DN_ERR_NUMERIC || (!st && !isfinite(loss))) { st = bad_loss(r->gep, step, isfinite(loss) ? NAN : loss); goto done; }
            if (st) goto done;
            if ((st = dn_net_backward(net, dl))) goto done;
            if ((st = dn_optim_step(o, dn_sched_lr(&sc, step)))) goto done;
            step++;
            lsum += (double)loss * nb;
            seen += nb;
            double el = dn_now() - t0, ips = seen / (el > 0 ? el : 1e-9);
            progress(r, si, ep, epochs, (double)seen / n, lsum / seen, ips,
                     (double)(n - seen) / ips + (double)(epochs - ep - 1) * n / ips);
        }
        double train_s = dn_now() - t0;
        for (int s0 = 0; s0 < (int)va.n; s0 += B) {
            int nb = (int)va.n - s0 < B ? (int)va.n - s0 : B;
            if ((st = dn_net_eval_forward(net, DN_STAGE_LAYER4, va.x + (size_t)s0 * d, nb, vprobs + (size_t)s0 * k))) goto done;
        }
        for (int64_t i = 0; i < va.n; i++) dn_softmax_row(vprobs + i * k, k, vprobs + i * k);
        dn_eval_metrics_free(&vm);
        if ((st = dn_eval_metrics_compute(k, va.n, va.y, vprobs, NULL, 1, &vm))) goto done;
        int improved = vm.macro_f1 > r->best_f1;
        if (improved) {
            note_improvement(r, vm.macro_f1);
            bad = 0;
            if ((st = save_model_atomic(r->best, c->out, r->out_tmp))) goto done;
        } else {
            bad++;
        }
        epoch_report(r, si, ep, epochs, lsum / seen, &vm, dn_now() - t0, seen / (train_s > 0 ? train_s : 1e-9), improved);
        r->gep++;
        int last = ep + 1 == epochs || (c->patience > 0 && bad >= c->patience);
        if ((st = save_checkpoint(r, si, last ? epochs : ep + 1, bad, o))) goto done;
        if (c->patience > 0 && bad >= c->patience) {
            logf_(r, "early stop: no validation macro-F1 improvement for %d epochs", bad);
            break;
        }
    }
    st = DN_OK;
done:
    free(sub);
    dn_eval_metrics_free(&vm);
    dn_featcache_free(&tr);
    dn_featcache_free(&va);
    dn_session_free(s);
    dn_optim_free(o);
    dn_net_free(net);
    dn_free_aligned(xb);
    free(logits); free(dl); free(vprobs); free(order); free(yb);
    return st;
}

/* ------------------------------------------------------------ run */

static void recipe_json(const run *r, dn_sb *b) {
    const dn_train_cfg *c = r->cfg;
    char aug[64];
    dn_aug_format(c->aug.flags, aug, sizeof aug);
    dn_sb_puts(b, "{\"stages\":[");
    for (int i = 0; i < c->nstages; i++)
        dn_sb_printf(b, "%s{\"first_trainable\":%d,\"epochs\":%d}", i ? "," : "", c->stages[i].first_trainable,
                     c->stages[i].epochs);
    dn_sb_printf(b, "],\"weights\":");
    dn_sb_json_str(b, c->weights ? c->weights : "none");
    dn_sb_printf(b, ",\"weights_sha256\":\"%s\",\"lr\":%g,\"backbone_lr_mult\":%g,\"weight_decay\":%g,\"optimizer\":\"%s\","
                    "\"schedule\":\"%s\",\"warmup\":%d,\"batch\":%d,\"image_size\":%d,\"views\":%d,\"label_smoothing\":%g,"
                    "\"class_weights\":\"%s\",\"balanced_sampler\":%s,\"aug\":\"%s\",\"rrc_scale_min\":%g,\"jitter\":[%g,%g],"
                    "\"patience\":%d,\"seed\":%llu}",
                 r->src_sha, c->lr, c->backbone_lr_mult, c->weight_decay, c->optimizer == DN_OPT_SGD ? "sgd" : "adamw",
                 c->schedule == DN_SCHED_COSINE ? "cosine" : c->schedule == DN_SCHED_STEP ? "step" : "const", c->warmup,
                 c->batch, c->image_size, c->views, c->label_smoothing, c->class_weights ? "auto" : "none",
                 c->balanced_sampler ? "true" : "false", aug, c->aug.scale_min, c->aug.jitter_b, c->aug.jitter_c,
                 c->patience, (unsigned long long)c->seed);
}

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

dn_status dn_train_run(const dn_train_cfg *c, dn_train_result *res) {
    memset(res, 0, sizeof *res);
    run R;
    memset(&R, 0, sizeof R);
    run *r = &R;
    r->cfg = c;
    r->t_start = dn_now();
    r->best_f1 = -1;
    r->best_epoch = -1;
    resume_state rs;
    memset(&rs, 0, sizeof rs);
    dn_status st;
    double feat_s = 0;
    if (!c->out) return dn_fail(DN_ERR_ARG, "train: --out is required");
    if (c->nstages < 1) return dn_fail(DN_ERR_ARG, "train: no training stages");
    if (c->batch < 1 || c->image_size < 32 || c->image_size > 1024 || c->views < 0 || !(c->lr > 0) ||
        !(c->label_smoothing >= 0 && c->label_smoothing < 1))
        return dn_fail(DN_ERR_ARG, "train: invalid option (batch %d, image size %d, views %d, lr %g, label smoothing %g)",
                       c->batch, c->image_size, c->views, c->lr, c->label_smoothing);
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

    /* data */
    if ((st = dn_dataset_prepare(c->data, split_path, &c->split, c->drop_dups, c->quiet ? NULL : stderr, &r->ds))) goto done;
    r->k = r->ds->nclasses;
    if ((st = dn_dataset_select(r->ds, DN_SPLIT_TRAIN, &r->tr_paths, &r->tr_labels, &r->ntr))) goto done;
    if ((st = dn_dataset_select(r->ds, DN_SPLIT_VAL, &r->va_paths, &r->va_labels, &r->nva))) goto done;
    if ((st = dn_dataset_select(r->ds, DN_SPLIT_TEST, &r->te_paths, &r->te_labels, &r->nte))) goto done;
    if (r->ntr < 1) { st = dn_fail(DN_ERR_ARG, "%s: no training images in the split", split_path); goto done; }
    if (r->nva < 1) { st = dn_fail(DN_ERR_ARG, "%s: no validation images in the split (needed for early stopping)", split_path); goto done; }
    {
        int *cnt = dn_calloc((size_t)r->k, sizeof(int));
        if (!cnt) { st = DN_ERR_NOMEM; goto done; }
        dn_dataset_count(r->ds, DN_SPLIT_TRAIN, cnt);
        int present = 0;
        for (int i = 0; i < r->k; i++) present += cnt[i] > 0;
        if (present < 2) {
            free(cnt);
            st = dn_fail(DN_ERR_ARG, "%s: the training split holds %d class(es); need at least 2", split_path, present);
            goto done;
        }
        if (c->class_weights) {
            r->class_w = dn_calloc((size_t)r->k, sizeof(float));
            if (!r->class_w) { free(cnt); st = DN_ERR_NOMEM; goto done; }
            for (int i = 0; i < r->k; i++)
                r->class_w[i] = cnt[i] ? (float)((double)r->ntr / ((double)present * cnt[i])) : 0.0f;
        }
        free(cnt);
    }
    res->nclasses = r->k;
    res->classes = dn_calloc((size_t)r->k, sizeof(char *));
    if (!res->classes) { st = DN_ERR_NOMEM; goto done; }
    for (int i = 0; i < r->k; i++)
        if (!(res->classes[i] = dn_strdup(r->ds->classes[i]))) { st = DN_ERR_NOMEM; goto done; }
    res->ntrain = r->ntr;
    res->nval = r->nva;
    res->ntest = r->nte;
    logf_(r, "data: %d classes, %d train / %d val / %d test images; split manifest %s", r->k, r->ntr, r->nva, r->nte,
          split_path);

    /* model */
    if ((st = load_start_model(r))) goto done;
    if ((st = dn_model_clone(r->m, &r->best))) goto done;
    if (c->resume && (st = load_resume(r, &rs))) goto done;
    if (!rs.active) {
        /* a fresh run must not silently continue someone else's checkpoint */
        unlink(r->ckpt);
    }

    for (int si = rs.active ? rs.stage : 0; si < c->nstages; si++) {
        int done_eps = rs.active && rs.stage == si ? rs.stage_epochs_done : 0;
        if (done_eps >= c->stages[si].epochs) continue;
        /* each stage starts from the best model so far */
        if (r->best_epoch >= 0) model_copy_params(r->m, r->best);
        int first = c->stages[si].first_trainable;
        if (first == DN_STAGE_HEAD) st = stage_head(r, si, &feat_s);
        else if (first == DN_STAGE_LAYER4 && !c->no_cache && l4_cache_fits(r)) st = stage_l4_cached(r, si, &rs, &feat_s);
        else st = stage_full(r, si, &rs);
        if (st) goto done;
    }
    res->epochs_run = r->gep;
    res->best_epoch = r->best_epoch;
    res->best_val_f1 = r->best_f1;

    /* final evaluation of the kept model */
    if ((st = eval_items(r, r->best, r->va_paths, r->va_labels, r->nva, &res->val))) goto done;
    if (r->nte > 0 && (st = eval_items(r, r->best, r->te_paths, r->te_labels, r->nte, &res->test))) goto done;
    res->skipped = r->skipped;
    res->feature_seconds = feat_s;
    res->seconds = dn_now() - r->t_start;

    /* provenance + results in the model metadata */
    {
        dn_sb b = {0};
        recipe_json(r, &b);
        char *vj = NULL, *tj = NULL, hex[65] = "";
        dn_sha256_file(split_path, hex);
        st = b.oom ? DN_ERR_NOMEM : dn_meta_set(&r->best->meta, "train_recipe", b.s);
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
        if (!st) st = save_model_atomic(r->best, c->out, r->out_tmp);
        if (st) goto done;
    }
done:
    dn_tensors_free(&rs.ts);
    free(r->class_w);
    free(r->tr_paths); free(r->tr_labels);
    free(r->va_paths); free(r->va_labels);
    free(r->te_paths); free(r->te_labels);
    dn_model_free(r->m);
    dn_model_free(r->best);
    dn_dataset_free(r->ds);
    if (st) dn_train_result_free(res);
    return st;
}
