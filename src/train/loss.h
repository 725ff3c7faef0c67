/* Losses for training. */
#ifndef DN_TRAIN_LOSS_H
#define DN_TRAIN_LOSS_H
#include "defectnet.h"

/* Softmax cross-entropy with PyTorch's semantics of
 *   nn.CrossEntropyLoss(weight=class_w, label_smoothing=smoothing, reduction='mean'):
 *   p = softmax(logits_i), w = class_w (all ones when NULL), C = classes, e = smoothing
 *   loss = sum_i [ (1-e) * w[y_i] * -log p_i[y_i]  +  e/C * sum_c w[c] * -log p_i[c] ]
 *          / sum_i w[y_i]
 * (the smoothing term is normalised by the same sum of target weights, as
 * PyTorch 1.13 does). logits [n][c], labels [n] in [0, c).
 * *loss receives the mean loss; dlogits (may be NULL) receives d loss / d logits
 * [n][c]. Computed in double internally, log-sum-exp stabilised.
 * Errors: DN_ERR_ARG for a label out of range, n/c < 1, smoothing outside [0,1],
 * negative class weights or a zero sum of target weights; DN_ERR_NUMERIC if a
 * logit is NaN/Inf (nothing written to dlogits then). */
dn_status dn_ce_loss(const float *logits, const int *labels, int n, int c, const float *class_w,
                     float smoothing, float *loss, float *dlogits);

/* Softmax of one row (in place allowed: out may equal logits). */
void dn_softmax_row(const float *logits, int c, float *out);
#endif
