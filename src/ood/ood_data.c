/* Features of image files for fitting and evaluating unknown-input detection. */
#include "ood/ood.h"
#include "kernels/kernels.h"
#include "nn/engine.h"
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
    for (;;) {
        const float *x;
        const int *lab, *items;
        int nb;
        if ((st = dn_loader_next(L, &x, &lab, &items, &nb))) goto done;
        if (nb == 0) break;
        float *tmp = dn_malloc((size_t)nb * m->feat_dim * sizeof(float));
        if (!tmp) { st = dn_fail(DN_ERR_NOMEM, "ood features: out of memory"); goto done; }
        st = dn_session_features(s, x, nb, tmp);
        for (int i = 0; !st && i < nb; i++) {
            memcpy(feat + (size_t)items[i] * m->feat_dim, tmp + (size_t)i * m->feat_dim, (size_t)m->feat_dim * sizeof(float));
            ok[items[i]] = 1;
        }
        free(tmp);
        if (st) goto done;
    }
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
