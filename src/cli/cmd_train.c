/* defectnet train: fine-tune a ResNet on a folder of defect images (see
 * src/train/trainer.h for what happens). */
#include "commands.h"
#include "cli/args.h"
#include "core/progress.h"
#include "core/core.h"
#include "eval/policy.h"
#include "io/dataset.h"
#include "nn/model.h"
#include "train/trainer.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: defectnet train (--data DIR|CSV | --split-manifest CSV) --weights PTH|MODEL|none --out MODEL.safetensors\n"
            "  data\n"
            "    --data DIR|CSV          ImageFolder (one sub-folder per class; train/ + test/ = official split) or a\n"
            "                            manifest CSV (path,label[,split])\n"
            "    --manifest CSV          same as --data CSV\n"
            "    --split-manifest CSV    reuse this split (path,label,split) if it exists, else write the new split there\n"
            "                            (default: <out>.split.csv)\n"
            "    --val F --test F        split fractions (default 0.15 / 0.15), --split-seed N (default 42)\n"
            "    --keep-dups             keep cross-split duplicate copies (default: dropped, with a warning)\n"
            "    --add-data DIR|CSV      more labelled images (e.g. `defectnet export --reviewed`) added to the training\n"
            "                            split only, labels matched to the data's classes by name\n"
            "    --strict                an unreadable image is fatal (default: skipped and counted)\n"
            "  model\n"
            "    --weights PTH|MODEL|none  torchvision .pth (ImageNet fc dropped), a defectnet model (head kept when its\n"
            "                            classes match the data), or none (random init, from scratch)\n"
            "    --new-head              replace the head of a defectnet model trained on other classes\n"
            "    --out MODEL             best model (by validation macro-F1), with recipe and results in its metadata\n"
            "    --good-class NAME       the class meaning \"good part\", stored in the model (default: auto-detected from\n"
            "                            names like ok, good, normal, pass, clean, no_defect; eval reports escapes with it)\n"
            "  recipe (default: --stages head:30,layer3:5 = head on cached features of the images + 2 augmented\n"
            "  views, then layer4 + head on their cached layer3 outputs; the best model by validation macro-F1 is kept)\n"
            "    --freeze backbone|layer3|layer2|layer1|stem|none   a single stage instead (backbone = head only)\n"
            "    --stages \"head:5,layer3:10\"  staged schedule: head only, then layer4 + head, ... (overrides --freeze/--epochs)\n"
            "    --epochs N              epochs of the head stage of the default recipe, or of the --freeze stage\n"
            "                            (default 30 for head only, 10 otherwise; from scratch: all layers, 10)\n"
            "    --lr F                  head learning rate (default 1e-3), --backbone-lr-mult F (default 0.1)\n"
            "    --optimizer sgd|adamw   (default adamw), --weight-decay F (default 1e-4)\n"
            "    --schedule cosine|step|const (default cosine), --warmup STEPS (default 0)\n"
            "    --batch N (default 32), --image-size N (default 224: whole image resized)\n"
            "    --label-smoothing F (default 0.1), --class-weights auto|none (default none), --balanced-sampler\n"
            "    --aug flip,rot90,rrc,jitter | --no-aug   (default all four)\n"
            "    --views K               augmented views cached per image for the cached stages (default 2)\n"
            "    --patience N            early stopping on validation macro-F1 (default 10, 0 = off)\n"
            "    --feature-cache DIR     keep computed features on disk (keyed by weights, file, preprocessing, view)\n"
            "    --stream                layer4 stages: fresh augmentations every epoch instead of training on cached\n"
            "                            layer3 outputs of the fixed views (slower)\n"
            "  run\n"
            "    --resume CKPT           continue from a checkpoint (written to <out>.ckpt every epoch while training)\n"
            "    --checkpoint PATH       where to write checkpoints\n"
            "    --keep-checkpoint       keep the checkpoint after success (default: removed once the model is saved)\n"
            "    --seed N (default 42), --threads N (default all cores), --workers N (loader threads, default 1)\n"
            "    --json                  JSON lines on stdout (one per epoch, and a final summary)\n"
            "    --quiet                 no progress output\n"
            "  options take --opt VALUE or --opt=VALUE; -d is --data, -o is --out\n" DN_EXIT_HELP);
}

/* Output files are written at the end of a possibly long run: refuse paths that
 * cannot be written before any work starts (a directory, a missing or read-only folder). */
static int check_writable(const char *opt, const char *path) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "defectnet train: %s %s: is a directory, expected a file path\n", opt, path);
        return -1;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = 0;
    else *slash = 0;
    if (access(dir, W_OK) != 0) {
        fprintf(stderr, "defectnet train: %s %s: folder %s is not writable: %s\n", opt, path, dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* A float option through the one grammar helper (src/cli/args.c). */
static int arg_float(const dn_args *ga, double lo, double hi, float *out) {
    double d;
    if (dn_arg_real(ga, lo, hi, 0, &d)) return -1;
    *out = (float)d;
    return 0;
}

/* --good-class must name a class of the data: checked before anything is trained or written. */
static int check_good_class(const dn_train_cfg *c, const char *name) {
    const char *src = c->data ? c->data : c->split_manifest;
    dn_dataset *ds = NULL;
    if (!src || dn_dataset_open(src, &ds)) return 0; /* the trainer reports missing/bad data itself */
    int found = 0;
    for (int i = 0; i < ds->nclasses; i++) found |= !strcmp(ds->classes[i], name);
    dn_dataset_free(ds);
    if (!found) fprintf(stderr, "defectnet train: --good-class: '%s' is not a class of %s\n", name, src);
    return found ? 0 : -1;
}

/* Records the good class (given, or auto-detected from the class names) in the written model. */
static int store_good_class(const char *out, const char *name) {
    dn_model *m = NULL;
    dn_status st = dn_model_load(out, &m);
    if (!st && (name || (!dn_meta_get(&m->meta, "good_class") &&
                         dn_good_class_detect((const char *const *)m->class_names, m->num_classes) >= 0))) {
        st = dn_model_set_good_class(m, name);
        if (!st) st = dn_model_save(m, out);
    }
    dn_model_free(m);
    if (st) fprintf(stderr, "defectnet train: %s: recording the good class: %s\n", out, dn_last_error());
    return st ? -1 : 0;
}

/* The command line, parsed (checked and turned into stages by train_check). */
typedef struct train_args {
    dn_train_cfg c;
    const char *freeze, *stages, *good;
    long long epochs;               /* -1 = not given */
    int have_weights;
} train_args;

/* Parses the command line into *o. Returns -1 to go on, else the exit code (--help: 0). */
static int train_parse(int argc, char **argv, train_args *o) {
    dn_train_cfg c;
    dn_train_cfg_default(&c);
    const char *freeze = NULL, *stages = NULL, *good = NULL;
    long long epochs = -1;
    int have_weights = 0;
    static const dn_opt opts[] = {
        {"balanced-sampler", 256, DN_ARG_NONE, NULL},
        {"no-aug", 257, DN_ARG_NONE, NULL},
        {"json", 258, DN_ARG_NONE, NULL},
        {"strict", 259, DN_ARG_NONE, NULL},
        {"quiet", 260, DN_ARG_NONE, NULL},
        {"new-head", 261, DN_ARG_NONE, NULL},
        {"keep-dups", 262, DN_ARG_NONE, NULL},
        {"stream", 263, DN_ARG_NONE, NULL},
        {"keep-checkpoint", 264, DN_ARG_NONE, NULL},
        {"data", 'd', DN_ARG_REQ, NULL},
        {"manifest", 265, DN_ARG_REQ, NULL},
        {"split-manifest", 266, DN_ARG_REQ, NULL},
        {"weights", 267, DN_ARG_REQ, NULL},
        {"out", 'o', DN_ARG_REQ, NULL},
        {"good-class", 268, DN_ARG_REQ, NULL},
        {"freeze", 269, DN_ARG_REQ, NULL},
        {"stages", 270, DN_ARG_REQ, NULL},
        {"epochs", 271, DN_ARG_REQ, NULL},
        {"lr", 272, DN_ARG_REQ, NULL},
        {"backbone-lr-mult", 273, DN_ARG_REQ, NULL},
        {"weight-decay", 274, DN_ARG_REQ, NULL},
        {"optimizer", 275, DN_ARG_REQ, NULL},
        {"schedule", 276, DN_ARG_REQ, NULL},
        {"warmup", 277, DN_ARG_REQ, NULL},
        {"batch", 278, DN_ARG_REQ, NULL},
        {"image-size", 279, DN_ARG_REQ, NULL},
        {"views", 280, DN_ARG_REQ, NULL},
        {"label-smoothing", 281, DN_ARG_REQ, NULL},
        {"class-weights", 282, DN_ARG_REQ, NULL},
        {"aug", 283, DN_ARG_REQ, NULL},
        {"patience", 284, DN_ARG_REQ, NULL},
        {"resume", 285, DN_ARG_REQ, NULL},
        {"checkpoint", 286, DN_ARG_REQ, NULL},
        {"feature-cache", 287, DN_ARG_REQ, NULL},
        {"seed", 288, DN_ARG_REQ, NULL},
        {"split-seed", 289, DN_ARG_REQ, NULL},
        {"val", 290, DN_ARG_REQ, NULL},
        {"test", 291, DN_ARG_REQ, NULL},
        {"threads", 292, DN_ARG_REQ, NULL},
        {"workers", 293, DN_ARG_REQ, NULL},
        {"add-data", 294, DN_ARG_REQ, NULL},
        {0}};
    dn_args ga;
    dn_args_init(&ga, "train", argc, argv, opts);
    for (int key; (key = dn_args_next(&ga)) != -1;) {
        const char *a = ga.canon;
        if (key == 'h') { usage(stdout); return 0; }
        if (key == '?') return DN_EXIT_USAGE;
        /* flags without a value */
        if (!strcmp(a, "--balanced-sampler")) { c.balanced_sampler = 1; continue; }
        if (!strcmp(a, "--no-aug")) { c.aug.flags = 0; continue; }
        if (!strcmp(a, "--json")) { c.json = 1; continue; }
        if (!strcmp(a, "--strict")) { c.strict = 1; continue; }
        if (!strcmp(a, "--quiet")) { c.quiet = 1; continue; }
        if (!strcmp(a, "--new-head")) { c.new_head = 1; continue; }
        if (!strcmp(a, "--keep-dups")) { c.drop_dups = 0; continue; }
        if (!strcmp(a, "--stream")) { c.no_cache = 1; continue; }
        if (!strcmp(a, "--keep-checkpoint")) { c.keep_checkpoint = 1; continue; }
        const char *v = ga.val;
        long long l;
        float f;
        if (!strcmp(a, "--data") || !strcmp(a, "--manifest")) c.data = v;
        else if (!strcmp(a, "--split-manifest")) c.split_manifest = v;
        else if (!strcmp(a, "--add-data")) c.add_data = v;
        else if (!strcmp(a, "--weights")) { c.weights = v; have_weights = 1; }
        else if (!strcmp(a, "--out")) c.out = v;
        else if (!strcmp(a, "--good-class")) good = v;
        else if (!strcmp(a, "--freeze")) freeze = v;
        else if (!strcmp(a, "--stages")) stages = v;
        else if (!strcmp(a, "--epochs")) { if (dn_arg_long(&ga, 1, 100000, &l)) return 2; epochs = l; }
        else if (!strcmp(a, "--lr")) { if (arg_float(&ga, 1e-9f, 10.0f, &c.lr)) return 2; }
        else if (!strcmp(a, "--backbone-lr-mult")) { if (arg_float(&ga, 0, 100, &c.backbone_lr_mult)) return 2; }
        else if (!strcmp(a, "--weight-decay")) { if (arg_float(&ga, 0, 1, &c.weight_decay)) return 2; }
        else if (!strcmp(a, "--optimizer")) {
            if (!strcmp(v, "sgd")) c.optimizer = DN_OPT_SGD;
            else if (!strcmp(v, "adamw")) c.optimizer = DN_OPT_ADAMW;
            else { fprintf(stderr, "defectnet train: --optimizer: '%s' is not sgd or adamw\n", v); return 2; }
        } else if (!strcmp(a, "--schedule")) {
            if (dn_sched_parse_kind(v, &c.schedule)) { fprintf(stderr, "defectnet train: --schedule: %s\n", dn_last_error()); return 2; }
        } else if (!strcmp(a, "--warmup")) { if (dn_arg_long(&ga, 0, 10000000, &l)) return 2; c.warmup = (int)l; }
        else if (!strcmp(a, "--batch")) { if (dn_arg_long(&ga, 1, 4096, &l)) return 2; c.batch = (int)l; }
        else if (!strcmp(a, "--image-size")) { if (dn_arg_long(&ga, 32, 1024, &l)) return 2; c.image_size = (int)l; }
        else if (!strcmp(a, "--views")) { if (dn_arg_long(&ga, 0, 64, &l)) return 2; c.views = (int)l; }
        else if (!strcmp(a, "--label-smoothing")) { if (arg_float(&ga, 0, 0.99f, &c.label_smoothing)) return 2; }
        else if (!strcmp(a, "--class-weights")) {
            if (!strcmp(v, "auto")) c.class_weights = 1;
            else if (!strcmp(v, "none")) c.class_weights = 0;
            else { fprintf(stderr, "defectnet train: --class-weights: '%s' is not auto or none\n", v); return 2; }
        } else if (!strcmp(a, "--aug")) {
            if (dn_aug_parse(v, &c.aug.flags)) { fprintf(stderr, "defectnet train: %s\n", dn_last_error()); return 2; }
        } else if (!strcmp(a, "--patience")) { if (dn_arg_long(&ga, 0, 100000, &l)) return 2; c.patience = (int)l; }
        else if (!strcmp(a, "--resume")) c.resume = v;
        else if (!strcmp(a, "--checkpoint")) c.checkpoint = v;
        else if (!strcmp(a, "--feature-cache")) c.cache_dir = v;
        else if (!strcmp(a, "--seed")) { if (dn_arg_long(&ga, 0, 2147483647L, &l)) return 2; c.seed = (uint64_t)l; }
        else if (!strcmp(a, "--split-seed")) { if (dn_arg_long(&ga, 0, 2147483647L, &l)) return 2; c.split.seed = (uint64_t)l; }
        else if (!strcmp(a, "--val")) { if (arg_float(&ga, 0, 0.9f, &f)) return 2; c.split.val = f; }
        else if (!strcmp(a, "--test")) { if (arg_float(&ga, 0, 0.9f, &f)) return 2; c.split.test = f; }
        else if (!strcmp(a, "--threads")) { if (dn_arg_long(&ga, 0, 1024, &l)) return 2; c.threads = (int)l; }
        else if (!strcmp(a, "--workers")) { if (dn_arg_long(&ga, 1, 64, &l)) return 2; c.workers = (int)l; }
        else {
            fprintf(stderr, "defectnet train: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (dn_args_npos(&ga)) return dn_usage_error("train", "unexpected argument '%s' (see --help)", dn_args_pos(&ga, 0));
    *o = (train_args){c, freeze, stages, good, epochs, have_weights};
    return -1;
}

/* Every input checked before anything is trained or written (required options, output
 * folders writable, --stages vs --freeze/--epochs), and the stage list resolved into
 * o->c. 0 or -1 (message printed). */
static int train_check(train_args *o) {
    dn_train_cfg *c = &o->c;
    if (!c->out) { fprintf(stderr, "defectnet train: --out is required (see --help)\n"); return -1; }
    if (check_writable("--out", c->out) || (c->checkpoint && check_writable("--checkpoint", c->checkpoint))) return -1;
    if (!o->have_weights) {
        fprintf(stderr, "defectnet train: --weights is required (a torchvision .pth, a defectnet model, or none)\n");
        return -1;
    }
    if (!c->data && (!c->split_manifest || access(c->split_manifest, R_OK) != 0)) {
        fprintf(stderr, "defectnet train: --data is required (or an existing --split-manifest)\n");
        return -1;
    }
    if (o->stages && (o->freeze || o->epochs > 0)) {
        fprintf(stderr, "defectnet train: --stages replaces --freeze/--epochs; give one or the other\n");
        return -1;
    }
    if (o->stages) {
        if (dn_train_parse_stages(o->stages, c->stages, &c->nstages)) {
            fprintf(stderr, "defectnet train: %s\n", dn_last_error());
            return -1;
        }
    } else {
        int scratch = !c->weights || !strcmp(c->weights, "none");
        if (o->freeze || scratch) {
            /* one stage: the frozen prefix given (from scratch: everything trains) */
            c->nstages = 1;
            c->stages[0].first_trainable = 0;
            if (o->freeze && dn_freeze_parse(o->freeze, &c->stages[0].first_trainable)) {
                fprintf(stderr, "defectnet train: --freeze: %s\n", dn_last_error());
                return -1;
            }
            c->stages[0].epochs = o->epochs > 0 ? (int)o->epochs : c->stages[0].first_trainable == DN_STAGE_HEAD ? 30 : 10;
        } else if (o->epochs > 0) {
            c->stages[0].epochs = (int)o->epochs; /* head stage of the default recipe */
        }
    }
    return 0;
}

int cmd_train(int argc, char **argv) {
    train_args o;
    int rc = train_parse(argc, argv, &o);
    if (rc >= 0) return rc;
    if (train_check(&o)) return 2;
    dn_train_cfg c = o.c;
    const char *good = o.good;
    if (!c.weights || !strcmp(c.weights, "none")) c.backbone_lr_mult = 1.0f; /* nothing is pretrained */
    c.progress = !c.quiet && dn_progress_enabled(); /* terminal only, DN_PROGRESS=0|1 overrides */

    if (good && check_good_class(&c, good)) return 2;
    dn_train_result res;
    dn_status st = dn_train_run(&c, &res);
    if (st) {
        if (c.progress) fputs("\r\033[K", stderr);
        fprintf(stderr, "defectnet train: %s\n", dn_last_error());
        return dn_exit_code(st);
    }
    if (store_good_class(c.out, good)) { dn_train_result_free(&res); return DN_EXIT_DATA; }
    if (c.json) {
        printf("{\"event\":\"done\",\"out\":\"%s\",\"classes\":%d,\"train\":%d,\"val\":%d,\"test\":%d,\"skipped\":%d,"
               "\"best_epoch\":%d,\"epochs\":%d,\"seconds\":%.2f,\"feature_seconds\":%.2f,\"split_manifest\":\"%s\",\"val_metrics\":",
               c.out, res.nclasses, res.ntrain, res.nval, res.ntest, res.skipped, res.best_epoch, res.epochs_run,
               res.seconds, res.feature_seconds, res.split_manifest);
        dn_eval_metrics_json(&res.val, (const char *const *)res.classes, stdout);
        printf(",\"test_metrics\":");
        if (res.ntest) dn_eval_metrics_json(&res.test, (const char *const *)res.classes, stdout);
        else printf("null");
        printf("}\n");
    } else {
        printf("model: %s (best epoch %d of %d, %.1fs)\n", c.out, res.best_epoch + 1, res.epochs_run, res.seconds);
        printf("split manifest: %s (%d train / %d val / %d test)\n", res.split_manifest, res.ntrain, res.nval, res.ntest);
        if (res.skipped) printf("skipped unreadable images: %d\n", res.skipped);
        printf("validation: accuracy %.4f  macro-F1 %.4f\n", res.val.accuracy, res.val.macro_f1);
        if (res.ntest) {
            printf("test: accuracy %.4f  macro-F1 %.4f  ECE %.4f\n", res.test.accuracy, res.test.macro_f1, res.test.ece);
            dn_eval_metrics_print(&res.test, (const char *const *)res.classes, stdout);
        }
    }
    int skipped = res.skipped;
    dn_train_result_free(&res);
    return skipped ? DN_EXIT_PARTIAL : DN_EXIT_OK; /* unreadable images were skipped (named above) */
}
