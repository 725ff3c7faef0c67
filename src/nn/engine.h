/* Inference engine internals (the public half is dn_session_* in defectnet.h).
 *
 * A session has two halves:
 *   1. a plan (dn_plan): BatchNorm folded into every conv (w' = w*g/sqrt(var+eps),
 *      b' = beta - mean*g/sqrt(var+eps), computed in double), one dn_conv_op
 *      per conv (packed weights: ~45 MB for ResNet-18), the geometry for one
 *      input size, stage shapes and the resolved implementation name. Immutable
 *      once built and reference-counted (C11 atomics): dn_session_new_ex builds
 *      a new plan; dn_session_new_shared / dn_session_new_on_plan make a session
 *      on an existing one. A plan is freed when its last reference (session or
 *      dn_plan_retain holder) is released, in any order;
 *   2. per-session buffers (thread pool, activations, conv scratch, pooled
 *      features, logits, an input staging buffer) planned once for max_batch
 *      images, so that dn_session_forward and friends never allocate.
 * Thread safety: a session is used by one thread at a time; its own worker pool
 * parallelises each forward. Sessions sharing a plan may run forwards on
 * different threads at the same time: running a dn_conv_op only reads it
 * (kernels.h; every implementation writes only y and the caller's scratch) and
 * the engine keeps all mutable state in the session. Creating and freeing
 * sessions that share a plan is safe from any threads; the plan or base
 * session passed to a constructor must stay alive for the duration of that call.
 * The plan borrows the model: the model must outlive every session on the plan
 * (the fc weights are read from it at every forward, not copied). The conv/BN
 * weights are snapshotted (folded) when the plan is built: after changing the
 * backbone parameters of a model, create a new (unshared) session.
 *
 * Layout: when every conv op can run on blocked activations (fp32 direct on
 * AVX-512, kernels.h dn_conv_op_blocked), activations stay NCHW16c with a zero
 * border from the stem to the pool and the implementation name gets
 * "+blocked"; env DN_BLOCKED=0 (read when a plan is built) keeps NCHW between
 * convs instead, for A/B comparisons. Results agree to float rounding.
 *
 * Stages (used by forward_to and stage_shape):
 *   0 = after the stem (conv1+bn1+relu+maxpool), 1..4 = after layer1..layer4,
 *   5 = pooled features (feat_dim x 1 x 1, i.e. the fc input). */
#ifndef DN_ENGINE_H
#define DN_ENGINE_H
#include "defectnet.h"
#include "kernels/kernels.h"
#include "nn/model.h"
#include "nn/policy.h"

typedef struct dn_session_opts {
    int max_batch;      /* >= 1 */
    int threads;        /* <= 0: all cores */
    int in_h, in_w;     /* input size; 0 = the model's preprocessing crop */
    int impl;           /* a dn_conv_impl, or -1 = env DN_CONV_IMPL if set, else DN_CONV_AUTO */
} dn_session_opts;

/* Full-control constructor (dn_session_new = {max_batch, threads, 0, 0, -1}).
 * *out is owned by the caller (dn_session_free). */
dn_status dn_session_new_ex(const dn_model *m, const dn_session_opts *o, dn_session **out);

typedef struct dn_plan dn_plan;

/* The plan of s, borrowed: valid while s (or another holder) keeps a reference. */
dn_plan *dn_session_plan(const dn_session *s);
/* One more reference to p, owned by the caller (release with dn_plan_release);
 * returns p. NULL-safe. */
dn_plan *dn_plan_retain(dn_plan *p);
/* Drops one reference; the last one frees the plan's ops. NULL-safe. */
void dn_plan_release(dn_plan *p);
/* A new session on plan p (same model and input size, its own buffers for
 * max_batch images and a pool of `threads`, <= 0: all cores); takes its own
 * reference to p. *out is owned by the caller (dn_session_free). NULL p or
 * max_batch outside 1..65536 -> DN_ERR_ARG with a one-line message.
 * (dn_session_new_shared in defectnet.h is this on base's plan.) */
dn_status dn_session_new_on_plan(dn_plan *p, int max_batch, int threads, dn_session **out);
/* References currently held on s's plan (tests, diagnostics); 0 for NULL. */
int dn_session_plan_refs(const dn_session *s);

/* Calibration hook: fn(ctx, conv, x, n, c, h, w, border) is called on the
 * forward's thread before every conv runs, with its input x (n images of c x h
 * x w; border >= 0: blocked NCHW16c with that zero border, -1: NCHW) and its
 * index in engine order (nn/quant.h dn_quant_conv_name). NULL fn: none. */
typedef void (*dn_conv_observer)(void *ctx, int conv, const float *x, int n, int c, int h, int w, int border);
void dn_session_observe(dn_session *s, dn_conv_observer fn, void *ctx);

/* Parses "auto|ref|direct|winograd|bf16|int8". Returns DN_OK or DN_ERR_ARG. */
dn_status dn_conv_impl_parse(const char *s, dn_conv_impl *out);
/* Name of the conv implementation the session's ops resolved to (e.g. "ref");
 * owned by the session. */
const char *dn_session_conv_impl(const dn_session *s);

int dn_session_max_batch(const dn_session *s);
/* The decision policy dn_session_classify* applies (good class + good
 * threshold, nn/policy.h): the model's own from session creation (a shared
 * session too), until replaced by dn_session_set_policy (predict
 * --good-class, dn_session_set_good_class). Borrowed from the session. */
const dn_policy *dn_session_policy(const dn_session *s);
void dn_session_set_policy(dn_session *s, const dn_policy *pol);
/* The model the session runs (borrowed). */
const dn_model *dn_session_model(const dn_session *s);
void dn_session_input_size(const dn_session *s, int *h, int *w);
/* Per-image shape of the activation after `stage` (0..5, see above). */
void dn_session_stage_shape(const dn_session *s, int stage, int *c, int *h, int *w);

/* A staging buffer of max_batch x 3 x in_h x in_w floats owned by the session,
 * which callers may fill (e.g. with dn_preprocess) and pass as x. */
float *dn_session_input(dn_session *s);

/* x: n x 3 x in_h x in_w. feat: n x feat_dim pooled features (the fc input). */
dn_status dn_session_features(dn_session *s, const float *x, int n, float *feat);
/* The pooled features (n x feat_dim) of the images of the session's last forward or
 * classify_batch, owned by the session and valid until its next call (serve's drift
 * monitor reads them without a second forward). */
const float *dn_session_last_features(const dn_session *s);
/* Activation after `stage` (0..5), NCHW, n x dn_session_stage_shape(stage). */
dn_status dn_session_forward_to(dn_session *s, const float *x, int n, int stage, float *out);

/* Forward + temperature softmax for n preprocessed images. preds: n entries;
 * probs: NULL or n x num_classes. */
dn_status dn_session_classify_batch(dn_session *s, const float *x, int n, dn_prediction *preds,
                                    float *probs);

/* probs[i] = softmax(logits[i] / T) row-wise for n rows of c (T <= 0 treated as 1).
 * Computed in double with max subtraction. logits and probs may alias. */
void dn_softmax_t(const float *logits, int n, int c, float T, float *probs);
#endif
