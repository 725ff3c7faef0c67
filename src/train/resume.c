/* A training run's checkpoint (model parameters, optimizer state, stage and
 * epoch counters, RNG state, best score) and resuming from one; the file
 * format is train/checkpoint.h. */
#include "train/train_run.h"
#include "io/modelfile.h"
#include "train/checkpoint.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void classes_json(const dn_model *m, dn_sb *b) {
    dn_sb_puts(b, "[");
    for (int i = 0; i < m->num_classes; i++) {
        if (i) dn_sb_puts(b, ",");
        dn_sb_json_str(b, m->class_names[i]);
    }
    dn_sb_puts(b, "]");
}

dn_status tr_save_checkpoint(run *r, int stage, int stage_epochs_done, int bad_epochs, const dn_optim *optim) {
    dn_tensors ts = {0};
    dn_meta meta = {0};
    dn_status st = tr_model_to_tensors(r->m, &ts);
    if (!st && optim) st = dn_optim_state_save(optim, &ts);
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
    snprintf(buf, sizeof buf, "%.17g", r->best_loss);
    if (!st) st = dn_meta_set(&meta, "best_loss", buf);
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

static int meta_int(const dn_meta *m, const char *k, int dflt) {
    const char *v = dn_meta_get(m, k);
    return v ? atoi(v) : dflt;
}

dn_status tr_load_resume(run *r, resume_state *rs) {
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
    char missing_name[160];
    int missing = tr_model_from_tensors(r->m, &rs->ts, missing_name, sizeof missing_name);
    if (missing) {
        st = dn_fail(DN_ERR_SHAPE, "%s: checkpoint lacks or mis-sizes %s (%d tensors); different architecture?", path,
                     missing_name, missing);
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
    const char *bl = dn_meta_get(&meta, "best_loss");
    r->best_loss = bl ? atof(bl) : 1e300;
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
    if (access(r->cfg->out, R_OK) == 0 && dn_model_load(r->cfg->out, &b) == DN_OK && tr_classes_match(b, r->ds) &&
        b->nblocks == r->m->nblocks && b->feat_dim == r->m->feat_dim) {
        tr_model_copy_params(r->best, b);
    } else {
        tr_model_copy_params(r->best, r->m);
    }
    dn_model_free(b);
    tr_log(r, "resuming from %s: stage %d, %d epochs done, best val macro-F1 %.4f", path, rs->stage + 1,
          rs->stage_epochs_done, r->best_f1);
done:
    dn_sb_free(&cl);
    dn_meta_free(&meta);
    return st;
}

