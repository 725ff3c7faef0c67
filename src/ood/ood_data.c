/* Features of image files for fitting and evaluating unknown-input detection. */
#include "ood/ood.h"
#include "core/progress.h"
#include "kernels/kernels.h"
#include "nn/engine.h"
#include "ood/gradcam.h"
#include "trust/drift.h"
#include "train/loader.h"
#include <stdlib.h>
#include <string.h>

dn_status dn_ood_features(const dn_model *m, const char *const *paths, int n, int batch, int threads, float *feat,
                          unsigned char *ok, int *skipped, const char *who) {
    *skipped = 0;
    if (n <= 0) return DN_OK;
    if (batch < 1) batch = 16;
    dn_session *s = NULL;
    dn_loader *L = NULL;
    int *labels = dn_calloc((size_t)n, sizeof(int)), *order = dn_malloc((size_t)n * sizeof(int));
    dn_status st = DN_OK;
    if (!labels || !order) { st = dn_fail(DN_ERR_NOMEM, "ood features: out of memory"); goto done; }
    for (int i = 0; i < n; i++) order[i] = i;
    memset(ok, 0, (size_t)n);
    memset(feat, 0, (size_t)n * m->feat_dim * sizeof(float));
    if ((st = dn_session_new(m, batch, threads, &s))) goto done;
    dn_loader_cfg lc;
    memset(&lc, 0, sizeof lc);
    lc.paths = paths;
    lc.labels = labels;
    lc.n = n;
    lc.pp = m->pp;
    lc.batch = batch;
    lc.workers = 2;
    lc.seed = 1;
    if ((st = dn_loader_new(&lc, &L)) || (st = dn_loader_start(L, order, n, 0, 0))) goto done;
    dn_progress pg; /* on a terminal only (core/progress.h) */
    dn_progress_start(&pg, who ? who : "features", n);
    long seen = 0;
    for (;;) {
        const float *x;
        const int *lab, *items;
        int nb;
        if ((st = dn_loader_next(L, &x, &lab, &items, &nb))) { dn_progress_end(&pg); goto done; }
        if (nb == 0) break;
        float *tmp = dn_malloc((size_t)nb * m->feat_dim * sizeof(float));
        if (!tmp) { dn_progress_end(&pg); st = dn_fail(DN_ERR_NOMEM, "ood features: out of memory"); goto done; }
        st = dn_session_features(s, x, nb, tmp);
        for (int i = 0; !st && i < nb; i++) {
            memcpy(feat + (size_t)items[i] * m->feat_dim, tmp + (size_t)i * m->feat_dim, (size_t)m->feat_dim * sizeof(float));
            ok[items[i]] = 1;
        }
        free(tmp);
        if (st) { dn_progress_end(&pg); goto done; }
        dn_progress_update(&pg, seen += nb);
    }
    dn_progress_end(&pg);
    *skipped = dn_loader_skipped(L);
    if (*skipped && who) fprintf(stderr, "%s: %d unreadable image(s) skipped, first: %s\n", who, *skipped, dn_loader_first_error(L));
done:
    dn_loader_free(L);
    dn_session_free(s);
    free(labels);
    free(order);
    return st;
}

void dn_ood_logits(const dn_model *m, const float *feat, int n, float *logits) {
    int C = m->num_classes;
    dn_sgemm(0, 1, n, C, m->feat_dim, 1.0f, feat, m->feat_dim, m->fc_w, m->feat_dim, 0.0f, logits, C, NULL);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) logits[(size_t)i * C + c] += m->fc_b[c];
}

dn_status dn_ood_calibrate_files(dn_model *m, const char *const *fit_paths, const int *fit_y, int nfit,
                                 const char *const *val_paths, int nval, const dn_ood_cfg *cfg, int batch, int threads,
                                 int *skipped) {
    int d = m->feat_dim, sk = 0;
    *skipped = 0;
    float *ff = dn_malloc((size_t)(nfit > 0 ? nfit : 1) * d * sizeof(float));
    float *fv = dn_malloc((size_t)(nval > 0 ? nval : 1) * d * sizeof(float));
    unsigned char *okf = dn_malloc((size_t)(nfit > 0 ? nfit : 1)), *okv = dn_malloc((size_t)(nval > 0 ? nval : 1));
    int *y = dn_malloc((size_t)(nfit > 0 ? nfit : 1) * sizeof(int));
    const char **sub = dn_malloc(64 * sizeof(char *));
    dn_ood *o = NULL;
    dn_status st = DN_OK;
    if (!ff || !fv || !okf || !okv || !y || !sub) { st = dn_fail(DN_ERR_NOMEM, "ood calibrate: out of memory"); goto done; }
    if ((st = dn_ood_features(m, fit_paths, nfit, batch, threads, ff, okf, &sk, "ood calibrate"))) goto done;
    *skipped += sk;
    if ((st = dn_ood_features(m, val_paths, nval, batch, threads, fv, okv, &sk, "ood calibrate"))) goto done;
    *skipped += sk;
    int nf = 0, nv = 0; /* readable rows only, labels kept with their rows */
    for (int i = 0; i < nfit; i++)
        if (okf[i]) { memmove(ff + (size_t)nf * d, ff + (size_t)i * d, (size_t)d * sizeof(float)); y[nf++] = fit_y[i]; }
    for (int i = 0; i < nval; i++)
        if (okv[i]) memmove(fv + (size_t)nv++ * d, fv + (size_t)i * d, (size_t)d * sizeof(float));
    if ((st = dn_ood_fit(m, ff, y, nf, fv, nv, cfg, &o))) goto done;
    dn_ood_free(m->ood);
    m->ood = o; /* the Grad-CAM reference below runs on the model with its detector */
    int drift_ok; /* drift reference from the same val features (trust/drift.h; < 20 rows: none) */
    if ((st = dn_drift_ref_store(m, fv, nv, &drift_ok))) goto done;
    int ns = 0;
    for (int i = 0; i < nval && ns < 64; i += (nval + 63) / 64)
        if (okv[i]) sub[ns++] = val_paths[i];
    if (ns && (st = dn_gradcam_reference(m, sub, ns, o->cam_ref))) goto done;
done:
    free(ff); free(fv); free(okf); free(okv); free(y); free(sub);
    return st;
}
