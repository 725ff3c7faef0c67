/* Learning-rate schedules as closed-form functions of the step (or epoch)
 * index t = 0, 1, 2, ... (the lr to use for step t), matching
 * torch.optim.lr_scheduler:
 *   constant: base_lr
 *   step:     StepLR(step_size, gamma)       base_lr * gamma^floor(t / step_size)
 *   cosine:   CosineAnnealingLR(T_max, eta_min) closed form
 *             eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2,
 *             except t is clamped to T_max (PyTorch's would rise again after T_max)
 * with optional linear warmup = SequentialLR([LinearLR(start_factor=warmup_start,
 * total_iters=warmup), main], milestones=[warmup]):
 *   t < warmup:  base_lr * (warmup_start + (1 - warmup_start) * t / warmup)
 *   t >= warmup: main schedule evaluated at t - warmup
 * (so T_max / step_size count steps after the warmup). */
#ifndef DN_TRAIN_SCHED_H
#define DN_TRAIN_SCHED_H
#include "defectnet.h"

typedef enum { DN_SCHED_CONST = 0, DN_SCHED_STEP = 1, DN_SCHED_COSINE = 2 } dn_sched_kind;

typedef struct dn_sched {
    dn_sched_kind kind;
    float base_lr;
    int step_size;      /* step: > 0 */
    float gamma;        /* step: e.g. 0.1 */
    int t_max;          /* cosine: > 0 */
    float eta_min;      /* cosine: >= 0 */
    int warmup;         /* 0 = none */
    float warmup_start; /* start factor in (0, 1]; PyTorch LinearLR default 1/3 */
} dn_sched;

/* Checks the fields for kind (DN_ERR_ARG naming the bad one). */
dn_status dn_sched_check(const dn_sched *s);
/* Parses "const", "step", "cosine" (DN_ERR_ARG otherwise). */
dn_status dn_sched_parse_kind(const char *name, dn_sched_kind *out);
/* Learning rate for step t >= 0 (t < 0 treated as 0). */
float dn_sched_lr(const dn_sched *s, long t);
#endif
