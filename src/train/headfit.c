/* Head-only training on cached pooled features (the fast path, trainer.h):
 * logits = x W^T + b by one GEMM per batch, no network. */
#include "train/train_run.h"
#include "train/featcache.h"
#include "train/loss.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void logits_of(const dn_model *m, const float *x, int n, float *logits) {
    int k = m->num_classes, d = m->feat_dim;
    dn_sgemm(0, 1, n, k, d, 1.0f, x, d, m->fc_w, d, 0.0f, logits, k, NULL);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < k; j++) logits[(size_t)i * k + j] += m->fc_b[j];
}

/* Metrics and mean cross-entropy of the current head on cached features. */
static dn_status head_eval(const dn_model *m, const dn_featcache *fc, dn_eval_metrics *out, double *nll) {
    int k = m->num_classes;
    float *p = dn_malloc((size_t)(fc->n ? fc->n : 1) * k * sizeof(float));
    if (!p) return DN_ERR_NOMEM;
    logits_of(m, fc->x, (int)fc->n, p);
    for (int64_t i = 0; i < fc->n; i++) dn_softmax_row(p + i * k, k, p + i * k);
    dn_status st = dn_eval_metrics_compute(k, fc->n, fc->y, p, NULL, k < 5 ? k : 5, out);
    *nll = tr_nll(p, fc->y, fc->n, k);
    free(p);
    return st;
}

dn_status dn_head_fit(dn_model *m, const dn_featcache *tr, const dn_featcache *va, const dn_train_cfg *c,
                      const float *class_w, int epochs, dn_rng *rng, dn_epoch_fn report, void *ctx,
                      dn_head_fit_result *res) {
    memset(res, 0, sizeof *res);
    res->best_epoch = -1;
    res->best_f1 = -1;
    res->best_loss = INFINITY;
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
    if ((st = tr_make_optim(c, p, 2, &o))) goto done;
    long steps_per = (n + B - 1) / B, step = 0;
    dn_sched sc;
    if ((st = tr_make_sched(c, steps_per * epochs, &sc))) goto done;
    memcpy(bw, m->fc_w, (size_t)k * d * sizeof(float));
    memcpy(bb, m->fc_b, (size_t)k * sizeof(float));
    for (int ep = 0; ep < epochs; ep++) {
        double t0 = dn_now(), lsum = 0;
        tr_epoch_order(tr->y, n, k, c->balanced_sampler, rng, order);
        for (int s0 = 0; s0 < n; s0 += B) {
            int nb = n - s0 < B ? n - s0 : B;
            for (int j = 0; j < nb; j++) {
                memcpy(xb + (size_t)j * d, tr->x + (size_t)order[s0 + j] * d, (size_t)d * sizeof(float));
                yb[j] = tr->y[order[s0 + j]];
            }
            logits_of(m, xb, nb, lg);
            float loss = 0;
            st = dn_ce_loss(lg, yb, nb, k, class_w, c->label_smoothing, &loss, dl);
            if (st == DN_ERR_NUMERIC || (!st && !isfinite(loss))) { st = tr_bad_loss(ep, step, isfinite(loss) ? NAN : loss); goto done; }
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
        double vloss = 0;
        if (va && va->n > 0) {
            dn_eval_metrics_free(&vm);
            if ((st = head_eval(m, va, &vm, &vloss))) goto done;
            vp = &vm;
            if (dn_train_better(vm.macro_f1, vloss, res->best_f1, res->best_loss)) {
                res->best_f1 = vm.macro_f1;
                res->best_loss = vloss;
                res->best_epoch = ep;
                memcpy(bw, m->fc_w, (size_t)k * d * sizeof(float));
                memcpy(bb, m->fc_b, (size_t)k * sizeof(float));
                improved = 1;
                bad = 0;
            } else {
                bad++;
            }
        }
        if (report) report(ctx, ep, lsum / n, vp, vloss, dn_now() - t0, improved);
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

