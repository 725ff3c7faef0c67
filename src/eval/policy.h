/* Mistake costs for choosing a decision policy, and the rates a stored policy
 * expects. The good class and the policy itself (reading it, applying it:
 * dn_policy_decide) are in nn/policy.h, included here, since every
 * classification (engine, predict, serve, eval) applies the same rule.
 *
 * Ownership: dn_cost owns its escape array (dn_cost_free). */
#ifndef DN_EVAL_POLICY_H
#define DN_EVAL_POLICY_H
#include "defectnet.h"
#include "nn/model.h"
#include "nn/policy.h"

/* The escape and false-reject rates the model's decision_policy record
 * expects ("expected" figures measured by eval), -1 each when unknown. */
void dn_model_expected_rates(const dn_model *m, double *escape, double *false_reject);

/* Costs of mistakes for choosing a policy: escape[c] for a part of defect
 * class c accepted as good, false_reject for a good part not accepted. */
typedef struct dn_cost {
    int k;
    double *escape;           /* [k] (the good class's entry unused) */
    double false_reject;
} dn_cost;

/* Parses "escape=50,false_reject=1[,escape:CLASS=100...]" (escape default 1,
 * false_reject default 1; costs >= 0, finite; class names of the model).
 * DN_ERR_ARG with one line naming the bad part. */
dn_status dn_cost_parse(const char *s, const dn_model *m, dn_cost *out);
void dn_cost_free(dn_cost *c);

#endif
