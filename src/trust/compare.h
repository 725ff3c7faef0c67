/* Live vs shadow model agreement from the store's shadow_predictions
 * (`defectnet compare --db`, the manufacturing report's shadow section; docs/review.md).
 * Classes are matched by name, so a candidate with renamed or extra classes shows them
 * as differences. Ownership: a dn_compare owns nothing outside itself. */
#ifndef DN_TRUST_COMPARE_H
#define DN_TRUST_COMPARE_H
#include "core/json.h"
#include "serve/store.h"
#include <stdio.h>

#define DN_COMPARE_MAX_CLASSES 64

typedef struct dn_compare_class {
    char name[128];
    long live, shadow;        /* predictions of this class by each model */
    long both;                /* pairs where both said this class */
} dn_compare_class;

typedef struct dn_compare {
    long n;                   /* pairs (predictions with a shadow answer) */
    long agree;               /* same class */
    long decision_agree;      /* same decision (accepted/uncertain/unknown) */
    long live_unsure, shadow_unsure; /* decisions other than accepted */
    int ncls;
    int truncated;            /* more than DN_COMPARE_MAX_CLASSES names: the rest counted in n only */
    dn_compare_class cls[DN_COMPARE_MAX_CLASSES];
    char live_version[160], shadow_version[160]; /* of the last pair */
    double first, last;       /* time range of the pairs */
} dn_compare;

/* Aggregates the pairs from <= time < to (0 = unbounded). */
dn_status dn_compare_store(dn_store *st, double from, double to, dn_compare *out);
/* Plain-text table (compare's default output). */
void dn_compare_print(const dn_compare *c, FILE *f);
/* JSON object {"pairs":..,"agreement":..,"classes":[...]} */
void dn_compare_json(const dn_compare *c, dn_sb *b);
/* The manufacturing report's shadow section (<h2> + summary + per-class table). */
void dn_compare_html(const dn_compare *c, dn_sb *b);

#endif
