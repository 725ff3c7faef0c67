/* Internals of `dn_train_run` (trainer.h), shared by its parts:
 *   options.c   defaults, --stages parsing, option checks, the recipe as JSON
 *   init.c      the start model (pretrained / defectnet model / random init), parameter copies
 *   runlog.c    log lines, warnings, the progress bar and its ETA over all stages, epoch reports
 *   resume.c    a run's checkpoint (model, optimizer, counters, RNG) and resuming from one
 *   headfit.c   the head-only fast path on cached pooled features (dn_head_fit)
 *   epoch.c     the one epoch driver of network stages (batches from images or cached
 *               activations; end of epoch: validate, keep best, checkpoint, stop early),
 *               sampling, optimizer/schedule construction and the model selection rule
 *   trainer.c   dn_train_run: data, stages, final evaluation, model metadata
 * Nothing here is public API. */
#ifndef DN_TRAIN_RUN_H
#define DN_TRAIN_RUN_H
#include "core/json.h"
#include "nn/model.h"
#include "core/tensor.h"
#include "train/optim.h"
#include "train/sched.h"
#include "train/trainer.h"

/* Work estimate of the whole run in "image-layer units" so that one ETA covers
 * every stage (runlog.c). */
typedef struct tr_clock {
    double total, done;     /* units */
    double t0, busy_s;      /* wall clock at start; seconds spent on counted work */
} tr_clock;

typedef struct run {
    const dn_train_cfg *cfg;
    dn_dataset *ds;
    dn_model *m;            /* the model being trained */
    dn_model *best;         /* snapshot of the best model so far */
    int k;
    const char **tr_paths, **va_paths, **te_paths;
    int *tr_labels, *va_labels, *te_labels;
    int ntr, nva, nte;
    unsigned char *tr_bad, *va_bad, *te_bad;  /* [n]: image found unreadable (named once) */
    float *class_w;         /* [k] or NULL */
    dn_rng rng;
    int gep;                /* global epochs completed */
    double best_f1, best_loss;  /* validation macro-F1 and loss of the kept model */
    int best_epoch;
    int skipped;            /* distinct unreadable images */
    char ckpt[1100], out_tmp[1100];
    char src_sha[65];
    int src_is_model;       /* --weights is a defectnet model (else torchvision .pth / none) */
    double t_start;
    tr_clock clock;
} run;

typedef struct resume_state {
    int active, stage, stage_epochs_done, bad_epochs;
    dn_tensors ts;
} resume_state;

/* ---- options.c */
dn_status tr_check_cfg(const dn_train_cfg *c);
void tr_recipe_json(const dn_train_cfg *c, const char *weights_sha, dn_sb *b);

/* ---- init.c */
/* Loads --weights (or makes the random init) into r->m: before any data is read or written. */
dn_status tr_open_weights(run *r);
/* After the data: checks a defectnet model's classes, puts a new head on
 * (unless the model's head has the data's classes), training preprocessing. */
dn_status tr_attach_head(run *r);
int tr_classes_match(const dn_model *m, const dn_dataset *ds);
void tr_model_copy_params(dn_model *dst, const dn_model *src);
/* All parameters/buffers of m as 1-d tensors named "model.<name>" appended to ts. */
dn_status tr_model_to_tensors(const dn_model *m, dn_tensors *ts);
/* Copies "model.<name>" tensors of ts into m; returns how many were missing or
 * mis-sized (the first one's name in first). */
int tr_model_from_tensors(dn_model *m, const dn_tensors *ts, char *first, size_t cap);

/* ---- runlog.c */
void tr_log(const run *r, const char *fmt, ...) DN_PRINTF(2, 3);
/* "warning: ..." on stderr, also with quiet. */
void tr_warn(const run *r, const char *fmt, ...) DN_PRINTF(2, 3);
/* Adds the estimated work of every stage (from stage si0 on, epochs_done of
 * the first already done) to r->clock. */
void tr_clock_plan(run *r, int si0, int epochs_done);
/* Counts work done (units) taking `secs` seconds; `skipped_units` drops work
 * that will not happen (a stage stopped early). */
void tr_clock_add(run *r, double units, double secs);
void tr_clock_skip(run *r, double units);
/* Units of one epoch of stage si: `rows` training inputs and `vrows` validation
 * inputs entering network stage `from` (feature rows or images). */
double tr_epoch_units(const run *r, int si, long rows, long vrows, int from);
/* Units of computing `rows` cached activations up to the stage before `first`. */
double tr_cache_units(const run *r, int first, long rows);
/* Progress bar (TTY): stage, epoch, fraction of the epoch, loss, img/s, ETA of the whole run;
 * units_in_epoch: work of the epoch done so far (not yet added to the clock). */
void tr_progress(const run *r, int si, int ep, int eps, double frac, double loss, double ips, double units_in_epoch,
                 double secs_in_epoch);
void tr_epoch_report(const run *r, int si, int ep, int eps, double loss, const dn_eval_metrics *val, double val_loss,
                     double secs, double ips, int improved);
/* Names images newly found unreadable (flags[i] set for them) and counts them in r->skipped. */
void tr_note_skipped(run *r, const char *const *paths, unsigned char *flags, int i);

/* ---- resume.c */
dn_status tr_save_checkpoint(run *r, int stage, int stage_epochs_done, int bad_epochs, const dn_optim *optim);
dn_status tr_load_resume(run *r, resume_state *rs);

/* ---- trainer.c */
/* 1 when stage si is a layer4 + head stage trained on cached layer3 outputs. */
int tr_l4_cached(const run *r, int si);

/* ---- epoch.c */
/* Model selection: a candidate with validation macro-F1 f1 and loss loss replaces
 * the best (best_f1, best_loss) when its macro-F1 is higher, or equal (within
 * 1e-9) with a lower loss, or equal on both (later epoch wins). A candidate is
 * never "better" than nothing only by being NaN. */
int dn_train_better(double f1, double loss, double best_f1, double best_loss);
/* Mean cross-entropy (no smoothing, no weights) of probabilities probs [n][k]. */
double tr_nll(const float *probs, const int *y, int64_t n, int k);
void tr_epoch_order(const int *y, int n, int k, int balanced, dn_rng *rng, int *order);
dn_status tr_make_sched(const dn_train_cfg *c, long total_steps, dn_sched *s);
dn_status tr_make_optim(const dn_train_cfg *c, const dn_param *p, int np, dn_optim **o);
dn_status tr_bad_loss(int gep, long step, float loss);
dn_status tr_save_model_atomic(const dn_model *m, const char *out, const char *tmp);

/* A source of batches for the epoch driver: cached activations entering network
 * stage `from` (rows), or images through a loader (from = 0). */
typedef struct tr_batches {
    const struct dn_featcache *rows; /* cached: x/y/n taken from here */
    struct dn_loader *loader;        /* images */
    const int *labels;               /* [n] labels (epoch order); the loader's or rows->y */
    int n, from;
    const char *const *paths;        /* images: for naming unreadable ones */
    unsigned char *bad;              /* images: [n] already-named flags */
} tr_batches;

/* Runs epochs [start_ep, epochs) of network stage si: per epoch an ordered (or
 * class-balanced) pass over train with augmentation when images, a validation
 * pass (eval mode), then the shared end of epoch. */
dn_status tr_run_epochs(run *r, int si, struct dn_net *net, dn_optim *o, tr_batches *train, tr_batches *val,
                        int start_ep, int bad);
#endif
