/* Shadow model of `defectnet serve --shadow` (see shadow.h). */
#include "trust/shadow.h"
#include "core/core.h"
#include "core/json.h"
#include "serve/pipeline.h"
#include "serve/store_review.h"
#include <stdlib.h>

struct dn_shadow {
    dn_gen *g;
};

dn_status dn_shadow_open(const char *model_path, dn_shadow **out) {
    *out = NULL;
    dn_shadow *sh = dn_calloc(1, sizeof *sh);
    if (!sh) return dn_fail(DN_ERR_NOMEM, "--shadow: out of memory");
    dn_status rc = dn_gen_load(model_path, &sh->g);
    if (rc) {
        free(sh);
        return dn_fail_prefix(rc, "--shadow");
    }
    *out = sh;
    return DN_OK;
}

void dn_shadow_free(dn_shadow *sh) {
    if (!sh) return;
    dn_gen_free(sh->g);
    free(sh);
}

const char *dn_shadow_version(const dn_shadow *sh) { return sh->g->version; }
const char *dn_shadow_sha256(const dn_shadow *sh) { return sh->g->sha; }

void dn_shadow_worker_free(dn_shadow_worker *w) {
    if (!w) return;
    dn_session_free(w->sess);
    free(w->probs);
    w->sess = NULL;
    w->probs = NULL;
}

dn_status dn_shadow_run(dn_shadow *sh, dn_shadow_worker *w, const uint8_t *data, size_t len, int64_t pred_id,
                        dn_store *st) {
    dn_gen *g = sh->g;
    dn_status rc;
    int nc = dn_model_num_classes(g->model);
    if (!w->sess) {
        if (!(w->probs = dn_malloc(sizeof(float) * (size_t)nc))) return dn_fail(DN_ERR_NOMEM, "shadow: out of memory");
        if ((rc = dn_gen_session(g, 1, 1, &w->sess))) return dn_fail_prefix(rc, "shadow session");
    }
    dn_image img = {0};
    rc = dn_image_decode(data, len, "image", &img);
    if (!rc) rc = dn_preprocess(&img, dn_model_preproc(g->model), dn_session_input(w->sess));
    dn_image_free(&img);
    if (rc) return dn_fail_prefix(rc, "shadow");
    dn_prediction pr;
    if ((rc = dn_session_classify_batch(w->sess, dn_session_input(w->sess), 1, &pr, w->probs)))
        return dn_fail_prefix(rc, "shadow");
    dn_sb sc = {0};
    dn_pipeline_scores_json(&sc, g, w->probs);
    if (sc.oom) { dn_sb_free(&sc); return dn_fail(DN_ERR_NOMEM, "shadow: out of memory"); }
    dn_shadow_record r = {g->sha, g->version, dn_model_class_name(g->model, pr.cls), sc.s,
                          dn_decision_name(pr.decision), pr.confidence, dn_wall_now()};
    rc = dn_store_shadow_insert(st, pred_id, &r);
    dn_sb_free(&sc);
    return rc;
}
