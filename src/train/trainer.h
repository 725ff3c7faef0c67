/* The fine-tuning driver behind `defectnet train`.
 *
 * Flow: prepare the data (ImageFolder or manifest; stratified split written as
 * a manifest and reused, see io/dataset.h) -> load the weights (torchvision
 * .pth: ImageNet fc dropped; defectnet model: its head kept if its classes are
 * the data's; "none": torchvision's random init) -> a new Linear(feat_dim, N)
 * head with the classes in natural order -> run the stages -> evaluate the best
 * model on the test split -> save it with the recipe and results in its
 * metadata.
 *
 * Stages. Each stage names its first trainable network stage (train/net.h:
 * 5 = head only, 4 = layer4 + head, 0 = everything) and its epochs, e.g.
 * "head:5,layer3:10" = 5 head-only epochs then 10 epochs of layer4 + head.
 * Every stage starts from the best model so far, with its own LR schedule
 * (warmup + cosine/step over the stage's steps); pretrained backbone
 * parameters get lr * backbone_lr_mult.
 *  - A head-only stage takes the fast path: pooled features of every training
 *    image and of `views` fixed augmented views are computed once through the
 *    inference engine (train/featcache.h) and the head is trained on them;
 *    validation features likewise. Each head epoch costs milliseconds.
 *  - A layer4 + head stage likewise caches the layer3 outputs of the same
 *    fixed views (when they fit DN_TRAIN_CACHE_MAX_MB, default 6000 MB, and
 *    no_cache is 0) and trains layer4 + head on them.
 *  - Other stages run the trainable net (train/net.h) on freshly augmented
 *    batches from the threaded loader every epoch.
 * Early stopping: after each epoch the validation macro-F1 and loss are
 * computed; the best model is kept and written to `out`: higher macro-F1, or an
 * equal one with a lower (or equal: the later epoch) validation loss
 * (train_run.h dn_train_better); a stage ends after `patience` epochs without
 * improvement (0 = never). A stage that never improves on the model it started
 * from is discarded with a warning.
 * Checkpoints (train/checkpoint.h) are written atomically after every epoch of
 * a full-network stage and at the end of a head-only stage: model, optimizer
 * state, stage/epoch, RNG state, best score; `resume` continues from one. It is
 * removed when the run succeeds unless keep_checkpoint.
 * A NaN/Inf loss stops the run with an error; the last checkpoint and the
 * best model written so far are left untouched.
 *
 * Ownership: the cfg's strings are borrowed for the duration of the call;
 * dn_train_result owns its metrics (dn_train_result_free). */
#ifndef DN_TRAINER_H
#define DN_TRAINER_H
#include "eval/metrics.h"
#include "io/dataset.h"
#include "train/augment.h"
#include "train/optim.h"
#include "train/sched.h"
#include <stdio.h>

#define DN_MAX_TRAIN_STAGES 8

typedef struct dn_train_stage {
    int first_trainable; /* 0..5 (train/net.h) */
    int epochs;
} dn_train_stage;

typedef struct dn_train_cfg {
    const char *data;           /* ImageFolder dir or manifest CSV (may be NULL if split_manifest exists) */
    const char *split_manifest; /* reused if it exists, else written (default <out>.split.csv) */
    dn_split_cfg split;
    int drop_dups;              /* drop cross-split duplicate copies */
    const char *add_data;       /* more images (ImageFolder or manifest, e.g. `defectnet export --reviewed`)
                                   added to the training split only; NULL = none */
    const char *weights;        /* torchvision .pth, defectnet model, or "none" */
    const char *out;            /* best model (defectnet safetensors) */
    const char *checkpoint;     /* default <out>.ckpt */
    const char *resume;         /* checkpoint to continue from, or NULL */
    const char *cache_dir;      /* on-disk feature cache, or NULL (memory only) */
    dn_train_stage stages[DN_MAX_TRAIN_STAGES];
    int nstages;
    float lr, backbone_lr_mult, weight_decay;
    dn_optim_kind optimizer;
    dn_sched_kind schedule;
    int warmup;                 /* warmup steps at the start of each stage */
    int batch, image_size, views;
    float label_smoothing;
    int class_weights;          /* 1: weights n / (k * count_c) in the loss (default 0) */
    int balanced_sampler;       /* 1: sample classes uniformly (with replacement) */
    dn_aug aug;
    int patience;
    uint64_t seed;
    int threads;                /* compute threads (<= 0: all cores) */
    int workers;                /* loader threads */
    int strict;                 /* unreadable image fatal */
    int new_head;               /* replace the head of a defectnet model whose classes differ */
    int json;                   /* JSON lines on stdout */
    int progress;               /* 1: progress bar on stderr (a TTY); 0: plain log lines */
    int quiet;                  /* nothing on stderr but warnings */
    int no_cache;               /* layer4 stages: stream fresh augmentations every epoch instead of
                                 * training on cached layer3 outputs of the fixed views */
    int keep_checkpoint;        /* 1: leave the checkpoint after success (default: removed) */
} dn_train_cfg;

/* Defaults that generalise (chosen on the datasets in RESULTS.md, reasoning in
 * docs/training.md): stages "head:30,layer3:5" — frozen backbone with cached
 * features first, then layer4 + head on cached layer3 outputs (on DeepPCB-crops
 * the head alone plateaus at ~92% and one layer4 epoch lifts validation to
 * ~97.6%; the best model by validation macro-F1 is kept, so the second stage
 * cannot make the kept model worse on validation) — with 2 fixed augmented
 * views per image, AdamW lr 1e-3 wd 1e-4, cosine, batch 32, image 224
 * (Resize+CenterCrop 224), label smoothing 0.1, augment flip,rot90,rrc,jitter,
 * an unweighted loss (class weights "none": on imbalanced data the
 * class-balanced weights, with label smoothing, pushed good parts into rare
 * defect classes), patience 10, seed 42, backbone lr x0.1. */
void dn_train_cfg_default(dn_train_cfg *c);

/* "head:5,layer3:10" (names as dn_freeze_parse; "head" = "backbone") into
 * stages. DN_ERR_ARG naming the bad entry. */
dn_status dn_train_parse_stages(const char *spec, dn_train_stage *st, int *n);

/* Loss weights of the classes from their training counts cnt[k] as the run
 * uses them: with cfg->class_weights, n / (present classes * cnt_c) (0 for an
 * absent class) into w and returns 1; else returns 0 (unweighted loss). */
int dn_train_class_weights(const dn_train_cfg *cfg, const int *cnt, int k, float *w);

typedef struct dn_train_result {
    int nclasses;
    int ntrain, nval, ntest;
    int skipped;            /* unreadable images skipped */
    int best_epoch;         /* global epoch (0-based) of the kept model */
    int epochs_run;
    double best_val_f1;
    dn_eval_metrics val, test;   /* of the kept model; test.n == 0 without a test split */
    double seconds, feature_seconds, head_seconds;
    unsigned warnings;      /* DN_TRAIN_WARN_* bits; each also printed on stderr */
    char split_manifest[1024];
    char **classes;         /* nclasses names, natural order (owned) */
} dn_train_result;

#define DN_TRAIN_WARN_STAGE_DISCARDED 1u   /* a stage never beat the model it started from */
#define DN_TRAIN_WARN_POOR_CALIBRATION 2u  /* validation ECE of the kept model above DN_TRAIN_ECE_WARN */
#define DN_TRAIN_WARN_SKIPPED 4u           /* unreadable images were skipped (each named) */
#define DN_TRAIN_ECE_WARN 0.10

/* Inputs are checked before anything is written: the options, the weights file
 * (loaded), a --resume checkpoint's presence, then the data (the split manifest
 * is written only after all of them). On success the checkpoint is removed
 * unless keep_checkpoint. */
dn_status dn_train_run(const dn_train_cfg *cfg, dn_train_result *res);
void dn_train_result_free(dn_train_result *r);

/* Head-only training on cached features (the fast path), exposed for tests
 * and benchmarks. Trains m->fc in place from its current values for `epochs`
 * epochs (cfg: batch, lr, optimizer, schedule, warmup, weight decay, label
 * smoothing, balanced_sampler, patience) with class weights class_w ([k] or
 * NULL). With val, the head with the best validation macro-F1 is restored at
 * the end (else the last one). report (may be NULL) is called after every
 * epoch (val metrics NULL without val). */
struct dn_featcache;
struct dn_model;
typedef void (*dn_epoch_fn)(void *ctx, int epoch, double loss, const dn_eval_metrics *val, double val_loss,
                            double seconds, int improved);
typedef struct dn_head_fit_result {
    int epochs_run;
    int best_epoch;      /* -1 without val */
    double best_f1;
    double best_loss;    /* validation cross-entropy of the kept head */
    double seconds;
} dn_head_fit_result;
dn_status dn_head_fit(struct dn_model *m, const struct dn_featcache *train, const struct dn_featcache *val,
                      const dn_train_cfg *cfg, const float *class_w, int epochs, dn_rng *rng, dn_epoch_fn report,
                      void *ctx, dn_head_fit_result *res);
#endif
