/* Learning-rate schedules (see sched.h for the PyTorch correspondence). */
#include "train/sched.h"
#include "core/core.h"
#include <math.h>
#include <string.h>

dn_status dn_sched_parse_kind(const char *name, dn_sched_kind *out) {
    if (name && !strcmp(name, "const")) *out = DN_SCHED_CONST;
    else if (name && !strcmp(name, "step")) *out = DN_SCHED_STEP;
    else if (name && !strcmp(name, "cosine")) *out = DN_SCHED_COSINE;
    else return dn_fail(DN_ERR_ARG, "schedule '%s': expected const, step or cosine", name ? name : "(null)");
    return DN_OK;
}

dn_status dn_sched_check(const dn_sched *s) {
    if (!(s->base_lr > 0) || !isfinite(s->base_lr))
        return dn_fail(DN_ERR_ARG, "schedule: base_lr %g must be > 0", (double)s->base_lr);
    if (s->kind == DN_SCHED_STEP && s->step_size < 1)
        return dn_fail(DN_ERR_ARG, "schedule: step_size %d must be >= 1", s->step_size);
    if (s->kind == DN_SCHED_STEP && !(s->gamma > 0))
        return dn_fail(DN_ERR_ARG, "schedule: gamma %g must be > 0", (double)s->gamma);
    if (s->kind == DN_SCHED_COSINE && s->t_max < 1)
        return dn_fail(DN_ERR_ARG, "schedule: t_max %d must be >= 1", s->t_max);
    if (s->kind == DN_SCHED_COSINE && !(s->eta_min >= 0 && s->eta_min <= s->base_lr))
        return dn_fail(DN_ERR_ARG, "schedule: eta_min %g must be in [0, base_lr]", (double)s->eta_min);
    if (s->kind != DN_SCHED_CONST && s->kind != DN_SCHED_STEP && s->kind != DN_SCHED_COSINE)
        return dn_fail(DN_ERR_ARG, "schedule: unknown kind %d", (int)s->kind);
    if (s->warmup < 0) return dn_fail(DN_ERR_ARG, "schedule: warmup %d must be >= 0", s->warmup);
    if (s->warmup > 0 && !(s->warmup_start > 0 && s->warmup_start <= 1))
        return dn_fail(DN_ERR_ARG, "schedule: warmup_start %g must be in (0, 1]", (double)s->warmup_start);
    return DN_OK;
}

float dn_sched_lr(const dn_sched *s, long t) {
    if (t < 0) t = 0;
    double base = s->base_lr;
    if (s->warmup > 0 && t < s->warmup)
        return (float)(base * (s->warmup_start + (1.0 - s->warmup_start) * (double)t / s->warmup));
    t -= s->warmup > 0 ? s->warmup : 0;
    switch (s->kind) {
    case DN_SCHED_STEP:
        return (float)(base * pow(s->gamma, (double)(t / s->step_size)));
    case DN_SCHED_COSINE: {
        long tt = t > s->t_max ? s->t_max : t;
        return (float)(s->eta_min + (base - s->eta_min) * (1.0 + cos(M_PI * (double)tt / s->t_max)) / 2.0);
    }
    default:
        return (float)base;
    }
}
