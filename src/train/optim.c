/* SGD and AdamW with PyTorch 1.13 numerics (see optim.h). */
#include "train/optim.h"
#include "core/core.h"
#include "kernels/kernels.h" /* dn_kernels_isa */
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct pstate {
    char name[64];
    int64_t numel;
    int64_t step;       /* updates this parameter has received (0 = no state yet) */
    float *b1, *b2;     /* SGD: momentum_buffer; AdamW: exp_avg, exp_avg_sq */
} pstate;

struct dn_optim {
    dn_optim_cfg cfg;
    dn_param *p;
    pstate *s;
    int n;
    int64_t steps;
    dn_pool *pool;      /* borrowed, may be NULL */
};

void dn_optim_cfg_default(dn_optim_cfg *c, dn_optim_kind kind) {
    memset(c, 0, sizeof *c);
    c->kind = kind;
    if (kind == DN_OPT_SGD) c->momentum = 0.9f;
    else c->weight_decay = 0.01f;
    c->beta1 = 0.9f; c->beta2 = 0.999f; c->eps = 1e-8f;
    c->group_lr_mult[0] = c->group_lr_mult[1] = 1.f;
}

static dn_status check_cfg(const dn_optim_cfg *c) {
    if (c->kind != DN_OPT_SGD && c->kind != DN_OPT_ADAMW)
        return dn_fail(DN_ERR_ARG, "optimizer: unknown kind %d", (int)c->kind);
    if (!(c->momentum >= 0) || !(c->dampening >= 0) || !(c->weight_decay >= 0))
        return dn_fail(DN_ERR_ARG, "optimizer: momentum, dampening and weight_decay must be >= 0");
    if (c->nesterov && (c->momentum <= 0 || c->dampening != 0))
        return dn_fail(DN_ERR_ARG, "optimizer: nesterov needs momentum > 0 and dampening 0");
    if (c->kind == DN_OPT_ADAMW && (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1)))
        return dn_fail(DN_ERR_ARG, "optimizer: AdamW betas (%g, %g) must be in [0, 1)", (double)c->beta1, (double)c->beta2);
    if (c->kind == DN_OPT_ADAMW && !(c->eps > 0))
        return dn_fail(DN_ERR_ARG, "optimizer: AdamW eps %g must be > 0", (double)c->eps);
    for (int g = 0; g < 2; g++)
        if (!(c->group_lr_mult[g] >= 0) || !isfinite(c->group_lr_mult[g]))
            return dn_fail(DN_ERR_ARG, "optimizer: group_lr_mult[%d] = %g must be >= 0", g, (double)c->group_lr_mult[g]);
    return DN_OK;
}

static void free_state(pstate *s) { free(s->b1); free(s->b2); s->b1 = s->b2 = NULL; s->step = 0; }

/* Allocates the state arrays of s (zeroed). */
static dn_status alloc_state(const dn_optim *o, pstate *s) {
    s->b1 = dn_calloc((size_t)s->numel, sizeof(float));
    if (o->cfg.kind == DN_OPT_ADAMW) s->b2 = dn_calloc((size_t)s->numel, sizeof(float));
    if (!s->b1 || (o->cfg.kind == DN_OPT_ADAMW && !s->b2)) { free_state(s); return DN_ERR_NOMEM; }
    return DN_OK;
}

dn_status dn_optim_new(const dn_optim_cfg *cfg, const dn_param *params, int n, dn_optim **out) {
    *out = NULL;
    dn_status st;
    if ((st = check_cfg(cfg))) return st;
    dn_optim *o = dn_calloc(1, sizeof *o);
    if (!o) return DN_ERR_NOMEM;
    o->cfg = *cfg;
    if ((st = dn_optim_rebind(o, params, n))) { dn_optim_free(o); return st; }
    *out = o;
    return DN_OK;
}

void dn_optim_free(dn_optim *o) {
    if (!o) return;
    for (int i = 0; i < o->n; i++) free_state(&o->s[i]);
    free(o->s);
    free(o->p);
    free(o);
}

dn_status dn_optim_rebind(dn_optim *o, const dn_param *params, int n) {
    if (n < 0 || (n > 0 && !params)) return dn_fail(DN_ERR_ARG, "optimizer: bad parameter list");
    dn_param *np = dn_calloc(n ? (size_t)n : 1, sizeof *np);
    pstate *ns = dn_calloc(n ? (size_t)n : 1, sizeof *ns);
    if (!np || !ns) { free(np); free(ns); return DN_ERR_NOMEM; }
    for (int i = 0; i < n; i++) {
        np[i] = params[i];
        snprintf(ns[i].name, sizeof ns[i].name, "%s", params[i].name);
        ns[i].numel = params[i].numel;
        /* keep the state of a parameter with the same name and size */
        for (int j = 0; j < o->n; j++)
            if (o->s[j].b1 && !strcmp(o->s[j].name, ns[i].name) && o->s[j].numel == ns[i].numel) {
                ns[i].b1 = o->s[j].b1; ns[i].b2 = o->s[j].b2; ns[i].step = o->s[j].step;
                o->s[j].b1 = o->s[j].b2 = NULL;
                break;
            }
    }
    for (int j = 0; j < o->n; j++) free_state(&o->s[j]);
    free(o->s); free(o->p);
    o->s = ns; o->p = np; o->n = n;
    return DN_OK;
}

int64_t dn_optim_steps(const dn_optim *o) { return o->steps; }

/* Elements [k0, k1) of one parameter. Elementwise, so splitting a parameter
 * across workers does not change any result. */
#define INL static inline __attribute__((always_inline))
INL void sgd_body(const dn_optim_cfg *c, const dn_param *p, pstate *s, float lr, float wd, int64_t k0, int64_t k1) {
    float *w = p->data, *buf = s->b1;
    const float *g0 = p->grad;
    float mu = c->momentum, damp = 1.f - c->dampening;
    int first = s->step == 0;
    for (int64_t k = k0; k < k1; k++) {
        float g = g0[k];
        if (wd != 0.f) g = g + wd * w[k];
        if (mu != 0.f) {
            buf[k] = first ? g : mu * buf[k] + damp * g;
            g = c->nesterov ? g + mu * buf[k] : buf[k];
        }
        w[k] = w[k] - lr * g;
    }
}

INL void adamw_body(const dn_optim_cfg *c, const dn_param *p, pstate *s, float lr, float wd, int64_t k0,
                    int64_t k1) {
    float *w = p->data, *m = s->b1, *v = s->b2;
    const float *g0 = p->grad;
    double t = (double)s->step; /* already incremented */
    double bc1 = 1.0 - pow(c->beta1, t), bc2 = 1.0 - pow(c->beta2, t);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float b1 = c->beta1, b2 = c->beta2, eps = c->eps, decay = 1.f - lr * wd;
    for (int64_t k = k0; k < k1; k++) {
        float g = g0[k];
        w[k] *= decay;
        m[k] = m[k] * b1 + (1.f - b1) * g;
        v[k] = v[k] * b2 + (1.f - b2) * g * g;
        float denom = sqrtf(v[k]) / bc2_sqrt + eps;
        w[k] = w[k] - step_size * (m[k] / denom);
    }
}

/* The update loops compiled for baseline x86-64 and for AVX-512 (16 lanes;
 * the step is memory- and divide-bound: 11M parameters x 7 arrays per AdamW
 * step for ResNet-18). Same operations in the same order per element: ISO C
 * mode (-std=c11) keeps GCC from contracting them into FMAs, and vector
 * sqrt/div round like the scalar ones, so both are bit-identical
 * (tests/test_conv_reuse.c: optim_avx512_bit_identical). */
static void sgd_update(const dn_optim_cfg *c, const dn_param *p, pstate *s, float lr, float wd, int64_t k0,
                       int64_t k1) {
    sgd_body(c, p, s, lr, wd, k0, k1);
}
static void adamw_update(const dn_optim_cfg *c, const dn_param *p, pstate *s, float lr, float wd, int64_t k0,
                         int64_t k1) {
    adamw_body(c, p, s, lr, wd, k0, k1);
}
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define OPT_SIMD 1
__attribute__((target("avx512f"))) static void sgd_update_avx512(const dn_optim_cfg *c, const dn_param *p, pstate *s,
                                                                 float lr, float wd, int64_t k0, int64_t k1) {
    sgd_body(c, p, s, lr, wd, k0, k1);
}
__attribute__((target("avx512f"))) static void adamw_update_avx512(const dn_optim_cfg *c, const dn_param *p,
                                                                   pstate *s, float lr, float wd, int64_t k0,
                                                                   int64_t k1) {
    adamw_body(c, p, s, lr, wd, k0, k1);
}
#endif

void dn_optim_set_pool(dn_optim *o, dn_pool *pool) { o->pool = pool; }

typedef struct { dn_optim *o; float lr; int avx512; } step_job;

/* Every worker updates its share of every parameter (state already allocated,
 * step counters advanced by the caller afterwards). */
static void step_fn(void *arg, int ith, int nth) {
    step_job *j = arg;
    dn_optim *o = j->o;
    const dn_optim_cfg *c = &o->cfg;
    for (int i = 0; i < o->n; i++) {
        const dn_param *p = &o->p[i];
        pstate *s = &o->s[i];
        long k0, k1;
        dn_split((long)p->numel, ith, nth, &k0, &k1);
        if (k0 >= k1) continue;
        float plr = j->lr * c->group_lr_mult[p->group == DN_PARAM_HEAD ? 1 : 0];
        float wd = (c->no_decay_norm_bias && p->is_norm_or_bias) ? 0.f : c->weight_decay;
#ifdef OPT_SIMD
        if (j->avx512) {
            if (c->kind == DN_OPT_SGD) sgd_update_avx512(c, p, s, plr, wd, k0, k1);
            else adamw_update_avx512(c, p, s, plr, wd, k0, k1);
            continue;
        }
#endif
        if (c->kind == DN_OPT_SGD) sgd_update(c, p, s, plr, wd, k0, k1);
        else adamw_update(c, p, s, plr, wd, k0, k1);
    }
}

dn_status dn_optim_step(dn_optim *o, float lr) {
    if (!(lr >= 0) || !isfinite(lr)) return dn_fail(DN_ERR_ARG, "optimizer: learning rate %g", (double)lr);
    const dn_optim_cfg *c = &o->cfg;
    int needs_state = c->kind == DN_OPT_ADAMW || c->momentum != 0.f;
    for (int i = 0; i < o->n; i++)
        if (needs_state && !o->s[i].b1 && alloc_state(o, &o->s[i]))
            return dn_fail(DN_ERR_NOMEM, "optimizer: no memory for the state of %s", o->p[i].name);
    /* AdamW's bias correction uses the step count including this step; SGD's
     * "first step" test uses the count before it. */
    if (c->kind == DN_OPT_ADAMW)
        for (int i = 0; i < o->n; i++) o->s[i].step++;
    step_job j = {o, lr, dn_kernels_isa() == DN_ISA_AVX512};
    if (o->pool) dn_pool_run(o->pool, step_fn, &j);
    else step_fn(&j, 0, 1);
    if (c->kind == DN_OPT_SGD)
        for (int i = 0; i < o->n; i++) o->s[i].step++;
    o->steps++;
    return DN_OK;
}

/* ------------------------------------------------------------ checkpoint state */

static dn_status add_copy(dn_tensors *out, const char *name, const float *src, int64_t numel) {
    float *d = dn_malloc((size_t)(numel ? numel : 1) * sizeof(float));
    if (!d) return DN_ERR_NOMEM;
    memcpy(d, src, (size_t)numel * sizeof(float));
    int64_t shape[1] = {numel};
    dn_status st = dn_tensors_add(out, name, 1, shape, d);
    if (st) free(d);
    return st;
}

static const char *kind_key(const dn_optim *o, int which) {
    if (o->cfg.kind == DN_OPT_SGD) return "momentum_buffer";
    return which == 0 ? "exp_avg" : "exp_avg_sq";
}

dn_status dn_optim_state_save(const dn_optim *o, dn_tensors *out) {
    dn_status st;
    float steps = (float)o->steps, kind = (float)o->cfg.kind;
    if ((st = add_copy(out, "optim.step", &steps, 1))) return st;
    if ((st = add_copy(out, "optim.kind", &kind, 1))) return st;
    for (int i = 0; i < o->n; i++) {
        const pstate *s = &o->s[i];
        if (!s->step) continue;
        char key[128];
        float step = (float)s->step;
        snprintf(key, sizeof key, "optim.%s.step", s->name);
        if ((st = add_copy(out, key, &step, 1))) return st;
        if (!s->b1) continue;
        snprintf(key, sizeof key, "optim.%s.%s", s->name, kind_key(o, 0));
        if ((st = add_copy(out, key, s->b1, s->numel))) return st;
        if (s->b2) {
            snprintf(key, sizeof key, "optim.%s.%s", s->name, kind_key(o, 1));
            if ((st = add_copy(out, key, s->b2, s->numel))) return st;
        }
    }
    return DN_OK;
}

static const dn_tensor *find_sized(const dn_tensors *in, const char *key, int64_t numel, dn_status *st) {
    const dn_tensor *t = dn_tensors_find(in, key);
    if (!t) { *st = dn_fail(DN_ERR_SHAPE, "optimizer state: missing %s", key); return NULL; }
    if (dn_tensor_numel(t) != numel) {
        *st = dn_fail(DN_ERR_SHAPE, "optimizer state: %s has %lld values, expected %lld", key,
                      (long long)dn_tensor_numel(t), (long long)numel);
        return NULL;
    }
    return t;
}

dn_status dn_optim_state_load(dn_optim *o, const dn_tensors *in) {
    dn_status st = DN_OK;
    const dn_tensor *ts = find_sized(in, "optim.step", 1, &st), *tk = find_sized(in, "optim.kind", 1, &st);
    if (!ts || !tk) return st;
    if ((int)tk->data[0] != (int)o->cfg.kind)
        return dn_fail(DN_ERR_FORMAT, "optimizer state: saved by %s, loading into %s",
                       (int)tk->data[0] == DN_OPT_SGD ? "SGD" : "AdamW", o->cfg.kind == DN_OPT_SGD ? "SGD" : "AdamW");
    if (!(ts->data[0] >= 0)) return dn_fail(DN_ERR_FORMAT, "optimizer state: negative step count");
    /* Validate everything before modifying any state. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < o->n; i++) {
            pstate *s = &o->s[i];
            char key[128];
            snprintf(key, sizeof key, "optim.%s.step", s->name);
            const dn_tensor *t = dn_tensors_find(in, key);
            if (!t) { if (pass) free_state(s); continue; } /* parameter had no state when saved */
            if (!find_sized(in, key, 1, &st)) return st;
            if (!(t->data[0] >= 1)) return dn_fail(DN_ERR_FORMAT, "optimizer state: %s = %g", key, (double)t->data[0]);
            int needs = o->cfg.kind == DN_OPT_ADAMW || o->cfg.momentum != 0.f;
            const dn_tensor *t1 = NULL, *t2 = NULL;
            if (needs) {
                snprintf(key, sizeof key, "optim.%s.%s", s->name, kind_key(o, 0));
                if (!(t1 = find_sized(in, key, s->numel, &st))) return st;
                if (o->cfg.kind == DN_OPT_ADAMW) {
                    snprintf(key, sizeof key, "optim.%s.%s", s->name, kind_key(o, 1));
                    if (!(t2 = find_sized(in, key, s->numel, &st))) return st;
                }
            }
            if (!pass) continue;
            if (needs && !s->b1 && alloc_state(o, s))
                return dn_fail(DN_ERR_NOMEM, "optimizer state: no memory for %s", s->name);
            if (t1) memcpy(s->b1, t1->data, (size_t)s->numel * sizeof(float));
            if (t2) memcpy(s->b2, t2->data, (size_t)s->numel * sizeof(float));
            s->step = (int64_t)t->data[0];
        }
    }
    o->steps = (int64_t)ts->data[0];
    return DN_OK;
}
