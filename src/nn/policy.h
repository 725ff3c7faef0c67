/* The good class and the decision policy of a model: which class means "good
 * part", and how a row of calibrated probabilities becomes a decision on the
 * line. Here in nn because every classification applies it: the engine
 * (dn_session_classify*, hence `predict` and the C API), serve and eval all
 * call dn_policy_decide. Choosing a policy and mistake costs: eval/policy.h.
 *
 * Good class. Stored in the model metadata as
 *   "good_class": {"name": "ok", "source": "given" | "auto-detected"}
 * and, when absent, auto-detected from the class names: exactly one class
 * whose name, lower-cased with separators (space _ - .) removed, is one of
 * ok okay good free normal pass passed clean nodefect nodefects defectfree
 * nondefective flawless (e.g. "OK", "no_defect", "Defect-Free", "good part"
 * is not: whole names only). Two candidates or none: no good class.
 *
 * Decision policy ("decision_policy" metadata, written by `eval
 * --target-escape` / `--cost`): a part is accepted as good only if the
 * calibrated probability of the good class is >= good_threshold ("reject
 * unless confidently good"). Without a policy (good_threshold 0) a part is
 * accepted as good when the argmax is the good class and its confidence is
 * at least the model's threshold (the plain "uncertain" rule).
 *
 * Escape: a defective part (true class != good) accepted as good. False
 * reject: a good part not accepted as good (classified defective or
 * uncertain). These words are used by eval, serve's /metrics and the
 * manufacturing report alike.
 *
 * Ownership: nothing here allocates except dn_model_set_good_class (a
 * metadata copy owned by the model). */
#ifndef DN_NN_POLICY_H
#define DN_NN_POLICY_H
#include "defectnet.h"
#include "nn/model.h"

/* Index of the class named exactly name, -1 if none. */
int dn_model_class_index(const dn_model *m, const char *name);

/* Index of the single class whose name means "good part", -1 if none or ambiguous. */
int dn_good_class_detect(const char *const *names, int k);
/* 1 if a class name means "good part" (the rule above). */
int dn_good_class_name_is_good(const char *name);

typedef struct dn_good_class {
    int index;                /* -1: the model has none */
    int auto_detected;        /* 1: from the names (stored as such or detected now) */
    int stored;               /* 1: recorded in the model's metadata */
} dn_good_class;

/* The model's good class: stored metadata, else detection. A stored record
 * naming no class of the model is DN_ERR_FORMAT. */
dn_status dn_model_good_class(const dn_model *m, dn_good_class *out);
/* Records the good class in m's metadata: name must be a class of m
 * (DN_ERR_ARG naming it and listing the classes); NULL = auto-detect (no
 * record when nothing is detected). */
dn_status dn_model_set_good_class(dn_model *m, const char *name);

typedef struct dn_policy {
    int good;                 /* good class index, -1: none (then no policy applies) */
    float good_threshold;     /* > 0: accept good only if p[good] >= this */
} dn_policy;

/* The model's policy: good class (as above) and the stored good_threshold (0
 * if none). A decision_policy record without a threshold in [0, 1] or for
 * another class than the model's good class is DN_ERR_FORMAT. */
dn_status dn_model_policy(const dn_model *m, dn_policy *out);
/* Another good class (serve/predict --good-class): name must be a class of m
 * (DN_ERR_ARG listing them); a stored threshold chosen for a different class
 * is dropped. */
dn_status dn_policy_override_good(const dn_model *m, const char *name, dn_policy *pol);

/* Decision for one row of calibrated probabilities p[k]: sets out's class,
 * confidence, uncertain (threshold = the model's confidence threshold) and
 * decision (accepted / uncertain), leaving an "unknown" (out-of-distribution)
 * decision and ood_score as they are: initialise out (e.g. from
 * dn_session_classify, or zeroed). With a good threshold, a part whose
 * p[good] reaches it is the good class (even if another class has a higher
 * probability), and a good-class argmax below it is uncertain. Applying it
 * twice with the same policy gives the same result. Returns 1 if the part is
 * accepted as good (good class, not uncertain, not unknown), else 0. */
int dn_policy_decide(const dn_policy *pol, float threshold, const float *p, int k, dn_prediction *out);

#endif
