/* Inference engine internals (the public half is dn_session_* in defectnet.h).
 *
 * A session is built from a model in two steps:
 *   1. a plan: BatchNorm folded into every conv (w' = w*g/sqrt(var+eps),
 *      b' = beta - mean*g/sqrt(var+eps), computed in double) and one dn_conv_op
 *      per conv; immutable once built;
 *   2. per-session buffers (activations, conv scratch, pooled features, an input
 *      staging buffer) planned once for max_batch images of in_h x in_w, so that
 *      dn_session_forward and friends never allocate.
 * The session borrows the model: the model must outlive the session (the fc
 * weights are read from it at every forward, not copied). The conv/BN weights
 * are snapshotted (folded) when the session is created: after changing the
 * backbone parameters of a model, create a new session. A session is used by one thread at a
 * time; its own worker pool parallelises each forward.
 *
 * Stages (used by forward_to and stage_shape):
 *   0 = after the stem (conv1+bn1+relu+maxpool), 1..4 = after layer1..layer4,
 *   5 = pooled features (feat_dim x 1 x 1, i.e. the fc input). */
#ifndef DN_ENGINE_H
#define DN_ENGINE_H
#include "defectnet.h"
#include "kernels/kernels.h"
#include "nn/model.h"

typedef struct dn_session_opts {
    int max_batch;      /* >= 1 */
    int threads;        /* <= 0: all cores */
    int in_h, in_w;     /* input size; 0 = the model's preprocessing crop */
    int impl;           /* a dn_conv_impl, or -1 = env DN_CONV_IMPL if set, else DN_CONV_AUTO */
} dn_session_opts;

/* Full-control constructor (dn_session_new = {max_batch, threads, 0, 0, -1}).
 * *out is owned by the caller (dn_session_free). */
dn_status dn_session_new_ex(const dn_model *m, const dn_session_opts *o, dn_session **out);

/* Parses "auto|ref|direct|winograd|bf16|int8". Returns DN_OK or DN_ERR_ARG. */
dn_status dn_conv_impl_parse(const char *s, dn_conv_impl *out);
/* Name of the conv implementation the session's ops resolved to (e.g. "ref");
 * owned by the session. */
const char *dn_session_conv_impl(const dn_session *s);

int dn_session_max_batch(const dn_session *s);
void dn_session_input_size(const dn_session *s, int *h, int *w);
/* Per-image shape of the activation after `stage` (0..5, see above). */
void dn_session_stage_shape(const dn_session *s, int stage, int *c, int *h, int *w);

/* A staging buffer of max_batch x 3 x in_h x in_w floats owned by the session,
 * which callers may fill (e.g. with dn_preprocess) and pass as x. */
float *dn_session_input(dn_session *s);

/* x: n x 3 x in_h x in_w. feat: n x feat_dim pooled features (the fc input). */
dn_status dn_session_features(dn_session *s, const float *x, int n, float *feat);
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
