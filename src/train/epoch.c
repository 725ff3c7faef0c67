/* The epoch driver of network stages and what every stage shares: sampling,
 * optimizer and schedule construction, the model selection rule (see
 * train_run.h). */
#include "train/train_run.h"
#include "io/modelfile.h"
#include "train/featcache.h"
#include "train/loader.h"
#include "train/loss.h"
#include "train/net.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int dn_train_better(double f1, double loss, double best_f1, double best_loss) {
    if (isnan(f1)) return 0;
    if (f1 > best_f1 + 1e-9) return 1;
    if (f1 < best_f1 - 1e-9) return 0;
    if (isnan(loss)) return 0;
    return isnan(best_loss) || loss <= best_loss;
}

double tr_nll(const float *probs, const int *y, int64_t n, int k) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        double p = probs[i * k + y[i]];
        s -= log(p > 1e-30 ? p : 1e-30);
    }
    return n > 0 ? s / (double)n : 0;
}

static void shuffle(int *a, int n, dn_rng *rng) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)dn_rng_below(rng, (uint32_t)i + 1);
        int t = a[i]; a[i] = a[j]; a[j] = t;
    }
}

/* Epoch order over n samples with labels y: a permutation, or with balanced
 * sampling n draws with replacement, each class equally likely. */
void tr_epoch_order(const int *y, int n, int k, int balanced, dn_rng *rng, int *order) {
    if (!balanced) {
        for (int i = 0; i < n; i++) order[i] = i;
        shuffle(order, n, rng);
        return;
    }
    int *cnt = dn_calloc((size_t)k, sizeof(int)), present = 0;
    double *cum = dn_malloc((size_t)n * sizeof(double));
    if (!cnt || !cum) { /* out of memory: fall back to a permutation */
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

dn_status tr_make_sched(const dn_train_cfg *c, long total_steps, dn_sched *s) {
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

dn_status tr_make_optim(const dn_train_cfg *c, const dn_param *p, int np, dn_optim **o) {
    dn_optim_cfg oc;
    dn_optim_cfg_default(&oc, c->optimizer);
    oc.weight_decay = c->weight_decay;
    oc.group_lr_mult[DN_PARAM_BACKBONE] = c->backbone_lr_mult;
    oc.group_lr_mult[DN_PARAM_HEAD] = 1.0f;
    oc.no_decay_norm_bias = 1;
    return dn_optim_new(&oc, p, np, o);
}

dn_status tr_bad_loss(int gep, long step, float loss) {
    return dn_fail(DN_ERR_NUMERIC, "training diverged at epoch %d step %ld: loss is %s; stopping (the last checkpoint and best model are kept; try a lower --lr)",
                   gep + 1, step, isnan(loss) ? "NaN" : "Inf");
}

dn_status tr_save_model_atomic(const dn_model *m, const char *out, const char *tmp) {
    dn_status st = dn_model_save(m, tmp);
    if (st) { unlink(tmp); return st; }
    if (rename(tmp, out) != 0) {
        unlink(tmp);
        return dn_fail(DN_ERR_IO, "%s: cannot rename the saved model into place", out);
    }
    return DN_OK;
}

/* ------------------------------------------------------------ batch sources */

typedef struct pass {
    tr_batches *src;
    const int *order;       /* cached rows: NULL = in order */
    int count, pos, B;
    float *xb;              /* cached rows in a shuffled order are gathered here */
    int *yb;
} pass;

static dn_status pass_start(pass *p, tr_batches *src, const int *order, int count, int augment, uint64_t pass_id) {
    p->src = src;
    p->order = order;
    p->count = count;
    p->pos = 0;
    return src->loader ? dn_loader_start(src->loader, order, count, augment, pass_id) : DN_OK;
}

static dn_status pass_next(pass *p, const float **x, const int **y, int *nb) {
    tr_batches *s = p->src;
    if (s->loader) {
        const int *items;
        return dn_loader_next(s->loader, x, y, &items, nb);
    }
    int n = p->count - p->pos < p->B ? p->count - p->pos : p->B, d = s->rows->dim;
    if (n < 0) n = 0;
    if (!p->order) {
        *x = s->rows->x + (size_t)p->pos * d;
        *y = s->rows->y + p->pos;
    } else {
        for (int j = 0; j < n; j++) {
            memcpy(p->xb + (size_t)j * d, s->rows->x + (size_t)p->order[p->pos + j] * d, (size_t)d * sizeof(float));
            p->yb[j] = s->rows->y[p->order[p->pos + j]];
        }
        *x = p->xb;
        *y = p->yb;
    }
    p->pos += n;
    *nb = n;
    return DN_OK;
}

/* Names the images of a finished loader pass that could not be read. */
static void pass_note_skipped(run *r, tr_batches *s) {
    if (!s->loader || !s->bad || !dn_loader_skipped(s->loader)) return;
    for (int i = 0; i < s->n; i++)
        if (dn_loader_item_failed(s->loader, i)) tr_note_skipped(r, s->paths, s->bad, i);
}

/* ------------------------------------------------------------ the driver */

/* End of an epoch: keep the model if it is the best so far (written to --out),
 * report, checkpoint; returns 1 when the stage stops early. */
static dn_status end_of_epoch(run *r, int si, int ep, int epochs, const dn_optim *o, const dn_eval_metrics *vm,
                              double vloss, double loss, double secs, double ips, int *bad, int *stop) {
    const dn_train_cfg *c = r->cfg;
    dn_status st;
    int improved = dn_train_better(vm->macro_f1, vloss, r->best_f1, r->best_loss);
    if (improved) {
        r->best_f1 = vm->macro_f1;
        r->best_loss = vloss;
        r->best_epoch = r->gep;
        tr_model_copy_params(r->best, r->m);
        *bad = 0;
        if ((st = tr_save_model_atomic(r->best, c->out, r->out_tmp))) return st;
    } else {
        (*bad)++;
    }
    tr_epoch_report(r, si, ep, epochs, loss, vm, vloss, secs, ips, improved);
    r->gep++;
    *stop = c->patience > 0 && *bad >= c->patience;
    if ((st = tr_save_checkpoint(r, si, *stop || ep + 1 == epochs ? epochs : ep + 1, *bad, o))) return st;
    if (*stop) tr_log(r, "early stop: no better validation macro-F1 (ties: lower validation loss) for %d epochs", *bad);
    return DN_OK;
}

/* Validation pass in eval mode: probabilities and labels of every readable item. */
static dn_status validate(run *r, struct dn_net *net, tr_batches *va, pass *p, const int *ident, int k, float *probs,
                          int *vy, int *got) {
    dn_status st = pass_start(p, va, va->loader ? ident : NULL, va->n, 0, 0);
    if (st) return st;
    *got = 0;
    for (;;) {
        const float *x;
        const int *lab;
        int nb;
        if ((st = pass_next(p, &x, &lab, &nb))) return st;
        if (!nb) break;
        if ((st = dn_net_eval_forward(net, va->from, x, nb, probs + (size_t)*got * k))) return st;
        for (int j = 0; j < nb; j++) {
            dn_softmax_row(probs + (size_t)(*got + j) * k, k, probs + (size_t)(*got + j) * k);
            vy[*got + j] = lab[j];
        }
        *got += nb;
    }
    pass_note_skipped(r, va);
    return DN_OK;
}

dn_status tr_run_epochs(run *r, int si, struct dn_net *net, dn_optim *o, tr_batches *tr, tr_batches *va, int start_ep,
                        int bad) {
    const dn_train_cfg *c = r->cfg;
    int epochs = c->stages[si].epochs, k = r->k, B = c->batch, n = tr->n;
    int d = tr->rows ? tr->rows->dim : 0;
    dn_eval_metrics vm = {0};
    dn_status st = DN_ERR_NOMEM;
    float *logits = dn_malloc((size_t)B * k * sizeof(float)), *dl = dn_malloc((size_t)B * k * sizeof(float));
    float *vprobs = dn_malloc((size_t)(va->n ? va->n : 1) * k * sizeof(float));
    int *order = dn_malloc((size_t)(n ? n : 1) * sizeof(int)), *vy = dn_malloc((size_t)(va->n ? va->n : 1) * sizeof(int));
    int *ident = dn_malloc((size_t)(va->n ? va->n : 1) * sizeof(int));
    pass p = {0};
    p.B = B;
    p.xb = d ? dn_alloc_aligned((size_t)B * d * sizeof(float)) : NULL;
    p.yb = dn_malloc((size_t)B * sizeof(int));
    if (!logits || !dl || !vprobs || !order || !vy || !ident || !p.yb || (d && !p.xb)) goto done;
    for (int i = 0; i < va->n; i++) ident[i] = i;
    if (n < 1) { st = dn_fail(DN_ERR_ARG, "no readable training images"); goto done; }
    long steps_per = (n + B - 1) / B;
    dn_sched sc;
    if ((st = tr_make_sched(c, steps_per * epochs, &sc))) goto done;
    long step = (long)start_ep * steps_per;
    double ep_units = tr_epoch_units(r, si, n, va->n, va->from);
    for (int ep = start_ep; ep < epochs; ep++) {
        double t0 = dn_now(), lsum = 0;
        int seen = 0;
        tr_epoch_order(tr->labels, n, k, c->balanced_sampler, &r->rng, order);
        if ((st = pass_start(&p, tr, order, n, tr->loader && c->aug.flags != 0, (uint64_t)r->gep + 1))) goto done;
        for (;;) {
            const float *x;
            const int *lab;
            int nb;
            if ((st = pass_next(&p, &x, &lab, &nb))) goto done;
            if (!nb) break;
            dn_net_zero_grad(net);
            if ((st = dn_net_forward_from(net, tr->from, x, nb, logits))) goto done;
            float loss = 0;
            st = dn_ce_loss(logits, lab, nb, k, r->class_w, c->label_smoothing, &loss, dl);
            if (st == DN_ERR_NUMERIC || (!st && !isfinite(loss))) { st = tr_bad_loss(r->gep, step, isfinite(loss) ? NAN : loss); goto done; }
            if (st) goto done;
            if ((st = dn_net_backward(net, dl))) goto done;
            if ((st = dn_optim_step(o, dn_sched_lr(&sc, step)))) goto done;
            step++;
            lsum += (double)loss * nb;
            seen += nb;
            double el = dn_now() - t0, ips = seen / (el > 0 ? el : 1e-9);
            tr_progress(r, si, ep, epochs, (double)seen / n, lsum / seen, ips, ep_units * seen / n, el);
        }
        pass_note_skipped(r, tr);
        double train_s = dn_now() - t0;
        int got = 0;
        if ((st = validate(r, net, va, &p, ident, k, vprobs, vy, &got))) goto done;
        dn_eval_metrics_free(&vm);
        if ((st = dn_eval_metrics_compute(k, got, vy, vprobs, NULL, 1, &vm))) goto done;
        double secs = dn_now() - t0;
        tr_clock_add(r, ep_units, secs);
        int stop = 0;
        if ((st = end_of_epoch(r, si, ep, epochs, o, &vm, tr_nll(vprobs, vy, got, k), seen ? lsum / seen : 0, secs,
                               seen / (train_s > 0 ? train_s : 1e-9), &bad, &stop)))
            goto done;
        if (stop) {
            tr_clock_skip(r, (epochs - ep - 1) * ep_units);
            break;
        }
    }
    st = DN_OK;
done:
    dn_eval_metrics_free(&vm);
    dn_free_aligned(p.xb);
    free(p.yb);
    free(logits); free(dl); free(vprobs); free(order); free(vy); free(ident);
    return st;
}
