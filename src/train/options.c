/* Training options: defaults, --stages parsing, checks, the recipe as JSON
 * (see trainer.h for what the defaults are and why). */
#include "train/train_run.h"
#include "train/net.h"
#include <stdlib.h>
#include <string.h>

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
    c->class_weights = 0; /* unweighted: see docs/training.md (weights x smoothing cost good parts) */
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

dn_status tr_check_cfg(const dn_train_cfg *c) {
    if (!c->out) return dn_fail(DN_ERR_ARG, "train: --out is required");
    if (c->nstages < 1) return dn_fail(DN_ERR_ARG, "train: no training stages");
    if (c->batch < 1 || c->image_size < 32 || c->image_size > 1024 || c->views < 0 || !(c->lr > 0) ||
        !(c->label_smoothing >= 0 && c->label_smoothing < 1))
        return dn_fail(DN_ERR_ARG, "train: invalid option (batch %d, image size %d, views %d, lr %g, label smoothing %g)",
                       c->batch, c->image_size, c->views, c->lr, c->label_smoothing);
    return DN_OK;
}

void tr_recipe_json(const dn_train_cfg *c, const char *weights_sha, dn_sb *b) {
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
                 weights_sha, c->lr, c->backbone_lr_mult, c->weight_decay, c->optimizer == DN_OPT_SGD ? "sgd" : "adamw",
                 c->schedule == DN_SCHED_COSINE ? "cosine" : c->schedule == DN_SCHED_STEP ? "step" : "const", c->warmup,
                 c->batch, c->image_size, c->views, c->label_smoothing, c->class_weights ? "auto" : "none",
                 c->balanced_sampler ? "true" : "false", aug, c->aug.scale_min, c->aug.jitter_b, c->aug.jitter_c,
                 c->patience, (unsigned long long)c->seed);
}

int dn_train_class_weights(const dn_train_cfg *c, const int *cnt, int k, float *w) {
    if (!c->class_weights) return 0;
    long n = 0;
    int present = 0;
    for (int i = 0; i < k; i++) { n += cnt[i]; present += cnt[i] > 0; }
    for (int i = 0; i < k; i++) w[i] = cnt[i] ? (float)((double)n / ((double)present * cnt[i])) : 0.0f;
    return 1;
}
